//! `/api/2/policies/{policyId}[/entries[/{label}[/subjects[/{id}]|/resources[/{type}:{path}]]]]`:
//! GET, PUT and DELETE as [`PolicyCommand`]s. A resource key such as `thing:/attributes` is the
//! rest of the URL path after `resources/`; the root key `thing:/` may be written `thing:` or
//! `thing:/`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, PolicyCommand};
use opentwins_core::{Pointer, PolicyId};
use serde_json::Value;

use super::error::ApiError;
use super::extract::{Command, EntityPath, Json};
use super::request::{accepted, reply, timeout};
use super::{Caller, HttpState};

/// `GET` a policy or any part of it.
pub(super) async fn retrieve(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    path: EntityPath,
    command: Command,
) -> Response {
    apply(st, auth, path, command, Action::Retrieve, None).await
}

/// `PUT` a policy or any part of it.
pub(super) async fn modify(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    path: EntityPath,
    command: Command,
    Json(value): Json,
) -> Response {
    apply(st, auth, path, command, Action::Modify, Some(value)).await
}

/// `DELETE` a policy or any part of it.
pub(super) async fn delete(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    path: EntityPath,
    command: Command,
) -> Response {
    apply(st, auth, path, command, Action::Delete, None).await
}

async fn apply(
    st: HttpState,
    auth: AuthContext,
    path: EntityPath,
    command: Command,
    action: Action,
    value: Option<Value>,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let id = PolicyId::new(&path.id)?;
        // `resources/thing:/` names the root resource `thing:/`, which the engine addresses as
        // `resources/thing:`.
        let rest = path.rest.strip_suffix('/').filter(|r| r.ends_with(':'));
        let rest = rest.unwrap_or(&path.rest);
        let pointer = Pointer::parse(&format!("/{rest}"))?;
        let h = command.headers;
        let cmd = PolicyCommand {
            policy_id: id,
            action,
            path: pointer,
            value,
            headers: h.clone(),
        };
        let wait = timeout(&h, st.config().default_timeout_ms);
        let result = tokio::time::timeout(wait, st.twins().apply_policy(&auth, cmd)).await;
        if !h.response_required() {
            return Ok(accepted(&h));
        }
        let r = result
            .map_err(|_| ApiError::timeout(wait.as_millis()))??
            .response;
        let location = format!("/api/2/policies/{}{}", path.id, slash(rest));
        let location = (r.status == 201).then_some(location.as_str());
        Ok(reply(r.status, r.value, &r.headers, location))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

fn slash(rest: &str) -> String {
    if rest.is_empty() {
        String::new()
    } else {
        format!("/{rest}")
    }
}
