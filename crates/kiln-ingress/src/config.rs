//! The declared route table: plain data the control plane builds and hands to
//! [`crate::IngressHandle::swap`]. [`RouteTable::new`] validates it, collecting every problem.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use hyper::header::{HeaderName, HeaderValue};

use crate::error::TableError;

/// An immutable set of routes. Build a new one and swap it in; never edit one in place.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Validates `routes`, reporting every problem at once.
    pub fn new(routes: Vec<Route>) -> Result<Self, Vec<TableError>> {
        let mut errors = Vec::new();
        let mut names = HashSet::new();
        for route in &routes {
            if !names.insert(route.name.as_str()) {
                errors.push(TableError::DuplicateRoute(route.name.clone()));
            }
            route.check(&mut errors);
        }
        if errors.is_empty() {
            Ok(Self { routes })
        } else {
            Err(errors)
        }
    }

    /// An empty table: every request gets 404.
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// Which `Host` a route serves. Matching ignores case, the port and a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Exactly this host, e.g. `shop.localhost`.
    Exact(String),
    /// `*.shop.localhost`: any host ending in `.shop.localhost` (one or more labels), but not
    /// `shop.localhost` itself.
    Wildcard(String),
    /// Every host.
    Any,
}

impl HostMatch {
    /// `*` → Any, `*.x` → Wildcard, anything else → Exact (lowercased).
    pub fn parse(pattern: &str) -> Self {
        let pattern = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
        if pattern.is_empty() || pattern == "*" {
            HostMatch::Any
        } else if pattern.starts_with("*.") {
            HostMatch::Wildcard(pattern)
        } else {
            HostMatch::Exact(pattern)
        }
    }

    fn is_valid(&self) -> bool {
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        };
        match self {
            HostMatch::Exact(host) => valid(host),
            HostMatch::Wildcard(pattern) => pattern.strip_prefix("*.").is_some_and(valid),
            HostMatch::Any => true,
        }
    }
}

/// One routing rule. Build with [`Route::new`], then adjust the public fields.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub host: HostMatch,
    /// Matched on path segments: `/api` matches `/api` and `/api/x`, not `/apix`. The longest
    /// matching prefix wins; on a tie an exact host beats a wildcard beats any.
    pub path_prefix: String,
    /// Remove the prefix before forwarding (`/api/x` → `/x`, `/api` → `/`).
    pub strip_prefix: bool,
    pub backends: Vec<BackendSet>,
    pub timeouts: Timeouts,
    /// Larger request bodies get 413 (by `Content-Length` up front, or while streaming).
    pub max_body_bytes: Option<u64>,
    /// Headers set (replacing any the client sent) on the way to the upstream.
    pub request_headers: Vec<(String, String)>,
    /// Headers set on the way back to the client.
    pub response_headers: Vec<(String, String)>,
    pub retry: RetryPolicy,
    pub balance: Balance,
    pub outlier: OutlierPolicy,
    /// With a cookie name, a client keeps the backend set it first got (`name=set`).
    pub sticky_cookie: Option<String>,
    /// While set (and before its end), the route answers every request with this page
    /// instead of proxying; requests already in flight finish on the table they started with.
    pub maintenance: Option<Maintenance>,
}

/// A maintenance page on a route (see the `maintenance` module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintenance {
    /// A 4xx or 5xx status (503 as a rule).
    pub status: u16,
    /// The text shown, escaped in the HTML page.
    pub message: String,
    /// `Retry-After`; `None`: the time left until `until` (capped at an hour), or 60 s when
    /// the page has no end.
    pub retry_after: Option<Duration>,
    /// When the route proxies again by itself; `None`: until the page is removed.
    pub until: Option<SystemTime>,
}

impl Route {
    /// A route with default timeouts, retries, balancing and outlier detection.
    pub fn new(
        name: impl Into<String>,
        host: HostMatch,
        path_prefix: impl Into<String>,
        backends: Vec<BackendSet>,
    ) -> Self {
        Self {
            name: name.into(),
            host,
            path_prefix: path_prefix.into(),
            strip_prefix: false,
            backends,
            timeouts: Timeouts::default(),
            max_body_bytes: None,
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            retry: RetryPolicy::default(),
            balance: Balance::default(),
            outlier: OutlierPolicy::default(),
            sticky_cookie: None,
            maintenance: None,
        }
    }

    fn check(&self, errors: &mut Vec<TableError>) {
        let route = || self.name.clone();
        if !self.path_prefix.starts_with('/') {
            errors.push(TableError::BadPrefix {
                route: route(),
                prefix: self.path_prefix.clone(),
            });
        }
        if !self.host.is_valid() {
            let host = match &self.host {
                HostMatch::Exact(h) | HostMatch::Wildcard(h) => h.clone(),
                HostMatch::Any => String::new(),
            };
            errors.push(TableError::BadHost {
                route: route(),
                host,
            });
        }
        let mut sets = HashSet::new();
        for set in &self.backends {
            if !sets.insert(set.name.as_str()) {
                errors.push(TableError::DuplicateSet {
                    route: route(),
                    set: set.name.clone(),
                });
            }
        }
        if !self.backends.is_empty() && self.backends.iter().all(|s| s.weight == 0) {
            errors.push(TableError::NoWeight { route: route() });
        }
        for (name, value) in self.request_headers.iter().chain(&self.response_headers) {
            if HeaderName::try_from(name.as_str()).is_err()
                || HeaderValue::try_from(value.as_str()).is_err()
            {
                errors.push(TableError::BadHeader {
                    route: route(),
                    name: name.clone(),
                });
            }
        }
        if let Some(cookie) = &self.sticky_cookie {
            let valid = !cookie.is_empty()
                && cookie
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid {
                errors.push(TableError::BadCookie {
                    route: route(),
                    name: cookie.clone(),
                });
            }
        }
        if let Some(page) = &self.maintenance
            && !(400..=599).contains(&page.status)
        {
            errors.push(TableError::BadMaintenanceStatus {
                route: route(),
                status: page.status,
            });
        }
        let ratio = self.retry.budget_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            errors.push(TableError::BadBudget {
                route: route(),
                ratio,
            });
        }
    }
}

/// The endpoints of one release, and its share of the route's traffic.
#[derive(Debug, Clone)]
pub struct BackendSet {
    /// E.g. the release id, or "stable" / "canary"; a label in metrics and the sticky cookie.
    pub name: String,
    /// Traffic share relative to the route's other sets (90 and 10 → 90 % and 10 %).
    pub weight: u32,
    pub endpoints: Vec<Endpoint>,
}

/// One upstream instance. Health state is kept per `id` across table swaps, so an instance
/// that stays in the next table keeps its ejection and readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub addr: SocketAddr,
}

impl Endpoint {
    pub fn new(id: impl Into<String>, addr: SocketAddr) -> Self {
        Self {
            id: id.into(),
            addr,
        }
    }
}

/// Per-route time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect to an upstream; a timeout counts as a connect failure (retried).
    pub connect: Duration,
    /// From sending the request until the upstream's response headers (→ 504).
    pub request: Duration,
    /// Longest silence while streaming the response body before it is cut off.
    pub idle: Duration,
    /// Longest silence between two reads of the client's request body (nginx's
    /// `client_body_timeout`): 408 when nothing of the response was sent yet, else the
    /// connection is cut. The upstream's `request` timeout counts from the body's end, so a
    /// slow upload is the client's fault, never the upstream's.
    pub body: Duration,
    /// Longest silence, both ways, on a WebSocket tunnel before it is closed (HAProxy's
    /// `timeout tunnel`); noticed within twice this.
    pub tunnel: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            body: Duration::from_secs(60),
            tunnel: Duration::from_secs(3600),
        }
    }
}

/// When a failed attempt is tried again on another endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 disables retries).
    pub attempts: u32,
    /// Each successful request earns this fraction of a retry (0.2: one retry per five
    /// successes), so retries stay a bounded share of traffic and cannot amplify an outage.
    pub budget_ratio: f64,
    /// Retries available before any success, and the most the budget ever holds. A crashed
    /// instance breaks every request in flight on it at once: at 10,000 requests/s, 10 was too
    /// few (2–3 client errors per `kill -9`); sustained retries stay capped by the ratio.
    pub budget_reserve: u32,
    /// Retry when the connection could not be made (nothing was sent, so always safe).
    pub on_connect_failure: bool,
    /// Retry 502/503/504 for GET/HEAD/OPTIONS/PUT/DELETE requests without a body.
    pub on_5xx_for_idempotent: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 2,
            budget_ratio: 0.2,
            budget_reserve: 100,
            on_connect_failure: true,
            on_5xx_for_idempotent: true,
        }
    }
}

/// How a set's endpoints share its requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Balance {
    #[default]
    RoundRobin,
    /// Two random endpoints, the one with fewer requests in flight wins.
    LeastRequests,
}

/// Passive health: when an endpoint is taken out of rotation after failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// Consecutive connect failures, timeouts or 5xx responses that eject an endpoint.
    pub consecutive_failures: u32,
    /// The first ejection's length; each repeat doubles it, up to `max_ejection`.
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, prefix: &str) -> Route {
        Route::new(name, HostMatch::Any, prefix, Vec::new())
    }

    #[test]
    fn host_patterns_parse() {
        assert_eq!(HostMatch::parse("*"), HostMatch::Any);
        assert_eq!(
            HostMatch::parse("*.Shop.localhost."),
            HostMatch::Wildcard("*.shop.localhost".into())
        );
        assert_eq!(HostMatch::parse("Shop"), HostMatch::Exact("shop".into()));
    }

    #[test]
    fn every_table_error_is_reported_at_once() {
        let mut bad = route("a", "api");
        bad.host = HostMatch::Exact("bad host".into());
        bad.sticky_cookie = Some("a;b".into());
        bad.backends = vec![
            BackendSet {
                name: "s".into(),
                weight: 0,
                endpoints: vec![],
            },
            BackendSet {
                name: "s".into(),
                weight: 0,
                endpoints: vec![],
            },
        ];
        let errors = RouteTable::new(vec![bad, route("a", "/")]).unwrap_err();
        assert_eq!(errors.len(), 6, "{errors:#?}");
    }
}
