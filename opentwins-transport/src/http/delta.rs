//! `GET /api/2/things/{thingId}/delta` and `GET /api/2/things/{thingId}/features/{featureId}/delta`:
//! the desired/reported delta ([`opentwins_core::delta`]) of the thing or feature as the caller
//! may read it. The thing or feature is retrieved through the engine with the caller's
//! authorization (so policies, `If-None-Match` and `condition` apply and errors are the
//! engine's: `things:thing.notfound`, `things:feature.notfound`), then the delta is computed.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use opentwins_core::delta::{feature_delta, thing_delta};
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, ThingCommand};
use opentwins_core::{Pointer, ThingId};
use serde_json::{Map, Value};

use super::error::ApiError;
use super::request::{Params, command_headers, reply, timeout};
use super::things::bad_path;
use super::{Caller, HttpState, RouteLabel};

/// `/api/2/things/{thingId}/delta` → `{"features": {featureId: patch, ..}}` (`{}` in sync).
pub(super) async fn thing(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    method: Method,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let label = RouteLabel("/api/2/things/{thingId}/delta");
    match path {
        Ok(Path(id)) => delta(st, auth, method, &id, None, query, headers, label).await,
        Err(e) => labelled(bad_path(e), label),
    }
}

/// `/api/2/things/{thingId}/features/{featureId}/delta` → the merge patch for the feature's
/// `properties` (`{}` in sync).
pub(super) async fn feature(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    method: Method,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let label = RouteLabel("/api/2/things/{thingId}/features/{featureId}/delta");
    match path {
        Ok(Path((id, f))) => delta(st, auth, method, &id, Some(&f), query, headers, label).await,
        Err(e) => labelled(bad_path(e), label),
    }
}

#[allow(clippy::too_many_arguments)]
async fn delta(
    st: HttpState,
    auth: AuthContext,
    method: Method,
    thing_id: &str,
    feature: Option<&str>,
    query: Option<String>,
    headers: HeaderMap,
    label: RouteLabel,
) -> Response {
    let result = async {
        if method != Method::GET {
            return Err(ApiError::method(method.as_str()));
        }
        let id = ThingId::new(thing_id)?;
        let path = match feature {
            None => Pointer::root(),
            Some(f) => Pointer::from_segments(["features", f])?,
        };
        let params = Params::parse(query.as_deref());
        let mut cmd = ThingCommand::new(id, Action::Retrieve, path, None);
        cmd.headers = command_headers(&headers, &params, false)?;
        let wait = timeout(&cmd.headers, st.config().default_timeout_ms);
        let outcome = tokio::time::timeout(wait, st.twins().apply(&auth, cmd))
            .await
            .map_err(|_| ApiError::timeout(wait.as_millis()))??;
        let r = outcome.response;
        let seen = r.value.unwrap_or(Value::Null);
        let delta = match feature {
            None => thing_delta(&seen),
            Some(_) => feature_delta(&seen).unwrap_or_else(|| Value::Object(Map::new())),
        };
        Ok(reply(200, Some(delta), &r.headers, None))
    }
    .await;
    labelled(result.unwrap_or_else(IntoResponse::into_response), label)
}

fn labelled(mut response: Response, label: RouteLabel) -> Response {
    response.extensions_mut().insert(label);
    response
}
