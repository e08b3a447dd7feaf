//! The one commit path of a thing's write, for local commands and peers' updates alike: the
//! event to the sinks, then to the subscribers, then one store batch with everything the write
//! changes (the thing, a new default policy, a grave dug or lifted), then the search index, the
//! slot and the hot set. Sinks run first: what they write in the store's database (a link's outbox entry, a
//! history point) is made durable by the same group commit as the batch.

use std::sync::Arc;

use serde_json::Value;

use super::Inner;
use super::hot::{Entry, Slot, SlotRef};
use super::thing_cmd::NewThingPolicy;
use crate::model::Thing;
use crate::policy::Policy;
use crate::protocol::ThingEvent;
use crate::store::{Durable, Expect, Kind, Record, WriteOp};

/// What a write does to a thing.
pub(super) enum Written<'a, 'p> {
    /// Creates it in the locked, empty `entry` of `slot`, with the policy it gets (and the
    /// write of that policy when it is a new default one) and the grave it lifts.
    Create {
        slot: &'a Slot,
        entry: &'a mut Entry,
        thing: Box<Thing>,
        policy: NewThingPolicy<'p>,
        policy_op: Option<WriteOp>,
        lifted: Option<WriteOp>,
    },
    /// Changes the thing the locked slot holds; `old_revision` is its revision before.
    Update { thing: &'a Thing, old_revision: u64 },
    /// Deletes the thing in the locked `entry`, leaving `grave` (when clocks are kept).
    Delete {
        entry: &'a mut Entry,
        old_revision: u64,
        grave: Option<WriteOp>,
    },
}

impl Inner {
    /// Commits a write: `event` to the sinks as the thing keeps it and to the subscribers with
    /// `whole` as its value when part of what was written is transient (returned as the
    /// subscribers saw it); then the store batch, whose [`Durable`] is returned.
    pub(super) fn commit(
        &self,
        event: ThingEvent,
        whole: Option<Value>,
        policy: Option<Arc<Policy>>,
        written: Written<'_, '_>,
    ) -> (ThingEvent, Durable) {
        match written {
            Written::Create {
                slot,
                entry,
                thing,
                policy: new_policy,
                policy_op,
                lifted,
            } => {
                let event = self.emit(event, whole, Some(&thing), policy);
                let put = WriteOp::Put {
                    record: thing_record(&thing),
                    expect: Expect::Absent,
                };
                let ops = policy_op.into_iter().chain(lifted).chain([put]);
                let durable = self.store.write(ops.collect());
                self.register_policy(new_policy);
                super::write(&self.index).put(&thing, &SlotRef(slot.clone()));
                *entry = Entry::Hot(*thing);
                self.hot.became_hot(slot);
                (event, durable)
            }
            Written::Update {
                thing,
                old_revision,
            } => {
                let event = self.emit(event, whole, Some(thing), policy);
                let durable = self.store.write(vec![WriteOp::Put {
                    record: thing_record(thing),
                    expect: Expect::Revision(old_revision),
                }]);
                if super::read(&self.index).changes(thing) {
                    super::write(&self.index).update(thing);
                }
                (event, durable)
            }
            Written::Delete {
                entry,
                old_revision,
                grave,
            } => {
                let event = self.emit(event, whole, None, policy);
                let delete = WriteOp::Delete {
                    kind: Kind::Thing,
                    id: event.thing_id.to_string(),
                    expect: Expect::Revision(old_revision),
                };
                let durable = self
                    .store
                    .write([delete].into_iter().chain(grave).collect());
                super::write(&self.index).remove(&event.thing_id);
                *entry = Entry::Absent;
                self.hot.became_cold();
                (event, durable)
            }
        }
    }

    /// Hands an event to every sink (with the thing as it keeps it) and to the subscribers,
    /// while the thing is locked; these see `whole` as its value when given. Returns the event
    /// as the subscribers saw it.
    pub(super) fn emit(
        &self,
        event: ThingEvent,
        whole: Option<Value>,
        thing: Option<&Thing>,
        policy: Option<Arc<Policy>>,
    ) -> ThingEvent {
        for sink in super::read(&self.sinks).iter() {
            sink.on_event(&event, thing);
        }
        let event = match whole {
            Some(whole) => ThingEvent {
                value: Some(whole),
                ..event
            },
            None => event,
        };
        self.publish(&event, policy);
        event
    }

    /// Hands an event to subscribers only.
    pub(super) fn publish(&self, event: &ThingEvent, policy: Option<Arc<Policy>>) {
        if self.events.has_receivers() {
            self.events.send(Arc::new(super::subscribe::Published {
                event: event.clone(),
                policy,
            }));
        }
    }
}

/// The store record of a thing.
pub(super) fn thing_record(thing: &Thing) -> Record {
    Record {
        kind: Kind::Thing,
        id: thing.id().to_string(),
        revision: thing.revision(),
        json: thing.to_full_vec().into(),
    }
}
