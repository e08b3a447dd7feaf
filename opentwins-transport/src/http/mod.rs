//! The Ditto-compatible HTTP API v2 on axum: things and every sub-resource, search, policies,
//! server-sent events, the WebSocket `/ws/2`, `/health` and Prometheus `/metrics`.
//!
//! ```no_run
//! # async fn run(twins: opentwins_core::Twins) -> Result<(), Box<dyn std::error::Error>> {
//! use opentwins_transport::http::{HttpConfig, HttpState, app, serve};
//! let state = HttpState::new(twins, HttpConfig::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! serve(listener, app(state), std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! Every request but `/health` and `/metrics` is authenticated ([`AuthConfig`]) and every
//! command is checked by the engine against the thing's policy for the caller's subjects.
//! Route groups live in their own modules: `things`, `search`, `policies`, `sse`, `ws`,
//! `history`, `delta`, `connections`, `compose`; the extractors they share (whose rejections
//! are Ditto errors) in `extract`.

mod auth;
mod compose;
mod config;
mod connections;
mod delta;
mod error;
mod extract;
mod history;
pub mod metrics;
mod policies;
mod request;
mod search;
mod serve;
mod sse;
mod things;
mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use opentwins_core::Twins;
use opentwins_core::compose::Composer;
use opentwins_core::policy::AuthContext;

pub use auth::{generate_token, hash_password, hash_token};
pub use config::{AuthConfig, HttpConfig, ServerTlsConfig, TokenConfig, UserConfig};
use error::ApiError;
use metrics::{Counter, Gauge, Histogram, LATENCY_BUCKETS, Registry};
pub use serve::{SHUTDOWN_GRACE, ServeLimits, TlsAcceptor, serve, serve_tls, serve_with};

/// Errors at the HTTP transport's boundary (not request errors: those are Ditto JSON answers).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The configuration is invalid (bad password hash, token digest, subject or header name).
    #[error("invalid HTTP configuration: {0}")]
    Config(String),
}

/// Everything the handlers share: the engine, the configuration, the credentials and the
/// metrics. Cheap to clone.
#[derive(Clone)]
pub struct HttpState {
    inner: Arc<Shared>,
}

struct Shared {
    twins: Twins,
    composer: Composer,
    links: std::sync::OnceLock<crate::link::Links>,
    history: std::sync::OnceLock<Arc<dyn opentwins_core::history::History>>,
    config: HttpConfig,
    auth: auth::Authenticator,
    metrics: HttpMetrics,
    /// Open SSE streams and WebSocket sessions per subject (see [`HttpState::open_stream`]).
    streams: std::sync::Mutex<HashMap<String, usize>>,
}

struct HttpMetrics {
    registry: Registry,
    /// The request counter and latency histogram per route template, then (method, status),
    /// resolved in the registry once: a request then costs a read lock and two hash lookups.
    requests: RwLock<HashMap<Box<str>, RequestSeries>>,
    events_sse: Counter,
    events_ws: Counter,
    lagged: Counter,
    sse_open: Gauge,
    ws_open: Gauge,
}

impl HttpState {
    /// State with a fresh metrics registry.
    pub fn new(twins: Twins, config: HttpConfig) -> Result<Self, HttpError> {
        Self::with_registry(twins, config, Registry::new())
    }

    /// State that registers its metrics in `registry` (shared with other components, so
    /// `/metrics` shows them all).
    pub fn with_registry(
        twins: Twins,
        config: HttpConfig,
        registry: Registry,
    ) -> Result<Self, HttpError> {
        let auth = auth::Authenticator::new(&config.auth)?;
        let events = |t| {
            registry.counter(
                "opentwins_http_events_sent_total",
                "Events delivered to subscribers over SSE and WebSocket.",
                &[("transport", t)],
            )
        };
        let open = |t| {
            registry.gauge(
                "opentwins_http_open_streams",
                "Open SSE streams and WebSocket sessions.",
                &[("transport", t)],
            )
        };
        let metrics = HttpMetrics {
            events_sse: events("sse"),
            events_ws: events("ws"),
            lagged: registry.counter(
                "opentwins_http_events_lagged_total",
                "Events slow SSE/WebSocket subscribers missed.",
                &[],
            ),
            sse_open: open("sse"),
            ws_open: open("ws"),
            requests: RwLock::new(HashMap::new()),
            registry,
        };
        if config.composition {
            // Every transport's commands, not only this API's, then keep off reserved attributes.
            twins.enable_composition();
        }
        let composer = Composer::new(twins.clone(), config.composition_limits.clone());
        Ok(HttpState {
            inner: Arc::new(Shared {
                twins,
                composer,
                links: std::sync::OnceLock::new(),
                history: std::sync::OnceLock::new(),
                config,
                auth,
                metrics,
                streams: std::sync::Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The engine.
    pub fn twins(&self) -> &Twins {
        &self.inner.twins
    }

    /// The composition operations over the engine (served when `composition` is on).
    pub fn composer(&self) -> &Composer {
        &self.inner.composer
    }

    /// Serves `/api/2/connections` for these links (the same engine's) and shows their
    /// metrics on `/metrics`. Set once: later calls change nothing.
    pub fn with_links(self, links: crate::link::Links) -> Self {
        links.export_metrics(self.registry());
        let _ = self.inner.links.set(links);
        self
    }

    /// The links `/api/2/connections` manages, if any.
    pub fn links(&self) -> Option<&crate::link::Links> {
        self.inner.links.get()
    }

    /// Serves `/api/2/history/things/..` from this history (recorded from the same engine's
    /// events by a `HistorySink`). Set once: later calls change nothing.
    pub fn with_history(self, history: Arc<dyn opentwins_core::history::History>) -> Self {
        let _ = self.inner.history.set(history);
        self
    }

    /// The history `/api/2/history` serves, if any.
    pub fn history(&self) -> Option<&Arc<dyn opentwins_core::history::History>> {
        self.inner.history.get()
    }

    /// The configuration.
    pub fn config(&self) -> &HttpConfig {
        &self.inner.config
    }

    /// The metrics registry `/metrics` renders.
    pub fn registry(&self) -> &Registry {
        &self.inner.metrics.registry
    }

    fn metrics(&self) -> &HttpMetrics {
        &self.inner.metrics
    }

    /// Counts a stream (SSE or WebSocket) `auth` opens, 429 when its subject holds
    /// `max_streams_per_subject` already; the slot frees when the returned guard drops.
    fn open_stream(&self, auth: &AuthContext) -> Result<StreamSlot, error::ApiError> {
        let subject = auth.first_subject().unwrap_or_default().to_owned();
        let max = self.inner.config.max_streams_per_subject;
        let mut open = self
            .inner
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(subject.clone()).or_default();
        if *count >= max {
            return Err(error::ApiError::new(
                429,
                "gateway:streams.toomany",
                format!("The subject '{subject}' holds {max} open streams already."),
                "Close an SSE stream or WebSocket session first, or raise http.max_streams_per_subject.",
            ));
        }
        *count += 1;
        Ok(StreamSlot {
            state: self.clone(),
            subject,
        })
    }
}

/// One open stream of a subject; gives its slot back when dropped.
struct StreamSlot {
    state: HttpState,
    subject: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .state
            .inner
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.subject) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.subject);
            }
        }
    }
}

/// The authenticated caller of a request: an extractor every API handler takes first (after
/// the state), so a request without valid credentials is answered 401 before anything else.
#[derive(Clone)]
struct Caller(AuthContext);

impl FromRequestParts<HttpState> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &HttpState) -> Result<Self, Response> {
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        match st.inner.auth.authenticate(&parts.headers, client).await {
            Ok(caller) => Ok(Caller(caller)),
            Err(failure) => {
                let why = match failure {
                    auth::AuthFailure::Missing => "no credentials were given",
                    auth::AuthFailure::Invalid(why) => why,
                    auth::AuthFailure::Throttled(wait) => {
                        tracing::info!(?client, "authentication throttled");
                        let mut response = ApiError::new(
                            429,
                            "gateway:authentication.throttled",
                            "Too many wrong passwords from this address; try again later.",
                            "Wait for the time in Retry-After before the next attempt.",
                        )
                        .into_response();
                        let secs = wait.as_secs().max(1).to_string();
                        if let Ok(value) = HeaderValue::from_str(&secs) {
                            response.headers_mut().insert(RETRY_AFTER, value);
                        }
                        return Err(response);
                    }
                    auth::AuthFailure::Busy => {
                        return Err(ApiError::new(
                            503,
                            "gateway:authentication.busy",
                            "Too many password checks are running; try again shortly.",
                            "Use a bearer token for frequent requests: it needs no password check.",
                        )
                        .into_response());
                    }
                };
                tracing::debug!(why, path = %parts.uri.path(), "authentication failed");
                Err(ApiError::unauthenticated(why, &st.inner.auth.realm).into_response())
            }
        }
    }
}

/// The thing routes: the thing and each level below it Ditto names, so metrics tell them apart
/// by their template; `{*unknown}` takes every other path below a thing (the engine answers
/// it). Each is served by the same [`thing_methods`].
const THING_ROUTES: [&str; 13] = [
    "/api/2/things/{thingId}",
    "/api/2/things/{thingId}/policyId",
    "/api/2/things/{thingId}/definition",
    "/api/2/things/{thingId}/attributes",
    "/api/2/things/{thingId}/attributes/{*path}",
    "/api/2/things/{thingId}/features",
    "/api/2/things/{thingId}/features/{featureId}",
    "/api/2/things/{thingId}/features/{featureId}/definition",
    "/api/2/things/{thingId}/features/{featureId}/properties",
    "/api/2/things/{thingId}/features/{featureId}/properties/{*path}",
    "/api/2/things/{thingId}/features/{featureId}/desiredProperties",
    "/api/2/things/{thingId}/features/{featureId}/desiredProperties/{*path}",
    "/api/2/things/{thingId}/{*unknown}",
];

/// The policy routes, as [`THING_ROUTES`] for policies.
const POLICY_ROUTES: [&str; 8] = [
    "/api/2/policies/{policyId}",
    "/api/2/policies/{policyId}/entries",
    "/api/2/policies/{policyId}/entries/{label}",
    "/api/2/policies/{policyId}/entries/{label}/subjects",
    "/api/2/policies/{policyId}/entries/{label}/subjects/{subjectId}",
    "/api/2/policies/{policyId}/entries/{label}/resources",
    "/api/2/policies/{policyId}/entries/{label}/resources/{*resource}",
    "/api/2/policies/{policyId}/{*unknown}",
];

/// A thing or any part of it: GET (or its SSE stream), PUT, PATCH, DELETE.
fn thing_methods() -> MethodRouter<HttpState> {
    get(things::retrieve)
        .put(things::modify)
        .patch(things::merge)
        .delete(things::delete)
}

/// A policy or any part of it: GET, PUT, DELETE.
fn policy_methods() -> MethodRouter<HttpState> {
    get(policies::retrieve)
        .put(policies::modify)
        .delete(policies::delete)
}

/// The router: every route of the API, authentication, metrics and Ditto JSON for unknown
/// routes and methods (405 with `Allow`).
pub fn app(state: HttpState) -> Router {
    let mut api = Router::new()
        .route(
            "/api/2/things",
            get(things::retrieve_many).post(things::create),
        )
        .route("/api/2/things/{thingId}/delta", get(delta::thing))
        .route(
            "/api/2/things/{thingId}/features/{featureId}/delta",
            get(delta::feature),
        )
        .route(
            "/api/2/search/things",
            get(search::search).post(search::search_form),
        )
        .route("/api/2/search/things/count", get(search::count))
        .route("/api/2/connections", get(connections::list))
        .route(
            "/api/2/connections/{name}",
            get(connections::get_one)
                .put(connections::put_one)
                .delete(connections::delete_one),
        )
        .route("/api/2/connections/{name}/inbox", post(connections::inbox))
        .route(
            "/api/2/connections/{name}/digest",
            post(connections::digest),
        )
        .route("/api/2/history/things/{thingId}", get(history::thing))
        .route(
            "/api/2/history/things/{thingId}/{*path}",
            get(history::series),
        )
        .route("/ws/2", get(ws::upgrade));
    for route in THING_ROUTES {
        api = api.route(route, thing_methods());
    }
    for route in POLICY_ROUTES {
        api = api.route(route, policy_methods());
    }
    if state.config().composition {
        api = api.merge(compose_routes());
    }
    let api = api.method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .merge(api)
        .route("/health", get(health).fallback(open_method_not_allowed))
        .route(
            "/metrics",
            get(metrics_text).fallback(open_method_not_allowed),
        )
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(state.clone(), browser_guard))
        .layer(middleware::from_fn(request_shape))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// `/api/2/types` and `/api/2/twins` (see `compose`).
fn compose_routes() -> Router<HttpState> {
    use compose as c;
    Router::new()
        .route("/api/2/types", get(c::types))
        .route(
            "/api/2/types/{typeId}",
            get(c::get_type).put(c::put_type).delete(c::delete_type),
        )
        .route("/api/2/types/{typeId}/children", get(c::type_children))
        .route(
            "/api/2/types/{typeId}/children/{childTypeId}",
            put(c::put_type_child).delete(c::delete_type_child),
        )
        .route("/api/2/types/{typeId}/parents", get(c::type_parents))
        .route("/api/2/types/{typeId}/tree", get(c::type_tree))
        .route("/api/2/types/{typeId}/instantiate", post(c::instantiate))
        .route("/api/2/twins", get(c::twins))
        .route(
            "/api/2/twins/{twinId}",
            get(c::get_twin).delete(c::delete_twin),
        )
        .route("/api/2/twins/{twinId}/children", get(c::twin_children))
        .route(
            "/api/2/twins/{twinId}/parent",
            get(c::get_parent).delete(c::unlink),
        )
        .route("/api/2/twins/{twinId}/parent/{parentId}", put(c::link))
        .route("/api/2/twins/{twinId}/tree", get(c::twin_tree))
        .route("/api/2/twins/{twinId}/duplicate", post(c::duplicate))
}

/// 405 `gateway:method.notallowed` on an API route, after authentication (a caller without
/// credentials learns nothing but 401); axum adds the `Allow` header.
async fn method_not_allowed(_: Caller, method: Method) -> ApiError {
    ApiError::method(method.as_str())
}

/// 405 on `/health` and `/metrics`, which need no credentials.
async fn open_method_not_allowed(method: Method) -> ApiError {
    ApiError::method(method.as_str())
}

fn other_method() -> &'static Method {
    static OTHER: std::sync::OnceLock<Method> = std::sync::OnceLock::new();
    OTHER.get_or_init(|| Method::from_bytes(b"other").expect("a valid method token"))
}

/// The request counter and latency histogram of one (method, status) of a route.
type RequestSeries = HashMap<(Method, u16), (Counter, Histogram)>;

/// Counts every request by route template ([`MatchedPath`], `unmatched` for unknown routes),
/// method and status, and times it.
async fn record(State(st): State<HttpState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = match *req.method() {
        Method::GET
        | Method::PUT
        | Method::POST
        | Method::PATCH
        | Method::DELETE
        | Method::HEAD
        | Method::OPTIONS => req.method().clone(),
        // Arbitrary methods would make arbitrary many series.
        _ => other_method().clone(),
    };
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let response = next.run(req).await;
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let key = (method, response.status().as_u16());
    let m = st.metrics();
    let found = m
        .requests
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(route)
        .and_then(|series| series.get(&key))
        .cloned();
    let (count, latency) = match found {
        Some(series) => series,
        None => {
            let (method, status) = &key;
            let series = (
                m.registry.counter(
                    "opentwins_http_requests_total",
                    "HTTP requests by route template, method and status.",
                    &[
                        ("route", route),
                        ("method", method.as_str()),
                        ("status", &status.to_string()),
                    ],
                ),
                m.registry.histogram(
                    "opentwins_http_request_duration_seconds",
                    "Time to the response head, by route template.",
                    &[("route", route)],
                    LATENCY_BUCKETS,
                ),
            );
            m.requests
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(route.into())
                .or_default()
                .insert(key, series.clone());
            series
        }
    };
    count.inc();
    latency.observe(start.elapsed().as_secs_f64());
    response
}

async fn health() -> Response {
    let mut r = (StatusCode::OK, r#"{"status":"UP"}"#).into_response();
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

async fn metrics_text(State(st): State<HttpState>) -> Response {
    let mut r = (StatusCode::OK, st.registry().render()).into_response();
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// The longest request target (path and query) answered; longer ones get 414.
pub const MAX_URI_BYTES: usize = 16 * 1024;
/// The most header bytes (names and values) of one request; more get 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Answers requests too large in their head with Ditto error JSON, before anything else reads
/// them (hyper's own, larger limits answer without a body).
async fn request_shape(req: Request, next: middleware::Next) -> Response {
    let uri = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri > MAX_URI_BYTES {
        return ApiError::new(
            414,
            "gateway:uri.toolong",
            format!("The request target has {uri} bytes, at most {MAX_URI_BYTES} are accepted."),
            "Split long selections (fields, ids, filters) over several requests.",
        )
        .into_response();
    }
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers > MAX_HEADER_BYTES {
        return ApiError::new(
            431,
            "gateway:headers.toolarge",
            format!(
                "The request headers have {headers} bytes, at most {MAX_HEADER_BYTES} are accepted."
            ),
            "Send fewer or shorter headers.",
        )
        .into_response();
    }
    next.run(req).await
}

/// What keeps web pages from driving the API through a browser: the `Host` must be an IP
/// literal, `localhost` or an allowed name (DNS rebinding); a request that changes state, or
/// opens `/ws/2`, from a page of another origin is refused (CSRF, cross-site WebSocket
/// hijacking); a `POST` body must say it is JSON (a browser sends text/plain, forms or untyped
/// blobs across sites without asking first). Clients that are not browsers send no `Origin`.
async fn browser_guard(
    State(st): State<HttpState>,
    req: Request,
    next: middleware::Next,
) -> Response {
    let config = st.config();
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !host_allowed(host, &config.allowed_hosts) {
        return ApiError::new(
            421,
            "gateway:host.notallowed",
            format!("The host '{host}' is not served here."),
            "Add the name to http.allowed_hosts if clients reach the API by it.",
        )
        .into_response();
    }
    let changes = !matches!(
        req.method(),
        &Method::GET | &Method::HEAD | &Method::OPTIONS
    ) || req.uri().path() == "/ws/2";
    if changes && let Some(origin) = req.headers().get(axum::http::header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let own = origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host));
        if !own
            && !config
                .allowed_origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin))
        {
            return ApiError::new(
                403,
                "gateway:origin.notallowed",
                format!("Requests from pages of '{origin}' may not change anything here."),
                "Add the origin to http.allowed_origins to let its pages use the API.",
            )
            .into_response();
        }
    }
    if req.method() == Method::POST {
        let h = req.headers();
        let has_body = h.contains_key(axum::http::header::TRANSFER_ENCODING)
            || h.get(axum::http::header::CONTENT_LENGTH)
                .is_some_and(|len| len.as_bytes() != b"0");
        // A link's binary batch is no type a page can send without asking either (CORS). A
        // form-encoded search changes nothing (and a foreign page's is refused above).
        let ct = request::content_type(h);
        let batch = ct.as_deref() == Some(crate::link::BINARY_CONTENT_TYPE);
        let search_form =
            ct.as_deref() == Some(search::FORM) && req.uri().path() == "/api/2/search/things";
        if has_body
            && !batch
            && !search_form
            && let Err(e) = extract::require_json_type(req.headers())
        {
            return e.into_response();
        }
    }
    next.run(req).await
}

/// Whether `host` (a `Host` header: name or address, maybe with a port) may be served. A
/// request without one does not come from a browser.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    if host.is_empty() {
        return true;
    }
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => {
            return rest
                .split(']')
                .next()
                .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok());
        }
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(name))
}

async fn unknown_route(req: Request) -> Response {
    ApiError::route(req.uri().path()).into_response()
}
