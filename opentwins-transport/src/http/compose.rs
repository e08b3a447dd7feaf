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

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use opentwins_core::compose::{ComposeError, NewTree, search_json};
use opentwins_core::protocol::Headers;
use opentwins_core::{Error, FieldSelector, ThingId};
use serde_json::Value;

use super::error::ApiError;
use super::extract::{Command, DittoPath, OptionalJson};
use super::request::{Params, reply, timeout};
use super::{Caller, HttpState};

/// How long an operation may take: the request's `timeout`, else `http.default_timeout_ms`.
fn wait(st: &HttpState, c: &Command) -> Duration {
    timeout(&c.headers, st.config().default_timeout_ms)
}

/// A boolean query parameter (`true` / `false`).
fn flag(params: &Params, name: &str, default: bool) -> Result<bool, ApiError> {
    match params.get(name) {
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

/// The answer with the request's correlation id.
fn ok(c: &Command, status: u16, value: Option<Value>, location: Option<&str>) -> Response {
    reply(status, value, &c.headers, location)
}

fn api(e: ComposeError) -> ApiError {
    Error::from(e).into()
}

fn id(s: &str) -> Result<ThingId, ApiError> {
    Ok(ThingId::new(s)?)
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

/// The answer, or the error's.
fn finish(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// A search answer for one page, from a synchronous listing.
fn page(
    c: &Command,
    list: impl FnOnce(
        Option<&str>,
        Option<&str>,
        Option<&FieldSelector>,
    ) -> Result<opentwins_core::engine::SearchResult, ComposeError>,
) -> Result<Response, ApiError> {
    let fields = c.params.fields()?;
    let result = list(
        c.params.get("filter"),
        c.params.get("option"),
        fields.as_ref(),
    )
    .map_err(api)?;
    Ok(ok(c, 200, Some(search_json(result)), None))
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
    c: Command,
) -> Response {
    finish(page(&c, |f, o, s| st.composer().list_types(&auth, f, o, s)))
}

/// `GET /api/2/types/{typeId}`.
pub(super) async fn get_type(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath(t): DittoPath<String>,
    c: Command,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let (t, composer) = (id(&t)?, st.composer().clone());
        let fields = c.params.fields()?;
        let v = detached(wait(&st, &c), async move {
            composer.get_type(&auth, &t, fields.as_ref()).await
        })
        .await?;
        Ok(ok(&c, 200, Some(v), None))
    }
    .await;
    finish(result)
}

/// `PUT /api/2/types/{typeId}`: creates or replaces a type, keeping its composition.
pub(super) async fn put_type(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath(t): DittoPath<String>,
    c: Command,
    OptionalJson(body): OptionalJson,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let (t, composer) = (id(&t)?, st.composer().clone());
        let body =
            body.ok_or_else(|| api(ComposeError::Invalid("A type needs a JSON body.".into())))?;
        let location = format!("/api/2/types/{t}");
        let out = detached(wait(&st, &c), async move {
            composer.put_type(&auth, &t, body).await
        })
        .await?;
        let res = out.response;
        let location = (res.status == 201).then_some(location.as_str());
        let headers = Headers {
            etag: res.headers.etag,
            ..c.headers.clone()
        };
        Ok(reply(res.status, res.value, &headers, location))
    }
    .await;
    finish(result)
}

/// `DELETE /api/2/types/{typeId}`.
pub(super) async fn delete_type(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath(t): DittoPath<String>,
    c: Command,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let (t, composer) = (id(&t)?, st.composer().clone());
        detached(wait(&st, &c), async move {
            composer.delete_type(&auth, &t).await
        })
        .await?;
        Ok(ok(&c, 204, None, None))
    }
    .await;
    finish(result)
}

/// `GET /api/2/types/{typeId}/children`.
pub(super) async fn type_children(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath(t): DittoPath<String>,
    c: Command,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let (t, composer) = (id(&t)?, st.composer().clone());
        let list = detached(wait(&st, &c), async move {
            composer.type_children(&auth, &t).await
        })
        .await?;
        Ok(ok(&c, 200, Some(json(&list)), None))
    }
    .await;
    finish(result)
}

/// `PUT /api/2/types/{typeId}/children/{childTypeId}` (body: the count, default 1).
pub(super) async fn put_type_child(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath((t, child)): DittoPath<(String, String)>,
    c: Command,
    OptionalJson(body): OptionalJson,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let (t, child, composer) = (id(&t)?, id(&child)?, st.composer().clone());
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
        let out = detached(wait(&st, &c), async move {
            composer.set_type_child(&auth, &t, &child, count).await
        })
        .await?;
        let res = out.response;
        Ok(ok(&c, res.status, res.value, None))
    }
    .await;
    finish(result)
}

/// `DELETE /api/2/types/{typeId}/children/{childTypeId}`.
pub(super) async fn delete_type_child(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath((t, child)): DittoPath<(String, String)>,
    c: Command,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let (t, child, composer) = (id(&t)?, id(&child)?, st.composer().clone());
        detached(wait(&st, &c), async move {
            composer.remove_type_child(&auth, &t, &child).await
        })
        .await?;
        Ok(ok(&c, 204, None, None))
    }
    .await;
    finish(result)
}

/// `GET /api/2/types/{typeId}/parents`.
pub(super) async fn type_parents(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath(t): DittoPath<String>,
    c: Command,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let (t, composer) = (id(&t)?, st.composer().clone());
        let list = detached(wait(&st, &c), async move {
            composer.type_parents(&auth, &t).await
        })
        .await?;
        Ok(ok(&c, 200, Some(json(&list)), None))
    }
    .await;
    finish(result)
}

/// `GET /api/2/types/{typeId}/tree`.
pub(super) async fn type_tree(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath(t): DittoPath<String>,
    c: Command,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let (t, composer) = (id(&t)?, st.composer().clone());
        let tree = detached(
            wait(&st, &c),
            async move { composer.type_tree(&auth, &t).await },
        )
        .await?;
        Ok(ok(&c, 200, Some(json(&tree)), None))
    }
    .await;
    finish(result)
}

/// `POST /api/2/types/{typeId}/instantiate`.
pub(super) async fn instantiate(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath(t): DittoPath<String>,
    c: Command,
    OptionalJson(body): OptionalJson,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let (t, composer) = (id(&t)?, st.composer().clone());
        let spec = new_tree(body)?;
        let created = detached(wait(&st, &c), async move {
            composer.instantiate(&auth, &t, spec).await
        })
        .await?;
        let location = format!("/api/2/twins/{}", created.thing_id);
        Ok(ok(&c, 201, Some(json(&created)), Some(&location)))
    }
    .await;
    finish(result)
}

// ---- twins ----

/// `GET /api/2/twins`: the root twins.
pub(super) async fn twins(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    c: Command,
) -> Response {
    finish(page(&c, |f, o, s| st.composer().list_roots(&auth, f, o, s)))
}

/// `GET /api/2/twins/{twinId}`.
pub(super) async fn get_twin(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath(t): DittoPath<String>,
    c: Command,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let (t, composer) = (id(&t)?, st.composer().clone());
        let fields = c.params.fields()?;
        let v = detached(wait(&st, &c), async move {
            composer.get_twin(&auth, &t, fields.as_ref()).await
        })
        .await?;
        Ok(ok(&c, 200, Some(v), None))
    }
    .await;
    finish(result)
}

/// `DELETE /api/2/twins/{twinId}` (`recursive=true` for the subtree).
pub(super) async fn delete_twin(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath(t): DittoPath<String>,
    c: Command,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let (t, composer) = (id(&t)?, st.composer().clone());
        let recursive = flag(&c.params, "recursive", false)?;
        let done = detached(wait(&st, &c), async move {
            composer.delete_twin(&auth, &t, recursive).await
        })
        .await?;
        Ok(ok(&c, 200, Some(json(&done)), None))
    }
    .await;
    finish(result)
}

/// `GET /api/2/twins/{twinId}/children`.
pub(super) async fn twin_children(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath(t): DittoPath<String>,
    c: Command,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let (t, composer) = (id(&t)?, st.composer().clone());
        let fields = c.params.fields()?;
        let (filter, option) = (
            c.params.get("filter").map(str::to_owned),
            c.params.get("option").map(str::to_owned),
        );
        let found = detached(wait(&st, &c), async move {
            composer
                .children(
                    &auth,
                    &t,
                    filter.as_deref(),
                    option.as_deref(),
                    fields.as_ref(),
                )
                .await
        })
        .await?;
        Ok(ok(&c, 200, Some(search_json(found)), None))
    }
    .await;
    finish(result)
}

/// `GET /api/2/twins/{twinId}/parent`: the parent's id.
pub(super) async fn get_parent(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath(t): DittoPath<String>,
    c: Command,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let (t, composer) = (id(&t)?, st.composer().clone());
        let p = detached(
            wait(&st, &c),
            async move { composer.parent(&auth, &t).await },
        )
        .await?;
        Ok(ok(&c, 200, Some(Value::String(p.to_string())), None))
    }
    .await;
    finish(result)
}

/// `DELETE /api/2/twins/{twinId}/parent`: unlink.
pub(super) async fn unlink(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath(t): DittoPath<String>,
    c: Command,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let (t, composer) = (id(&t)?, st.composer().clone());
        detached(
            wait(&st, &c),
            async move { composer.unlink(&auth, &t).await },
        )
        .await?;
        Ok(ok(&c, 204, None, None))
    }
    .await;
    finish(result)
}

/// `PUT /api/2/twins/{twinId}/parent/{parentId}`: link.
pub(super) async fn link(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath((t, parent)): DittoPath<(String, String)>,
    c: Command,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let (t, parent, composer) = (id(&t)?, id(&parent)?, st.composer().clone());
        let out = detached(wait(&st, &c), async move {
            composer.link(&auth, &t, &parent).await
        })
        .await?;
        let res = out.response;
        Ok(ok(&c, res.status, res.value, None))
    }
    .await;
    finish(result)
}

/// `GET /api/2/twins/{twinId}/tree`.
pub(super) async fn twin_tree(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath(t): DittoPath<String>,
    c: Command,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let (t, composer) = (id(&t)?, st.composer().clone());
        let tree = detached(
            wait(&st, &c),
            async move { composer.twin_tree(&auth, &t).await },
        )
        .await?;
        Ok(ok(&c, 200, Some(json(&tree)), None))
    }
    .await;
    finish(result)
}

/// `POST /api/2/twins/{twinId}/duplicate` (`recursive`, default true).
pub(super) async fn duplicate(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    DittoPath(t): DittoPath<String>,
    c: Command,
    OptionalJson(body): OptionalJson,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let (t, composer) = (id(&t)?, st.composer().clone());
        let recursive = flag(&c.params, "recursive", true)?;
        let spec = new_tree(body)?;
        let created = detached(wait(&st, &c), async move {
            composer.duplicate(&auth, &t, spec, recursive).await
        })
        .await?;
        let location = format!("/api/2/twins/{}", created.thing_id);
        Ok(ok(&c, 201, Some(json(&created)), Some(&location)))
    }
    .await;
    finish(result)
}
