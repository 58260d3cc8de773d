//! A scrape target's series cache: from the raw text of a series (`name{labels}`) to its
//! [`SeriesRef`], as Prometheus's scrape cache keeps it.
//!
//! A steady-state scrape then builds no [`Labels`], hashes no label set and takes no store
//! lock per known series: it scans the exposition (no allocation per sample), looks each
//! series' text up here and appends to the resolved series. Only a series the target has not
//! shown before is parsed into labels (with the target's own labels added) and resolved in the
//! store.
//!
//! The cache also knows which series the target showed in its last scrape, so a series that
//! disappears gets Prometheus's staleness marker. That is tracked per *series*, not per text:
//! a target that writes the same label set in another order (or spacing) shows the same series,
//! which is therefore not stale.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

use crate::exposition::{ExpositionError, Family, Format, scan_exposition};
use crate::labels::Labels;
use crate::query::STALE_NAN_BITS;
use crate::store::{AppendStats, SeriesRef, Store};

/// Why a scrape's answer was not recorded. Nothing of such an answer reaches the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The body is not UTF-8.
    #[error("malformed exposition, not UTF-8: {0}")]
    NotUtf8(String),
    /// The exposition does not parse.
    #[error("malformed exposition, {0}")]
    Malformed(#[from] ExpositionError),
    /// More samples than the target may return.
    #[error("{got} samples exceed the sample limit of {limit}")]
    SampleLimit {
        /// Samples in the answer.
        got: usize,
        /// The limit.
        limit: usize,
    },
}

/// What one recorded scrape did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ingested {
    /// Samples in the answer.
    pub samples: usize,
    /// The answer's metric families (metadata).
    pub families: Vec<Family>,
    /// What the store did with the samples (repeated series in one answer are out of order).
    pub appended: AppendStats,
    /// Series of the previous scrape missing from this one, now marked stale.
    pub ended: usize,
}

/// One target's cache. Owned by the task that scrapes the target; its labels are fixed (a
/// target whose labels change is a new target with a new cache).
#[derive(Debug)]
pub struct TargetCache {
    /// The labels added to every sample, in name order.
    own: Vec<(String, String)>,
    /// Raw series text (by its [`TextKey`]) → series, with the scrape that last showed that
    /// text, sorted by key and looked up by binary search. Between scrapes it holds exactly
    /// the texts of the last successful one, so its series are that scrape's series (no second
    /// map by series: it would cost ~25–50 bytes a series for what only a vanished text needs
    /// to know). A sorted array with no spare room rather than a hash table: 32 bytes a
    /// series instead of ~68 (a table of 500 entries has 1,024 slots of 33 bytes), and every
    /// series of every target has an entry.
    by_text: Vec<Known>,
    /// Keys the texts.
    keys: TextKey,
    /// Successful scrapes so far.
    round: u64,
}

/// One text the target showed.
#[derive(Debug)]
struct Known {
    key: u128,
    series: SeriesRef,
    /// The scrape that last showed it.
    seen: u64,
}

impl TargetCache {
    /// An empty cache for a target whose samples get `own` labels.
    pub fn new<N: Into<String>, V: Into<String>>(own: impl IntoIterator<Item = (N, V)>) -> Self {
        let mut own: Vec<(String, String)> =
            own.into_iter().map(|(n, v)| (n.into(), v.into())).collect();
        own.sort();
        TargetCache {
            own,
            by_text: Vec::new(),
            keys: TextKey::new(),
            round: 0,
        }
    }

    /// Series the last successful scrape showed (counted on each call).
    pub fn live_series(&self) -> usize {
        let ids: HashSet<usize> = self.by_text.iter().map(|k| k.series.key()).collect();
        ids.len()
    }

    /// Checks and records one answer: samples without a timestamp get `t`, and series of the
    /// previous scrape missing from this one get a staleness marker at `t`. A malformed answer
    /// or one over `sample_limit` records nothing (the caller ends the target's series with
    /// [`TargetCache::end_all`], as Prometheus does for a failed scrape).
    pub fn ingest(
        &mut self,
        store: &Store,
        body: &[u8],
        format: Format,
        t: i64,
        sample_limit: usize,
    ) -> Result<Ingested, IngestError> {
        let text = std::str::from_utf8(body).map_err(|e| IngestError::NotUtf8(e.to_string()))?;
        let scan = scan_exposition(text, format)?;
        if scan.samples.len() > sample_limit {
            return Err(IngestError::SampleLimit {
                got: scan.samples.len(),
                limit: sample_limit,
            });
        }
        self.round += 1;
        let round = self.round;
        let mut refs = Vec::with_capacity(scan.samples.len());
        let mut texts_shown = 0;
        // Texts first shown now: merged into the sorted array once, after the loop.
        let mut new: Vec<Known> = Vec::new();
        for sample in &scan.samples {
            let key = self.keys.of(sample.series);
            let series = match self.by_text.binary_search_by(|k| k.key.cmp(&key)) {
                Ok(at) => {
                    let known = &mut self.by_text[at];
                    texts_shown += usize::from(known.seen != round);
                    known.seen = round;
                    // The head dropped a series idle for a persist interval (a target that
                    // skipped it for that long): take the one that now has its labels.
                    if known.series.is_removed() {
                        known.series = store.series_ref(known.series.labels());
                    }
                    known.series.clone()
                }
                Err(_) => {
                    // A text repeated in one answer resolves to the same series again; the
                    // merge keeps one entry.
                    let resolved = store.series_ref(&self.labels_of(&sample.labels()));
                    new.push(Known {
                        key,
                        series: resolved.clone(),
                        seen: round,
                    });
                    resolved
                }
            };
            refs.push((series, sample.timestamp_ms.unwrap_or(t), sample.value));
        }
        // Texts not shown this time: their series is gone, unless it was written another way
        // (label order, spacing) this time.
        let mut gone: Vec<SeriesRef> = Vec::new();
        if self.by_text.len() > texts_shown {
            gone = self
                .by_text
                .extract_if(.., |k| k.seen != round)
                .map(|k| k.series)
                .collect();
            let shown: HashSet<usize> = refs.iter().map(|(s, _, _)| s.key()).collect();
            gone.retain(|s| !shown.contains(&s.key()));
            distinct(&mut gone);
        }
        self.merge(new);
        let items: Vec<(&SeriesRef, i64, f64)> = refs.iter().map(|(s, t, v)| (s, *t, *v)).collect();
        let appended = store.append_refs(&items);
        mark_stale(store, &gone, t);
        Ok(Ingested {
            samples: scan.samples.len(),
            families: scan.families,
            appended,
            ended: gone.len(),
        })
    }

    /// Adds the texts first shown by a scrape, keeping the array sorted, one entry a key and
    /// (nearly) no spare room.
    fn merge(&mut self, mut new: Vec<Known>) {
        if !new.is_empty() {
            new.sort_by_key(|k| k.key);
            new.dedup_by_key(|k| k.key);
            self.by_text.reserve_exact(new.len());
            self.by_text.append(&mut new);
            // Two sorted runs: the stable sort merges them in one linear pass.
            self.by_text.sort_by_key(|k| k.key);
        }
        if self.by_text.capacity() > self.by_text.len() + self.by_text.len() / 8 {
            self.by_text.shrink_to_fit();
        }
    }

    /// Marks every series of the last scrape stale at `t` and forgets them (a failed scrape,
    /// or the target went away). Returns how many were ended.
    pub fn end_all(&mut self, store: &Store, t: i64) -> usize {
        let mut gone: Vec<SeriesRef> = self.by_text.drain(..).map(|k| k.series).collect();
        distinct(&mut gone);
        mark_stale(store, &gone, t);
        gone.len()
    }

    /// A sample's labels with the target's added; a sample's own label of the same name is
    /// kept as `exported_NAME` (Prometheus's `honor_labels: false`).
    fn labels_of(&self, labels: &Labels) -> Labels {
        let own = &self.own;
        let renamed = labels.iter().map(|l| {
            if own.iter().any(|(n, _)| *n == l.name) {
                (format!("exported_{}", l.name), l.value.as_str())
            } else {
                (l.name.clone(), l.value.as_str())
            }
        });
        Labels::new(renamed.chain(own.iter().map(|(n, v)| (n.clone(), v.as_str()))))
    }
}

/// A series' raw text as a 128-bit keyed hash, so the cache keeps no text (one allocation and
/// ~40 bytes a series less). Two SipHash-1-3 hashes under independent random keys (std's
/// `RandomState`, new keys per cache): a target cannot choose texts that collide, since it
/// does not know the keys. A collision would send one text's samples to another's series.
/// With `n` distinct texts ever seen by one cache, its chance is about `n² / 2¹²⁹`: for a
/// billion texts (50,000 new series a scrape, every 15 s, for over eight years) 1.5 × 10⁻²¹,
/// far below a memory error's. The texts are not compared on a hit, as keeping them for that
/// is the cost this saves.
#[derive(Debug)]
struct TextKey(RandomState, RandomState);

impl TextKey {
    fn new() -> Self {
        TextKey(RandomState::new(), RandomState::new())
    }

    fn of(&self, text: &str) -> u128 {
        (u128::from(self.0.hash_one(text)) << 64) | u128::from(self.1.hash_one(text))
    }
}

/// Keeps one handle per series (a series may have been written in more than one way).
fn distinct(series: &mut Vec<SeriesRef>) {
    series.sort_unstable_by_key(SeriesRef::key);
    series.dedup_by_key(|s| s.key());
}

/// Appends Prometheus's staleness marker to each series at `t`.
fn mark_stale(store: &Store, series: &[SeriesRef], t: i64) {
    if series.is_empty() {
        return;
    }
    let stale = f64::from_bits(STALE_NAN_BITS);
    let items: Vec<(&SeriesRef, i64, f64)> = series.iter().map(|s| (s, t, stale)).collect();
    store.append_refs(&items);
}

#[cfg(test)]
mod tests;
