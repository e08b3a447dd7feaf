//! Helpers the runtime's integration tests share.

use opentwins_runtime::{InstanceConfig, Role};

/// An instance `id` with the defaults of `role`, its data under `dir/id`, HTTP on a free
/// loopback port and no MQTT.
pub(crate) fn config(role: Role, id: &str, dir: &std::path::Path) -> InstanceConfig {
    let mut c = InstanceConfig::defaults(role);
    c.instance_id = id.into();
    c.data_dir = dir.join(id);
    c.listen = "127.0.0.1:0".into();
    c.enable.mqtt = false;
    c
}
