//! `kill -9` an engine whose history lives in the store's sled database after 8 writers
//! pipelined `twin-persisted` merges: after a restart on the same directory, every acknowledged
//! revision has its history point (the sink writes before the store write that flushes it).

use std::collections::BTreeSet;
use std::io::Write;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use opentwins_core::engine::{EngineConfig, Twins};
use opentwins_core::history::{History, HistoryConfig, HistorySink, Order, SledHistory, Span};
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, Headers, TWIN_PERSISTED, ThingCommand};
use opentwins_core::store::{SledConfig, SledStore, Store, contract};
use opentwins_core::{Pointer, ThingId};
use serde_json::json;

const CHILD_ENV: &str = "OPENTWINS_HISTORY_CHILD";
const TIMEOUT: Duration = Duration::from_secs(60);
const ACKS: usize = 400;
const THING: &str = "crash:hist";
const PATH: &str = "/features/f/properties/v";

fn persisted(action: Action, path: &str, value: serde_json::Value) -> ThingCommand {
    let mut c = ThingCommand::new(
        ThingId::new(THING).unwrap(),
        action,
        Pointer::parse(path).unwrap(),
        Some(value),
    );
    c.headers = Headers {
        requested_acks: Some(vec![TWIN_PERSISTED.into()]),
        ..Headers::default()
    };
    c
}

/// The child: 8 writers make [`ACKS`] merges, printing `rev N` after each acknowledgement,
/// then `done`; then it waits to be killed. Nothing written after the last acknowledgement can
/// carry the history points to disk: they must be there by the acknowledgement itself.
#[test]
fn history_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sled = Arc::new(SledStore::open(SledConfig::new(dir)).unwrap());
        let history = Arc::new(SledHistory::open(sled.db()).unwrap());
        let store: Arc<dyn Store> = sled;
        let tw = Twins::open(EngineConfig::default(), store).unwrap();
        tw.add_sink(Arc::new(HistorySink::new(
            history,
            &HistoryConfig::default(),
        )));
        let auth = AuthContext::new(["test:writer"]);
        let body = json!({"features": {"f": {"properties": {"v": 0}}}});
        tw.apply(&auth, persisted(Action::Create, "/", body))
            .await
            .unwrap();
        let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
        let mut tasks = Vec::new();
        for w in 0..8 {
            let (tw, auth, out) = (tw.clone(), auth.clone(), out.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..(ACKS / 8) as u64 {
                    let patch = json!({"v": i, "w": w});
                    let c = persisted(Action::Merge, "/features/f/properties", patch);
                    let done = tw.apply(&auth, c).await.unwrap();
                    let etag = done.response.headers.etag.unwrap();
                    let rev = etag.trim_matches('"').trim_start_matches("rev:").to_owned();
                    let mut o = out.lock().unwrap();
                    writeln!(o, "rev {rev}").unwrap();
                    o.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Every write is acknowledged; stay alive (nothing flushes any more) until killed.
        println!("done");
        std::io::stdout().flush().unwrap();
        tokio::time::sleep(TIMEOUT).await;
    });
}

#[test]
fn kill_9_loses_no_history_of_an_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    // The harness's "test history_child ... " may precede a line.
    let lines = contract::kill_9_child(
        "history_child",
        (CHILD_ENV, db.as_os_str()),
        TIMEOUT,
        |line| line.contains("rev ") || line.ends_with("done"),
        |lines| lines.last().is_some_and(|l| l.ends_with("done")),
    );
    let acked: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.split_once("rev ")?.1.parse().ok())
        .collect();
    assert_eq!(acked.len(), ACKS);

    // The dropped process's lock may linger for a moment.
    let store = (0..250)
        .find_map(|_| {
            let s = SledStore::open(SledConfig::new(&db)).ok();
            if s.is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            s
        })
        .expect("the store reopens");
    let history = SledHistory::open(store.db()).unwrap();
    let mut recorded = BTreeSet::new();
    history
        .scan(
            &ThingId::new(THING).unwrap(),
            &Pointer::parse(PATH).unwrap(),
            Span::all(),
            Order::Asc,
            &mut |p| {
                recorded.insert(p.revision);
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    let lost: Vec<_> = acked.iter().filter(|r| !recorded.contains(r)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged revisions have no history point: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    let summary = history
        .paths(&ThingId::new(THING).unwrap(), &Pointer::root())
        .unwrap();
    let v = summary.iter().find(|s| s.path.to_string() == PATH).unwrap();
    assert_eq!(
        v.count,
        recorded.len() as u64,
        "the count matches the points"
    );
}
