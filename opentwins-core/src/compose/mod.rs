//! Composition, as the OpenTwins extended API adds it on top of Ditto: *types* are templates,
//! *twins* form parent/children trees, and a type instantiates a whole twin tree.
//!
//! Types and twins are plain things, so the things API, search, links and history work on them.
//! Composition lives in reserved attributes ([`RESERVED`]):
//!
//! - a type has `attributes/_isType = true` and lists the types it is made of with a count in
//!   `attributes/_children` (`{"ns:wheel": 4, "ns:camera": 1}`); a type may be a child of many
//!   types (a DAG);
//! - a twin is every other thing; it names its one parent in `attributes/_parent` (a tree), the
//!   type it was made from in `attributes/_type` and the twin it was copied from in
//!   `attributes/_copyOf`.
//!
//! [`Composer`] runs every operation as the caller: each read and write is a
//! [`Twins::apply`](crate::Twins::apply) or [`Twins::search`](crate::Twins::search) with the
//! caller's [`AuthContext`], so a caller only sees and changes what the policies allow. The
//! engine is atomic per thing, not across things: each operation documents its order and what
//! a failure half way leaves (docs/composition.md).

mod error;
mod plan;
pub(crate) mod restricted;
mod twins;
mod types;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use error::ComposeError;
pub use restricted::{
    CHILDREN, COPY_OF, IS_TYPE, PARENT, RESERVED, TYPE, check_attributes, check_body, is_reserved,
    markers_of,
};

use crate::engine::{Outcome, SearchResult, Twins};
use crate::error::{ErrorKind, Level};
use crate::model::{FieldSelector, Pointer, PolicyId, ThingId};
use crate::policy::AuthContext;
use crate::protocol::{Action, Headers, TWIN_PERSISTED, ThingCommand};

/// Limits of the composition operations. Every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComposeConfig {
    /// Most things one instantiation or duplication creates (default 1,000).
    pub max_tree_things: usize,
    /// Deepest type or twin tree the operations follow (default 32 levels).
    pub max_depth: usize,
    /// Largest count of one child type in a type (default 1,000).
    pub max_child_count: u32,
}

impl Default for ComposeConfig {
    fn default() -> Self {
        ComposeConfig {
            max_tree_things: 1_000,
            max_depth: 32,
            max_child_count: 1_000,
        }
    }
}

/// A child type of a type and how many twins of it one twin of the parent has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildType {
    /// The child (or, listing parents, the parent) type.
    pub type_id: ThingId,
    /// How many.
    pub count: u32,
}

/// A node of a type tree or a twin tree, with its children.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TreeNode {
    /// The thing.
    pub thing_id: ThingId,
    /// In a type tree: how many twins of this type one twin of the parent type has.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub count: Option<u32>,
    /// The children, in the order the parent lists them (types) or by id (twins).
    pub children: Vec<TreeNode>,
}

/// What to create: the id of the new root twin, the policy of the new tree, and a merge patch
/// (RFC 7396) applied to the root's content.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTree {
    /// Id of the new root twin.
    pub thing_id: ThingId,
    /// Policy of every new twin; `None`: the root gets Ditto's default policy (id = root id)
    /// and every other new twin uses it, so the tree is shared by sharing one policy.
    pub policy_id: Option<PolicyId>,
    /// Merged over the root's content (the type's or the original twin's).
    pub patch: Value,
}

impl NewTree {
    /// Reads a request body: a thing JSON whose `thingId` names the new root, with an optional
    /// `policyId`; the other fields are the patch. Reserved attributes are refused.
    pub fn from_body(body: Value) -> Result<NewTree, ComposeError> {
        let Value::Object(mut m) = body else {
            return Err(ComposeError::Invalid(
                "The body must be a JSON object with at least 'thingId'.".into(),
            ));
        };
        let thing_id = match m.shift_remove("thingId") {
            Some(Value::String(s)) => ThingId::new(&s)?,
            Some(_) => return Err(ComposeError::Invalid("'thingId' must be a string.".into())),
            None => {
                return Err(ComposeError::Invalid(
                    "The body must name the new root twin in 'thingId'.".into(),
                ));
            }
        };
        let policy_id = match m.shift_remove("policyId") {
            Some(Value::String(s)) => Some(PolicyId::new(&s)?),
            None => None,
            Some(_) => return Err(ComposeError::Invalid("'policyId' must be a string.".into())),
        };
        let patch = Value::Object(m);
        check_body(&patch)?;
        Ok(NewTree {
            thing_id,
            policy_id,
            patch,
        })
    }

    /// A new tree rooted at `thing_id` with no patch and default policies.
    pub fn new(thing_id: ThingId) -> NewTree {
        NewTree {
            thing_id,
            policy_id: None,
            patch: Value::Object(Map::new()),
        }
    }
}

/// The things a multi-thing operation created, root first, parents before children.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    /// The root of the new tree.
    pub thing_id: ThingId,
    /// Every created twin, in creation order.
    pub created: Vec<ThingId>,
}

/// What a twin deletion did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    /// Deleted twins, in deletion order (leaves first).
    pub deleted: Vec<ThingId>,
    /// Children unlinked (made roots) because their parent was deleted alone.
    pub unlinked: Vec<ThingId>,
}

/// The composition operations over one engine. Cheap to clone; clones share one lock.
///
/// Every change to the reserved attributes of an *existing* thing (link, unlink, child types,
/// replacing a type, deletions) runs
/// under one async lock, so within this instance no two of them interleave: checks such as
/// "no cycle" hold when the write lands. Creating new trees does not take it.
#[derive(Clone)]
pub struct Composer {
    twins: Twins,
    config: ComposeConfig,
    structure: Arc<tokio::sync::Mutex<()>>,
}

impl Composer {
    /// Composition over `twins`.
    pub fn new(twins: Twins, config: ComposeConfig) -> Composer {
        Composer {
            twins,
            config,
            structure: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The engine.
    pub fn twins(&self) -> &Twins {
        &self.twins
    }

    /// The limits.
    pub fn config(&self) -> &ComposeConfig {
        &self.config
    }

    // ---- helpers shared by the operations ----

    /// The whole thing as `auth` may read it.
    async fn read(&self, auth: &AuthContext, id: &ThingId) -> Result<Value, ComposeError> {
        let cmd = ThingCommand::new(id.clone(), Action::Retrieve, Pointer::root(), None);
        let out = self.twins.apply(auth, cmd).await?;
        Ok(out.response.value.unwrap_or(Value::Null))
    }

    /// Like [`Composer::read`], `None` when the thing does not exist (or `auth` may not see it).
    async fn read_opt(
        &self,
        auth: &AuthContext,
        id: &ThingId,
    ) -> Result<Option<Value>, ComposeError> {
        match self.read(auth, id).await {
            Ok(v) => Ok(Some(v)),
            Err(ComposeError::Engine(e)) if e.kind() == ErrorKind::NotFound(Level::Thing) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads a type: [`ComposeError::NotAType`] for a twin.
    async fn read_type(&self, auth: &AuthContext, id: &ThingId) -> Result<Value, ComposeError> {
        let v = self.read(auth, id).await?;
        if !is_type(&v) {
            return Err(ComposeError::NotAType(id.clone()));
        }
        Ok(v)
    }

    /// Reads a twin: [`ComposeError::NotATwin`] for a type.
    async fn read_twin(&self, auth: &AuthContext, id: &ThingId) -> Result<Value, ComposeError> {
        let v = self.read(auth, id).await?;
        if is_type(&v) {
            return Err(ComposeError::NotATwin(id.clone()));
        }
        Ok(v)
    }

    /// Applies one write as `auth`, answered once durable.
    async fn write(
        &self,
        auth: &AuthContext,
        id: &ThingId,
        action: Action,
        path: Pointer,
        value: Option<Value>,
    ) -> Result<Outcome, ComposeError> {
        let mut cmd = ThingCommand::new(id.clone(), action, path, value);
        cmd.headers = Headers {
            requested_acks: Some(vec![TWIN_PERSISTED.to_owned()]),
            ..Headers::default()
        };
        Ok(self.twins.apply_composing(auth, cmd).await?)
    }

    /// Every thing `auth` may read that matches `filter`, reduced to `fields`, all pages.
    fn search_all(
        &self,
        auth: &AuthContext,
        filter: &str,
        fields: &str,
    ) -> Result<Vec<Value>, ComposeError> {
        let fields = FieldSelector::parse(fields)?;
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let options = match &cursor {
                None => format!("size({})", crate::query::MAX_SIZE),
                Some(c) => format!("size({}),cursor({c})", crate::query::MAX_SIZE),
            };
            let page = self
                .twins
                .search(auth, Some(filter), Some(&options), Some(&fields))?;
            out.extend(page.items);
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// One page of a search restricted by `base`, with the caller's own `filter`, `options`
    /// and `fields`.
    fn search_within(
        &self,
        auth: &AuthContext,
        base: &str,
        filter: Option<&str>,
        options: Option<&str>,
        fields: Option<&FieldSelector>,
    ) -> Result<SearchResult, ComposeError> {
        let filter = match filter {
            Some(f) if !f.trim().is_empty() => format!("and({base},{f})"),
            _ => base.to_owned(),
        };
        Ok(self.twins.search(auth, Some(&filter), options, fields)?)
    }
}

/// Whether a thing's JSON is a type.
pub fn is_type(thing: &Value) -> bool {
    thing
        .get("attributes")
        .and_then(|a| a.get(IS_TYPE))
        .and_then(Value::as_bool)
        == Some(true)
}

/// The parent a twin's JSON names, if any (an invalid id counts as none).
pub fn parent_of(thing: &Value) -> Option<ThingId> {
    thing
        .get("attributes")?
        .get(PARENT)?
        .as_str()
        .and_then(|s| ThingId::new(s).ok())
}

/// The child types a type's JSON lists, in its order (entries that are not a valid id with a
/// positive integer count are skipped).
pub fn child_types(thing: &Value) -> Vec<ChildType> {
    let Some(Value::Object(children)) = thing.get("attributes").and_then(|a| a.get(CHILDREN))
    else {
        return Vec::new();
    };
    children
        .iter()
        .filter_map(|(id, n)| {
            let count = u32::try_from(n.as_u64()?).ok().filter(|c| *c > 0)?;
            Some(ChildType {
                type_id: ThingId::new(id).ok()?,
                count,
            })
        })
        .collect()
}

/// An RQL string literal for `s`.
fn rql_string(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// The filter that selects types.
const TYPES: &str = "eq(attributes/_isType,true)";

/// `{"items": [..], "cursor": ..}` as Ditto's search answers.
pub fn search_json(page: SearchResult) -> Value {
    let mut body = json!({ "items": page.items });
    if let Some(c) = page.cursor {
        body["cursor"] = Value::String(c);
    }
    body
}
