//! `/api/2/policies/{policyId}[/entries[/{label}[/subjects[/{id}]|/resources[/{type}:{path}]]]]`:
//! GET, PUT and DELETE as [`PolicyCommand`]s. A resource key such as `thing:/attributes` is the
//! rest of the URL path after `resources/`; the root key `thing:/` may be written `thing:` or
//! `thing:/`.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, PolicyCommand};
use opentwins_core::{Pointer, PolicyId};

use super::error::ApiError;
use super::request::{Params, accepted, command_headers, parse_json, read_body, reply, timeout};
use super::things::bad_path;
use super::{Caller, HttpState, RouteLabel};

/// `/api/2/policies/{policyId}`.
pub(super) async fn root(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    method: Method,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match path {
        Ok(Path(id)) => resource(st, auth, method, &id, "", query, headers, body).await,
        Err(e) => bad_path(e),
    }
}

/// `/api/2/policies/{policyId}/{*path}`.
pub(super) async fn sub(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    method: Method,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match path {
        Ok(Path((id, rest))) => resource(st, auth, method, &id, &rest, query, headers, body).await,
        Err(e) => bad_path(e),
    }
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    st: HttpState,
    auth: AuthContext,
    method: Method,
    policy_id: &str,
    rest: &str,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let label = route_label(rest);
    let result = async {
        let id = PolicyId::new(policy_id)?;
        // `resources/thing:/` names the root resource `thing:/`, which the engine addresses as
        // `resources/thing:`.
        let rest = if rest.ends_with(":/") {
            &rest[..rest.len() - 1]
        } else {
            rest
        };
        let path = Pointer::parse(&format!("/{rest}"))?;
        let params = Params::parse(query.as_deref());
        let action = match method {
            Method::GET => Action::Retrieve,
            Method::PUT => Action::Modify,
            Method::DELETE => Action::Delete,
            m => return Err(ApiError::method(m.as_str())),
        };
        let value = if action == Action::Modify {
            let bytes = read_body(body, &headers, st.config().max_body_bytes).await?;
            Some(parse_json(&bytes)?)
        } else {
            None
        };
        let h = command_headers(&headers, &params, action.is_write())?;
        let cmd = PolicyCommand {
            policy_id: id,
            action,
            path,
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
        let location = format!("/api/2/policies/{policy_id}{}", slash(rest));
        let location = (r.status == 201).then_some(location.as_str());
        Ok(reply(r.status, r.value, &r.headers, location))
    }
    .await;
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(RouteLabel(label));
    response
}

fn slash(rest: &str) -> String {
    if rest.is_empty() {
        String::new()
    } else {
        format!("/{rest}")
    }
}

fn route_label(rest: &str) -> &'static str {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        [] => "/api/2/policies/{policyId}",
        ["entries"] => "/api/2/policies/{policyId}/entries",
        ["entries", _] => "/api/2/policies/{policyId}/entries/{label}",
        ["entries", _, "subjects"] => "/api/2/policies/{policyId}/entries/{label}/subjects",
        ["entries", _, "subjects", ..] => {
            "/api/2/policies/{policyId}/entries/{label}/subjects/{subjectId}"
        }
        ["entries", _, "resources"] => "/api/2/policies/{policyId}/entries/{label}/resources",
        ["entries", _, "resources", ..] => {
            "/api/2/policies/{policyId}/entries/{label}/resources/{*resource}"
        }
        _ => "/api/2/policies/{policyId}/{*unknown}",
    }
}
