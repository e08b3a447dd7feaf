//! Desired state, two ways: the hub sets a desired speed for a vehicle, the vehicle's edge gets
//! it over its link, the vehicle software (this program) drives toward it and reports the speed
//! it actually has, and the hub watches the delta shrink to nothing.
//!
//! ```text
//! cargo run -p opentwins-examples --example desired
//! cargo run -p opentwins-examples --example desired -- 80
//! ```
//!
//! The optional argument is the desired speed in km/h (default 50). A hub and an edge run in
//! this process with their own stores and HTTP ports, linked over HTTP in both directions (the
//! hub owns `desiredProperties`, the edge owns `properties`, as AWS IoT shadows do). The hub's
//! side talks to the hub only through its HTTP API: `PUT .../desiredProperties/value` and
//! `GET .../features/speed/delta`.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, ThingCommand};
use opentwins_core::{Pointer, ThingId};
use opentwins_runtime::{Instance, InstanceConfig, Role};
use opentwins_transport::link::{Direction, LinkConfig, PeerConfig};

const THING: &str = "demo:car-1";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let target: f64 = match std::env::args().nth(1) {
        Some(v) => v.parse().context("the argument is a speed in km/h")?,
        None => 50.0,
    };
    let dir = tempfile::tempdir()?;
    let vehicle = json!({
        "thingId": THING,
        "policyId": "opentwins:fleet",
        "features": {"speed": {"properties": {"value": 0.0}}}
    });

    let mut hub = InstanceConfig::defaults(Role::Hub);
    hub.instance_id = "hub".into();
    hub.data_dir = dir.path().join("hub");
    hub.listen = "127.0.0.1:0".into();
    hub.enable.mqtt = false;
    hub.links = vec![inbox("car-1")];
    let hub = Instance::start(hub).await?;
    let hub_url = format!("http://{}", hub.http_addr().context("hub API")?);

    let mut edge = InstanceConfig::defaults(Role::Edge);
    edge.instance_id = "car-1".into();
    edge.data_dir = dir.path().join("car-1");
    edge.listen = "127.0.0.1:0".into();
    edge.enable.mqtt = false;
    edge.enable.processor = false;
    edge.things = vec![vehicle];
    edge.hub.url = hub_url.clone();
    edge.links = vec![inbox("hub-in")];
    let edge = Instance::start(edge).await?;
    let edge_url = format!("http://{}", edge.http_addr().context("edge API")?);
    // Desired state down: the hub POSTs its changes to the edge's inbox.
    hub.links()
        .add(LinkConfig {
            owned: vec!["/features/*/desiredProperties".into()],
            include: vec!["/features/*/desiredProperties".into()],
            peer_instance: Some("car-1".into()),
            ..link(
                "to-car-1",
                PeerConfig::Http {
                    url: edge_url,
                    remote_link: "hub-in".into(),
                    username: None,
                    password: None,
                    token: None,
                    tls: Default::default(),
                },
                Direction::Out,
            )
        })
        .await?;

    let http = reqwest::Client::new();
    let feature = format!("{hub_url}/api/2/things/{THING}/features/speed");
    // The vehicle reached the hub once its first report arrived.
    wait_for(&http, &format!("{feature}/properties/value"), |_| true).await?;
    println!("hub: desired speed {target} km/h for {THING}");
    let put = http
        .put(format!("{feature}/desiredProperties/value"))
        .header("content-type", "application/json")
        .body(target.to_string())
        .send()
        .await?;
    anyhow::ensure!(
        put.status().is_success(),
        "the hub refused: {}",
        put.status()
    );

    // The vehicle software: watches its own twin and drives toward the desired speed.
    let twins = edge.twins().clone();
    let me = AuthContext::new(["opentwins:local"]);
    let id = ThingId::new(THING)?;
    let started = Instant::now();
    let mut speed = 0.0f64;
    loop {
        let thing = twins.get_thing(&id).context("the vehicle's twin is gone")?;
        let desired = thing.body()["features"]["speed"]["desiredProperties"]["value"].as_f64();
        if let Some(desired) = desired {
            let step = (desired - speed).clamp(-10.0, 10.0);
            if step != 0.0 {
                speed += step;
                let report = ThingCommand::new(
                    id.clone(),
                    Action::Modify,
                    Pointer::parse("/features/speed/properties/value")?,
                    Some(json!(speed)),
                );
                twins.apply(&me, report).await?;
                println!("vehicle: desired {desired} km/h, now driving {speed} km/h");
            }
        }
        let delta = http
            .get(format!("{feature}/delta"))
            .send()
            .await?
            .text()
            .await?;
        let delta: Value = serde_json::from_str(&delta)?;
        println!("hub: delta {delta}");
        if delta == json!({}) && speed == target {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "no convergence in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    println!(
        "in sync after {:.1} s: the hub's delta is empty",
        started.elapsed().as_secs_f64()
    );
    edge.shutdown().await?;
    hub.shutdown().await?;
    Ok(())
}

async fn wait_for(
    http: &reqwest::Client,
    url: &str,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    for _ in 0..100 {
        let r = http.get(url).send().await?;
        if r.status().is_success() && done(&r.text().await?) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{url} never answered")
}

fn inbox(name: &str) -> LinkConfig {
    LinkConfig {
        peer_instance: Some(if name == "hub-in" { "hub" } else { name }.into()),
        ..link(name, PeerConfig::Inbox {}, Direction::In)
    }
}

fn link(name: &str, peer: PeerConfig, direction: Direction) -> LinkConfig {
    LinkConfig {
        direction,
        ..LinkConfig::new(name, peer)
    }
}
