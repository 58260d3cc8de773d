//! What a store's segments cost in memory: writes `segments` segments of `series` series each
//! (eight samples per series, compaction off), then opens the store in a new process.
//!
//! Run: `cargo run --release -p kiln-metrics --example segments -- [segments] [series]`
//! Prints the reopened process's RSS growth per series: the head's series (replayed from the
//! WAL's series records) and every segment's labels, postings and chunk locations.

mod common;

use kiln_metrics::{Options, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if common::open_if_asked()? {
        return Ok(());
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let segments: usize = args.first().map_or(Ok(5), |a| a.parse())?;
    let n_series: usize = args.get(1).map_or(Ok(50_000), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let opts = Options {
        compact_below_bytes: 0,
        ..common::head_only()
    };
    let store = Store::open(dir.path(), opts)?;
    // `instance` differs for every series, the other labels are shared.
    let refs: Vec<_> = (0..n_series)
        .map(|i| store.series_ref(&common::series_labels(i)))
        .collect();
    // Within one 2 h window, so the store's own compaction would merge nothing but small
    // segments, which `compact_below_bytes: 0` turns off.
    let mut t = 1_700_000_000_000i64;
    for _ in 0..segments {
        for _ in 0..8 {
            let batch: Vec<_> = refs
                .iter()
                .enumerate()
                .map(|(i, r)| (r, t, i as f64))
                .collect();
            store.append_refs(&batch);
            t += 15_000;
        }
        store.persist()?;
    }
    drop(store);
    let (grown, _) = common::reopened(dir.path())?;
    println!(
        "{segments} segments × {n_series} series, reopened: {:.0} bytes RSS a series",
        grown as f64 / n_series as f64
    );
    Ok(())
}
