//! Link configuration: what a link is, as data (TOML / JSON), separate from the running link.

use serde::{Deserialize, Serialize};

use opentwins_core::model::{PathPattern, Pointer};
use opentwins_core::replica::{Cell, Change};

use crate::mqtt::{TlsConfig, redact};

/// One link between this instance and a peer. Every field but `name` and `peer` has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// Unique among this instance's links (letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// Where the peer is.
    pub peer: PeerConfig,
    /// Which way updates flow.
    #[serde(default)]
    pub direction: Direction,
    /// Only things matching this RQL filter are sent (evaluated on the thing after the change).
    #[serde(default)]
    pub filter: Option<String>,
    /// Path patterns sent and accepted (all when empty). A pattern is a JSON pointer whose
    /// segments may be `*` (any one key), e.g. `/features/lane`, `/features/*/properties`.
    #[serde(default)]
    pub include: Vec<String>,
    /// Path patterns never sent nor accepted, e.g. `/features/camera`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Path patterns this instance owns on this link: a peer's change there is refused and this
    /// instance re-asserts its own value with a newer clock, so every instance converges to the
    /// owner's value (AWS IoT's "device wins for reported, cloud wins for desired").
    #[serde(default)]
    pub owned: Vec<String>,
    /// The subject the peer's updates are applied as (policies apply to peers too). Over
    /// MQTT, `{peer}` in it stands for the topic level the subscribe filter's first `+` matched,
    /// so each edge publishing to `opentwins/links/{edge}/up` is its own subject
    /// (`link:{peer}` gives `link:car-1`), and may write only what policies grant it.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// The policy of things a peer's update creates here, when the policy the update names
    /// does not exist here. Without it, such things get a default policy for `subject`.
    #[serde(default)]
    pub policy: Option<String>,
    /// The peer's instance id, if known: updates that crossed it are not sent back to it.
    #[serde(default)]
    pub peer_instance: Option<String>,
    /// Bound of the persistent outbox in bytes (default 64 MiB).
    #[serde(default = "default_outbox_bytes")]
    pub outbox_bytes: u64,
    /// Whether the peer's updates may create things here (default `true`). An edge whose hub
    /// broadcasts to the whole fleet says `false`: it keeps only the things it already holds.
    #[serde(default = "default_true")]
    pub create: bool,
    /// Messages the link keeps in flight before the first is acknowledged (default 256): a
    /// link carries up to `window × batch` updates per round trip, not one.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Bytes the link keeps in flight (default 1 MiB; at least one message is always sent).
    #[serde(default = "default_window_bytes")]
    pub window_bytes: u64,
    /// Updates one message carries at most (default 64, at most 1,000). With `1` every message
    /// is one plain Ditto merge command, for peers that are not OpenTwins instances; a batch is
    /// a JSON array of such commands.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Bytes of updates one message carries at most (default 64 KiB, at most 1 MiB; a larger
    /// single update goes alone).
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: u64,
    /// How updates are written on the wire (default `auto`; docs/distribution.md, "What
    /// crosses a link").
    #[serde(default)]
    pub wire: Wire,
    /// Seconds between anti-entropy rounds (default 600; 0: none): the link compares digests
    /// of what it carries with its peer's and sends what the peer lacks, also at start and
    /// whenever the peer comes back (docs/distribution.md, "Anti-entropy").
    #[serde(default = "default_anti_entropy_secs")]
    pub anti_entropy_secs: u64,
}

/// How a link writes its updates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Wire {
    /// `binary` to HTTP peers that say they read it (the answer to the link's first digest
    /// request; until then, and for a plain Ditto peer, `json`); `json` over MQTT (other
    /// clients of the broker, a Ditto connection say, may read the topic) and in-process (no
    /// bytes to save, and the outbox's JSON passes without re-encoding).
    #[default]
    Auto,
    /// Ditto merge commands with clocks in their headers, JSON: what a plain Ditto peer
    /// applies.
    Json,
    /// The binary batch form (`opentwins_core::replica::encode_batch`), for OpenTwins peers
    /// only.
    Binary,
}

/// The most updates one link message may carry (a receiver refuses larger batches).
pub const MAX_BATCH: usize = 1000;

fn default_window() -> usize {
    256
}

fn default_window_bytes() -> u64 {
    1024 * 1024
}

fn default_batch() -> usize {
    64
}

fn default_batch_bytes() -> u64 {
    64 * 1024
}

fn default_anti_entropy_secs() -> u64 {
    600
}

fn default_true() -> bool {
    true
}

impl LinkConfig {
    /// A link named `name` to `peer` with every other field at its default.
    pub fn new(name: impl Into<String>, peer: PeerConfig) -> LinkConfig {
        LinkConfig {
            name: name.into(),
            peer,
            direction: Direction::default(),
            filter: None,
            include: Vec::new(),
            exclude: Vec::new(),
            owned: Vec::new(),
            subject: default_subject(),
            policy: None,
            peer_instance: None,
            outbox_bytes: default_outbox_bytes(),
            create: true,
            window: default_window(),
            window_bytes: default_window_bytes(),
            batch: default_batch(),
            batch_bytes: default_batch_bytes(),
            wire: Wire::Auto,
            anti_entropy_secs: default_anti_entropy_secs(),
        }
    }

    /// Whether the link sends the binary batch form ([`Wire`]), given whether the peer said
    /// it reads it.
    pub fn sends_binary(&self, peer_reads_binary: bool) -> bool {
        match self.wire {
            Wire::Auto => peer_reads_binary && matches!(self.peer, PeerConfig::Http { .. }),
            Wire::Json => false,
            Wire::Binary => true,
        }
    }
}

fn default_subject() -> String {
    "link:peer".to_owned()
}

fn default_outbox_bytes() -> u64 {
    64 * 1024 * 1024
}

/// Which way a link carries updates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// This instance's changes go to the peer.
    Out,
    /// The peer's changes come here.
    In,
    /// Both.
    #[default]
    Both,
}

impl Direction {
    /// Whether updates go out.
    pub fn sends(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    /// Whether updates come in.
    pub fn receives(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
}

/// Where the peer is and how to reach it. Its `Debug` output hides passwords and tokens.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum PeerConfig {
    /// Another instance in this process, by instance id (tests, examples, embedding).
    #[serde(rename = "in-process")]
    InProcess {
        /// The peer's instance id.
        instance: String,
    },
    /// An MQTT broker both instances use: updates are published to `publish` and read from
    /// `subscribe` (an MQTT filter); messages this instance sent itself are ignored. Connects
    /// like the MQTT bridge (the same client, credentials and TLS settings).
    Mqtt {
        /// `mqtt://host:port` (also `tcp://`) or, over TLS, `mqtts://host:port` (also `ssl://`).
        url: String,
        /// Topic this instance publishes its updates to, e.g. `fleet/edge-1`.
        publish: String,
        /// Topic filter of the peer's updates, e.g. `fleet/hub` (none: send only).
        #[serde(default)]
        subscribe: Option<String>,
        /// MQTT QoS of updates (1 or 2; default 1).
        #[serde(default = "default_qos")]
        qos: i32,
        /// Client id (default: `{instance}-{link name}`); the broker keeps its session.
        #[serde(default)]
        client_id: Option<String>,
        /// User name and password, if the broker wants them.
        #[serde(default)]
        username: Option<String>,
        /// Password for `username`.
        #[serde(default)]
        password: Option<String>,
        /// TLS with an `mqtts://` URL: the CA that signed the broker's certificate, the
        /// client certificate and key (mutual TLS), as the bridge's `mqtt.tls`.
        #[serde(default)]
        tls: TlsConfig,
    },
    /// A peer that posts its updates to this link's inbox
    /// (`POST /api/2/connections/{name}/inbox`) and cannot be reached from here (an edge behind
    /// NAT): receive only.
    Inbox {},
    /// The peer's HTTP API: updates are POSTed to `{url}/api/2/connections/{remote_link}/inbox`.
    Http {
        /// Base URL, e.g. `http://hub:8080`.
        url: String,
        /// The name of the peer's link that accepts these updates.
        remote_link: String,
        /// HTTP Basic user, if the peer wants one.
        #[serde(default)]
        username: Option<String>,
        /// Password for `username`.
        #[serde(default)]
        password: Option<String>,
        /// Bearer token (instead of Basic).
        #[serde(default)]
        token: Option<String>,
        /// TLS of an `https://` peer: the CA that signs its certificate (default: the system's
        /// CAs) and a client certificate if the peer wants one (`key_password` is not supported).
        #[serde(default)]
        tls: TlsConfig,
    },
}

fn default_qos() -> i32 {
    1
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerConfig::InProcess { instance } => f
                .debug_struct("InProcess")
                .field("instance", instance)
                .finish(),
            PeerConfig::Mqtt {
                url,
                publish,
                subscribe,
                qos,
                client_id,
                username,
                password,
                tls,
            } => f
                .debug_struct("Mqtt")
                .field("url", url)
                .field("publish", publish)
                .field("subscribe", subscribe)
                .field("qos", qos)
                .field("client_id", client_id)
                .field("username", username)
                .field("password", &redact(password))
                .field("tls", tls)
                .finish(),
            PeerConfig::Inbox {} => f.debug_struct("Inbox").finish(),
            PeerConfig::Http {
                url,
                remote_link,
                username,
                password,
                token,
                tls,
            } => f
                .debug_struct("Http")
                .field("url", url)
                .field("remote_link", remote_link)
                .field("username", username)
                .field("password", &redact(password))
                .field("token", &redact(token))
                .field("tls", tls)
                .finish(),
        }
    }
}

impl PeerConfig {
    /// A short description for status pages (no secrets).
    pub fn describe(&self) -> String {
        match self {
            PeerConfig::InProcess { instance } => format!("in-process:{instance}"),
            PeerConfig::Inbox {} => "inbox".to_owned(),
            PeerConfig::Mqtt { url, publish, .. } => format!("{url} {publish}"),
            PeerConfig::Http {
                url, remote_link, ..
            } => format!("{url} link {remote_link}"),
        }
    }
}

/// A path pattern as the link configuration writes it (a pointer whose segments may be `*`).
pub(crate) type Pattern = PathPattern;

/// Parses a pattern of the link configuration, the error as the link reports it.
pub(crate) fn parse_pattern(s: &str) -> Result<Pattern, String> {
    PathPattern::parse(s).map_err(|e| format!("'{s}' is not a path pattern: {e}"))
}

/// The paths a link carries: include and exclude patterns.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
}

/// What a selection does with one change's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selected {
    /// Carried as it is.
    Yes,
    /// Not carried.
    No,
    /// Above selected paths and above or beside unselected ones: a value or removal here
    /// would replace what the link does not carry, so only "is an object" goes through.
    AncestorOnly,
}

impl Selection {
    pub(crate) fn new(include: &[String], exclude: &[String]) -> Result<Selection, String> {
        let parse = |v: &[String]| v.iter().map(|s| parse_pattern(s)).collect::<Result<_, _>>();
        Ok(Selection {
            include: parse(include)?,
            exclude: parse(exclude)?,
        })
    }

    pub(crate) fn is_everything(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// What the selection carries of one change: the change, only its "is an object" mark
    /// (above selected paths, a value would replace what the selection leaves out; removals
    /// still remove), or nothing.
    pub(crate) fn carry(&self, change: Change) -> Option<Change> {
        match self.select(&change.path) {
            Selected::Yes => Some(change),
            Selected::AncestorOnly => {
                let cell = match change.cell {
                    Cell::Value(_) => Cell::Object,
                    other => other,
                };
                Some(Change { cell, ..change })
            }
            Selected::No => None,
        }
    }

    pub(crate) fn select(&self, path: &Pointer) -> Selected {
        if self.exclude.iter().any(|p| p.covers(path)) {
            return Selected::No;
        }
        let included = self.include.is_empty() || self.include.iter().any(|p| p.covers(path));
        let above_excluded = self.exclude.iter().any(|p| p.is_below(path));
        if included {
            return if above_excluded {
                Selected::AncestorOnly
            } else {
                Selected::Yes
            };
        }
        if self.include.iter().any(|p| p.is_below(path)) {
            Selected::AncestorOnly
        } else {
            Selected::No
        }
    }
}

/// Whether any of `patterns` covers `path`.
pub(crate) fn covered(patterns: &[Pattern], path: &Pointer) -> bool {
    patterns.iter().any(|p| p.covers(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pointer {
        Pointer::parse(s).unwrap()
    }

    #[test]
    fn selection_carries_included_paths_and_only_marks_above_them() {
        let s = Selection::new(
            &["/features/lane".into(), "/features/steering".into()],
            &["/features/lane/properties/debug".into()],
        )
        .unwrap();
        assert_eq!(
            s.select(&p("/features/lane/properties/offset")),
            Selected::Yes
        );
        assert_eq!(s.select(&p("/features/steering")), Selected::Yes);
        assert_eq!(
            s.select(&p("/features/camera/properties/frame")),
            Selected::No
        );
        assert_eq!(s.select(&p("/attributes")), Selected::No);
        assert_eq!(s.select(&p("/features")), Selected::AncestorOnly);
        assert_eq!(s.select(&p("/")), Selected::AncestorOnly);
        assert_eq!(
            s.select(&p("/features/lane/properties")),
            Selected::AncestorOnly
        );
        assert_eq!(
            s.select(&p("/features/lane/properties/debug/x")),
            Selected::No
        );
        let all = Selection::new(&[], &["/features/*/properties/frame".into()]).unwrap();
        assert_eq!(
            all.select(&p("/features/cam/properties/frame")),
            Selected::No
        );
        assert_eq!(all.select(&p("/features/cam/properties/x")), Selected::Yes);
        assert_eq!(all.select(&p("/features/cam")), Selected::AncestorOnly);
        assert_eq!(all.select(&p("/attributes/a")), Selected::Yes);
        assert!(Selection::new(&["/a//b".into()], &[]).is_err());
    }

    #[test]
    fn configs_read_from_json_with_defaults() {
        let c: LinkConfig = serde_json::from_str(
            r#"{"name": "up", "peer": {"kind": "mqtt", "url": "mqtt://b:1883", "publish": "fleet/e1", "subscribe": "fleet/hub"}}"#,
        )
        .unwrap();
        assert_eq!(c.direction, Direction::Both);
        assert_eq!(c.subject, "link:peer");
        assert!(matches!(c.peer, PeerConfig::Mqtt { qos: 1, .. }));
        assert!(
            serde_json::from_str::<LinkConfig>(
                r#"{"name": "x", "peer": {"kind": "carrier-pigeon"}}"#
            )
            .is_err()
        );
        let tls: LinkConfig = serde_json::from_str(
            r#"{"name": "up", "peer": {"kind": "mqtt", "url": "mqtts://b:8883", "publish": "p",
                "username": "edge-a", "password": "pw-secret",
                "tls": {"ca_file": "/ca.crt", "cert_file": "/c.crt", "key_file": "/c.key", "key_password": "key-secret"}}}"#,
        )
        .unwrap();
        let PeerConfig::Mqtt { tls: t, .. } = &tls.peer else {
            panic!("{tls:?}")
        };
        assert_eq!(t.ca_file.as_deref(), Some(std::path::Path::new("/ca.crt")));
        let text = format!("{tls:?}");
        assert!(
            !text.contains("pw-secret") && !text.contains("key-secret"),
            "{text}"
        );
        assert!(text.contains("edge-a") && text.contains("/c.key"), "{text}");
        let bad_tls = r#"{"name": "x", "peer": {"kind": "mqtt", "url": "mqtts://b", "publish": "p", "tls": {"ca": "x"}}}"#;
        assert!(serde_json::from_str::<LinkConfig>(bad_tls).is_err());
        let http: PeerConfig = serde_json::from_str(
            r#"{"kind": "http", "url": "http://h", "remote_link": "e", "password": "pw-secret", "token": "tok-secret"}"#,
        )
        .unwrap();
        let text = format!("{http:?}");
        assert!(
            !text.contains("pw-secret") && !text.contains("tok-secret"),
            "{text}"
        );
        let ok = r#"{"name": "x", "peer": {"kind": "in-process", "instance": "a"}}"#;
        assert!(serde_json::from_str::<LinkConfig>(ok).is_ok());
        let extra = r#"{"name": "x", "peer": {"kind": "in-process", "instance": "a"}, "extra": 1}"#;
        assert!(serde_json::from_str::<LinkConfig>(extra).is_err());
    }
}
