//! Server-sent events on `GET /api/2/things`, `/api/2/things/{thingId}` and
//! `/api/2/things/{thingId}/features/{featureId}` with `Accept: text/event-stream`.
//!
//! As Ditto's SSE: each event's data is JSON shaped like the resource the stream was opened on,
//! holding only the changed part — for `/things` a thing JSON with `thingId` and the change at
//! its path (`_revision` and `_modified` when selected with `fields`), for a feature the feature
//! JSON. Parameters: `ids`, `namespaces`, `filter` (RQL on the changed part), `fields`.

use std::collections::HashSet;
use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use opentwins_core::engine::{RecvError, Subscription};
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::ThingEvent;
use opentwins_core::{FieldSelector, ThingId};
use serde_json::{Map, Value};

use super::HttpState;
use super::error::ApiError;
use super::metrics::{Counter, Gauge};
use super::request::Params;
use super::search::with_namespaces;

/// Opens the stream (or answers the error that prevents it).
pub(super) fn stream(
    st: HttpState,
    auth: AuthContext,
    params: Params,
    thing: Option<ThingId>,
    feature: Option<String>,
) -> Response {
    let opened = (|| {
        let slot = st.open_stream(&auth)?;
        let fields = params.fields()?;
        let ids = params
            .list("ids")
            .map(|ids| {
                ids.iter()
                    .map(|i| ThingId::new(i))
                    .collect::<Result<HashSet<_>, _>>()
            })
            .transpose()?;
        let filter = with_namespaces(params.get("filter"), params.list("namespaces"));
        let sub = st.twins().subscribe(auth, filter.as_deref())?;
        Ok::<_, ApiError>((slot, fields, ids, sub))
    })();
    let (slot, fields, ids, sub) = match opened {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let m = st.metrics();
    let open = m.sse_open.clone();
    open.inc();
    let state = Stream {
        sub,
        view: View {
            thing,
            ids,
            feature,
            fields,
        },
        sent: m.events_sse.clone(),
        lagged: m.lagged.clone(),
        _open: OpenGuard(open),
        _slot: slot,
    };
    let events = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            match s.sub.recv().await {
                Ok(ev) => {
                    if let Some(data) = s.view.render(&ev) {
                        s.sent.inc();
                        let event = Event::default().data(data.to_string());
                        return Some((Ok::<_, Infallible>(event), s));
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "SSE subscriber lagged behind; continuing");
                    s.lagged.add(n);
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

struct Stream {
    sub: Subscription,
    view: View,
    sent: Counter,
    lagged: Counter,
    _open: OpenGuard,
    _slot: super::StreamSlot,
}

/// Decrements the open-streams gauge when the stream is dropped (client gone).
pub(super) struct OpenGuard(pub(super) Gauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Which events a stream delivers and how it shapes them.
pub(super) struct View {
    pub(super) thing: Option<ThingId>,
    pub(super) ids: Option<HashSet<ThingId>>,
    pub(super) feature: Option<String>,
    pub(super) fields: Option<FieldSelector>,
}

impl View {
    /// Whether the event is about a thing this view watches.
    pub(super) fn watches(&self, ev: &ThingEvent) -> bool {
        self.thing.as_ref().is_none_or(|t| *t == ev.thing_id)
            && self
                .ids
                .as_ref()
                .is_none_or(|ids| ids.contains(&ev.thing_id))
    }

    /// The data of the event as this stream sends it; `None` to skip it.
    pub(super) fn render(&self, ev: &ThingEvent) -> Option<Value> {
        if !self.watches(ev) {
            return None;
        }
        let mut doc = match &ev.value {
            Some(v) => ev.path.wrap(v.clone()),
            None => Value::Object(Map::new()),
        };
        if let Some(feature) = &self.feature {
            let part = doc.get("features")?.get(feature)?.clone();
            return match &self.fields {
                None => Some(part),
                Some(f) => non_empty(f.apply(&part), &[]),
            };
        }
        let Value::Object(m) = &mut doc else {
            return None;
        };
        m.insert("thingId".into(), Value::String(ev.thing_id.to_string()));
        match &self.fields {
            None => Some(doc),
            Some(f) => {
                m.insert("_revision".into(), Value::from(ev.revision));
                m.insert("_modified".into(), Value::String(ev.timestamp.to_string()));
                non_empty(f.apply(&doc), &["thingId", "_revision", "_modified"])
            }
        }
    }
}

/// `v`, unless the selection kept nothing but bookkeeping keys.
fn non_empty(v: Value, bookkeeping: &[&str]) -> Option<Value> {
    let Value::Object(m) = &v else {
        return Some(v);
    };
    m.keys()
        .any(|k| !bookkeeping.contains(&k.as_str()))
        .then_some(v)
}

#[cfg(test)]
mod tests {
    use opentwins_core::protocol::{EventAction, Headers};
    use opentwins_core::{Pointer, Timestamp};
    use serde_json::json;

    use super::*;

    fn ev(path: &str, value: Option<Value>) -> ThingEvent {
        ThingEvent {
            thing_id: ThingId::new("ns:a").unwrap(),
            action: EventAction::Modified,
            path: Pointer::parse(path).unwrap(),
            value,
            revision: 7,
            timestamp: Timestamp::from_micros(1_000_000),
            headers: Headers::default(),
            provenance: None,
        }
    }

    #[test]
    fn shapes_like_ditto() {
        let all = View {
            thing: None,
            ids: None,
            feature: None,
            fields: None,
        };
        let e = ev("/features/f/properties/x", Some(json!(1)));
        assert_eq!(
            all.render(&e).unwrap(),
            json!({"features": {"f": {"properties": {"x": 1}}}, "thingId": "ns:a"})
        );
        let fields = View {
            fields: Some(FieldSelector::parse("thingId,_revision,features/f").unwrap()),
            ..all
        };
        assert_eq!(
            fields.render(&e).unwrap(),
            json!({"thingId": "ns:a", "_revision": 7, "features": {"f": {"properties": {"x": 1}}}})
        );
        assert!(
            fields
                .render(&ev("/attributes/a", Some(json!(1))))
                .is_none()
        );
        let feature = View {
            thing: Some(ThingId::new("ns:a").unwrap()),
            ids: None,
            feature: Some("f".into()),
            fields: None,
        };
        assert_eq!(feature.render(&e).unwrap(), json!({"properties": {"x": 1}}));
        assert!(
            feature
                .render(&ev("/features/g", Some(json!({}))))
                .is_none()
        );
        let mut other = e.clone();
        other.thing_id = ThingId::new("ns:b").unwrap();
        assert!(feature.render(&other).is_none());
    }
}
