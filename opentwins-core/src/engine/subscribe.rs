//! Event subscriptions: a stream of events for one caller, filtered by its policy view and an
//! optional RQL filter.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::Twins;
use super::access::Access;
use super::ring::{Receiver, RingError};
use crate::error::Result;
use crate::policy::{AuthContext, Policy};
use crate::protocol::ThingEvent;
use crate::query::Filter;

/// An event as the engine publishes it, with the policy in force when it happened.
pub(super) struct Published {
    pub(super) event: ThingEvent,
    pub(super) policy: Option<Arc<Policy>>,
}

impl Published {
    /// What the event counts against the ring's byte bound: its value as compact JSON plus
    /// its id, path and a fixed part for the rest (the policy is counted by the ring, once per
    /// version).
    pub(super) fn bytes(&self) -> usize {
        const FIXED: usize = 256;
        FIXED
            + self.event.thing_id.as_str().len()
            + self
                .event
                .path
                .segments()
                .iter()
                .map(|s| s.len() + 1)
                .sum::<usize>()
            + self
                .event
                .value
                .as_ref()
                .map_or(0, crate::model::schema::json_size)
    }
}

/// Why [`Subscription::recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The subscriber was too slow; this many events were dropped for it. Receiving again
    /// continues with the oldest event still buffered.
    #[error("the subscriber lagged behind and missed {0} events")]
    Lagged(u64),
    /// The engine is gone.
    #[error("the engine was dropped")]
    Closed,
}

/// A live stream of the events one caller may see.
pub struct Subscription {
    rx: Receiver,
    auth: AuthContext,
    filter: Option<Filter>,
}

impl Twins {
    /// Subscribes `auth` to events from now on. `filter` is an RQL filter evaluated against the
    /// changed part of the thing (`thingId`, `_revision` and the event's value placed at its path),
    /// after removing what the caller may not read — as Ditto evaluates event filters.
    pub fn subscribe(&self, auth: AuthContext, filter: Option<&str>) -> Result<Subscription> {
        let filter = filter.map(Filter::parse).transpose()?;
        Ok(Subscription {
            rx: self.inner.events.subscribe(),
            auth,
            filter,
        })
    }
}

impl Subscription {
    /// The next event this caller may see.
    pub async fn recv(&mut self) -> std::result::Result<ThingEvent, RecvError> {
        loop {
            let published = match self.rx.recv().await {
                Ok(p) => p,
                Err(RingError::Lagged(n)) => return Err(RecvError::Lagged(n)),
                Err(RingError::Closed) => return Err(RecvError::Closed),
            };
            let access = Access::new(&self.auth, published.policy.as_deref());
            let Some(event) = access.filter_event(published.event.clone()) else {
                continue;
            };
            if let Some(filter) = &self.filter
                && !filter.matches(&projection(&event))
            {
                continue;
            }
            return Ok(event);
        }
    }
}

/// The thing as far as an event tells it: `thingId`, `_revision`, and the value at its path.
fn projection(event: &ThingEvent) -> Value {
    let mut doc = match &event.value {
        Some(v) => event.path.wrap(v.clone()),
        None => Value::Object(Map::new()),
    };
    if let Value::Object(m) = &mut doc {
        m.insert("thingId".into(), Value::String(event.thing_id.to_string()));
        m.insert("_revision".into(), Value::from(event.revision));
        m.insert(
            "_modified".into(),
            Value::String(event.timestamp.to_string()),
        );
    }
    doc
}
