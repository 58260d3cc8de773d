//! The compiled route table: what the request path reads. Compiling resolves everything a
//! request would otherwise recompute — parsed header names, the endpoints' shared runtime
//! state, metric series — and orders routes so
//! the first match is the best one (longest prefix, then exact > wildcard > any host).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use hyper::header::{HeaderName, HeaderValue};

use crate::budget::RetryBudget;
use crate::config::{Balance, HostMatch, OutlierPolicy, RetryPolicy, Route, Timeouts};
use crate::health::EndpointRuntime;
use crate::maintenance::CompiledMaintenance;
use crate::metrics::SetMetrics;

#[derive(Debug, Default)]
pub(crate) struct CompiledTable {
    /// Sorted so that the first matching route is the best one.
    pub(crate) routes: Vec<CompiledRoute>,
}

#[derive(Debug)]
pub(crate) struct CompiledRoute {
    pub(crate) name: String,
    pub(crate) host: HostMatch,
    pub(crate) path_prefix: String,
    pub(crate) strip_prefix: bool,
    pub(crate) sets: Vec<CompiledSet>,
    pub(crate) total_weight: u64,
    pub(crate) timeouts: Timeouts,
    pub(crate) max_body_bytes: Option<u64>,
    pub(crate) request_headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) response_headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) retry: RetryPolicy,
    pub(crate) budget: RetryBudget,
    pub(crate) balance: Balance,
    pub(crate) outlier: OutlierPolicy,
    pub(crate) sticky_cookie: Option<String>,
    /// For requests answered before a backend set is chosen (maintenance pages included).
    pub(crate) route_metrics: Arc<SetMetrics>,
    pub(crate) maintenance: Option<CompiledMaintenance>,
}

#[derive(Debug)]
pub(crate) struct CompiledSet {
    pub(crate) name: String,
    pub(crate) weight: u64,
    pub(crate) endpoints: Vec<CompiledEndpoint>,
    pub(crate) next: AtomicUsize,
    pub(crate) metrics: Arc<SetMetrics>,
    /// Serialises ejection decisions so two failing endpoints cannot both pass the
    /// "another endpoint is still available" check and empty the set.
    pub(crate) eject_lock: Mutex<()>,
}

#[derive(Debug)]
pub(crate) struct CompiledEndpoint {
    pub(crate) id: String,
    pub(crate) addr: SocketAddr,
    pub(crate) runtime: Arc<EndpointRuntime>,
}

/// What compiling needs from the ingress: shared per-id and per-series state.
pub(crate) trait Resolver {
    fn endpoint(&self, id: &str) -> Arc<EndpointRuntime>;
    fn series(&self, route: &str, set: &str) -> Arc<SetMetrics>;
}

impl CompiledTable {
    pub(crate) fn compile(routes: &[Route], resolver: &dyn Resolver) -> Self {
        let mut routes: Vec<CompiledRoute> =
            routes.iter().map(|r| compile_route(r, resolver)).collect();
        routes.sort_by(|a, b| {
            (b.path_prefix.len(), host_rank(&b.host))
                .cmp(&(a.path_prefix.len(), host_rank(&a.host)))
        });
        Self { routes }
    }

    /// The best route for a normalised host (lowercase, no port) and a path.
    pub(crate) fn find(&self, host: &str, path: &str) -> Option<&CompiledRoute> {
        self.routes
            .iter()
            .find(|r| host_matches(&r.host, host) && prefix_matches(&r.path_prefix, path))
    }
}

fn compile_route(route: &Route, resolver: &dyn Resolver) -> CompiledRoute {
    let sets: Vec<CompiledSet> = route
        .backends
        .iter()
        .map(|set| CompiledSet {
            name: set.name.clone(),
            weight: u64::from(set.weight),
            endpoints: set
                .endpoints
                .iter()
                .map(|ep| CompiledEndpoint {
                    id: ep.id.clone(),
                    addr: ep.addr,
                    runtime: resolver.endpoint(&ep.id),
                })
                .collect(),
            next: AtomicUsize::new(0),
            metrics: resolver.series(&route.name, &set.name),
            eject_lock: Mutex::new(()),
        })
        .collect();
    CompiledRoute {
        name: route.name.clone(),
        host: route.host.clone(),
        path_prefix: route.path_prefix.clone(),
        strip_prefix: route.strip_prefix,
        total_weight: sets.iter().map(|s| s.weight).sum(),
        sets,
        timeouts: route.timeouts,
        max_body_bytes: route.max_body_bytes,
        request_headers: parse_headers(&route.request_headers),
        response_headers: parse_headers(&route.response_headers),
        retry: route.retry,
        budget: RetryBudget::new(route.retry.budget_ratio, route.retry.budget_reserve),
        balance: route.balance,
        outlier: route.outlier,
        sticky_cookie: route.sticky_cookie.clone(),
        route_metrics: resolver.series(&route.name, "-"),
        maintenance: route
            .maintenance
            .as_ref()
            .and_then(CompiledMaintenance::compile),
    }
}

/// Validated by [`crate::RouteTable::new`]; anything invalid here is dropped, not fatal.
fn parse_headers(pairs: &[(String, String)]) -> Vec<(HeaderName, HeaderValue)> {
    pairs
        .iter()
        .filter_map(|(k, v)| {
            Some((
                HeaderName::try_from(k.as_str()).ok()?,
                HeaderValue::try_from(v.as_str()).ok()?,
            ))
        })
        .collect()
}

fn host_rank(host: &HostMatch) -> (u8, usize) {
    match host {
        HostMatch::Exact(_) => (2, 0),
        // A longer wildcard suffix is the more specific one.
        HostMatch::Wildcard(pattern) => (1, pattern.len()),
        HostMatch::Any => (0, 0),
    }
}

fn host_matches(pattern: &HostMatch, host: &str) -> bool {
    match pattern {
        HostMatch::Exact(exact) => exact == host,
        HostMatch::Wildcard(pattern) => {
            // "*.shop.localhost" → suffix ".shop.localhost", with at least one label before it.
            let suffix = &pattern[1..];
            host.len() > suffix.len() && host.ends_with(suffix)
        }
        HostMatch::Any => true,
    }
}

/// Segment-aware prefix: `/api` matches `/api`, `/api/` and `/api/x`, never `/apix`.
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// The path the upstream sees when the route strips its prefix; always starts with `/`.
pub(crate) fn strip(prefix: &str, path: &str) -> String {
    let rest = path.strip_prefix(prefix).unwrap_or(path);
    if rest.starts_with('/') {
        rest.to_owned()
    } else {
        format!("/{rest}")
    }
}

/// The request's host for matching: lowercase, without port or trailing dot (borrowed
/// unless it had capitals).
pub(crate) fn normalise_host(raw: &str) -> Cow<'_, str> {
    let without_port = if let Some(rest) = raw.strip_prefix('[') {
        // An IPv6 literal: keep what is inside the brackets.
        rest.split(']').next().unwrap_or(rest)
    } else {
        raw.rsplit_once(':').map_or(raw, |(host, _)| host)
    };
    let host = without_port.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segments() {
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/x"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api/", "/api/x"));
    }

    #[test]
    fn strip_keeps_a_leading_slash() {
        assert_eq!(strip("/api", "/api/x"), "/x");
        assert_eq!(strip("/api", "/api"), "/");
        assert_eq!(strip("/api/", "/api/x"), "/x");
        assert_eq!(strip("/", "/x"), "/x");
    }

    #[test]
    fn hosts_normalise_and_match() {
        assert_eq!(normalise_host("Shop.Localhost:8080"), "shop.localhost");
        assert_eq!(normalise_host("[::1]:80"), "::1");
        assert_eq!(normalise_host("shop.localhost."), "shop.localhost");
        let wild = HostMatch::Wildcard("*.shop.localhost".into());
        assert!(host_matches(&wild, "a.shop.localhost"));
        assert!(host_matches(&wild, "a.b.shop.localhost"));
        assert!(!host_matches(&wild, "shop.localhost"));
        assert!(!host_matches(&wild, "ashop.localhost"));
    }
}
