//! Store tests: crash recovery, retention, compaction, matchers.

use super::*;
use crate::matcher::MatchOp;

fn lbl(name: &str, job: &str) -> Labels {
    Labels::new([("__name__", name), ("job", job)])
}

fn opts() -> Options {
    // No background persist during tests unless a test asks for it.
    Options {
        persist_interval: Duration::from_secs(3600),
        ..Options::default()
    }
}

pub(super) fn all(store: &Store) -> Vec<Series> {
    store
        .select(
            &[Matcher::new("__name__", MatchOp::Re, ".+")],
            i64::MIN,
            i64::MAX,
        )
        .unwrap()
}

fn count(store: &Store) -> usize {
    all(store).iter().map(|s| s.samples.len()).sum()
}

#[test]
fn crash_keeps_everything_up_to_the_last_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    for t in 0..100 {
        store.append(&lbl("up", "a"), t * 1000, t as f64).unwrap();
    }
    store.flush().unwrap();
    // Never flushed: may be lost, must not corrupt anything.
    store.append(&lbl("up", "a"), 100_000, 1.0).unwrap();
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    let s = all(&store);
    assert_eq!(s.len(), 1);
    assert!(s[0].samples.len() >= 100);
    assert_eq!(s[0].samples[99], Sample { t: 99_000, v: 99.0 });
}

#[test]
fn background_flusher_syncs_within_about_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        flush_interval: Duration::from_millis(100),
        ..opts()
    };
    let store = Store::open(dir.path(), o.clone()).unwrap();
    store.append(&lbl("up", "a"), 1, 1.0).unwrap();
    // Several flush intervals, so a loaded machine still gets one in.
    std::thread::sleep(Duration::from_millis(800));
    drop(store);
    assert_eq!(count(&Store::open(dir.path(), o).unwrap()), 1);
}

#[test]
fn truncated_wal_tail_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    for t in 0..10 {
        store.append(&lbl("up", "a"), t, 1.0).unwrap();
        store.flush().unwrap();
    }
    drop(store);
    let (_, path) = numbered_files(dir.path(), "wal-", ".log")
        .unwrap()
        .pop()
        .unwrap();
    let len = fs::metadata(&path).unwrap().len();
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 5).unwrap();
    drop(f);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(count(&store), 9, "only the torn last record is lost");
    // And appending continues after the torn tail.
    store.append(&lbl("up", "a"), 50, 2.0).unwrap();
    store.flush().unwrap();
    drop(store);
    assert_eq!(count(&Store::open(dir.path(), opts()).unwrap()), 10);
}

#[test]
fn persist_then_crash_and_reopen_has_no_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    for t in 0..300 {
        store.append(&lbl("up", "a"), t * 1000, t as f64).unwrap();
    }
    store.persist().unwrap();
    for t in 300..400 {
        store.append(&lbl("up", "a"), t * 1000, t as f64).unwrap();
    }
    assert_eq!(count(&store), 400);
    store.flush().unwrap();
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(count(&store), 400);
    assert!(
        store.append(&lbl("up", "a"), 5, 0.0).is_err(),
        "older than persisted data"
    );
    store.close().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(count(&store), 400);
    assert_eq!(store.stats().head_samples, 0);
}

#[test]
fn retention_by_age_drops_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        retention: Duration::from_secs(3600),
        compact_below_bytes: 0,
        ..opts()
    };
    let store = Store::open(dir.path(), o).unwrap();
    store.append(&lbl("up", "old"), 0, 1.0).unwrap();
    store.persist().unwrap();
    let two_hours = 2 * 3600 * 1000;
    store.append(&lbl("up", "new"), two_hours, 1.0).unwrap();
    store.persist().unwrap();
    let jobs: Vec<_> = all(&store)
        .iter()
        .map(|s| s.labels.get("job").unwrap().to_string())
        .collect();
    assert_eq!(jobs, ["new"]);
    assert_eq!(store.stats().segments, 1);
}

#[test]
fn retention_by_size_drops_oldest_segments() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        retention_bytes: Some(100),
        compact_below_bytes: 0,
        ..opts()
    };
    let store = Store::open(dir.path(), o).unwrap();
    for i in 0..3 {
        store.append(&lbl("up", &format!("j{i}")), i, 1.0).unwrap();
        store.persist().unwrap();
    }
    let st = store.stats();
    assert!(st.segment_bytes <= 100 && st.segments < 3, "{st:?}");
    assert_eq!(all(&store).last().unwrap().labels.get("job"), Some("j2"));
}

#[test]
fn compaction_merges_small_segments_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    for round in 0..4 {
        for t in 0..50 {
            store
                .append(&lbl("up", "a"), round * 1000 + t, t as f64)
                .unwrap();
        }
        store.persist().unwrap();
    }
    assert_eq!(store.stats().segments, 1);
    assert_eq!(count(&store), 200);
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(count(&store), 200);
    assert_eq!(numbered_files(dir.path(), "seg-", ".kms").unwrap().len(), 1);
}

/// Eight hours of a series, persisted every 30 minutes of data: the finished 6 h window is
/// merged into one segment whatever its size; the last 2 h window's four wait for it to end.
#[test]
fn compaction_merges_finished_time_windows() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        compact_below_bytes: 0,
        ..opts()
    };
    let store = Store::open(dir.path(), o.clone()).unwrap();
    let minute = 60_000;
    for m in 0..8 * 60 {
        store.append(&lbl("up", "a"), m * minute, m as f64).unwrap();
        store.append(&lbl("up", "b"), m * minute, 1.0).unwrap();
        if (m + 1) % 30 == 0 {
            store.persist().unwrap();
        }
    }
    let spans: Vec<(i64, i64)> = read(&store.inner.segments)
        .iter()
        .map(|s| (s.min_t / minute, s.max_t / minute))
        .collect();
    assert_eq!(
        spans,
        [(0, 359), (360, 389), (390, 419), (420, 449), (450, 479)]
    );
    assert_eq!(count(&store), 2 * 8 * 60);
    drop(store);
    let store = Store::open(dir.path(), o).unwrap();
    assert_eq!(count(&store), 2 * 8 * 60);
    assert_eq!(numbered_files(dir.path(), "seg-", ".kms").unwrap().len(), 5);
    let a = &all(&store)[0];
    assert!(
        a.samples
            .iter()
            .enumerate()
            .all(|(m, s)| s.t == m as i64 * minute && s.v == m as f64)
    );
}

/// A clean shutdown persists the head but starts no merge (it has a deadline); the next
/// persist after reopening merges.
#[test]
fn close_persists_without_merging_and_the_next_persist_merges() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.append(&lbl("up", "a"), 1_000, 1.0).unwrap();
    store.persist().unwrap();
    store.append(&lbl("up", "a"), 2_000, 2.0).unwrap();
    store.close().unwrap();
    assert_eq!(numbered_files(dir.path(), "seg-", ".kms").unwrap().len(), 2);
    let store = Store::open(dir.path(), opts()).unwrap();
    store.append(&lbl("up", "a"), 3_000, 3.0).unwrap();
    store.persist().unwrap();
    assert_eq!(store.stats().segments, 1);
    assert_eq!(count(&store), 3);
    store.close().unwrap();
}

/// A failure the background threads recorded is reported to the next `flush` caller, and
/// the flusher goes on: it used to take its own recorded failure back as its result, so one
/// failed persist stopped every later fsync.
#[test]
fn a_recorded_background_failure_does_not_stop_the_wal_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        flush_interval: Duration::from_millis(5),
        ..opts()
    };
    let store = Store::open(dir.path(), o).unwrap();
    *store.inner.flush_error.lock().unwrap() = Some("a merge failed".into());
    store.append(&lbl("up", "a"), 1, 1.0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.stats().wal_syncs == 0 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(store.stats().wal_syncs > 0, "the flusher stopped");
    assert!(matches!(store.flush(), Err(StoreError::Flush(e)) if e == "a merge failed"));
    assert!(store.flush().is_ok());
}

/// A background persist leaves retention and compaction to their own thread, which merges
/// the segments a few moments later.
#[test]
fn background_persists_are_compacted_on_their_own_thread() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        flush_interval: Duration::from_millis(5),
        persist_after_samples: 10,
        ..opts()
    };
    let store = Store::open(dir.path(), o).unwrap();
    let mut t = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    // Appends until at least three persists happened, then waits for their merge.
    while store.inner.next_seq.load(Ordering::Relaxed) < 4 && Instant::now() < deadline {
        for job in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"] {
            store.append(&lbl("up", job), t, 1.0).unwrap();
        }
        t += 1000;
        std::thread::yield_now();
    }
    while store.stats().segments > 1 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(store.stats().segments, 1, "{:?}", store.stats());
    assert!(store.inner.flush_error.lock().unwrap().is_none());
    store.close().unwrap();
}

#[test]
fn matchers_select_like_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.append(&lbl("http", "api"), 1, 1.0).unwrap();
    store.append(&lbl("http", "apix"), 1, 1.0).unwrap();
    store
        .append(&Labels::new([("__name__", "http")]), 1, 1.0)
        .unwrap();
    store.append(&lbl("up", "web"), 1, 1.0).unwrap();
    let sel = |ms: Vec<Matcher>| -> Vec<String> {
        store
            .select(&ms, 0, 10)
            .unwrap()
            .iter()
            .map(|s| s.labels.to_string())
            .collect()
    };
    let name = || Matcher::eq("__name__", "http");
    assert_eq!(
        sel(vec![name(), Matcher::new("job", MatchOp::Re, "api")]),
        [r#"http{job="api"}"#]
    );
    assert_eq!(
        sel(vec![name(), Matcher::new("job", MatchOp::Nre, "api.*")]),
        ["http{}"]
    );
    assert_eq!(sel(vec![name(), Matcher::eq("job", "")]), ["http{}"]);
    assert_eq!(
        sel(vec![name(), Matcher::new("job", MatchOp::Ne, "api")]).len(),
        2
    );
    assert_eq!(
        sel(vec![Matcher::new("job", MatchOp::Re, "a.*|web")]).len(),
        3
    );
    assert!(
        store
            .select(&[Matcher::new("job", MatchOp::Re, "(")], 0, 1)
            .is_err()
    );
    assert_eq!(store.label_names(), ["__name__", "job"]);
    assert_eq!(store.label_values("__name__"), ["http", "up"]);
    assert_eq!(
        store.series(&[Matcher::eq("job", "web")]).unwrap(),
        [lbl("up", "web")]
    );
}

#[test]
fn out_of_order_is_rejected_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.append(&lbl("up", "a"), 10, 1.0).unwrap();
    assert!(matches!(
        store.append(&lbl("up", "a"), 10, 1.0),
        Err(StoreError::OutOfOrder { .. })
    ));
    let stats = store.append_batch(&[(lbl("up", "a"), 5, 1.0), (lbl("up", "a"), 20, 1.0)]);
    assert_eq!(
        stats,
        AppendStats {
            appended: 1,
            out_of_order: 1
        }
    );
}

#[test]
fn readers_and_writers_run_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), opts()).unwrap());
    let writer = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            for t in 0..2000 {
                store
                    .append(&lbl("up", &format!("j{}", t % 10)), t, 1.0)
                    .unwrap();
                if t % 500 == 0 {
                    store.persist().unwrap();
                }
            }
        })
    };
    for _ in 0..50 {
        let _ = all(&store);
    }
    writer.join().unwrap();
    assert_eq!(count(&store), 2000);
}

/// A persist moves the head into a segment; a reader meanwhile must see every sample (perhaps
/// twice, deduplicated), never a gap between the head emptied and the segment published.
#[test]
fn a_persist_never_hides_samples_from_a_concurrent_reader() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), opts()).unwrap());
    let series = 2000usize;
    let per_series = 20i64;
    let mut total = 0;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            // Bounded: the main thread stops it, and it never runs more than 100,000 reads.
            for _ in 0..100_000 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                seen.push(count(&store));
            }
            seen
        })
    };
    for round in 0..5 {
        for i in 0..series {
            for k in 0..per_series {
                let t = (round * per_series + k) * 1000;
                store.append(&lbl("up", &format!("j{i}")), t, 1.0).unwrap();
            }
        }
        total += series * per_series as usize;
        store.persist().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.join().unwrap();
    // Counts only grow while the writer appends; a read in a persist's gap would drop back.
    for pair in seen.windows(2) {
        assert!(
            pair[1] >= pair[0],
            "a read lost samples: {} then {}",
            pair[0],
            pair[1]
        );
    }
    assert_eq!(count(&store), total);
}

#[test]
fn limited_selections_fail_before_decoding_too_much() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    for i in 0..20 {
        for t in 0..50 {
            store
                .append(&lbl("m", &format!("j{i}")), t * 1000, 1.0)
                .unwrap();
        }
    }
    // Half in a segment, half in the head: both paths count.
    store.persist().unwrap();
    for i in 0..20 {
        store
            .append(&lbl("m", &format!("j{i}")), 60_000, 1.0)
            .unwrap();
    }
    let all = [Matcher::new("__name__", MatchOp::Eq, "m")];
    let limited = |max_series, max_samples| {
        store.select_limited(
            &all,
            0,
            i64::MAX,
            SelectLimits {
                max_series,
                max_samples,
            },
        )
    };
    assert_eq!(limited(20, 1020).unwrap().len(), 20);
    let err = limited(19, usize::MAX).unwrap_err();
    assert_eq!(err.to_string(), "more than 19 series");
    let err = limited(100, 500).unwrap_err();
    assert_eq!(err.to_string(), "more than 500 samples");
}

#[test]
fn version_1_segments_still_load() {
    use super::codec::{crc32, put_labels, put_uvarint};
    let labels = lbl("m", "api");
    let mut chunk = crate::chunk::Chunk::new();
    chunk.append(1000, 1.5);
    chunk.append(2000, 2.5);
    let mut out = b"KMSEG01\n".to_vec();
    put_uvarint(&mut out, 1);
    put_labels(&mut out, &labels);
    put_uvarint(&mut out, 1);
    out.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
    put_uvarint(&mut out, chunk.bytes().len() as u64);
    out.extend_from_slice(chunk.bytes());
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    let seg = segment::Segment::decode(1, &out).unwrap();
    assert_eq!(seg.listed()[0].labels, labels);
    assert_eq!(seg.listed()[0].loaded().unwrap()[0].samples().len(), 2);
    // Written again, it is the current version and smaller labels-wise, with the same content.
    let again = segment::Segment::decode(1, &seg.encode().unwrap()).unwrap();
    assert_eq!(again.listed()[0].labels, labels);
    assert!(seg.encode().unwrap().starts_with(b"KMSEG03\n"));
}

/// Version 2 as its writer laid it out: a symbol table, then per chunk a `u16` count and the
/// XOR bytes (no encoding tag).
fn version_2_file(series: &[(Labels, Vec<crate::chunk::Chunk>)]) -> Vec<u8> {
    use super::codec::{crc32, put_str, put_uvarint};
    let symbols: std::collections::BTreeSet<&str> = series
        .iter()
        .flat_map(|(l, _)| l.iter())
        .flat_map(|l| [l.name.as_str(), l.value.as_str()])
        .collect();
    let number = |s: &str| symbols.iter().position(|x| *x == s).unwrap() as u64;
    let mut out = b"KMSEG02\n".to_vec();
    put_uvarint(&mut out, symbols.len() as u64);
    for s in &symbols {
        put_str(&mut out, s);
    }
    put_uvarint(&mut out, series.len() as u64);
    for (labels, chunks) in series {
        put_uvarint(&mut out, labels.len() as u64);
        for l in labels {
            put_uvarint(&mut out, number(&l.name));
            put_uvarint(&mut out, number(&l.value));
        }
        put_uvarint(&mut out, chunks.len() as u64);
        for c in chunks {
            out.extend_from_slice(&(c.len() as u16).to_le_bytes());
            put_uvarint(&mut out, c.bytes().len() as u64);
            out.extend_from_slice(c.bytes());
        }
    }
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn sample_bits(seg: &segment::Segment) -> Vec<(Labels, Vec<(i64, u64)>)> {
    seg.contents()
        .into_iter()
        .map(|(labels, samples)| {
            (
                labels,
                samples.iter().map(|x| (x.t, x.v.to_bits())).collect(),
            )
        })
        .collect()
}

#[test]
fn version_2_segments_still_load_and_rewrite_smaller_with_the_same_samples() {
    let stale = f64::from_bits(crate::query::STALE_NAN_BITS);
    let mut counter = crate::chunk::Chunk::new();
    let mut with_stale = crate::chunk::Chunk::new();
    for i in 0..120i64 {
        let t = 1_700_000_000_000 + i * 15_000;
        counter.append(t, (i * i % 1000) as f64 + 0.25);
        with_stale.append(t, if i == 60 { stale } else { i as f64 * 1.5 });
    }
    let series = vec![
        (lbl("requests", "api"), vec![counter]),
        (lbl("up", "web"), vec![with_stale]),
    ];
    let old = version_2_file(&series);
    let seg = segment::Segment::decode(7, &old).unwrap();
    let mut want: Vec<_> = series
        .iter()
        .map(|(l, cs)| {
            let samples = cs.iter().flat_map(|c| c.iter());
            (
                l.clone(),
                samples.map(|x| (x.t, x.v.to_bits())).collect::<Vec<_>>(),
            )
        })
        .collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(sample_bits(&seg), want);
    let new = seg.encode().unwrap();
    assert!(new.starts_with(b"KMSEG03\n"));
    assert!(
        new.len() < old.len(),
        "{} bytes, was {}",
        new.len(),
        old.len()
    );
    let again = segment::Segment::decode(7, &new).unwrap();
    assert_eq!(sample_bits(&again), want);
    // Opened from its file, its series list stays there and reads the same; a merge of it
    // alone writes the current version with the same samples.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg-7.kms");
    std::fs::write(&path, &old).unwrap();
    let mut loader = segment::Loader::default();
    let opened = segment::Segment::open(7, &path, &mut loader).unwrap();
    assert!(opened.listed().is_empty());
    assert_eq!(sample_bits(&opened), want);
    assert_eq!(loader.newest().len(), 2);
    let merged_path = dir.path().join("seg-8.kms");
    let written = segment::merge_to(&[opened], std::fs::File::create(&merged_path).unwrap());
    let merged = segment::Segment::stored(8, &merged_path, written.unwrap()).unwrap();
    assert!(
        std::fs::read(&merged_path)
            .unwrap()
            .starts_with(b"KMSEG03\n")
    );
    assert_eq!(sample_bits(&merged), want);
}

#[test]
fn unknown_chunk_encoding_tags_are_refused() {
    let mut chunk = crate::chunk::Chunk::new();
    chunk.append(1000, 2.0);
    chunk.append(2000, 3.0);
    let (encoding, chunk_bytes) = chunk.compact();
    let chunk_bytes = chunk_bytes.into_owned();
    let series = segment::SegSeries::new(lbl("m", "a"), vec![chunk]);
    let mut file = segment::Segment::new(1, vec![series]).encode().unwrap();
    let body = file.len() - 4;
    // The chunk ends the body: tag, count (1 byte), length (1 byte), bytes.
    let tag_at = body - chunk_bytes.len() - 3;
    assert_eq!(file[tag_at], encoding.tag());
    assert!(segment::Segment::decode(1, &file).is_ok());
    file[tag_at] = 9;
    let crc = super::codec::crc32(&file[..body]);
    file[body..].copy_from_slice(&crc.to_le_bytes());
    assert!(segment::Segment::decode(1, &file).is_err());
}

/// Series created while others are read: every reader sees each series with exactly the
/// labels it was created with (interned pairs are shared, never rewritten), and the series of
/// one store share their equal pairs.
#[test]
fn concurrent_readers_see_consistent_interned_labels() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), opts()).unwrap());
    // Series `i` has `id=i`, `group=g(i%7)`, `parity` from i: a reader can check them all.
    let labels_of = |i: usize| {
        Labels::new([
            ("__name__", "m".to_owned()),
            ("id", i.to_string()),
            ("group", format!("g{}", i % 7)),
            ("parity", ["even", "odd"][i % 2].to_owned()),
        ])
    };
    let series = 3000usize;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut checked = 0usize;
                // Bounded: stopped by the main thread, and never more than 10,000 reads.
                for _ in 0..10_000 {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    for s in all(&store) {
                        let i: usize = s.labels.get("id").unwrap().parse().unwrap();
                        assert_eq!(s.labels, labels_of(i), "series {i}");
                        assert_eq!(s.samples.len(), 1);
                        checked += 1;
                    }
                }
                checked
            })
        })
        .collect();
    for i in 0..series {
        store.append(&labels_of(i), 1000, i as f64).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for r in readers {
        r.join().unwrap();
    }
    let everything = all(&store);
    assert_eq!(everything.len(), series);
    let odd: Vec<&Series> = everything
        .iter()
        .filter(|s| s.labels.get("parity") == Some("odd"))
        .collect();
    assert_eq!(odd.len(), series / 2);
    let pair = |s: &Series| s.labels.only(&["parity"]);
    assert!(
        odd.windows(2)
            .all(|w| pair(w[0]).shares_pairs_with(&pair(w[1])))
    );
}

/// Every series of every segment, with its samples read through the segment.
fn segment_samples(store: &Store) -> Vec<(Labels, Vec<(i64, u64)>)> {
    let segs = read(&store.inner.segments).clone();
    segs.iter().flat_map(|seg| sample_bits(seg)).collect()
}

#[test]
fn persisted_chunks_leave_memory_and_are_read_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    for t in 0..300 {
        for job in ["a", "b", "c"] {
            store.append(&lbl("up", job), t * 1000, t as f64).unwrap();
        }
    }
    store.persist().unwrap();
    let stored_only = |store: &Store| {
        read(&store.inner.segments)
            .iter()
            .all(|seg| seg.is_stored() && seg.listed().is_empty())
    };
    assert!(stored_only(&store), "a persisted segment kept its chunks");
    let s = all(&store);
    assert_eq!(s.len(), 3);
    assert!(s.iter().all(|s| s.samples.len() == 300));
    assert_eq!(
        s[1].samples[299],
        Sample {
            t: 299_000,
            v: 299.0
        }
    );
    // A query for the middle reads only what it covers, with the same answer.
    let middle = store
        .select(&[Matcher::new("job", MatchOp::Eq, "b")], 100_000, 100_999)
        .unwrap();
    assert_eq!(
        middle[0].samples,
        vec![Sample {
            t: 100_000,
            v: 100.0
        }]
    );
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert!(
        stored_only(&store),
        "a segment read at start-up kept its chunks"
    );
    assert_eq!(count(&store), 900);
}

/// A reader that took the segment list before a compaction renamed the merged file over the
/// newest file of the run (and removed the others) still reads its segments' samples: each
/// keeps its file open.
#[test]
fn segments_taken_before_a_compaction_still_read_their_samples() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        // Compaction only when asked: every persist below keeps its own segment.
        compact_below_bytes: 0,
        ..opts()
    };
    let store = Store::open(dir.path(), o.clone()).unwrap();
    for round in 0..3 {
        for t in 0..50 {
            store
                .append(&lbl("up", "a"), round * 1000 + t, t as f64)
                .unwrap();
        }
        store.persist().unwrap();
    }
    let before = segment_samples(&store);
    let taken = read(&store.inner.segments).clone();
    assert_eq!(taken.len(), 3);
    drop(store);
    let store = Store::open(
        dir.path(),
        Options {
            compact_below_bytes: 16 << 20,
            ..o
        },
    )
    .unwrap();
    store.persist().unwrap();
    assert_eq!(store.stats().segments, 1);
    assert_eq!(numbered_files(dir.path(), "seg-", ".kms").unwrap().len(), 1);
    let after_on_old: Vec<_> = taken.iter().flat_map(|seg| sample_bits(seg)).collect();
    assert_eq!(after_on_old, before);
    assert_eq!(count(&store), 150);
}

/// A head over `persist_after_samples` persists, unless its series have gained fewer than
/// `PERSIST_MIN_SAMPLES_PER_SERIES` samples each on average (a million series would
/// otherwise persist at every scrape); the interval persists whatever the size.
#[test]
fn a_persist_waits_for_samples_in_proportion_to_the_series() {
    let o = Options::default();
    let minute = Duration::from_secs(60);
    assert!(!persist_due(&o, minute, 999_999, 50_000));
    assert!(persist_due(&o, minute, 1_000_000, 50_000));
    // A million series scraped once: not yet.
    assert!(!persist_due(&o, minute, 1_000_000, 1_000_000));
    assert!(!persist_due(&o, minute, 19_999_999, 1_000_000));
    assert!(persist_due(&o, minute, 20_000_000, 1_000_000));
    assert!(persist_due(&o, o.persist_interval, 1, 1_000_000));
    assert!(!persist_due(&o, minute, 0, 0));
}
