//! Applying twin commands: create, retrieve, modify, merge, delete at every level of a thing.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value};

use super::access::Access;
use super::commit::Written;
use super::hot::{Entry, Slot};
use super::precondition::{Preconditions, condition_failed};
use super::transient::Split;
use super::{Inner, Outcome, Twins, lock};
use crate::compose::ComposeError;
use crate::compose::restricted::{self, Guard};
use crate::error::{Error, ErrorKind, Level, Result};
use crate::model::schema::{self, Mode, json_size};
use crate::model::{Pointer, PolicyId, Thing, ThingId, Timestamp};
use crate::patch;
use crate::policy::{AuthContext, Permission, Policy, ResourceType};
use crate::protocol::{Action, EventAction, Headers, ThingCommand, ThingEvent, ThingResponse};
use crate::store::{Durable, Expect, Kind, Record, WriteOp};

impl Twins {
    /// Applies one twin command for the caller `auth`: the response plus the events it caused
    /// (filtered to what the caller may read), or a Ditto error. Nothing changes on error.
    ///
    /// With `requested-acks: twin-persisted` a write is answered only once durable.
    pub async fn apply(&self, auth: &AuthContext, cmd: ThingCommand) -> Result<Outcome> {
        self.apply_as(auth, cmd, false).await
    }

    /// [`Twins::apply`] for the composition operations, which alone write reserved attributes.
    pub(crate) async fn apply_composing(
        &self,
        auth: &AuthContext,
        cmd: ThingCommand,
    ) -> Result<Outcome> {
        self.apply_as(auth, cmd, true).await
    }

    async fn apply_as(
        &self,
        auth: &AuthContext,
        cmd: ThingCommand,
        composing: bool,
    ) -> Result<Outcome> {
        let wait = cmd.action.is_write() && cmd.headers.wants_persisted();
        let permit = if cmd.action.is_write() {
            Some(
                self.inner
                    .pending
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(Error::unavailable)?,
            )
        } else {
            None
        };
        let vacates = cmd.action.is_write() && cmd.path.is_root();
        let id = vacates.then(|| cmd.thing_id.clone());
        let result = self.inner.apply_sync(auth, cmd, composing);
        if let Some(id) = id {
            // A failed create or a delete may leave an empty slot behind.
            let deleted = result
                .as_ref()
                .is_ok_and(|(o, _)| o.response.action == Action::Delete);
            if result.is_err() || deleted {
                self.inner.things.remove_if_vacant(&id);
            }
        }
        self.inner.hot.cool();
        let (outcome, durable) = result?;
        if let Some(durable) = durable {
            self.inner.settle(durable, wait, permit).await?;
        }
        Ok(outcome)
    }
}

/// What a write did, before it becomes a response and an event.
struct Change {
    status: u16,
    event: EventAction,
    response_value: Option<Value>,
    event_value: Option<Value>,
}

impl Inner {
    fn apply_sync(
        &self,
        auth: &AuthContext,
        mut cmd: ThingCommand,
        composing: bool,
    ) -> Result<(Outcome, Option<Durable>)> {
        let level = Level::of(&cmd.path)?;
        let pre = Preconditions::parse(&cmd.headers)?;
        let reserved = if composing || !self.composition.load(Ordering::Relaxed) {
            Guard::Pass
        } else {
            restricted::classify(&cmd)?
        };
        if cmd.action.is_write() {
            self.check_store()?;
        }
        match (cmd.action, &cmd.value) {
            (Action::Create, _) if !cmd.path.is_root() => {
                return Err(Error::new(
                    ErrorKind::ProtocolInvalid,
                    format!(
                        "A create command must have the path '/', not '{}'.",
                        cmd.path
                    ),
                ));
            }
            (Action::Create | Action::Modify | Action::Merge, None) => {
                return Err(Error::field_invalid(format!(
                    "The {} command at '{}' needs a value.",
                    cmd.action.as_str(),
                    cmd.path
                )));
            }
            (Action::Create | Action::Modify | Action::Merge, Some(v)) => {
                let size = json_size(v);
                if size > self.config.max_value_bytes {
                    return Err(too_large("value", size, self.config.max_value_bytes));
                }
                let mode = if cmd.action == Action::Merge {
                    Mode::Patch
                } else {
                    Mode::Full
                };
                schema::validate(&cmd.thing_id, level, v, mode)?;
                schema::check_depth(cmd.path.len(), v)?;
            }
            _ => {}
        }
        let split = self.transient.split(&mut cmd);
        let (all_transient, whole) = match split {
            Split::Keep => (false, None),
            Split::All => (true, None),
            Split::Part(whole) => (false, Some(whole)),
        };

        // A whole-thing modify or merge of a missing thing creates it (Ditto since 3.3).
        let creates = cmd.path.is_root()
            && matches!(cmd.action, Action::Create | Action::Modify | Action::Merge);
        let slot = if creates {
            self.things.get_or_insert(&cmd.thing_id)
        } else {
            self.things
                .get(&cmd.thing_id)
                .ok_or_else(|| not_found_thing(&cmd.thing_id))?
        };
        let mut guard = lock(&slot);
        let Some(thing) = guard.heat(&slot, &self.hot)? else {
            if !creates || all_transient {
                // Transient values alone do not create a thing.
                return Err(not_found_thing(&cmd.thing_id));
            }
            pre.check_tags(None, false, "Thing")?;
            let (outcome, durable) = self.create(auth, cmd, whole, &slot, &mut guard)?;
            return Ok((outcome, Some(durable)));
        };

        let policy = self.policy(thing.policy_id());
        let access = Access::new(auth, policy.as_deref());
        if !access.read_partial(&Pointer::root()) {
            return Err(not_found_thing(&cmd.thing_id));
        }
        if cmd.action == Action::Create {
            return Err(Error::new(
                ErrorKind::ThingConflict,
                format!("The Thing with ID '{}' already exists.", cmd.thing_id),
            )
            .with_description("Choose another Thing ID, or modify the existing Thing."));
        }
        pre.check_tags(Some(&thing.etag()), cmd.action == Action::Retrieve, "Thing")?;
        if let Some(condition) = &pre.condition {
            let holds = if access.read_all(&Pointer::root()) {
                condition.matches(&*thing)
            } else {
                access
                    .filter(&Pointer::root(), thing.body())
                    .is_some_and(|v| condition.matches(&v))
            };
            if !holds {
                return Err(condition_failed(condition));
            }
        }

        if cmd.action == Action::Retrieve {
            let value = retrieve(thing, &cmd, level, &access)?;
            let response = ThingResponse {
                thing_id: cmd.thing_id,
                action: cmd.action,
                path: cmd.path,
                status: 200,
                value: Some(value),
                headers: Headers {
                    etag: Some(thing.etag()),
                    ..cmd.headers.for_reply()
                },
            };
            return Ok((
                Outcome {
                    response,
                    events: Vec::new(),
                },
                None,
            ));
        }

        // Writes: permission first, so a caller learns nothing it may not read.
        // Unrestricted WRITE at the command's path covers everything a patch can touch; only
        // otherwise are the patch's leaves checked one by one.
        // A write below a value that is not an object replaces that value: it needs WRITE
        // there (`replaced`).
        let permits = |(path, whole): (Pointer, bool)| match replaced(thing.body(), path, whole) {
            (p, true) => access.write_all(&p),
            (p, false) => access.write_at(&p),
        };
        let allowed = permits((cmd.path.clone(), true))
            || match (&cmd.action, &cmd.value) {
                (Action::Merge, Some(patch)) => {
                    merge_targets(&cmd.path, patch).into_iter().all(permits)
                }
                _ => false,
            };
        if !allowed {
            return Err(if access.read_partial(&cmd.path) {
                Error::not_modifiable(level, cmd.thing_id.as_str(), &cmd.path.to_string())
            } else {
                Error::not_found(level, cmd.thing_id.as_str(), &cmd.path.to_string())
            });
        }

        match reserved {
            Guard::Pass => {}
            Guard::CarryOver => restricted::carry_over(&mut cmd, restricted::markers_of(thing)),
            Guard::RefuseIfMarked => {
                if let Some(key) = restricted::markers_of(thing).into_iter().next() {
                    return Err(ComposeError::Restricted(key.0).into());
                }
            }
        }
        if all_transient {
            return self.transient_write(thing, cmd, level, policy.clone(), &access);
        }

        if cmd.action == Action::Delete && cmd.path.is_root() {
            let old_revision = thing.revision();
            let (provenance, grave) = self.bury(thing);
            let event = ThingEvent {
                thing_id: cmd.thing_id.clone(),
                action: EventAction::Deleted,
                path: Pointer::root(),
                value: None,
                revision: old_revision + 1,
                timestamp: Timestamp::now(),
                headers: cmd.headers.for_reply(),
                provenance,
            };
            let deleted = Written::Delete {
                entry: &mut guard,
                old_revision,
                grave,
            };
            let (event, durable) = self.commit(event, None, policy.clone(), deleted);
            let response = ThingResponse {
                thing_id: cmd.thing_id,
                action: cmd.action,
                path: cmd.path,
                status: 204,
                value: None,
                headers: cmd.headers.for_reply(),
            };
            let events = access.filter_event(event).into_iter().collect();
            return Ok((Outcome { response, events }, Some(durable)));
        }

        let old_revision = thing.revision();
        self.ensure_clocks(thing);
        let change = self.change(thing, &cmd, level)?;
        let provenance = self.stamp_local(thing, &cmd);
        let now = Timestamp::now();
        thing.touch(now);
        let event = ThingEvent {
            thing_id: cmd.thing_id.clone(),
            action: change.event,
            path: cmd.path.clone(),
            value: change.event_value,
            revision: thing.revision(),
            timestamp: now,
            headers: cmd.headers.for_reply(),
            provenance,
        };
        // The policy may have changed with the command.
        let policy = self.policy(thing.policy_id());
        let updated = Written::Update {
            thing,
            old_revision,
        };
        let (event, durable) = self.commit(event, whole, policy.clone(), updated);
        let access = Access::new(auth, policy.as_deref());
        let response = ThingResponse {
            thing_id: cmd.thing_id,
            action: cmd.action,
            path: cmd.path.clone(),
            status: change.status,
            value: change
                .response_value
                .and_then(|v| access.filter(&cmd.path, &v)),
            headers: Headers {
                etag: Some(thing.etag()),
                ..cmd.headers.for_reply()
            },
        };
        let events = access.filter_event(event).into_iter().collect();
        Ok((Outcome { response, events }, Some(durable)))
    }

    /// A write whose value is transient as a whole: checked like any write, then
    /// published to subscribers with the thing's current revision. The thing, the store, the
    /// sinks and the clocks see nothing.
    fn transient_write(
        &self,
        thing: &Thing,
        cmd: ThingCommand,
        level: Level,
        policy: Option<Arc<Policy>>,
        access: &Access<'_>,
    ) -> Result<(Outcome, Option<Durable>)> {
        let action = match cmd.action {
            // A merge fails on nothing the thing holds (the value's size was checked).
            Action::Merge => EventAction::Merged,
            // A modify needs what it writes into (its feature) to exist: checked on a copy.
            _ => self.change(&mut thing.clone(), &cmd, level)?.event,
        };
        let event = ThingEvent {
            thing_id: cmd.thing_id.clone(),
            action,
            path: cmd.path.clone(),
            value: cmd.value,
            revision: thing.revision(),
            timestamp: Timestamp::now(),
            headers: cmd.headers.for_reply(),
            provenance: None,
        };
        self.publish(&event, policy);
        let response = ThingResponse {
            thing_id: cmd.thing_id,
            action: cmd.action,
            path: cmd.path,
            status: 204,
            value: None,
            headers: Headers {
                etag: Some(thing.etag()),
                ..cmd.headers.for_reply()
            },
        };
        let events = access.filter_event(event).into_iter().collect();
        Ok((Outcome { response, events }, None))
    }

    /// Applies modify / merge / delete below the root to `thing`'s body, or changes nothing and
    /// fails. Revision and events are the caller's business.
    fn change(&self, thing: &mut Thing, cmd: &ThingCommand, level: Level) -> Result<Change> {
        let path = &cmd.path;
        if let Some(feature) = feature_of(path)
            && level != Level::Feature
            && cmd.action != Action::Merge
            && thing.get(&feature).is_none()
        {
            return Err(Error::not_found(
                Level::Feature,
                cmd.thing_id.as_str(),
                &feature.to_string(),
            ));
        }
        if let Some(new_policy) = new_policy_id(cmd, thing)
            && self.policy(&new_policy).is_none()
        {
            return Err(super::policy_cmd::not_found(&new_policy)
                .with_description("A Thing can only refer to an existing Policy."));
        }
        let existed = path.get(thing.body()).is_some();
        // A change grows the thing by at most its value plus the keys that wrap it. Only when
        // that could cross the limit is the old subtree kept, to undo the change exactly.
        let max = self.config.max_thing_bytes;
        let bound = json_size(thing.body())
            + cmd.value.as_ref().map_or(0, json_size)
            + path.segments().iter().map(|s| s.len() + 6).sum::<usize>()
            + 600;
        let undo = (bound > max).then(|| path.get(thing.body()).cloned());
        let change = match cmd.action {
            Action::Modify => {
                let value = schema::compacted(cmd.value.clone().unwrap_or(Value::Null));
                if path.is_root() {
                    let body = normalise_body(thing, value.clone());
                    *thing.body_mut() = body;
                } else {
                    path.set(thing.body_mut(), value.clone());
                }
                let created = !existed;
                Change {
                    status: if created { 201 } else { 204 },
                    event: if created {
                        EventAction::Created
                    } else {
                        EventAction::Modified
                    },
                    response_value: created.then(|| value.clone()),
                    event_value: Some(value),
                }
            }
            Action::Merge => {
                let patch = cmd.value.clone().unwrap_or(Value::Null);
                patch::merge_at(thing.body_mut(), path, &patch);
                Change {
                    status: 204,
                    event: EventAction::Merged,
                    response_value: None,
                    event_value: Some(patch),
                }
            }
            Action::Delete => {
                if level == Level::PolicyId {
                    return Err(Error::field_invalid(
                        "The policyId of a Thing cannot be deleted; modify it instead.",
                    ));
                }
                if !existed {
                    return Err(Error::not_found(
                        level,
                        cmd.thing_id.as_str(),
                        &path.to_string(),
                    ));
                }
                path.remove(thing.body_mut());
                Change {
                    status: 204,
                    event: EventAction::Deleted,
                    response_value: None,
                    event_value: None,
                }
            }
            Action::Create | Action::Retrieve => unreachable!("handled by the caller"),
        };
        let size = match &undo {
            Some(_) => json_size(thing.body()),
            None => 0,
        };
        if let Some(old) = undo.filter(|_| size > max) {
            // Undo: put back exactly what was at the path.
            match old {
                Some(old) if path.is_root() => *thing.body_mut() = old,
                Some(old) => {
                    path.set(thing.body_mut(), old);
                }
                None => {
                    path.remove(thing.body_mut());
                }
            }
            return Err(too_large("Thing", size, max));
        }
        Ok(change)
    }

    /// Creates a thing in the locked, empty `entry` of `slot`.
    fn create(
        &self,
        auth: &AuthContext,
        cmd: ThingCommand,
        whole: Option<Value>,
        slot: &Slot,
        entry: &mut Entry,
    ) -> Result<(Outcome, Durable)> {
        let now = Timestamp::now();
        let value = match (cmd.action, &cmd.value) {
            // A merge patch applied to nothing: what it sets, without its `null`s.
            (Action::Merge, Some(patch)) => patch::strip_nulls(patch),
            (_, value) => value.clone().unwrap_or(Value::Null),
        };
        let mut thing = Thing::new(cmd.thing_id.clone(), value, now)?;
        let size = json_size(thing.body());
        if size > self.config.max_thing_bytes {
            return Err(too_large("Thing", size, self.config.max_thing_bytes));
        }
        let explicit = cmd.value.as_ref().and_then(|v| v.get("policyId")).is_some();
        let named = thing.policy_id().clone();
        let choice = if explicit {
            NewPolicy::Existing(&named)
        } else {
            NewPolicy::Default
        };
        let (new_policy, policy_op) = self.policy_for_new_thing(auth, &mut thing, choice, now)?;
        let policy = new_policy.policy.clone();
        let provenance = self.stamp_local(&mut thing, &cmd);
        let lifted = self.graves.lift(&cmd.thing_id);
        let event = ThingEvent {
            thing_id: cmd.thing_id.clone(),
            action: EventAction::Created,
            path: Pointer::root(),
            value: Some(thing.body().clone()),
            revision: thing.revision(),
            timestamp: now,
            headers: cmd.headers.for_reply(),
            provenance,
        };
        // Subscribers see the new thing with the transient values the command carried.
        let whole = whole.map(|w| {
            let mut seen = thing.body().clone();
            patch::merge_at(&mut seen, &Pointer::root(), &w);
            seen
        });
        let access = Access::new(auth, Some(&policy));
        let value = access.filter(&Pointer::root(), thing.body());
        let etag = thing.etag();
        let created = Written::Create {
            slot,
            entry,
            thing: Box::new(thing),
            policy: new_policy,
            policy_op,
            lifted,
        };
        let (event, durable) = self.commit(event, whole, Some(policy.clone()), created);
        let response = ThingResponse {
            thing_id: cmd.thing_id,
            action: cmd.action,
            path: cmd.path,
            status: 201,
            value,
            headers: Headers {
                etag: Some(etag),
                ..cmd.headers.for_reply()
            },
        };
        let events = access.filter_event(event).into_iter().collect();
        Ok((Outcome { response, events }, durable))
    }

    /// The policy a new thing gets (see [`NewPolicy`]), returned with the write that stores it
    /// when it is new, and the policy-write lock: the caller writes the policy with the thing,
    /// then registers it with [`Inner::register_policy`], then drops the lock. Checks that
    /// `auth` may create the thing, and points the thing at the policy.
    pub(super) fn policy_for_new_thing(
        &self,
        auth: &AuthContext,
        thing: &mut Thing,
        choice: NewPolicy<'_>,
        now: Timestamp,
    ) -> Result<(NewThingPolicy<'_>, Option<WriteOp>)> {
        let mut guard = lock(&self.policy_write);
        let own_id = || PolicyId::new(thing.id().as_str());
        let (policy, created) = match choice {
            NewPolicy::Existing(id) => match self.policy(id) {
                Some(p) => (p, false),
                None => {
                    return Err(not_creatable(
                        thing.id(),
                        &format!("the Policy with ID '{id}' does not exist"),
                    ));
                }
            },
            NewPolicy::Default => {
                let id = own_id()?;
                if self.policy(&id).is_some() {
                    // Somebody else's policy under this id must never become the new thing's
                    // without being named (policy squatting).
                    return Err(not_creatable(
                        thing.id(),
                        &format!(
                            "a Policy with ID '{id}' already exists; name it as policyId to use it"
                        ),
                    ));
                }
                let mut policy = Policy::default_for(id, auth, now);
                if let Some(last) = guard.as_deref() {
                    policy.share_entries_with(last);
                }
                let policy = Arc::new(policy);
                *guard = Some(policy.clone());
                (policy, true)
            }
            NewPolicy::Peer { named, fallback } => {
                let grants = |p: &Policy| may_create(auth, p);
                let own = own_id()?;
                let usable = [named, fallback, Some(&own)]
                    .into_iter()
                    .flatten()
                    .filter_map(|id| self.policy(id))
                    .find(|p| grants(p));
                match (usable, fallback.and_then(|id| self.policy(id))) {
                    (Some(p), _) => (p, false),
                    (None, _) if self.policy(&own).is_some() => {
                        return Err(not_creatable(
                            thing.id(),
                            &format!("the Policy with ID '{own}' does not grant the peer WRITE"),
                        ));
                    }
                    (None, Some(template)) => {
                        (Arc::new(derived_policy(own, &template, auth, now)?), true)
                    }
                    (None, None) => (Arc::new(Policy::default_for(own, auth, now)), true),
                }
            }
        };
        if !may_create(auth, &policy) {
            return Err(not_creatable(
                thing.id(),
                "the Policy does not grant the requester WRITE on 'thing:/'",
            ));
        }
        let op = created.then(|| WriteOp::Put {
            record: policy_record(&policy),
            expect: Expect::Absent,
        });
        thing.set_policy_id(policy.id().clone());
        let new = NewThingPolicy {
            policy,
            created,
            _guard: guard,
        };
        Ok((new, op))
    }

    /// Makes a policy created with a new thing known, once its write is handed to the store.
    pub(super) fn register_policy(&self, new: NewThingPolicy<'_>) {
        if new.created {
            self.policies_mut()
                .insert(new.policy.id().clone(), new.policy.clone());
        }
    }

    fn policies_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, std::collections::HashMap<PolicyId, Arc<Policy>>> {
        super::write(&self.policies)
    }
}

/// Which policy a new thing gets.
pub(super) enum NewPolicy<'a> {
    /// The one its body names: it must exist.
    Existing(&'a PolicyId),
    /// None named: a new default policy with the thing's id for the creator (Ditto's rule). A
    /// policy that already has that id is refused, never adopted.
    Default,
    /// A peer's update creates it: the policy the update names or the link's fallback, the
    /// first that exists and grants the peer WRITE on `thing:/`, else the policy with the
    /// thing's id if it grants the peer (made so earlier), else a new policy with the thing's id
    /// holding the fallback's entries plus one for the peer (so the operators the fallback names
    /// keep access, and the peer may write this thing only), else a default policy.
    Peer {
        named: Option<&'a PolicyId>,
        fallback: Option<&'a PolicyId>,
    },
}

/// Whether `auth` may create a thing under `policy`.
fn may_create(auth: &AuthContext, policy: &Policy) -> bool {
    auth.is_system()
        || policy.has_permission(
            auth,
            ResourceType::Thing,
            &Pointer::root(),
            Permission::Write,
        )
}

/// The label of the entry a peer gets in a policy derived for a thing it created.
const PEER_LABEL: &str = "LINK_PEER";

/// A policy `id` with `template`'s entries plus an entry granting `peer`'s default subject
/// READ and WRITE on `thing:/` (not on `policy:/`: the peer may not change who else has access).
fn derived_policy(
    id: PolicyId,
    template: &Policy,
    peer: &AuthContext,
    now: Timestamp,
) -> Result<Policy> {
    let mut entry = crate::policy::PolicyEntry::new();
    if let Some(s) = peer.first_subject() {
        entry.set_subject(s, crate::policy::Subject::new("generated"))?;
    }
    let mut rw = crate::policy::Permissions::NONE;
    rw.insert(Permission::Read);
    rw.insert(Permission::Write);
    entry.set_resource(
        crate::policy::ResourceKey::root(ResourceType::Thing),
        crate::policy::Resource::new(rw, crate::policy::Permissions::NONE),
    );
    let entries = template
        .entries()
        .iter()
        .filter(|(label, _)| label != PEER_LABEL)
        .cloned()
        .chain([(PEER_LABEL.to_owned(), entry)]);
    Ok(Policy::new(id, entries, now))
}

/// The policy of a thing being created, and the policy-write lock held until it is registered.
pub(super) struct NewThingPolicy<'a> {
    pub(super) policy: Arc<Policy>,
    /// Whether the policy is a new default policy (written with the thing).
    created: bool,
    _guard: std::sync::MutexGuard<'a, Option<Arc<Policy>>>,
}

/// The value a retrieve returns: the resource at the path, filtered by READ, then by `fields`.
fn retrieve(thing: &Thing, cmd: &ThingCommand, level: Level, access: &Access<'_>) -> Result<Value> {
    let path = &cmd.path;
    let raw = thing
        .get(path)
        .ok_or_else(|| Error::not_found(level, cmd.thing_id.as_str(), &path.to_string()))?;
    let mut value = access
        .filter(path, raw)
        .ok_or_else(|| Error::not_found(level, cmd.thing_id.as_str(), &path.to_string()))?;
    if let Some(fields) = &cmd.fields {
        if path.is_root()
            && let Value::Object(m) = &mut value
        {
            for key in ["_revision", "_created", "_modified"] {
                if fields.selects_top(key)
                    && let Some(v) = thing.field(key)
                {
                    m.insert(key.to_owned(), v.into_owned());
                }
            }
            if fields.selects_top("_metadata")
                && access.read_all(&Pointer::root())
                && let Some(md) = thing.metadata()
            {
                m.insert("_metadata".to_owned(), md.clone());
            }
        }
        value = fields.apply(&value);
    }
    Ok(value)
}

/// The paths a merge patch writes, and whether the whole subtree is replaced there (`true`) or
/// only merged into (`false`, for a non-empty object patch that recurses).
fn merge_targets(path: &Pointer, patch: &Value) -> Vec<(Pointer, bool)> {
    let mut out = Vec::new();
    fn walk(path: Pointer, patch: &Value, out: &mut Vec<(Pointer, bool)>) {
        match patch {
            Value::Object(m) if !m.is_empty() => {
                for (k, v) in m {
                    walk(path.child(k), v, out);
                }
            }
            Value::Object(_) => out.push((path, false)),
            _ => out.push((path, true)),
        }
    }
    walk(path.clone(), patch, &mut out);
    out
}

/// What writing at `path` replaces in `body` (`whole`: the subtree at `path`, else only what
/// a merge patch sets below it): the shallowest ancestor holding a value that is not an object
/// (written below, it becomes one), else `path` itself as a whole if it holds such a value,
/// else `(path, whole)`.
fn replaced(body: &Value, path: Pointer, whole: bool) -> (Pointer, bool) {
    let segments = path.segments();
    let mut at = body;
    for (n, key) in segments.iter().enumerate() {
        match at {
            Value::Object(m) => match m.get(key) {
                Some(v) => at = v,
                None => return (path, whole),
            },
            _ => {
                let ancestor = Pointer::from_segments(segments[..n].iter().cloned());
                return (ancestor.unwrap_or_default(), true);
            }
        }
    }
    let whole = whole || !at.is_object();
    (path, whole)
}

/// `/features/{id}` when `path` lies inside a feature.
fn feature_of(path: &Pointer) -> Option<Pointer> {
    match path.segments() {
        [f, id, ..] if f == "features" => Some(Pointer::root().child(f).child(id)),
        _ => None,
    }
}

/// The policy id a command would set, if it sets one different from the current.
fn new_policy_id(cmd: &ThingCommand, thing: &Thing) -> Option<PolicyId> {
    let value = cmd.value.as_ref()?;
    let s = match Level::of(&cmd.path).ok()? {
        Level::PolicyId => value.as_str(),
        Level::Thing => value.get("policyId").and_then(Value::as_str),
        _ => None,
    }?;
    (s != thing.policy_id().as_str())
        .then(|| PolicyId::new(s).ok())
        .flatten()
}

/// A whole-thing modify: the new body, `thingId` and `policyId` first, keeping the current
/// policy when the body names none (as Ditto does).
fn normalise_body(thing: &Thing, value: Value) -> Value {
    let Value::Object(mut fields) = value else {
        return value;
    };
    let policy = fields
        .shift_remove("policyId")
        .unwrap_or_else(|| Value::String(thing.policy_id().to_string()));
    fields.shift_remove("thingId");
    let mut body = Map::with_capacity(fields.len() + 2);
    body.insert("thingId".into(), Value::String(thing.id().to_string()));
    body.insert("policyId".into(), policy);
    body.extend(fields);
    Value::Object(body)
}

pub(super) fn policy_record(policy: &Policy) -> Record {
    Record {
        kind: Kind::Policy,
        id: policy.id().to_string(),
        revision: policy.revision(),
        json: policy.full_json_bytes().into(),
    }
}

fn not_found_thing(id: &ThingId) -> Error {
    Error::not_found(Level::Thing, id.as_str(), "/")
}

fn not_creatable(id: &ThingId, why: &str) -> Error {
    Error::new(
        ErrorKind::ThingNotCreatable,
        format!("The Thing with ID '{id}' could not be created because {why}."),
    )
    .with_description("Check that the Policy exists and grants you WRITE on 'thing:/'.")
}

pub(super) fn too_large(what: &str, size: usize, max: usize) -> Error {
    Error::new(
        ErrorKind::ThingTooLarge,
        format!("The size of {size} bytes of the {what} exceeds the limit of {max} bytes."),
    )
    .with_description(
        "Reduce the size, or raise max_thing_bytes / max_value_bytes in the configuration.",
    )
}
