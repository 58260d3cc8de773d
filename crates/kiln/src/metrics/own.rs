//! The control plane's own metrics, served at `/metrics` in the Prometheus text format (checked
//! by `promtool check metrics` in the tests): applies and reconcile passes with their durations,
//! supervisor events and instances, ingress totals, the store's size and WAL, and scraping.
//! Counters the controller and the event recorder bump live here; the rest is read when
//! rendered.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kiln_supervisor::{InstanceState, InstanceStatus};

/// Upper bounds of the duration histograms, in seconds.
const BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0];

/// A histogram of durations, rendered with cumulative buckets.
#[derive(Debug, Default)]
struct Histogram {
    inner: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let Ok(mut h) = self.inner.lock() else { return };
        if h.0.is_empty() {
            h.0 = vec![0; BUCKETS.len()];
        }
        for (count, bound) in h.0.iter_mut().zip(BUCKETS) {
            if secs <= bound {
                *count += 1;
            }
        }
        h.1 += secs;
        h.2 += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let (buckets, sum, count) = self.inner.lock().map(|h| h.clone()).unwrap_or_default();
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let n = buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Counters kept by the control plane.
#[derive(Debug, Default)]
pub struct Own {
    applies_ok: AtomicU64,
    applies_failed: AtomicU64,
    apply_seconds: Histogram,
    passes_ok: AtomicU64,
    passes_failed: AtomicU64,
    pass_seconds: Histogram,
    supervisor_events: Mutex<BTreeMap<&'static str, u64>>,
}

impl Own {
    /// Records an apply (from the CLI or the first apply).
    pub fn apply_done(&self, ok: bool, took: Duration) {
        let c = if ok {
            &self.applies_ok
        } else {
            &self.applies_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
        self.apply_seconds.observe(took);
    }

    /// Records a reconcile pass.
    pub fn pass_done(&self, ok: bool, took: Duration) {
        let c = if ok {
            &self.passes_ok
        } else {
            &self.passes_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
        self.pass_seconds.observe(took);
    }

    /// Records a supervisor event by its kind (`instance.restarting`, ...).
    pub fn supervisor_event(&self, kind: &'static str) {
        if let Ok(mut m) = self.supervisor_events.lock() {
            *m.entry(kind).or_default() += 1;
        }
    }
}

/// What `/metrics` reads besides [`Own`].
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The supervisor's instances.
    pub instances: Vec<InstanceStatus>,
    /// The ingress's counters, when there is an ingress.
    pub ingress: Option<kiln_ingress::MetricsSnapshot>,
    /// The store's sizes, when metrics are recorded.
    pub store: Option<kiln_metrics::Stats>,
    /// Scrape targets and totals: (targets, scrapes, failures, samples).
    pub scrapes: (usize, u64, u64, u64),
    /// The process's resident memory.
    pub rss_bytes: Option<u64>,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn one(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// The exposition, Prometheus text format 0.0.4.
pub fn render(own: &Own, snap: &Snapshot) -> String {
    let mut out = String::new();
    let name = "kiln_applies_total";
    family(
        &mut out,
        name,
        "counter",
        "Applies run by the control plane, by result.",
    );
    let _ = writeln!(
        out,
        "{name}{{result=\"success\"}} {}\n{name}{{result=\"failure\"}} {}",
        own.applies_ok.load(Ordering::Relaxed),
        own.applies_failed.load(Ordering::Relaxed)
    );
    own.apply_seconds.render(
        &mut out,
        "kiln_apply_duration_seconds",
        "How long applies took.",
    );
    let name = "kiln_reconcile_passes_total";
    family(&mut out, name, "counter", "Reconcile passes, by result.");
    let _ = writeln!(
        out,
        "{name}{{result=\"success\"}} {}\n{name}{{result=\"failure\"}} {}",
        own.passes_ok.load(Ordering::Relaxed),
        own.passes_failed.load(Ordering::Relaxed)
    );
    own.pass_seconds.render(
        &mut out,
        "kiln_reconcile_duration_seconds",
        "How long reconcile passes took.",
    );
    let name = "kiln_supervisor_events_total";
    family(
        &mut out,
        name,
        "counter",
        "Supervisor events (starts, exits, restarts, probe failures), by kind.",
    );
    if let Ok(events) = own.supervisor_events.lock() {
        for (kind, n) in events.iter() {
            let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {n}");
        }
    }
    let name = "kiln_supervisor_instances";
    family(&mut out, name, "gauge", "Service instances, by state.");
    let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
    for i in &snap.instances {
        *by_state.entry(state_name(&i.state)).or_default() += 1;
    }
    for (state, n) in by_state {
        let _ = writeln!(out, "{name}{{state=\"{state}\"}} {n}");
    }
    one(
        &mut out,
        "kiln_supervisor_instance_restarts",
        "gauge",
        "Restarts of the instances running now, summed.",
        snap.instances
            .iter()
            .map(|i| u64::from(i.restarts))
            .sum::<u64>(),
    );
    if let Some(ingress) = &snap.ingress {
        let name = "kiln_ingress_requests_total";
        family(
            &mut out,
            name,
            "counter",
            "Requests answered by the ingress, by status class (unmatched: no route).",
        );
        let mut classes = [0u64; 5];
        for set in &ingress.sets {
            for (total, n) in classes.iter_mut().zip(set.requests_by_class) {
                *total += n;
            }
        }
        for (i, n) in classes.iter().enumerate() {
            let _ = writeln!(out, "{name}{{code=\"{}xx\"}} {n}", i + 1);
        }
        let _ = writeln!(
            out,
            "{name}{{code=\"unmatched\"}} {}",
            ingress.unmatched_requests
        );
        one(
            &mut out,
            "kiln_ingress_in_flight_requests",
            "gauge",
            "Requests the ingress is forwarding now.",
            ingress.sets.iter().map(|s| s.in_flight).sum::<u64>(),
        );
    }
    if let Some(store) = &snap.store {
        one(
            &mut out,
            "kiln_tsdb_head_series",
            "gauge",
            "Series in the metrics store's head.",
            store.head_series,
        );
        one(
            &mut out,
            "kiln_tsdb_head_samples",
            "gauge",
            "Samples in the metrics store's head not yet in a segment.",
            store.head_samples,
        );
        one(
            &mut out,
            "kiln_tsdb_segments",
            "gauge",
            "Segment files of the metrics store.",
            store.segments,
        );
        one(
            &mut out,
            "kiln_tsdb_segment_bytes",
            "gauge",
            "Bytes of the metrics store's segment files.",
            store.segment_bytes,
        );
        one(
            &mut out,
            "kiln_tsdb_wal_written_bytes_total",
            "counter",
            "Bytes written to the metrics store's write-ahead log.",
            store.wal_bytes_written,
        );
        one(
            &mut out,
            "kiln_tsdb_wal_fsyncs_total",
            "counter",
            "Fsyncs of the metrics store's write-ahead log.",
            store.wal_syncs,
        );
    }
    let (targets, scrapes, failures, samples) = snap.scrapes;
    one(
        &mut out,
        "kiln_scrape_targets",
        "gauge",
        "Instances scraped for metrics.",
        targets,
    );
    one(
        &mut out,
        "kiln_scrapes_total",
        "counter",
        "Scrapes attempted.",
        scrapes,
    );
    one(
        &mut out,
        "kiln_scrape_failures_total",
        "counter",
        "Scrapes that failed (timeout, error status, malformed text, over the sample limit).",
        failures,
    );
    one(
        &mut out,
        "kiln_scrape_samples_total",
        "counter",
        "Samples recorded from scrapes.",
        samples,
    );
    if let Some(rss) = snap.rss_bytes {
        one(
            &mut out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            rss,
        );
    }
    out
}

fn state_name(state: &InstanceState) -> &'static str {
    match state {
        InstanceState::Starting => "starting",
        InstanceState::Running => "running",
        InstanceState::Ready => "ready",
        InstanceState::Unhealthy => "unhealthy",
        InstanceState::Backoff { .. } => "backoff",
        InstanceState::Stopping => "stopping",
        InstanceState::Stopped => "stopped",
        InstanceState::Failed => "failed",
    }
}

/// This process's resident memory, from /proc.
pub fn own_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
