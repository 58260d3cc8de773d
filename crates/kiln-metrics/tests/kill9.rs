//! A `kill -9` during ingestion loses at most about the last second of samples: a child
//! process (this test binary, re-run with an environment variable) appends 100 series every
//! 10 ms and prints each batch's timestamp once `append` returned; the parent SIGKILLs it
//! after a few seconds, reopens the store and compares the newest surviving batch with the
//! last one the child reported.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_metrics::{Labels, MatchOp, Matcher, Options, Store};

const CHILD_ENV: &str = "KILN_METRICS_KILL9_CHILD";
const SERIES: usize = 100;
const BATCH_EVERY_MS: i64 = 10;

/// The child's side: ingest at a fixed pace until killed (or a minute passes).
fn child(dir: &str) {
    let store = Store::open(dir, Options::default()).unwrap();
    let refs: Vec<_> = (0..SERIES)
        .map(|i| store.series_ref(&Labels::new([("__name__", "load"), ("i", &i.to_string())])))
        .collect();
    let start = Instant::now();
    let mut out = std::io::stdout().lock();
    for batch in 1..=6000i64 {
        let t = batch * BATCH_EVERY_MS;
        let items: Vec<_> = refs.iter().map(|r| (r, t, batch as f64)).collect();
        store.append_refs(&items);
        writeln!(out, "{t}").unwrap();
        out.flush().unwrap();
        // Pace by the clock so the rate stays known even when a batch is slow.
        let next = start + Duration::from_millis((batch * BATCH_EVERY_MS) as u64);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

#[test]
fn kill_9_during_ingestion_loses_at_most_about_a_second() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_9_during_ingestion_loses_at_most_about_a_second",
            "--nocapture",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(proc.stdout.take().unwrap()).lines();
    // Wait for 3 to 4 s of data (the child's own output is the readiness signal), bounded; the
    // offset varies so the kill does not always land at the same point of the flush cycle.
    let kill_at = 3000 + i64::from(std::process::id() % 100) * BATCH_EVERY_MS;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_acked = 0i64;
    while last_acked < kill_at && Instant::now() < deadline {
        match lines.next() {
            Some(Ok(line)) => {
                if let Ok(t) = line.trim().parse() {
                    last_acked = t;
                }
            }
            _ => break,
        }
    }
    proc.kill().unwrap(); // SIGKILL
    proc.wait().unwrap();
    // Anything printed before the kill landed was also acknowledged by append.
    for line in lines.map_while(Result::ok).take(10_000) {
        if let Ok(t) = line.trim().parse::<i64>() {
            last_acked = last_acked.max(t);
        }
    }
    assert!(last_acked >= 3000, "the child only reached t={last_acked}");

    let store = Store::open(dir.path(), Options::default()).unwrap();
    let series = store
        .select(
            &[Matcher::new("__name__", MatchOp::Eq, "load")],
            0,
            i64::MAX,
        )
        .unwrap();
    assert_eq!(series.len(), SERIES, "every series survives");
    let newest = series[0].samples.last().unwrap().t;
    for s in &series {
        // No gaps and no torn batches: each series holds every batch up to the same one.
        let want: Vec<i64> = (1..=newest / BATCH_EVERY_MS)
            .map(|b| b * BATCH_EVERY_MS)
            .collect();
        let got: Vec<i64> = s.samples.iter().map(|x| x.t).collect();
        assert_eq!(got, want, "{}", s.labels);
    }
    let lost_ms = last_acked - newest;
    eprintln!(
        "acknowledged up to t={last_acked} ms, recovered up to t={newest} ms: lost {lost_ms} ms"
    );
    // The WAL is fsynced every second; allow for a slow fsync on a busy machine.
    assert!(lost_ms <= 1500, "lost {lost_ms} ms of samples");
}
