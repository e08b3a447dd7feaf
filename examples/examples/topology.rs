//! Runs a topology file (`examples/topologies/*.toml`: P2P, star, tree, hybrid) as in-process
//! instances, writes a lane decision and a camera frame at one instance, and shows how the
//! update reaches every other instance: after how long, over which hops, and what each holds.
//!
//! ```sh
//! cargo run -p opentwins-examples --example topology -- examples/topologies/star.toml
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentwins_core::model::PolicyId;
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, Headers, PolicyCommand, ThingCommand, ThingEvent};
use opentwins_core::{Pointer, Thing, ThingId, Twins};
use opentwins_transport::link::{Links, Network, Topology};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/topologies/star.toml".into());
    let topology: Topology = toml::from_str(&std::fs::read_to_string(&path)?)?;
    let network = Network::new();
    let instances = topology.start(&network, provision).await?;
    let at = topology
        .write_at
        .clone()
        .unwrap_or_else(|| topology.instances[0].id.clone());
    let writer = instances
        .iter()
        .find(|l| l.instance_id() == at)
        .ok_or(format!("no instance '{at}' in {path}"))?;

    // Record when and how the write arrives everywhere.
    let start = Instant::now();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    for links in &instances {
        let (arrivals, me) = (arrivals.clone(), links.instance_id().to_owned());
        links
            .twins()
            .add_sink(Arc::new(move |e: &ThingEvent, _: Option<&Thing>| {
                if let Some(p) = &e.provenance
                    && p.origin.as_ref() != me
                {
                    let hops: Vec<&str> = p.hops.iter().map(|h| h.as_ref()).collect();
                    let line = format!(
                        "{:>10.2} ms  {me:<10} via {}",
                        start.elapsed().as_secs_f64() * 1e3,
                        hops.join(" → ")
                    );
                    arrivals
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(line);
                }
            }));
    }
    let id = ThingId::new("example:car")?;
    let body = json!({
        "policyId": "example:policy",
        "features": {
            "lane": {"properties": {"offset": 0.12, "heading": -0.8}},
            "steering": {"properties": {"correction": -0.05}},
            "camera": {"properties": {"frame": "(a JPEG frame, base64)"}}
        }
    });
    let cmd = ThingCommand::new(id.clone(), Action::Modify, Pointer::root(), Some(body));
    writer.twins().apply(&user(), cmd).await?;
    println!("wrote example:car at {at}; arrivals:");
    wait_idle(&instances, &network).await;
    for line in arrivals.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        println!("{line}");
    }
    println!("\nwhat each instance holds:");
    for links in &instances {
        let features = links
            .twins()
            .get_thing(&id)
            .map(|t| {
                let f = t.body()["features"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                f.keys().cloned().collect::<Vec<_>>().join(", ")
            })
            .unwrap_or_else(|| "nothing".into());
        let sent: u64 = links.status().iter().map(|s| s.messages_out).sum();
        println!(
            "  {:<10} features: {features:<24} updates sent: {sent}",
            links.instance_id()
        );
    }
    for links in &instances {
        links.shutdown().await;
    }
    Ok(())
}

fn user() -> AuthContext {
    AuthContext::new(["example:user"])
}

/// The policy of the example's thing on every instance: the example user and link peers may do
/// everything.
async fn provision(twins: Twins) {
    let policy = json!({"entries": {"all": {
        "subjects": {"example:user": {"type": "example"}, "link:peer": {"type": "link"}},
        "resources": {
            "thing:/": {"grant": ["READ", "WRITE"], "revoke": []},
            "policy:/": {"grant": ["READ", "WRITE"], "revoke": []}
        }
    }}});
    let cmd = PolicyCommand {
        policy_id: PolicyId::new("example:policy").expect("a valid id"),
        action: Action::Create,
        path: Pointer::root(),
        value: Some(policy),
        headers: Headers::default(),
    };
    if let Err(e) = twins.apply_policy(&user(), cmd).await {
        eprintln!("cannot create the example policy: {e}");
    }
}

async fn wait_idle(instances: &[Links], network: &Network) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut calm = 0;
    while calm < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if network.in_flight() == 0 && instances.iter().all(Links::is_idle) {
            calm += 1;
        } else {
            calm = 0;
        }
    }
}
