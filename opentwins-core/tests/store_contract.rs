//! The [`Store`] contract, written once (module `contract`) and run against every backend:
//! memory, sled (flush), sled (fsync), and sled with a batching delay and a small group size.
//! Sled-only tests (reopen, close, crash durability with `kill -9`) follow, then an ignored
//! throughput measurement:
//!
//! `cargo test --release -p opentwins-core --test store_contract -- --ignored --nocapture throughput`

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use opentwins_core::ErrorKind;
use opentwins_core::store::{
    Durable, Expect, Kind, MemoryStore, Record, SledConfig, SledStore, Store, SyncMode, WriteOp,
};
use tempfile::TempDir;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `f` under the test timeout.
async fn timed<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, f)
        .await
        .expect("test timed out")
}

/// A store under test and the directory it lives in (dropped after the store).
struct Fixture {
    store: Arc<dyn Store>,
    _dir: Option<TempDir>,
}

fn memory() -> Fixture {
    Fixture {
        store: Arc::new(MemoryStore::new()),
        _dir: None,
    }
}

fn sled_with(tune: impl FnOnce(&mut SledConfig)) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = SledConfig::new(dir.path().join("db"));
    tune(&mut config);
    let store = SledStore::open(config).expect("open sled store");
    Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

fn rec(kind: Kind, id: &str, revision: u64, json: &str) -> Record {
    Record {
        kind,
        id: id.to_owned(),
        revision,
        json: Arc::from(json.as_bytes()),
    }
}

fn thing(id: &str, revision: u64, json: &str) -> Record {
    rec(Kind::Thing, id, revision, json)
}

fn put(record: Record, expect: Expect) -> WriteOp {
    WriteOp::Put { record, expect }
}

fn del(kind: Kind, id: &str, expect: Expect) -> WriteOp {
    WriteOp::Delete {
        kind,
        id: id.to_owned(),
        expect,
    }
}

fn assert_conflict(result: opentwins_core::Result<()>, needles: &[&str]) {
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

/// The contract, once, over any store.
mod contract {
    use super::*;

    pub(crate) async fn put_get(store: Arc<dyn Store>) {
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

    pub(crate) async fn absent_on_existing_conflicts(store: Arc<dyn Store>) {
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

    pub(crate) async fn revision_mismatch_conflicts(store: Arc<dyn Store>) {
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

    pub(crate) async fn expect_any_writes_whatever_is_stored(store: Arc<dyn Store>) {
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

    pub(crate) async fn delete(store: Arc<dyn Store>) {
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

    pub(crate) async fn failing_batch_applies_nothing(store: Arc<dyn Store>) {
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

    pub(crate) async fn pipelined_writes(store: Arc<dyn Store>) {
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

    pub(crate) async fn pipelined_conflict_rejects_alone(store: Arc<dyn Store>) {
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

    pub(crate) async fn kinds_are_namespaces(store: Arc<dyn Store>) {
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

    pub(crate) async fn scan_in_id_order(store: Arc<dyn Store>) {
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

    pub(crate) async fn large_record_round_trip(store: Arc<dyn Store>) {
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

    pub(crate) async fn concurrent_writers(store: Arc<dyn Store>) {
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
}

/// Instantiates every contract test for one backend.
macro_rules! contract_suite {
    ($backend:ident, $fixture:expr) => {
        mod $backend {
            use super::*;
            contract_suite!(@tests $fixture;
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
                timed(contract::$name(fixture.store.clone())).await;
            }
        )*
    };
}

contract_suite!(memory_store, memory());
contract_suite!(sled_flush, sled_with(|_| {}));
contract_suite!(sled_fsync, sled_with(|c| c.sync = SyncMode::Fsync));
contract_suite!(
    sled_delayed_small_groups,
    sled_with(|c| {
        c.max_batch_delay = Duration::from_millis(1);
        c.max_batch_ops = 7;
    })
);

/// Tests only the durable backend can pass.
mod sled_only {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    use std::time::Instant;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reopen_after_close_restores_everything() {
        timed(async {
            let dir = tempfile::tempdir().unwrap();
            let config = SledConfig::new(dir.path().join("db"));
            let (things, policies) = {
                let store = SledStore::open(config.clone()).unwrap();
                let mut pending = Vec::new();
                for i in 0..200u64 {
                    let json = format!(r#"{{"thingId":"t:{i:03}","attributes":{{"i":{i}}}}}"#);
                    pending.push(store.write(vec![put(
                        thing(&format!("t:{i:03}"), i + 1, &json),
                        Expect::Absent,
                    )]));
                }
                for i in 0..10u64 {
                    pending.push(store.write(vec![put(
                        rec(Kind::Policy, &format!("p:{i}"), 1, r#"{"entries":{}}"#),
                        Expect::Absent,
                    )]));
                }
                let big = format!(r#"{{"data":"{}"}}"#, "x".repeat(300_000));
                pending.push(store.write(vec![put(thing("t:big", 1, &big), Expect::Absent)]));
                for i in (0..200u64).step_by(3) {
                    pending.push(store.write(vec![del(
                        Kind::Thing,
                        &format!("t:{i:03}"),
                        Expect::Revision(i + 1),
                    )]));
                }
                for durable in pending {
                    durable.await.unwrap();
                }
                let scans = (
                    store.scan(Kind::Thing).unwrap(),
                    store.scan(Kind::Policy).unwrap(),
                );
                store.close().unwrap();
                scans
            };
            assert_eq!(things.len(), 200 - 67 + 1);
            let store = SledStore::open(config).unwrap();
            assert_eq!(store.scan(Kind::Thing).unwrap(), things);
            assert_eq!(store.scan(Kind::Policy).unwrap(), policies);
            // Compare-and-set goes on from the restored revisions.
            store
                .write(vec![put(thing("t:001", 3, "{}"), Expect::Revision(2))])
                .await
                .unwrap();
            assert_conflict(
                store
                    .write(vec![put(thing("t:000", 1, "{}"), Expect::Revision(1))])
                    .await,
                &["'t:000'", "is absent"],
            );
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn close_commits_what_is_queued() {
        timed(async {
            let dir = tempfile::tempdir().unwrap();
            let config = SledConfig::new(dir.path().join("db"));
            let store = SledStore::open(config.clone()).unwrap();
            let pending: Vec<Durable> = (1..=500u64)
                .map(|n| {
                    let expect = if n == 1 {
                        Expect::Absent
                    } else {
                        Expect::Revision(n - 1)
                    };
                    store.write(vec![put(thing("t:q", n, "{}"), expect)])
                })
                .collect();
            store.close().unwrap();
            for durable in pending {
                durable.await.expect("queued before close, so committed");
            }
            drop(store);
            let store = SledStore::open(config).unwrap();
            assert_eq!(
                store.get(Kind::Thing, "t:q").unwrap().map(|r| r.revision),
                Some(500)
            );
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn write_after_close_is_unavailable() {
        timed(async {
            let dir = tempfile::tempdir().unwrap();
            let store = SledStore::open(SledConfig::new(dir.path().join("db"))).unwrap();
            store
                .write(vec![put(thing("t:a", 1, "{}"), Expect::Absent)])
                .await
                .unwrap();
            store.close().unwrap();
            store.close().expect("close is idempotent");
            let e = store
                .write(vec![put(thing("t:b", 1, "{}"), Expect::Absent)])
                .await
                .expect_err("closed");
            assert_eq!(e.kind(), ErrorKind::Unavailable);
            assert_eq!(e.status(), 503);
            // Reads still work until the store is dropped.
            assert_eq!(
                store.get(Kind::Thing, "t:a").unwrap().map(|r| r.revision),
                Some(1)
            );
            assert_eq!(store.get(Kind::Thing, "t:b").unwrap(), None);
        })
        .await;
    }

    #[test]
    fn open_twice_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let config = SledConfig::new(dir.path().join("db"));
        let _first = SledStore::open(config.clone()).unwrap();
        let e = SledStore::open(config).expect_err("the database is locked");
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.message().contains("cannot open"), "{}", e.message());
    }

    const CHILD_ENV: &str = "OPENTWINS_STORE_CHILD";
    const ACKS_BEFORE_KILL: u64 = 200;

    fn crash_id(n: u64) -> String {
        format!("crash:{n:06}")
    }

    fn crash_json(n: u64) -> String {
        format!(
            r#"{{"thingId":"{}","attributes":{{"n":{n},"pad":"{}"}}}}"#,
            crash_id(n),
            "p".repeat(200)
        )
    }

    /// The child of [`kill_9_loses_no_acknowledged_write`]; does nothing in a normal run.
    #[test]
    fn crash_child() {
        let Some(dir) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = SledStore::open(SledConfig::new(dir)).unwrap();
            // Writes until killed; gives up by itself if the parent never kills it.
            let _ = tokio::time::timeout(TIMEOUT, async {
                let mut out = std::io::stdout();
                for n in 0.. {
                    store
                        .write(vec![put(
                            thing(&crash_id(n), n + 1, &crash_json(n)),
                            Expect::Absent,
                        )])
                        .await
                        .unwrap();
                    writeln!(out, "acked {n}").unwrap();
                    out.flush().unwrap();
                }
            })
            .await;
        });
    }

    #[test]
    fn kill_9_loses_no_acknowledged_write() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sled_only::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &db)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let ack = line
                    .strip_prefix("acked ")
                    .and_then(|n| n.parse::<u64>().ok());
                if let Some(n) = ack
                    && tx.send(n).is_err()
                {
                    break;
                }
            }
        });
        let deadline = Instant::now() + TIMEOUT;
        let mut acked: Option<u64> = None;
        while acked.is_none_or(|n| n + 1 < ACKS_BEFORE_KILL) {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(n) => acked = Some(n),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the child stopped acknowledging after {acked:?}: {e}");
                }
            }
        }
        child.kill().expect("SIGKILL the child");
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "the child was killed, not finished: {status}"
        );
        reader.join().unwrap();
        // Acks printed before the kill landed count too.
        let acked = rx.try_iter().fold(acked.unwrap(), u64::max);

        let store = SledStore::open(SledConfig::new(&db)).expect("reopen after kill -9");
        for n in 0..=acked {
            let r = store
                .get(Kind::Thing, &crash_id(n))
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged write {n} of {acked} lost"));
            assert_eq!(r.revision, n + 1);
            assert_eq!(&*r.json, crash_json(n).as_bytes());
        }
        let all = store.scan(Kind::Thing).unwrap();
        assert!(all.len() as u64 > acked);
        eprintln!("{} acked, {} found after kill -9", acked + 1, all.len());
    }

    /// Durable writes per second with 64 concurrent writers, each awaiting its write.
    async fn throughput(sync: SyncMode, writes_per_writer: u64) -> f64 {
        const WRITERS: u64 = 64;
        let dir = tempfile::tempdir().unwrap();
        let mut config = SledConfig::new(dir.path().join("db"));
        config.sync = sync;
        let store: Arc<dyn Store> = Arc::new(SledStore::open(config).unwrap());
        let pad = "v".repeat(200);
        let start = Instant::now();
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = store.clone();
                let pad = pad.clone();
                tokio::spawn(async move {
                    let id = format!("bench:thing-{w:04}");
                    for n in 1..=writes_per_writer {
                        let json = format!(
                            r#"{{"thingId":"{id}","policyId":"bench:policy","attributes":{{"n":{n}}},"features":{{"f":{{"properties":{{"pad":"{pad}"}}}}}}}}"#
                        );
                        let expect = if n == 1 { Expect::Absent } else { Expect::Revision(n - 1) };
                        store.write(vec![put(thing(&id, n, &json), expect)]).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = start.elapsed();
        let total = WRITERS * writes_per_writer;
        let rate = total as f64 / elapsed.as_secs_f64();
        let size = store
            .get(Kind::Thing, "bench:thing-0000")
            .unwrap()
            .unwrap()
            .json
            .len();
        eprintln!(
            "{sync:?}: {total} writes of {size} B by {WRITERS} writers in {elapsed:.2?}: {rate:.0} durable writes/s"
        );
        rate
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement; run in release with --ignored --nocapture"]
    async fn throughput_flush_and_fsync() {
        timed(async {
            // OPENTWINS_BENCH_WRITES: writes per writer (default 2000).
            let per_writer = std::env::var("OPENTWINS_BENCH_WRITES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(2000);
            throughput(SyncMode::Flush, per_writer).await;
            throughput(SyncMode::Fsync, per_writer).await;
        })
        .await;
    }
}
