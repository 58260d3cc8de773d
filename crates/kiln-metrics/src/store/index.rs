//! The inverted label index: label name → value → sorted series ids (postings).
//!
//! Selection first intersects the postings of matchers that cannot match the empty string
//! (those need the label present), then checks every matcher on each candidate's labels, so
//! matchers like `a=""` or `a!~"x"` keep Prometheus's "absent means empty" meaning.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::labels::Labels;
use crate::matcher::CompiledMatcher;

/// Postings per label pair, plus every id for matchers that select broadly.
#[derive(Debug, Default, Clone)]
pub struct Index {
    postings: HashMap<String, BTreeMap<String, Vec<u32>>>,
    all: Vec<u32>,
}

impl Index {
    /// Adds series `id` (ids must be added in increasing order to keep postings sorted).
    pub fn add(&mut self, id: u32, labels: &Labels) {
        for l in labels {
            // Names and values repeat across series: copied only when new.
            let values = match self.postings.get_mut(&l.name) {
                Some(values) => values,
                None => self.postings.entry(l.name.clone()).or_default(),
            };
            match values.get_mut(&l.value) {
                Some(ids) => ids.push(id),
                None => {
                    values.insert(l.value.clone(), vec![id]);
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
                ids.shrink_to_fit();
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
                    if m.matches(value) {
                        ids.extend(list.iter().copied());
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

    /// All label names, sorted.
    pub fn label_names(&self) -> impl Iterator<Item = &String> {
        self.postings.keys()
    }

    /// All values of `name`.
    pub fn label_values(&self, name: &str) -> impl Iterator<Item = &String> {
        self.postings.get(name).into_iter().flat_map(|m| m.keys())
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
