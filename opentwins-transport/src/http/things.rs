//! `/api/2/things`: multi-retrieve and create, and every sub-resource of a thing with GET, PUT,
//! PATCH (merge patch) and DELETE, each turned into a [`ThingCommand`] for the engine.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, Headers, ThingCommand};
use opentwins_core::{Pointer, ThingId};
use serde_json::Value;

use super::error::ApiError;
use super::extract::{Command, EntityPath, EventStream, Json, MergePatch, OptionalJson};
use super::request::{Params, accepted, reply, timeout};
use super::{Caller, HttpState, sse};

/// `GET /api/2/things?ids=..` (or an SSE stream).
pub(super) async fn retrieve_many(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    EventStream(events): EventStream,
    params: Params,
) -> Response {
    if events {
        return sse::stream(st, auth, params, None, None);
    }
    let Some(ids) = params.list("ids") else {
        return ApiError::new(
            400,
            "gateway:query.param.missing",
            "The query parameter 'ids' is missing.",
            "List the things to retrieve: /api/2/things?ids=ns:a,ns:b; use /api/2/search/things to search.",
        )
        .into_response();
    };
    let found = (|| {
        let ids = ids
            .iter()
            .map(|i| ThingId::new(i))
            .collect::<Result<Vec<_>, _>>()?;
        let fields = params.fields()?;
        Ok::<_, ApiError>(st.twins().retrieve_things(&auth, &ids, fields.as_ref()))
    })();
    match found {
        Ok(items) => reply(200, Some(Value::Array(items)), &Headers::default(), None),
        Err(e) => e.into_response(),
    }
}

/// `POST /api/2/things`: a thing with a fresh id in `namespace` (default
/// `http.default_namespace`); a blank body creates an empty thing.
pub(super) async fn create(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    command: Command,
    OptionalJson(body): OptionalJson,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let value = body.unwrap_or_else(|| Value::Object(Default::default()));
        let namespace = command
            .params
            .get("namespace")
            .unwrap_or(&st.config().default_namespace);
        let id = ThingId::from_parts(namespace, &uuid::Uuid::new_v4().to_string())?;
        let mut cmd = ThingCommand::new(id.clone(), Action::Create, Pointer::root(), Some(value));
        cmd.headers = command.headers;
        execute(&st, &auth, cmd, || format!("/api/2/things/{id}")).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET` a thing or any part of it; with `Accept: text/event-stream` on the thing, on
/// `/api/2/things` or on a feature, its server-sent events.
pub(super) async fn retrieve(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    path: EntityPath,
    EventStream(events): EventStream,
    command: Command,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let (id, pointer) = target(&path)?;
        if events {
            let feature = match pointer.segments() {
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
            return Ok(sse::stream(st.clone(), auth.clone(), command.params, Some(id), feature));
        }
        let fields = command.params.fields()?;
        let mut cmd = ThingCommand::new(id, Action::Retrieve, pointer, None);
        cmd.headers = command.headers;
        cmd.fields = fields;
        execute(&st, &auth, cmd, String::new).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `PUT` a thing or any part of it (creates what is missing: 201 with `Location`).
pub(super) async fn modify(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    path: EntityPath,
    command: Command,
    Json(value): Json,
) -> Response {
    write(st, auth, path, command, Action::Modify, Some(value)).await
}

/// `PATCH` (JSON merge patch) a thing or any part of it.
pub(super) async fn merge(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    path: EntityPath,
    command: Command,
    MergePatch(value): MergePatch,
) -> Response {
    write(st, auth, path, command, Action::Merge, Some(value)).await
}

/// `DELETE` a thing or any part of it.
pub(super) async fn delete(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    path: EntityPath,
    command: Command,
) -> Response {
    write(st, auth, path, command, Action::Delete, None).await
}

async fn write(
    st: HttpState,
    auth: AuthContext,
    path: EntityPath,
    command: Command,
    action: Action,
    value: Option<Value>,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let (id, pointer) = target(&path)?;
        let mut cmd = ThingCommand::new(id, action, pointer, value);
        cmd.headers = command.headers;
        let location = || {
            if path.rest.is_empty() {
                format!("/api/2/things/{}", path.id)
            } else {
                format!("/api/2/things/{}/{}", path.id, path.rest)
            }
        };
        execute(&st, &auth, cmd, location).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The thing and the path in it a request addresses.
fn target(path: &EntityPath) -> Result<(ThingId, Pointer), ApiError> {
    let id = ThingId::new(&path.id)?;
    let pointer = Pointer::parse(&format!("/{}", path.rest))?;
    Ok((id, pointer))
}

async fn execute(
    st: &HttpState,
    auth: &AuthContext,
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
