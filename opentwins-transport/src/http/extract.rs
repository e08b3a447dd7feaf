//! The extractors the routes take, each rejecting a bad request with a Ditto error JSON answer
//! (never axum's plain-text rejections): path segments, the query, Ditto's command headers and
//! JSON bodies read within `http.max_body_bytes`.
//!
//! Handlers take the caller first (`Caller`, so a request without credentials is 401 before
//! anything else), then the request head extractors, then at most one body extractor.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use opentwins_core::protocol::{Headers, MERGE_PATCH_CONTENT_TYPE};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::HttpState;
use super::error::ApiError;
use super::request::{Params, command_headers, content_type, parse_json, read_body};

/// 400 `gateway:request.invalid` for a path that cannot be decoded.
fn bad_path(why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        400,
        "gateway:request.invalid",
        format!("The request path is not valid: {why}."),
        "Check the encoding of the path.",
    )
}

/// The route's path parameters, percent-decoded (axum's `Path` with a Ditto rejection).
pub(super) struct DittoPath<T>(pub(super) T);

impl<T, S> FromRequestParts<S> for DittoPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(DittoPath(t)),
            Err(e) => Err(bad_path(e)),
        }
    }
}

/// The entity a `/api/2/things/..` or `/api/2/policies/..` route addresses, whichever of their
/// routes matched: the id (the fourth path segment) and the rest of the path below it (`""` for
/// the entity itself), each percent-decoded, as a catch-all would give them.
pub(super) struct EntityPath {
    /// The thing or policy id.
    pub(super) id: String,
    /// The path below the entity, without a leading `/`.
    pub(super) rest: String,
}

impl<S: Send + Sync> FromRequestParts<S> for EntityPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // "", "api", "2", "things" | "policies", then "{id}/{rest}".
        let below = parts.uri.path().splitn(5, '/').nth(4).unwrap_or("");
        let (id, rest) = below.split_once('/').unwrap_or((below, ""));
        Ok(EntityPath {
            id: decode_path(id)?,
            rest: decode_path(rest)?,
        })
    }
}

/// Percent-decoding of a path part as axum's router does it: `%XX` is the byte, anything else
/// (a lone `%`, `+`) stays; the result must be UTF-8.
fn decode_path(s: &str) -> Result<String, ApiError> {
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad_path(format_args!("'{s}' is not UTF-8 when decoded")))
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Params::parse(parts.uri.query()))
    }
}

/// What a command reads from the request head: the query parameters and Ditto's command
/// headers (headers or query parameters; a write that names no `requested-acks` waits for
/// `twin-persisted` when a response is required). Invalid headers are 400 `header.invalid`.
pub(super) struct Command {
    /// The query parameters.
    pub(super) params: Params,
    /// The command headers, with a correlation id (the client's or a fresh one).
    pub(super) headers: Headers,
}

impl<S: Send + Sync> FromRequestParts<S> for Command {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let params = Params::parse(parts.uri.query());
        let write = !matches!(parts.method, Method::GET | Method::HEAD);
        let headers = command_headers(&parts.headers, &params, write)?;
        Ok(Command { params, headers })
    }
}

/// Whether the client asked for server-sent events (`Accept: text/event-stream`).
pub(super) struct EventStream(pub(super) bool);

impl<S: Send + Sync> FromRequestParts<S> for EventStream {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(EventStream(super::request::wants_event_stream(
            &parts.headers,
        )))
    }
}

/// The body's bytes, at most `http.max_body_bytes` (413 `things:thing.toolarge` beyond).
pub(super) struct RawBody(pub(super) Bytes);

impl FromRequest<HttpState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &HttpState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        Ok(RawBody(
            read_body(body, &parts.headers, st.config().max_body_bytes).await?,
        ))
    }
}

/// Reads the body and, unless it is blank and `blank_ok`, checks its declared media type with
/// `check`; `None` for a blank body.
async fn typed_body(
    req: Request,
    st: &HttpState,
    check: fn(&HeaderMap) -> Result<(), ApiError>,
    blank_ok: bool,
) -> Result<Option<Bytes>, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(body, &parts.headers, st.config().max_body_bytes).await?;
    let blank = bytes.iter().all(u8::is_ascii_whitespace);
    if !(blank && blank_ok) {
        check(&parts.headers)?;
    }
    Ok((!blank).then_some(bytes))
}

/// A JSON body (`PUT`): `Content-Type` absent or JSON (415 otherwise), malformed or empty JSON
/// is 400 `json.invalid`.
pub(super) struct Json(pub(super) Value);

impl FromRequest<HttpState> for Json {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &HttpState) -> Result<Self, ApiError> {
        let bytes = typed_body(req, st, require_json, false).await?;
        Ok(Json(parse_json(&bytes.unwrap_or_default())?))
    }
}

/// A JSON body that may be left out (blank): `None` then; otherwise as [`Json`].
pub(super) struct OptionalJson(pub(super) Option<Value>);

impl FromRequest<HttpState> for OptionalJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &HttpState) -> Result<Self, ApiError> {
        let bytes = typed_body(req, st, require_json, true).await?;
        Ok(OptionalJson(bytes.map(|b| parse_json(&b)).transpose()?))
    }
}

/// A JSON merge patch body (`PATCH`): `Content-Type: application/merge-patch+json` (415
/// otherwise), then as [`Json`].
pub(super) struct MergePatch(pub(super) Value);

impl FromRequest<HttpState> for MergePatch {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &HttpState) -> Result<Self, ApiError> {
        let bytes = typed_body(req, st, require_merge_patch, false).await?;
        Ok(MergePatch(parse_json(&bytes.unwrap_or_default())?))
    }
}

/// A merge patch must say so: `application/merge-patch+json`.
fn require_merge_patch(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = content_type(headers);
    if ct.as_deref() == Some(MERGE_PATCH_CONTENT_TYPE) {
        Ok(())
    } else {
        Err(ApiError::media_type(
            ct.as_deref(),
            MERGE_PATCH_CONTENT_TYPE,
        ))
    }
}

/// A body must be JSON when a content type is given (Ditto answers 415 otherwise).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode_like_the_router() {
        assert_eq!(decode_path("a%2Fb").unwrap(), "a/b");
        assert_eq!(decode_path("a+b%zz%4").unwrap(), "a+b%zz%4");
        assert_eq!(decode_path("%C3%A9").unwrap(), "é");
        assert_eq!(decode_path("plain").unwrap(), "plain");
        assert_eq!(decode_path("%FF").unwrap_err().status(), 400);
    }
}
