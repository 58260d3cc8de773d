//! Errors: what a route table can get wrong (all collected at once), and how a failed request
//! is answered (each failure has exactly one status code).

use hyper::StatusCode;

/// A problem in a [`crate::RouteTable`]; [`crate::RouteTable::new`] reports every one it finds.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TableError {
    #[error("route `{0}` is declared more than once")]
    DuplicateRoute(String),
    #[error("route `{route}`: path prefix `{prefix}` must start with `/`")]
    BadPrefix { route: String, prefix: String },
    #[error(
        "route `{route}`: host pattern `{host}` is not a valid host (wildcards look like `*.example.com`)"
    )]
    BadHost { route: String, host: String },
    #[error("route `{route}`: backend set `{set}` is declared more than once")]
    DuplicateSet { route: String, set: String },
    #[error("route `{route}`: every backend set has weight 0, so no request could be served")]
    NoWeight { route: String },
    #[error("route `{route}`: header `{name}` is not a valid header name or value")]
    BadHeader { route: String, name: String },
    #[error("route `{route}`: sticky cookie name `{name}` is not a valid cookie name")]
    BadCookie { route: String, name: String },
    #[error("route `{route}`: a maintenance page's status must be 4xx or 5xx, not {status}")]
    BadMaintenanceStatus { route: String, status: u16 },
    #[error("route `{route}`: budget ratio {ratio} must be between 0 and 1")]
    BadBudget { route: String, ratio: f64 },
}

/// Why the proxy answered a request itself instead of relaying an upstream response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("no route for {host}{path}")]
    NoRoute { host: String, path: String },
    #[error("no healthy endpoint for route {route}")]
    NoEndpoint { route: String },
    #[error("upstream timed out")]
    Timeout,
    #[error("upstream unreachable")]
    Upstream,
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("the request body could not be read (bad chunked framing or cut short)")]
    ClientBody,
    #[error("the request body stalled for longer than {0:?}")]
    ClientTimeout(std::time::Duration),
}

impl ProxyError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::NoEndpoint { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream => StatusCode::BAD_GATEWAY,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ClientBody => StatusCode::BAD_REQUEST,
            ProxyError::ClientTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }
}
