//! `/api/2/history/things/{thingId}[/{path}]`: the recorded history of a thing
//! ([`opentwins_core::history`]), when the state has one ([`HttpState::with_history`]).
//!
//! - `GET /api/2/history/things/{thingId}` lists the recorded paths the caller may read, with
//!   their point count and first/last time.
//! - `GET /api/2/history/things/{thingId}/{path}?from=&to=&limit=&step=&order=&cursor=` answers
//!   one path's raw points or, with `step`, its buckets.
//!
//! Access follows the thing's *current* policy: the caller must be able to READ the whole path
//! (listing: each path it is shown). Only the current incarnation's points are answered: a
//! thing deleted and created again starts a new history (the old points stay until retention
//! removes them, and are never shown under the new thing). A thing that does not exist (any more) is 404
//! `things:thing.notfound`, like a path the caller may not read (404 at the path's level).
//! Bad parameters are 400 `history:query.invalid`; without a history, every route is 404
//! `history:history.notenabled`. docs/history.md has the details.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use opentwins_core::history::{
    History, HistoryError, HistoryQuery, Order, QueryResult, parse_step, parse_time,
};
use opentwins_core::policy::{AuthContext, Permission, Policy, ResourceType};
use opentwins_core::protocol::Headers;
use opentwins_core::{Error, Level, Pointer, ThingId, Timestamp};
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::extract::DittoPath;
use super::request::{Params, off_workers, reply};
use super::{Caller, HttpState};

/// `GET /api/2/history/things/{thingId}`: `{"thingId", "paths": [{"path", "count", "first",
/// "last", "removed"?}]}`.
pub(super) async fn thing(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath(id): DittoPath<String>,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let history = history(&st)?;
        let id = ThingId::new(&id)?;
        let policy = readable_thing(&st, &auth, &id)?;
        let listed = {
            let id = id.clone();
            off_workers(move || Ok(history.current_paths(&id, &Pointer::root())?)).await?
        };
        let paths: Vec<Value> = listed
            .iter()
            .filter(|s| may_read(&auth, policy.as_deref(), &s.path))
            .map(|s| s.to_json())
            .collect();
        let body = json!({"thingId": id.as_str(), "paths": paths});
        Ok(reply(200, Some(body), &Headers::default(), None))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/2/history/things/{thingId}/{path}`: `{"thingId", "path", "from", "to", "step"?,
/// "order", "points" | "buckets", "next"?}`.
pub(super) async fn series(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath((id, rest)): DittoPath<(String, String)>,
    params: Params,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let history = history(&st)?;
        let id = ThingId::new(&id)?;
        let pointer = Pointer::parse(&rest)?;
        let q = parse_query(&params, Timestamp::now())?;
        let policy = readable_thing(&st, &auth, &id)?;
        if !may_read(&auth, policy.as_deref(), &pointer) {
            let level = Level::of(&pointer)?;
            return Err(Error::not_found(level, id.as_str(), &pointer.to_string()).into());
        }
        let answer = {
            let (id, pointer, mut q) = (id.clone(), pointer.clone(), q.clone());
            off_workers(move || {
                // Points from before the thing was last deleted belong to its predecessor.
                q.after = history.deleted_at(&id)?;
                Ok(history.query(&id, &pointer, &q)?)
            })
            .await?
        };
        let time = |t: Option<Timestamp>| t.map_or(Value::Null, |t| Value::String(t.to_string()));
        let mut body = Map::new();
        body.insert("thingId".into(), Value::String(id.to_string()));
        body.insert("path".into(), Value::String(pointer.to_string()));
        body.insert("from".into(), time(q.from));
        body.insert("to".into(), time(q.to));
        if let Some(step) = q.step {
            body.insert(
                "step".into(),
                Value::String(humantime::format_duration(step).to_string()),
            );
        }
        body.insert("order".into(), Value::String(q.order.to_string()));
        let next = answer.next();
        match answer {
            QueryResult::Points { points, .. } => {
                let points = points.iter().map(|p| p.to_json()).collect();
                body.insert("points".into(), Value::Array(points));
            }
            QueryResult::Buckets { buckets, .. } => {
                let buckets = buckets.iter().map(|b| b.to_json()).collect();
                body.insert("buckets".into(), Value::Array(buckets));
            }
        }
        if let Some(next) = next {
            body.insert("next".into(), Value::String(next.to_string()));
        }
        Ok(reply(
            200,
            Some(Value::Object(body)),
            &Headers::default(),
            None,
        ))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The query parameters: `from`, `to` (RFC 3339, `now`, or `-1h`), `limit`, `step`, `order`,
/// `cursor`. Others are ignored.
fn parse_query(params: &Params, now: Timestamp) -> Result<HistoryQuery, HistoryError> {
    let mut q = HistoryQuery::default();
    if let Some(from) = params.get("from") {
        q.from = Some(parse_time(from, now)?);
    }
    if let Some(to) = params.get("to") {
        q.to = Some(parse_time(to, now)?);
    }
    if let Some(limit) = params.get("limit") {
        q.limit = limit.trim().parse().map_err(|_| {
            HistoryError::InvalidQuery(format!(
                "The limit '{limit}' is not valid: it must be a number between 1 and {}.",
                opentwins_core::history::MAX_LIMIT
            ))
        })?;
    }
    if let Some(step) = params.get("step") {
        q.step = Some(parse_step(step)?);
    }
    if let Some(order) = params.get("order") {
        q.order = order.parse::<Order>()?;
    }
    if let Some(cursor) = params.get("cursor") {
        q.cursor = Some(cursor.parse()?);
    }
    q.validate()?;
    Ok(q)
}

/// The history, or 404 `history:history.notenabled`.
fn history(st: &HttpState) -> Result<Arc<dyn History>, ApiError> {
    st.history().cloned().ok_or_else(|| {
        ApiError::new(
            404,
            "history:history.notenabled",
            "This instance keeps no history.",
            "Enable the history in the instance's configuration to record and query property time series.",
        )
    })
}

/// The thing's current policy, if the caller may read something of the thing; otherwise (or
/// when the thing does not exist) 404 `things:thing.notfound`.
fn readable_thing(
    st: &HttpState,
    auth: &AuthContext,
    id: &ThingId,
) -> Result<Option<Arc<Policy>>, ApiError> {
    let not_found = || ApiError::from(Error::not_found(Level::Thing, id.as_str(), "/"));
    let thing = st.twins().get_thing(id).ok_or_else(not_found)?;
    let policy = st.twins().get_policy(thing.policy_id());
    let readable = auth.is_system()
        || policy.as_deref().is_some_and(|p| {
            p.has_partial(
                auth,
                ResourceType::Thing,
                &Pointer::root(),
                Permission::Read,
            )
        });
    if readable {
        Ok(policy)
    } else {
        Err(not_found())
    }
}

/// Whether the caller may read everything at and below `path`.
fn may_read(auth: &AuthContext, policy: Option<&Policy>, path: &Pointer) -> bool {
    auth.is_system()
        || policy
            .is_some_and(|p| p.has_unrestricted(auth, ResourceType::Thing, path, Permission::Read))
}

impl From<HistoryError> for ApiError {
    fn from(e: HistoryError) -> Self {
        ApiError::new(e.status(), e.code(), e.to_string(), e.description())
    }
}
