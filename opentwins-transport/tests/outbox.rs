//! The persistent outbox of an outbound link: order, acks, wake-ups, restarts (clean and
//! `kill -9`), the byte bound with coalescing and drops, concurrency, and a model-based property
//! test.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use opentwins_core::store::contract;
use opentwins_transport::link::outbox::{
    Coalesce, Outbox, OutboxConfig, OutboxEntry, OutboxError, OutboxStats, Pushed,
};
use proptest::prelude::*;

const TIMEOUT: Duration = Duration::from_secs(30);
const CHILD_ENV: &str = "OPENTWINS_OUTBOX_CHILD";

fn latest_wins() -> Coalesce {
    Arc::new(|_older: &[u8], newer: &[u8]| Some(newer.to_vec()))
}

fn temp_db() -> sled::Db {
    sled::Config::new().temporary(true).open().unwrap()
}

/// Opens a sled database the way the engine's store does: no periodic flusher. Right after the
/// previous handle was dropped, sled's background threads may still hold the file lock for a
/// moment: retry for up to 5 s.
fn open_db(path: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::Config::new().path(path).flush_every_ms(None).open() {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("sled not ready yet ({e}); retrying");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("cannot open {}: {e}", path.display()),
        }
    }
}

fn open(db: &sled::Db, max_bytes: u64) -> Outbox {
    Outbox::open(
        db,
        "peer-1",
        OutboxConfig {
            max_bytes,
            ..OutboxConfig::default()
        },
        latest_wins(),
    )
    .unwrap()
}

fn payloads(entries: &[OutboxEntry]) -> Vec<&[u8]> {
    entries.iter().map(|e| e.payload.as_slice()).collect()
}

fn seqs(entries: &[OutboxEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}

#[test]
fn fifo_peek_ack_and_stats() {
    let ob = open(&temp_db(), 1 << 20);
    assert_eq!(ob.stats(), OutboxStats::default());
    assert!(ob.peek(10).unwrap().is_empty());
    for (i, key) in ["a", "b", "a", "c", "a"].iter().enumerate() {
        let seq = i as u64 + 1;
        assert_eq!(
            ob.push(key.as_bytes(), format!("p{i}").as_bytes()).unwrap(),
            Pushed::Queued { seq }
        );
    }
    let s = ob.stats();
    assert_eq!((s.entries, s.bytes, s.queued_total), (5, 5 * 3, 5));
    assert_eq!((s.in_flight, s.oldest_seq), (0, Some(1)));

    let first = ob.peek(2).unwrap();
    assert_eq!(seqs(&first), [1, 2]);
    assert_eq!(first[0].key, b"a");
    assert_eq!(payloads(&first), [b"p0", b"p1"]);
    assert_eq!(ob.stats().in_flight, 2);
    // Without an ack, a peek returns the same entries again (and more if asked).
    assert_eq!(ob.peek(2).unwrap(), first);
    assert_eq!(seqs(&ob.peek(0).unwrap()), Vec::<u64>::new());
    assert_eq!(seqs(&ob.peek(100).unwrap()), [1, 2, 3, 4, 5]);
    assert_eq!(ob.stats().in_flight, 5);

    ob.ack(2).unwrap();
    let rest = ob.peek(100).unwrap();
    assert_eq!(seqs(&rest), [3, 4, 5]);
    assert_eq!(payloads(&rest), [b"p2", b"p3", b"p4"]);
    let s = ob.stats();
    assert_eq!(
        (s.entries, s.bytes, s.in_flight, s.oldest_seq),
        (3, 9, 3, Some(3))
    );
    // Acking an older seq again changes nothing.
    ob.ack(1).unwrap();
    assert_eq!(ob.stats().entries, 3);
    ob.ack(5).unwrap();
    let s = ob.stats();
    assert_eq!((s.entries, s.bytes, s.oldest_seq), (0, 0, None));
    assert_eq!(s.queued_total, 5);
    assert_eq!(
        ob.push(b"d", b"p5").unwrap(),
        Pushed::Queued { seq: 6 },
        "seqs are not reused"
    );
}

#[tokio::test]
async fn ready_wakes_on_push_and_on_destroy() {
    tokio::time::timeout(TIMEOUT, async {
        let ob = open(&temp_db(), 1 << 20);
        let waiter = tokio::spawn({
            let ob = ob.clone();
            async move { ob.ready().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "ready() resolved on an empty outbox");
        // A push from another thread (as from the engine's sink) wakes the waiter.
        let pusher = ob.clone();
        std::thread::spawn(move || pusher.push(b"k", b"v").unwrap())
            .join()
            .unwrap();
        waiter.await.unwrap();
        // Non-empty: resolves at once, also when everything is in flight.
        ob.peek(10).unwrap();
        ob.ready().await;
        // A sender with entry 1 in flight waits for what comes after it.
        let after = tokio::spawn({
            let ob = ob.clone();
            async move { ob.ready_after(1).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!after.is_finished(), "ready_after(1) resolved for entry 1");
        ob.push(b"k", b"w").unwrap();
        after.await.unwrap();
        assert_eq!(seqs(&ob.peek_after(1, 10, u64::MAX).unwrap()), [2]);

        ob.ack(2).unwrap();
        let waiter = tokio::spawn({
            let ob = ob.clone();
            async move { ob.ready().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "ready() resolved after everything was acked"
        );
        ob.clone().destroy().unwrap();
        waiter.await.unwrap();
        assert!(matches!(ob.peek(1), Err(OutboxError::Destroyed { .. })));
    })
    .await
    .expect("timed out");
}

#[test]
fn reopen_redelivers_unacked_entries_in_order_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let db = open_db(&path);
        let ob = open(&db, 1 << 20);
        for i in 0..1_000u32 {
            let key = format!("thing:{}", i % 17);
            let r = ob.push(key.as_bytes(), &i.to_be_bytes()).unwrap();
            assert_eq!(
                r,
                Pushed::Queued {
                    seq: u64::from(i) + 1
                }
            );
        }
        let sent = ob.peek(400).unwrap();
        assert_eq!(sent.len(), 400);
        ob.ack(300).unwrap();
        ob.flush().unwrap();
    }
    let expected: Vec<[u8; 4]> = (300..1_000u32).map(|i| i.to_be_bytes()).collect();
    {
        let db = open_db(&path);
        let ob = open(&db, 1 << 20);
        let bytes: usize = (300..1_000)
            .map(|i| format!("thing:{}", i % 17).len() + 4)
            .sum();
        let s = ob.stats();
        assert_eq!(
            (s.entries, s.bytes, s.oldest_seq),
            (700, bytes as u64, Some(301))
        );
        assert_eq!(s.in_flight, 0, "nothing is in flight after a restart");
        let back = ob.peek(usize::MAX).unwrap();
        assert_eq!(seqs(&back), (301..=1_000).collect::<Vec<u64>>());
        assert_eq!(payloads(&back), expected);
        assert_eq!(back[0].key, format!("thing:{}", 300 % 17).as_bytes());
        // The sender delivers them in two batches, then everything is gone.
        assert_eq!(ob.peek(500).unwrap(), back[..500]);
        ob.ack(800).unwrap();
        assert_eq!(ob.peek(500).unwrap(), back[500..]);
        ob.ack(1_000).unwrap();
        assert_eq!(
            ob.push(b"thing:new", b"x").unwrap(),
            Pushed::Queued { seq: 1_001 }
        );
        ob.ack(1_001).unwrap();
        ob.flush().unwrap();
    }
    let db = open_db(&path);
    let ob = open(&db, 1 << 20);
    assert!(
        ob.peek(usize::MAX).unwrap().is_empty(),
        "acked entries came back"
    );
    assert_eq!(
        ob.push(b"thing:new", b"y").unwrap(),
        Pushed::Queued { seq: 1_002 },
        "seqs keep growing after every entry was acked"
    );
}

/// The child of the crash test: 1,000 pushes, a flush (the engine's group commit), a line on
/// stdout, then more pushes that are never flushed, until it is killed.
#[test]
fn outbox_crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let db = open_db(Path::new(&dir));
    let ob = open(&db, 1 << 30);
    let push = |i: u32| {
        let key = format!("thing:{}", i % 37);
        ob.push(key.as_bytes(), &i.to_be_bytes()).unwrap();
    };
    (0..1_000).for_each(push);
    ob.flush().unwrap();
    // libtest prints "test outbox_crash_child ... " before this, on the same line.
    println!("child flushed");
    (1_000..200_000).for_each(push);
    std::thread::sleep(TIMEOUT);
}

#[test]
fn kill_9_after_a_flush_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    contract::kill_9_child(
        "outbox_crash_child",
        (CHILD_ENV, path.as_os_str()),
        TIMEOUT,
        |line| line.ends_with("child flushed"),
        |lines| !lines.is_empty(),
    );

    let db = open_db(&path);
    let ob = open(&db, 1 << 30);
    let back = ob.peek(usize::MAX).unwrap();
    assert!(back.len() >= 1_000, "only {} entries survived", back.len());
    // What survives is a prefix of the pushes, in order, each once.
    for (i, e) in back.iter().enumerate() {
        let i = i as u32;
        assert_eq!(e.seq, u64::from(i) + 1);
        assert_eq!(
            e.payload,
            i.to_be_bytes(),
            "entry {i} out of order or duplicated"
        );
        assert_eq!(e.key, format!("thing:{}", i % 37).as_bytes());
    }
    let n = back.len() as u64;
    ob.ack(n).unwrap();
    assert_eq!(ob.push(b"k", b"v").unwrap(), Pushed::Queued { seq: n + 1 });
}

#[test]
fn when_full_same_key_updates_coalesce_and_new_keys_are_dropped() {
    // Each entry: a 6-byte key + a 4-byte payload = 10 bytes; three fit.
    let ob = open(&temp_db(), 30);
    for (i, key) in [b"thing1", b"thing2", b"thing3"].iter().enumerate() {
        let seq = i as u64 + 1;
        assert_eq!(ob.push(*key, b"v1__").unwrap(), Pushed::Queued { seq });
    }
    // Full: the same key coalesces into its newest pending entry (latest wins).
    assert_eq!(
        ob.push(b"thing2", b"v2__").unwrap(),
        Pushed::Coalesced { seq: 2 }
    );
    assert_eq!(
        ob.push(b"thing2", b"v3__").unwrap(),
        Pushed::Coalesced { seq: 2 }
    );
    // A new key has nothing to coalesce into: dropped, remembered.
    assert_eq!(ob.push(b"thing4", b"v1__").unwrap(), Pushed::Dropped);
    assert_eq!(ob.push(b"thing5", b"v1__").unwrap(), Pushed::Dropped);
    assert_eq!(ob.push(b"thing4", b"v2__").unwrap(), Pushed::Dropped);
    let s = ob.stats();
    assert_eq!((s.entries, s.bytes), (3, 30));
    assert_eq!(
        (s.queued_total, s.coalesced_total, s.dropped_total),
        (3, 2, 3)
    );
    assert_eq!(
        ob.take_dropped_keys().unwrap(),
        [b"thing4".to_vec(), b"thing5".to_vec()]
    );
    assert!(
        ob.take_dropped_keys().unwrap().is_empty(),
        "dropped keys are returned once"
    );

    let all = ob.peek(10).unwrap();
    assert_eq!(seqs(&all), [1, 2, 3]);
    assert_eq!(payloads(&all), [b"v1__", b"v3__", b"v1__"]);
    // Everything is in flight now: a push for thing2 must not be merged into entry 2, whose
    // ack would lose it. Full, so it is dropped.
    assert_eq!(ob.push(b"thing2", b"v4__").unwrap(), Pushed::Dropped);
    assert_eq!(payloads(&ob.peek(10).unwrap()), [b"v1__", b"v3__", b"v1__"]);
    assert_eq!(ob.take_dropped_keys().unwrap(), [b"thing2".to_vec()]);

    // After an ack there is room: thing2 is queued anew, and later pushes coalesce into that
    // new entry (not in flight), not into the in-flight ones.
    ob.ack(1).unwrap();
    assert_eq!(
        ob.push(b"thing2", b"v5__").unwrap(),
        Pushed::Queued { seq: 4 }
    );
    assert_eq!(
        ob.push(b"thing2", b"v6__").unwrap(),
        Pushed::Coalesced { seq: 4 }
    );
    assert_eq!(ob.push(b"thing3", b"v2__").unwrap(), Pushed::Dropped);
    let rest = ob.peek(10).unwrap();
    assert_eq!(seqs(&rest), [2, 3, 4]);
    assert_eq!(payloads(&rest), [b"v3__", b"v1__", b"v6__"]);
    let s = ob.stats();
    assert_eq!(
        (s.queued_total, s.coalesced_total, s.dropped_total),
        (4, 3, 5)
    );
}

#[test]
fn a_coalesce_that_refuses_drops_the_update() {
    let refuse: Coalesce = Arc::new(|_: &[u8], _: &[u8]| None);
    let ob = Outbox::open(
        &temp_db(),
        "x",
        OutboxConfig {
            max_bytes: 4,
            ..OutboxConfig::default()
        },
        refuse,
    )
    .unwrap();
    assert_eq!(ob.push(b"k", b"aaa").unwrap(), Pushed::Queued { seq: 1 });
    assert_eq!(ob.push(b"k", b"bbb").unwrap(), Pushed::Dropped);
    assert_eq!(payloads(&ob.peek(5).unwrap()), [b"aaa"]);
    assert_eq!(ob.take_dropped_keys().unwrap(), [b"k".to_vec()]);
}

#[test]
fn dropped_keys_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let db = open_db(&path);
        let ob = open(&db, 4);
        ob.push(b"a", b"123").unwrap();
        assert_eq!(ob.push(b"b", b"1").unwrap(), Pushed::Dropped);
        ob.flush().unwrap();
    }
    let db = open_db(&path);
    let ob = open(&db, 4);
    assert_eq!(ob.take_dropped_keys().unwrap(), [b"b".to_vec()]);
    assert_eq!(ob.stats().dropped_total, 0, "counters count since open");
}

#[test]
fn concurrent_pushes_get_unique_seqs_in_per_thread_order() {
    let ob = open(&temp_db(), 1 << 30);
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let ob = ob.clone();
            std::thread::spawn(move || {
                for i in 0..500u32 {
                    let mut p = vec![t];
                    p.extend_from_slice(&i.to_be_bytes());
                    assert!(matches!(ob.push(&[t], &p).unwrap(), Pushed::Queued { .. }));
                }
            })
        })
        .collect();
    // The sender drains while the writers push.
    let mut got = Vec::new();
    while got.len() < 4_000 {
        let batch = ob.peek(64).unwrap();
        if let Some(last) = batch.last() {
            ob.ack(last.seq).unwrap();
        }
        got.extend(batch);
    }
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert!(ob.peek(10).unwrap().is_empty());
    assert_eq!(seqs(&got), (1..=4_000).collect::<Vec<u64>>());
    for t in 0..8u8 {
        let mine: Vec<u32> = got
            .iter()
            .filter(|e| e.key == [t])
            .map(|e| u32::from_be_bytes(e.payload[1..].try_into().unwrap()))
            .collect();
        assert_eq!(mine, (0..500).collect::<Vec<u32>>(), "thread {t}");
    }
    assert_eq!(ob.stats().bytes, 0);
}

// ---------------------------------------------------------------------------------------------
// Model-based property test.

const KEYS: [&[u8]; 4] = [b"a", b"bb", b"k3", b"thing:4"];

/// The coalesce function of the property test: not latest-wins, so the argument order matters;
/// refuses when the newer payload starts with a multiple of 4.
fn test_coalesce(older: &[u8], newer: &[u8]) -> Option<Vec<u8>> {
    if newer[0].is_multiple_of(4) {
        return None;
    }
    Some([newer, &older[..1]].concat())
}

#[derive(Clone, Debug)]
enum Op {
    Push(usize, Vec<u8>),
    Peek(usize),
    /// Peek after the `0`-th pending entry (past the end: none), at most `1` entries and `2`
    /// bytes.
    PeekAfter(usize, usize, u64),
    Ack(u8),
    Reopen,
    Rewind,
    TakeDropped,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..KEYS.len(), prop::collection::vec(any::<u8>(), 1..12))
            .prop_map(|(k, p)| Op::Push(k, p)),
        2 => (0usize..6).prop_map(Op::Peek),
        2 => (0usize..6, 0usize..6, 0u64..40).prop_map(|(a, m, b)| Op::PeekAfter(a, m, b)),
        2 => any::<u8>().prop_map(Op::Ack),
        1 => Just(Op::Reopen),
        1 => Just(Op::Rewind),
        1 => Just(Op::TakeDropped),
    ]
}

#[derive(Default)]
struct Model {
    max_bytes: u64,
    coalesce_pending: bool,
    entries: Vec<OutboxEntry>,
    next_seq: u64,
    acked_through: u64,
    in_flight_through: u64,
    dropped: BTreeSet<Vec<u8>>,
    queued: u64,
    coalesced: u64,
    dropped_total: u64,
}

fn size(e: &OutboxEntry) -> u64 {
    (e.key.len() + e.payload.len()) as u64
}

impl Model {
    fn bytes(&self) -> u64 {
        self.entries.iter().map(size).sum()
    }

    fn coalesce(&mut self, key: &[u8], payload: &[u8]) -> Option<Pushed> {
        let bytes = self.bytes();
        let in_flight = self.in_flight_through;
        let max_bytes = self.max_bytes;
        if let Some(e) = self.entries.iter_mut().rev().find(|e| e.key == key)
            && e.seq > in_flight
            && let Some(merged) = test_coalesce(&e.payload, payload)
            && bytes - size(e) + (key.len() + merged.len()) as u64 <= max_bytes
        {
            e.payload = merged;
            self.coalesced += 1;
            return Some(Pushed::Coalesced { seq: e.seq });
        }
        None
    }

    fn push(&mut self, key: &[u8], payload: &[u8]) -> Pushed {
        if self.coalesce_pending
            && let Some(pushed) = self.coalesce(key, payload)
        {
            return pushed;
        }
        let bytes = self.bytes();
        if bytes + (key.len() + payload.len()) as u64 <= self.max_bytes {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.queued += 1;
            self.entries.push(OutboxEntry {
                seq,
                key: key.to_vec(),
                payload: payload.to_vec(),
            });
            return Pushed::Queued { seq };
        }
        if let Some(pushed) = self.coalesce(key, payload) {
            return pushed;
        }
        self.dropped.insert(key.to_vec());
        self.dropped_total += 1;
        Pushed::Dropped
    }

    fn peek(&mut self, max: usize) -> Vec<OutboxEntry> {
        self.peek_after(0, max, u64::MAX)
    }

    fn peek_after(&mut self, after: u64, max: usize, max_bytes: u64) -> Vec<OutboxEntry> {
        let mut out: Vec<OutboxEntry> = Vec::new();
        let mut bytes = 0;
        for e in self.entries.iter().filter(|e| e.seq > after).take(max) {
            bytes += size(e);
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        if let Some(last) = out.last() {
            self.in_flight_through = self.in_flight_through.max(last.seq);
        }
        out
    }

    fn ack(&mut self, through: u64) {
        let through = through.min(self.next_seq - 1);
        if through > self.acked_through {
            self.acked_through = through;
            self.entries.retain(|e| e.seq > through);
        }
    }

    fn rewind(&mut self) {
        self.in_flight_through = self.acked_through;
    }

    fn reopen(&mut self) {
        self.in_flight_through = 0;
        self.queued = 0;
        self.coalesced = 0;
        self.dropped_total = 0;
    }

    fn stats(&self) -> OutboxStats {
        OutboxStats {
            entries: self.entries.len() as u64,
            bytes: self.bytes(),
            in_flight: self
                .entries
                .iter()
                .filter(|e| e.seq <= self.in_flight_through)
                .count() as u64,
            queued_total: self.queued,
            coalesced_total: self.coalesced,
            dropped_total: self.dropped_total,
            oldest_seq: self.entries.first().map(|e| e.seq),
        }
    }
}

fn open_prop(db: &sled::Db, max_bytes: u64, coalesce_pending: bool) -> Outbox {
    let f: Coalesce = Arc::new(test_coalesce);
    let config = OutboxConfig {
        max_bytes,
        coalesce_pending,
    };
    Outbox::open(db, "prop", config, f).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn outbox_behaves_like_its_model(
        max_bytes in 8u64..64,
        coalesce_pending in any::<bool>(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let db = temp_db();
        let mut ob = open_prop(&db, max_bytes, coalesce_pending);
        let mut model = Model { max_bytes, coalesce_pending, next_seq: 1, ..Model::default() };
        for op in ops {
            match op {
                Op::Push(k, p) => {
                    prop_assert_eq!(ob.push(KEYS[k], &p).unwrap(), model.push(KEYS[k], &p));
                }
                Op::Peek(max) => prop_assert_eq!(ob.peek(max).unwrap(), model.peek(max)),
                Op::PeekAfter(nth, max, bytes) => {
                    let after = model.entries.get(nth).map_or(model.next_seq, |e| e.seq);
                    prop_assert_eq!(
                        ob.peek_after(after, max, bytes).unwrap(),
                        model.peek_after(after, max, bytes)
                    );
                }
                Op::Ack(x) => {
                    let through = u64::from(x) % (model.next_seq + 2);
                    ob.ack(through).unwrap();
                    model.ack(through);
                }
                Op::Reopen => {
                    drop(ob);
                    ob = open_prop(&db, max_bytes, coalesce_pending);
                    model.reopen();
                }
                Op::Rewind => {
                    ob.rewind();
                    model.rewind();
                }
                Op::TakeDropped => {
                    let want: Vec<Vec<u8>> = std::mem::take(&mut model.dropped).into_iter().collect();
                    prop_assert_eq!(ob.take_dropped_keys().unwrap(), want);
                }
            }
            prop_assert_eq!(ob.stats(), model.stats());
            prop_assert!(ob.stats().bytes <= max_bytes);
        }
        // At the end, everything pending is delivered in order.
        let all = ob.peek(usize::MAX).unwrap();
        prop_assert_eq!(&all, &model.entries);
    }
}
