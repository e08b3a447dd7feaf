//! The [`Store`] contract, written once and run against every backend (memory and sled in
//! `opentwins-core/tests/store_contract.rs`, PostgreSQL in `opentwins-postgres`): each check is
//! a `pub async fn` over a fresh, empty store, and [`store_contract_suite!`](crate::store_contract_suite)
//! makes one test of each. A backend written outside this repository can run the same suite.
//!
//! Test-support code: the checks panic (assert) when the store breaks the contract.

use std::sync::Arc;

use crate::ErrorKind;
use crate::store::{Durable, Expect, Kind, Record, Store, WriteOp};

/// Every check, for [`store_contract_suite!`](crate::store_contract_suite).
#[macro_export]
macro_rules! store_contract_suite {
    ($backend:ident, $fixture:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            $crate::store_contract_suite!(@tests $fixture;
                put_get,
                absent_on_existing_conflicts,
                revision_mismatch_conflicts,
                expect_any_writes_whatever_is_stored,
                delete,
                failing_batch_applies_nothing,
                pipelined_writes,
                pipelined_conflict_rejects_alone,
                kinds_are_namespaces,
                scan_in_id_order,
                large_record_round_trip,
                concurrent_writers
            );
        }
    };
    (@tests $fixture:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $fixture;
                let check = $crate::store::contract::$name($crate::store::contract::Fixture::store(&fixture));
                tokio::time::timeout(std::time::Duration::from_secs(120), check)
                    .await
                    .expect("contract check timed out");
            }
        )*
    };
}

/// What a backend's test fixture offers the suite: the store under test (the fixture keeps
/// whatever the store needs alive, e.g. its directory or database, until it is dropped).
pub trait Fixture {
    /// The store, empty before the first check writes.
    fn store(&self) -> Arc<dyn Store>;
}

/// A record of `kind` with JSON text `json`.
pub fn rec(kind: Kind, id: &str, revision: u64, json: &str) -> Record {
    Record {
        kind,
        id: id.to_owned(),
        revision,
        json: Arc::from(json.as_bytes()),
    }
}

/// A thing record.
pub fn thing(id: &str, revision: u64, json: &str) -> Record {
    rec(Kind::Thing, id, revision, json)
}

/// A put of `record` under `expect`.
pub fn put(record: Record, expect: Expect) -> WriteOp {
    WriteOp::Put { record, expect }
}

/// A delete of `kind`/`id` under `expect`.
pub fn del(kind: Kind, id: &str, expect: Expect) -> WriteOp {
    WriteOp::Delete {
        kind,
        id: id.to_owned(),
        expect,
    }
}

/// Asserts `result` is a `things:thing.conflict` whose message holds every needle.
pub fn assert_conflict(result: crate::Result<()>, needles: &[&str]) {
    let e = result.expect_err("expected a revision conflict");
    assert_eq!(e.kind(), ErrorKind::RevisionConflict, "{e}");
    assert_eq!(e.status(), 409);
    assert_eq!(e.code(), "things:thing.conflict");
    for needle in needles {
        assert!(
            e.message().contains(needle),
            "'{}' lacks '{needle}'",
            e.message()
        );
    }
}

/// Puts, replaces and reads back one record.
pub async fn put_get(store: Arc<dyn Store>) {
    assert_eq!(store.get(Kind::Thing, "t:a").unwrap(), None);
    assert!(store.scan(Kind::Thing).unwrap().is_empty());
    store.write(vec![]).await.expect("an empty batch is fine");

    let a1 = thing("t:a", 1, r#"{"thingId":"t:a","attributes":{"x":1}}"#);
    store
        .write(vec![put(a1.clone(), Expect::Absent)])
        .await
        .unwrap();
    assert_eq!(store.get(Kind::Thing, "t:a").unwrap(), Some(a1));

    let a2 = thing("t:a", 2, r#"{"thingId":"t:a","attributes":{"x":2}}"#);
    store
        .write(vec![put(a2.clone(), Expect::Revision(1))])
        .await
        .unwrap();
    assert_eq!(store.get(Kind::Thing, "t:a").unwrap(), Some(a2.clone()));
    assert_eq!(store.scan(Kind::Thing).unwrap(), vec![a2]);
    assert_eq!(store.get(Kind::Thing, "t:b").unwrap(), None);
}

/// `Expect::Absent` on a stored record conflicts and changes nothing.
pub async fn absent_on_existing_conflicts(store: Arc<dyn Store>) {
    let a = thing("t:a", 1, r#"{"v":"original"}"#);
    store
        .write(vec![put(a.clone(), Expect::Absent)])
        .await
        .unwrap();
    let r = store
        .write(vec![put(thing("t:a", 5, r#"{"v":"new"}"#), Expect::Absent)])
        .await;
    assert_conflict(
        r,
        &["Thing", "'t:a'", "expected to be absent", "is revision 1"],
    );
    assert_eq!(store.get(Kind::Thing, "t:a").unwrap(), Some(a.clone()));
    assert_eq!(store.scan(Kind::Thing).unwrap(), vec![a]);
}

/// `Expect::Revision` conflicts on another revision or on nothing stored.
pub async fn revision_mismatch_conflicts(store: Arc<dyn Store>) {
    let a = thing("t:a", 3, r#"{"v":3}"#);
    store
        .write(vec![put(a.clone(), Expect::Any)])
        .await
        .unwrap();
    let r = store
        .write(vec![put(thing("t:a", 4, "{}"), Expect::Revision(2))])
        .await;
    assert_conflict(r, &["'t:a'", "expected to be revision 2", "is revision 3"]);
    let r = store
        .write(vec![put(thing("t:a", 4, "{}"), Expect::Revision(4))])
        .await;
    assert_conflict(r, &["expected to be revision 4", "is revision 3"]);
    assert_eq!(store.get(Kind::Thing, "t:a").unwrap(), Some(a));

    let r = store
        .write(vec![put(thing("t:none", 2, "{}"), Expect::Revision(1))])
        .await;
    assert_conflict(
        r,
        &["'t:none'", "expected to be revision 1", "but is absent"],
    );
    assert_eq!(store.get(Kind::Thing, "t:none").unwrap(), None);

    let p = rec(Kind::Policy, "p:a", 1, "{}");
    store.write(vec![put(p, Expect::Absent)]).await.unwrap();
    let r = store
        .write(vec![put(
            rec(Kind::Policy, "p:a", 2, "{}"),
            Expect::Revision(9),
        )])
        .await;
    assert_conflict(r, &["Policy with ID 'p:a'", "revision 9", "revision 1"]);
}

/// `Expect::Any` replaces whatever is stored, even with a lower revision.
pub async fn expect_any_writes_whatever_is_stored(store: Arc<dyn Store>) {
    let a = thing("t:a", 10, r#"{"v":10}"#);
    store
        .write(vec![put(a.clone(), Expect::Any)])
        .await
        .unwrap();
    assert_eq!(store.get(Kind::Thing, "t:a").unwrap(), Some(a));
    // The store does not order revisions itself: `Any` replaces, even with a lower one.
    let b = thing("t:a", 2, r#"{"v":2}"#);
    store
        .write(vec![put(b.clone(), Expect::Any)])
        .await
        .unwrap();
    assert_eq!(store.get(Kind::Thing, "t:a").unwrap(), Some(b));
}

/// Deletes check their condition like puts.
pub async fn delete(store: Arc<dyn Store>) {
    let a = thing("t:a", 1, "{}");
    store
        .write(vec![put(a.clone(), Expect::Absent)])
        .await
        .unwrap();
    let r = store
        .write(vec![del(Kind::Thing, "t:a", Expect::Revision(2))])
        .await;
    assert_conflict(r, &["'t:a'", "expected to be revision 2", "is revision 1"]);
    let r = store
        .write(vec![del(Kind::Thing, "t:a", Expect::Absent)])
        .await;
    assert_conflict(r, &["expected to be absent", "is revision 1"]);
    assert_eq!(store.get(Kind::Thing, "t:a").unwrap(), Some(a));
    store
        .write(vec![del(Kind::Thing, "t:a", Expect::Revision(1))])
        .await
        .unwrap();
    assert_eq!(store.get(Kind::Thing, "t:a").unwrap(), None);

    store
        .write(vec![put(thing("t:b", 7, "{}"), Expect::Absent)])
        .await
        .unwrap();
    store
        .write(vec![del(Kind::Thing, "t:b", Expect::Any)])
        .await
        .unwrap();
    assert_eq!(store.get(Kind::Thing, "t:b").unwrap(), None);

    // Deleting what is not there: `Any` and `Absent` hold, so it is a no-op that succeeds;
    // `Revision(n)` does not hold.
    store
        .write(vec![del(Kind::Thing, "t:b", Expect::Any)])
        .await
        .unwrap();
    store
        .write(vec![del(Kind::Thing, "t:never", Expect::Absent)])
        .await
        .unwrap();
    let r = store
        .write(vec![del(Kind::Thing, "t:never", Expect::Revision(1))])
        .await;
    assert_conflict(
        r,
        &["'t:never'", "expected to be revision 1", "but is absent"],
    );
    assert!(store.scan(Kind::Thing).unwrap().is_empty());

    // A deleted record can be created again.
    let a3 = thing("t:a", 3, r#"{"again":true}"#);
    store
        .write(vec![put(a3.clone(), Expect::Absent)])
        .await
        .unwrap();
    assert_eq!(store.scan(Kind::Thing).unwrap(), vec![a3]);
}

/// A batch with one failing condition applies none of its ops.
pub async fn failing_batch_applies_nothing(store: Arc<dyn Store>) {
    let x = thing("t:x", 1, "{}");
    store
        .write(vec![put(x.clone(), Expect::Absent)])
        .await
        .unwrap();
    let r = store
        .write(vec![
            put(thing("t:a", 1, "{}"), Expect::Absent),
            del(Kind::Thing, "t:x", Expect::Any),
            put(rec(Kind::Policy, "p:b", 1, "{}"), Expect::Absent),
            put(thing("t:c", 10, "{}"), Expect::Revision(9)),
        ])
        .await;
    assert_conflict(r, &["'t:c'"]);
    assert_eq!(store.scan(Kind::Thing).unwrap(), vec![x]);
    assert!(store.scan(Kind::Policy).unwrap().is_empty());

    // Ops in a batch apply in order: each sees the ones before it.
    let d3 = thing("t:d", 3, r#"{"v":3}"#);
    store
        .write(vec![
            put(thing("t:d", 1, "{}"), Expect::Absent),
            put(thing("t:d", 2, "{}"), Expect::Revision(1)),
            del(Kind::Thing, "t:d", Expect::Revision(2)),
            put(d3.clone(), Expect::Absent),
        ])
        .await
        .unwrap();
    assert_eq!(store.get(Kind::Thing, "t:d").unwrap(), Some(d3));

    // ... so a second create of the same id in one batch conflicts with the first.
    let r = store
        .write(vec![
            put(thing("t:e", 1, "{}"), Expect::Absent),
            put(thing("t:e", 2, "{}"), Expect::Absent),
        ])
        .await;
    assert_conflict(r, &["'t:e'", "is revision 1"]);
    assert_eq!(store.get(Kind::Thing, "t:e").unwrap(), None);
}

/// Writes issued before earlier ones are durable see them (call order).
pub async fn pipelined_writes(store: Arc<dyn Store>) {
    const N: u64 = 1000;
    let mut pending: Vec<Durable> = Vec::new();
    for n in 1..=N {
        let expect = if n == 1 {
            Expect::Absent
        } else {
            Expect::Revision(n - 1)
        };
        let json = format!(r#"{{"n":{n}}}"#);
        pending.push(store.write(vec![put(thing("t:chain", n, &json), expect)]));
        // Interleaved writes to another kind and id.
        pending.push(store.write(vec![put(rec(Kind::Policy, "p:any", n, &json), Expect::Any)]));
    }
    for (i, durable) in pending.into_iter().enumerate() {
        durable
            .await
            .unwrap_or_else(|e| panic!("write {i} failed: {e}"));
    }
    let last = store
        .get(Kind::Thing, "t:chain")
        .unwrap()
        .expect("chain record");
    assert_eq!(last.revision, N);
    assert_eq!(&*last.json, format!(r#"{{"n":{N}}}"#).as_bytes());
    assert_eq!(
        store
            .get(Kind::Policy, "p:any")
            .unwrap()
            .map(|r| r.revision),
        Some(N)
    );
}

/// A conflicting batch among pipelined ones fails alone.
pub async fn pipelined_conflict_rejects_alone(store: Arc<dyn Store>) {
    let mut pending = Vec::new();
    for n in 1..=100u64 {
        let expect = match n {
            1 => Expect::Absent,
            50 => Expect::Revision(7), // wrong: rejected, the chain stays at 49
            51 => Expect::Revision(49),
            _ => Expect::Revision(n - 1),
        };
        pending.push((n, store.write(vec![put(thing("t:c", n, "{}"), expect)])));
    }
    for (n, durable) in pending {
        let r = durable.await;
        if n == 50 {
            assert_conflict(r, &["expected to be revision 7", "is revision 49"]);
        } else {
            r.unwrap_or_else(|e| panic!("write {n} failed: {e}"));
        }
    }
    assert_eq!(
        store.get(Kind::Thing, "t:c").unwrap().map(|r| r.revision),
        Some(100)
    );
}

/// Thing, policy and grave records with one id are distinct.
pub async fn kinds_are_namespaces(store: Arc<dyn Store>) {
    let t = thing("x:1", 1, r#"{"thingId":"x:1"}"#);
    let p = rec(Kind::Policy, "x:1", 7, r#"{"policyId":"x:1"}"#);
    store
        .write(vec![put(t.clone(), Expect::Absent)])
        .await
        .unwrap();
    store
        .write(vec![put(p.clone(), Expect::Absent)])
        .await
        .unwrap();
    assert_eq!(store.get(Kind::Thing, "x:1").unwrap(), Some(t.clone()));
    assert_eq!(store.get(Kind::Policy, "x:1").unwrap(), Some(p.clone()));
    assert_eq!(store.scan(Kind::Thing).unwrap(), vec![t]);
    assert_eq!(store.scan(Kind::Policy).unwrap(), vec![p.clone()]);
    store
        .write(vec![del(Kind::Thing, "x:1", Expect::Revision(1))])
        .await
        .unwrap();
    assert_eq!(store.get(Kind::Thing, "x:1").unwrap(), None);
    assert_eq!(store.get(Kind::Policy, "x:1").unwrap(), Some(p));
    assert!(store.scan(Kind::Thing).unwrap().is_empty());
}

/// `scan` returns one kind, ordered by the ids' bytes.
pub async fn scan_in_id_order(store: Arc<dyn Store>) {
    let ids = ["b", "a:b", "a", "ab", "a:a", "Z", "é", "0", "a:b:c", "b:"];
    let mut batch = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        batch.push(put(
            thing(id, i as u64 + 1, &format!(r#"{{"i":{i}}}"#)),
            Expect::Absent,
        ));
        store
            .write(vec![put(
                rec(Kind::Policy, &format!("p{i}"), 1, "{}"),
                Expect::Absent,
            )])
            .await
            .unwrap();
    }
    // Half in one batch, half one by one.
    let rest = batch.split_off(ids.len() / 2);
    store.write(batch).await.unwrap();
    for op in rest {
        store.write(vec![op]).await.unwrap();
    }
    let scanned = store.scan(Kind::Thing).unwrap();
    let mut expected: Vec<&str> = ids.to_vec();
    expected.sort(); // byte order
    assert_eq!(
        scanned.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        expected
    );
    for r in &scanned {
        let i = ids.iter().position(|id| *id == r.id).unwrap();
        assert_eq!(r.kind, Kind::Thing);
        assert_eq!(r.revision, i as u64 + 1);
        assert_eq!(&*r.json, format!(r#"{{"i":{i}}}"#).as_bytes());
    }
    assert_eq!(store.scan(Kind::Policy).unwrap().len(), ids.len());
}

/// Records of hundreds of kilobytes round-trip.
pub async fn large_record_round_trip(store: Arc<dyn Store>) {
    fn big(seed: u64) -> String {
        let mut x = seed;
        let data: String = (0..300_000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                char::from(b'a' + (x >> 59) as u8)
            })
            .collect();
        format!(r#"{{"data":"{data}"}}"#)
    }
    let small = thing("t:small", 1, "{}");
    store
        .write(vec![put(small.clone(), Expect::Absent)])
        .await
        .unwrap();
    let b1 = thing("t:big", 1, &big(1));
    store
        .write(vec![put(b1.clone(), Expect::Absent)])
        .await
        .unwrap();
    assert_eq!(store.get(Kind::Thing, "t:big").unwrap(), Some(b1));
    let b2 = thing("t:big", 2, &big(2));
    store
        .write(vec![put(b2.clone(), Expect::Revision(1))])
        .await
        .unwrap();
    assert_eq!(store.get(Kind::Thing, "t:big").unwrap(), Some(b2.clone()));
    assert_eq!(store.scan(Kind::Thing).unwrap(), vec![b2, small.clone()]);
    store
        .write(vec![del(Kind::Thing, "t:big", Expect::Revision(2))])
        .await
        .unwrap();
    assert_eq!(store.scan(Kind::Thing).unwrap(), vec![small]);
}

/// Many tasks writing, some contending on one record with compare-and-set.
pub async fn concurrent_writers(store: Arc<dyn Store>) {
    const TASKS: u64 = 32;
    const OWN: u64 = 50;
    const SHARED: u64 = 10;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("t:w{t}");
            let mut conflicts = 0u64;
            for n in 1..=OWN {
                let expect = if n == 1 {
                    Expect::Absent
                } else {
                    Expect::Revision(n - 1)
                };
                store
                    .write(vec![put(thing(&id, n, "{}"), expect)])
                    .await
                    .unwrap();
                // A contended counter: read, compare-and-set, retry on conflict.
                if n <= SHARED {
                    loop {
                        let current = store.get(Kind::Thing, "t:shared").unwrap();
                        let (next, expect) = match current {
                            Some(r) => (r.revision + 1, Expect::Revision(r.revision)),
                            None => (1, Expect::Absent),
                        };
                        let json = format!(r#"{{"by":{t}}}"#);
                        match store
                            .write(vec![put(thing("t:shared", next, &json), expect)])
                            .await
                        {
                            Ok(()) => break,
                            Err(e) if e.kind() == ErrorKind::RevisionConflict => conflicts += 1,
                            Err(e) => panic!("unexpected error: {e}"),
                        }
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.expect("writer task");
    }
    for t in 0..TASKS {
        let r = store
            .get(Kind::Thing, &format!("t:w{t}"))
            .unwrap()
            .expect("own record");
        assert_eq!(r.revision, OWN);
    }
    let shared = store
        .get(Kind::Thing, "t:shared")
        .unwrap()
        .expect("shared record");
    assert_eq!(
        shared.revision,
        TASKS * SHARED,
        "every increment counted once"
    );
    assert_eq!(store.scan(Kind::Thing).unwrap().len() as u64, TASKS + 1);
    eprintln!("contended counter: {conflicts} conflicts retried");
}

/// The `kill -9` harness of the durability tests: runs this test binary's test `child` (by
/// exact name) with `env` set, collects the lines of its standard output that `keep` accepts,
/// SIGKILLs it as soon as `enough` holds for them, and returns every kept line, including those
/// printed while the kill landed. Panics when the child ends or `timeout` passes first.
pub fn kill_9_child(
    child: &str,
    env: (&str, &std::ffi::OsStr),
    timeout: std::time::Duration,
    keep: impl Fn(&str) -> bool + Send + 'static,
    enough: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let exe = std::env::current_exe().expect("the test binary");
    let mut process = Command::new(exe)
        .args(["--exact", child, "--nocapture", "--test-threads=1"])
        .env(env.0, env.1)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let stdout = process.stdout.take().expect("the child's stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout)
            .lines()
            .map_while(std::io::Result::ok)
        {
            if keep(&line) && tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + timeout;
    let mut lines = Vec::new();
    while !enough(&lines) {
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(line) => lines.push(line),
            Err(e) => {
                let _ = process.kill();
                let _ = process.wait();
                panic!("the child stopped after {} lines: {e}", lines.len());
            }
        }
    }
    process.kill().expect("SIGKILL the child");
    let status = process.wait().expect("wait for the child");
    assert!(
        !status.success(),
        "the child was killed, not finished: {status}"
    );
    reader.join().expect("the reader thread");
    lines.extend(rx.try_iter());
    lines
}
