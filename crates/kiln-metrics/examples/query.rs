//! In-process query benchmark: the dashboard's range queries over a store holding `targets` ×
//! 500 series scraped every second for 10 minutes (counters per route and status, a latency
//! histogram, memory gauges), like the live comparison in docs/benchmarks.md but without
//! the network and the scrapers, so the evaluator's own cost shows.
//!
//! Run: `cargo run --release -p kiln-metrics --example query -- [targets] [runs]`
//! Prints, per query, the median and worst wall time over the runs.

use std::time::{Duration, Instant};

use kiln_metrics::query::Engine;
use kiln_metrics::{Labels, Options, Store};

const ROUTES: usize = 10;
const CODES: [&str; 3] = ["200", "404", "500"];
const BUCKETS: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let targets: usize = args.next().map_or(Ok(20), |a| a.parse())?;
    let runs: usize = args.next().map_or(Ok(10), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), Options::default())?;
    let mut series = Vec::new();
    for target in 0..targets {
        let instance = format!("{target}");
        for route in 0..ROUTES {
            let route = format!("/api/{route}");
            for code in CODES {
                series.push((
                    Labels::new([
                        ("__name__", "http_requests_total".to_owned()),
                        ("instance", instance.clone()),
                        ("route", route.clone()),
                        ("code", code.to_owned()),
                    ]),
                    Kind::Counter,
                ));
            }
            for le in BUCKETS {
                series.push((
                    Labels::new([
                        (
                            "__name__",
                            "http_request_duration_seconds_bucket".to_owned(),
                        ),
                        ("instance", instance.clone()),
                        ("route", route.clone()),
                        ("le", le.to_owned()),
                    ]),
                    Kind::Counter,
                ));
            }
        }
        // Fill to 500 series per target with memory gauges.
        let filler = 500 - ROUTES * (CODES.len() + BUCKETS.len());
        for area in 0..filler {
            series.push((
                Labels::new([
                    ("__name__", "app_memory_bytes".to_owned()),
                    ("instance", instance.clone()),
                    ("area", format!("a{area}")),
                ]),
                Kind::Gauge,
            ));
        }
    }
    let refs: Vec<_> = series.iter().map(|(l, _)| store.series_ref(l)).collect();
    let seconds = 600;
    // Ten minutes ago, so retention keeps every sample.
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    let start = now_ms - seconds * 1000;
    let mut values = vec![0.0f64; refs.len()];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for s in 0..seconds {
        let t = start + s * 1000;
        let batch: Vec<_> = refs
            .iter()
            .zip(values.iter_mut())
            .zip(&series)
            .map(|((r, v), (_, kind))| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                match kind {
                    Kind::Counter => *v += (rng % 20) as f64,
                    Kind::Gauge => *v = 1e8 + (rng % 1_000_000) as f64,
                }
                (r, t, *v)
            })
            .collect();
        store.append_refs(&batch);
    }
    let end = start + (seconds - 1) * 1000;
    let queries = [
        (
            "req rate by route",
            "sum by (route) (rate(http_requests_total[1m]))",
        ),
        (
            "error ratio",
            "sum(rate(http_requests_total{code=~\"5..\"}[1m])) / sum(rate(http_requests_total[1m]))",
        ),
        (
            "p99 latency by route",
            "histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket[1m])))",
        ),
        ("memory by instance", "sum by (instance) (app_memory_bytes)"),
    ];
    let engine = Engine::new(&store);
    println!(
        "{} series, {} samples; range queries over the last 5 min at a 15 s step",
        refs.len(),
        refs.len() * seconds as usize
    );
    for (name, q) in queries {
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
        println!(
            "{name:<22} median {:>8.2} ms   max {:>8.2} ms   ({points} points)",
            times[times.len() / 2].as_secs_f64() * 1000.0,
            times[times.len() - 1].as_secs_f64() * 1000.0
        );
    }
    Ok(())
}

enum Kind {
    Counter,
    Gauge,
}
