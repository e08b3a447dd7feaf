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
//! `history`.

mod auth;
mod compose;
mod config;
mod connections;
mod delta;
mod error;
mod history;
pub mod metrics;
mod policies;
mod request;
mod search;
mod sse;
mod things;
mod ws;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use opentwins_core::Twins;
use opentwins_core::compose::Composer;
use opentwins_core::policy::AuthContext;

pub use auth::{generate_token, hash_password, hash_token};
pub use config::{AuthConfig, HttpConfig, TokenConfig, UserConfig};
use error::ApiError;
use metrics::{Counter, Gauge, Histogram, LATENCY_BUCKETS, Registry};

/// Errors at the HTTP transport's boundary (not request errors: those are Ditto JSON answers).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The configuration is invalid (bad password hash, token digest, subject or header name).
    #[error("invalid HTTP configuration: {0}")]
    Config(String),
}

/// How long [`serve`] lets open requests (SSE streams, WebSockets, writes waiting for
/// durability) finish after the shutdown signal before it closes them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

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
}

struct HttpMetrics {
    registry: Registry,
    /// The request counter and latency histogram per (route template, method, status),
    /// resolved in the registry once: a request then costs a read lock and a hash lookup.
    requests: RwLock<HashMap<RequestKey, (Counter, Histogram)>>,
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
}

/// The authenticated caller of a request: an extractor every API handler takes first (after
/// the state), so a request without valid credentials is answered 401 before anything else.
#[derive(Clone)]
struct Caller(AuthContext);

impl FromRequestParts<HttpState> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &HttpState) -> Result<Self, Response> {
        match st.inner.auth.authenticate(&parts.headers).await {
            Ok(caller) => Ok(Caller(caller)),
            Err(failure) => {
                let why = match failure {
                    auth::AuthFailure::Missing => "no credentials were given",
                    auth::AuthFailure::Invalid(why) => why,
                };
                tracing::debug!(why, path = %parts.uri.path(), "authentication failed");
                Err(ApiError::unauthenticated(why, &st.inner.auth.realm).into_response())
            }
        }
    }
}

/// The route template a handler reports for metrics when the router's own template (a
/// catch-all) says too little.
#[derive(Clone, Copy)]
struct RouteLabel(&'static str);

/// The router: every route of the API, authentication, metrics and Ditto JSON for unknown routes.
pub fn app(state: HttpState) -> Router {
    let api = Router::new()
        .route("/api/2/things", any(things::collection))
        .route("/api/2/things/{thing_id}", any(things::root))
        .route("/api/2/things/{thing_id}/{*path}", any(things::sub))
        .route("/api/2/things/{thing_id}/delta", any(delta::thing))
        .route(
            "/api/2/things/{thing_id}/features/{feature_id}/delta",
            any(delta::feature),
        )
        .route("/api/2/search/things", any(search::search))
        .route("/api/2/search/things/count", any(search::count))
        .route("/api/2/policies/{policy_id}", any(policies::root))
        .route("/api/2/policies/{policy_id}/{*path}", any(policies::sub))
        .route("/api/2/connections", any(connections::collection))
        .route("/api/2/connections/{name}", any(connections::one))
        .route("/api/2/connections/{name}/inbox", any(connections::inbox))
        .route("/api/2/history/things/{thing_id}", any(history::thing))
        .route(
            "/api/2/history/things/{thing_id}/{*path}",
            any(history::series),
        )
        .route("/ws/2", any(ws::upgrade));
    let api = if state.config().composition {
        api.merge(compose_routes())
    } else {
        api
    };
    Router::new()
        .merge(api)
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// `/api/2/types` and `/api/2/twins` (see `compose`).
fn compose_routes() -> Router<HttpState> {
    Router::new()
        .route("/api/2/types", any(compose::types))
        .route("/api/2/types/{type_id}", any(compose::type_one))
        .route(
            "/api/2/types/{type_id}/children",
            any(compose::type_children),
        )
        .route(
            "/api/2/types/{type_id}/children/{child_id}",
            any(compose::type_child),
        )
        .route("/api/2/types/{type_id}/parents", any(compose::type_parents))
        .route("/api/2/types/{type_id}/tree", any(compose::type_tree))
        .route(
            "/api/2/types/{type_id}/instantiate",
            any(compose::instantiate),
        )
        .route("/api/2/twins", any(compose::twins))
        .route("/api/2/twins/{twin_id}", any(compose::twin_one))
        .route(
            "/api/2/twins/{twin_id}/children",
            any(compose::twin_children),
        )
        .route("/api/2/twins/{twin_id}/parent", any(compose::twin_parent))
        .route(
            "/api/2/twins/{twin_id}/parent/{parent_id}",
            any(compose::twin_link),
        )
        .route("/api/2/twins/{twin_id}/tree", any(compose::twin_tree))
        .route("/api/2/twins/{twin_id}/duplicate", any(compose::duplicate))
}

/// Serves `app` on `listener` until `shutdown` completes; open requests then get
/// [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let signal = async move {
        shutdown.await;
        let _ = tx.send(true);
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(signal);
    let server = std::future::IntoFuture::into_future(server);
    tokio::select! {
        result = server => result,
        () = async {
            let _ = rx.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::info!("HTTP server: closing connections still open after the grace period");
            Ok(())
        }
    }
}

/// The route templates of [`app`], so a matched path maps to a `&'static str` label.
const ROUTES: [&str; 13] = [
    "/api/2/things",
    "/api/2/things/{thing_id}",
    "/api/2/things/{thing_id}/{*path}",
    "/api/2/search/things",
    "/api/2/search/things/count",
    "/api/2/policies/{policy_id}",
    "/api/2/policies/{policy_id}/{*path}",
    "/api/2/connections",
    "/api/2/connections/{name}",
    "/api/2/connections/{name}/inbox",
    "/ws/2",
    "/health",
    "/metrics",
];

fn other_method() -> &'static Method {
    static OTHER: std::sync::OnceLock<Method> = std::sync::OnceLock::new();
    OTHER.get_or_init(|| Method::from_bytes(b"other").expect("a valid method token"))
}

/// Request metrics are kept per route template, method and status.
type RequestKey = (&'static str, Method, u16);

/// Counts every request by route template, method and status, and times it.
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
    let route = match response.extensions().get::<RouteLabel>() {
        Some(label) => label.0,
        None => matched
            .and_then(|m| ROUTES.iter().find(|r| **r == m.as_str()).copied())
            .unwrap_or("unmatched"),
    };
    let key = (route, method, response.status().as_u16());
    let m = st.metrics();
    let found = m
        .requests
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
        .cloned();
    let (count, latency) = match found {
        Some(series) => series,
        None => {
            let (route, method, status) = &key;
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

async fn unknown_route(req: Request) -> Response {
    ApiError::route(req.uri().path()).into_response()
}
