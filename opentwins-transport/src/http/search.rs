//! `/api/2/search/things` (`{"items": [..], "cursor": ".."}`) and `/api/2/search/things/count`
//! (a plain number), with `filter`, `option` (`sort(..)`, `size(..)`, `cursor(..)`), `fields`
//! and `namespaces`; `POST /api/2/search/things` takes them form-encoded in the body, as
//! Ditto does (long filters do not fit in a URL).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use opentwins_core::protocol::Headers;
use serde_json::{Map, Value};

use opentwins_core::policy::AuthContext;

use super::error::ApiError;
use super::extract::RawBody;
use super::request::{Params, content_type, off_workers, reply};
use super::{Caller, HttpState};

/// `GET /api/2/search/things`.
pub(super) async fn search(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    params: Params,
) -> Response {
    run(st, auth, params).await
}

/// The media type of a `POST /api/2/search/things` body.
pub(super) const FORM: &str = "application/x-www-form-urlencoded";

/// `POST /api/2/search/things`: the parameters form-encoded in the body (before those of the
/// query string).
pub(super) async fn search_form(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    params: Params,
    headers: axum::http::HeaderMap,
    RawBody(body): RawBody,
) -> Response {
    let ct = content_type(&headers);
    if !body.is_empty() && ct.as_deref() != Some(FORM) {
        return ApiError::media_type(ct.as_deref(), FORM).into_response();
    }
    let Ok(form) = std::str::from_utf8(&body) else {
        return ApiError::new(
            400,
            "gateway:request.invalid",
            "The form-encoded body is not UTF-8.",
            "Send the search parameters form-encoded in UTF-8.",
        )
        .into_response();
    };
    run(st, auth, Params::parse(Some(form)).then(params)).await
}

async fn run(st: HttpState, auth: AuthContext, params: Params) -> Response {
    let result = off_workers(move || {
        let filter = with_namespaces(params.get("filter"), params.list("namespaces"));
        let fields = params.fields()?;
        let page = st.twins().search(
            &auth,
            filter.as_deref(),
            params.get("option"),
            fields.as_ref(),
        )?;
        let mut body = Map::new();
        body.insert("items".into(), Value::Array(page.items));
        if let Some(c) = page.cursor {
            body.insert("cursor".into(), Value::String(c));
        }
        Ok::<_, ApiError>(reply(
            200,
            Some(Value::Object(body)),
            &Headers::default(),
            None,
        ))
    })
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/2/search/things/count`.
pub(super) async fn count(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    params: Params,
) -> Response {
    let filter = with_namespaces(params.get("filter"), params.list("namespaces"));
    let counted = off_workers(move || Ok(st.twins().count(&auth, filter.as_deref())?)).await;
    match counted {
        Ok(n) => reply(200, Some(Value::from(n)), &Headers::default(), None),
        Err(e) => e.into_response(),
    }
}

/// The filter restricted to things in `namespaces` (Ditto's `namespaces` parameter).
pub(super) fn with_namespaces(
    filter: Option<&str>,
    namespaces: Option<Vec<String>>,
) -> Option<String> {
    let ns = namespaces.filter(|n| !n.is_empty());
    let ns_filter = ns.map(|ns| {
        let likes: Vec<String> = ns
            .iter()
            .map(|n| {
                let pattern = serde_json::to_string(&format!("{n}:*")).unwrap_or_default();
                format!("like(thingId,{pattern})")
            })
            .collect();
        format!("or({})", likes.join(","))
    });
    match (filter.filter(|f| !f.trim().is_empty()), ns_filter) {
        (None, None) => None,
        (Some(f), None) => Some(f.to_owned()),
        (None, Some(n)) => Some(n),
        (Some(f), Some(n)) => Some(format!("and({f},{n})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_become_a_filter() {
        assert_eq!(with_namespaces(None, None), None);
        assert_eq!(
            with_namespaces(Some("eq(a,1)"), Some(vec!["x".into(), "y.z".into()])).unwrap(),
            "and(eq(a,1),or(like(thingId,\"x:*\"),like(thingId,\"y.z:*\")))"
        );
    }
}
