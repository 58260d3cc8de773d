//! Replays an OpenMetrics file with timestamps (written by `benches/metrics.py`) into a fresh
//! store, in time order as a scraper would append it, and prints one JSON line: samples, the
//! median append rate over 3 runs (series resolved beforehand, as a scraper's cache does), and
//! the segment bytes after persisting.
//!
//! Run: `cargo run --release -p kiln-metrics --example replay -- FILE DIR`

use std::time::{Duration, Instant};

use kiln_metrics::exposition::{Format, parse_exposition};
use kiln_metrics::{Labels, Options, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let file = args.next().ok_or("usage: replay FILE DIR")?;
    let dir = args.next().ok_or("usage: replay FILE DIR")?;
    let text = std::fs::read_to_string(&file)?;
    let parsed = parse_exposition(&text, Format::OpenMetrics)?;
    drop(text);
    // Time-major order: every series' sample at t, then at the next t.
    let mut samples: Vec<(i64, usize, f64)> = Vec::with_capacity(parsed.samples.len());
    let mut ids: std::collections::HashMap<Labels, usize> = Default::default();
    let mut labels: Vec<Labels> = Vec::new();
    for s in parsed.samples {
        let next = labels.len();
        let id = *ids.entry(s.labels.clone()).or_insert(next);
        if id == next {
            labels.push(s.labels);
        }
        samples.push((
            s.timestamp_ms.ok_or("a sample without a timestamp")?,
            id,
            s.value,
        ));
    }
    samples.sort_by_key(|(t, id, _)| (*t, *id));
    let opts = Options {
        persist_after_samples: usize::MAX,
        persist_interval: Duration::from_secs(24 * 3600),
        ..Options::default()
    };
    let mut rates = Vec::new();
    let mut bytes = 0;
    for run in 0..3 {
        let path = std::path::Path::new(&dir).join(format!("run{run}"));
        let store = Store::open(&path, opts.clone())?;
        let refs: Vec<_> = labels.iter().map(|l| store.series_ref(l)).collect();
        let started = Instant::now();
        let mut appended = 0;
        for batch in samples.chunk_by(|a, b| a.0 == b.0) {
            let items: Vec<_> = batch
                .iter()
                .map(|(t, id, v)| (&refs[*id], *t, *v))
                .collect();
            appended += store.append_refs(&items).appended;
        }
        rates.push(appended as f64 / started.elapsed().as_secs_f64());
        store.persist()?;
        bytes = store.stats().segment_bytes;
        store.close()?;
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "{{\"samples\": {}, \"series\": {}, \"bytes\": {bytes}, \"samples_per_second\": {:.0}, \"runs\": 3}}",
        samples.len(),
        labels.len(),
        rates[1]
    );
    Ok(())
}
