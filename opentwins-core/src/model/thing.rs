//! The Thing: Ditto's JSON with `_revision`, `_created`, `_modified`, `_metadata` beside it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::fields::FieldSelector;
use super::id::{PolicyId, ThingId};
use super::schema::{self, Mode};
use crate::error::{Error, Level, Result};
use crate::replica::Replica;

/// A point in time with microsecond precision, rendered as RFC 3339 (`2026-11-25T14:21:29.123456Z`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// Now, from the system clock.
    pub fn now() -> Self {
        Timestamp::from_system_time(SystemTime::now())
    }

    /// From a `SystemTime` (times before 1970 clamp to the epoch).
    pub fn from_system_time(t: SystemTime) -> Self {
        Timestamp(
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
        )
    }

    /// From microseconds since the Unix epoch.
    pub fn from_micros(micros: u64) -> Self {
        Timestamp(micros)
    }

    /// Microseconds since the Unix epoch.
    pub fn as_micros(self) -> u64 {
        self.0
    }

    /// Parses RFC 3339 (`2026-11-25T14:21:29.123Z`).
    pub fn parse(s: &str) -> Result<Self> {
        humantime::parse_rfc3339(s)
            .map(Timestamp::from_system_time)
            .map_err(|e| Error::field_invalid(format!("'{s}' is not an RFC 3339 timestamp: {e}")))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = UNIX_EPOCH + Duration::from_micros(self.0);
        write!(f, "{}", humantime::format_rfc3339_micros(t))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

/// A digital twin: Ditto's Thing.
///
/// `body` is the JSON object users see (`thingId`, `policyId`, `definition`, `attributes`,
/// `features`), always valid per [`schema`]. Revision and timestamps live beside it.
#[derive(Clone, PartialEq, Debug)]
pub struct Thing {
    id: ThingId,
    policy_id: PolicyId,
    revision: u64,
    created: Timestamp,
    modified: Timestamp,
    body: Value,
    metadata: Option<Value>,
    /// The clock of every path written (values stripped: they are in `body`); see
    /// [`crate::replica`]. Stored as `_clocks`.
    clocks: Replica,
}

impl Thing {
    /// A new thing at revision 1 from a JSON body (validated). `thingId` in the body must match
    /// `id` if present. Without `policyId` the thing gets Ditto's default: the policy with the
    /// thing's own id.
    pub fn new(id: ThingId, body: Value, now: Timestamp) -> Result<Self> {
        schema::validate(&id, Level::Thing, &body, Mode::Full)?;
        let Value::Object(mut fields) = body else {
            unreachable!("validated as an object")
        };
        let policy_id = match fields.get("policyId").and_then(Value::as_str) {
            Some(p) => PolicyId::new(p)?,
            None => PolicyId::from(&id),
        };
        fields.shift_remove("thingId");
        fields.shift_remove("policyId");
        let mut ordered = Map::with_capacity(fields.len() + 2);
        ordered.insert("thingId".into(), Value::String(id.to_string()));
        ordered.insert("policyId".into(), Value::String(policy_id.to_string()));
        for (k, v) in fields {
            ordered.insert(k, schema::compacted(v));
        }
        Ok(Thing {
            id,
            policy_id,
            revision: 1,
            created: now,
            modified: now,
            body: Value::Object(ordered),
            metadata: None,
            clocks: Replica::new(),
        })
    }

    /// The id.
    pub fn id(&self) -> &ThingId {
        &self.id
    }

    /// The policy that guards the thing.
    pub fn policy_id(&self) -> &PolicyId {
        &self.policy_id
    }

    /// The revision: 1 when created, +1 per change.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// When the thing was created.
    pub fn created(&self) -> Timestamp {
        self.created
    }

    /// When the thing was last changed.
    pub fn modified(&self) -> Timestamp {
        self.modified
    }

    /// The JSON body (without underscore fields).
    pub fn body(&self) -> &Value {
        &self.body
    }

    /// The clocks of the paths written (values stripped; they are in the body).
    pub fn clocks(&self) -> &Replica {
        &self.clocks
    }

    /// For the engine, which keeps the clocks in step with the body.
    pub(crate) fn clocks_mut(&mut self) -> &mut Replica {
        &mut self.clocks
    }

    /// Ditto's `_metadata`, if any was set.
    pub fn metadata(&self) -> Option<&Value> {
        self.metadata.as_ref()
    }

    /// The ETag value Ditto uses: `"rev:N"` (with the quotes).
    pub fn etag(&self) -> String {
        format!("\"rev:{}\"", self.revision)
    }

    /// The value at `path` of the body.
    pub fn get(&self, path: &super::Pointer) -> Option<&Value> {
        path.get(&self.body)
    }

    /// Mutable access for the engine, which validates values before writing them. Callers must
    /// keep the body valid and call [`Thing::touch`] after a change.
    pub(crate) fn body_mut(&mut self) -> &mut Value {
        &mut self.body
    }

    /// This thing with `body` instead of its own (a caller's readable part of it), without
    /// metadata and clocks, which may tell about the rest.
    pub(crate) fn with_body(&self, body: Value) -> Thing {
        Thing {
            id: self.id.clone(),
            policy_id: self.policy_id.clone(),
            revision: self.revision,
            created: self.created,
            modified: self.modified,
            body,
            metadata: None,
            clocks: Replica::new(),
        }
    }

    /// Records a change: revision + 1 and the modified time. Refreshes the cached policy id.
    pub(crate) fn touch(&mut self, now: Timestamp) {
        self.revision += 1;
        self.modified = now;
        if let Some(p) = self.body.get("policyId").and_then(Value::as_str)
            && p != self.policy_id.as_str()
            && let Ok(p) = PolicyId::new(p)
        {
            self.policy_id = p;
        }
    }

    /// Points the thing at another policy (the engine checks that it exists).
    pub(crate) fn set_policy_id(&mut self, policy_id: PolicyId) {
        if let Value::Object(m) = &mut self.body {
            m.insert("policyId".into(), Value::String(policy_id.to_string()));
        }
        self.policy_id = policy_id;
    }

    /// Replaces `_metadata`.
    pub fn set_metadata(&mut self, metadata: Option<Value>) {
        self.metadata = metadata;
    }

    /// The user-facing JSON: the body, plus the underscore fields when `fields` asks for them.
    /// Without `fields`, Ditto returns the body only.
    pub fn to_json(&self, fields: Option<&FieldSelector>) -> Value {
        match fields {
            None => self.body.clone(),
            Some(sel) => sel.apply(&self.full_json()),
        }
    }

    /// The body with `_revision`, `_created`, `_modified`, `_metadata` and `_clocks` (as
    /// stored).
    pub fn full_json(&self) -> Value {
        let mut v = self.body.clone();
        if let Value::Object(m) = &mut v {
            m.insert("_revision".into(), Value::from(self.revision));
            m.insert("_created".into(), Value::String(self.created.to_string()));
            m.insert("_modified".into(), Value::String(self.modified.to_string()));
            if let Some(md) = &self.metadata {
                m.insert("_metadata".into(), md.clone());
            }
            if !self.clocks.is_empty() {
                m.insert("_clocks".into(), self.clocks.clocks_json());
            }
        }
        v
    }

    /// [`Thing::full_json`] serialised to bytes without copying the body first (for stores).
    pub fn to_full_vec(&self) -> Vec<u8> {
        struct Full<'a>(&'a Thing);
        impl serde::Serialize for Full<'_> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let t = self.0;
                let body = t.body.as_object();
                let mut m = s.serialize_map(None)?;
                for (k, v) in body.into_iter().flatten() {
                    m.serialize_entry(k, v)?;
                }
                m.serialize_entry("_revision", &t.revision)?;
                m.serialize_entry("_created", &t.created.to_string())?;
                m.serialize_entry("_modified", &t.modified.to_string())?;
                if let Some(md) = &t.metadata {
                    m.serialize_entry("_metadata", md)?;
                }
                if !t.clocks.is_empty() {
                    m.serialize_entry("_clocks", &crate::replica::ClocksJson(&t.clocks))?;
                }
                m.end()
            }
        }
        serde_json::to_vec(&Full(self)).expect("a JSON value always serialises")
    }

    /// A value of one of the underscore fields (`_revision`, `_created`, `_modified`,
    /// `_metadata`) or of the body, by top-level key. Used by RQL and field selection.
    pub fn field(&self, key: &str) -> Option<std::borrow::Cow<'_, Value>> {
        use std::borrow::Cow;
        match key {
            "_revision" => Some(Cow::Owned(Value::from(self.revision))),
            "_created" => Some(Cow::Owned(Value::String(self.created.to_string()))),
            "_modified" => Some(Cow::Owned(Value::String(self.modified.to_string()))),
            "_metadata" => self.metadata.as_ref().map(Cow::Borrowed),
            _ => self.body.get(key).map(Cow::Borrowed),
        }
    }

    /// Reads a thing written by [`Thing::full_json`] (from a store). Validates it like user input.
    pub fn from_full_json(mut v: Value) -> Result<Self> {
        let obj = v
            .as_object_mut()
            .ok_or_else(|| Error::field_invalid("A stored Thing must be a JSON object."))?;
        let revision = obj
            .shift_remove("_revision")
            .and_then(|r| r.as_u64())
            .ok_or_else(|| Error::field_invalid("A stored Thing needs a numeric '_revision'."))?;
        let time = |obj: &mut Map<String, Value>, key: &str| -> Result<Timestamp> {
            match obj.shift_remove(key) {
                Some(Value::String(s)) => Timestamp::parse(&s),
                _ => Err(Error::field_invalid(format!(
                    "A stored Thing needs '{key}'."
                ))),
            }
        };
        let created = time(obj, "_created")?;
        let modified = time(obj, "_modified")?;
        let metadata = obj.shift_remove("_metadata");
        let clocks = match obj.shift_remove("_clocks") {
            Some(c) => Replica::from_clocks(&c, &Value::Null, &Map::new())?,
            None => Replica::new(),
        };
        let id = obj
            .get("thingId")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::field_invalid("A stored Thing needs a 'thingId'."))
            .and_then(ThingId::new)?;
        let mut thing = Thing::new(id, v, created)?;
        thing.revision = revision;
        thing.modified = modified;
        thing.metadata = metadata;
        thing.clocks = clocks;
        Ok(thing)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn new_thing_gets_default_policy_and_order() {
        let id = ThingId::new("ns:car").unwrap();
        let t = Thing::new(
            id,
            json!({"attributes": {"a": 1}}),
            Timestamp::from_micros(1),
        )
        .unwrap();
        assert_eq!(t.policy_id().as_str(), "ns:car");
        assert_eq!(t.revision(), 1);
        assert_eq!(
            serde_json::to_string(t.body()).unwrap(),
            r#"{"thingId":"ns:car","policyId":"ns:car","attributes":{"a":1}}"#
        );
        assert_eq!(t.etag(), "\"rev:1\"");
    }

    #[test]
    fn full_json_round_trip() {
        let id = ThingId::new("ns:car").unwrap();
        let mut t = Thing::new(id, json!({"policyId": "ns:p"}), Timestamp::now()).unwrap();
        t.touch(Timestamp::now());
        t.set_metadata(Some(json!({"attributes": {"x": {"hlc": 1}}})));
        let back = Thing::from_full_json(t.full_json()).unwrap();
        assert_eq!(back, t);
        let bytes: Value = serde_json::from_slice(&t.to_full_vec()).unwrap();
        assert_eq!(bytes, t.full_json());
        assert_eq!(back.revision(), 2);
    }

    #[test]
    fn timestamps_render_rfc3339() {
        let t = Timestamp::from_micros(1_700_000_000_123_456);
        assert_eq!(t.to_string(), "2023-11-14T22:13:20.123456Z");
        assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
    }
}
