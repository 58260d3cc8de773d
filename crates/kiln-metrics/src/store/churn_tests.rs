//! Series churn: the head drops series that stopped getting samples, and their past stays
//! queryable from the segments.

use std::collections::BTreeMap;

use super::tests::all as everything;
use super::*;
use crate::matcher::MatchOp;
use proptest::prelude::*;

fn opts() -> Options {
    Options {
        persist_interval: Duration::from_secs(3600),
        compact_below_bytes: 0,
        ..Options::default()
    }
}

fn pod(round: usize, i: usize) -> Labels {
    Labels::new([
        ("__name__", "req".to_string()),
        ("job", "app".to_string()),
        ("pod", format!("pod-{round}-{i}")),
    ])
}

/// A target that renames its pods every round: the head keeps the last rounds' series only,
/// its label pairs with them, and every round stays queryable.
#[test]
fn a_head_under_churn_stays_bounded_and_its_past_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let steady = Labels::new([("__name__", "up"), ("job", "app")]);
    let (rounds, per_round) = (40, 50);
    let mut peak = (0, 0);
    for round in 0..rounds {
        let t = round as i64 * 15_000;
        store.append(&steady, t, 1.0).unwrap();
        for i in 0..per_round {
            store.append(&pod(round, i), t, i as f64).unwrap();
        }
        store.persist().unwrap();
        let stats = store.stats();
        peak = (
            peak.0.max(stats.head_series),
            peak.1.max(stats.head_label_pairs),
        );
    }
    // Right after a persist the head holds the round just cut (and the steady series); the
    // one before was removed by that persist.
    assert_eq!(peak.0, per_round + 1);
    // `__name__` ×2, `job`, and one `pod` pair per series of the round.
    assert_eq!(peak.1, per_round + 3);
    let stats = store.stats();
    assert_eq!(
        (stats.head_series, stats.head_label_pairs),
        (per_round + 1, per_round + 3)
    );
    let series = everything(&store);
    assert_eq!(series.len(), rounds * per_round + 1);
    let samples: usize = series.iter().map(|s| s.samples.len()).sum();
    assert_eq!(samples, rounds * per_round + rounds);
    let pods = store.label_values("pod");
    assert_eq!(pods.len(), rounds * per_round);
    // The same after a restart: removed series are in no WAL record, only in segments.
    store.flush().unwrap();
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(everything(&store).len(), rounds * per_round + 1);
    assert_eq!(store.stats().head_series, per_round + 1);
    store.close().unwrap();
}

/// A handle to a series the head removed still appends: the labels are resolved again, the
/// series' order check kept, and the sample logged under the new series' id.
#[test]
fn a_removed_series_comes_back_through_an_old_handle() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let a = store.series_ref(&pod(0, 0));
    let b = store.series_ref(&pod(0, 1));
    store.append_refs(&[(&a, 1000, 1.0), (&b, 1000, 2.0)]);
    store.persist().unwrap();
    store.append_refs(&[(&b, 2000, 2.0)]);
    store.persist().unwrap();
    assert!(a.is_removed() && !b.is_removed());
    assert_eq!(store.stats().head_series, 1);
    // Not newer than its last sample: refused as before its removal.
    let stats = store.append_refs(&[(&a, 1000, 9.0), (&a, 3000, 3.0), (&b, 3000, 4.0)]);
    assert_eq!((stats.appended, stats.out_of_order), (2, 1));
    assert_eq!(store.stats().head_series, 2);
    let fresh = store.series_ref(&pod(0, 0));
    assert!(!fresh.is_removed() && !fresh.same(&a) && fresh.id() != b.id());
    // A new handle by labels also keeps the order check (the head's floor).
    assert!(store.append(&pod(7, 7), 500, 1.0).is_err());
    store.flush().unwrap();
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    let got: Vec<(String, Vec<i64>)> = everything(&store)
        .into_iter()
        .map(|s| {
            (
                s.labels.get("pod").unwrap().to_string(),
                s.samples.iter().map(|s| s.t).collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("pod-0-0".to_string(), vec![1000, 3000]),
            ("pod-0-1".to_string(), vec![1000, 2000, 3000])
        ]
    );
}

#[derive(Debug, Clone)]
enum Op {
    /// Append to series `s` after every sample so far, or, when `late`, at its own last
    /// sample's time (out of order).
    Append {
        s: usize,
        late: bool,
        fresh_handle: bool,
    },
    Persist,
    /// Flush, drop without closing (a crash), reopen.
    Restart,
    Query {
        s: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..6usize, prop::bool::weighted(0.2), any::<bool>())
            .prop_map(|(s, late, fresh_handle)| Op::Append { s, late, fresh_handle }),
        2 => Just(Op::Persist),
        1 => Just(Op::Restart),
        1 => (0..6usize).prop_map(|s| Op::Query { s }),
    ]
}

fn name(s: usize) -> Labels {
    Labels::new([("__name__", "m".to_string()), ("s", s.to_string())])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Against a model (every accepted sample by series): appends through old or fresh
    /// handles, persists that remove idle series, crashes and queries. The store answers as
    /// the model, and refuses exactly the samples not newer than the series' last one.
    #[test]
    fn the_head_and_segments_answer_like_a_model(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), opts()).unwrap();
        let mut model: BTreeMap<usize, Vec<(i64, f64)>> = BTreeMap::new();
        let mut handles: BTreeMap<usize, SeriesRef> = BTreeMap::new();
        let mut clock = 0i64;
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append { s, late, fresh_handle } => {
                    let last = model.get(&s).and_then(|v| v.last()).map(|x| x.0);
                    let t = match last {
                        Some(last) if late => last,
                        _ => {
                            clock += 1000;
                            clock
                        }
                    };
                    let h = match handles.get(&s) {
                        Some(h) if !fresh_handle => h.clone(),
                        _ => store.series_ref(&name(s)),
                    };
                    handles.insert(s, h.clone());
                    let stats = store.append_refs(&[(&h, t, step as f64)]);
                    let newer = last.is_none_or(|last| t > last);
                    prop_assert_eq!(stats.appended, usize::from(newer));
                    if newer {
                        model.entry(s).or_default().push((t, step as f64));
                    }
                }
                Op::Persist => store.persist().unwrap(),
                Op::Restart => {
                    store.flush().unwrap();
                    drop(store);
                    store = Store::open(dir.path(), opts()).unwrap();
                    handles.clear();
                }
                Op::Query { s } => {
                    let got = store
                        .select(&[Matcher::new("s", MatchOp::Eq, s.to_string())], i64::MIN, i64::MAX)
                        .unwrap();
                    let got: Vec<(i64, f64)> =
                        got.iter().flat_map(|x| x.samples.iter().map(|p| (p.t, p.v))).collect();
                    prop_assert_eq!(got, model.get(&s).cloned().unwrap_or_default());
                }
            }
        }
        let got: BTreeMap<usize, Vec<(i64, f64)>> = everything(&store)
            .into_iter()
            .map(|x| {
                let s = x.labels.get("s").and_then(|v| v.parse().ok()).unwrap_or(usize::MAX);
                (s, x.samples.iter().map(|p| (p.t, p.v)).collect())
            })
            .collect();
        prop_assert_eq!(got, model);
        prop_assert!(store.stats().head_series <= 6);
    }
}

/// A persisted series costs its chunks and no spare room: merged and loaded segments keep
/// exactly their chunk structs (a `Vec`'s first push reserves four).
#[test]
fn segments_keep_no_spare_chunk_slots() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    for round in 0..3 {
        for i in 0..20 {
            store.append(&pod(0, i), round * 1000, 1.0).unwrap();
        }
        store.persist().unwrap();
    }
    let segs = read(&store.inner.segments).clone();
    let path = dir.path().join("merged.kms");
    let written = segment::merge_to(&segs, std::fs::File::create(&path).unwrap()).unwrap();
    let merged = Segment::stored(99, &path, written).unwrap();
    assert_eq!(merged.series_count(), 20);
    assert!(merged.is_stored() && merged.listed().is_empty());
    let loaded = Segment::decode(99, &std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(loaded.listed().len(), 20);
    assert!(
        loaded
            .listed()
            .iter()
            .all(|s| s.spare_chunk_slots() == Some(0))
    );
}
