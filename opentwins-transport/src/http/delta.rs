//! `GET /api/2/things/{thingId}/delta` and `GET /api/2/things/{thingId}/features/{featureId}/delta`:
//! the desired/reported delta ([`opentwins_core::delta`]) of the thing or feature as the caller
//! may read it. The thing or feature is retrieved through the engine with the caller's
//! authorization (so policies, `If-None-Match` and `condition` apply and errors are the
//! engine's: `things:thing.notfound`, `things:feature.notfound`), then the delta is computed.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use opentwins_core::delta::{feature_delta, thing_delta};
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, ThingCommand};
use opentwins_core::{Pointer, ThingId};
use serde_json::{Map, Value};

use super::error::ApiError;
use super::extract::{Command, DittoPath};
use super::request::{reply, timeout};
use super::{Caller, HttpState};

/// `/api/2/things/{thingId}/delta` → `{"features": {featureId: patch, ..}}` (`{}` in sync).
pub(super) async fn thing(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath(id): DittoPath<String>,
    command: Command,
) -> Response {
    delta(st, auth, &id, None, command).await
}

/// `/api/2/things/{thingId}/features/{featureId}/delta` → the merge patch for the feature's
/// `properties` (`{}` in sync).
pub(super) async fn feature(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath((id, f)): DittoPath<(String, String)>,
    command: Command,
) -> Response {
    delta(st, auth, &id, Some(&f), command).await
}

async fn delta(
    st: HttpState,
    auth: AuthContext,
    thing_id: &str,
    feature: Option<&str>,
    command: Command,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let id = ThingId::new(thing_id)?;
        let path = match feature {
            None => Pointer::root(),
            Some(f) => Pointer::from_segments(["features", f])?,
        };
        let mut cmd = ThingCommand::new(id, Action::Retrieve, path, None);
        cmd.headers = command.headers;
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
    result.unwrap_or_else(IntoResponse::into_response)
}
