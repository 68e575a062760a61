//! The web dashboard: one page, its script and its style sheet, compiled
//! into the binary (`include_str!`) and served on the API port at `/`.
//!
//! The page needs nothing but the REST API it is served beside: it asks
//! for a token, keeps it in the tab's `sessionStorage`, and reads
//! `/api/v1/{workers,status,traffic,tenants,plugins,filters}`, the
//! tenants' KV, and the live console (`/api/v1/console`, server-sent
//! events); it dispatches through the same route as any application. So
//! the assets are public (they hold nothing), and what the page may do is
//! what its token may do.
//!
//! The answers forbid framing and inline script, and send no referrer:
//! a page that holds a token should not be embeddable, and tenants' data
//! it shows is only ever text.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// The page and its assets: path, content type, body.
pub const ASSETS: [(&str, &str, &str); 3] = [
    ("/", "text/html; charset=utf-8", include_str!("index.html")),
    (
        "/dashboard/app.js",
        "text/javascript; charset=utf-8",
        include_str!("app.js"),
    ),
    (
        "/dashboard/app.css",
        "text/css; charset=utf-8",
        include_str!("app.css"),
    ),
];

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The assets change with the binary, not while it runs; a
            // browser must still look again after an upgrade.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// Each of [`ASSETS`] at its path, with any state.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS
        .into_iter()
        .fold(Router::new(), |router, (path, content_type, body)| {
            router.route(path, get(move || async move { asset(content_type, body) }))
        })
}
