//! `/api/2/things`: multi-retrieve and create, and every sub-resource of a thing with GET, PUT,
//! PATCH (merge patch) and DELETE, each turned into a [`ThingCommand`] for the engine.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use opentwins_core::protocol::{Action, Headers, MERGE_PATCH_CONTENT_TYPE, ThingCommand};
use opentwins_core::{Level, Pointer, ThingId};
use serde_json::Value;

use super::error::ApiError;
use super::request::{
    Params, accepted, command_headers, content_type, parse_json, read_body, reply, timeout,
    wants_event_stream,
};
use super::{Caller, HttpState, RouteLabel, sse};

/// `GET /api/2/things?ids=..` (or an SSE stream), `POST /api/2/things`.
pub(super) async fn collection(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    method: Method,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    // The request's own header map, not a clone (as the `HeaderMap` extractor would make).
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let params = Params::parse(query.as_deref());
    let result = match method {
        Method::GET if wants_event_stream(&headers) => {
            return sse::stream(st, auth, params, None, None);
        }
        Method::GET => retrieve_many(&st, &auth, &params),
        Method::POST => create(&st, &auth, &params, &headers, body).await,
        m => Err(ApiError::method(m.as_str())),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn retrieve_many(
    st: &HttpState,
    auth: &opentwins_core::policy::AuthContext,
    params: &Params,
) -> Result<Response, ApiError> {
    let Some(ids) = params.list("ids") else {
        return Err(ApiError::new(
            400,
            "gateway:query.param.missing",
            "The query parameter 'ids' is missing.",
            "List the things to retrieve: /api/2/things?ids=ns:a,ns:b; use /api/2/search/things to search.",
        ));
    };
    let ids = ids
        .iter()
        .map(|i| ThingId::new(i))
        .collect::<Result<Vec<_>, _>>()?;
    let fields = params.fields()?;
    let items = st.twins().retrieve_things(auth, &ids, fields.as_ref());
    Ok(reply(
        200,
        Some(Value::Array(items)),
        &Headers::default(),
        None,
    ))
}

async fn create(
    st: &HttpState,
    auth: &opentwins_core::policy::AuthContext,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body, headers, st.config().max_body_bytes).await?;
    let value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        require_json(headers)?;
        parse_json(&bytes)?
    };
    let namespace = params
        .get("namespace")
        .unwrap_or(&st.config().default_namespace);
    let id = ThingId::from_parts(namespace, &uuid::Uuid::new_v4().to_string())?;
    let mut cmd = ThingCommand::new(id.clone(), Action::Create, Pointer::root(), Some(value));
    cmd.headers = command_headers(headers, params, true)?;
    execute(st, auth, cmd, || format!("/api/2/things/{id}")).await
}

/// `/api/2/things/{thingId}`.
pub(super) async fn root(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    method: Method,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    let thing_id = match path {
        Ok(Path(id)) => id,
        Err(e) => return bad_path(e),
    };
    let (parts, body) = req.into_parts();
    resource(st, auth, method, &thing_id, "", query, parts.headers, body).await
}

/// `/api/2/things/{thingId}/{*path}`.
pub(super) async fn sub(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    method: Method,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    let (thing_id, rest) = match path {
        Ok(Path(p)) => p,
        Err(e) => return bad_path(e),
    };
    let (parts, body) = req.into_parts();
    resource(
        st,
        auth,
        method,
        &thing_id,
        &rest,
        query,
        parts.headers,
        body,
    )
    .await
}

pub(super) fn bad_path(e: PathRejection) -> Response {
    ApiError::new(
        400,
        "gateway:request.invalid",
        format!("The request path is not valid: {e}."),
        "Check the encoding of the path.",
    )
    .into_response()
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    st: HttpState,
    auth: opentwins_core::policy::AuthContext,
    method: Method,
    thing_id: &str,
    rest: &str,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let pointer = Pointer::parse(&format!("/{rest}"));
    let label = pointer
        .as_ref()
        .ok()
        .and_then(|p| Level::of(p).ok())
        .map_or("/api/2/things/{thingId}/{*unknown}", route_label);
    let result = async {
        let id = ThingId::new(thing_id)?;
        let path = pointer?;
        let params = Params::parse(query.as_deref());
        let action = match method {
            Method::GET if wants_event_stream(&headers) => {
                let feature = match path.segments() {
                    [] => None,
                    [f, x] if f == "features" => Some(x.clone()),
                    _ => {
                        return Err(ApiError::new(
                            406,
                            "gateway:accept.notacceptable",
                            "Server-sent events are offered on /api/2/things, /api/2/things/{thingId} and /api/2/things/{thingId}/features/{featureId}.",
                            "Use Accept: application/json on this resource.",
                        ));
                    }
                };
                return Ok(sse::stream(st.clone(), auth.clone(), params, Some(id), feature));
            }
            Method::GET => Action::Retrieve,
            Method::PUT => Action::Modify,
            Method::PATCH => Action::Merge,
            Method::DELETE => Action::Delete,
            m => return Err(ApiError::method(m.as_str())),
        };
        let value = match action {
            Action::Modify | Action::Merge => {
                let bytes = read_body(body, &headers, st.config().max_body_bytes).await?;
                if action == Action::Merge {
                    let ct = content_type(&headers);
                    if ct.as_deref() != Some(MERGE_PATCH_CONTENT_TYPE) {
                        return Err(ApiError::media_type(ct.as_deref(), MERGE_PATCH_CONTENT_TYPE));
                    }
                } else {
                    require_json(&headers)?;
                }
                Some(parse_json(&bytes)?)
            }
            _ => None,
        };
        let mut cmd = ThingCommand::new(id, action, path, value);
        cmd.headers = command_headers(&headers, &params, action.is_write())?;
        if action == Action::Retrieve {
            cmd.fields = params.fields()?;
        }
        let location = || {
            if rest.is_empty() {
                format!("/api/2/things/{thing_id}")
            } else {
                format!("/api/2/things/{thing_id}/{rest}")
            }
        };
        execute(&st, &auth, cmd, location).await
    }
    .await;
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(RouteLabel(label));
    response
}

/// PUT bodies must be JSON when a content type is given (Ditto answers 415 otherwise).
pub(super) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    match content_type(headers) {
        None => Ok(()),
        Some(_) => require_json_type(headers),
    }
}

/// The body must be declared JSON (`application/json` or `…+json`).
pub(super) fn require_json_type(headers: &HeaderMap) -> Result<(), ApiError> {
    match content_type(headers) {
        Some(ct) if ct == "application/json" || ct.ends_with("+json") => Ok(()),
        ct => Err(ApiError::media_type(ct.as_deref(), "application/json")),
    }
}

async fn execute(
    st: &HttpState,
    auth: &opentwins_core::policy::AuthContext,
    cmd: ThingCommand,
    location: impl FnOnce() -> String,
) -> Result<Response, ApiError> {
    let wait = timeout(&cmd.headers, st.config().default_timeout_ms);
    // Only a command without response needs its headers afterwards (for the correlation id).
    let unanswered = (!cmd.headers.response_required()).then(|| cmd.headers.clone());
    let result = tokio::time::timeout(wait, st.twins().apply(auth, cmd)).await;
    if let Some(headers) = unanswered {
        if let Ok(Err(e)) = &result {
            tracing::debug!(error = %e, "command without response failed");
        }
        return Ok(accepted(&headers));
    }
    let outcome = result.map_err(|_| ApiError::timeout(wait.as_millis()))??;
    let r = outcome.response;
    let location = (r.status == StatusCode::CREATED.as_u16()).then(location);
    Ok(reply(r.status, r.value, &r.headers, location.as_deref()))
}

fn route_label(level: Level) -> &'static str {
    match level {
        Level::Thing => "/api/2/things/{thingId}",
        Level::PolicyId => "/api/2/things/{thingId}/policyId",
        Level::Definition => "/api/2/things/{thingId}/definition",
        Level::Attributes => "/api/2/things/{thingId}/attributes",
        Level::Attribute => "/api/2/things/{thingId}/attributes/{*path}",
        Level::Features => "/api/2/things/{thingId}/features",
        Level::Feature => "/api/2/things/{thingId}/features/{featureId}",
        Level::FeatureDefinition => "/api/2/things/{thingId}/features/{featureId}/definition",
        Level::Properties => "/api/2/things/{thingId}/features/{featureId}/properties",
        Level::Property => "/api/2/things/{thingId}/features/{featureId}/properties/{*path}",
        Level::DesiredProperties => {
            "/api/2/things/{thingId}/features/{featureId}/desiredProperties"
        }
        Level::DesiredProperty => {
            "/api/2/things/{thingId}/features/{featureId}/desiredProperties/{*path}"
        }
    }
}
