//! The store: a head of in-memory chunks, a write-ahead log, and immutable on-disk segments.
//!
//! ## Design
//! - **Append** resolves labels to a head series (creating it, and logging a series record,
//!   under the head's write lock only when new), then appends to the series' open chunk and
//!   encodes the sample into the in-memory WAL buffer. No file I/O happens on this path.
//! - **WAL flusher**: a background thread moves the WAL buffer into the current `wal-<gen>.log`
//!   and fsyncs it every [`Options::flush_interval`] (1 s), so a crash loses at most ~1 s.
//! - **Persist** (every [`Options::persist_interval`], when the head holds
//!   [`Options::persist_after_samples`], or on [`Store::close`]): under short locks it takes
//!   every head chunk into a new in-memory [`segment::Segment`] that readers see at once, and
//!   starts a new WAL generation; then, without those locks, it writes `seg-<seq>.kms` and
//!   deletes WAL generations the segment covers. A crash in between replays the old WAL; samples
//!   already in a segment are skipped on replay.
//! - **Retention** drops whole segments older than [`Options::retention`] (relative to the
//!   newest sample) and the oldest segments while their total exceeds
//!   [`Options::retention_bytes`]. **Compaction** merges adjacent segments into one with full
//!   chunks, by time window (see [`compaction`]), so a long retention ends in few segments.
//!   Both run on their own thread after a background persist, so a long merge never delays
//!   the WAL's fsync; an explicit [`Store::persist`] runs them before it returns.
//! - **Readers** snapshot the head (cloning matching chunks under each series' lock), then the
//!   segment list, and decode outside every lock; a persist racing a read can only make a
//!   sample appear twice, which the merge removes.
//!
//! Lock order (outermost first): persisting or compacting (never both) → WAL file → head →
//! WAL buffer → series.
//! Dropping a [`Store`] without [`Store::close`] behaves like a crash (nothing more is
//! flushed), which is what the crash tests rely on.

mod codec;
pub mod compaction;
mod filelist;
mod head;
mod index;
pub mod segment;
mod wal;

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::chunk::Sample;
use crate::labels::{Interner, Labels};
use crate::matcher::{BadRegex, CompiledMatcher, Matcher, compile_all};
use head::{Head, HeadSeries};
use segment::{SegSeries, Segment};

/// Store settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Keep data this long, measured back from the newest sample (default 15 days).
    pub retention: Duration,
    /// Keep at most this many bytes of segments (default: no limit).
    pub retention_bytes: Option<u64>,
    /// How often the WAL is fsynced (default 1 s): the most a crash can lose.
    pub flush_interval: Duration,
    /// Persist the head at least this often (default 2 h).
    pub persist_interval: Duration,
    /// Persist the head once it holds this many samples (default 1 million, ~1.5 MB
    /// compressed: about 5 minutes of 50,000 series scraped every 15 s), or
    /// [`PERSIST_MIN_SAMPLES_PER_SERIES`] a series if that is more. A persisted sample costs
    /// no memory; one in the head costs 2–4 bytes.
    pub persist_after_samples: usize,
    /// Segments of the current 2 h window smaller than this are merged with small neighbours
    /// (default 256 MiB); finished windows are merged whatever their size. Each segment
    /// costs memory for every series in it (about 100 bytes), and merging a window's segment
    /// with the next persist mostly copies its chunks, so by default a window stays one
    /// segment until it holds a few hundred thousand series' two hours.
    pub compact_below_bytes: u64,
}

/// The fewest samples a series gains (on average) between two persists that the head's size
/// triggers: with more series than `persist_after_samples` / 20, a persist would otherwise
/// come every scrape or two (a million series scraped every 15 s: every 15 s), each one a
/// segment of one-sample chunks to merge into the window's. 20 samples a series keeps the
/// head at ~40–80 bytes a series and a persist's chunks worth copying.
pub const PERSIST_MIN_SAMPLES_PER_SERIES: usize = 20;

/// Whether the background thread persists the head now: `since` the last persist, with
/// `samples` in the head over `series`.
fn persist_due(opts: &Options, since: Duration, samples: usize, series: usize) -> bool {
    since >= opts.persist_interval
        || samples
            >= opts
                .persist_after_samples
                .max(series.saturating_mul(PERSIST_MIN_SAMPLES_PER_SERIES))
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retention: Duration::from_secs(15 * 24 * 3600),
            retention_bytes: None,
            flush_interval: Duration::from_secs(1),
            persist_interval: Duration::from_secs(2 * 3600),
            persist_after_samples: 1_000_000,
            compact_below_bytes: 256 << 20,
        }
    }
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A segment file failed its checksum or structure check.
    #[error("corrupt segment file {0}")]
    CorruptSegment(PathBuf),
    /// A sample not newer than the series' last one.
    #[error("out-of-order sample for {labels} at {t} (last is {last})")]
    OutOfOrder {
        /// The series.
        labels: Labels,
        /// The rejected timestamp.
        t: i64,
        /// The newest accepted timestamp.
        last: i64,
    },
    /// A matcher's regex is invalid.
    #[error(transparent)]
    BadRegex(#[from] BadRegex),
    /// A selection matched more series or samples than its [`SelectLimits`] allow.
    #[error("more than {limit} {what}")]
    TooMany {
        /// `series` or `samples`.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The background flusher failed earlier; the WAL may be missing data.
    #[error("WAL flush failed: {0}")]
    Flush(String),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
}

/// A handle to a head series for fast repeated appends (see [`Store::series_ref`]).
#[derive(Debug, Clone)]
pub struct SeriesRef(Arc<HeadSeries>);

impl SeriesRef {
    /// The series' id in the head's current WAL generation. Ids are renumbered at a persist
    /// that removes series, so compare handles with [`SeriesRef::same`], not by id.
    pub fn id(&self) -> u64 {
        self.0.id()
    }

    /// True when both handles are the same head series.
    pub fn same(&self, other: &SeriesRef) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// A key equal for handles of the same head series while either is alive.
    pub fn key(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// True once a persist removed the series from the head (it got no sample for a whole
    /// persist interval). Appending through the handle still works (the labels are resolved
    /// again), but a holder that keeps it should take a fresh one from [`Store::series_ref`].
    pub fn is_removed(&self) -> bool {
        self.0.is_removed()
    }

    /// The series' labels.
    pub fn labels(&self) -> &Labels {
        &self.0.labels
    }
}

/// One selected series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its labels.
    pub labels: Labels,
    /// Samples in time order.
    pub samples: Vec<Sample>,
}

/// Outcome of a batch append.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendStats {
    /// Samples stored.
    pub appended: usize,
    /// Samples dropped because they were not newer than their series' last sample.
    pub out_of_order: usize,
}

/// Bounds on one selection, checked before samples are decoded, so a query that matches too
/// much fails fast instead of decoding everything first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectLimits {
    /// Most series.
    pub max_series: usize,
    /// Most samples (counted per chunk overlapping the range).
    pub max_samples: usize,
}

impl Default for SelectLimits {
    fn default() -> Self {
        SelectLimits {
            max_series: usize::MAX,
            max_samples: usize::MAX,
        }
    }
}

/// Sizes, for monitoring and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Series in the head.
    pub head_series: usize,
    /// Distinct label pairs the head's series use (each kept once).
    pub head_label_pairs: usize,
    /// Samples in the head not yet persisted.
    pub head_samples: usize,
    /// Number of segments.
    pub segments: usize,
    /// Bytes of segment files.
    pub segment_bytes: u64,
    /// Bytes written to the WAL since the store was opened.
    pub wal_bytes_written: u64,
    /// WAL fsyncs since the store was opened.
    pub wal_syncs: u64,
}

#[derive(Debug)]
struct WalFile {
    file: File,
    generation: u64,
}

/// What the background threads are asked to do.
#[derive(Debug, Default)]
struct Wake {
    stop: bool,
    compact: bool,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    opts: Options,
    /// Held by a persist: one at a time.
    persisting: Mutex<()>,
    /// Held by retention and compaction, which change which segment files exist.
    compacting: Mutex<()>,
    wal: Mutex<WalFile>,
    head: RwLock<Head>,
    buf: Mutex<Vec<u8>>,
    segments: RwLock<Vec<Arc<Segment>>>,
    next_seq: AtomicU64,
    head_samples: AtomicUsize,
    wal_bytes_written: AtomicU64,
    wal_syncs: AtomicU64,
    max_t: AtomicI64,
    flush_error: Mutex<Option<String>>,
    wake: (Mutex<Wake>, Condvar),
}

/// An embedded time-series store. Cheap to share behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct Store {
    inner: Arc<Inner>,
    workers: Vec<JoinHandle<()>>,
}

// Poisoned locks are taken over: every critical section leaves the data consistent, since
// nothing in them panics by design.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}
fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn numbered_files(
    dir: &Path,
    prefix: &str,
    suffix: &str,
) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("read dir", dir))? {
        let path = entry.map_err(io_err("read dir", dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let number = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(suffix));
        if let Some(n) = number.and_then(|n| n.parse::<u64>().ok()) {
            out.push((n, path));
        }
    }
    out.sort();
    Ok(out)
}

fn wal_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("wal-{generation:08}.log"))
}

fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("seg-{seq:08}.kms"))
}

/// Writes a segment file through a temporary name as `fill` encodes it, then fsyncs and
/// renames it, so the file is either whole or absent. A failure of `fill` to read a segment
/// it copies from is reported as that file being corrupt.
fn write_segment_file<T>(
    dir: &Path,
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> std::io::Result<T>,
) -> Result<T, StoreError> {
    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp).map_err(io_err("create", &tmp))?;
    let mut out = BufWriter::with_capacity(1 << 16, &file);
    let filled = fill(&mut out).and_then(|value| out.flush().map(|()| value));
    drop(out);
    let value = match filled {
        Ok(value) => value,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(if e.kind() == std::io::ErrorKind::InvalidData {
                StoreError::CorruptSegment(path.to_path_buf())
            } else {
                io_err("write", &tmp)(e)
            });
        }
    };
    file.sync_all().map_err(io_err("fsync", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("rename", path))?;
    sync_dir(dir)?;
    Ok(value)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync dir", dir))
}

impl Store {
    /// Opens (or creates) a store in `dir`: loads segments, replays the WAL, starts the flusher.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Store, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(io_err("create dir", &dir))?;
        let (segments, persisted) = load_segments(&dir)?;
        let next_seq = segments.last().map_or(1, |s| s.seq + 1);
        let max_t = segments.iter().map(|s| s.max_t).max().unwrap_or(i64::MIN);
        let wal_files = numbered_files(&dir, "wal-", ".log")?;
        let generation = wal_files.last().map_or(1, |(g, _)| g + 1);
        let path = wal_path(&dir, generation);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        let inner = Arc::new(Inner {
            dir,
            opts,
            persisting: Mutex::new(()),
            compacting: Mutex::new(()),
            wal: Mutex::new(WalFile { file, generation }),
            head: RwLock::new(Head::default()),
            buf: Mutex::new(Vec::new()),
            segments: RwLock::new(segments),
            next_seq: AtomicU64::new(next_seq),
            head_samples: AtomicUsize::new(0),
            wal_bytes_written: AtomicU64::new(0),
            wal_syncs: AtomicU64::new(0),
            max_t: AtomicI64::new(max_t),
            flush_error: Mutex::new(None),
            wake: (Mutex::new(Wake::default()), Condvar::new()),
        });
        inner.replay(&wal_files, persisted)?;
        inner.apply_retention()?;
        let mut store = Store {
            inner,
            workers: Vec::new(),
        };
        let flusher = Arc::clone(&store.inner);
        store.spawn("kiln-metrics-wal", move || flusher.background())?;
        let compactor = Arc::clone(&store.inner);
        store.spawn("kiln-metrics-compact", move || compactor.compactor())?;
        Ok(store)
    }

    /// Appends one sample. Timestamps per series must increase.
    pub fn append(&self, labels: &Labels, t: i64, v: f64) -> Result<(), StoreError> {
        let r = self.series_ref(labels);
        let stats = self.append_refs(&[(&r, t, v)]);
        if stats.out_of_order > 0 {
            let last = r.0.lock().last_t();
            return Err(StoreError::OutOfOrder {
                labels: labels.clone(),
                t,
                last,
            });
        }
        Ok(())
    }

    /// Appends many samples at once; out-of-order ones are counted and skipped.
    pub fn append_batch(&self, batch: &[(Labels, i64, f64)]) -> AppendStats {
        let refs: Vec<SeriesRef> = batch.iter().map(|(l, _, _)| self.series_ref(l)).collect();
        let items: Vec<(&SeriesRef, i64, f64)> = refs
            .iter()
            .zip(batch)
            .map(|(r, (_, t, v))| (r, *t, *v))
            .collect();
        self.append_refs(&items)
    }

    /// Resolves labels to a head series, creating it if needed; keep it to skip label hashing.
    pub fn series_ref(&self, labels: &Labels) -> SeriesRef {
        SeriesRef(self.inner.get_or_create(labels))
    }

    /// Appends samples to resolved series (the fastest path).
    pub fn append_refs(&self, items: &[(&SeriesRef, i64, f64)]) -> AppendStats {
        self.inner.append_refs(items)
    }

    /// Series (with samples in `[start, end]`, inclusive, in ms) matching all matchers, sorted
    /// by labels.
    pub fn select(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<Series>, StoreError> {
        self.inner
            .select(matchers, start, end, SelectLimits::default())
    }

    /// Like [`Store::select`], failing with [`StoreError::TooMany`] past `limits`.
    pub fn select_limited(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
        limits: SelectLimits,
    ) -> Result<Vec<Series>, StoreError> {
        self.inner.select(matchers, start, end, limits)
    }

    /// Label sets of series matching all matchers (with or without samples left in range).
    pub fn series(&self, matchers: &[Matcher]) -> Result<Vec<Labels>, StoreError> {
        Ok(self
            .select(matchers, i64::MIN, i64::MAX)?
            .into_iter()
            .map(|s| s.labels)
            .collect())
    }

    /// All label names, sorted.
    pub fn label_names(&self) -> Vec<String> {
        self.inner.collect_labels(
            |idx, out| out.extend(idx.label_names().cloned()),
            |seg, out| out.extend(seg.label_names().cloned()),
        )
    }

    /// All values of one label, sorted.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        self.inner.collect_labels(
            |idx, out| out.extend(idx.label_values(name).cloned()),
            |seg, out| seg.label_values(name, out),
        )
    }

    /// Writes and fsyncs the WAL buffer now.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    /// Moves the head into a new segment now (also applies retention and compaction).
    pub fn persist(&self) -> Result<(), StoreError> {
        self.inner.persist()
    }

    /// Current sizes.
    pub fn stats(&self) -> Stats {
        let (head_series, head_label_pairs) = {
            let head = read(&self.inner.head);
            (head.series.len(), head.label_pairs())
        };
        let segs = read(&self.inner.segments);
        Stats {
            head_series,
            head_label_pairs,
            head_samples: self.inner.head_samples.load(Ordering::Relaxed),
            segments: segs.len(),
            segment_bytes: segs.iter().map(|s| s.bytes()).sum(),
            wal_bytes_written: self.inner.wal_bytes_written.load(Ordering::Relaxed),
            wal_syncs: self.inner.wal_syncs.load(Ordering::Relaxed),
        }
    }

    /// Stops the background threads and persists the head: a clean shutdown. Retention is
    /// applied, but no merge is started (a finished window's can take many seconds at scale,
    /// and a shutdown has a deadline); the next persist after the store reopens does it.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.stop_worker();
        self.inner.persist_head()?;
        self.inner.maintain(&|| true)
    }

    /// Starts a background thread; a failure stops the ones already started (on drop).
    fn spawn(
        &mut self,
        name: &str,
        work: impl FnOnce() + Send + 'static,
    ) -> Result<(), StoreError> {
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(work)
            .map_err(io_err("spawn thread", Path::new(name)))?;
        self.workers.push(handle);
        Ok(())
    }

    fn stop_worker(&mut self) {
        let (m, cv) = &self.inner.wake;
        lock(m).stop = true;
        cv.notify_all();
        for w in self.workers.drain(..) {
            // A panicked worker has nothing left to clean up.
            let _ = w.join();
        }
    }
}

impl Drop for Store {
    /// Stops the flusher without flushing: an unclosed store behaves like a crashed one.
    fn drop(&mut self) {
        self.stop_worker();
    }
}

/// A segment file that could not be read, or held what no segment writes.
fn segment_error(e: std::io::Error, path: &Path) -> StoreError {
    if e.kind() == std::io::ErrorKind::InvalidData {
        StoreError::CorruptSegment(path.to_path_buf())
    } else {
        io_err("read", path)(e)
    }
}

/// The segments in `dir`, and the newest sample time of each series they hold (for the
/// WAL's replay).
fn load_segments(dir: &Path) -> Result<(Vec<Arc<Segment>>, Persisted), StoreError> {
    // Leftover temporaries are from a crash mid-write; their data is still in the WAL.
    for entry in fs::read_dir(dir)
        .map_err(io_err("read dir", dir))?
        .flatten()
    {
        if entry.path().extension().is_some_and(|e| e == "tmp") {
            let _ = fs::remove_file(entry.path());
        }
    }
    let mut out = Vec::new();
    let mut loader = segment::Loader::default();
    for (seq, path) in numbered_files(dir, "seg-", ".kms")? {
        out.push(Segment::open(seq, &path, &mut loader).map_err(|e| segment_error(e, &path))?);
    }
    Ok((out, loader.newest()))
}

/// The newest persisted sample time of each series.
type Persisted = std::collections::HashMap<Labels, i64>;

impl Inner {
    /// Replays the WAL `files`; `persisted` is the newest time per series in the segments
    /// (WAL samples at or before it are already in a segment), dropped once replayed.
    fn replay(&self, files: &[(u64, PathBuf)], persisted: Persisted) -> Result<(), StoreError> {
        for (_, path) in files {
            let bytes = fs::read(path).map_err(io_err("read", path))?;
            let (records, _valid) = wal::decode_all(&bytes);
            let mut ids: std::collections::HashMap<u64, Arc<HeadSeries>> = Default::default();
            for rec in records {
                match rec {
                    wal::Record::Series(id, labels) => {
                        let last = persisted.get(&labels).copied().unwrap_or(i64::MIN);
                        ids.insert(id, self.get_or_create_with(&labels, last));
                    }
                    wal::Record::Samples(samples) => {
                        let refs: Vec<_> = samples
                            .iter()
                            .filter_map(|(id, t, v)| ids.get(id).map(|s| (s, *t, *v)))
                            .collect();
                        self.append_series(&refs);
                    }
                }
            }
        }
        // Persisted series the WAL does not name were removed from the head before the crash
        // or close: were they to come back, their old samples must still be refused.
        let mut head = write(&self.head);
        let floor = persisted
            .iter()
            .filter(|(labels, _)| head.get(labels).is_none())
            .map(|(_, t)| *t)
            .max();
        head.raise_floor(floor.unwrap_or(i64::MIN));
        Ok(())
    }

    fn get_or_create(&self, labels: &Labels) -> Arc<HeadSeries> {
        self.get_or_create_with(labels, i64::MIN)
    }

    fn get_or_create_with(&self, labels: &Labels, last_t: i64) -> Arc<HeadSeries> {
        if let Some(s) = read(&self.head).get(labels) {
            return Arc::clone(s);
        }
        self.get_or_create_locked(&mut write(&self.head), labels, last_t)
    }

    fn get_or_create_locked(
        &self,
        head: &mut Head,
        labels: &Labels,
        last_t: i64,
    ) -> Arc<HeadSeries> {
        if let Some(s) = head.get(labels) {
            return Arc::clone(s);
        }
        let s = head.create(labels, last_t);
        // Logged under the head lock so no sample of this id can precede its series record.
        wal::encode_series(&mut lock(&self.buf), s.id(), labels);
        s
    }

    fn append_refs(&self, items: &[(&SeriesRef, i64, f64)]) -> AppendStats {
        let refs: Vec<(&Arc<HeadSeries>, i64, f64)> =
            items.iter().map(|(r, t, v)| (&r.0, *t, *v)).collect();
        self.append_series(&refs)
    }

    fn append_series(&self, items: &[(&Arc<HeadSeries>, i64, f64)]) -> AppendStats {
        let (mut stats, removed) = self.append_present(items);
        if removed.is_empty() {
            return stats;
        }
        // Series a persist removed after the caller resolved them: resolved again by labels
        // (keeping their newest time for the order check) under the head's write lock, which
        // a persist needs to remove a series, so these cannot be removed again meanwhile.
        let mut head = write(&self.head);
        let revived: Vec<(Arc<HeadSeries>, i64, f64)> = removed
            .iter()
            .map(|&i| {
                let (s, t, v) = items[i];
                let last_t = s.lock().last_t();
                (
                    self.get_or_create_locked(&mut head, &s.labels, last_t),
                    t,
                    v,
                )
            })
            .collect();
        let refs: Vec<(&Arc<HeadSeries>, i64, f64)> =
            revived.iter().map(|(s, t, v)| (s, *t, *v)).collect();
        let (more, _none_removed) = self.append_present(&refs);
        drop(head);
        stats.appended += more.appended;
        stats.out_of_order += more.out_of_order;
        stats
    }

    /// Appends to the series still in the head; returns the positions of the others.
    fn append_present(&self, items: &[(&Arc<HeadSeries>, i64, f64)]) -> (AppendStats, Vec<usize>) {
        let mut removed = Vec::new();
        let mut stats = AppendStats::default();
        let mut batch = wal::SampleBatch::default();
        let mut max_t = i64::MIN;
        // Holding the buffer across the batch keeps each series' WAL records in time order.
        let mut buf = lock(&self.buf);
        for (i, &(s, t, v)) in items.iter().enumerate() {
            let mut data = s.lock();
            if s.is_removed() {
                removed.push(i);
                continue;
            }
            if data.append(t, v) {
                batch.push(s.id(), t, v);
                stats.appended += 1;
                max_t = max_t.max(t);
            } else {
                stats.out_of_order += 1;
            }
        }
        batch.finish(&mut buf);
        drop(buf);
        self.head_samples
            .fetch_add(stats.appended, Ordering::Relaxed);
        self.max_t.fetch_max(max_t, Ordering::Relaxed);
        (stats, removed)
    }

    /// Reports a failure of the background threads since the last call, else writes and
    /// fsyncs the WAL buffer.
    fn flush(&self) -> Result<(), StoreError> {
        if let Some(e) = lock(&self.flush_error).take() {
            return Err(StoreError::Flush(e));
        }
        self.write_buffer()
    }

    /// Writes and fsyncs the WAL buffer. The flusher calls this, not [`Inner::flush`]: a failure
    /// it recorded (a persist or merge that failed once) must not stop every later fsync.
    fn write_buffer(&self) -> Result<(), StoreError> {
        let mut wal = lock(&self.wal);
        let bytes = std::mem::take(&mut *lock(&self.buf));
        self.write_wal(&mut wal, &bytes)
    }

    fn write_wal(&self, wal: &mut WalFile, bytes: &[u8]) -> Result<(), StoreError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let path = wal_path(&self.dir, wal.generation);
        wal.file.write_all(bytes).map_err(io_err("write", &path))?;
        self.wal_bytes_written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        wal.file.sync_data().map_err(io_err("fsync", &path))?;
        self.wal_syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn background(&self) {
        let mut last_persist = Instant::now();
        loop {
            let (m, cv) = &self.wake;
            let wake = lock(m);
            // A stop asked for before this wait began must not wait out the interval.
            let (wake, _) = cv
                .wait_timeout_while(wake, self.opts.flush_interval, |w| !w.stop)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if wake.stop {
                return;
            }
            drop(wake);
            let due = persist_due(
                &self.opts,
                last_persist.elapsed(),
                self.head_samples.load(Ordering::Relaxed),
                read(&self.head).series.len(),
            );
            let result = if due {
                last_persist = Instant::now();
                let persisted = self.persist_head();
                lock(m).compact = true;
                cv.notify_all();
                persisted
            } else {
                self.write_buffer()
            };
            if let Err(e) = result {
                *lock(&self.flush_error) = Some(e.to_string());
            }
        }
    }

    /// The compaction thread: retention and compaction after each background persist.
    fn compactor(&self) {
        loop {
            let (m, cv) = &self.wake;
            let wake = lock(m);
            let mut wake = cv
                .wait_while(wake, |w| !w.stop && !w.compact)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if wake.stop {
                return;
            }
            wake.compact = false;
            drop(wake);
            if let Err(e) = self.maintain(&|| lock(m).stop) {
                *lock(&self.flush_error) = Some(e.to_string());
            }
        }
    }

    /// Persists the head, then applies retention and compacts.
    fn persist(&self) -> Result<(), StoreError> {
        self.persist_head()?;
        self.maintain(&|| false)
    }

    /// Retention, then compaction until nothing is left to merge or `stopping` says so.
    fn maintain(&self, stopping: &dyn Fn() -> bool) -> Result<(), StoreError> {
        let _c = lock(&self.compacting);
        self.apply_retention()?;
        self.compact(stopping)
    }

    /// Moves the head into a new segment, writes its file and drops the WAL it covers.
    fn persist_head(&self) -> Result<(), StoreError> {
        let _p = lock(&self.persisting);
        let mut wal = lock(&self.wal);
        let (old_bytes, seg) = self.cut_head();
        self.write_wal(&mut wal, &old_bytes)?;
        let generation = wal.generation + 1;
        let path = wal_path(&self.dir, generation);
        wal.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        wal.generation = generation;
        drop(wal);
        if let Some(seg) = seg {
            self.write_and_store(&seg)?;
        }
        // Every sample of older generations is now in a segment file.
        for (g, path) in numbered_files(&self.dir, "wal-", ".log")? {
            if g < generation {
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
        }
        Ok(())
    }

    /// Takes all head chunks into a new (visible) segment, removes the series that had none
    /// (see [`Head::cut`]), and starts a new WAL buffer that begins with the record of every
    /// series left, under its new id. Returns the old buffer and the segment, if non-empty.
    ///
    /// Readers take the head, then the segments. The segments stay write-locked from before
    /// the first chunk leaves the head until the new segment is published, so a reader that
    /// missed a chunk in the head finds it in the segment (one that saw both gets duplicates,
    /// which `select` removes): never a gap.
    fn cut_head(&self) -> (Vec<u8>, Option<Arc<Segment>>) {
        let mut head = write(&self.head);
        let mut buf = lock(&self.buf);
        let mut segments = write(&self.segments);
        let taken: Vec<SegSeries> = head
            .cut()
            .into_iter()
            .map(|(labels, chunks)| SegSeries::new(labels, chunks))
            .collect();
        let mut fresh = Vec::with_capacity(
            head.series
                .iter()
                .map(|s| wal::series_record_len(s.id(), &s.labels))
                .sum(),
        );
        for s in &head.series {
            wal::encode_series(&mut fresh, s.id(), &s.labels);
        }
        let old = std::mem::replace(&mut *buf, fresh);
        self.head_samples.store(0, Ordering::Relaxed);
        let seg = (!taken.is_empty()).then(|| {
            let seg = Segment::new(self.next_seq.fetch_add(1, Ordering::Relaxed), taken);
            segments.push(Arc::clone(&seg));
            seg
        });
        (old, seg)
    }

    fn apply_retention(&self) -> Result<(), StoreError> {
        let now = self.max_t.load(Ordering::Relaxed);
        let retention_ms = i64::try_from(self.opts.retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now.saturating_sub(retention_ms);
        let dropped: Vec<Arc<Segment>> = {
            let mut segs = write(&self.segments);
            let mut dropped = Vec::new();
            segs.retain(|s| {
                let keep = s.max_t >= cutoff;
                if !keep {
                    dropped.push(Arc::clone(s));
                }
                keep
            });
            if let Some(limit) = self.opts.retention_bytes {
                while !segs.is_empty() && segs.iter().map(|s| s.bytes()).sum::<u64>() > limit {
                    dropped.push(segs.remove(0));
                }
            }
            dropped
        };
        for seg in dropped {
            let path = seg_path(&self.dir, seg.seq);
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
        }
        Ok(())
    }

    /// Writes a segment the persist made visible in memory, then swaps it for the same
    /// segment reading from its file, so its chunks leave memory.
    fn write_and_store(&self, seg: &Arc<Segment>) -> Result<(), StoreError> {
        let path = seg_path(&self.dir, seg.seq);
        let written = write_segment_file(&self.dir, &path, |out| seg.write_to(out))?;
        let stored = seg
            .stored_as(&path, written)
            .map_err(io_err("open", &path))?;
        let mut live = write(&self.segments);
        if let Some(slot) = live.iter_mut().find(|s| Arc::ptr_eq(s, seg)) {
            *slot = stored;
        }
        Ok(())
    }

    /// Merges runs of segments as [`compaction::next_run`] picks them, until none is left.
    /// Only segments with their file written take part (a persist may be writing the newest).
    fn compact(&self, stopping: &dyn Fn() -> bool) -> Result<(), StoreError> {
        let windows = compaction::windows(self.opts.retention);
        // Each merge leaves one segment fewer: bounded by the count at the start.
        let rounds = read(&self.segments).len();
        for _ in 0..rounds {
            if stopping() {
                break;
            }
            let segs = read(&self.segments).clone();
            let stored = segs.iter().take_while(|s| s.is_stored()).count();
            let spans: Vec<compaction::Span> = segs[..stored]
                .iter()
                .map(|s| compaction::Span {
                    min_t: s.min_t,
                    bytes: s.bytes(),
                })
                .collect();
            let Some(run) = compaction::next_run(&spans, &windows, self.opts.compact_below_bytes)
            else {
                break;
            };
            self.merge(&segs[run])?;
        }
        Ok(())
    }

    /// Merges a run of adjacent segments into one file named after the newest.
    fn merge(&self, run: &[Arc<Segment>]) -> Result<(), StoreError> {
        let newest = run[run.len() - 1].seq;
        let path = seg_path(&self.dir, newest);
        // Renaming over the newest file of the run is atomic; the older files are then
        // redundant, and a crash before their removal only leaves duplicates the merge ignores.
        // The run's segments keep their open files, so readers holding them still read them.
        let written = write_segment_file(&self.dir, &path, |out| segment::merge_to(run, out))?;
        let merged = Segment::stored(newest, &path, written).map_err(io_err("open", &path))?;
        {
            let mut live = write(&self.segments);
            live.retain(|s| !run.iter().any(|r| Arc::ptr_eq(r, s)));
            let pos = live.partition_point(|s| s.seq < merged.seq);
            live.insert(pos, merged);
        }
        for s in &run[..run.len() - 1] {
            let path = seg_path(&self.dir, s.seq);
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
        }
        Ok(())
    }

    fn select(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
        limits: SelectLimits,
    ) -> Result<Vec<Series>, StoreError> {
        let ms = compile_all(matchers)?;
        let mut samples_seen = 0usize;
        let mut budget = |chunks: &mut dyn Iterator<Item = usize>| {
            samples_seen = samples_seen.saturating_add(chunks.sum());
            if samples_seen > limits.max_samples {
                return Err(StoreError::TooMany {
                    what: "samples",
                    limit: limits.max_samples,
                });
            }
            Ok(())
        };
        let too_many_series = || StoreError::TooMany {
            what: "series",
            limit: limits.max_series,
        };
        // Head first, then segments: a concurrent persist can then only duplicate samples.
        // Each source's series sorted by labels, merged source by source (segments oldest
        // first, the head last): a series' samples then come in time order and usually need
        // no sort, and the sources meet in a linear merge rather than a map lookup per
        // series and source.
        let mut newest = self.head_samples(&ms, start, end, limits.max_series, &mut budget)?;
        newest.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        let segs = read(&self.segments).clone();
        let mut out: Vec<Series> = Vec::new();
        // The labels segments build from their files share the head's pairs, and each
        // other's: merging them compares pointers.
        let mut interner = Interner::default();
        for s in &newest {
            interner.keep(&s.labels);
        }
        for seg in segs.iter().filter(|s| s.max_t >= start && s.min_t <= end) {
            // In label order: a segment's series are sorted and `select_each` keeps their order.
            let mut from_segment = Vec::new();
            seg.select_each(&ms, start, end, &mut interner, |labels, samples| {
                let counts = samples.overlapping_counts(start, end);
                if counts.is_empty() {
                    return Ok(());
                }
                budget(&mut counts.iter().copied())?;
                if from_segment.len() >= limits.max_series {
                    return Err(too_many_series().into());
                }
                let mut v = Vec::with_capacity(counts.iter().sum::<usize>());
                samples.extend_within(start, end, &mut v);
                from_segment.push(Series {
                    labels: labels.clone(),
                    samples: v,
                });
                Ok(())
            })
            .map_err(|e| match e {
                SelectError::Store(e) => e,
                SelectError::Io(e) => segment_error(e, &seg_path(&self.dir, seg.seq)),
            })?;
            out = merge_by_labels(out, from_segment);
            if out.len() > limits.max_series {
                return Err(too_many_series());
            }
        }
        let out = merge_by_labels(out, newest);
        if out.len() > limits.max_series {
            return Err(too_many_series());
        }
        Ok(out
            .into_iter()
            .filter_map(
                |Series {
                     labels,
                     mut samples,
                 }| {
                    // Out of order only where segments overlap (a persist racing this read, or
                    // segments awaiting compaction).
                    if !samples.is_sorted_by_key(|s| s.t) {
                        samples.sort_by_key(|s| s.t);
                    }
                    samples.dedup_by_key(|s| s.t);
                    (!samples.is_empty()).then_some(Series { labels, samples })
                },
            )
            .collect())
    }

    /// The samples in `[start, end]` of the head's series matching `ms`, decoded under each
    /// series' lock (no copy of its chunks), counted by `budget` before they are decoded.
    fn head_samples(
        &self,
        ms: &[CompiledMatcher],
        start: i64,
        end: i64,
        max_series: usize,
        budget: &mut dyn FnMut(&mut dyn Iterator<Item = usize>) -> Result<(), StoreError>,
    ) -> Result<Vec<Series>, StoreError> {
        let head = read(&self.head);
        let mut out = Vec::new();
        for id in head.index.candidates(ms) {
            let Some(s) = head.series.get(id as usize) else {
                continue;
            };
            if !ms.iter().all(|m| m.matches_labels(&s.labels)) {
                continue;
            }
            let data = s.lock();
            let overlapping = || {
                data.chunks()
                    .filter(|c| c.max_t() >= start && c.min_t() <= end)
            };
            let count: usize = overlapping().map(crate::chunk::Chunk::len).sum();
            if count == 0 {
                continue;
            }
            if out.len() >= max_series {
                return Err(StoreError::TooMany {
                    what: "series",
                    limit: max_series,
                });
            }
            budget(&mut overlapping().map(crate::chunk::Chunk::len))?;
            let mut samples = Vec::with_capacity(count);
            samples.extend(overlapping().flat_map(|c| samples_within(c, start, end)));
            out.push(Series {
                labels: s.labels.clone(),
                samples,
            });
        }
        Ok(out)
    }

    /// Names or values gathered from the head's index and each segment, sorted, once each.
    fn collect_labels(
        &self,
        from_head: impl Fn(&index::Index, &mut Vec<String>),
        from_segment: impl Fn(&Segment, &mut Vec<String>),
    ) -> Vec<String> {
        let mut out = Vec::new();
        from_head(&read(&self.head).index, &mut out);
        for seg in read(&self.segments).iter() {
            from_segment(seg, &mut out);
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Why reading a segment for a selection stopped: a limit, or its file.
enum SelectError {
    Store(StoreError),
    Io(std::io::Error),
}

impl From<StoreError> for SelectError {
    fn from(e: StoreError) -> Self {
        SelectError::Store(e)
    }
}

impl From<std::io::Error> for SelectError {
    fn from(e: std::io::Error) -> Self {
        SelectError::Io(e)
    }
}

/// Two lists of series, each sorted by labels with each label set once, as one such list;
/// a series in both gets `older`'s samples followed by `newer`'s.
fn merge_by_labels(older: Vec<Series>, newer: Vec<Series>) -> Vec<Series> {
    if older.is_empty() {
        return newer;
    }
    if newer.is_empty() {
        return older;
    }
    let mut out = Vec::with_capacity(older.len().max(newer.len()));
    let mut older = older.into_iter().peekable();
    let mut newer = newer.into_iter().peekable();
    loop {
        let order = match (older.peek(), newer.peek()) {
            (Some(a), Some(b)) => a.labels.cmp(&b.labels),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => return out,
        };
        let next = match order {
            std::cmp::Ordering::Less => older.next(),
            std::cmp::Ordering::Greater => newer.next(),
            std::cmp::Ordering::Equal => older.next().zip(newer.next()).map(|(mut a, b)| {
                a.samples.extend(b.samples);
                a
            }),
        };
        out.extend(next);
    }
}

/// A chunk's samples in `[start, end]`, decoding none past `end` (a chunk is in time order).
fn samples_within(
    chunk: &crate::chunk::Chunk,
    start: i64,
    end: i64,
) -> impl Iterator<Item = Sample> + '_ {
    chunk
        .iter()
        .skip_while(move |s| s.t < start)
        .take_while(move |s| s.t <= end)
}

#[cfg(test)]
mod churn_tests;
#[cfg(test)]
mod tests;
