//! Scrape cache tests: steady state, churn, label order, repeats, failures, staleness.

use super::*;
use crate::query::is_stale;
use crate::{MatchOp, Matcher, Options, Sample};
use proptest::prelude::*;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    (dir, store)
}

fn cache() -> TargetCache {
    TargetCache::new([("instance", "0"), ("job", "app")])
}

fn ingest(cache: &mut TargetCache, store: &Store, text: &str, t: i64) -> Ingested {
    cache
        .ingest(store, text.as_bytes(), Format::Prometheus, t, 1000)
        .unwrap()
}

/// Every sample of the series named `name`, by its full labels as text.
fn samples(store: &Store, name: &str) -> Vec<(String, Vec<Sample>)> {
    store
        .select(
            &[Matcher::new("__name__", MatchOp::Eq, name)],
            i64::MIN,
            i64::MAX,
        )
        .unwrap()
        .into_iter()
        .map(|s| (s.labels.to_string(), s.samples))
        .collect()
}

fn shape(samples: &[Sample]) -> Vec<(i64, Option<f64>)> {
    samples
        .iter()
        .map(|s| (s.t, (!is_stale(s.v)).then_some(s.v)))
        .collect()
}

#[test]
fn a_steady_target_resolves_its_series_once_with_the_target_labels() {
    let (_d, store) = store();
    let mut c = cache();
    let text =
        "# TYPE req counter\nreq_total{code=\"200\"} 1\nreq_total{code=\"500\"} 2\nup_ok 1\n";
    let first = ingest(&mut c, &store, text, 1000);
    assert_eq!((first.samples, first.appended.appended), (3, 3));
    assert_eq!(first.families[0].name, "req");
    assert_eq!(store.stats().head_series, 3);
    for t in [2000, 3000] {
        let next = ingest(&mut c, &store, text, t);
        assert_eq!((next.appended.appended, next.ended), (3, 0));
    }
    assert_eq!(store.stats().head_series, 3);
    assert_eq!(c.live_series(), 3);
    let req = samples(&store, "req_total");
    assert_eq!(
        req[0].0,
        r#"req_total{code="200", instance="0", job="app"}"#
    );
    assert_eq!(
        shape(&req[0].1),
        [(1000, Some(1.0)), (2000, Some(1.0)), (3000, Some(1.0))]
    );
}

#[test]
fn series_that_churn_are_marked_stale_once_and_come_back() {
    let (_d, store) = store();
    let mut c = cache();
    ingest(&mut c, &store, "a 1\nb 1\n", 1000);
    let second = ingest(&mut c, &store, "b 2\nc 2\n", 2000);
    assert_eq!(second.ended, 1);
    assert_eq!(second.appended.appended, 2);
    // Stale once, not again while it stays away.
    assert_eq!(ingest(&mut c, &store, "b 3\nc 3\n", 3000).ended, 0);
    assert_eq!(ingest(&mut c, &store, "a 4\nb 4\n", 4000).ended, 1);
    assert_eq!(
        shape(&samples(&store, "a")[0].1),
        [(1000, Some(1.0)), (2000, None), (4000, Some(4.0))]
    );
    assert_eq!(
        shape(&samples(&store, "c")[0].1),
        [(2000, Some(2.0)), (3000, Some(3.0)), (4000, None)]
    );
    assert_eq!(c.live_series(), 2);
    assert_eq!(c.by_text.len(), 2, "texts of ended series are forgotten");
}

#[test]
fn a_label_set_written_in_another_order_is_the_same_series_and_not_stale() {
    let (_d, store) = store();
    let mut c = cache();
    ingest(&mut c, &store, "m{x=\"1\",y=\"2\"} 1\n", 1000);
    let reordered = ingest(&mut c, &store, "m{y=\"2\", x=\"1\"} 2\n", 2000);
    assert_eq!((reordered.appended.appended, reordered.ended), (1, 0));
    let m = samples(&store, "m");
    assert_eq!(m.len(), 1);
    assert_eq!(shape(&m[0].1), [(1000, Some(1.0)), (2000, Some(2.0))]);
    assert_eq!(c.by_text.len(), 1, "the old spelling is forgotten");
    assert_eq!(store.stats().head_series, 1);
}

#[test]
fn a_series_repeated_in_one_answer_keeps_its_first_sample_and_stays_live() {
    let (_d, store) = store();
    let mut c = cache();
    // The same text twice, and the same series in two spellings.
    let text = "m 1\nm 2\nn{a=\"1\",b=\"2\"} 3\nn{b=\"2\",a=\"1\"} 4\n";
    let first = ingest(&mut c, &store, text, 1000);
    assert_eq!(first.samples, 4);
    assert_eq!(first.appended.appended, 2);
    assert_eq!(first.appended.out_of_order, 2);
    assert_eq!(c.live_series(), 2);
    let second = ingest(&mut c, &store, text, 2000);
    assert_eq!((second.appended.appended, second.ended), (2, 0));
    assert_eq!(
        shape(&samples(&store, "m")[0].1),
        [(1000, Some(1.0)), (2000, Some(1.0))]
    );
    assert_eq!(
        shape(&samples(&store, "n")[0].1),
        [(1000, Some(3.0)), (2000, Some(3.0))]
    );
}

#[test]
fn a_sample_label_named_like_a_target_label_is_exported() {
    let (_d, store) = store();
    let mut c = cache();
    ingest(&mut c, &store, "m{job=\"theirs\",z=\"1\"} 1\n", 1000);
    assert_eq!(
        samples(&store, "m")[0].0,
        r#"m{exported_job="theirs", instance="0", job="app", z="1"}"#
    );
}

#[test]
fn a_malformed_or_oversized_answer_records_nothing_and_end_all_ends_every_series() {
    let (_d, store) = store();
    let mut c = cache();
    ingest(&mut c, &store, "a 1\nb 1\n", 1000);
    let bad = c.ingest(&store, b"a 2\nb{", Format::Prometheus, 2000, 1000);
    assert!(
        matches!(&bad, Err(IngestError::Malformed(e)) if e.line == 2),
        "{bad:?}"
    );
    let big = c.ingest(&store, b"a 2\nb 2\n", Format::Prometheus, 2000, 1);
    assert_eq!(big, Err(IngestError::SampleLimit { got: 2, limit: 1 }));
    let binary = c.ingest(&store, b"a \xff\n", Format::Prometheus, 2000, 1000);
    assert!(matches!(binary, Err(IngestError::NotUtf8(_))));
    assert_eq!(shape(&samples(&store, "a")[0].1), [(1000, Some(1.0))]);
    assert_eq!(c.end_all(&store, 2000), 2);
    assert_eq!(c.live_series(), 0);
    assert_eq!(
        shape(&samples(&store, "b")[0].1),
        [(1000, Some(1.0)), (2000, None)]
    );
    // The next good answer resolves the series again, with nothing marked twice.
    let back = ingest(&mut c, &store, "a 3\n", 3000);
    assert_eq!((back.appended.appended, back.ended), (1, 0));
    assert_eq!(store.stats().head_series, 2);
}

#[test]
fn openmetrics_answers_with_timestamps_keep_them() {
    let (_d, store) = store();
    let mut c = cache();
    let text = "# TYPE m gauge\nm 5 1.5\n# EOF\n";
    c.ingest(&store, text.as_bytes(), Format::OpenMetrics, 9000, 10)
        .unwrap();
    assert_eq!(shape(&samples(&store, "m")[0].1), [(1500, Some(5.0))]);
}

/// A label value drawn with the characters that need escaping.
fn value() -> impl Strategy<Value = String> {
    "[a-c\\\\\"\n]{1,4}"
}

fn escaped(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

proptest! {
    /// However a target spells a label set (order, spaces, trailing comma), the cache maps it
    /// to the one series the parsed labels name, and never marks it stale while it is shown.
    #[test]
    fn every_spelling_of_a_label_set_is_one_live_series(
        values in proptest::collection::btree_map("[d-g]{1,3}", value(), 0..4),
        orders in proptest::collection::vec((any::<u64>(), any::<bool>(), any::<bool>()), 1..5),
    ) {
        let (_d, store) = store();
        let mut c = cache();
        let expected = Labels::new(
            values.iter().map(|(n, v)| (n.as_str(), v.as_str()))
                .chain([("__name__", "m"), ("instance", "0"), ("job", "app")]),
        );
        for (round, (seed, spaced, trailing)) in orders.iter().enumerate() {
            let mut pairs: Vec<String> = values
                .iter()
                .map(|(n, v)| format!("{n}=\"{}\"", escaped(v)))
                .collect();
            let len = pairs.len().max(1);
            pairs.rotate_left((*seed as usize) % len);
            if seed % 2 == 1 {
                pairs.reverse();
            }
            let mut block = pairs.join(if *spaced { ", " } else { "," });
            if *trailing && !pairs.is_empty() {
                block.push(',');
            }
            let t = 1000 * (round as i64 + 1);
            let text = format!("m{{{block}}} {round}\n");
            let got = ingest(&mut c, &store, &text, t);
            prop_assert_eq!(got.ended, 0);
            prop_assert_eq!(got.appended.appended, 1);
        }
        let all = store
            .select(&[Matcher::new("__name__", MatchOp::Eq, "m")], i64::MIN, i64::MAX)
            .unwrap();
        prop_assert_eq!(all.len(), 1);
        prop_assert_eq!(&all[0].labels, &expected);
        prop_assert_eq!(all[0].samples.len(), orders.len());
    }
}

/// A target scraped less often than the store persists: its series leave the head between
/// two scrapes, and the cache takes the head's new series instead of reviving them each time.
#[test]
fn series_the_head_removed_between_scrapes_are_resolved_again() {
    let (_d, store) = store();
    let mut c = cache();
    let text = "a 1\nb 2\n";
    ingest(&mut c, &store, text, 1000);
    store.persist().unwrap();
    store.persist().unwrap();
    assert_eq!(store.stats().head_series, 0);
    let old: Vec<SeriesRef> = c.by_text.iter().map(|k| k.series.clone()).collect();
    assert!(old.iter().all(SeriesRef::is_removed));
    let next = ingest(&mut c, &store, text, 2000);
    assert_eq!((next.appended.appended, next.ended), (2, 0));
    assert_eq!(store.stats().head_series, 2);
    assert!(c.by_text.iter().all(|k| !k.series.is_removed()));
    assert_eq!(c.live_series(), 2);
    let a = samples(&store, "a");
    assert_eq!(a.len(), 1);
    assert_eq!(shape(&a[0].1), [(1000, Some(1.0)), (2000, Some(1.0))]);
}

proptest! {
    /// Whatever subsets of its series a target shows from one scrape to the next, the cache
    /// holds exactly the texts of the last scrape, one sorted entry each, with little spare
    /// room, and marks stale exactly the series that vanished.
    #[test]
    fn the_cache_holds_the_last_scrape_sorted_and_tight(
        scrapes in proptest::collection::vec(proptest::collection::btree_set(0u8..40, 0..40), 1..12),
    ) {
        let (_d, store) = store();
        let mut c = cache();
        let mut previous = std::collections::BTreeSet::new();
        for (round, shown) in scrapes.iter().enumerate() {
            let text: String = shown.iter().map(|i| format!("m{{i=\"{i}\"}} 1\n")).collect();
            let got = ingest(&mut c, &store, &text, 1000 * (round as i64 + 1));
            prop_assert_eq!(got.ended, previous.difference(shown).count());
            prop_assert_eq!(c.by_text.len(), shown.len());
            prop_assert!(c.by_text.windows(2).all(|w| w[0].key < w[1].key));
            prop_assert!(c.by_text.capacity() <= c.by_text.len() + c.by_text.len() / 8);
            prop_assert_eq!(c.live_series(), shown.len());
            previous = shown.clone();
        }
    }
}
