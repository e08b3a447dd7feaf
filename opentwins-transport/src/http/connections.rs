//! `/api/2/connections`: the links of this instance (as Ditto's connectivity service calls them),
//! managed and inspected at run time, and the inbox HTTP peers post their updates to.
//!
//! | route | method | what |
//! |---|---|---|
//! | `/api/2/connections` | GET | every link: `{config, status}` (passwords and tokens hidden) |
//! | `/api/2/connections/{name}` | GET | one link |
//! | `/api/2/connections/{name}` | PUT | add or replace a link (body: its configuration) |
//! | `/api/2/connections/{name}` | DELETE | stop a link and drop its outbox |
//! | `/api/2/connections/{name}/inbox` | POST | a peer's update (a Ditto merge command with clocks) |
//!
//! Reading the links (configurations redacted, status) is open to every caller the API lets in;
//! adding, replacing and removing them needs one of `HttpConfig::admin_subjects` (a link can
//! copy every later write elsewhere). Posting to an inbox needs any credentials, and the update
//! is applied under the caller's subjects, so policies decide.

use crate::link;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use opentwins_core::policy::AuthContext;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{DittoPath, Json, RawBody};
use super::{Caller, HttpState};

/// `GET /api/2/connections`.
pub(super) async fn list(
    State(st): State<HttpState>,
    // Any caller the API lets in may read.
    _caller: Caller,
) -> Response {
    let links = match st.links().ok_or_else(no_links) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    let all: Vec<Value> = links
        .configs()
        .into_iter()
        .zip(links.status())
        .map(|(c, s)| json!({"config": redacted(&c), "status": s}))
        .collect();
    json_response(StatusCode::OK, &Value::Array(all))
}

/// `GET /api/2/connections/{name}`.
pub(super) async fn get_one(
    State(st): State<HttpState>,
    _caller: Caller,
    DittoPath(name): DittoPath<String>,
) -> Response {
    let found = (|| {
        let links = st.links().ok_or_else(no_links)?;
        let config = links
            .configs()
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| not_found(&name))?;
        let status = links.status().into_iter().find(|s| s.name == name);
        Ok::<_, ApiError>(json!({"config": redacted(&config), "status": status}))
    })();
    match found {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => e.into_response(),
    }
}

/// `PUT /api/2/connections/{name}`: adds or replaces a link (administrators only).
pub(super) async fn put_one(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath(name): DittoPath<String>,
    Json(mut value): Json,
) -> Response {
    let result: Result<StatusCode, ApiError> = async {
        let links = admin(&st, &auth)?;
        if let Value::Object(m) = &mut value {
            m.entry("name")
                .or_insert_with(|| Value::String(name.clone()));
        }
        let config: link::LinkConfig = serde_json::from_value(value)
            .map_err(|e| invalid(format!("The connection configuration is invalid: {e}.")))?;
        if config.name != name {
            return Err(invalid(format!(
                "The name in the body '{}' differs from the name in the path '{name}'.",
                config.name
            )));
        }
        let existed = links.configs().iter().any(|c| c.name == name);
        links
            .add(config)
            .await
            .map_err(|e| invalid(e.to_string()))?;
        Ok(if existed {
            StatusCode::NO_CONTENT
        } else {
            StatusCode::CREATED
        })
    }
    .await;
    result.map_or_else(IntoResponse::into_response, IntoResponse::into_response)
}

/// `DELETE /api/2/connections/{name}`: stops a link and drops its outbox (administrators only).
pub(super) async fn delete_one(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath(name): DittoPath<String>,
) -> Response {
    let result: Result<StatusCode, ApiError> = async {
        let links = admin(&st, &auth)?;
        let existed = links
            .delete(&name)
            .await
            .map_err(|e| ApiError::from(opentwins_core::Error::unavailable(e)))?;
        if existed {
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err(not_found(&name))
        }
    }
    .await;
    result.map_or_else(IntoResponse::into_response, IntoResponse::into_response)
}

/// `POST /api/2/connections/{name}/inbox`: a peer's update, applied under the caller's subjects.
pub(super) async fn inbox(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath(name): DittoPath<String>,
    RawBody(bytes): RawBody,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let links = st.links().ok_or_else(no_links)?;
        let applied = links.receive(&name, Some(&auth), &bytes).await?;
        Ok(json_response(
            StatusCode::OK,
            &json!({"applied": applied.changes, "revision": applied.revision}),
        ))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /api/2/connections/{name}/digest`: a peer's anti-entropy request (JSON), answered
/// with the things that differ here (docs/distribution.md, "Anti-entropy").
pub(super) async fn digest(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath(name): DittoPath<String>,
    RawBody(bytes): RawBody,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let links = st.links().ok_or_else(no_links)?;
        let reply = links.digest(&name, Some(&auth), &bytes).await?;
        Ok((
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            reply,
        )
            .into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

fn admin<'a>(st: &'a HttpState, auth: &AuthContext) -> Result<&'a link::Links, ApiError> {
    let links = st.links().ok_or_else(no_links)?;
    let allowed = st
        .config()
        .admin_subjects
        .iter()
        .any(|s| auth.subjects().iter().any(|a| a == s));
    if !allowed {
        return Err(ApiError::new(
            403,
            "connectivity:connection.notallowed",
            "Managing connections needs an administrator subject.",
            "Add the caller's subject to http.admin_subjects.",
        ));
    }
    Ok(links)
}

fn no_links() -> ApiError {
    ApiError::new(
        404,
        "connectivity:connections.unavailable",
        "This instance runs no links.",
        "Start the instance with links enabled.",
    )
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        404,
        "connectivity:connection.notfound",
        format!("The connection '{name}' does not exist."),
        "List the connections with GET /api/2/connections.",
    )
}

fn invalid(message: String) -> ApiError {
    ApiError::new(
        400,
        "connectivity:connection.configuration.invalid",
        message,
        "See docs/distribution.md for the fields of a connection.",
    )
}

/// The configuration without passwords, tokens and the TLS key's password.
fn redacted(config: &link::LinkConfig) -> Value {
    let mut v = serde_json::to_value(config).unwrap_or(Value::Null);
    for secret in ["/peer/password", "/peer/token", "/peer/tls/key_password"] {
        if let Some(s) = v.pointer_mut(secret)
            && !s.is_null()
        {
            *s = Value::String("***".into());
        }
    }
    v
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let config: link::LinkConfig = serde_json::from_value(json!({"name": "up", "peer": {
            "kind": "mqtt", "url": "mqtts://b:8883", "publish": "p", "username": "edge-a",
            "password": "pw-secret", "tls": {"ca_file": "/ca.crt", "key_password": "key-secret"}}}))
        .unwrap();
        let v = redacted(&config);
        assert_eq!(v["peer"]["password"], "***");
        assert_eq!(v["peer"]["tls"]["key_password"], "***");
        assert_eq!(v["peer"]["username"], "edge-a");
        assert_eq!(v["peer"]["tls"]["ca_file"], "/ca.crt");
        assert!(!v.to_string().contains("secret"), "{v}");
        let config: link::LinkConfig = serde_json::from_value(json!({"name": "up", "peer": {
            "kind": "http", "url": "http://h", "remote_link": "e", "token": "tok-secret"}}))
        .unwrap();
        let v = redacted(&config);
        assert_eq!(v["peer"]["token"], "***");
        assert!(v["peer"]["password"].is_null());
    }
}
