//! The dashboard's files, embedded in the binary at build time: one HTML page, one style
//! sheet, one script. No CDN and no build step: what is in `assets/` is what the browser gets.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Every embedded file: name, content type, content.
pub(crate) const FILES: [(&str, &str, &str); 3] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../assets/index.html"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../assets/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/app.js"),
    ),
];

fn file(name: &str) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => (
            [
                (header::CONTENT_TYPE, *kind),
                // The page is small and changes with the binary: always ask.
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                // Everything comes from this server: nothing else may be loaded or called.
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
                ),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no asset named {name}")).into_response(),
    }
}

/// `/`.
pub(crate) async fn index() -> Response {
    file("index.html")
}

/// `/assets/{name}`.
pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    file(&name)
}
