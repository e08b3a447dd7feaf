//! `opentwins-hub`: the fleet's server. The engine on a sled store, the HTTP API (things,
//! search, history, composition, connections), the dashboard, MQTT, and the fleet links that
//! take every edge's decisions and send desired state down.
//!
//! ```text
//! opentwins-hub --print-default-config > hub.toml
//! opentwins-hub --config hub.toml
//! ```

fn main() -> anyhow::Result<()> {
    opentwins_runtime::cli::main(opentwins_runtime::Role::Hub)
}
