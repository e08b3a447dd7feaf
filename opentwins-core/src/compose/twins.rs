//! Twins: every thing that is not a type. A twin names its one parent in
//! `attributes/_parent`; these operations read, link, unlink, copy and delete twin trees.

use std::collections::{HashMap, HashSet, VecDeque};

use serde_json::Value;

use super::plan::{Original, Planned};
use super::{
    ComposeError, Composer, Created, Deleted, NewTree, PARENT, TreeNode, parent_of, rql_string,
};
use crate::engine::{Outcome, SearchResult};
use crate::error::{Error, ErrorKind};
use crate::model::{FieldSelector, Pointer, ThingId};
use crate::policy::AuthContext;
use crate::protocol::Action;

/// The filter that selects root twins: not a type, no parent.
const ROOTS: &str = "and(not(eq(attributes/_isType,true)),not(exists(attributes/_parent)))";

/// A twin of a subtree: its id and its parent's index.
struct Node {
    id: ThingId,
    parent: Option<usize>,
}

impl Composer {
    /// One page of the root twins (no parent, not a type) `auth` may read, narrowed by an RQL
    /// `filter`, with Ditto's `option` string and `fields`.
    pub fn list_roots(
        &self,
        auth: &AuthContext,
        filter: Option<&str>,
        options: Option<&str>,
        fields: Option<&FieldSelector>,
    ) -> Result<SearchResult, ComposeError> {
        self.search_within(auth, ROOTS, filter, options, fields)
    }

    /// The twin `id` as `auth` may read it, reduced to `fields` if given.
    pub async fn get_twin(
        &self,
        auth: &AuthContext,
        id: &ThingId,
        fields: Option<&FieldSelector>,
    ) -> Result<Value, ComposeError> {
        let v = self.read_twin(auth, id).await?;
        match fields {
            None => Ok(v),
            Some(f) => self.read_fields(auth, id, f).await,
        }
    }

    /// One page of the children of the twin `id` that `auth` may read, narrowed by `filter`.
    pub async fn children(
        &self,
        auth: &AuthContext,
        id: &ThingId,
        filter: Option<&str>,
        options: Option<&str>,
        fields: Option<&FieldSelector>,
    ) -> Result<SearchResult, ComposeError> {
        self.read_twin(auth, id).await?;
        let base = format!("eq(attributes/{PARENT},{})", rql_string(id.as_str()));
        self.search_within(auth, &base, filter, options, fields)
    }

    /// The parent of the twin `id` ([`ComposeError::NoParent`] for a root).
    pub async fn parent(&self, auth: &AuthContext, id: &ThingId) -> Result<ThingId, ComposeError> {
        let v = self.read_twin(auth, id).await?;
        parent_of(&v).ok_or_else(|| ComposeError::NoParent(id.clone()))
    }

    /// Makes the twin `parent` the parent of the twin `child` (replacing an earlier parent).
    /// `auth` must be able to read both and to write `child`'s `attributes/_parent`; a link
    /// that would make `child` its own ancestor is [`ComposeError::Cycle`]. The outcome is the
    /// engine's (201 when `child` had no parent, 204 when it is replaced).
    pub async fn link(
        &self,
        auth: &AuthContext,
        child: &ThingId,
        parent: &ThingId,
    ) -> Result<Outcome, ComposeError> {
        let _structure = self.structure.lock().await;
        self.read_twin(auth, child).await?;
        self.read_twin(auth, parent).await?;
        if child == parent || self.is_ancestor(child, parent) {
            return Err(ComposeError::Cycle {
                child: child.clone(),
                parent: parent.clone(),
            });
        }
        let path = Pointer::from_segments(["attributes", PARENT])?;
        let value = Value::String(parent.to_string());
        self.write(auth, child, Action::Modify, path, Some(value))
            .await
    }

    /// Removes the parent of the twin `id`: it becomes a root.
    pub async fn unlink(&self, auth: &AuthContext, id: &ThingId) -> Result<(), ComposeError> {
        let _structure = self.structure.lock().await;
        self.unlink_unlocked(auth, id).await
    }

    async fn unlink_unlocked(&self, auth: &AuthContext, id: &ThingId) -> Result<(), ComposeError> {
        let v = self.read_twin(auth, id).await?;
        if parent_of(&v).is_none() {
            return Err(ComposeError::NoParent(id.clone()));
        }
        let path = Pointer::from_segments(["attributes", PARENT])?;
        self.write(auth, id, Action::Delete, path, None).await?;
        Ok(())
    }

    /// Whether `ancestor` is `of` or above it, following `_parent` as stored (an integrity
    /// check: it reads through policies, but only answers yes or no).
    fn is_ancestor(&self, ancestor: &ThingId, of: &ThingId) -> bool {
        let mut seen = HashSet::new();
        let mut at = Some(of.clone());
        while let Some(id) = at {
            if &id == ancestor {
                return true;
            }
            if !seen.insert(id.clone()) {
                return false;
            }
            at = self.twins.get_thing(&id).and_then(|t| parent_of(t.body()));
        }
        false
    }

    /// The twin `id` and its descendants that `auth` may read, as a tree (children by id).
    /// Refused past `max_depth` levels.
    pub async fn twin_tree(
        &self,
        auth: &AuthContext,
        id: &ThingId,
    ) -> Result<TreeNode, ComposeError> {
        self.read_twin(auth, id).await?;
        let nodes = self.subtree(auth, id, Some(self.config.max_depth))?;
        // Children come after their parent: build the tree from the leaves up.
        let mut built: Vec<Option<TreeNode>> = nodes
            .iter()
            .map(|n| {
                Some(TreeNode {
                    thing_id: n.id.clone(),
                    count: None,
                    children: Vec::new(),
                })
            })
            .collect();
        // Siblings arrive last first; each node's children are complete when it is moved.
        for i in (1..nodes.len()).rev() {
            let mut node = built[i].take().expect("each node is moved once");
            node.children.reverse();
            let parent = nodes[i].parent.expect("only the root has no parent");
            let p = built[parent].as_mut().expect("parents come first");
            p.children.push(node);
        }
        let mut root = built[0].take().expect("the root");
        root.children.reverse();
        Ok(root)
    }

    /// Copies the twin `id` into a new twin `spec.thing_id` (a root), and with `recursive` its
    /// descendants `auth` may read into a new tree below it. Copies keep the structure,
    /// attributes and `_type`, get `_copyOf` = the original, and their feature property values
    /// (reported and desired) set to `null`: a copy starts without the original's readings.
    /// The id of a copied child is `{newParentId}:{local}`, where `local` is what follows
    /// `{originalParentId}:` in the original's id, or else the original's name. Created as
    /// [`Composer::instantiate`] creates (all ids checked first, parents first, undone on
    /// failure).
    pub async fn duplicate(
        &self,
        auth: &AuthContext,
        id: &ThingId,
        spec: NewTree,
        recursive: bool,
    ) -> Result<Created, ComposeError> {
        let root = self.read_twin(auth, id).await?;
        let nodes = if recursive {
            self.subtree(auth, id, Some(self.config.max_depth))?
        } else {
            vec![Node {
                id: id.clone(),
                parent: None,
            }]
        };
        if nodes.len() > self.config.max_tree_things {
            return Err(ComposeError::TooLarge {
                limit: self.config.max_tree_things,
            });
        }
        let mut originals = Vec::with_capacity(nodes.len());
        for (i, n) in nodes.into_iter().enumerate() {
            let content = if i == 0 {
                root.clone()
            } else {
                self.read(auth, &n.id).await?
            };
            originals.push(Original {
                id: n.id,
                parent: n.parent,
                content,
            });
        }
        let plan = super::plan::duplicate(&originals, &spec)?;
        self.create_all(auth, spec.thing_id, plan).await
    }

    /// Deletes the twin `id`. With `recursive`, its descendants `auth` may read are deleted
    /// too, leaves first, so a failure part way leaves a connected tree below `id` (and
    /// [`ComposeError::Incomplete`] names what was deleted). Without, its children are
    /// unlinked (made roots) first, then it is deleted; if an unlink fails nothing is
    /// deleted.
    pub async fn delete_twin(
        &self,
        auth: &AuthContext,
        id: &ThingId,
        recursive: bool,
    ) -> Result<Deleted, ComposeError> {
        let _structure = self.structure.lock().await;
        self.read_twin(auth, id).await?;
        let mut done = Deleted {
            deleted: Vec::new(),
            unlinked: Vec::new(),
        };
        if recursive {
            let nodes = self.subtree(auth, id, None)?;
            for n in nodes.iter().rev() {
                if let Err(e) = self
                    .write(auth, &n.id, Action::Delete, Pointer::root(), None)
                    .await
                {
                    return Err(incomplete(e, done.deleted));
                }
                done.deleted.push(n.id.clone());
            }
            return Ok(done);
        }
        let filter = format!("eq(attributes/{PARENT},{})", rql_string(id.as_str()));
        for child in self.search_all(auth, &filter, "thingId")? {
            let Some(child) = child_id(&child) else {
                continue;
            };
            if let Err(e) = self.unlink_unlocked(auth, &child).await {
                return Err(incomplete(e, done.unlinked));
            }
            done.unlinked.push(child);
        }
        if let Err(e) = self
            .write(auth, id, Action::Delete, Pointer::root(), None)
            .await
        {
            return Err(incomplete(e, done.unlinked));
        }
        done.deleted.push(id.clone());
        Ok(done)
    }

    /// The twin `root` and its descendants `auth` may read, breadth first (parents before
    /// children, siblings by id), each once. With `max_depth`, deeper trees are
    /// [`ComposeError::TooDeep`].
    fn subtree(
        &self,
        auth: &AuthContext,
        root: &ThingId,
        max_depth: Option<usize>,
    ) -> Result<Vec<Node>, ComposeError> {
        let filter = format!("exists(attributes/{PARENT})");
        let mut below: HashMap<ThingId, Vec<ThingId>> = HashMap::new();
        for t in self.search_all(auth, &filter, &format!("thingId,attributes/{PARENT}"))? {
            if let (Some(id), Some(parent)) = (child_id(&t), parent_of(&t)) {
                below.entry(parent).or_default().push(id);
            }
        }
        for children in below.values_mut() {
            children.sort();
        }
        let mut nodes = vec![Node {
            id: root.clone(),
            parent: None,
        }];
        let mut seen = HashSet::from([root.clone()]);
        let mut queue = VecDeque::from([(0usize, 1usize)]);
        while let Some((at, depth)) = queue.pop_front() {
            let Some(children) = below.get(&nodes[at].id) else {
                continue;
            };
            if let Some(max) = max_depth
                && depth >= max
            {
                return Err(ComposeError::TooDeep { limit: max });
            }
            for c in children {
                if seen.insert(c.clone()) {
                    nodes.push(Node {
                        id: c.clone(),
                        parent: Some(at),
                    });
                    queue.push_back((nodes.len() - 1, depth + 1));
                }
            }
        }
        Ok(nodes)
    }

    /// Creates planned twins in order as `auth`, after checking that none exists. On a
    /// failure, deletes the ones created (last first).
    pub(super) async fn create_all(
        &self,
        auth: &AuthContext,
        root: ThingId,
        plan: Vec<Planned>,
    ) -> Result<Created, ComposeError> {
        if let Some(p) = plan.iter().find(|p| self.twins.get_thing(&p.id).is_some()) {
            return Err(Error::new(
                ErrorKind::ThingConflict,
                format!("The Thing with ID '{}' already exists.", p.id),
            )
            .with_description("Choose another id for the new tree.")
            .into());
        }
        let mut created: Vec<ThingId> = Vec::with_capacity(plan.len());
        for p in plan {
            let result = self
                .write(auth, &p.id, Action::Create, Pointer::root(), Some(p.body))
                .await;
            if let Err(e) = result {
                let mut left = Vec::new();
                for id in created.iter().rev() {
                    let undo = self
                        .write(auth, id, Action::Delete, Pointer::root(), None)
                        .await;
                    if let Err(u) = undo {
                        tracing::warn!(thing = %id, error = %u, "could not undo a creation");
                        left.push(id.clone());
                    }
                }
                left.reverse();
                return Err(incomplete(e, left));
            }
            created.push(p.id);
        }
        Ok(Created {
            thing_id: root,
            created,
        })
    }

    pub(super) async fn read_fields(
        &self,
        auth: &AuthContext,
        id: &ThingId,
        fields: &FieldSelector,
    ) -> Result<Value, ComposeError> {
        let mut cmd =
            crate::protocol::ThingCommand::new(id.clone(), Action::Retrieve, Pointer::root(), None);
        cmd.fields = Some(fields.clone());
        let out = self.twins.apply(auth, cmd).await?;
        Ok(out.response.value.unwrap_or(Value::Null))
    }
}

/// `e` as is when nothing was changed, else [`ComposeError::Incomplete`] naming `changed`.
fn incomplete(e: ComposeError, changed: Vec<ThingId>) -> ComposeError {
    if changed.is_empty() {
        e
    } else {
        ComposeError::Incomplete {
            cause: Error::from(e),
            changed,
        }
    }
}

fn child_id(v: &Value) -> Option<ThingId> {
    ThingId::new(v.get("thingId")?.as_str()?).ok()
}
