//! The head's inverted label index (label name → value → sorted series ids, postings), and
//! the much smaller index of a segment, whose series are sorted ([`MetricRuns`]).
//!
//! Selection first intersects the postings of matchers that cannot match the empty string
//! (those need the label present), then checks every matcher on each candidate's labels, so
//! matchers like `a=""` or `a!~"x"` keep Prometheus's "absent means empty" meaning.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::labels::{Label, Labels};
use crate::matcher::CompiledMatcher;

/// Postings per label pair, plus every id for matchers that select broadly.
///
/// A value is kept as the series' own shared pair, not a copy of its text, and a value only
/// one series has keeps its id inline: a label unique to each series (a pod or container
/// id) costs a map entry a series, not two more allocations.
#[derive(Debug, Default, Clone)]
pub struct Index {
    postings: HashMap<String, BTreeMap<ByValue, Ids>>,
    all: Vec<u32>,
}

/// A pair ordered, compared and looked up by its value (the map is per name).
#[derive(Debug, Clone)]
struct ByValue(Arc<Label>);

impl PartialEq for ByValue {
    fn eq(&self, other: &Self) -> bool {
        self.0.value == other.0.value
    }
}

impl Eq for ByValue {}

impl PartialOrd for ByValue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByValue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.value.cmp(&other.0.value)
    }
}

impl Borrow<str> for ByValue {
    fn borrow(&self) -> &str {
        &self.0.value
    }
}

/// The sorted ids of the series with one pair.
#[derive(Debug, Clone)]
enum Ids {
    One(u32),
    Many(Vec<u32>),
}

impl Ids {
    fn push(&mut self, id: u32) {
        match self {
            Ids::One(first) => *self = Ids::Many(vec![*first, id]),
            Ids::Many(ids) => ids.push(id),
        }
    }

    fn as_slice(&self) -> &[u32] {
        match self {
            Ids::One(id) => std::slice::from_ref(id),
            Ids::Many(ids) => ids,
        }
    }
}

impl Index {
    /// Adds series `id` (ids must be added in increasing order to keep postings sorted).
    pub fn add(&mut self, id: u32, labels: &Labels) {
        for l in labels.pairs() {
            // Names repeat across series: copied only when new.
            let values = match self.postings.get_mut(&l.name) {
                Some(values) => values,
                None => self.postings.entry(l.name.clone()).or_default(),
            };
            match values.get_mut(l.value.as_str()) {
                Some(ids) => ids.push(id),
                None => {
                    values.insert(ByValue(Arc::clone(l)), Ids::One(id));
                }
            }
        }
        self.all.push(id);
    }

    /// Candidate ids for `matchers`; the caller still checks each candidate's labels.
    pub fn candidates(&self, matchers: &[CompiledMatcher]) -> Vec<u32> {
        let mut result: Option<Vec<u32>> = None;
        for m in matchers.iter().filter(|m| !m.matches("")) {
            let mut ids = BTreeSet::new();
            if let Some(values) = self.postings.get(m.name()) {
                for (value, list) in values {
                    if m.matches(&value.0.value) {
                        ids.extend(list.as_slice().iter().copied());
                    }
                }
            }
            let ids: Vec<u32> = ids.into_iter().collect();
            result = Some(match result {
                None => ids,
                Some(prev) => intersect(&prev, &ids),
            });
        }
        result.unwrap_or_else(|| self.all.clone())
    }

    /// All label names.
    pub fn label_names(&self) -> impl Iterator<Item = &String> {
        self.postings.keys()
    }

    /// All values of `name`, sorted.
    pub fn label_values(&self, name: &str) -> impl Iterator<Item = &String> {
        self.postings
            .get(name)
            .into_iter()
            .flat_map(|m| m.keys().map(|v| &v.0.value))
    }
}

/// A segment's index: where each metric's series lie in its list, which is sorted by labels.
///
/// The labels of a series are sorted by name and `__name__` sorts before every lowercase
/// name, so a metric's series are next to each other: a metric is one range of ids (a
/// label named with a capital letter, which sorts first, may split it in several). Every
/// query names its metrics, so selecting by this range and checking each series' labels
/// costs little more than intersecting postings, and a segment keeps a few bytes a metric
/// instead of postings for every series (about 32 bytes a series: a store keeps up to ~25
/// segments of every series for 15 days).
#[derive(Debug, Default)]
pub struct MetricRuns {
    /// Each run of series with one metric name (`None`: no `__name__`), by name, then id.
    runs: Vec<(Option<Box<str>>, std::ops::Range<u32>)>,
    /// Every label name used, sorted.
    names: Box<[String]>,
}

/// Builds [`MetricRuns`] one series at a time, in the segment's order (a segment file's
/// writer and reader see its series one by one, never as a list).
#[derive(Debug, Default)]
pub struct MetricRunsBuilder {
    runs: Vec<(Option<Box<str>>, std::ops::Range<u32>)>,
    names: BTreeSet<String>,
    next: u32,
}

impl MetricRunsBuilder {
    /// Adds the next series: its metric name, if any, and its label names.
    pub fn push<'a>(&mut self, metric: Option<&str>, names: impl IntoIterator<Item = &'a str>) {
        let id = self.next;
        self.next += 1;
        match self.runs.last_mut() {
            Some((last, ids)) if last.as_deref() == metric => ids.end = id + 1,
            _ => self.runs.push((metric.map(Box::from), id..id + 1)),
        }
        for name in names {
            if !self.names.contains(name) {
                self.names.insert(name.to_owned());
            }
        }
    }

    /// The runs of the series pushed.
    pub fn finish(self) -> MetricRuns {
        let mut runs = self.runs;
        runs.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.start.cmp(&b.1.start)));
        runs.shrink_to_fit();
        MetricRuns {
            runs,
            names: self.names.into_iter().collect(),
        }
    }
}

impl MetricRuns {
    /// The runs of `series` (label sets, in the segment's sorted order).
    pub fn new<'a>(series: impl Iterator<Item = &'a Labels>) -> Self {
        let mut b = MetricRunsBuilder::default();
        for labels in series {
            b.push(labels.metric_name(), labels.iter().map(|l| l.name.as_str()));
        }
        b.finish()
    }

    /// Approximate heap bytes.
    pub fn heap_bytes(&self) -> usize {
        self.runs.capacity() * 32
            + self
                .runs
                .iter()
                .filter_map(|(n, _)| n.as_ref().map(|n| n.len()))
                .sum::<usize>()
            + self.names.iter().map(|n| 24 + n.len()).sum::<usize>()
    }

    /// Candidate ids for `matchers`, ascending: the runs of the metric names they accept
    /// when they require one, else every id below `count`. The caller checks each
    /// candidate's labels.
    pub fn candidates(&self, matchers: &[CompiledMatcher], count: u32) -> Vec<u32> {
        let on_name: Vec<&CompiledMatcher> = matchers
            .iter()
            .filter(|m| m.name() == crate::labels::METRIC_NAME && !m.matches(""))
            .collect();
        if on_name.is_empty() {
            return (0..count).collect();
        }
        let mut ids: Vec<u32> = self
            .runs
            .iter()
            .filter(|(name, _)| {
                name.as_ref()
                    .is_some_and(|n| on_name.iter().all(|m| m.matches(n)))
            })
            .flat_map(|(_, ids)| ids.clone())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Every label name, sorted.
    pub fn label_names(&self) -> impl Iterator<Item = &String> {
        self.names.iter()
    }

    /// The metric names, sorted (repeated when a metric is split in several runs).
    pub fn metric_names(&self) -> impl Iterator<Item = &str> {
        self.runs.iter().filter_map(|(n, _)| n.as_deref())
    }
}

fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::{MatchOp, Matcher, compile_all};

    fn index() -> Index {
        let mut index = Index::default();
        for (id, (pod, zone)) in [("p1", "a"), ("p2", "b"), ("p3", "a"), ("p4", "a")]
            .into_iter()
            .enumerate()
        {
            index.add(
                id as u32,
                &Labels::new([("__name__", "up"), ("pod", pod), ("zone", zone)]),
            );
        }
        index
    }

    fn candidates(index: &Index, ms: &[Matcher]) -> Vec<u32> {
        index.candidates(&compile_all(ms).unwrap())
    }

    #[test]
    fn shared_and_unique_values_both_select_their_series() {
        let index = index();
        assert_eq!(candidates(&index, &[Matcher::eq("zone", "a")]), [0, 2, 3]);
        assert_eq!(candidates(&index, &[Matcher::eq("pod", "p2")]), [1]);
        assert_eq!(
            candidates(
                &index,
                &[
                    Matcher::new("pod", MatchOp::Re, "p[34]"),
                    Matcher::eq("zone", "a")
                ]
            ),
            [2, 3]
        );
        assert_eq!(
            candidates(&index, &[Matcher::eq("pod", "p9")]),
            [] as [u32; 0]
        );
        // A matcher that matches the empty string selects broadly; the caller filters.
        assert_eq!(
            candidates(&index, &[Matcher::new("pod", MatchOp::Ne, "p1")]),
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn values_are_listed_sorted_by_name() {
        let index = index();
        let values: Vec<&String> = index.label_values("pod").collect();
        assert_eq!(values, ["p1", "p2", "p3", "p4"]);
        let mut names: Vec<&String> = index.label_names().collect();
        names.sort();
        assert_eq!(names, ["__name__", "pod", "zone"]);
        assert_eq!(index.label_values("none").count(), 0);
    }

    proptest::proptest! {
        /// A segment's metric runs select every series the matchers accept, whatever the
        /// names (a capital letter sorts before `__name__`; a series may have no name).
        #[test]
        fn metric_runs_select_what_a_scan_selects(
            sets in proptest::collection::vec(
                proptest::collection::vec(
                    (
                        proptest::sample::select(vec!["__name__", "A", "job", "le"]),
                        proptest::sample::select(vec!["", "up", "x", "y"]),
                    ),
                    0..4,
                ),
                0..40,
            ),
            name in proptest::sample::select(vec!["up", "x", "nope", "u.*", ".*", ""]),
            op in proptest::sample::select(vec![MatchOp::Eq, MatchOp::Ne, MatchOp::Re, MatchOp::Nre]),
            job in proptest::option::of(proptest::sample::select(vec!["x", "y"])),
        ) {
            let mut series: Vec<Labels> = sets.into_iter().map(Labels::new).collect();
            series.sort();
            series.dedup();
            let runs = MetricRuns::new(series.iter());
            let mut ms = vec![Matcher::new("__name__", op, name)];
            ms.extend(job.map(|j| Matcher::eq("job", j)));
            let ms = compile_all(&ms).unwrap();
            let scan: Vec<u32> = (0u32..)
                .zip(&series)
                .filter(|(_, l)| ms.iter().all(|m| m.matches_labels(l)))
                .map(|(id, _)| id)
                .collect();
            let candidates = runs.candidates(&ms, series.len() as u32);
            proptest::prop_assert!(candidates.is_sorted());
            let picked: Vec<u32> = candidates
                .into_iter()
                .filter(|&id| ms.iter().all(|m| m.matches_labels(&series[id as usize])))
                .collect();
            proptest::prop_assert_eq!(picked, scan);
            let mut names: Vec<&str> = series
                .iter()
                .flat_map(|l| l.iter().map(|p| p.name.as_str()))
                .collect();
            names.sort_unstable();
            names.dedup();
            proptest::prop_assert_eq!(runs.label_names().map(String::as_str).collect::<Vec<_>>(), names);
        }
    }
}
