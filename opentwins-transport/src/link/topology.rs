//! Several instances in one process, linked as a topology file says: the example configurations
//! in `examples/topologies/` (P2P, star, tree, hybrid), the `topology` example and tests.

use serde::Deserialize;

use opentwins_core::{EngineConfig, Twins};

use super::{LinkConfig, LinkError, Links, Network};

/// A topology: instances and their links (each link as [`LinkConfig`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Where the examples write (informational for this crate).
    #[serde(default)]
    pub write_at: Option<String>,
    /// The instances.
    pub instances: Vec<InstanceSpec>,
}

/// One instance of a [`Topology`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// Its instance id.
    pub id: String,
    /// Its links.
    #[serde(default)]
    pub links: Vec<LinkConfig>,
}

impl Topology {
    /// Starts every instance on an in-memory engine, with outboxes in temporary databases,
    /// on `network`, and then their links. `prepare` runs on each engine before its links
    /// start (e.g. to create the policies the links' subjects need).
    pub async fn start<F, Fut>(
        &self,
        network: &Network,
        prepare: F,
    ) -> Result<Vec<Links>, LinkError>
    where
        F: Fn(Twins) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut all = Vec::with_capacity(self.instances.len());
        for spec in &self.instances {
            let bad = |detail: String| LinkError::Config {
                name: spec.id.clone(),
                detail,
            };
            let twins = Twins::open(
                EngineConfig {
                    instance_id: spec.id.clone(),
                    ..EngineConfig::default()
                },
                std::sync::Arc::new(opentwins_core::store::MemoryStore::new()),
            )
            .map_err(|e| bad(e.to_string()))?;
            prepare(twins.clone()).await;
            let db = sled::Config::new()
                .temporary(true)
                .open()
                .map_err(|e| bad(format!("cannot open a temporary outbox database: {e}")))?;
            all.push(Links::new(twins, db, Some(network.clone())));
        }
        for (spec, links) in self.instances.iter().zip(&all) {
            for link in &spec.links {
                links.add(link.clone()).await?;
            }
        }
        Ok(all)
    }
}
