//! A hub on PostgreSQL (`store = { kind = "postgres" }`): an edge's thing and a user's write land
//! in PostgreSQL's tables, and a hub started on the same schema with an empty data directory
//! serves them. Needs PostgreSQL at `OPENTWINS_TEST_POSTGRES` (default
//! `postgres://root@127.0.0.1:5432/test`); skips loudly without it, or fails when
//! `OPENTWINS_REQUIRE_SERVICES=1`.

mod common;

use std::time::Duration;

use common::config;

use opentwins_postgres::PgConfig;
use opentwins_runtime::{Instance, Role, StoreConfig};
use opentwins_transport::link::{Direction, LinkConfig, PeerConfig};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(60);

fn url() -> String {
    std::env::var("OPENTWINS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned())
}

async fn sql(query: &str) -> Result<Vec<tokio_postgres::Row>, String> {
    let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    client.query(query, &[]).await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_on_postgres_keeps_the_fleet_across_a_restart() {
    if let Err(e) = sql("SELECT 1").await {
        assert!(
            std::env::var("OPENTWINS_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "PostgreSQL is not reachable at {} and OPENTWINS_REQUIRE_SERVICES=1: {e}",
            url()
        );
        eprintln!("SKIPPED: PostgreSQL is not reachable at {}: {e}", url());
        return;
    }
    let schema = format!("ot_hub_{}", std::process::id());
    sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
    let outcome = tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let hub_config = |data: &str| {
            let mut hub = config(Role::Hub, "hub", &dir.path().join(data));
            hub.store = StoreConfig::Postgres(PgConfig {
                url: url(),
                schema: schema.clone(),
                ..PgConfig::default()
            });
            hub.links = vec![LinkConfig {
                direction: Direction::In,
                ..LinkConfig::new("car-1", PeerConfig::Inbox {})
            }];
            hub
        };
        let hub = Instance::start(hub_config("first")).await.unwrap();
        let mut edge = config(Role::Edge, "car-1", dir.path());
        edge.enable.processor = false;
        edge.hub.url = format!("http://{}", hub.http_addr().unwrap());
        edge.things = vec![json!({
            "thingId": "t:car-1",
            "policyId": "opentwins:fleet",
            "features": {"speed": {"properties": {"v": 1}}}
        })];
        let edge = Instance::start(edge).await.unwrap();
        let id = opentwins_core::ThingId::new("t:car-1").unwrap();
        let mut arrived = false;
        for _ in 0..200 {
            if hub.twins().get_thing(&id).is_some() {
                arrived = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(arrived, "the edge's thing never reached the hub");
        edge.shutdown().await.unwrap();

        let rows = sql(&format!(
            "SELECT revision, doc::text FROM {schema}.things WHERE id = 't:car-1'"
        ))
        .await
        .unwrap();
        assert_eq!(rows.len(), 1, "the thing is a row in PostgreSQL");
        let doc: String = rows[0].get(1);
        let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(doc["features"]["speed"]["properties"]["v"], 1, "{doc}");
        let policies = sql(&format!("SELECT id FROM {schema}.policies"))
            .await
            .unwrap();
        assert!(
            policies
                .iter()
                .any(|r| r.get::<_, String>(0) == "opentwins:fleet"),
            "the fleet policy is a row too"
        );
        hub.shutdown().await.unwrap();

        // Another data directory: nothing local, everything from PostgreSQL.
        let hub = Instance::start(hub_config("second")).await.unwrap();
        let thing = hub.twins().get_thing(&id).expect("served from PostgreSQL");
        assert_eq!(thing.body()["features"]["speed"]["properties"]["v"], 1);
        hub.shutdown().await.unwrap();
    })
    .await;
    let _ = sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
    outcome.expect("test timed out");
}
