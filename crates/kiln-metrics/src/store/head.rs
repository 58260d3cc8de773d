//! The head: in-memory series with their open (and not yet persisted) chunks.
//!
//! Each series has immutable labels and a mutex over its chunks, so an appender and a reader
//! contend only on the one series, and only for an append or a chunk clone.
//!
//! ## Series churn
//! A series stays in the head while it gets samples. At a persist ([`Head::cut`]), a series
//! that got none since the previous persist (nothing to cut) is removed: from the map, the
//! series list and the index, and the interner keeps only the pairs of the series left. Its
//! past stays in the segments. Ids are dense and renumbered at each cut (a new WAL generation
//! starts there, whose series records carry the new ids), so a head under churn stays the
//! size of its live series. A removed series is marked ([`HeadSeries::is_removed`], under its
//! lock): an appender still holding it resolves its labels again (see `Inner::append_series`).

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::index::Index;
use crate::chunk::Chunk;
use crate::labels::{Interner, Labels};

/// A series in the head.
#[derive(Debug)]
pub struct HeadSeries {
    /// Dense id, also the series' id in the current WAL generation; renumbered at each cut
    /// (under the head's write lock and the WAL buffer's lock), [`REMOVED`] once removed.
    id: AtomicU64,
    /// Its labels.
    pub labels: Labels,
    data: Mutex<SeriesData>,
}

/// The mutable part of a head series.
///
/// The chunk taking appends is kept inline rather than in a list of its own: every series has
/// one, and a separate allocation cost a 64-byte block a series besides the 16 bytes of the
/// list's pointer. The series struct with it inline (and the `Arc`'s counts) fills a 128-byte
/// block, where the two allocations took 80 + 64.
#[derive(Debug)]
pub struct SeriesData {
    /// Takes appends. Empty after a cut until the next sample, when it remembers the newest
    /// timestamp ever appended (see [`Chunk::empty_after`]), for out-of-order checks.
    open: Chunk,
    /// Full chunks not yet persisted, oldest first. A boxed slice rather than a `Vec`: no
    /// spare room, and 8 bytes less in every series.
    sealed: Box<[Chunk]>,
}

/// The id of a series removed from the head.
const REMOVED: u64 = u64::MAX;

impl HeadSeries {
    /// Its id in the current WAL generation (stable between two cuts).
    pub fn id(&self) -> u64 {
        self.id.load(Ordering::Relaxed)
    }

    /// True once the head removed it. Set under the series' lock, so an appender that holds
    /// the lock and sees false appends to a series still in the head.
    pub fn is_removed(&self) -> bool {
        self.id() == REMOVED
    }

    /// Locks the series data; a poisoned lock is taken over, since chunk data stays valid
    /// (a panic cannot leave a chunk half-appended: appends don't panic).
    pub fn lock(&self) -> MutexGuard<'_, SeriesData> {
        self.data
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl SeriesData {
    /// No samples yet; none will be taken at or before `last_t`.
    pub fn new(last_t: i64) -> Self {
        SeriesData {
            open: Chunk::empty_after(last_t),
            sealed: Box::default(),
        }
    }

    /// Newest timestamp ever appended (survives persisting), or the floor it was created with.
    pub fn last_t(&self) -> i64 {
        self.open.max_t()
    }

    /// The chunks not yet persisted, oldest first.
    pub fn chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.sealed
            .iter()
            .chain(Some(&self.open).filter(|c| !c.is_empty()))
    }

    /// True when it holds no sample.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.sealed.is_empty()
    }

    /// Takes every chunk (oldest first), leaving none but the newest timestamp.
    pub fn take_chunks(&mut self) -> Vec<Chunk> {
        let last_t = self.last_t();
        let mut chunks = std::mem::take(&mut self.sealed).into_vec();
        let open = std::mem::replace(&mut self.open, Chunk::empty_after(last_t));
        if !open.is_empty() {
            // Exactly one more: a first push would reserve four chunks (224 bytes a series
            // of nothing, for every series the persist takes).
            chunks.reserve_exact(1);
            chunks.push(open);
        }
        chunks
    }

    /// Appends a sample; false when `t` is not after the last timestamp.
    pub fn append(&mut self, t: i64, v: f64) -> bool {
        if t <= self.last_t() {
            return false;
        }
        if !self.open.is_empty() && self.open.is_full_for(t) {
            let mut full = std::mem::take(&mut self.open);
            // A sealed chunk takes no more appends: its spare capacity would be kept for
            // nothing (up to half its bytes, as its buffer grows by half).
            full.shrink_to_fit();
            // Exactly one more: a series holds few chunks between persists, and a doubling
            // `Vec` would keep room for three more chunks per series.
            let mut sealed = std::mem::take(&mut self.sealed).into_vec();
            sealed.reserve_exact(1);
            sealed.push(full);
            self.sealed = sealed.into_boxed_slice();
        }
        self.open.append(t, v);
        true
    }
}

/// A head series as a set member: equal, hashed and looked up by its labels.
#[derive(Debug)]
struct ByLabels(Arc<HeadSeries>);

impl Borrow<Labels> for ByLabels {
    fn borrow(&self) -> &Labels {
        &self.0.labels
    }
}

// As `Labels`' own, which `Borrow` requires.
impl Hash for ByLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.labels.hash(state);
    }
}

impl PartialEq for ByLabels {
    fn eq(&self, other: &Self) -> bool {
        self.0.labels == other.0.labels
    }
}

impl Eq for ByLabels {}

/// All head series and their index.
#[derive(Debug)]
pub struct Head {
    /// The series, found by their labels: a set of pointers (8 bytes an entry) rather than a
    /// map from labels to series (24), since a series carries its labels.
    by_labels: HashSet<ByLabels>,
    /// Series by id.
    pub series: Vec<Arc<HeadSeries>>,
    /// The label index over head series.
    pub index: Index,
    /// The pairs of every head series' labels, each kept once.
    interner: Interner,
    /// The newest sample time of any series removed from the head (or, after a restart, of
    /// any persisted series not in the WAL): a series created later takes no sample at or
    /// before it, since it may be a removed series coming back, whose newest samples are in
    /// a segment. (Prometheus likewise refuses samples older than its head.)
    floor: i64,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            by_labels: HashSet::new(),
            series: Vec::new(),
            index: Index::default(),
            interner: Interner::default(),
            floor: i64::MIN,
        }
    }
}

impl Head {
    /// The series with these labels, if any.
    pub fn get(&self, labels: &Labels) -> Option<&Arc<HeadSeries>> {
        self.by_labels.get(labels).map(|s| &s.0)
    }

    /// Creates a series (the caller checked it is absent); `last_t` is the newest persisted time.
    pub fn create(&mut self, labels: &Labels, last_t: i64) -> Arc<HeadSeries> {
        let id = self.series.len() as u64;
        let last_t = last_t.max(self.floor);
        let labels = self.interner.intern(labels);
        let s = Arc::new(HeadSeries {
            id: AtomicU64::new(id),
            labels,
            data: Mutex::new(SeriesData::new(last_t)),
        });
        self.index.add(id as u32, &s.labels);
        self.by_labels.insert(ByLabels(Arc::clone(&s)));
        self.series.push(Arc::clone(&s));
        s
    }

    /// Takes every series' chunks (returned with the series' labels, in id order) and removes
    /// the series that had none, i.e. got no sample since the previous cut. The series left
    /// are renumbered densely (their new ids are the WAL's from here on), and the index and
    /// interner rebuilt from them. The caller holds the WAL buffer's lock across this and the
    /// start of the new WAL generation.
    pub fn cut(&mut self) -> Vec<(Labels, Vec<Chunk>)> {
        let mut taken = Vec::new();
        let mut kept = Vec::with_capacity(self.series.len());
        let mut removed = 0usize;
        for s in std::mem::take(&mut self.series) {
            let mut data = s.lock();
            if data.is_empty() {
                self.floor = self.floor.max(data.last_t());
                s.id.store(REMOVED, Ordering::Relaxed);
                drop(data);
                self.by_labels.remove(&s.labels);
                removed += 1;
                continue;
            }
            let chunks = data.take_chunks();
            drop(data);
            taken.push((s.labels.clone(), chunks));
            s.id.store(kept.len() as u64, Ordering::Relaxed);
            kept.push(s);
        }
        self.series = kept;
        if removed > 0 {
            self.index = Index::default();
            self.interner = Interner::default();
            for s in &self.series {
                self.index.add(s.id() as u32, &s.labels);
                self.interner.keep(&s.labels);
            }
            // Under churn the tables would otherwise keep the size of their busiest moment.
            if self.by_labels.capacity() > 2 * self.by_labels.len() + 64 {
                self.by_labels.shrink_to_fit();
                self.series.shrink_to_fit();
            }
        }
        taken
    }

    /// Raises the floor (see [`Head::floor`]) to `t`.
    pub fn raise_floor(&mut self, t: i64) {
        self.floor = self.floor.max(t);
    }

    /// Distinct label pairs interned.
    pub fn label_pairs(&self) -> usize {
        self.interner.len()
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
        // The series struct, its open chunk inline, with the `Arc`'s two counts and the
        // allocator's header: one 128-byte block.
        assert!(std::mem::size_of::<HeadSeries>() <= 104);
        let mut data = SeriesData::new(i64::MIN);
        let full = i64::from(crate::chunk::MAX_SAMPLES);
        for t in 0..full * 2 + 1 {
            assert!(data.append(t * 1000, t as f64));
        }
        assert_eq!(data.chunks().count(), 3);
        let samples: usize = data.chunks().map(Chunk::len).sum();
        assert_eq!(samples, 2 * usize::from(crate::chunk::MAX_SAMPLES) + 1);
    }

    #[test]
    fn taking_the_chunks_keeps_the_newest_timestamp() {
        let mut data = SeriesData::new(500);
        assert!(data.is_empty() && data.chunks().next().is_none());
        assert!(!data.append(500, 1.0), "at the floor it was made with");
        assert!(data.append(1_000, 1.0) && data.append(2_000, 2.0));
        let taken = data.take_chunks();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].samples().len(), 2);
        assert!(data.is_empty() && data.chunks().next().is_none());
        assert_eq!(data.last_t(), 2_000);
        assert!(
            !data.append(2_000, 3.0),
            "a persisted time is not taken again"
        );
        assert!(data.append(3_000, 3.0));
        assert_eq!(data.chunks().map(Chunk::len).sum::<usize>(), 1);
    }
}
