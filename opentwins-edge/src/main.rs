//! `opentwins-edge`: a twin instance on a vehicle or an ARM board. The engine on a sled store,
//! MQTT in (Ditto Protocol commands and camera telemetry), the lane model on every frame, the
//! decision written into the twin and sent up to the hub; the HTTP API on loopback.
//!
//! ```text
//! opentwins-edge --print-default-config > edge.toml
//! OPENTWINS_INSTANCE_ID=car-1 OPENTWINS_HUB_URL=mqtt://127.0.0.1:1883 opentwins-edge --config edge.toml
//! ```

fn main() -> anyhow::Result<()> {
    opentwins_runtime::cli::main(opentwins_runtime::Role::Edge)
}
