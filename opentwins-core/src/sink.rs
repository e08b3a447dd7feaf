//! Where events go besides subscribers: history, bridges, links, metrics, user callbacks.

use crate::model::Thing;
use crate::protocol::ThingEvent;

/// Receives every event the engine emits, in revision order per thing.
///
/// `on_event` runs while the thing is locked, right after the change, so it sees events of one
/// thing strictly in order and `thing` is the state right after the event. It must be quick:
/// enqueue work, do not block on I/O. Events are unfiltered (sinks are trusted, in-process).
///
/// One kind of event reaches sinks only: changes a peer sent for a thing this instance does not
/// hold (e.g. a removal inside a deleted thing), with revision 0, no value and `thing` `None`,
/// so links can pass them on.
pub trait Sink: Send + Sync + 'static {
    /// One event and the thing's state after it (`None` after the thing was deleted).
    fn on_event(&self, event: &ThingEvent, thing: Option<&Thing>);
}

impl<F> Sink for F
where
    F: Fn(&ThingEvent, Option<&Thing>) + Send + Sync + 'static,
{
    fn on_event(&self, event: &ThingEvent, thing: Option<&Thing>) {
        self(event, thing)
    }
}
