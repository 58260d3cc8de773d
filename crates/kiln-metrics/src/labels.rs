//! Label sets: the identity of a series.
//!
//! A [`Labels`] is kept sorted by name with unique names, so two equal sets compare and hash
//! equal no matter the order they were built in. Empty values are dropped on construction,
//! because Prometheus treats `a=""` the same as an absent label.
//!
//! Each pair is its own shared allocation (`Arc<Label>`), so a set is one array of pointers
//! and the head can intern pairs ([`Interner`]): `job="app"` or `le="0.5"` is then kept once
//! however many series carry it, and a series' labels cost a pointer per label. Sets derived
//! from others (`without`, `only`, `with`) share the pairs they keep.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

/// The label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// One `name="value"` pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    /// The label name.
    pub name: String,
    /// The label value (never empty inside a [`Labels`]).
    pub value: String,
}

/// A sorted, de-duplicated set of labels. Shared (`Arc`), so the copies a query makes per
/// series and per step, and the scraper's set of last-seen series, cost a reference count.
/// Equality, hashing and order are those of the pairs (not of their allocations), but a
/// shared set or pair is known equal without reading its strings: the store's sources of a
/// series (head, segments) mostly hold the same allocations, and merging them compares sets
/// by the thousand.
#[derive(Debug, Clone, Default)]
pub struct Labels(Arc<[Arc<Label>]>);

impl PartialEq for Labels {
    fn eq(&self, other: &Labels) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.len() == other.0.len()
                && self
                    .0
                    .iter()
                    .zip(other.0.iter())
                    .all(|(a, b)| Arc::ptr_eq(a, b) || a == b))
    }
}

impl Eq for Labels {}

impl std::hash::Hash for Labels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl Ord for Labels {
    fn cmp(&self, other: &Labels) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        for (a, b) in self.0.iter().zip(other.0.iter()) {
            if Arc::ptr_eq(a, b) {
                continue;
            }
            match a.cmp(b) {
                std::cmp::Ordering::Equal => {}
                unequal => return unequal,
            }
        }
        self.0.len().cmp(&other.0.len())
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Labels) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Iterates a set's labels in name order (see [`Labels::iter`]).
#[derive(Debug, Clone)]
pub struct Iter<'a>(std::slice::Iter<'a, Arc<Label>>);

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Label;
    fn next(&mut self) -> Option<&'a Label> {
        self.0.next().map(|l| &**l)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|l| &**l)
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl Labels {
    /// Its pairs as the shared allocations they are, for indexes that keep them.
    pub(crate) fn pairs(&self) -> &[Arc<Label>] {
        &self.0
    }

    /// A set of pairs already sorted by name, with distinct names and no empty value (as a
    /// segment file stores them); `None` when they are not.
    pub(crate) fn from_sorted_pairs(pairs: Vec<Arc<Label>>) -> Option<Labels> {
        let valid = pairs.windows(2).all(|w| w[0].name < w[1].name)
            && pairs.iter().all(|l| !l.value.is_empty());
        valid.then(|| Labels(pairs.into()))
    }

    /// Builds a set from pairs; later duplicates win, empty values are dropped.
    pub fn new<N: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (N, V)>) -> Self {
        let mut v: Vec<Label> = pairs
            .into_iter()
            .map(|(n, v)| Label {
                name: n.into(),
                value: v.into(),
            })
            .collect();
        // Stable sort keeps insertion order among equal names so "later wins" holds below.
        v.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out: Vec<Label> = Vec::with_capacity(v.len());
        for l in v {
            match out.last_mut() {
                Some(last) if last.name == l.name => *last = l,
                _ => out.push(l),
            }
        }
        Labels(
            out.into_iter()
                .filter(|l| !l.value.is_empty())
                .map(Arc::new)
                .collect(),
        )
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].value.as_str())
    }

    /// The metric name (`__name__`), if any.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// Iterates labels in name order.
    pub fn iter(&self) -> Iter<'_> {
        Iter(self.0.iter())
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A copy without the named labels.
    pub fn without(&self, names: &[&str]) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|l| !names.contains(&l.name.as_str()))
                .cloned()
                .collect(),
        )
    }

    /// A copy keeping only the named labels.
    pub fn only(&self, names: &[&str]) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|l| names.contains(&l.name.as_str()))
                .cloned()
                .collect(),
        )
    }

    /// A copy with `name` set to `value` (or removed when `value` is empty).
    pub fn with(&self, name: &str, value: &str) -> Labels {
        let mut v: Vec<Arc<Label>> = self.0.iter().filter(|l| l.name != name).cloned().collect();
        if !value.is_empty() {
            let pos = v.partition_point(|l| l.name.as_str() < name);
            v.insert(
                pos,
                Arc::new(Label {
                    name: name.to_string(),
                    value: value.to_string(),
                }),
            );
        }
        Labels(v.into())
    }

    /// Identifies this shared copy: clones share it, separately built equal sets do not. While
    /// a clone is alive no other set can have the same identity, so a cache keyed by identity
    /// must hold a clone of its key's labels.
    pub(crate) fn identity(&self) -> usize {
        self.0.as_ptr() as usize
    }

    /// Approximate heap bytes, for memory accounting: the array of pointers, and each pair
    /// as if it were not shared.
    pub fn heap_bytes(&self) -> usize {
        16 + self
            .0
            .iter()
            .map(|l| 8 + 16 + 48 + l.name.len() + l.value.len())
            .sum::<usize>()
    }

    /// True when every pair of `self` is the very allocation of the same pair in `other`.
    #[cfg(test)]
    pub(crate) fn shares_pairs_with(&self, other: &Labels) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(other.0.iter())
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = &'a Label;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Keeps one shared copy of each label pair. A store's head holds one, so the labels of its
/// series share their pairs; the head rebuilds it from the series it keeps when it removes
/// series, so a pair no head series uses is released (segments keep their own references).
#[derive(Debug, Default)]
pub(crate) struct Interner {
    pairs: HashSet<Arc<Label>>,
}

impl Interner {
    /// The same set, its pairs replaced by this interner's copies (added when new). Returns a
    /// clone of `labels` when it already uses only this interner's pairs.
    pub(crate) fn intern(&mut self, labels: &Labels) -> Labels {
        let pairs: Vec<Arc<Label>> = labels
            .0
            .iter()
            .map(|l| match self.pairs.get(&**l) {
                Some(p) => Arc::clone(p),
                None => {
                    self.pairs.insert(Arc::clone(l));
                    Arc::clone(l)
                }
            })
            .collect();
        if pairs
            .iter()
            .zip(labels.0.iter())
            .all(|(a, b)| Arc::ptr_eq(a, b))
        {
            return labels.clone();
        }
        Labels(pairs.into())
    }

    /// This interner's copy of the pair `name=value`, added when new.
    pub(crate) fn pair(&mut self, name: &str, value: &str) -> Arc<Label> {
        let label = Label {
            name: name.to_owned(),
            value: value.to_owned(),
        };
        if let Some(p) = self.pairs.get(&label) {
            return Arc::clone(p);
        }
        let p = Arc::new(label);
        self.pairs.insert(Arc::clone(&p));
        p
    }

    /// Adds the pairs of an already interned set as they are (no copy).
    pub(crate) fn keep(&mut self, labels: &Labels) {
        for l in labels.0.iter() {
            if !self.pairs.contains(&**l) {
                self.pairs.insert(Arc::clone(l));
            }
        }
    }

    /// Distinct pairs kept.
    pub(crate) fn len(&self) -> usize {
        self.pairs.len()
    }
}

/// Prometheus notation: `name{a="b", c="d"}`, or `{...}` without a name.
impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.metric_name() {
            f.write_str(name)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for l in self.iter().filter(|l| l.name != METRIC_NAME) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{}=\"", l.name)?;
            for c in l.value.chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '"' => f.write_str("\\\"")?,
                    '\n' => f.write_str("\\n")?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("\"")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_deduplicated_and_empty_dropped() {
        let l = Labels::new([("b", "1"), ("a", "2"), ("b", "3"), ("c", "")]);
        assert_eq!(l.to_string(), r#"{a="2", b="3"}"#);
        assert_eq!(l.get("b"), Some("3"));
        assert_eq!(l.get("c"), None);
    }

    #[test]
    fn display_with_name_and_escapes() {
        let l = Labels::new([("__name__", "up"), ("x", "a\"b\\")]);
        assert_eq!(l.to_string(), r#"up{x="a\"b\\"}"#);
        assert_eq!(l.with("y", "1").get("y"), Some("1"));
        assert_eq!(l.without(&[METRIC_NAME]).metric_name(), None);
    }

    #[test]
    fn interned_sets_share_equal_pairs_and_keep_their_identity() {
        let mut interner = Interner::default();
        let a = interner.intern(&Labels::new([("job", "app"), ("instance", "1")]));
        let b = interner.intern(&Labels::new([("job", "app"), ("instance", "2")]));
        assert_eq!(interner.len(), 3);
        let job = |l: &Labels| l.0.iter().find(|p| p.name == "job").cloned();
        let (ja, jb) = (job(&a), job(&b));
        assert!(ja.zip(jb).is_some_and(|(x, y)| Arc::ptr_eq(&x, &y)));
        // Interning an interned set again is free and keeps its identity.
        let again = interner.intern(&a);
        assert_eq!(again.identity(), a.identity());
        // Derived sets share the pairs they keep.
        let kept = a.without(&["instance"]);
        assert!(
            kept.0
                .iter()
                .all(|p| { interner.pairs.get(&**p).is_some_and(|q| Arc::ptr_eq(p, q)) })
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
            // Few names and values, so sets overlap and repeat pairs.
            let name = prop::sample::select(vec!["__name__", "a", "b", "job", "le", "zz"]);
            let value = prop::sample::select(vec!["", "0", "1", "app", "x\"y", "é"]);
            prop::collection::vec((name, value), 0..8).prop_map(|v| {
                v.into_iter()
                    .map(|(n, v)| (n.to_owned(), v.to_owned()))
                    .collect()
            })
        }

        proptest! {
            /// Interning keeps every pair, the order, equality, hashing and display; equal
            /// pairs of all interned sets are one allocation.
            #[test]
            fn interning_round_trips(sets in prop::collection::vec(pairs(), 1..20)) {
                use std::hash::{BuildHasher, RandomState};
                let mut interner = Interner::default();
                let hasher = RandomState::new();
                let mut interned = Vec::new();
                for pairs in &sets {
                    let fresh = Labels::new(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
                    let kept = interner.intern(&fresh);
                    prop_assert_eq!(&kept, &fresh);
                    prop_assert_eq!(hasher.hash_one(&kept), hasher.hash_one(&fresh));
                    prop_assert_eq!(kept.to_string(), fresh.to_string());
                    prop_assert!(kept.iter().eq(fresh.iter()));
                    for (n, _) in pairs {
                        prop_assert_eq!(kept.get(n), fresh.get(n));
                    }
                    interned.push(kept);
                }
                let all: Vec<&Arc<Label>> = interned.iter().flat_map(|l| l.0.iter()).collect();
                for x in &all {
                    for y in &all {
                        prop_assert_eq!(x == y, Arc::ptr_eq(x, y));
                    }
                }
                prop_assert_eq!(interner.len(), {
                    let distinct: HashSet<&Label> = all.iter().map(|p| &***p).collect();
                    distinct.len()
                });
            }

            /// Order and equality skip shared allocations but agree with comparing the pairs
            /// themselves, whether the two sets share pairs (interned), the whole set (a
            /// clone) or nothing (built apart).
            #[test]
            fn order_is_that_of_the_pairs(sets in prop::collection::vec(pairs(), 1..12)) {
                let mut interner = Interner::default();
                let mut all = Vec::new();
                for pairs in &sets {
                    let fresh = Labels::new(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
                    let kept = interner.intern(&fresh);
                    all.push(kept.clone());
                    all.push(kept);
                    all.push(fresh);
                }
                let plain = |l: &Labels| l.iter().cloned().collect::<Vec<Label>>();
                for x in &all {
                    for y in &all {
                        prop_assert_eq!(x.cmp(y), plain(x).cmp(&plain(y)), "{} vs {}", x, y);
                        prop_assert_eq!(x == y, plain(x) == plain(y));
                    }
                }
            }
        }
    }
}
