//! Event subscriptions: a stream of events for one caller, filtered by its policy view and an
//! optional RQL filter.

use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::broadcast;

use super::Twins;
use super::access::Access;
use crate::error::Result;
use crate::policy::{AuthContext, Policy};
use crate::protocol::ThingEvent;
use crate::query::Filter;

/// An event as the engine publishes it, with the policy in force when it happened.
pub(super) struct Published {
    pub(super) event: ThingEvent,
    pub(super) policy: Option<Arc<Policy>>,
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
    rx: broadcast::Receiver<Arc<Published>>,
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
                Err(broadcast::error::RecvError::Lagged(n)) => return Err(RecvError::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => return Err(RecvError::Closed),
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
