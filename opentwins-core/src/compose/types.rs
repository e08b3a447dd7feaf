//! Types: things marked `attributes/_isType = true` that list their child types with a count in
//! `attributes/_children`. Writing, reading, deleting, composing and instantiating them.

use std::collections::{HashMap, HashSet, VecDeque};

use serde_json::{Map, Value, json};

use super::{
    CHILDREN, ChildType, ComposeError, Composer, Created, IS_TYPE, NewTree, TYPES, TreeNode,
    check_body, child_types, is_type,
};
use crate::engine::{Outcome, SearchResult};
use crate::model::{FieldSelector, Pointer, ThingId};
use crate::policy::AuthContext;
use crate::protocol::Action;

impl Composer {
    /// Creates the type `id` from a thing body, or replaces an existing type's content keeping
    /// its composition (`_isType`, `_children`). Reserved attributes in `body` are refused; a
    /// thing `id` that is a twin is [`ComposeError::ExistsAsTwin`]. The outcome is the
    /// engine's: 201 with the type when created, 204 when replaced.
    pub async fn put_type(
        &self,
        auth: &AuthContext,
        id: &ThingId,
        body: Value,
    ) -> Result<Outcome, ComposeError> {
        if !body.is_object() {
            return Err(ComposeError::Invalid(
                "A type must be a JSON object.".into(),
            ));
        }
        check_body(&body)?;
        let _structure = self.structure.lock().await;
        let (action, markers) = match self.read_opt(auth, id).await? {
            None => (Action::Create, json!({ IS_TYPE: true })),
            Some(current) if !is_type(&current) => {
                return Err(ComposeError::ExistsAsTwin(id.clone()));
            }
            // The composition as stored, also the parts the caller may not read.
            Some(_) => (
                Action::Modify,
                Value::Object(
                    self.twins
                        .get_thing(id)
                        .map(|t| super::markers_of(&t))
                        .unwrap_or_default(),
                ),
            ),
        };
        let mut body = body;
        let attributes = body
            .as_object_mut()
            .expect("checked to be an object")
            .entry("attributes")
            .or_insert_with(|| Value::Object(Map::new()));
        match attributes {
            Value::Object(a) => {
                if let Value::Object(m) = markers {
                    a.extend(m);
                }
            }
            _ => {
                return Err(ComposeError::Invalid(
                    "'attributes' must be a JSON object.".into(),
                ));
            }
        }
        self.write(auth, id, action, Pointer::root(), Some(body))
            .await
    }

    /// The type `id` as `auth` may read it, reduced to `fields` if given.
    pub async fn get_type(
        &self,
        auth: &AuthContext,
        id: &ThingId,
        fields: Option<&FieldSelector>,
    ) -> Result<Value, ComposeError> {
        let v = self.read_type(auth, id).await?;
        match fields {
            None => Ok(v),
            Some(f) => self.read_fields(auth, id, f).await,
        }
    }

    /// Deletes the type `id`. Refused with [`ComposeError::InUse`] while a type `auth` may read
    /// lists it as a child. Twins made from it keep their `_type` (it names where they came
    /// from).
    pub async fn delete_type(&self, auth: &AuthContext, id: &ThingId) -> Result<(), ComposeError> {
        let _structure = self.structure.lock().await;
        self.read_type(auth, id).await?;
        let parents = self.type_parents_unlocked(auth, id)?;
        if !parents.is_empty() {
            return Err(ComposeError::InUse {
                id: id.clone(),
                parents: parents.into_iter().map(|p| p.type_id).collect(),
            });
        }
        self.write(auth, id, Action::Delete, Pointer::root(), None)
            .await?;
        Ok(())
    }

    /// One page of the types `auth` may read, narrowed by an RQL `filter`, with Ditto's
    /// `option` string and `fields`.
    pub fn list_types(
        &self,
        auth: &AuthContext,
        filter: Option<&str>,
        options: Option<&str>,
        fields: Option<&FieldSelector>,
    ) -> Result<SearchResult, ComposeError> {
        self.search_within(auth, TYPES, filter, options, fields)
    }

    /// The child types of the type `id`, in the order it lists them.
    pub async fn type_children(
        &self,
        auth: &AuthContext,
        id: &ThingId,
    ) -> Result<Vec<ChildType>, ComposeError> {
        Ok(child_types(&self.read_type(auth, id).await?))
    }

    /// The types `auth` may read that list `id` as a child, with the count each gives it.
    pub async fn type_parents(
        &self,
        auth: &AuthContext,
        id: &ThingId,
    ) -> Result<Vec<ChildType>, ComposeError> {
        self.read_type(auth, id).await?;
        self.type_parents_unlocked(auth, id)
    }

    fn type_parents_unlocked(
        &self,
        auth: &AuthContext,
        id: &ThingId,
    ) -> Result<Vec<ChildType>, ComposeError> {
        let types = self.search_all(auth, TYPES, "thingId,attributes")?;
        Ok(types
            .iter()
            .filter_map(|t| {
                let count = child_types(t).into_iter().find(|c| &c.type_id == id)?.count;
                let type_id = ThingId::new(t.get("thingId")?.as_str()?).ok()?;
                Some(ChildType { type_id, count })
            })
            .collect())
    }

    /// Makes `child` a child type of `parent`, `count` twins of it per twin of `parent`
    /// (replacing an earlier count). Both must be types `auth` may read, `parent` one it may
    /// write; a link that would make `parent` its own descendant is [`ComposeError::Cycle`].
    pub async fn set_type_child(
        &self,
        auth: &AuthContext,
        parent: &ThingId,
        child: &ThingId,
        count: u32,
    ) -> Result<Outcome, ComposeError> {
        if count == 0 || count > self.config.max_child_count {
            return Err(ComposeError::Invalid(format!(
                "The count must be between 1 and {}, not {count}.",
                self.config.max_child_count
            )));
        }
        let _structure = self.structure.lock().await;
        self.read_type(auth, parent).await?;
        self.read_type(auth, child).await?;
        if parent == child || self.type_reaches(child, parent) {
            return Err(ComposeError::Cycle {
                child: child.clone(),
                parent: parent.clone(),
            });
        }
        let path = Pointer::from_segments(["attributes", CHILDREN, child.as_str()])?;
        self.write(auth, parent, Action::Modify, path, Some(Value::from(count)))
            .await
    }

    /// Removes `child` from the child types of `parent`.
    pub async fn remove_type_child(
        &self,
        auth: &AuthContext,
        parent: &ThingId,
        child: &ThingId,
    ) -> Result<(), ComposeError> {
        let _structure = self.structure.lock().await;
        let current = self.read_type(auth, parent).await?;
        if !child_types(&current).iter().any(|c| &c.type_id == child) {
            return Err(ComposeError::NotAChild {
                parent: parent.clone(),
                child: child.clone(),
            });
        }
        let path = Pointer::from_segments(["attributes", CHILDREN, child.as_str()])?;
        self.write(auth, parent, Action::Delete, path, None).await?;
        Ok(())
    }

    /// Whether `target` is `from` or among its descendant types, following `_children` as
    /// stored (an integrity check: it reads through policies, but only answers yes or no).
    fn type_reaches(&self, from: &ThingId, target: &ThingId) -> bool {
        let mut seen = HashSet::new();
        let mut stack = vec![from.clone()];
        while let Some(id) = stack.pop() {
            if &id == target {
                return true;
            }
            if !seen.insert(id.clone()) {
                continue;
            }
            if let Some(t) = self.twins.get_thing(&id) {
                stack.extend(child_types(t.body()).into_iter().map(|c| c.type_id));
            }
        }
        false
    }

    /// The type `id` unfolded into a tree of its child types (a type used by several parents
    /// appears under each), as `auth` may read them.
    pub async fn type_tree(
        &self,
        auth: &AuthContext,
        id: &ThingId,
    ) -> Result<TreeNode, ComposeError> {
        let types = self.load_types(auth, id).await?;
        let size = super::plan::unfolded_size(&types, id, false);
        if size > self.config.max_tree_things {
            return Err(ComposeError::TooLarge {
                limit: self.config.max_tree_things,
            });
        }
        fn unfold(types: &HashMap<ThingId, Value>, id: &ThingId, count: Option<u32>) -> TreeNode {
            let children = types
                .get(id)
                .map(child_types)
                .unwrap_or_default()
                .into_iter()
                .map(|c| unfold(types, &c.type_id, Some(c.count)))
                .collect();
            TreeNode {
                thing_id: id.clone(),
                count,
                children,
            }
        }
        Ok(unfold(&types, id, None))
    }

    /// Creates the twin tree of the type `type_id`: a root twin `spec.thing_id` with the
    /// type's content (`spec.patch` merged over it) and, for each child type with count n, n
    /// child twins made the same way, recursively. Child ids are `{parentTwinId}:{typeName}`,
    /// or `{parentTwinId}:{typeName}_{i}` (i = 1..n) when n > 1.
    ///
    /// Every id is checked before anything is created; twins are then created parents first,
    /// each with its `_parent` already set, so the part created so far is always one
    /// connected tree. If a creation fails the created twins are deleted again (leaves first);
    /// if that fails too, [`ComposeError::Incomplete`] names what is left.
    pub async fn instantiate(
        &self,
        auth: &AuthContext,
        type_id: &ThingId,
        spec: NewTree,
    ) -> Result<Created, ComposeError> {
        let types = self.load_types(auth, type_id).await?;
        let plan = super::plan::instantiate(&types, type_id, &spec, &self.config)?;
        self.create_all(auth, spec.thing_id, plan).await
    }

    /// Reads the type `root` and every type below it as `auth` (each once), then checks that
    /// they form no cycle and are at most `max_depth` levels deep.
    async fn load_types(
        &self,
        auth: &AuthContext,
        root: &ThingId,
    ) -> Result<HashMap<ThingId, Value>, ComposeError> {
        let mut types = HashMap::new();
        let mut queue = VecDeque::from([root.clone()]);
        while let Some(id) = queue.pop_front() {
            if types.contains_key(&id) {
                continue;
            }
            let t = self.read_type(auth, &id).await?;
            queue.extend(child_types(&t).into_iter().map(|c| c.type_id));
            types.insert(id, t);
        }
        super::plan::check_type_graph(&types, root, self.config.max_depth)?;
        Ok(types)
    }
}
