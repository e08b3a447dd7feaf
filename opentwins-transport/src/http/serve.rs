//! The serve loop: HTTP/1.1 (with upgrades, for `/ws/2`) over hyper, on plain TCP or TLS
//! (OpenSSL, the library the MQTT client links already), with bounds on what one client holds.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use openssl::error::ErrorStack;
use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod, SslVerifyMode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use super::HttpError;
use super::config::ServerTlsConfig;

/// How long [`serve`] lets open requests (SSE streams, WebSockets, writes waiting for
/// durability) finish after the shutdown signal before it closes them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What the server lets one client hold: how long the request head may take to arrive, and
/// how many connections may be open at once (further ones are closed at accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// From the first byte of a request to the end of its headers (slow-loris defence); with
    /// TLS, the handshake gets as long again.
    pub header_read_timeout: Duration,
    /// Open connections, WebSockets and SSE streams included.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
        }
    }
}

/// The server side of TLS, built once from a [`ServerTlsConfig`]: Mozilla's "intermediate"
/// profile (TLS 1.2 and 1.3), and client certificates required when `client_ca` is set.
#[derive(Clone)]
pub struct TlsAcceptor(Arc<SslAcceptor>);

impl TlsAcceptor {
    /// Loads the certificate chain and key (and the client CAs); a file that does not load,
    /// or a key that does not match the certificate, is [`HttpError::Config`].
    pub fn new(config: &ServerTlsConfig) -> Result<Self, HttpError> {
        let bad = |what: &str, path: &Path, e: ErrorStack| {
            HttpError::Config(format!("tls.{what} {}: {e}", path.display()))
        };
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
            .map_err(|e| HttpError::Config(format!("TLS: {e}")))?;
        b.set_certificate_chain_file(&config.certificate)
            .map_err(|e| bad("certificate", &config.certificate, e))?;
        b.set_private_key_file(&config.private_key, SslFiletype::PEM)
            .map_err(|e| bad("private_key", &config.private_key, e))?;
        b.check_private_key()
            .map_err(|e| bad("private_key", &config.private_key, e))?;
        if let Some(ca) = &config.client_ca {
            b.set_ca_file(ca).map_err(|e| bad("client_ca", ca, e))?;
            b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        }
        Ok(TlsAcceptor(Arc::new(b.build())))
    }

    async fn accept(&self, tcp: TcpStream) -> Result<SslStream<TcpStream>, String> {
        let ssl = Ssl::new(self.0.context()).map_err(|e| e.to_string())?;
        let mut stream = SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
        Pin::new(&mut stream)
            .accept()
            .await
            .map_err(|e| e.to_string())?;
        Ok(stream)
    }
}

/// Serves `app` on `listener` with the default [`ServeLimits`] until `shutdown` completes;
/// open requests then get [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, app, shutdown, ServeLimits::default()).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServeLimits,
) -> std::io::Result<()> {
    serve_loop(listener, app, shutdown, limits, None).await
}

/// [`serve_with`] over TLS: every connection starts with a handshake, which gets
/// `header_read_timeout`; a client that fails or stalls it is closed.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServeLimits,
    tls: TlsAcceptor,
) -> std::io::Result<()> {
    serve_loop(listener, app, shutdown, limits, Some(tls)).await
}

async fn serve_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServeLimits,
    tls: Option<TlsAcceptor>,
) -> std::io::Result<()> {
    let (tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut connections = tokio::task::JoinSet::new();
    let mut stopping = stop.clone();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "HTTP server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stopping) => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                limits.max_connections,
                "HTTP server: connection limit reached"
            );
            continue;
        };
        while connections.try_join_next().is_some() {}
        let (app, stop, tls) = (app.clone(), stop.clone(), tls.clone());
        connections.spawn(async move {
            let _slot = slot;
            let Some(tls) = tls else {
                return connection(stream, peer, app, limits, stop).await;
            };
            match tokio::time::timeout(limits.header_read_timeout, tls.accept(stream)).await {
                Ok(Ok(stream)) => connection(stream, peer, app, limits, stop).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        tracing::info!("HTTP server: closing connections still open after the grace period");
    }
    Ok(())
}

/// Serves one connection until it closes, or gracefully once `stop` turns true.
async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    limits: ServeLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt as _;

    // Handlers see the peer's address (the password throttle counts by it).
    let service = TowerToHyperService::new(app.map_request(
        move |mut request: axum::http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        },
    ));
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
