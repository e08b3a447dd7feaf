//! `/api/2/types` and `/api/2/twins`: composition as the OpenTwins extended API offers it
//! ([`opentwins_core::compose`], docs/composition.md), on when `HttpConfig::composition` is set.
//!
//! | route | method | what |
//! |---|---|---|
//! | `/api/2/types` | GET | the types the caller may read (`filter`, `option`, `fields`) |
//! | `/api/2/types/{typeId}` | GET, PUT, DELETE | a type (PUT creates or replaces, keeping its composition) |
//! | `/api/2/types/{typeId}/children` | GET | `[{"typeId", "count"}]` |
//! | `/api/2/types/{typeId}/children/{childTypeId}` | PUT, DELETE | add (body: the count, default 1) or remove a child type |
//! | `/api/2/types/{typeId}/parents` | GET | the types that use it, with their counts |
//! | `/api/2/types/{typeId}/tree` | GET | the type unfolded into its child types |
//! | `/api/2/types/{typeId}/instantiate` | POST | create the twin tree (body: `{"thingId", "policyId"?, ...patch}`) |
//! | `/api/2/twins` | GET | the root twins the caller may read |
//! | `/api/2/twins/{twinId}` | GET, DELETE | a twin; DELETE with `recursive=true` deletes its subtree |
//! | `/api/2/twins/{twinId}/children` | GET | its children (`filter`, `option`, `fields`) |
//! | `/api/2/twins/{twinId}/parent` | GET, DELETE | its parent's id; unlink |
//! | `/api/2/twins/{twinId}/parent/{parentId}` | PUT | link below a parent |
//! | `/api/2/twins/{twinId}/tree` | GET | the twin and its descendants |
//! | `/api/2/twins/{twinId}/duplicate` | POST | copy (body as for instantiate; `recursive`, default true) |
//!
//! Every operation runs as the caller. Operations that write run in their own task, so a client
//! that goes away or times out (408) does not cut a multi-thing operation in half.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use opentwins_core::compose::{ComposeError, NewTree, search_json};
use opentwins_core::protocol::Headers;
use opentwins_core::{Error, FieldSelector, ThingId};
use serde_json::Value;

use super::error::ApiError;
use super::request::{Params, command_headers, parse_json, read_body, reply, timeout};
use super::things::require_json;
use super::{Caller, HttpState, RouteLabel};

/// What every composition route reads from its request.
struct Req {
    method: Method,
    params: Params,
    headers: HeaderMap,
    /// The command headers (correlation id, timeout) echoed in the answer.
    command: Headers,
    body: Body,
    wait: Duration,
}

impl Req {
    fn new(st: &HttpState, req: Request) -> Result<Req, ApiError> {
        let (parts, body) = req.into_parts();
        let params = Params::parse(parts.uri.query());
        let command = command_headers(&parts.headers, &params, false)?;
        let wait = timeout(&command, st.config().default_timeout_ms);
        Ok(Req {
            method: parts.method,
            params,
            headers: parts.headers,
            command,
            body,
            wait,
        })
    }

    /// The JSON body; `None` when it is empty.
    async fn json(self, st: &HttpState) -> Result<(Req, Option<Value>), ApiError> {
        let Req {
            method,
            params,
            headers,
            command,
            body,
            wait,
        } = self;
        let bytes = read_body(body, &headers, st.config().max_body_bytes).await?;
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            require_json(&headers)?;
            Some(parse_json(&bytes)?)
        };
        let rest = Req {
            method,
            params,
            headers,
            command,
            body: Body::empty(),
            wait,
        };
        Ok((rest, value))
    }

    fn fields(&self) -> Result<Option<FieldSelector>, ApiError> {
        self.params.fields()
    }

    /// A boolean query parameter (`true` / `false`).
    fn flag(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.params.get(name) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(ApiError::new(
                400,
                "gateway:query.param.invalid",
                format!("The query parameter '{name}' must be 'true' or 'false', not '{other}'."),
                "Check the query parameters.",
            )),
        }
    }

    fn only(&self, allowed: &[Method]) -> Result<(), ApiError> {
        if allowed.contains(&self.method) {
            Ok(())
        } else {
            Err(ApiError::method(self.method.as_str()))
        }
    }

    fn ok(&self, status: u16, value: Option<Value>, location: Option<&str>) -> Response {
        reply(status, value, &self.command, location)
    }
}

fn api(e: ComposeError) -> ApiError {
    Error::from(e).into()
}

fn id(s: &str) -> Result<ThingId, ApiError> {
    Ok(ThingId::new(s)?)
}

fn path_error(e: PathRejection) -> ApiError {
    ApiError::new(
        400,
        "gateway:request.invalid",
        format!("The request path is not valid: {e}."),
        "Check the encoding of the path.",
    )
}

/// Runs an operation in its own task and waits for it at most `wait`.
async fn detached<T, F>(wait: Duration, op: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, ComposeError>> + Send + 'static,
{
    match tokio::time::timeout(wait, tokio::spawn(op)).await {
        Err(_) => Err(ApiError::timeout(wait.as_millis())),
        Ok(Err(join)) => {
            tracing::error!(error = %join, "a composition operation panicked");
            Err(ApiError::new(
                500,
                "gateway:internal.error",
                "The operation failed unexpectedly.",
                "Retrieve the things involved to see what was applied.",
            ))
        }
        Ok(Ok(result)) => result.map_err(api),
    }
}

/// The answer, labelled with the route template for metrics.
fn finish(label: &'static str, result: Result<Response, ApiError>) -> Response {
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(RouteLabel(label));
    response
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// A search answer for one page, from a synchronous listing.
fn page(
    req: &Req,
    list: impl FnOnce(
        Option<&str>,
        Option<&str>,
        Option<&FieldSelector>,
    ) -> Result<opentwins_core::engine::SearchResult, ComposeError>,
) -> Result<Response, ApiError> {
    req.only(&[Method::GET])?;
    let fields = req.fields()?;
    let result = list(
        req.params.get("filter"),
        req.params.get("option"),
        fields.as_ref(),
    )
    .map_err(api)?;
    Ok(req.ok(200, Some(search_json(result)), None))
}

/// The caller's request body as a [`NewTree`].
fn new_tree(body: Option<Value>) -> Result<NewTree, ApiError> {
    let body = body.ok_or_else(|| {
        api(ComposeError::Invalid(
            "The body must name the new root twin: {\"thingId\": \"ns:name\"}.".into(),
        ))
    })?;
    NewTree::from_body(body).map_err(api)
}

// ---- types ----

/// `GET /api/2/types`.
pub(super) async fn types(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    req: Request,
) -> Response {
    let result = Req::new(&st, req)
        .and_then(|r| page(&r, |f, o, s| st.composer().list_types(&auth, f, o, s)));
    finish("/api/2/types", result)
}

/// `/api/2/types/{typeId}`: GET, PUT, DELETE.
pub(super) async fn type_one(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    let result = async {
        let Path(t) = path.map_err(path_error)?;
        let r = Req::new(&st, req)?;
        r.only(&[Method::GET, Method::PUT, Method::DELETE])?;
        let t = id(&t)?;
        let c = st.composer().clone();
        match r.method {
            Method::GET => {
                let fields = r.fields()?;
                let v = detached(r.wait, async move {
                    c.get_type(&auth, &t, fields.as_ref()).await
                })
                .await?;
                Ok(r.ok(200, Some(v), None))
            }
            Method::PUT => {
                let (r, body) = r.json(&st).await?;
                let body = body.ok_or_else(|| {
                    api(ComposeError::Invalid("A type needs a JSON body.".into()))
                })?;
                let location = format!("/api/2/types/{t}");
                let out =
                    detached(r.wait, async move { c.put_type(&auth, &t, body).await }).await?;
                let res = out.response;
                let location = (res.status == 201).then_some(location.as_str());
                let headers = Headers {
                    etag: res.headers.etag,
                    ..r.command.clone()
                };
                Ok(reply(res.status, res.value, &headers, location))
            }
            _ => {
                detached(r.wait, async move { c.delete_type(&auth, &t).await }).await?;
                Ok(r.ok(204, None, None))
            }
        }
    }
    .await;
    finish("/api/2/types/{typeId}", result)
}

/// `GET /api/2/types/{typeId}/children`.
pub(super) async fn type_children(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    let result = async {
        let Path(t) = path.map_err(path_error)?;
        let r = Req::new(&st, req)?;
        r.only(&[Method::GET])?;
        let (t, c) = (id(&t)?, st.composer().clone());
        let list = detached(r.wait, async move { c.type_children(&auth, &t).await }).await?;
        Ok(r.ok(200, Some(json(&list)), None))
    }
    .await;
    finish("/api/2/types/{typeId}/children", result)
}

/// `/api/2/types/{typeId}/children/{childTypeId}`: PUT (body: the count), DELETE.
pub(super) async fn type_child(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    req: Request,
) -> Response {
    let result = async {
        let Path((t, child)) = path.map_err(path_error)?;
        let r = Req::new(&st, req)?;
        r.only(&[Method::PUT, Method::DELETE])?;
        let (t, child, c) = (id(&t)?, id(&child)?, st.composer().clone());
        if r.method == Method::DELETE {
            detached(r.wait, async move {
                c.remove_type_child(&auth, &t, &child).await
            })
            .await?;
            return Ok(r.ok(204, None, None));
        }
        let (r, body) = r.json(&st).await?;
        let count = match body {
            None => 1,
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    api(ComposeError::Invalid(format!(
                        "The body must be the number of child twins, a positive integer, not {v}."
                    )))
                })?,
        };
        let out = detached(r.wait, async move {
            c.set_type_child(&auth, &t, &child, count).await
        })
        .await?;
        let res = out.response;
        Ok(r.ok(res.status, res.value, None))
    }
    .await;
    finish("/api/2/types/{typeId}/children/{childTypeId}", result)
}

/// `GET /api/2/types/{typeId}/parents`.
pub(super) async fn type_parents(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    let result = async {
        let Path(t) = path.map_err(path_error)?;
        let r = Req::new(&st, req)?;
        r.only(&[Method::GET])?;
        let (t, c) = (id(&t)?, st.composer().clone());
        let list = detached(r.wait, async move { c.type_parents(&auth, &t).await }).await?;
        Ok(r.ok(200, Some(json(&list)), None))
    }
    .await;
    finish("/api/2/types/{typeId}/parents", result)
}

/// `GET /api/2/types/{typeId}/tree`.
pub(super) async fn type_tree(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    let result = async {
        let Path(t) = path.map_err(path_error)?;
        let r = Req::new(&st, req)?;
        r.only(&[Method::GET])?;
        let (t, c) = (id(&t)?, st.composer().clone());
        let tree = detached(r.wait, async move { c.type_tree(&auth, &t).await }).await?;
        Ok(r.ok(200, Some(json(&tree)), None))
    }
    .await;
    finish("/api/2/types/{typeId}/tree", result)
}

/// `POST /api/2/types/{typeId}/instantiate`.
pub(super) async fn instantiate(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    let result = async {
        let Path(t) = path.map_err(path_error)?;
        let r = Req::new(&st, req)?;
        r.only(&[Method::POST])?;
        let (t, c) = (id(&t)?, st.composer().clone());
        let (r, body) = r.json(&st).await?;
        let spec = new_tree(body)?;
        let created = detached(r.wait, async move { c.instantiate(&auth, &t, spec).await }).await?;
        let location = format!("/api/2/twins/{}", created.thing_id);
        Ok(r.ok(201, Some(json(&created)), Some(&location)))
    }
    .await;
    finish("/api/2/types/{typeId}/instantiate", result)
}

// ---- twins ----

/// `GET /api/2/twins`: the root twins.
pub(super) async fn twins(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    req: Request,
) -> Response {
    let result = Req::new(&st, req)
        .and_then(|r| page(&r, |f, o, s| st.composer().list_roots(&auth, f, o, s)));
    finish("/api/2/twins", result)
}

/// `/api/2/twins/{twinId}`: GET, DELETE (`recursive=true` for the subtree).
pub(super) async fn twin_one(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    let result = async {
        let Path(t) = path.map_err(path_error)?;
        let r = Req::new(&st, req)?;
        r.only(&[Method::GET, Method::DELETE])?;
        let (t, c) = (id(&t)?, st.composer().clone());
        if r.method == Method::GET {
            let fields = r.fields()?;
            let v = detached(r.wait, async move {
                c.get_twin(&auth, &t, fields.as_ref()).await
            })
            .await?;
            return Ok(r.ok(200, Some(v), None));
        }
        let recursive = r.flag("recursive", false)?;
        let done = detached(
            r.wait,
            async move { c.delete_twin(&auth, &t, recursive).await },
        )
        .await?;
        Ok(r.ok(200, Some(json(&done)), None))
    }
    .await;
    finish("/api/2/twins/{twinId}", result)
}

/// `GET /api/2/twins/{twinId}/children`.
pub(super) async fn twin_children(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    let result = async {
        let Path(t) = path.map_err(path_error)?;
        let r = Req::new(&st, req)?;
        r.only(&[Method::GET])?;
        let (t, c) = (id(&t)?, st.composer().clone());
        let fields = r.fields()?;
        let (filter, option) = (
            r.params.get("filter").map(str::to_owned),
            r.params.get("option").map(str::to_owned),
        );
        let found = detached(r.wait, async move {
            c.children(
                &auth,
                &t,
                filter.as_deref(),
                option.as_deref(),
                fields.as_ref(),
            )
            .await
        })
        .await?;
        Ok(r.ok(200, Some(search_json(found)), None))
    }
    .await;
    finish("/api/2/twins/{twinId}/children", result)
}

/// `/api/2/twins/{twinId}/parent`: GET (the parent's id), DELETE (unlink).
pub(super) async fn twin_parent(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    let result = async {
        let Path(t) = path.map_err(path_error)?;
        let r = Req::new(&st, req)?;
        r.only(&[Method::GET, Method::DELETE])?;
        let (t, c) = (id(&t)?, st.composer().clone());
        if r.method == Method::GET {
            let p = detached(r.wait, async move { c.parent(&auth, &t).await }).await?;
            return Ok(r.ok(200, Some(Value::String(p.to_string())), None));
        }
        detached(r.wait, async move { c.unlink(&auth, &t).await }).await?;
        Ok(r.ok(204, None, None))
    }
    .await;
    finish("/api/2/twins/{twinId}/parent", result)
}

/// `PUT /api/2/twins/{twinId}/parent/{parentId}`: link.
pub(super) async fn twin_link(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    req: Request,
) -> Response {
    let result = async {
        let Path((t, parent)) = path.map_err(path_error)?;
        let r = Req::new(&st, req)?;
        r.only(&[Method::PUT])?;
        let (t, parent, c) = (id(&t)?, id(&parent)?, st.composer().clone());
        let out = detached(r.wait, async move { c.link(&auth, &t, &parent).await }).await?;
        let res = out.response;
        Ok(r.ok(res.status, res.value, None))
    }
    .await;
    finish("/api/2/twins/{twinId}/parent/{parentId}", result)
}

/// `GET /api/2/twins/{twinId}/tree`.
pub(super) async fn twin_tree(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    let result = async {
        let Path(t) = path.map_err(path_error)?;
        let r = Req::new(&st, req)?;
        r.only(&[Method::GET])?;
        let (t, c) = (id(&t)?, st.composer().clone());
        let tree = detached(r.wait, async move { c.twin_tree(&auth, &t).await }).await?;
        Ok(r.ok(200, Some(json(&tree)), None))
    }
    .await;
    finish("/api/2/twins/{twinId}/tree", result)
}

/// `POST /api/2/twins/{twinId}/duplicate` (`recursive`, default true).
pub(super) async fn duplicate(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    let result = async {
        let Path(t) = path.map_err(path_error)?;
        let r = Req::new(&st, req)?;
        r.only(&[Method::POST])?;
        let (t, c) = (id(&t)?, st.composer().clone());
        let recursive = r.flag("recursive", true)?;
        let (r, body) = r.json(&st).await?;
        let spec = new_tree(body)?;
        let created = detached(r.wait, async move {
            c.duplicate(&auth, &t, spec, recursive).await
        })
        .await?;
        let location = format!("/api/2/twins/{}", created.thing_id);
        Ok(r.ok(201, Some(json(&created)), Some(&location)))
    }
    .await;
    finish("/api/2/twins/{twinId}/duplicate", result)
}
