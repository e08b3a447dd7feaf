//! What every route reads from a request: query parameters, Ditto's command headers (also
//! accepted as query parameters), the body within its limit, and the response it writes.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header::{CONTENT_TYPE, ETAG, HeaderName, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use opentwins_core::FieldSelector;
use opentwins_core::protocol::{Headers, TWIN_PERSISTED, parse_timeout};
use serde_json::{Map, Value};

use super::error::ApiError;

/// The decoded query string, in order (a parameter may repeat).
#[derive(Debug, Default, Clone)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(query: Option<&str>) -> Self {
        Params(
            query
                .map(|q| {
                    q.split('&')
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once('=').unwrap_or((p, ""));
                            (decode(k), decode(v))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    /// The first value of `name`.
    /// These parameters, then `more` (a name given in both is read from these).
    pub(crate) fn then(mut self, more: Params) -> Self {
        self.0.extend(more.0);
        self
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `fields=`, parsed.
    pub(crate) fn fields(&self) -> Result<Option<FieldSelector>, ApiError> {
        Ok(self.get("fields").map(FieldSelector::parse).transpose()?)
    }

    /// A comma-separated list parameter (`ids`, `namespaces`); `None` when absent.
    pub(crate) fn list(&self, name: &str) -> Option<Vec<String>> {
        self.get(name).map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
    }
}

/// Percent-decoding of a query component (`+` is a space, as in forms).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Ditto's command headers, read from HTTP headers and, where Ditto allows it, query
/// parameters (which win).
const COMMAND_HEADERS: [&str; 7] = [
    "correlation-id",
    "response-required",
    "if-match",
    "if-none-match",
    "condition",
    "requested-acks",
    "timeout",
];
/// [`COMMAND_HEADERS`] as header names (looking a `&str` up parses it every time).
static COMMAND_HEADER_NAMES: [HeaderName; 7] = [
    HeaderName::from_static("correlation-id"),
    HeaderName::from_static("response-required"),
    HeaderName::from_static("if-match"),
    HeaderName::from_static("if-none-match"),
    HeaderName::from_static("condition"),
    HeaderName::from_static("requested-acks"),
    HeaderName::from_static("timeout"),
];
const QUERY_HEADERS: [&str; 4] = [
    "response-required",
    "condition",
    "requested-acks",
    "timeout",
];

/// The command headers of a request. Writes that name no `requested-acks` get `twin-persisted`
/// when a response is required, as Ditto's HTTP API does.
pub(crate) fn command_headers(
    headers: &HeaderMap,
    params: &Params,
    write: bool,
) -> Result<Headers, ApiError> {
    let mut h = if COMMAND_HEADER_NAMES.iter().any(|n| headers.contains_key(n))
        || QUERY_HEADERS.iter().any(|n| params.get(n).is_some())
    {
        parse_command_headers(headers, params)?
    } else {
        // The common case: nothing to parse.
        Headers::default()
    };
    if h.correlation_id.is_none() {
        h.correlation_id = Some(new_correlation_id());
    }
    if write && h.requested_acks.is_none() && h.response_required() {
        h.requested_acks = Some(vec![TWIN_PERSISTED.to_owned()]);
    }
    if !h.response_required() {
        // Nobody waits for an acknowledgement.
        h.requested_acks = None;
    }
    Ok(h)
}

fn parse_command_headers(headers: &HeaderMap, params: &Params) -> Result<Headers, ApiError> {
    let mut map = Map::new();
    for (name, key) in COMMAND_HEADERS.into_iter().zip(&COMMAND_HEADER_NAMES) {
        if let Some(v) = headers.get(key) {
            let text = v.to_str().map_err(|_| {
                opentwins_core::Error::new(
                    opentwins_core::ErrorKind::HeaderInvalid,
                    format!("The value of the header '{name}' is not valid text."),
                )
            })?;
            map.insert(name.to_owned(), Value::String(text.to_owned()));
        }
    }
    for name in QUERY_HEADERS {
        if let Some(v) = params.get(name) {
            map.insert(name.to_owned(), Value::String(v.to_owned()));
        }
    }
    // Ditto's `timeout=0`: do not wait for anything.
    let zero_timeout = map
        .get("timeout")
        .and_then(Value::as_str)
        .and_then(parse_timeout)
        .is_some_and(|d| d.is_zero());
    let mut h = Headers::from_json(&map)?;
    if zero_timeout {
        h.response_required = Some(false);
        h.timeout = None;
    }
    Ok(h)
}

/// A fresh correlation id: a random per-process prefix and a counter (no syscall per request).
fn new_correlation_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string());
    let mut n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut id = String::with_capacity(prefix.len() + 1 + digits.len() - i);
    id.push_str(prefix);
    id.push('-');
    id.extend(digits[i..].iter().map(|d| char::from(*d)));
    id
}

/// How long to wait for the engine.
pub(crate) fn timeout(h: &Headers, default_ms: u64) -> Duration {
    h.timeout
        .unwrap_or(Duration::from_millis(default_ms))
        .min(Duration::from_secs(60))
}

/// Reads the body within `limit` bytes.
pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, ApiError> {
    if let Some(len) = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(ApiError::too_large(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return ApiError::too_large(limit);
            }
            source = s.source();
        }
        ApiError::new(
            400,
            "gateway:request.invalid",
            format!("The request body could not be read: {e}."),
            "Send the body again.",
        )
    })
}

/// Runs `f` on a blocking thread: work that grows with the fleet (search, count, history scans)
/// must not hold an async worker, or one request stalls every connection on it.
pub(crate) async fn off_workers<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ApiError::new(
            503,
            "gateway:task.failed",
            format!("The request's task failed: {e}."),
            "Send the request again.",
        ))
    })
}

/// Parses a JSON body: malformed JSON is 400 `json.invalid`.
pub(crate) fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    Ok(serde_json::from_slice(bytes).map_err(opentwins_core::Error::json_invalid)?)
}

/// The media type of the request (without parameters), lower-case.
pub(crate) fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

/// Whether the client asked for an event stream.
pub(crate) fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// The successful answer to a command: status, optional JSON body, ETag, Location and the
/// correlation id.
pub(crate) fn reply(
    status: u16,
    value: Option<Value>,
    headers: &Headers,
    location: Option<&str>,
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = match (status, value) {
        (StatusCode::NO_CONTENT, _) | (_, None) => status.into_response(),
        (_, Some(v)) => {
            let mut r = (status, v.to_string()).into_response();
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
    };
    let h = response.headers_mut();
    if let Some(etag) = headers
        .etag
        .as_deref()
        .and_then(|e| HeaderValue::from_str(e).ok())
    {
        h.insert(ETAG, etag);
    }
    if let Some(loc) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        h.insert(LOCATION, loc);
    }
    correlation(h, headers);
    response
}

/// 202 Accepted with no body (`response-required: false`).
pub(crate) fn accepted(headers: &Headers) -> Response {
    let mut r = StatusCode::ACCEPTED.into_response();
    correlation(r.headers_mut(), headers);
    r
}

fn correlation(h: &mut HeaderMap, headers: &Headers) {
    if let Some(c) = headers
        .correlation_id
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        h.insert(HeaderName::from_static("correlation-id"), c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding_and_headers() {
        let p = Params::parse(Some(
            "filter=eq(attributes%2Fa,%22x%20y%22)&ids=a:b,+c:d&x&bad=%zz%4",
        ));
        assert_eq!(p.get("filter"), Some("eq(attributes/a,\"x y\")"));
        assert_eq!(p.list("ids").unwrap(), ["a:b", "c:d"]);
        assert_eq!(p.get("x"), Some(""));
        assert_eq!(p.get("bad"), Some("%zz%4"));

        let mut hm = HeaderMap::new();
        hm.insert("if-match", HeaderValue::from_static("\"rev:1\""));
        let h = command_headers(&hm, &Params::parse(None), true).unwrap();
        assert!(h.wants_persisted());
        assert!(h.correlation_id.is_some());
        let h = command_headers(&hm, &Params::parse(Some("requested-acks=")), true).unwrap();
        assert!(!h.wants_persisted());
        let h = command_headers(&hm, &Params::parse(Some("timeout=0")), true).unwrap();
        assert!(!h.response_required());
        assert!(!h.wants_persisted());
        let h = command_headers(&hm, &Params::parse(None), false).unwrap();
        assert!(!h.wants_persisted());
        let e = command_headers(&hm, &Params::parse(Some("timeout=forever")), true).unwrap_err();
        assert_eq!(e.status(), 400);
        // The fast path (no command header at all) is what parsing nothing gives.
        assert_eq!(Headers::from_json(&Map::new()).unwrap(), Headers::default());
        let h = command_headers(&HeaderMap::new(), &Params::parse(Some("x=1")), true).unwrap();
        assert!(h.wants_persisted() && h.correlation_id.is_some());
        let mut hm = HeaderMap::new();
        hm.insert("correlation-id", HeaderValue::from_static("c-1"));
        let h = command_headers(&hm, &Params::parse(None), false).unwrap();
        assert_eq!(h.correlation_id.as_deref(), Some("c-1"));
        // Generated ids: one prefix, then a counter.
        let (a, b) = (new_correlation_id(), new_correlation_id());
        let (pa, na) = a.rsplit_once('-').unwrap();
        let (pb, nb) = b.rsplit_once('-').unwrap();
        assert_eq!(pa, pb);
        assert!(nb.parse::<u64>().unwrap() > na.parse::<u64>().unwrap());
    }
}
