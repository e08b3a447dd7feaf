//! Engine configuration.

use serde::{Deserialize, Serialize};

/// Limits and buffers of the engine. Every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// This instance's id, unique among linked instances: it stamps every change made here
    /// and names this instance in the hop list of forwarded updates. 1 to 64 of letters,
    /// digits, `.`, `_`, `-`, `:`.
    pub instance_id: String,
    /// Largest thing, in bytes of compact JSON (strings counted without escapes). Ditto's
    /// default is 100 kB; ours is 2 MiB so a 1280x720 camera frame (~270 kB as base64) fits.
    pub max_thing_bytes: usize,
    /// Largest value one command may carry, in bytes of compact JSON.
    pub max_value_bytes: usize,
    /// Events the event ring holds for subscribers (one ring shared by all of them): a
    /// subscriber further behind skips the oldest and is told it lagged.
    pub event_buffer: usize,
    /// Bytes the event ring holds: the events' values as compact JSON plus a fixed 256 bytes
    /// each, and once per version the policies buffered events refer to. Beyond it the oldest
    /// events are dropped as for `event_buffer` (the newest is always kept). Default 64 MiB.
    pub event_buffer_bytes: usize,
    /// Things kept parsed in memory; beyond it, the things made hot longest ago are kept as
    /// their compact JSON and parsed again when a command touches them (about 3 µs for a small
    /// thing). 0 (the default) keeps every thing parsed.
    pub max_hot_things: usize,
    /// Writes handed to the store but not yet durable. When the store falls behind, further
    /// writers wait for a place (backpressure) instead of queueing without bound.
    pub max_pending_writes: usize,
    /// Transient paths (pointers; a segment may be `*`), e.g. `/features/camera/properties/frame`:
    /// values written there reach subscribers (an inference processor, SSE, WebSocket, MQTT
    /// events) but are never kept in the thing, so they are neither persisted, nor forwarded
    /// over links, nor recorded in history. See docs/semantics.md.
    pub transient: Vec<String>,
    /// How far ahead of this instance's wall clock a peer's clock stamp may be, in
    /// milliseconds. An update carrying a later stamp is refused as a whole: taken in, it would
    /// move this instance's clock there and make every later local write lose or tie.
    pub max_clock_skew_ms: u64,
    /// Key of the search cursors (64 hex digits). A cursor is the position a search continues
    /// from, encrypted and authenticated with this key for the caller it was given to. `None`
    /// (the default): a random key per process, so cursors do not outlive the process; hub
    /// processes behind one load balancer set the same key.
    pub cursor_key: Option<String>,
    /// How long the clocks of a deleted thing (its grave) are kept, in milliseconds (default
    /// 30 days). Within it, a change older than the deletion that arrives late (a peer that
    /// was away) cannot bring the thing back; after it, such a change re-creates the thing.
    /// Graves are stored with the deletion, so they survive restarts.
    pub grave_lifetime_ms: u64,
    /// Property paths indexed for search from the start (e.g. `attributes/model`), without a
    /// wildcard. Searches and counts whose filter compares an indexed path (`eq`, `in`, `gt`,
    /// `ge`, `lt`, `le`, `like "prefix*"`) look only at the things the index names; `thingId`
    /// is always indexed. See docs/storage.md.
    pub search_index: Vec<String>,
    /// Most paths indexed in all: beyond `search_index`, a path a search filter compares is
    /// indexed when first searched (that search scans once to fill it), until this many are.
    /// 0 indexes only `search_index`.
    pub max_search_indexes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            instance_id: "opentwins".into(),
            max_thing_bytes: 2 * 1024 * 1024,
            max_value_bytes: 1024 * 1024,
            event_buffer: 4096,
            event_buffer_bytes: 64 * 1024 * 1024,
            max_hot_things: 0,
            max_pending_writes: 8192,
            transient: Vec::new(),
            max_clock_skew_ms: 60_000,
            cursor_key: None,
            grave_lifetime_ms: 30 * 24 * 3600 * 1000,
            search_index: Vec::new(),
            max_search_indexes: 16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_default_and_unknown_fields_fail() {
        let c: EngineConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, EngineConfig::default());
        assert!(serde_json::from_str::<EngineConfig>(r#"{"max_thing_byte": 1}"#).is_err());
    }
}
