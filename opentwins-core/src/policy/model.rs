//! The policy data model and its Ditto JSON form, with validation.

use std::fmt;
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};

use super::AuthContext;
use super::enforce::Compiled;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Pointer, PolicyId, Timestamp};

/// The label of the entry of Ditto's default policy.
pub const DEFAULT_LABEL: &str = "DEFAULT";

/// The deepest resource path a policy may name (`thing:/a/b/...` with at most this many keys).
/// Bounds the work (and the recursion) of enforcement.
pub const MAX_RESOURCE_DEPTH: usize = 64;

/// Subject type Ditto gives the subject of a default policy.
const GENERATED_SUBJECT_TYPE: &str = "generated";

/// A permission a policy grants or revokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// `READ`.
    Read,
    /// `WRITE`.
    Write,
}

impl Permission {
    /// Both permissions, in their JSON order.
    pub const ALL: [Permission; 2] = [Permission::Read, Permission::Write];

    /// The JSON word: `READ` or `WRITE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "READ",
            Permission::Write => "WRITE",
        }
    }

    /// Parses `READ` or `WRITE` (exactly, as Ditto does).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "READ" => Some(Permission::Read),
            "WRITE" => Some(Permission::Write),
            _ => None,
        }
    }

    pub(crate) fn bit(self) -> u8 {
        match self {
            Permission::Read => 1,
            Permission::Write => 2,
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`Permission`]s (the `grant` or `revoke` list of a resource).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    /// No permission.
    pub const NONE: Permissions = Permissions(0);
    /// `READ` and `WRITE`.
    pub const ALL: Permissions = Permissions(3);

    /// Whether `p` is in the set.
    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    /// Adds `p`.
    pub fn insert(&mut self, p: Permission) {
        self.0 |= p.bit();
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The permissions in JSON order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }

    pub(crate) fn bits(self) -> u8 {
        self.0
    }

    fn to_json(self) -> Value {
        Value::Array(
            self.iter()
                .map(|p| Value::String(p.as_str().to_owned()))
                .collect(),
        )
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        let mut set = Permissions::NONE;
        for p in iter {
            set.insert(p);
        }
        set
    }
}

/// What a resource key protects: `thing:`, `policy:` or `message:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    /// `thing:/...`: the things that reference the policy.
    Thing,
    /// `policy:/...`: the policy itself.
    Policy,
    /// `message:/...`: messages to and from the things that reference the policy.
    Message,
}

impl ResourceType {
    /// All types.
    pub const ALL: [ResourceType; 3] = [
        ResourceType::Thing,
        ResourceType::Policy,
        ResourceType::Message,
    ];

    /// The key prefix word: `thing`, `policy`, `message`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Thing => "thing",
            ResourceType::Policy => "policy",
            ResourceType::Message => "message",
        }
    }

    /// Parses the key prefix word.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "thing" => Some(ResourceType::Thing),
            "policy" => Some(ResourceType::Policy),
            "message" => Some(ResourceType::Message),
            _ => None,
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A resource key: a type and a path, written `thing:/features/lane`.
///
/// Parsing accepts what Ditto accepts and normalises it: `thing:` and `thing:/` are the root,
/// `thing:attributes` is `thing:/attributes`. Paths with empty segments (`thing:/a//b`,
/// `thing:/a/`) and paths deeper than [`MAX_RESOURCE_DEPTH`] are invalid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    resource_type: ResourceType,
    path: Pointer,
}

impl ResourceKey {
    /// A key of `resource_type` at `path`; fails if the path is deeper than
    /// [`MAX_RESOURCE_DEPTH`].
    pub fn new(resource_type: ResourceType, path: Pointer) -> Result<Self> {
        if path.len() > MAX_RESOURCE_DEPTH {
            return Err(Error::new(
                ErrorKind::PolicyInvalid,
                format!(
                    "The resource path '{path}' is too deep: at most {MAX_RESOURCE_DEPTH} keys are allowed."
                ),
            ));
        }
        Ok(ResourceKey {
            resource_type,
            path,
        })
    }

    /// The root of a type: `thing:/`, `policy:/`, `message:/`.
    pub fn root(resource_type: ResourceType) -> Self {
        ResourceKey {
            resource_type,
            path: Pointer::root(),
        }
    }

    /// Parses `type:path` (`policies:policy.invalid` if it is not a valid key).
    pub fn parse(key: &str) -> Result<Self> {
        let invalid = |why: &str| {
            Error::new(
                ErrorKind::PolicyInvalid,
                format!(
                    "The resource key '{}' is not valid: {why}.",
                    crate::error::excerpt(key).escape_debug()
                ),
            )
            .with_description(
                "Resource keys have the form 'type:/path' with type 'thing', 'policy' or 'message', e.g. 'thing:/features/lane'.",
            )
        };
        let (kind, path) = key
            .split_once(':')
            .ok_or_else(|| invalid("it has no ':'"))?;
        let resource_type = ResourceType::parse(kind)
            .ok_or_else(|| invalid("the type must be 'thing', 'policy' or 'message'"))?;
        let path = Pointer::parse(path).map_err(|e| invalid(e.message()))?;
        ResourceKey::new(resource_type, path).map_err(|e| invalid(e.message()))
    }

    /// Parses a key from the pointer segments that follow `resources` in a policy path:
    /// `["thing:", "attributes"]` is `thing:/attributes`, `["thing:"]` is `thing:/`.
    pub fn from_segments(segments: &[String]) -> Result<Self> {
        ResourceKey::parse(&segments.join("/"))
    }

    /// The pointer segments that address this key inside a policy path, the inverse of
    /// [`ResourceKey::from_segments`]: `thing:/attributes` is `["thing:", "attributes"]`.
    pub fn to_segments(&self) -> Vec<String> {
        let mut segments = Vec::with_capacity(self.path.len() + 1);
        segments.push(format!("{}:", self.resource_type.as_str()));
        segments.extend(self.path.segments().iter().cloned());
        segments
    }

    /// The type.
    pub fn resource_type(&self) -> ResourceType {
        self.resource_type
    }

    /// The path.
    pub fn path(&self) -> &Pointer {
        &self.path
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource_type.as_str(), self.path)
    }
}

impl std::str::FromStr for ResourceKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ResourceKey::parse(s)
    }
}

/// What an entry grants and revokes on one resource key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Resource {
    /// Granted permissions.
    pub grant: Permissions,
    /// Revoked permissions.
    pub revoke: Permissions,
}

impl Resource {
    /// A resource entry.
    pub fn new(grant: Permissions, revoke: Permissions) -> Self {
        Resource { grant, revoke }
    }

    /// Parses `{"grant": [..], "revoke": [..]}` (both lists are required, as in Ditto).
    pub fn from_json(key: &ResourceKey, value: &Value) -> Result<Self> {
        let obj = value.as_object().ok_or_else(|| {
            Error::field_invalid(format!("The resource '{key}' must be a JSON object."))
        })?;
        let mut grant = None;
        let mut revoke = None;
        for (field, v) in obj {
            match field.as_str() {
                "grant" => grant = Some(parse_permissions(key, field, v)?),
                "revoke" => revoke = Some(parse_permissions(key, field, v)?),
                other => {
                    return Err(Error::field_invalid(format!(
                        "The field '{other}' is not allowed in the resource '{key}'."
                    ))
                    .with_description("Allowed fields: grant, revoke."));
                }
            }
        }
        let missing = |f: &str| {
            Error::field_invalid(format!("The resource '{key}' misses the field '{f}'."))
                .with_description(
                    "Both 'grant' and 'revoke' are required (they may be empty lists).",
                )
        };
        Ok(Resource {
            grant: grant.ok_or_else(|| missing("grant"))?,
            revoke: revoke.ok_or_else(|| missing("revoke"))?,
        })
    }

    /// `{"grant": [..], "revoke": [..]}`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::with_capacity(2);
        m.insert("grant".into(), self.grant.to_json());
        m.insert("revoke".into(), self.revoke.to_json());
        Value::Object(m)
    }
}

fn parse_permissions(key: &ResourceKey, field: &str, v: &Value) -> Result<Permissions> {
    let items = v.as_array().ok_or_else(|| {
        Error::field_invalid(format!(
            "The field '{field}' of the resource '{key}' must be an array of permissions."
        ))
    })?;
    let mut set = Permissions::NONE;
    for item in items {
        let word = item.as_str().ok_or_else(|| {
            Error::field_invalid(format!(
                "The field '{field}' of the resource '{key}' must contain strings only."
            ))
        })?;
        let p = Permission::parse(word).ok_or_else(|| {
            Error::new(
                ErrorKind::PolicyInvalid,
                format!("The permission '{word}' of the resource '{key}' is not supported."),
            )
            .with_description("Supported permissions: READ, WRITE.")
        })?;
        set.insert(p);
    }
    Ok(set)
}

/// A subject of an entry: its `type` (free text, documentation only) plus any other fields
/// (`expiry`, `announcement`, ...) kept as they came.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Subject {
    subject_type: String,
    /// The other fields; `None` when there are none (most subjects), which keeps a subject
    /// small in a policy of many.
    extra: Option<Box<Map<String, Value>>>,
}

/// What [`Subject::extra`] answers for a subject without other fields.
static NO_EXTRA: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

impl Subject {
    /// A subject with this type and no other fields.
    pub fn new(subject_type: impl Into<String>) -> Self {
        Subject {
            subject_type: subject_type.into(),
            extra: None,
        }
    }

    /// Parses `{"type": "...", ...}`. `type` is required; `expiry`, if present, must be an
    /// RFC 3339 timestamp; other fields are kept.
    pub fn from_json(id: &str, value: &Value) -> Result<Self> {
        let obj = value.as_object().ok_or_else(|| {
            Error::field_invalid(format!("The subject '{id}' must be a JSON object."))
        })?;
        let subject_type = match obj.get("type") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(Error::field_invalid(format!(
                    "The field 'type' of the subject '{id}' must be a string."
                )));
            }
            None => {
                return Err(Error::field_invalid(format!(
                    "The subject '{id}' misses the field 'type'."
                ))
                .with_description(
                    "Each subject needs a 'type' string, e.g. {\"type\": \"user\"}.",
                ));
            }
        };
        let extra: Map<String, Value> = obj
            .iter()
            .filter(|(k, _)| *k != "type")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let subject = Subject {
            subject_type,
            extra: (!extra.is_empty()).then(|| Box::new(extra)),
        };
        if let Some(v) = subject.extra().get("expiry") {
            let s = v.as_str().ok_or_else(|| {
                Error::field_invalid(format!(
                    "The field 'expiry' of the subject '{id}' must be an RFC 3339 timestamp string."
                ))
            })?;
            Timestamp::parse(s)?;
        }
        Ok(subject)
    }

    /// `{"type": "...", ...extra fields}`.
    pub fn to_json(&self) -> Value {
        let extra = self.extra();
        let mut m = Map::with_capacity(extra.len() + 1);
        m.insert("type".into(), Value::String(self.subject_type.clone()));
        m.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        Value::Object(m)
    }

    /// The `type`.
    pub fn subject_type(&self) -> &str {
        &self.subject_type
    }

    /// The other fields.
    pub fn extra(&self) -> &Map<String, Value> {
        self.extra.as_deref().unwrap_or(&NO_EXTRA)
    }

    /// When the subject expires (Ditto's `expiry`), if it does.
    pub fn expiry(&self) -> Option<Timestamp> {
        self.extra()
            .get("expiry")
            .and_then(Value::as_str)
            .and_then(|s| Timestamp::parse(s).ok())
    }
}

/// Checks a subject id the way Ditto does: `issuer:subject` with a non-empty subject part and no
/// control characters (an issuer that is a URL, `https://host:sub`, is fine). Placeholders such as
/// `{{ request:subjectId }}` pass.
pub fn validate_subject_id(id: &str) -> Result<()> {
    let start = id.find("://").map_or(0, |i| i + 3);
    let subject_part = id[start..].find(':').map(|i| &id[start + i + 1..]);
    let why = if id.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if id.len() > 1024 {
        Some("it is longer than 1024 bytes")
    } else {
        match subject_part {
            None => Some("it must have the form 'issuer:subject'"),
            Some("") => Some("the subject after the ':' is empty"),
            Some(_) => None,
        }
    };
    match why {
        None => Ok(()),
        Some(why) => Err(Error::new(
            ErrorKind::PolicyInvalid,
            format!(
                "The subject ID '{}' is not valid: {why}.",
                id.escape_debug()
            ),
        )
        .with_description("Subject IDs have the form 'issuer:subject', e.g. 'nginx:ditto'.")),
    }
}

/// Checks a policy entry label: non-empty, no `/`, no control characters.
pub fn validate_label(label: &str) -> Result<()> {
    if label.is_empty() || label.contains('/') || label.chars().any(char::is_control) {
        return Err(Error::new(
            ErrorKind::PolicyInvalid,
            format!(
                "The policy entry label '{}' is not valid.",
                label.escape_debug()
            ),
        )
        .with_description(
            "Labels must not be empty and must not contain '/' or control characters.",
        ));
    }
    Ok(())
}

/// One labelled entry: who (subjects) may do what (resources).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PolicyEntry {
    subjects: Vec<(String, Subject)>,
    resources: Vec<(ResourceKey, Resource)>,
}

impl PolicyEntry {
    /// An empty entry.
    pub fn new() -> Self {
        PolicyEntry::default()
    }

    /// The subjects, in their order.
    pub fn subjects(&self) -> &[(String, Subject)] {
        &self.subjects
    }

    /// The resources, in their order.
    pub fn resources(&self) -> &[(ResourceKey, Resource)] {
        &self.resources
    }

    /// One subject.
    pub fn subject(&self, id: &str) -> Option<&Subject> {
        self.subjects.iter().find(|(s, _)| s == id).map(|(_, s)| s)
    }

    /// One resource.
    pub fn resource(&self, key: &ResourceKey) -> Option<&Resource> {
        self.resources
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, r)| r)
    }

    /// Adds or replaces a subject (validating its id). Returns whether it was new.
    pub fn set_subject(&mut self, id: impl Into<String>, subject: Subject) -> Result<bool> {
        let id = id.into();
        validate_subject_id(&id)?;
        Ok(match self.subjects.iter_mut().find(|(s, _)| *s == id) {
            Some(slot) => {
                slot.1 = subject;
                false
            }
            None => {
                self.subjects.push((id, subject));
                true
            }
        })
    }

    /// Removes a subject; returns it if it was there.
    pub fn remove_subject(&mut self, id: &str) -> Option<Subject> {
        let i = self.subjects.iter().position(|(s, _)| s == id)?;
        Some(self.subjects.remove(i).1)
    }

    /// Adds or replaces a resource. Returns whether it was new.
    pub fn set_resource(&mut self, key: ResourceKey, resource: Resource) -> bool {
        match self.resources.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => {
                slot.1 = resource;
                false
            }
            None => {
                self.resources.push((key, resource));
                true
            }
        }
    }

    /// Removes a resource; returns it if it was there.
    pub fn remove_resource(&mut self, key: &ResourceKey) -> Option<Resource> {
        let i = self.resources.iter().position(|(k, _)| k == key)?;
        Some(self.resources.remove(i).1)
    }

    /// Parses `{"subjects": {..}, "resources": {..}}` (both required).
    pub fn from_json(label: &str, value: &Value) -> Result<Self> {
        let obj = value.as_object().ok_or_else(|| {
            Error::field_invalid(format!("The policy entry '{label}' must be a JSON object."))
        })?;
        let mut subjects = None;
        let mut resources = None;
        for (field, v) in obj {
            match field.as_str() {
                "subjects" => subjects = Some(parse_subjects(label, v)?),
                "resources" => resources = Some(parse_resources(label, v)?),
                other => {
                    return Err(Error::field_invalid(format!(
                        "The field '{other}' is not allowed in the policy entry '{label}'."
                    ))
                    .with_description("Allowed fields: subjects, resources."));
                }
            }
        }
        let missing = |f: &str| {
            Error::field_invalid(format!(
                "The policy entry '{label}' misses the field '{f}'."
            ))
        };
        Ok(PolicyEntry {
            subjects: subjects.ok_or_else(|| missing("subjects"))?,
            resources: resources.ok_or_else(|| missing("resources"))?,
        })
    }

    /// `{"subjects": {..}, "resources": {..}}`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::with_capacity(2);
        m.insert("subjects".into(), self.subjects_json());
        m.insert("resources".into(), self.resources_json());
        Value::Object(m)
    }

    pub(crate) fn subjects_json(&self) -> Value {
        Value::Object(
            self.subjects
                .iter()
                .map(|(id, s)| (id.clone(), s.to_json()))
                .collect(),
        )
    }

    pub(crate) fn resources_json(&self) -> Value {
        Value::Object(
            self.resources
                .iter()
                .map(|(k, r)| (k.to_string(), r.to_json()))
                .collect(),
        )
    }

    pub(crate) fn subjects_mut(&mut self) -> &mut Vec<(String, Subject)> {
        &mut self.subjects
    }

    pub(crate) fn resources_mut(&mut self) -> &mut Vec<(ResourceKey, Resource)> {
        &mut self.resources
    }
}

/// Parses the `subjects` object of entry `label`.
pub(crate) fn parse_subjects(label: &str, v: &Value) -> Result<Vec<(String, Subject)>> {
    let obj = v.as_object().ok_or_else(|| {
        Error::field_invalid(format!(
            "The subjects of the policy entry '{label}' must be a JSON object."
        ))
    })?;
    let mut out = Vec::with_capacity(obj.len());
    for (id, s) in obj {
        validate_subject_id(id)?;
        out.push((id.clone(), Subject::from_json(id, s)?));
    }
    Ok(out)
}

/// Parses the `resources` object of entry `label`; keys are normalised, duplicates after
/// normalisation (`thing:/a` and `thing:a`) are invalid.
pub(crate) fn parse_resources(label: &str, v: &Value) -> Result<Vec<(ResourceKey, Resource)>> {
    let obj = v.as_object().ok_or_else(|| {
        Error::field_invalid(format!(
            "The resources of the policy entry '{label}' must be a JSON object."
        ))
    })?;
    let mut out: Vec<(ResourceKey, Resource)> = Vec::with_capacity(obj.len());
    for (k, r) in obj {
        let key = ResourceKey::parse(k)?;
        let resource = Resource::from_json(&key, r)?;
        out.push((key, resource));
    }
    // Duplicates are neighbours once sorted: O(n log n) for entries of many resources.
    let mut order: Vec<&ResourceKey> = out.iter().map(|(k, _)| k).collect();
    order.sort_unstable();
    if let Some(pair) = order.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::new(
            ErrorKind::PolicyInvalid,
            format!(
                "The resource '{}' appears twice in the policy entry '{label}'.",
                pair[0]
            ),
        ));
    }
    Ok(out)
}

/// Parses the `entries` object of a policy.
pub(crate) fn parse_entries(v: &Value) -> Result<Vec<(String, PolicyEntry)>> {
    let obj = v
        .as_object()
        .ok_or_else(|| Error::field_invalid("The entries of a Policy must be a JSON object."))?;
    obj.iter()
        .map(|(label, e)| {
            validate_label(label)?;
            Ok((label.clone(), PolicyEntry::from_json(label, e)?))
        })
        .collect()
}

/// A Ditto policy: id, labelled entries, revision and timestamps.
///
/// Enforcement uses a compiled form built lazily on the first check and dropped on every change,
/// so a policy that is checked often and changed rarely answers each check without allocating.
#[derive(Clone)]
pub struct Policy {
    pub(crate) id: PolicyId,
    /// Shared between policies with equal entries (see [`Policy::share_entries_with`]);
    /// copied on write.
    pub(crate) entries: Arc<Vec<(String, PolicyEntry)>>,
    pub(crate) revision: u64,
    pub(crate) created: Timestamp,
    pub(crate) modified: Timestamp,
    pub(crate) compiled: Arc<OnceLock<Compiled>>,
}

impl PartialEq for Policy {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.entries == other.entries
            && self.revision == other.revision
            && self.created == other.created
            && self.modified == other.modified
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("id", &self.id)
            .field("revision", &self.revision)
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// A policy at revision 1 from entries built in code. Labels and subject ids are not
    /// re-validated here beyond what [`PolicyEntry::set_subject`] checked; use
    /// [`Policy::check_manageable`] if the policy must be manageable.
    pub fn new(
        id: PolicyId,
        entries: impl IntoIterator<Item = (String, PolicyEntry)>,
        now: Timestamp,
    ) -> Self {
        let mut list: Vec<(String, PolicyEntry)> = Vec::new();
        // Label → position, so that many entries cost O(n), not O(n²).
        let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for (label, entry) in entries {
            match seen.get(&label) {
                Some(&i) => list[i].1 = entry,
                None => {
                    seen.insert(label.clone(), list.len());
                    list.push((label, entry));
                }
            }
        }
        // Grown by pushing: give back what doubling reserved.
        list.shrink_to_fit();
        Policy {
            id,
            entries: Arc::new(list),
            revision: 1,
            created: now,
            modified: now,
            compiled: Arc::default(),
        }
    }

    /// Parses a policy a user sent (create or replace), at revision 1 with created = modified =
    /// `now`.
    ///
    /// Validation, as Ditto: only `policyId` and `entries` are allowed at the top (`imports` is
    /// not supported); a `policyId` that differs from `id` is `policies:id.invalid`; wrong types,
    /// unknown and missing fields are `json.field.invalid`; invalid labels, subject ids, resource
    /// keys and unknown permissions are `policies:policy.invalid`; and the policy must stay
    /// manageable (see [`Policy::check_manageable`]). A body larger than
    /// [`crate::Limits::max_policy_bytes`] is `policies:policy.toolarge`.
    pub fn from_json(id: &PolicyId, value: &Value, now: Timestamp) -> Result<Policy> {
        // Checked before anything is built from it.
        check_policy_size(crate::model::schema::json_size(value))?;
        let entries = parse_body(id, value)?;
        let policy = Policy::new(id.clone(), entries, now);
        policy.check_manageable()?;
        Ok(policy)
    }

    /// Ditto's default policy for a thing created without one: entry `DEFAULT` whose subject is
    /// the creator's first subject (type `generated`), granted `READ` and `WRITE` on `thing:/`,
    /// `policy:/` and `message:/`.
    ///
    /// Ditto uses only the *first* subject of the caller, so that a caller authenticated with
    /// several subjects (a user and its groups) does not hand the thing to a whole group. A
    /// caller without subjects gets an entry without subjects: the engine should refuse such a
    /// creation (`things:thing.notcreatable`) before it gets here.
    pub fn default_for(id: PolicyId, creator: &AuthContext, now: Timestamp) -> Policy {
        let mut entry = PolicyEntry::new();
        if let Some(s) = creator.first_subject() {
            entry
                .subjects
                .push((s.to_owned(), Subject::new(GENERATED_SUBJECT_TYPE)));
        }
        for t in ResourceType::ALL {
            entry.resources.push((
                ResourceKey::root(t),
                Resource::new(Permissions::ALL, Permissions::NONE),
            ));
        }
        Policy::new(id, [(DEFAULT_LABEL.to_owned(), entry)], now)
    }

    /// Ditto's JSON: `{"policyId": .., "entries": {..}}`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::with_capacity(2);
        m.insert("policyId".into(), Value::String(self.id.to_string()));
        m.insert("entries".into(), self.entries_json());
        Value::Object(m)
    }

    /// [`Policy::to_json`] plus `_revision`, `_created`, `_modified` (what a store keeps).
    pub fn full_json(&self) -> Value {
        let mut v = self.to_json();
        if let Value::Object(m) = &mut v {
            m.insert("_revision".into(), Value::from(self.revision));
            m.insert("_created".into(), Value::String(self.created.to_string()));
            m.insert("_modified".into(), Value::String(self.modified.to_string()));
        }
        v
    }

    /// [`Policy::full_json`] as bytes, written straight from the model (no JSON value of the
    /// whole policy is built on the way).
    pub fn full_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&ser::Full(self)).unwrap_or_default()
    }

    /// Reads a policy written by [`Policy::full_json`]. The structure is validated like user
    /// input; manageability is not re-checked (the policy was valid when it was written).
    pub fn from_full_json(mut v: Value) -> Result<Policy> {
        let obj = v
            .as_object_mut()
            .ok_or_else(|| Error::field_invalid("A stored Policy must be a JSON object."))?;
        let revision = obj
            .shift_remove("_revision")
            .and_then(|r| r.as_u64())
            .ok_or_else(|| Error::field_invalid("A stored Policy needs a numeric '_revision'."))?;
        let mut time = |key: &str| -> Result<Timestamp> {
            match obj.shift_remove(key) {
                Some(Value::String(s)) => Timestamp::parse(&s),
                _ => Err(Error::field_invalid(format!(
                    "A stored Policy needs '{key}'."
                ))),
            }
        };
        let created = time("_created")?;
        let modified = time("_modified")?;
        let id = obj
            .get("policyId")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::field_invalid("A stored Policy needs a 'policyId'."))
            .and_then(PolicyId::new)?;
        let entries = parse_body(&id, &v)?;
        let mut policy = Policy::new(id, entries, created);
        policy.revision = revision;
        policy.modified = modified;
        Ok(policy)
    }

    /// The id.
    pub fn id(&self) -> &PolicyId {
        &self.id
    }

    /// The revision (1 when created).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// When the policy was created.
    pub fn created(&self) -> Timestamp {
        self.created
    }

    /// When the policy was last changed.
    pub fn modified(&self) -> Timestamp {
        self.modified
    }

    /// The ETag value Ditto uses: `"rev:N"` (with the quotes).
    pub fn etag(&self) -> String {
        format!("\"rev:{}\"", self.revision)
    }

    /// The entries, in their order.
    pub fn entries(&self) -> &[(String, PolicyEntry)] {
        &self.entries
    }

    /// One entry.
    pub fn entry(&self, label: &str) -> Option<&PolicyEntry> {
        self.entries
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, e)| e)
    }

    /// Records a change: revision + 1 and the modified time. Call it after a successful
    /// [`Policy::modify_at`] / [`Policy::delete_at`] (they leave the revision alone).
    pub fn touch(&mut self, now: Timestamp) {
        self.revision += 1;
        self.modified = now;
    }

    /// Checks Ditto's rule that a policy stays manageable: at least one subject without `expiry`
    /// must be in an entry that grants `WRITE` on `policy:/`, and in no entry that revokes
    /// `WRITE` on `policy:/`. Fails with `policies:policy.invalid`.
    pub fn check_manageable(&self) -> Result<()> {
        check_manageable(&self.entries)
    }

    /// Replaces Ditto's placeholder subject `{{ request:subjectId }}` by the caller's first
    /// subject (Ditto does this when a policy is created). Returns whether anything changed.
    /// Does nothing for a caller without subjects.
    pub fn resolve_request_subject(&mut self, auth: &AuthContext) -> bool {
        let Some(first) = auth.first_subject() else {
            return false;
        };
        let mut changed = false;
        for (_, entry) in Arc::make_mut(&mut self.entries).iter_mut() {
            let Some(i) = entry
                .subjects
                .iter()
                .position(|(id, _)| is_request_subject(id))
            else {
                continue;
            };
            let (_, subject) = entry.subjects.remove(i);
            if entry.subject(first).is_none() {
                entry.subjects.insert(i, (first.to_owned(), subject));
            }
            entry.subjects.retain(|(id, _)| !is_request_subject(id));
            changed = true;
        }
        if changed {
            self.invalidate();
        }
        changed
    }

    /// Removes subjects whose `expiry` is at or before `now` (Ditto deletes them
    /// automatically; enforcement itself does not look at `expiry`). Returns whether anything
    /// was removed; the caller bumps the revision with [`Policy::touch`] if so.
    pub fn remove_expired_subjects(&mut self, now: Timestamp) -> bool {
        let mut changed = false;
        for (_, entry) in Arc::make_mut(&mut self.entries).iter_mut() {
            let before = entry.subjects.len();
            entry
                .subjects
                .retain(|(_, s)| s.expiry().is_none_or(|t| t > now));
            changed |= entry.subjects.len() != before;
        }
        if changed {
            self.invalidate();
        }
        changed
    }

    /// Adds or replaces an entry. Returns whether it was new.
    pub fn set_entry(&mut self, label: impl Into<String>, entry: PolicyEntry) -> Result<bool> {
        let label = label.into();
        validate_label(&label)?;
        self.invalidate();
        let entries = Arc::make_mut(&mut self.entries);
        Ok(match entries.iter_mut().find(|(l, _)| *l == label) {
            Some(slot) => {
                slot.1 = entry;
                false
            }
            None => {
                entries.push((label, entry));
                true
            }
        })
    }

    /// Removes an entry; returns it if it was there.
    pub fn remove_entry(&mut self, label: &str) -> Option<PolicyEntry> {
        let i = self.entries.iter().position(|(l, _)| l == label)?;
        self.invalidate();
        Some(Arc::make_mut(&mut self.entries).remove(i).1)
    }

    /// The entries as compact JSON bytes, written straight from the model (a cheap key for
    /// finding policies with equal entries).
    pub(crate) fn entries_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&ser::Entries(&self.entries)).unwrap_or_default()
    }

    pub(crate) fn entries_json(&self) -> Value {
        Value::Object(
            self.entries
                .iter()
                .map(|(l, e)| (l.clone(), e.to_json()))
                .collect(),
        )
    }

    /// The size of [`Policy::to_json`] as compact JSON (strings counted without escapes, as
    /// [`crate::model::schema::json_size`] counts), computed from the model without building
    /// the JSON.
    pub fn json_size(&self) -> usize {
        use crate::model::schema::json_size;
        let text = |s: &str| s.len() + 2;
        // `{}` around n members separated by n - 1 commas, each `"key":value`.
        let object = |n: usize| 2 + n.saturating_sub(1);
        let perms = |p: Permissions| {
            2 + p.iter().count().saturating_sub(1)
                + p.iter().map(|p| text(p.as_str())).sum::<usize>()
        };
        let entries: usize = self
            .entries
            .iter()
            .map(|(label, e)| {
                let subjects: usize = e
                    .subjects
                    .iter()
                    .map(|(id, s)| {
                        let extra: usize = s
                            .extra()
                            .iter()
                            .map(|(k, v)| text(k) + 1 + json_size(v) + 1)
                            .sum();
                        text(id) + 1 + object(1) + text("type") + 1 + text(&s.subject_type) + extra
                    })
                    .sum();
                let resources: usize = e
                    .resources
                    .iter()
                    .map(|(k, r)| {
                        let key = k.resource_type.as_str().len()
                            + 1
                            + k.path
                                .segments()
                                .iter()
                                .map(|s| s.len() + 1)
                                .sum::<usize>()
                                .max(1);
                        key + 2
                            + 1
                            + object(2)
                            + text("grant")
                            + 1
                            + perms(r.grant)
                            + text("revoke")
                            + 1
                            + perms(r.revoke)
                    })
                    .sum();
                text(label)
                    + 1
                    + object(2)
                    + text("subjects")
                    + 1
                    + object(e.subjects.len())
                    + subjects
                    + text("resources")
                    + 1
                    + object(e.resources.len())
                    + resources
            })
            .sum();
        object(2)
            + text("policyId")
            + 1
            + text(self.id.as_str())
            + text("entries")
            + 1
            + object(self.entries.len())
            + entries
    }

    /// Fails with `policies:policy.toolarge` (413) if the policy is larger than
    /// [`crate::Limits::max_policy_bytes`].
    pub fn check_size(&self) -> Result<()> {
        check_policy_size(self.json_size())
    }

    /// About how many heap bytes the entries take (for [`Policy::memory_estimate`]).
    pub(crate) fn model_bytes(&self) -> usize {
        use std::mem::size_of;
        let subject = size_of::<(String, Subject)>();
        let resource = size_of::<(ResourceKey, Resource)>();
        self.entries.capacity() * size_of::<(String, PolicyEntry)>()
            + self
                .entries
                .iter()
                .map(|(label, e)| {
                    label.len()
                        + e.subjects.capacity() * subject
                        + e.subjects
                            .iter()
                            .map(|(id, s)| {
                                id.len()
                                    + s.subject_type.len()
                                    + s.extra.as_ref().map_or(0, |m| {
                                        m.iter()
                                            .map(|(k, v)| {
                                                k.len() + 8 * crate::model::schema::json_size(v)
                                            })
                                            .sum()
                                    })
                            })
                            .sum::<usize>()
                        + e.resources.capacity() * resource
                        + e.resources
                            .iter()
                            .map(|(k, _)| {
                                k.path
                                    .segments()
                                    .iter()
                                    .map(|s| s.len() + 24)
                                    .sum::<usize>()
                            })
                            .sum::<usize>()
                })
                .sum::<usize>()
    }

    /// Drops the compiled form after a change.
    pub(crate) fn invalidate(&mut self) {
        self.compiled = Arc::default();
    }

    /// Makes this policy share its entries and compiled form with `other` when both have equal
    /// entries (for example Ditto's default policies of one creator, which differ only by id).
    /// Saves memory in instances that hold many such policies. Returns whether it now shares.
    pub fn share_entries_with(&mut self, other: &Policy) -> bool {
        if Arc::ptr_eq(&self.entries, &other.entries) {
            return true;
        }
        if self.entries != other.entries {
            return false;
        }
        self.entries = other.entries.clone();
        self.compiled = other.compiled.clone();
        true
    }
}

/// `policies:policy.toolarge` for a policy of `size` bytes beyond the limit, with Ditto's
/// wording.
pub(crate) fn check_policy_size(size: usize) -> Result<()> {
    let max = crate::Limits::get().max_policy_bytes;
    if size <= max {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::PolicyTooLarge,
        format!(
            "The size of '{:.1}' kB exceeds the maximal allowed Policy size of '{:.1}' kB.",
            size as f64 / 1024.0,
            max as f64 / 1024.0
        ),
    )
    .with_description(
        "Reduce the Policy size in the bounds of the specified limit (limits.max_policy_bytes).",
    ))
}

fn is_request_subject(id: &str) -> bool {
    let compact: String = id.chars().filter(|c| !c.is_whitespace()).collect();
    compact == "{{request:subjectId}}"
}

/// Validates a policy body and returns its entries.
pub(crate) fn parse_body(id: &PolicyId, value: &Value) -> Result<Vec<(String, PolicyEntry)>> {
    let obj = value
        .as_object()
        .ok_or_else(|| Error::field_invalid("A Policy must be a JSON object."))?;
    let mut entries = None;
    for (field, v) in obj {
        match field.as_str() {
            "policyId" => {
                let s = v.as_str().ok_or_else(|| {
                    Error::field_invalid("The field 'policyId' must be a string.")
                })?;
                PolicyId::new(s)?;
                if s != id.as_str() {
                    return Err(Error::new(
                        ErrorKind::PolicyIdInvalid,
                        format!(
                            "The policyId '{s}' in the body does not match the Policy ID '{id}' of the request."
                        ),
                    )
                    .with_description("The policyId of a Policy cannot be changed."));
                }
            }
            "entries" => entries = Some(parse_entries(v)?),
            "imports" => {
                return Err(Error::new(
                    ErrorKind::PolicyInvalid,
                    "Policy imports are not supported by OpenTwins.",
                )
                .with_description("Copy the imported entries into the policy instead."));
            }
            other => {
                return Err(Error::field_invalid(format!(
                    "The field '{other}' is not allowed in a Policy."
                ))
                .with_description("Allowed fields: policyId, entries."));
            }
        }
    }
    entries.ok_or_else(|| Error::field_invalid("A Policy needs the field 'entries'."))
}

/// Ditto's `PoliciesValidator`: some permanent subject is granted WRITE on `policy:/` by an entry
/// and not revoked it there by any entry.
pub(crate) fn check_manageable(entries: &[(String, PolicyEntry)]) -> Result<()> {
    let root_says = |e: &PolicyEntry, revoke: bool| {
        e.resources.iter().any(|(k, r)| {
            k.resource_type == ResourceType::Policy
                && k.path.is_root()
                && if revoke { r.revoke } else { r.grant }.contains(Permission::Write)
        })
    };
    let revoked: std::collections::HashSet<&str> = entries
        .iter()
        .filter(|(_, e)| root_says(e, true))
        .flat_map(|(_, e)| e.subjects.iter().map(|(id, _)| id.as_str()))
        .collect();
    let ok = entries
        .iter()
        .filter(|(_, e)| root_says(e, false))
        .any(|(_, e)| {
            e.subjects
                .iter()
                .any(|(id, s)| !s.extra().contains_key("expiry") && !revoked.contains(id.as_str()))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::PolicyInvalid,
            "The Policy is not valid: it must contain at least one permanent Subject with permission WRITE on resource 'policy:/'.",
        )
        .with_description(
            "Grant WRITE on 'policy:/' to a subject without 'expiry', or nobody could manage the Policy any more.",
        ))
    }
}

/// Serialisation of the model without an intermediate [`Value`].
mod ser {
    use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

    use super::{Permissions, Policy, PolicyEntry, Resource, Subject};

    pub(super) struct Full<'a>(pub(super) &'a Policy);
    pub(super) struct Entries<'a>(pub(super) &'a [(String, PolicyEntry)]);
    struct Entry<'a>(&'a PolicyEntry);
    struct Subjects<'a>(&'a PolicyEntry);
    struct Resources<'a>(&'a PolicyEntry);
    struct SubjectJson<'a>(&'a Subject);
    struct ResourceJson<'a>(&'a Resource);
    struct Perms(Permissions);

    impl Serialize for Full<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let p = self.0;
            let mut m = s.serialize_map(Some(5))?;
            m.serialize_entry("policyId", p.id.as_str())?;
            m.serialize_entry("entries", &Entries(&p.entries))?;
            m.serialize_entry("_revision", &p.revision)?;
            m.serialize_entry("_created", &p.created.to_string())?;
            m.serialize_entry("_modified", &p.modified.to_string())?;
            m.end()
        }
    }

    impl Serialize for Entries<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().map(|(l, e)| (l, Entry(e))))
        }
    }

    impl Serialize for Entry<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(2))?;
            m.serialize_entry("subjects", &Subjects(self.0))?;
            m.serialize_entry("resources", &Resources(self.0))?;
            m.end()
        }
    }

    impl Serialize for Subjects<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.subjects.iter().map(|(id, x)| (id, SubjectJson(x))))
        }
    }

    impl Serialize for Resources<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(
                self.0
                    .resources
                    .iter()
                    .map(|(k, r)| (k.to_string(), ResourceJson(r))),
            )
        }
    }

    impl Serialize for SubjectJson<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let extra = self.0.extra();
            let mut m = s.serialize_map(Some(extra.len() + 1))?;
            m.serialize_entry("type", &self.0.subject_type)?;
            for (k, v) in extra {
                m.serialize_entry(k, v)?;
            }
            m.end()
        }
    }

    impl Serialize for ResourceJson<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(2))?;
            m.serialize_entry("grant", &Perms(self.0.grant))?;
            m.serialize_entry("revoke", &Perms(self.0.revoke))?;
            m.end()
        }
    }

    impl Serialize for Perms {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(None)?;
            for p in self.0.iter() {
                seq.serialize_element(p.as_str())?;
            }
            seq.end()
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pid() -> PolicyId {
        PolicyId::new("my.namespace:policy-a").unwrap()
    }

    #[test]
    fn resource_keys_parse_and_normalise() {
        for (input, canonical) in [
            ("thing:/", "thing:/"),
            ("thing:", "thing:/"),
            ("thing:attributes", "thing:/attributes"),
            (
                "thing:/features/lane/properties",
                "thing:/features/lane/properties",
            ),
            ("policy:/entries/x", "policy:/entries/x"),
            ("message:/inbox/messages/a:b", "message:/inbox/messages/a:b"),
        ] {
            assert_eq!(
                ResourceKey::parse(input).unwrap().to_string(),
                canonical,
                "{input}"
            );
        }
        for bad in [
            "thing",
            "things:/",
            ":/",
            "thing:/a//b",
            "thing:/a/",
            "THING:/",
            "thing://",
        ] {
            let e = ResourceKey::parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::PolicyInvalid, "{bad}");
        }
        let deep = format!("thing:{}", "/a".repeat(MAX_RESOURCE_DEPTH + 1));
        assert_eq!(
            ResourceKey::parse(&deep).unwrap_err().kind(),
            ErrorKind::PolicyInvalid
        );
        let k = ResourceKey::parse("thing:/attributes/x").unwrap();
        assert_eq!(k.to_segments(), ["thing:", "attributes", "x"]);
        assert_eq!(ResourceKey::from_segments(&k.to_segments()).unwrap(), k);
        let root = ResourceKey::root(ResourceType::Thing);
        assert_eq!(root.to_segments(), ["thing:"]);
        assert_eq!(
            ResourceKey::from_segments(&root.to_segments()).unwrap(),
            root
        );
    }

    #[test]
    fn the_model_writes_and_measures_its_json_without_building_it() {
        let body = json!({"entries": {
            "owner": {
                "subjects": {
                    "nginx:ditto": {"type": "user"},
                    "nginx:temp": {"type": "user", "expiry": "2099-01-01T00:00:00Z", "n": [1, 2]}
                },
                "resources": {
                    "policy:/": {"grant": ["READ", "WRITE"], "revoke": []},
                    "thing:/features/a": {"grant": [], "revoke": ["WRITE"]},
                    "thing:/": {"grant": ["READ"], "revoke": []}
                }
            },
            "empty": {"subjects": {}, "resources": {}}
        }});
        let p = Policy::from_json(&pid(), &body, Timestamp::from_micros(7)).unwrap();
        let bytes = p.full_json_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v, p.full_json());
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            serde_json::to_string(&p.full_json()).unwrap(),
            "same order"
        );
        assert_eq!(
            p.json_size(),
            serde_json::to_string(&p.to_json()).unwrap().len()
        );
        assert_eq!(p.json_size(), crate::model::schema::json_size(&p.to_json()));
        assert_eq!(Policy::from_full_json(v).unwrap(), p);
    }

    #[test]
    fn subject_ids() {
        for ok in [
            "nginx:ditto",
            "instance:edge-1",
            ":x",
            "https://issuer.example:sub",
            "{{ request:subjectId }}",
        ] {
            validate_subject_id(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", "nocolon", "nginx:", "https://issuer.example", "a:b\n"] {
            assert_eq!(
                validate_subject_id(bad).unwrap_err().kind(),
                ErrorKind::PolicyInvalid,
                "{bad}"
            );
        }
    }

    #[test]
    fn permissions_render_in_order() {
        let p: Permissions = [Permission::Write, Permission::Read, Permission::Write]
            .into_iter()
            .collect();
        assert_eq!(p, Permissions::ALL);
        assert_eq!(p.to_json(), json!(["READ", "WRITE"]));
        assert!(Permissions::NONE.is_empty());
    }

    #[test]
    fn default_policy_is_ditto_like() {
        let auth = AuthContext::new(["nginx:ditto", "nginx:group"]);
        let p = Policy::default_for(pid(), &auth, Timestamp::from_micros(5));
        assert_eq!(
            p.to_json(),
            json!({"policyId": "my.namespace:policy-a", "entries": {"DEFAULT": {
                "subjects": {"nginx:ditto": {"type": "generated"}},
                "resources": {
                    "thing:/": {"grant": ["READ", "WRITE"], "revoke": []},
                    "policy:/": {"grant": ["READ", "WRITE"], "revoke": []},
                    "message:/": {"grant": ["READ", "WRITE"], "revoke": []}
                }
            }}})
        );
        assert_eq!(p.revision(), 1);
        assert_eq!(p.created(), Timestamp::from_micros(5));
        p.check_manageable().unwrap();
        assert!(
            Policy::default_for(
                pid(),
                &AuthContext::new(Vec::<String>::new()),
                Timestamp::now()
            )
            .check_manageable()
            .is_err()
        );
    }

    #[test]
    fn request_subject_placeholder_is_resolved() {
        let body = json!({"entries": {"owner": {
            "subjects": {"{{ request:subjectId }}": {"type": "creator"}},
            "resources": {"policy:/": {"grant": ["READ", "WRITE"], "revoke": []}}
        }}});
        let mut p = Policy::from_json(&pid(), &body, Timestamp::now()).unwrap();
        assert!(p.resolve_request_subject(&AuthContext::new(["nginx:ditto"])));
        assert_eq!(
            p.entry("owner")
                .unwrap()
                .subject("nginx:ditto")
                .unwrap()
                .subject_type(),
            "creator"
        );
        assert_eq!(p.entry("owner").unwrap().subjects().len(), 1);
        assert!(!p.resolve_request_subject(&AuthContext::new(["nginx:other"])));
    }

    #[test]
    fn expired_subjects_are_removed() {
        let body = json!({"entries": {"owner": {
            "subjects": {
                "nginx:ditto": {"type": "user"},
                "nginx:temp": {"type": "user", "expiry": "2020-01-01T00:00:00Z"}
            },
            "resources": {"policy:/": {"grant": ["WRITE"], "revoke": []}}
        }}});
        let mut p = Policy::from_json(&pid(), &body, Timestamp::now()).unwrap();
        assert!(p.remove_expired_subjects(Timestamp::now()));
        assert!(p.entry("owner").unwrap().subject("nginx:temp").is_none());
        assert!(!p.remove_expired_subjects(Timestamp::now()));
    }
}
