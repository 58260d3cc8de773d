//! Days of scrapes in compressed time: how many segments a long retention ends in, and what
//! they cost in memory once the store is reopened.
//!
//! Run: `cargo run --release -p kiln-metrics --example retention -- [series] [days]`
//! Appends `series` series every 15 s of simulated time for `days` days, persisting every
//! million samples as the store's default does (explicitly, since the background persist
//! follows the wall clock), then reopens the store in a new process. Prints, per simulated
//! day, the segments and their bytes; at the end the reopened RSS per series.

mod common;

use common::rss_bytes;
use std::time::Instant;

use kiln_metrics::{Options, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if common::open_if_asked()? {
        return Ok(());
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n_series: usize = args.first().map_or(Ok(50_000), |a| a.parse())?;
    let days: i64 = args.get(1).map_or(Ok(3), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let opts = common::head_only();
    let persist_every = Options::default().persist_after_samples;
    let store = Store::open(dir.path(), opts)?;
    let refs: Vec<_> = (0..n_series)
        .map(|i| store.series_ref(&common::series_labels(i)))
        .collect();
    let mut values = common::Values::new(n_series);
    let steps_per_day = 24 * 3600 / 15;
    let start = Instant::now();
    let mut since_persist = 0;
    for step in 0..days * steps_per_day {
        let t = 1_700_000_000_000 + step * 15_000;
        let batch: Vec<_> = refs
            .iter()
            .zip(values.next_scrape())
            .map(|(r, &v)| (r, t, v))
            .collect();
        since_persist += store.append_refs(&batch).appended;
        if since_persist >= persist_every {
            store.persist()?;
            since_persist = 0;
        }
        if (step + 1) % steps_per_day == 0 {
            let st = store.stats();
            println!(
                "day {:>3}: {:>4} segments, {:>6.0} MiB on disk, {:.2} bytes/sample, RSS {:.0} MiB ({:.0?})",
                (step + 1) / steps_per_day,
                st.segments,
                st.segment_bytes as f64 / (1 << 20) as f64,
                st.segment_bytes as f64 / ((step + 1) as f64 * n_series as f64),
                rss_bytes() as f64 / (1 << 20) as f64,
                start.elapsed()
            );
        }
    }
    store.close()?;
    let (grown, segments) = common::reopened(dir.path())?;
    println!(
        "reopened: {segments} segments, {:.1} MiB RSS, {:.0} bytes a series",
        grown as f64 / (1 << 20) as f64,
        grown as f64 / n_series as f64
    );
    Ok(())
}
