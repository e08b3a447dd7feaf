//! The configuration of one instance: a TOML file, every field defaulted, defaults per role
//! (edge or hub), a few values overridable from the environment. See docs/deployment.md.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use opentwins_core::history::HistoryConfig;
use opentwins_core::store::SledConfig;
use opentwins_core::{EngineConfig, Limits};
use opentwins_infer::processor::ProcessorConfig;
use opentwins_postgres::PgConfig;
use opentwins_transport::http::HttpConfig;
use opentwins_transport::link::LinkConfig;
use opentwins_transport::mqtt::{Mapping, MqttConfig, SubscriptionConfig, TlsConfig};

/// What an instance is for: the defaults differ, the code does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// On the vehicle: MQTT in, the lane model, decisions up to the hub, API on loopback.
    Edge,
    /// The fleet's server: history, composition, the dashboard, relays between edges.
    Hub,
}

impl Role {
    /// `edge` or `hub`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Hub => "hub",
        }
    }
}

/// One instance. Unknown keys are errors; missing keys take the role's default
/// (`--print-default-config` prints them all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// This instance's id, unique among linked instances (`OPENTWINS_INSTANCE_ID`). It also
    /// sets `engine.instance_id` and `mqtt.instance_id`.
    pub instance_id: String,
    /// Where the store, history and outboxes live (`OPENTWINS_DATA_DIR`); `store.path` is
    /// `{data_dir}/store`.
    pub data_dir: PathBuf,
    /// Address of the HTTP API (`OPENTWINS_LISTEN`). Port 0 picks a free port.
    pub listen: String,
    /// Which parts run.
    pub enable: Enable,
    /// Things created at start when absent (full Ditto JSON with `thingId`), e.g. the vehicle
    /// this edge runs on.
    pub things: Vec<Value>,
    /// The policy the instance's own components write under (created at start when absent).
    pub fleet: FleetConfig,
    /// The upward link of an edge (`OPENTWINS_HUB_URL`).
    pub hub: HubLinkConfig,
    /// The hub's links from and to the whole fleet over MQTT.
    pub fleet_links: FleetLinksConfig,
    /// Further links, as `/api/2/connections` takes them.
    pub links: Vec<LinkConfig>,
    /// Limits and transient paths.
    pub engine: EngineConfig,
    /// Where things and policies persist: the embedded sled database (default; `path` is
    /// ignored: see `data_dir`) or PostgreSQL (`store = { kind = "postgres", url = "…" }`).
    pub store: StoreConfig,
    /// The HTTP API: authentication, limits.
    pub http: HttpConfig,
    /// The MQTT bridge (`OPENTWINS_BROKER_URL` sets `mqtt.broker`).
    pub mqtt: MqttConfig,
    /// The lane model: `path` of an ONNX file with its `.json` spec beside it; empty: the
    /// model bundled in the binary.
    pub model: ModelConfig,
    /// The lane processor.
    pub processor: ProcessorConfig,
    /// What history records and keeps (with `enable.history`).
    pub history: HistoryConfig,
    /// What one request may cost: pointer keys, nesting, `fields` selectors
    /// (docs/security.md). One value per process.
    pub limits: Limits,
}

/// Which parts of the instance run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Enable {
    /// The HTTP API (and `/health`, `/metrics`, the dashboard).
    pub http: bool,
    /// The MQTT bridge (Ditto Protocol commands, telemetry, events).
    pub mqtt: bool,
    /// The lane processor.
    pub processor: bool,
    /// Recording history, and `/api/2/history`.
    pub history: bool,
    /// The dashboard page at `/`.
    pub dashboard: bool,
}

impl Default for Enable {
    fn default() -> Self {
        Enable {
            http: true,
            mqtt: true,
            processor: false,
            history: false,
            dashboard: false,
        }
    }
}

/// The policy shared by the instance's components and users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// Its id; links create things under it, provisioned things should name it.
    pub policy_id: String,
    /// Subjects granted READ and WRITE on things, policies and messages.
    pub subjects: Vec<String>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            policy_id: "opentwins:fleet".into(),
            subjects: vec![
                ADMIN.into(),
                ANONYMOUS.into(),
                "opentwins:mqtt".into(),
                PROCESSOR.into(),
                "link:peer".into(),
            ],
        }
    }
}

/// The subject HTTP callers without credentials get (loopback only by default). It reads and
/// writes things under the fleet policy, but is no administrator.
pub const ANONYMOUS: &str = "opentwins:local";
/// The administrator subject of the default configuration: the token a fresh instance
/// generates into `{data_dir}/admin-token` authenticates as it (see docs/security.md).
pub const ADMIN: &str = "opentwins:admin";
/// The subject the lane processor writes as.
pub const PROCESSOR: &str = "opentwins:processor";

/// An edge's link to its hub. Its `Debug` output hides the password and the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubLinkConfig {
    /// `mqtt://host:port` (through a broker, with the hub's `fleet_links`), `http://host:port`
    /// (POST to the hub's inbox `remote_link`), or empty: no hub.
    pub url: String,
    /// The hub's instance id (updates that crossed it are not sent back).
    pub instance: String,
    /// MQTT: topic this edge publishes to; `{instance}` is this edge's id.
    pub up: String,
    /// MQTT: topic the hub publishes to.
    pub down: String,
    /// HTTP: the hub's inbox link that takes this edge's updates (default: this edge's id).
    pub remote_link: String,
    /// HTTP: bearer token for the hub.
    pub token: Option<String>,
    /// MQTT: user name for the broker (on a broker with ACLs, the one whose rules let it
    /// write `up` and read `down`); HTTP: Basic user at the hub.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<String>,
    /// With an `mqtts://` or `https://` URL: the CA of the broker's or hub's certificate, the
    /// client certificate and key (as `mqtt.tls`).
    pub tls: TlsConfig,
    /// Paths never sent (frames are transient anyway).
    pub exclude: Vec<String>,
    /// Paths this edge owns: reported state.
    pub owned: Vec<String>,
}

impl Default for HubLinkConfig {
    fn default() -> Self {
        HubLinkConfig {
            url: String::new(),
            instance: "hub".into(),
            up: "opentwins/links/{instance}/up".into(),
            down: "opentwins/links/hub/down".into(),
            remote_link: String::new(),
            token: None,
            username: None,
            password: None,
            tls: TlsConfig::default(),
            exclude: vec!["/features/camera".into()],
            owned: vec!["/features/*/properties".into()],
        }
    }
}

impl std::fmt::Debug for HubLinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let HubLinkConfig {
            url,
            instance,
            up,
            down,
            remote_link,
            token,
            username,
            password,
            tls,
            exclude,
            owned,
        } = self;
        let hide = |s: &Option<String>| s.as_ref().map(|_| "***");
        f.debug_struct("HubLinkConfig")
            .field("url", url)
            .field("instance", instance)
            .field("up", up)
            .field("down", down)
            .field("remote_link", remote_link)
            .field("token", &hide(token))
            .field("username", username)
            .field("password", &hide(password))
            .field("tls", tls)
            .field("exclude", exclude)
            .field("owned", owned)
            .finish()
    }
}

/// A hub's two MQTT links to the fleet: one takes every edge's updates, one sends what the
/// edges should get (desired state by default) to all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetLinksConfig {
    /// Run them (needs `mqtt.broker`).
    pub enabled: bool,
    /// Filter of the edges' topics.
    pub up: String,
    /// Topic to the edges; `{instance}` is the hub's id.
    pub down: String,
    /// Paths sent down.
    pub down_include: Vec<String>,
    /// Paths the hub owns.
    pub owned: Vec<String>,
    /// The subject an edge's updates are applied as; `{peer}` is the edge named by the topic
    /// (the `+` of `up`), so each edge may write only what it created or policies grant it.
    pub subject: String,
}

impl Default for FleetLinksConfig {
    fn default() -> Self {
        FleetLinksConfig {
            enabled: false,
            up: "opentwins/links/+/up".into(),
            down: "opentwins/links/{instance}/down".into(),
            down_include: vec!["/features/*/desiredProperties".into()],
            owned: vec!["/features/*/desiredProperties".into()],
            subject: "link:{peer}".into(),
        }
    }
}

/// Where the lane model comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// ONNX file (its spec `{stem}.json` beside it); empty: the bundled model.
    pub path: Option<PathBuf>,
}

/// The camera's properties (frames and their metadata): transient on both roles.
pub const FRAME: &str = "/features/camera/properties";

impl InstanceConfig {
    /// The defaults of `role`.
    pub fn defaults(role: Role) -> InstanceConfig {
        let edge = role == Role::Edge;
        let id = role.name().to_owned();
        let mut http = HttpConfig::default();
        http.auth.anonymous = true;
        http.auth.anonymous_subject = ANONYMOUS.into();
        http.admin_subjects = vec![ADMIN.into()];
        // Types and twin trees (`/api/2/types`, `/api/2/twins`) on the hub.
        http.composition = !edge;
        let mqtt = MqttConfig {
            instance_id: id.clone(),
            subscriptions: vec![
                SubscriptionConfig {
                    filter: "opentwins/commands/{instance}".into(),
                    ..SubscriptionConfig::default()
                },
                SubscriptionConfig {
                    mapping: Mapping::Telemetry,
                    // Each instance has its own cameras: a frame for the hub is not one for
                    // an edge.
                    template: "telemetry/{instance}/{namespace}:{name}/{feature}".into(),
                    ..SubscriptionConfig::default()
                },
            ],
            outbound: opentwins_transport::mqtt::OutboundConfig {
                // Frames are not echoed back to the broker.
                filter: Some("not(exists(features/camera/properties/frame))".into()),
                ..Default::default()
            },
            ..MqttConfig::default()
        };
        InstanceConfig {
            instance_id: id.clone(),
            data_dir: PathBuf::from(format!("data/{id}")),
            listen: if edge {
                "127.0.0.1:8081".into()
            } else {
                "127.0.0.1:8080".into()
            },
            enable: Enable {
                processor: edge,
                history: !edge,
                dashboard: !edge,
                ..Enable::default()
            },
            things: Vec::new(),
            fleet: FleetConfig::default(),
            hub: HubLinkConfig::default(),
            fleet_links: FleetLinksConfig {
                enabled: !edge,
                ..FleetLinksConfig::default()
            },
            links: Vec::new(),
            engine: EngineConfig {
                instance_id: id,
                transient: vec![FRAME.into()],
                ..EngineConfig::default()
            },
            store: StoreConfig::default(),
            http,
            mqtt,
            model: ModelConfig::default(),
            processor: ProcessorConfig::default(),
            history: HistoryConfig::default(),
            limits: Limits::default(),
        }
    }

    /// Reads a TOML file over the role's defaults: a key missing in the file keeps its
    /// default (per top-level section: a section given replaces its defaults field by field).
    pub fn from_toml(role: Role, text: &str) -> Result<InstanceConfig, toml::de::Error> {
        let mut base = toml::Table::try_from(InstanceConfig::defaults(role))
            .expect("the defaults serialize to a table");
        let file: toml::Table = toml::from_str(text)?;
        merge(&mut base, file);
        toml::Value::Table(base).try_into()
    }

    /// The TOML of this configuration.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the configuration serializes")
    }

    /// Applies `OPENTWINS_*` environment overrides (`lookup` is `std::env::var` in binaries).
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        if let Some(v) = lookup("OPENTWINS_INSTANCE_ID") {
            self.instance_id = v;
        }
        if let Some(v) = lookup("OPENTWINS_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = lookup("OPENTWINS_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = lookup("OPENTWINS_BROKER_URL") {
            self.enable.mqtt = !v.is_empty();
            if !v.is_empty() {
                self.mqtt.broker = v;
            }
        }
        if let Some(v) = lookup("OPENTWINS_HUB_URL") {
            self.hub.url = v;
        }
    }

    /// Sets the values derived from others (`instance_id`, `data_dir`).
    pub fn resolve(&mut self) {
        self.engine.instance_id = self.instance_id.clone();
        self.mqtt.instance_id = self.instance_id.clone();
        if let StoreConfig::Sled(sled) = &mut self.store {
            sled.path = self.data_dir.join("store");
        }
    }

    /// The sled database of this instance (`{data_dir}/store`): the store itself, or with
    /// PostgreSQL the home of the history and the links' outboxes (docs/storage.md).
    pub fn local_store(&self) -> SledConfig {
        match &self.store {
            StoreConfig::Sled(sled) => sled.clone(),
            StoreConfig::Postgres(_) => SledConfig::new(self.data_dir.join("store")),
        }
    }
}

/// Where things and policies persist. In TOML a table whose `kind` picks the backend
/// (`"sled"` when absent) and whose other keys are that backend's configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    /// The embedded sled database (`kind = "sled"`).
    Sled(SledConfig),
    /// PostgreSQL (`kind = "postgres"`).
    Postgres(PgConfig),
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Sled(SledConfig::default())
    }
}

impl Serialize for StoreConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let (kind, value) = match self {
            StoreConfig::Sled(c) => ("sled", toml::Value::try_from(c)),
            StoreConfig::Postgres(c) => ("postgres", toml::Value::try_from(c)),
        };
        let mut table = match value.map_err(S::Error::custom)? {
            toml::Value::Table(table) => table,
            _ => return Err(S::Error::custom("a store configuration is a table")),
        };
        table.insert("kind".to_owned(), toml::Value::String(kind.to_owned()));
        table.serialize(s)
    }
}

impl<'de> Deserialize<'de> for StoreConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut table = toml::Table::deserialize(d)?;
        let kind = match table.remove("kind") {
            None => "sled".to_owned(),
            Some(toml::Value::String(kind)) => kind,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "store.kind must be \"sled\" or \"postgres\", not {other}"
                )));
            }
        };
        let rest = toml::Value::Table(table);
        match kind.as_str() {
            "sled" => rest.try_into().map(StoreConfig::Sled),
            "postgres" => rest.try_into().map(StoreConfig::Postgres),
            other => {
                return Err(D::Error::custom(format!(
                    "store.kind must be \"sled\" or \"postgres\", not \"{other}\""
                )));
            }
        }
        .map_err(|e| D::Error::custom(format!("store: {e}")))
    }
}

/// Merges `over` into `base`: tables recursively, anything else replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_defaults_read_back_as_the_defaults() {
        for role in [Role::Edge, Role::Hub] {
            let d = InstanceConfig::defaults(role);
            assert_eq!(InstanceConfig::from_toml(role, &d.to_toml()).unwrap(), d);
            assert_eq!(InstanceConfig::from_toml(role, "").unwrap(), d);
        }
    }

    #[test]
    fn a_file_changes_only_what_it_names_and_unknown_keys_fail() {
        let c = InstanceConfig::from_toml(
            Role::Edge,
            "instance_id = \"car-1\"\n[mqtt]\nbroker = \"tcp://10.0.0.1:1883\"\n[enable]\nhttp = false\n",
        )
        .unwrap();
        assert_eq!(c.instance_id, "car-1");
        assert_eq!(c.mqtt.broker, "tcp://10.0.0.1:1883");
        // The rest of the section keeps the edge's defaults.
        assert_eq!(c.mqtt.subscriptions.len(), 2);
        assert!(!c.enable.http && c.enable.processor);
        let bad = InstanceConfig::from_toml(Role::Edge, "[enable]\nhttps = true\n");
        assert!(bad.unwrap_err().to_string().contains("https"));
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut c = InstanceConfig::defaults(Role::Edge);
        c.apply_env(|k| match k {
            "OPENTWINS_INSTANCE_ID" => Some("car-9".into()),
            "OPENTWINS_BROKER_URL" => Some("tcp://broker:1883".into()),
            "OPENTWINS_HUB_URL" => Some("mqtt://broker:1883".into()),
            _ => None,
        });
        c.resolve();
        assert_eq!(
            (c.engine.instance_id.as_str(), c.mqtt.instance_id.as_str()),
            ("car-9", "car-9")
        );
        assert_eq!(c.mqtt.broker, "tcp://broker:1883");
        assert_eq!(c.hub.url, "mqtt://broker:1883");
        assert_eq!(c.local_store().path, PathBuf::from("data/edge/store"));
        c.apply_env(|k| (k == "OPENTWINS_BROKER_URL").then(String::new));
        assert!(!c.enable.mqtt);
    }

    #[test]
    fn store_kinds() {
        let sled: StoreConfig = toml::from_str("max_batch_ops = 5").unwrap();
        let StoreConfig::Sled(c) = &sled else {
            panic!("{sled:?}")
        };
        assert_eq!(c.max_batch_ops, 5);
        let pg: StoreConfig =
            toml::from_str("kind = \"postgres\"\nurl = \"postgres://root@db/twins\"").unwrap();
        assert_eq!(
            pg,
            StoreConfig::Postgres(PgConfig {
                url: "postgres://root@db/twins".into(),
                ..PgConfig::default()
            })
        );
        for round in [sled, pg] {
            let text = toml::to_string(&round).unwrap();
            assert_eq!(
                toml::from_str::<StoreConfig>(&text).unwrap(),
                round,
                "{text}"
            );
        }
        for bad in [
            "kind = \"mongo\"",
            "kind = 3",
            "kind = \"postgres\"\npath = \"x\"",
            "kind = \"sled\"\nurl = \"x\"",
        ] {
            assert!(toml::from_str::<StoreConfig>(bad).is_err(), "{bad}");
        }
        let mut c = InstanceConfig::defaults(Role::Hub);
        c.store = StoreConfig::Postgres(PgConfig::default());
        c.data_dir = PathBuf::from("/d");
        c.resolve();
        assert_eq!(c.local_store().path, PathBuf::from("/d/store"));
    }
}
