//! In-process ingestion benchmark: one writer thread appends scrapes of 10,000 series.
//!
//! Run: `cargo run --release -p kiln-metrics --example ingest -- [samples_per_series] [series] [split]`
//! Prints samples/s, bytes/sample on disk after persisting, and resident memory per series in
//! the head and once persisted (a new process opening the store).

mod common;

use common::rss_bytes;
use std::time::Instant;

use kiln_metrics::Store;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if common::open_if_asked()? {
        return Ok(());
    }
    let mut args = std::env::args().skip(1);
    let per_series: i64 = args.next().map_or(Ok(720), |a| a.parse())?;
    let n_series: usize = args.next().map_or(Ok(10_000), |a| a.parse())?;
    // `split`: persist a quarter of the samples at a time, so the last persist's compaction
    // merges four segments.
    let split = args.next().as_deref() == Some("split");
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), common::head_only())?;
    let rss_before = rss_bytes();
    let refs: Vec<_> = (0..n_series)
        .map(|i| store.series_ref(&common::series_labels(i)))
        .collect();
    let mut values = common::Values::new(n_series);
    let start = Instant::now();
    let mut total = 0usize;
    for step in 0..per_series {
        let t = 1_700_000_000_000 + step * 15_000;
        let batch: Vec<_> = refs
            .iter()
            .zip(values.next_scrape())
            .map(|(r, &v)| (r, t, v))
            .collect();
        total += store.append_refs(&batch).appended;
        if split && step > 0 && step % (per_series / 4).max(1) == 0 {
            store.persist()?;
        }
    }
    let elapsed = start.elapsed();
    // After a flush, so the WAL buffer (freed, though the allocator may keep it) is not counted.
    store.flush()?;
    let rss_after = rss_bytes();
    store.persist()?;
    let stats = store.stats();
    println!("series:            {n_series}");
    println!("samples:           {total}");
    println!(
        "ingest:            {:.0} samples/s ({:.2?})",
        total as f64 / elapsed.as_secs_f64(),
        elapsed
    );
    println!(
        "on disk:           {:.3} bytes/sample ({} bytes in segments)",
        stats.segment_bytes as f64 / total as f64,
        stats.segment_bytes
    );
    println!(
        "RSS/series:        {:.0} bytes (with {per_series} samples each, after a WAL flush, before the last persist)",
        rss_after.saturating_sub(rss_before) as f64 / n_series as f64
    );
    println!(
        "peak RSS:          {:.1} MiB (VmHWM: the head, persists and compactions)",
        common::peak_rss_bytes() as f64 / (1024.0 * 1024.0)
    );
    drop(store);
    // The segments and the head's series, no samples.
    let (grown, _) = common::reopened(dir.path())?;
    println!(
        "reopened RSS/series: {:.0} bytes (a new process opening the persisted store)",
        grown as f64 / n_series as f64
    );
    Ok(())
}
