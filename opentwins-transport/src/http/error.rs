//! Errors as HTTP responses: the engine's errors rendered as Ditto JSON with their status, plus
//! the few errors only the HTTP layer knows (authentication, media type, method, route).

use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use opentwins_core::{Error, ErrorKind};
use serde_json::{Value, json};

/// An error answer in Ditto's JSON shape `{status, error, message, description}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    status: u16,
    body: Value,
    www_authenticate: Option<String>,
}

impl ApiError {
    /// An HTTP-layer error with its own code.
    pub(crate) fn new(
        status: u16,
        code: &str,
        message: impl Into<String>,
        description: &str,
    ) -> Self {
        ApiError {
            status,
            body: json!({
                "status": status,
                "error": code,
                "message": message.into(),
                "description": description,
            }),
            www_authenticate: None,
        }
    }

    /// 401 `gateway:authentication.failed` with a challenge.
    pub(crate) fn unauthenticated(why: &str, realm: &str) -> Self {
        ApiError {
            www_authenticate: Some(format!("Basic realm=\"{realm}\", Bearer realm=\"{realm}\"")),
            ..ApiError::new(
                401,
                "gateway:authentication.failed",
                format!("Unauthorized: {why}."),
                "Check your credentials: HTTP Basic or a bearer token.",
            )
        }
    }

    /// 415 `mediatype.unsupported`.
    pub(crate) fn media_type(got: Option<&str>, want: &str) -> Self {
        ApiError::new(
            415,
            "mediatype.unsupported",
            format!(
                "The Media-Type <{}> is not supported for this resource.",
                got.unwrap_or("none")
            ),
            &format!("Use the Content-Type <{want}>."),
        )
    }

    /// 405 `gateway:method.notallowed`.
    pub(crate) fn method(method: &str) -> Self {
        ApiError::new(
            405,
            "gateway:method.notallowed",
            format!("The method {method} is not allowed on this resource."),
            "Check the HTTP API documentation for the methods of this resource.",
        )
    }

    /// 404 `gateway:route.notfound` for a path that names no resource of the API.
    pub(crate) fn route(path: &str) -> Self {
        ApiError::new(
            404,
            "gateway:route.notfound",
            format!("The requested resource '{path}' was not found."),
            "Check the path: resources live below /api/2/things, /api/2/policies and /api/2/search/things.",
        )
    }

    /// 413 `things:thing.toolarge` for a body above the configured limit.
    pub(crate) fn too_large(limit: usize) -> Self {
        Error::new(
            ErrorKind::ThingTooLarge,
            format!("The request body is larger than the allowed {limit} bytes."),
        )
        .with_description("Send a smaller body, or raise http.max_body_bytes.")
        .into()
    }

    /// 408 `gateway:command.timeout`.
    pub(crate) fn timeout(ms: u128) -> Self {
        ApiError {
            status: 408,
            body: crate::protocol::timeout_error(ms),
            www_authenticate: None,
        }
    }

    /// The HTTP status.
    pub(crate) fn status(&self) -> u16 {
        self.status
    }

    /// The Ditto error JSON.
    pub(crate) fn body(&self) -> &Value {
        &self.body
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError {
            status: e.status(),
            body: e.to_json(),
            www_authenticate: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // 304 carries no body.
        let mut response = if status == StatusCode::NOT_MODIFIED {
            status.into_response()
        } else {
            let mut r = (status, self.body.to_string()).into_response();
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        };
        if let Some(challenge) = self.www_authenticate
            && let Ok(v) = HeaderValue::from_str(&challenge)
        {
            response.headers_mut().insert(WWW_AUTHENTICATE, v);
        }
        response
    }
}
