//! The inverted label index: label name → value → sorted series ids (postings).
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

    /// Gives back the lists' spare room: for an index that takes no more series (a segment's),
    /// where it would be a third of the postings on average.
    pub fn shrink_to_fit(&mut self) {
        for values in self.postings.values_mut() {
            for ids in values.values_mut() {
                if let Ids::Many(ids) = ids {
                    ids.shrink_to_fit();
                }
            }
        }
        self.all.shrink_to_fit();
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
        index.shrink_to_fit();
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
}
