//! What a deploy needs from the ingress: who serves a service's routes, draining, and request
//! statistics per instance set. The control plane implements it over its route actor; the
//! deploy engine never sees the proxy itself.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future, so the trait stays object-safe.
pub type TrafficFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which instance sets of a service receive its traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// Every ready instance of every set, evenly (the normal state, and rolling deploys).
    All,
    /// Only these sets, by relative weight; a set with weight 0 gets no new requests but its
    /// requests in flight are still tracked. With `sticky`, a client keeps the set it got
    /// first (a cookie), so one user does not flip between releases.
    Weighted {
        sets: Vec<(String, u32)>,
        sticky: bool,
    },
}

/// Cumulative request statistics of one instance set since the ingress started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SetStats {
    pub requests: u64,
    /// Responses with a 5xx status, and requests that got no response.
    pub errors: u64,
    /// Endpoints the ingress took out of rotation after consecutive failures (passive health).
    pub ejections: u64,
    /// Latency histogram: (upper bound in seconds, count in that bucket, not cumulative); the
    /// last bucket's bound is `f64::INFINITY`.
    pub latency: Vec<(f64, u64)>,
}

impl SetStats {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &SetStats) -> SetStats {
        let latency = self
            .latency
            .iter()
            .enumerate()
            .map(|(i, (bound, count))| {
                let before = earlier.latency.get(i).map_or(0, |(_, c)| *c);
                (*bound, count.saturating_sub(before))
            })
            .collect();
        SetStats {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            ejections: self.ejections.saturating_sub(earlier.ejections),
            latency,
        }
    }

    /// Share of requests that failed, 0 without requests.
    pub fn error_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The `q` quantile of latency in seconds, interpolated inside its bucket as Prometheus's
    /// `histogram_quantile` does; `None` without requests.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().map(|(_, c)| c).sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        let mut lower = 0.0;
        for (bound, count) in &self.latency {
            if *count > 0 && (below + count) as f64 >= rank {
                if bound.is_infinite() {
                    return Some(lower);
                }
                let within = (rank - below as f64) / *count as f64;
                return Some(lower + (bound - lower) * within.clamp(0.0, 1.0));
            }
            below += count;
            if bound.is_finite() {
                lower = *bound;
            }
        }
        Some(lower)
    }
}

/// The ingress, as deploys see it.
pub trait Traffic: Send + Sync + std::fmt::Debug {
    /// Sets who serves `service`; returns once the proxy's table says so.
    fn split(&self, service: &str, split: Split) -> TrafficFuture<'_, ()>;
    /// Takes these instances (`set/index` ids) out of rotation and waits, at most `deadline`,
    /// until their requests in flight are done.
    fn drain(&self, instances: Vec<String>, deadline: Duration) -> TrafficFuture<'_, ()>;
    /// Statistics per set of `service`'s routes (sets named as in [`Split::Weighted`]).
    fn stats(&self, service: &str) -> TrafficFuture<'_, BTreeMap<String, SetStats>>;
    /// A stable address for `service` that load-balances over its ready instances whatever
    /// deploys do (the same one on every call, and across restarts when the port is free).
    fn expose(&self, service: &str) -> TrafficFuture<'_, Result<std::net::SocketAddr, String>>;
    /// Releases the address of a service that is gone.
    fn unexpose(&self, service: &str) -> TrafficFuture<'_, ()>;
    /// Whether any route sends requests to `service`.
    fn routed(&self, service: &str) -> bool;
}

/// Traffic for a control plane without an ingress: nothing is routed.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTraffic;

impl Traffic for NoTraffic {
    fn split(&self, _service: &str, _split: Split) -> TrafficFuture<'_, ()> {
        Box::pin(async {})
    }
    fn drain(&self, _instances: Vec<String>, _deadline: Duration) -> TrafficFuture<'_, ()> {
        Box::pin(async {})
    }
    fn stats(&self, _service: &str) -> TrafficFuture<'_, BTreeMap<String, SetStats>> {
        Box::pin(async { BTreeMap::new() })
    }
    fn expose(&self, service: &str) -> TrafficFuture<'_, Result<std::net::SocketAddr, String>> {
        let message = format!("no ingress runs to give {service} an address");
        Box::pin(async move { Err(message) })
    }
    fn unexpose(&self, _service: &str) -> TrafficFuture<'_, ()> {
        Box::pin(async {})
    }
    fn routed(&self, _service: &str) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_buckets_and_deltas_subtract() {
        let earlier = SetStats {
            requests: 10,
            errors: 1,
            ejections: 0,
            latency: vec![(0.01, 10), (0.1, 0), (f64::INFINITY, 0)],
        };
        let now = SetStats {
            requests: 110,
            errors: 3,
            ejections: 1,
            latency: vec![(0.01, 60), (0.1, 50), (f64::INFINITY, 0)],
        };
        let delta = now.since(&earlier);
        assert_eq!(delta.requests, 100);
        assert_eq!(delta.ejections, 1);
        assert!((delta.error_ratio() - 0.02).abs() < 1e-9);
        // 50 in the first bucket, 50 in the second: p99 is near the top of the second.
        let p99 = delta.quantile(0.99).unwrap_or_default();
        assert!((p99 - (0.01 + 0.09 * 0.98)).abs() < 1e-9, "{p99}");
        assert_eq!(SetStats::default().quantile(0.99), None);
    }
}
