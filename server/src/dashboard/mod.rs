//! The web dashboard at `/ui`: a page, a script and a style sheet
//! compiled into the binary (`server/ui/`, plain HTML, CSS and JavaScript,
//! no build step), and the JSON the page needs beyond the management API
//! under `/api/v1/` ([`api`]).
//!
//! The page itself holds no data, so it is served without the bearer
//! token (a browser cannot attach one to a navigation); every request
//! for data goes through the same token check as the management API, with
//! the token the operator types in kept in the tab's `sessionStorage`.
//! Both sit behind the Host/Origin checks of [`crate::browser`]. The page
//! is sent with a Content-Security-Policy that runs only its own script
//! and refuses framing; the script writes data into the page as text,
//! never as markup (see `docs/decisions/0007-dashboard-without-a-build-step.md`).

pub mod api;
pub mod timeline;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The page, its script and its style sheet, as compiled in.
const INDEX_HTML: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const STYLE_CSS: &str = include_str!("../../ui/style.css");

/// What the page may load and who may frame it: its own script, style
/// and requests only; no inline script, no framing (clickjacking).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The dashboard's routes: the page at `/ui` (and `/` redirected there)
/// and its assets. No state, no token: see the module comment.
pub fn assets<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route(
            "/ui",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset(STYLE_CSS, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Small, and must match the binary serving the API: always revalidate.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
