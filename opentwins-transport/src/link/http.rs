//! Links to a peer's HTTP API: each message (one update or a batch) is POSTed to
//! `{url}/api/2/connections/{remote_link}/inbox`; a 2xx answer means the peer has applied it
//! durably. Requests go one at a time (HTTP/1.1 without pipelining): a link's throughput over
//! HTTP comes from its batches. HTTP/1.1 over plain TCP (`http://`) or TLS (`https://`, OpenSSL, verifying the
//! peer's certificate against `tls.ca_file` or the system's CAs, with an optional client
//! certificate). One connection per link is kept alive and reused; a request that fails on a
//! reused connection (the peer closed it while idle) is sent once more on a new one.
//!
//! Anti-entropy requests (`digest.rs`) go to `…/connections/{remote_link}/digest` on the same
//! connection.

use std::pin::Pin;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Uri};
use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use super::digest::Asked;
use super::{PeerConfig, RequestFuture, SendFuture, Transport};
use crate::mqtt::TlsConfig;

/// The largest answer read from a peer (a digest answer for 1,000 things with many paths
/// each is a few MB; a peer that sends more is not believed).
const MAX_ANSWER: usize = 16 << 20;

/// How long one update may take, connecting included.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) struct HttpPeer {
    /// The inbox's path.
    path: String,
    /// The path of the peer link's digest resource.
    digest_path: String,
    /// `host:port`, to connect to and for the `Host` header.
    authority: String,
    /// The host name (or address) the peer's certificate must name.
    host: String,
    /// Set for `https://` peers.
    tls: Option<SslConnector>,
    authorization: Option<String>,
    /// The kept-alive connection; the link sends one message at a time on it.
    connection: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl HttpPeer {
    pub(super) fn new(peer: &PeerConfig) -> Result<HttpPeer, String> {
        let PeerConfig::Http {
            url,
            remote_link,
            username,
            password,
            token,
            tls,
        } = peer
        else {
            unreachable!("called for HTTP peers only")
        };
        let secure = if url.starts_with("https://") {
            true
        } else if url.starts_with("http://") {
            false
        } else {
            return Err(format!("'{url}' must be an http:// or https:// URL"));
        };
        if !secure && *tls != TlsConfig::default() {
            return Err(format!(
                "'{url}' is plain http:// but the link has tls settings: use https://"
            ));
        }
        let uri: Uri = format!(
            "{}/api/2/connections/{remote_link}/inbox",
            url.trim_end_matches('/')
        )
        .parse()
        .map_err(|e| format!("'{url}' is not a URL: {e}"))?;
        let host = uri
            .host()
            .ok_or_else(|| format!("'{url}' has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let authority = match uri.authority() {
            Some(a) if a.port().is_some() => a.to_string(),
            _ if host.contains(':') => format!("[{host}]:{port}"),
            _ => format!("{host}:{port}"),
        };
        let authorization = match (token, username) {
            (Some(t), _) => Some(format!("Bearer {t}")),
            (None, Some(u)) => {
                let pair = format!("{u}:{}", password.as_deref().unwrap_or_default());
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            (None, None) => None,
        };
        Ok(HttpPeer {
            digest_path: format!(
                "{}/digest",
                uri.path().strip_suffix("/inbox").unwrap_or_default()
            ),
            path: uri.path().to_owned(),
            authority,
            host,
            tls: secure.then(|| connector(tls)).transpose()?,
            authorization,
            connection: tokio::sync::Mutex::new(None),
        })
    }

    /// A new connection to the peer, TLS handshake included.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("connect {}: {e}", self.authority))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return handshake(tcp).await;
        };
        let ssl = tls
            .configure()
            .and_then(|c| c.into_ssl(&self.host))
            .map_err(|e| format!("TLS: {e}"))?;
        let mut stream = SslStream::new(ssl, tcp).map_err(|e| format!("TLS: {e}"))?;
        Pin::new(&mut stream)
            .connect()
            .await
            .map_err(|e| format!("TLS handshake with {}: {e}", self.authority))?;
        handshake(stream).await
    }

    /// POSTs `message` to `path` and returns the answer's status and body.
    async fn post(&self, path: &str, message: Bytes) -> Result<(hyper::StatusCode, Bytes), String> {
        let mut slot = self.connection.lock().await;
        let mut reused = false;
        if let Some(sender) = slot.as_mut() {
            reused = sender.ready().await.is_ok();
        }
        loop {
            if !reused {
                *slot = Some(self.connect().await?);
            }
            let sender = slot.as_mut().expect("connected above");
            let request = self.request(path, message.clone())?;
            match sender.send_request(request).await {
                Ok(response) => {
                    let status = response.status();
                    let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .map_err(|e| format!("reading the answer: {e}"))?;
                    return Ok((status, body));
                }
                // Closed by the peer while idle: once more on a new connection (a duplicate
                // is harmless, the peer's clocks apply each change once).
                Err(_) if reused => reused = false,
                Err(e) => {
                    *slot = None;
                    return Err(e.to_string());
                }
            }
        }
    }

    fn request(&self, path: &str, message: Bytes) -> Result<Request<Full<Bytes>>, String> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("host", self.authority.as_str())
            .header(
                "content-type",
                if opentwins_core::replica::is_binary_batch(&message) {
                    super::BINARY_CONTENT_TYPE
                } else {
                    "application/json"
                },
            );
        if let Some(a) = &self.authorization {
            req = req.header("authorization", a);
        }
        req.body(Full::new(message)).map_err(|e| e.to_string())
    }
}

/// The TLS client side of an `https://` peer.
fn connector(tls: &TlsConfig) -> Result<SslConnector, String> {
    let bad = |what: &str, e: openssl::error::ErrorStack| format!("tls.{what}: {e}");
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| bad("client", e))?;
    if let Some(ca) = &tls.ca_file {
        b.set_ca_file(ca).map_err(|e| bad("ca_file", e))?;
    }
    if tls.key_password.is_some() {
        return Err("tls.key_password: HTTP links take unencrypted client keys only".into());
    }
    if let Some(cert) = &tls.cert_file {
        b.set_certificate_chain_file(cert)
            .map_err(|e| bad("cert_file", e))?;
        let key = tls.key_file.as_ref().unwrap_or(cert);
        b.set_private_key_file(key, SslFiletype::PEM)
            .map_err(|e| bad("key_file", e))?;
        b.check_private_key().map_err(|e| bad("key_file", e))?;
    } else if tls.key_file.is_some() {
        return Err("tls.key_file needs tls.cert_file".into());
    }
    if tls.insecure {
        b.set_verify(SslVerifyMode::NONE);
    }
    Ok(b.build())
}

async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

/// A peer's non-2xx answer, for the link's status (the body's first 300 characters).
fn refusal(status: hyper::StatusCode, body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body).chars().take(300).collect();
    format!("peer answered {status}: {text}")
}

/// What the peer's answer means: `Ok(None)` applied, `Ok(Some(why))` refused for good (sending
/// it again will not help), `Err(why)` worth retrying.
fn answer(status: hyper::StatusCode, body: &[u8]) -> Result<Option<String>, String> {
    if status.is_success() {
        return Ok(None);
    }
    let why = refusal(status, body);
    // Server errors, timeouts and throttling may pass; other client errors will not.
    if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
        Err(why)
    } else {
        Ok(Some(why))
    }
}

impl HttpPeer {
    /// [`HttpPeer::post`] within [`SEND_TIMEOUT`].
    async fn exchange(
        &self,
        path: &str,
        message: Vec<u8>,
    ) -> Result<(hyper::StatusCode, Bytes), String> {
        match tokio::time::timeout(SEND_TIMEOUT, self.post(path, message.into())).await {
            Ok(result) => result,
            Err(_) => {
                // The connection may hold a half-sent request: start the next on a new one.
                *self.connection.lock().await = None;
                Err(format!("no answer within {SEND_TIMEOUT:?}"))
            }
        }
    }
}

impl Transport for HttpPeer {
    fn send(&self, message: Vec<u8>) -> SendFuture<'_> {
        Box::pin(async move {
            let (status, body) = self.exchange(&self.path, message).await?;
            answer(status, &body)
        })
    }

    fn request(&self, body: Vec<u8>) -> Option<RequestFuture<'_>> {
        Some(Box::pin(async move {
            let (status, answer) = self
                .exchange(&self.digest_path, body)
                .await
                .map_err(Asked::Failed)?;
            if status.is_success() {
                return Ok(answer.to_vec());
            }
            Err(Asked::refused(status.as_u16(), refusal(status, &answer)))
        }))
    }
}

/// The transport of a receive-only link: nothing is ever sent.
pub(super) struct InboxOnly;

impl Transport for InboxOnly {
    fn send(&self, _message: Vec<u8>) -> SendFuture<'_> {
        Box::pin(async { Err("an inbox link sends nothing".to_owned()) })
    }
}
