//! The head: in-memory series with their open (and not yet persisted) chunks.
//!
//! Each series has immutable labels and a mutex over its chunks, so an appender and a reader
//! contend only on the one series, and only for an append or a chunk clone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::index::Index;
use crate::chunk::Chunk;
use crate::labels::{Interner, Labels};

/// A series in the head.
#[derive(Debug)]
pub struct HeadSeries {
    /// Dense id, also the series' id in the current WAL generation.
    pub id: u64,
    /// Its labels.
    pub labels: Labels,
    data: Mutex<SeriesData>,
}

/// The mutable part of a head series.
#[derive(Debug)]
pub struct SeriesData {
    /// Chunks not yet persisted; the last one takes appends. A boxed slice rather than a
    /// `Vec`: no spare room, and 8 bytes less in every series (which brings the shared series
    /// struct from 80 to 72 bytes, one allocator size class lower).
    pub chunks: Box<[Chunk]>,
    /// Newest timestamp ever appended (survives persisting), for out-of-order checks.
    pub last_t: i64,
}

impl HeadSeries {
    /// Locks the series data; a poisoned lock is taken over, since chunk data stays valid
    /// (a panic cannot leave a chunk half-appended: appends don't panic).
    pub fn lock(&self) -> MutexGuard<'_, SeriesData> {
        self.data
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl SeriesData {
    /// Appends a sample; false when `t` is not after the last timestamp.
    pub fn append(&mut self, t: i64, v: f64) -> bool {
        if t <= self.last_t {
            return false;
        }
        match self.chunks.last_mut() {
            Some(c) if !c.is_full_for(t) => c.append(t, v),
            last => {
                // A cut chunk takes no more appends: its spare capacity would be kept for
                // nothing (up to half its bytes, as its buffer grows by doubling).
                if let Some(cut) = last {
                    cut.shrink_to_fit();
                }
                let mut c = Chunk::new();
                c.append(t, v);
                // Exactly one more: a series holds few chunks between persists, and a
                // doubling `Vec` would keep room for three more 72-byte chunks per series.
                let mut chunks = std::mem::take(&mut self.chunks).into_vec();
                chunks.reserve_exact(1);
                chunks.push(c);
                self.chunks = chunks.into_boxed_slice();
            }
        }
        self.last_t = t;
        true
    }
}

/// All head series and their index.
#[derive(Debug, Default)]
pub struct Head {
    by_labels: HashMap<Labels, Arc<HeadSeries>>,
    /// Series by id.
    pub series: Vec<Arc<HeadSeries>>,
    /// The label index over head series.
    pub index: Index,
    /// The pairs of every head series' labels, each kept once.
    interner: Interner,
}

impl Head {
    /// The series with these labels, if any.
    pub fn get(&self, labels: &Labels) -> Option<&Arc<HeadSeries>> {
        self.by_labels.get(labels)
    }

    /// Creates a series (the caller checked it is absent); `last_t` is the newest persisted time.
    pub fn create(&mut self, labels: &Labels, last_t: i64) -> Arc<HeadSeries> {
        let id = self.series.len() as u64;
        let labels = self.interner.intern(labels);
        let s = Arc::new(HeadSeries {
            id,
            labels: labels.clone(),
            data: Mutex::new(SeriesData {
                chunks: Box::default(),
                last_t,
            }),
        });
        self.index.add(id as u32, &labels);
        self.by_labels.insert(labels, Arc::clone(&s));
        self.series.push(Arc::clone(&s));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_share_their_label_pairs() {
        let mut head = Head::default();
        let a = head.create(&Labels::new([("job", "app"), ("instance", "1")]), i64::MIN);
        let b = head.create(&Labels::new([("job", "app"), ("instance", "2")]), i64::MIN);
        assert_eq!(head.interner.len(), 3);
        let job = |l: &Labels| l.only(&["job"]);
        assert!(job(&a.labels).shares_pairs_with(&job(&b.labels)));
        // The map and the series list hold the one interned copy.
        let found = head.get(&Labels::new([("instance", "2"), ("job", "app")]));
        assert!(found.is_some_and(|s| s.labels.identity() == b.labels.identity()));
    }

    #[test]
    fn a_series_keeps_exactly_its_chunks() {
        // The series struct is shared by the head and every scrape cache: keep it in the
        // allocator's 80-byte class (with the `Arc`'s two counts).
        assert!(std::mem::size_of::<HeadSeries>() <= 56);
        let mut data = SeriesData {
            chunks: Box::default(),
            last_t: i64::MIN,
        };
        let full = i64::from(crate::chunk::MAX_SAMPLES);
        for t in 0..full * 2 + 1 {
            assert!(data.append(t * 1000, t as f64));
        }
        assert_eq!(data.chunks.len(), 3);
        let samples: usize = data.chunks.iter().map(Chunk::len).sum();
        assert_eq!(samples, 2 * usize::from(crate::chunk::MAX_SAMPLES) + 1);
    }
}
