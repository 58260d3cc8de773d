//! In-process scrape benchmark: memory per series when `targets` × `series` are scraped from
//! Prometheus text for `rounds` rounds one second apart, the way the control plane scrapes
//! (target labels added, staleness tracked), without the network.
//!
//! Run: `cargo run --release -p kiln-metrics --example scrape -- [targets] [series] [rounds] [mode]`
//! (defaults 20 × 500 × 60; `mode` is `cached`, the library's per-target scrape cache, or
//! `naive`, which parses every line into fresh labels and resolves them in the store each
//! round, as the control plane did before the cache, or `churn`: cached, but every 10 rounds
//! each target restarts under a new `instance` label (a new pod), its old series end, and the
//! store persists, which removes the series idle since the previous persist from the head;
//! or `persist`: cached, and the store persists every 20 rounds, printing RSS around each
//! persist (with 100 × 500 series, a million samples: the store's default persist size).
//! The exposition text is that of
//! benches/metrics.py's targets: request counters, a 12-bucket histogram with its sum and count,
//! memory gauges in 4 KiB pages, queue gauges that rarely change, cache counters.
//!
//! Prints the resident memory (VmRSS, after a WAL flush) per series, before and after the
//! rounds, and the ingestion time. Run under `heaptrack` for heap bytes by allocation site.

mod common;

use common::rss_bytes;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use kiln_metrics::exposition::{Format, parse_exposition};
use kiln_metrics::scrape::TargetCache;
use kiln_metrics::{Labels, Store};

/// A xorshift generator: deterministic, so runs compare.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const BUCKETS: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];

/// One simulated target: 500 series per `scale`, values advanced once a round.
struct Generator {
    rng: Rng,
    requests: Vec<u64>,
    histogram: Vec<[u64; 12]>,
    sums: Vec<f64>,
    memory: Vec<u64>,
    queues: Vec<u64>,
    caches: Vec<u64>,
}

impl Generator {
    fn new(seed: u64, series: usize) -> Generator {
        let scale = (series / 500).max(1);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let memory = (0..100 * scale)
            .map(|_| (rng.below(1 << 16) + 256) * 4096)
            .collect();
        Generator {
            rng,
            requests: vec![0; 60],
            histogram: vec![[0; 12]; 10],
            sums: vec![0.0; 10],
            memory,
            queues: vec![0; 100 * scale],
            caches: vec![0; 100 * scale],
        }
    }

    fn advance(&mut self) {
        let rng = &mut self.rng;
        for (i, r) in self.requests.iter_mut().enumerate() {
            *r += rng.below([40, 4, 1][i % 3]);
        }
        for (counts, sum) in self.histogram.iter_mut().zip(&mut self.sums) {
            for _ in 0..rng.below(35) + 5 {
                let bucket = (rng.below(6) + rng.below(7)) as usize;
                for c in &mut counts[bucket..] {
                    *c += 1;
                }
                *sum += [
                    0.004, 0.008, 0.02, 0.04, 0.09, 0.2, 0.4, 0.9, 2.0, 4.0, 9.0, 20.0,
                ][bucket]
                    + rng.below(1000) as f64 * 1e-6;
            }
        }
        for m in &mut self.memory {
            if rng.below(10) < 3 {
                *m = (*m + rng.below(129) * 4096)
                    .saturating_sub(64 * 4096)
                    .max(4096);
            }
        }
        for q in &mut self.queues {
            if rng.below(20) == 0 {
                *q = rng.below(5);
            }
        }
        for c in &mut self.caches {
            *c += rng.below(30);
        }
    }

    fn text(&self) -> String {
        let mut out = String::with_capacity(40_000);
        out.push_str("# TYPE http_requests counter\n");
        for (i, v) in self.requests.iter().enumerate() {
            let (route, method, code) = (
                i / 6,
                ["GET", "POST"][i / 3 % 2],
                ["200", "404", "500"][i % 3],
            );
            let _ = writeln!(
                out,
                "http_requests_total{{method=\"{method}\",route=\"/r{route}\",code=\"{code}\"}} {v}"
            );
        }
        out.push_str("# TYPE http_request_duration_seconds histogram\n");
        for (route, (counts, sum)) in self.histogram.iter().zip(&self.sums).enumerate() {
            for (le, n) in BUCKETS.iter().zip(counts) {
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{route=\"/r{route}\",le=\"{le}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "http_request_duration_seconds_sum{{route=\"/r{route}\"}} {sum:.6}"
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_count{{route=\"/r{route}\"}} {}",
                counts[11]
            );
        }
        let gauges = [
            ("app_memory_bytes", "gauge", "pool", "p", &self.memory),
            ("app_queue_depth", "gauge", "queue", "q", &self.queues),
            ("app_cache_hits", "counter", "cache", "c", &self.caches),
        ];
        for (family, kind, label, prefix, values) in gauges {
            let _ = writeln!(out, "# TYPE {family} {kind}");
            let name = if kind == "counter" {
                format!("{family}_total")
            } else {
                family.to_owned()
            };
            for (i, v) in values.iter().enumerate() {
                let _ = writeln!(out, "{name}{{{label}=\"{prefix}{i}\"}} {v}");
            }
        }
        out
    }
}

/// The labels the control plane adds to a target's samples (`epoch`: its restarts so far).
fn target_labels(target: usize, epoch: i64) -> Vec<(String, String)> {
    let instance = if epoch == 0 {
        target.to_string()
    } else {
        format!("{target}-{epoch}")
    };
    vec![
        ("instance".to_owned(), instance),
        ("job".to_owned(), "app".to_owned()),
        ("release".to_owned(), "sha256:3f2a1c9e".to_owned()),
        ("service".to_owned(), "app".to_owned()),
    ]
}

/// The control plane's scrape before the per-target cache: fresh labels for every sample.
struct Naive {
    own: Vec<(String, String)>,
    previous: HashSet<Labels>,
}

impl Naive {
    fn scrape(&mut self, store: &Store, text: &str, t: i64) -> usize {
        let Ok(parsed) = parse_exposition(text, Format::Prometheus) else {
            return 0;
        };
        let mut seen = HashSet::with_capacity(parsed.samples.len());
        let mut batch = Vec::with_capacity(parsed.samples.len());
        for sample in parsed.samples {
            let labels = Labels::new(
                sample
                    .labels
                    .iter()
                    .map(|l| (l.name.as_str(), l.value.as_str()))
                    .chain(self.own.iter().map(|(n, v)| (n.as_str(), v.as_str()))),
            );
            batch.push((
                labels.clone(),
                sample.timestamp_ms.unwrap_or(t),
                sample.value,
            ));
            seen.insert(labels);
        }
        let stats = store.append_batch(&batch);
        self.previous = seen;
        stats.appended
    }
}

enum Scraper {
    Naive(Naive),
    Cached(TargetCache),
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let targets: usize = args.next().map_or(Ok(20), |a| a.parse())?;
    let series: usize = args.next().map_or(Ok(500), |a| a.parse())?;
    let rounds: i64 = args.next().map_or(Ok(60), |a| a.parse())?;
    let mode = args.next().unwrap_or_else(|| "cached".to_owned());
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), common::head_only())?;
    let mut generators: Vec<Generator> = (0..targets)
        .map(|i| Generator::new(i as u64, series))
        .collect();
    let mut scrapers: Vec<Scraper> = (0..targets)
        .map(|i| match mode.as_str() {
            "naive" => Ok(Scraper::Naive(Naive {
                own: target_labels(i, 0),
                previous: HashSet::new(),
            })),
            "cached" | "churn" | "persist" => {
                Ok(Scraper::Cached(TargetCache::new(target_labels(i, 0))))
            }
            other => Err(format!(
                "unknown mode {other:?} (naive, cached, churn or persist)"
            )),
        })
        .collect::<Result<_, _>>()?;
    let rss_before = rss_bytes();
    let start_ms = 1_700_000_000_000;
    let mut appended = 0usize;
    let mut ingest = Duration::ZERO;
    let mut peak_head = 0;
    for round in 0..rounds {
        let t = start_ms + round * 1000;
        if mode == "churn" && round > 0 && round % 10 == 0 {
            for (i, scraper) in scrapers.iter_mut().enumerate() {
                if let Scraper::Cached(c) = scraper {
                    c.end_all(&store, t - 1);
                    *c = TargetCache::new(target_labels(i, round / 10));
                }
            }
            store.persist()?;
        }
        for (generator, scraper) in generators.iter_mut().zip(&mut scrapers) {
            generator.advance();
            let text = generator.text();
            let began = Instant::now();
            appended += match scraper {
                Scraper::Naive(n) => n.scrape(&store, &text, t),
                Scraper::Cached(c) => c
                    .ingest(&store, text.as_bytes(), Format::Prometheus, t, usize::MAX)
                    .map_or(0, |r| r.appended.appended),
            };
            ingest += began.elapsed();
        }
        // The control plane's WAL flusher runs every second.
        store.flush()?;
        if mode == "persist" && (round + 1) % 20 == 0 {
            let before = rss_bytes();
            store.persist()?;
            println!(
                "round {round}: persist, RSS {:.1} -> {:.1} MiB, {} segments",
                before as f64 / 1048576.0,
                rss_bytes() as f64 / 1048576.0,
                store.stats().segments
            );
        }
        peak_head = peak_head.max(store.stats().head_series);
    }
    let rss_after = rss_bytes();
    let stats = store.stats();
    let per_series = |bytes: u64| bytes as f64 / stats.head_series.max(1) as f64;
    println!("mode:              {mode}");
    println!("series:            {}", stats.head_series);
    if mode == "churn" {
        let made = targets as i64 * series as i64 * (1 + (rounds - 1) / 10);
        println!("series made:       {made} (head at most {peak_head} at once)");
        println!(
            "head label pairs:  {}; segments {} ({} bytes)",
            stats.head_label_pairs, stats.segments, stats.segment_bytes
        );
    }
    println!("samples:           {appended}");
    println!(
        "ingest:            {:.0} samples/s ({ingest:.2?}, parsing included)",
        appended as f64 / ingest.as_secs_f64()
    );
    println!(
        "RSS:               {:.1} MiB before, {:.1} MiB after",
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0
    );
    println!(
        "RSS/series:        {:.0} bytes (the growth over the rounds)",
        per_series(rss_after.saturating_sub(rss_before))
    );
    drop(scrapers);
    Ok(())
}
