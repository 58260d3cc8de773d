//! Request metrics per route and backend set: counts by status class, a fixed-bucket latency
//! histogram (time to response headers) with quantile estimates, requests in flight, bytes,
//! retries and ejections. Recording is a handful of relaxed atomic adds; [`MetricsSnapshot`]
//! is plain data, and [`render_prometheus`] turns it into Prometheus text.
//!
//! Series live in a registry keyed by (route, set) that outlives table swaps, so counters stay
//! monotonic across deploys as Prometheus expects.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds (a final +Inf bucket follows).
pub const LATENCY_BOUNDS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BOUNDS_MICROS: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];
const BUCKETS: usize = BOUNDS_MICROS.len() + 1;

/// Counters for one (route, set) pair.
#[derive(Debug, Default)]
pub(crate) struct SetMetrics {
    by_class: [AtomicU64; 5],
    buckets: [AtomicU64; BUCKETS],
    latency_sum_micros: AtomicU64,
    in_flight: AtomicI64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    retries: AtomicU64,
    ejections: AtomicU64,
    client_timeouts: AtomicU64,
}

impl SetMetrics {
    /// Counts the response status and its latency.
    pub(crate) fn record(&self, status: u16, latency: Duration) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Counts a request in flight until the guard is dropped (at the end of the response body).
    pub(crate) fn start(self: &Arc<Self>) -> InFlightRequest {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightRequest(self.clone())
    }

    pub(crate) fn add_bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_ejection(&self) {
        self.ejections.fetch_add(1, Ordering::Relaxed);
    }

    /// A request body or WebSocket tunnel the client left silent past its timeout.
    pub(crate) fn add_client_timeout(&self) {
        self.client_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self, route: &str, set: &str) -> SetMetricsSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SetMetricsSnapshot {
            route: route.to_owned(),
            set: set.to_owned(),
            requests_by_class: self.by_class.each_ref().map(load),
            latency: HistogramSnapshot {
                counts: self.buckets.each_ref().map(load).to_vec(),
                sum: Duration::from_micros(load(&self.latency_sum_micros)),
            },
            in_flight: self.in_flight.load(Ordering::Relaxed).max(0).unsigned_abs(),
            bytes_in: load(&self.bytes_in),
            bytes_out: load(&self.bytes_out),
            retries: load(&self.retries),
            ejections: load(&self.ejections),
            client_timeouts: load(&self.client_timeouts),
        }
    }
}

/// Decrements a set's in-flight gauge when dropped.
#[derive(Debug)]
pub(crate) struct InFlightRequest(Arc<SetMetrics>);

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why the ingress closed a client connection itself (rather than the client closing it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// Accepted while `max_connections` were open: closed at once.
    OverLimit,
    /// No request for the connection idle timeout (HTTP/2, or any connection between requests).
    Idle,
    /// The request head did not arrive within the header read timeout (HTTP/1.1, which
    /// includes a kept-alive connection waiting for its next request).
    HeaderTimeout,
    /// The client read nothing of what was written to it for the send timeout.
    SendTimeout,
}

impl CloseReason {
    const ALL: [CloseReason; 4] = [
        CloseReason::OverLimit,
        CloseReason::Idle,
        CloseReason::HeaderTimeout,
        CloseReason::SendTimeout,
    ];

    fn label(self) -> &'static str {
        match self {
            CloseReason::OverLimit => "over_limit",
            CloseReason::Idle => "idle",
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::SendTimeout => "send_timeout",
        }
    }
}

/// All series ever created, keyed by (route, set); the lock is taken on swaps and snapshots.
#[derive(Debug, Default)]
pub(crate) struct MetricsRegistry {
    series: Mutex<BTreeMap<(String, String), Arc<SetMetrics>>>,
    unmatched: AtomicU64,
    closed: [AtomicU64; 4],
}

impl MetricsRegistry {
    pub(crate) fn series(&self, route: &str, set: &str) -> Arc<SetMetrics> {
        let Ok(mut series) = self.series.lock() else {
            // A poisoned registry only loses metrics, never requests.
            return Arc::default();
        };
        series
            .entry((route.to_owned(), set.to_owned()))
            .or_default()
            .clone()
    }

    pub(crate) fn add_unmatched(&self) {
        self.unmatched.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_closed(&self, reason: CloseReason) {
        self.closed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let sets = match self.series.lock() {
            Ok(series) => series
                .iter()
                .map(|((route, set), m)| m.snapshot(route, set))
                .collect(),
            Err(_) => Vec::new(),
        };
        let closed = |reason: CloseReason| self.closed[reason as usize].load(Ordering::Relaxed);
        MetricsSnapshot {
            sets,
            unmatched_requests: self.unmatched.load(Ordering::Relaxed),
            connections_closed: ConnectionsClosed {
                over_limit: closed(CloseReason::OverLimit),
                idle: closed(CloseReason::Idle),
                header_timeout: closed(CloseReason::HeaderTimeout),
                send_timeout: closed(CloseReason::SendTimeout),
            },
        }
    }
}

/// Every series at one moment, sorted by route then set.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricsSnapshot {
    pub sets: Vec<SetMetricsSnapshot>,
    /// Requests that matched no route (answered 404).
    pub unmatched_requests: u64,
    /// Client connections the ingress closed itself, by reason.
    pub connections_closed: ConnectionsClosed,
}

/// Client connections closed by the ingress, by reason (see each field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionsClosed {
    /// Over `max_connections`: closed as soon as accepted.
    pub over_limit: u64,
    /// No request for the idle timeout.
    pub idle: u64,
    /// No complete request head within the header read timeout.
    pub header_timeout: u64,
    /// The client read nothing for the send timeout.
    pub send_timeout: u64,
}

impl ConnectionsClosed {
    fn get(&self, reason: CloseReason) -> u64 {
        match reason {
            CloseReason::OverLimit => self.over_limit,
            CloseReason::Idle => self.idle,
            CloseReason::HeaderTimeout => self.header_timeout,
            CloseReason::SendTimeout => self.send_timeout,
        }
    }

    /// Adds another ingress's counts (the control plane merges its proxies).
    pub fn add(&mut self, other: &ConnectionsClosed) {
        self.over_limit += other.over_limit;
        self.idle += other.idle;
        self.header_timeout += other.header_timeout;
        self.send_timeout += other.send_timeout;
    }
}

impl MetricsSnapshot {
    pub fn get(&self, route: &str, set: &str) -> Option<&SetMetricsSnapshot> {
        self.sets.iter().find(|s| s.route == route && s.set == set)
    }
}

/// One (route, set) series. `set` is `-` for requests answered before a set was chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct SetMetricsSnapshot {
    pub route: String,
    pub set: String,
    /// Responses by status class: index 0 is 1xx, 4 is 5xx.
    pub requests_by_class: [u64; 5],
    pub latency: HistogramSnapshot,
    pub in_flight: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub retries: u64,
    pub ejections: u64,
    /// Request bodies and WebSocket tunnels cut because the client stayed silent too long.
    pub client_timeouts: u64,
}

impl SetMetricsSnapshot {
    pub fn requests(&self) -> u64 {
        self.requests_by_class.iter().sum()
    }
}

/// Bucket counts (not cumulative) for [`LATENCY_BOUNDS`] plus a final +Inf bucket.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistogramSnapshot {
    pub counts: Vec<u64>,
    pub sum: Duration,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Estimates the `q` quantile (0..=1) by linear interpolation inside its bucket, as
    /// Prometheus's `histogram_quantile` does; the +Inf bucket reports the last finite bound.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * total as f64;
        let mut below = 0u64;
        for (i, &count) in self.counts.iter().enumerate() {
            if count > 0 && (below + count) as f64 >= rank {
                let Some(&upper) = LATENCY_BOUNDS.get(i) else {
                    return Some(Duration::from_secs_f64(LATENCY_BOUNDS[12]));
                };
                let lower = if i == 0 { 0.0 } else { LATENCY_BOUNDS[i - 1] };
                let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
                return Some(Duration::from_secs_f64(lower + (upper - lower) * within));
            }
            below += count;
        }
        None
    }

    pub fn p50(&self) -> Option<Duration> {
        self.quantile(0.5)
    }

    pub fn p90(&self) -> Option<Duration> {
        self.quantile(0.9)
    }

    pub fn p99(&self) -> Option<Duration> {
        self.quantile(0.99)
    }
}

/// Renders a snapshot in the Prometheus text exposition format (version 0.0.4).
pub fn render_prometheus(snapshot: &MetricsSnapshot) -> String {
    let mut out = String::new();
    render_requests(&mut out, snapshot);
    render_latency(&mut out, snapshot);
    type Field = fn(&SetMetricsSnapshot) -> u64;
    let simple: [(&str, &str, &str, Field); 6] = [
        (
            "http_requests_in_flight",
            "gauge",
            "Requests being proxied.",
            |s| s.in_flight,
        ),
        (
            "http_request_bytes_total",
            "counter",
            "Request body bytes received.",
            |s| s.bytes_in,
        ),
        (
            "http_response_bytes_total",
            "counter",
            "Response body bytes sent.",
            |s| s.bytes_out,
        ),
        (
            "http_retries_total",
            "counter",
            "Attempts retried on another endpoint.",
            |s| s.retries,
        ),
        (
            "http_endpoint_ejections_total",
            "counter",
            "Endpoints ejected by outlier detection.",
            |s| s.ejections,
        ),
        (
            "http_client_timeouts_total",
            "counter",
            "Request bodies and WebSocket tunnels cut after the client's silence.",
            |s| s.client_timeouts,
        ),
    ];
    for (name, kind, help, field) in simple {
        header(&mut out, name, kind, help);
        for s in &snapshot.sets {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(s), field(s));
        }
    }
    header(
        &mut out,
        "http_unmatched_requests_total",
        "counter",
        "Requests that matched no route.",
    );
    let _ = writeln!(
        out,
        "http_unmatched_requests_total {}",
        snapshot.unmatched_requests
    );
    header(
        &mut out,
        "http_connections_closed_total",
        "counter",
        "Client connections the ingress closed itself, by reason.",
    );
    for reason in CloseReason::ALL {
        let _ = writeln!(
            out,
            "http_connections_closed_total{{reason=\"{}\"}} {}",
            reason.label(),
            snapshot.connections_closed.get(reason)
        );
    }
    out
}

fn render_requests(out: &mut String, snapshot: &MetricsSnapshot) {
    header(
        out,
        "http_requests_total",
        "counter",
        "Responses by status class.",
    );
    for s in &snapshot.sets {
        for (i, count) in s.requests_by_class.iter().enumerate() {
            let _ = writeln!(
                out,
                "http_requests_total{{{},code_class=\"{}xx\"}} {count}",
                labels(s),
                i + 1
            );
        }
    }
}

fn render_latency(out: &mut String, snapshot: &MetricsSnapshot) {
    let name = "http_request_duration_seconds";
    header(out, name, "histogram", "Time to upstream response headers.");
    for s in &snapshot.sets {
        let labels = labels(s);
        let mut cumulative = 0;
        for (i, count) in s.latency.counts.iter().enumerate() {
            cumulative += count;
            let le = LATENCY_BOUNDS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            s.latency.sum.as_secs_f64()
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn labels(s: &SetMetricsSnapshot) -> String {
    format!("route=\"{}\",set=\"{}\"", escape(&s.route), escape(&s.set))
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_classes_buckets_and_quantiles() {
        let m = SetMetrics::default();
        for _ in 0..90 {
            m.record(200, Duration::from_micros(1_500));
        }
        for _ in 0..10 {
            m.record(503, Duration::from_millis(200));
        }
        m.record(99, Duration::from_secs(60));
        let s = m.snapshot("r", "s");
        assert_eq!(s.requests_by_class, [1, 90, 0, 0, 10]);
        assert_eq!(s.latency.count(), 101);
        let p50 = s.latency.p50().unwrap();
        assert!(
            p50 > Duration::from_millis(1) && p50 <= Duration::from_micros(2_500),
            "{p50:?}"
        );
        let p99 = s.latency.p99().unwrap();
        assert!(
            p99 > Duration::from_millis(100) && p99 <= Duration::from_millis(250),
            "{p99:?}"
        );
        assert_eq!(s.latency.quantile(1.0), Some(Duration::from_secs(10)));
        assert_eq!(HistogramSnapshot::default().p50(), None);
    }

    #[test]
    fn prometheus_text_has_labelled_series() {
        let registry = MetricsRegistry::default();
        registry
            .series("web", "can\"ary")
            .record(204, Duration::from_millis(3));
        registry.add_unmatched();
        let text = render_prometheus(&registry.snapshot());
        assert!(
            text.contains(
                "http_requests_total{route=\"web\",set=\"can\\\"ary\",code_class=\"2xx\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains(
            "http_request_duration_seconds_bucket{route=\"web\",set=\"can\\\"ary\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "http_request_duration_seconds_bucket{route=\"web\",set=\"can\\\"ary\",le=\"+Inf\"} 1"
        ));
        assert!(text.contains("http_unmatched_requests_total 1"));
        assert!(text.contains("# TYPE http_request_duration_seconds histogram"));
    }
}
