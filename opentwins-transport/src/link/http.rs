//! Links to a peer's HTTP API: each update is POSTed to
//! `{url}/api/2/connections/{remote_link}/inbox`; a 2xx answer means the peer has applied it
//! durably. Plain HTTP/1.1 (put TLS in front, e.g. a reverse proxy, for untrusted networks).

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, Uri};

use super::{PeerConfig, SendFuture, Transport};

pub(super) struct HttpPeer {
    uri: Uri,
    authorization: Option<String>,
}

impl HttpPeer {
    pub(super) fn new(peer: &PeerConfig) -> Result<HttpPeer, String> {
        let PeerConfig::Http {
            url,
            remote_link,
            username,
            password,
            token,
        } = peer
        else {
            unreachable!("called for HTTP peers only")
        };
        if !url.starts_with("http://") {
            return Err(format!("'{url}' must be an http:// URL"));
        }
        let uri: Uri = format!(
            "{}/api/2/connections/{remote_link}/inbox",
            url.trim_end_matches('/')
        )
        .parse()
        .map_err(|e| format!("'{url}' is not a URL: {e}"))?;
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
        Ok(HttpPeer { uri, authorization })
    }

    async fn post(&self, message: &[u8]) -> Result<Option<String>, String> {
        let authority = self.uri.authority().ok_or("URL without host")?.clone();
        let stream = tokio::net::TcpStream::connect(authority.as_str())
            .await
            .map_err(|e| format!("connect {authority}: {e}"))?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.uri.path())
            .header("host", authority.as_str())
            .header("content-type", "application/json");
        if let Some(a) = &self.authorization {
            req = req.header("authorization", a);
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(message)))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        if status.is_success() {
            return Ok(None);
        }
        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
        let text = body
            .map(|b: Bytes| {
                String::from_utf8_lossy(&b)
                    .chars()
                    .take(300)
                    .collect::<String>()
            })
            .unwrap_or_default();
        let why = format!("peer answered {status}: {text}");
        // Server errors, timeouts and throttling may pass; other client errors will not.
        if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
            Err(why)
        } else {
            Ok(Some(why))
        }
    }
}

impl Transport for HttpPeer {
    fn send<'a>(&'a self, message: &'a [u8]) -> SendFuture<'a> {
        Box::pin(async move {
            tokio::time::timeout(std::time::Duration::from_secs(10), self.post(message))
                .await
                .map_err(|_| "no answer within 10 s".to_owned())?
        })
    }
}

/// The transport of a receive-only link: nothing is ever sent.
pub(super) struct InboxOnly;

impl Transport for InboxOnly {
    fn send<'a>(&'a self, _message: &'a [u8]) -> SendFuture<'a> {
        Box::pin(async { Err("an inbox link sends nothing".to_owned()) })
    }
}
