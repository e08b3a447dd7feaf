//! `kill -9` the engine while 16 writers pipeline `twin-persisted` merges into one thing and
//! others create things: after a restart on the same sled directory, every acknowledged write is
//! there (the thing's revision is at least the highest acknowledged one, and every acknowledged
//! create exists).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use opentwins_core::engine::{EngineConfig, Twins};
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, Headers, TWIN_PERSISTED, ThingCommand};
use opentwins_core::store::{SledConfig, SledStore, Store, contract};
use opentwins_core::{Pointer, ThingId};
use serde_json::json;

const CHILD_ENV: &str = "OPENTWINS_ENGINE_CHILD";
const TIMEOUT: Duration = Duration::from_secs(60);
const ACKS_BEFORE_KILL: usize = 400;

fn persisted(id: &str, action: Action, path: &str, value: serde_json::Value) -> ThingCommand {
    let mut c = ThingCommand::new(
        ThingId::new(id).unwrap(),
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

/// The child: writes until killed, printing `rev N` / `created ID` after each acknowledgement.
#[test]
fn engine_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(SledConfig::new(dir)).unwrap());
        let tw = Twins::open(EngineConfig::default(), store).unwrap();
        let auth = AuthContext::new(["test:writer"]);
        tw.apply(
            &auth,
            persisted("crash:hot", Action::Create, "/", json!({})),
        )
        .await
        .unwrap();
        let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
        let mut tasks = Vec::new();
        for w in 0..16 {
            let (tw, auth, out) = (tw.clone(), auth.clone(), out.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0u64.. {
                    let line = if w % 4 == 0 {
                        let id = format!("crash:w{w}-{i}");
                        let c =
                            persisted(&id, Action::Create, "/", json!({"attributes": {"i": i}}));
                        tw.apply(&auth, c).await.unwrap();
                        format!("created {id}")
                    } else {
                        let c = persisted(
                            "crash:hot",
                            Action::Merge,
                            "/attributes",
                            json!({"w": w, "i": i}),
                        );
                        let out = tw.apply(&auth, c).await.unwrap();
                        let etag = out.response.headers.etag.unwrap();
                        format!("rev {}", etag.trim_matches('"').trim_start_matches("rev:"))
                    };
                    let mut o = out.lock().unwrap();
                    writeln!(o, "{line}").unwrap();
                    o.flush().unwrap();
                }
            }));
        }
        let _ = tokio::time::timeout(TIMEOUT, futures_join(tasks)).await;
    });
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

#[test]
fn kill_9_loses_no_acknowledged_engine_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let acks = contract::kill_9_child(
        "engine_child",
        (CHILD_ENV, db.as_os_str()),
        TIMEOUT,
        |line| line.starts_with("rev ") || line.starts_with("created "),
        |acks| acks.len() >= ACKS_BEFORE_KILL,
    );

    let max_rev = acks
        .iter()
        .filter_map(|l| l.strip_prefix("rev ")?.parse::<u64>().ok())
        .max()
        .expect("some merges were acknowledged");
    let created: Vec<&str> = acks
        .iter()
        .filter_map(|l| l.strip_prefix("created "))
        .collect();
    assert!(!created.is_empty(), "some creates were acknowledged");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open(SledConfig::new(&db)).expect("reopen"));
        let tw = Twins::open(EngineConfig::default(), store).expect("engine reopens");
        let hot = tw
            .get_thing(&ThingId::new("crash:hot").unwrap())
            .expect("hot thing");
        assert!(
            hot.revision() >= max_rev,
            "acknowledged revision {max_rev} lost: restored {}",
            hot.revision()
        );
        for id in created {
            assert!(
                tw.get_thing(&ThingId::new(id).unwrap()).is_some(),
                "acknowledged create {id} lost"
            );
        }
        // The restored engine works: the policy came back with the things.
        let auth = AuthContext::new(["test:writer"]);
        let c = persisted(
            "crash:hot",
            Action::Merge,
            "/attributes",
            json!({"after": true}),
        );
        let out = tokio::time::timeout(TIMEOUT, tw.apply(&auth, c))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.response.status, 204);
    });
}
