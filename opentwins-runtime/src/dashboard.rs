//! The dashboard: one static page at `/` that shows the fleet with live values (SSE), a history
//! chart of the selected thing and the links' status, all through the public HTTP API with the
//! browser's own credentials.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;

const PAGE: &str = include_str!("dashboard.html");

/// The dashboard routes (`/` and `/dashboard`) for instance `instance`.
pub fn router(instance: &str) -> Router {
    let escaped: String = instance
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.:".contains(*c))
        .collect();
    let page = PAGE.replace("{{instance}}", &escaped);
    let serve = move || {
        let page = page.clone();
        async move {
            (
                [
                    (CONTENT_TYPE, "text/html; charset=utf-8"),
                    (CACHE_CONTROL, "no-cache"),
                ],
                page,
            )
                .into_response()
        }
    };
    Router::new()
        .route("/", get(serve.clone()))
        .route("/dashboard", get(serve))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn serves_the_page_with_the_instance_named() {
        let response = router("hub<script>")
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            body.contains("OpenTwins-rs · hubscript"),
            "the id is not escaped"
        );
        assert!(body.contains("new EventSource(\"/api/2/things\")"));
    }
}
