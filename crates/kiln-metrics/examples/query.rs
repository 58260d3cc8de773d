//! In-process query benchmark: the dashboard's six range queries (those of benches/metrics.py)
//! over a store holding `targets` × 501 series scraped every second for 10 minutes, shaped
//! like benches/metrics.py's targets (request counters per route, method and code; a latency
//! histogram per route; memory and queue gauges; cache counters; `up` per instance), like the
//! live comparison in docs/benchmarks.md but without the network and the scrapers, so the
//! evaluator's own cost shows.
//!
//! Run: `cargo run --release -p kiln-metrics --example query -- [targets] [runs] [only]
//! [interval] [seconds]` (`only`: run just the queries whose name contains it, for profiling
//! one, `-` for all). With the defaults (a scrape every second for 600 s) the first half is
//! persisted into one segment; with `interval` and `seconds` given, the store persists as the
//! live one does (every million samples, each persist merged into its window's segment), so
//! `100 20 - 15 1800` reads the 30th minute of the live comparison's shape.
//! Prints, per query, the median, the 99th percentile (nearest rank) and the worst wall time
//! over the runs.

use std::time::{Duration, Instant};

use kiln_metrics::query::Engine;
use kiln_metrics::{Labels, Options, Store};

const ROUTES: usize = 10;
const METHODS: [&str; 2] = ["GET", "POST"];
const CODES: [&str; 3] = ["200", "404", "500"];
const BUCKETS: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];
const POOLS: usize = 100;

/// The dashboard's queries, as benches/metrics.py sends them.
const QUERIES: [(&str, &str); 6] = [
    (
        "req rate by route",
        "sum by (route) (rate(http_requests_total[1m]))",
    ),
    (
        "error ratio",
        "sum(rate(http_requests_total{code=\"500\"}[1m])) / sum(rate(http_requests_total[1m]))",
    ),
    (
        "p99 latency by route",
        "histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket[1m])))",
    ),
    ("memory by instance", "sum by (instance) (app_memory_bytes)"),
    ("up by service", "sum by (service) (up)"),
    (
        "top5 cache hit rate",
        "topk(5, sum by (cache) (rate(app_cache_hits_total[1m])))",
    ),
];

/// How a series' value moves from one scrape to the next.
#[derive(Clone, Copy)]
enum Kind {
    /// Grows by up to `max_step` a scrape.
    Counter { max_step: u64 },
    /// Moves around 1e8.
    Gauge,
    /// Stays at one value (`up`).
    Constant(f64),
    /// A cumulative histogram bucket: grows by the previous bucket's (same route) growth plus
    /// its own, so counts grow with `le` as in a real exposition.
    Bucket { first: bool },
}

fn series_of(targets: usize) -> Vec<(Labels, Kind)> {
    let mut out = Vec::new();
    for target in 0..targets {
        let instance = format!("127.0.0.1:{}", 9000 + target);
        let with_instance = |pairs: Vec<(&'static str, String)>| {
            Labels::new(pairs.into_iter().chain([
                ("instance", instance.clone()),
                ("service", "api".to_owned()),
            ]))
        };
        out.push((
            with_instance(vec![("__name__", "up".to_owned())]),
            Kind::Constant(1.0),
        ));
        for route in 0..ROUTES {
            let route = format!("/r{route}");
            for method in METHODS {
                for code in CODES {
                    let max_step = match code {
                        "200" => 40,
                        "404" => 4,
                        _ => 2,
                    };
                    out.push((
                        with_instance(vec![
                            ("__name__", "http_requests_total".to_owned()),
                            ("route", route.clone()),
                            ("method", method.to_owned()),
                            ("code", code.to_owned()),
                        ]),
                        Kind::Counter { max_step },
                    ));
                }
            }
            for (i, le) in BUCKETS.iter().enumerate() {
                out.push((
                    with_instance(vec![
                        (
                            "__name__",
                            "http_request_duration_seconds_bucket".to_owned(),
                        ),
                        ("route", route.clone()),
                        ("le", (*le).to_owned()),
                    ]),
                    Kind::Bucket { first: i == 0 },
                ));
            }
            for name in [
                "http_request_duration_seconds_sum",
                "http_request_duration_seconds_count",
            ] {
                out.push((
                    with_instance(vec![
                        ("__name__", name.to_owned()),
                        ("route", route.clone()),
                    ]),
                    Kind::Counter { max_step: 40 },
                ));
            }
        }
        for pool in 0..POOLS {
            out.push((
                with_instance(vec![
                    ("__name__", "app_memory_bytes".to_owned()),
                    ("pool", format!("p{pool}")),
                ]),
                Kind::Gauge,
            ));
            out.push((
                with_instance(vec![
                    ("__name__", "app_queue_depth".to_owned()),
                    ("queue", format!("q{pool}")),
                ]),
                Kind::Gauge,
            ));
            out.push((
                with_instance(vec![
                    ("__name__", "app_cache_hits_total".to_owned()),
                    ("cache", format!("c{pool}")),
                ]),
                Kind::Counter { max_step: 30 },
            ));
        }
    }
    out
}

/// The `p`-th percentile of sorted durations, by nearest rank.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let targets: usize = args.next().map_or(Ok(20), |a| a.parse())?;
    let runs: usize = args.next().map_or(Ok(20), |a| a.parse())?.max(1);
    let only = args.next().filter(|o| o != "-").unwrap_or_default();
    let interval: i64 = args.next().map_or(Ok(1), |a| a.parse())?;
    let seconds: i64 = args.next().map_or(Ok(600), |a| a.parse())?;
    let live_shape = interval > 1 || seconds != 600;
    let dir = tempfile::tempdir()?;
    // Persisting only when told to, half way through, keeps the store's background work out
    // of the measurements: the queries then read the first half from a segment and the second
    // half from the head, every run alike.
    let store = Store::open(
        dir.path(),
        Options {
            persist_after_samples: usize::MAX,
            persist_interval: Duration::from_secs(24 * 3600),
            ..Options::default()
        },
    )?;
    let series = series_of(targets);
    let refs: Vec<_> = series.iter().map(|(l, _)| store.series_ref(l)).collect();
    // `seconds` ago, so retention keeps every sample.
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    let start = now_ms - seconds * 1000;
    let mut values = vec![0.0f64; refs.len()];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let live_persist_after = Options::default().persist_after_samples;
    let mut unpersisted = 0usize;
    for s in (0..seconds).step_by(interval.max(1) as usize) {
        if live_shape {
            if unpersisted >= live_persist_after {
                store.persist()?;
                unpersisted = 0;
            }
        } else if s == seconds / 2 {
            store.persist()?;
        }
        unpersisted += refs.len();
        let t = start + s * 1000;
        let mut below_growth = 0.0;
        for (v, (_, kind)) in values.iter_mut().zip(&series) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            match *kind {
                Kind::Counter { max_step } => *v += (rng % max_step) as f64,
                Kind::Gauge => *v = 1e8 + (rng % 1_000_000) as f64,
                Kind::Constant(c) => *v = c,
                Kind::Bucket { first } => {
                    let growth = if first { 0.0 } else { below_growth } + (rng % 8) as f64;
                    *v += growth;
                    below_growth = growth;
                }
            }
        }
        let batch: Vec<_> = refs.iter().zip(&values).map(|(r, v)| (r, t, *v)).collect();
        store.append_refs(&batch);
    }
    store.flush()?;
    let end = start + (seconds - interval) * 1000;
    let engine = Engine::new(&store);
    println!(
        "{} series, {} samples, {} segments; range queries over the last 5 min at a 15 s step, {runs} runs each",
        refs.len(),
        refs.len() * (seconds / interval.max(1)) as usize,
        store.stats().segments,
    );
    for (name, q) in QUERIES.into_iter().filter(|(name, _)| name.contains(&only)) {
        let mut times: Vec<Duration> = (0..runs)
            .map(|_| {
                let began = Instant::now();
                let result = engine.query_range(q, end - 300_000, end, 15_000);
                assert!(result.is_ok(), "{q}: {result:?}");
                began.elapsed()
            })
            .collect();
        times.sort();
        let points = match engine.query_range(q, end - 300_000, end, 15_000) {
            Ok(kiln_metrics::query::Value::Matrix(m)) => {
                m.iter().map(|s| s.samples.len()).sum::<usize>()
            }
            _ => 0,
        };
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{name:<22} median {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms   ({points} points)",
            ms(percentile(&times, 50.0)),
            ms(percentile(&times, 99.0)),
            ms(times[times.len() - 1]),
        );
    }
    Ok(())
}
