//! Immutable segments: the persisted part of the store, one file `seg-<seq>.kms` each.
//!
//! File layout: magic `KMSEG03\n`, a symbol table (`uvarint count`, then the distinct label
//! names and values in sorted order, each `uvarint length` + bytes), `uvarint series count`,
//! then per series its labels (`uvarint count`, then name and value as `uvarint` symbol
//! numbers), `uvarint chunk count` and per chunk a `u8` [`Encoding`] tag, `uvarint sample
//! count`, `uvarint byte length` and the chunk's bytes in the smaller of its encodings
//! ([`Chunk::compact`]); last a `u32 LE` CRC-32 over everything before it. A file is written
//! to a temporary name, fsynced and renamed, so a segment is either whole or absent.
//!
//! Older versions are still read: 02 has no encoding tag (every chunk is XOR) and a `u16 LE`
//! sample count; 01 also writes labels out in full per series instead of as symbols (the
//! symbol table saves ~0.1 byte/sample; the decimal encoding 0.7 on the benchmark replay).
//!
//! A segment cut from the head is in memory until its file is written; from then on (and for
//! every segment merged or read at start-up from a version 2 or 3 file) its series list stays
//! in the file too: memory keeps where each metric's series lie ([`MetricRuns`]), the symbol
//! table, the file offset of every 16th series and each label name's values as symbols
//! (`filelist.rs`: about a byte a series, against 56 for a list of series). A select reads
//! the entries of its candidate series from the file (neighbours with one positional read),
//! matches their labels as symbols and builds labels only for the series that match; a
//! merge reads each segment's entries in order. A version 1 file (labels in full, no
//! symbols) keeps its list in memory, with its chunks in the file. The open file is kept, so
//! a segment whose file was replaced by a merge or removed by retention still reads what it
//! had until its last reader lets go of it. Files are written as they are encoded
//! (`FileWriter`, CRC computed along, the index built along), so writing a large merged
//! segment holds one series' record in memory, not the file.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::collections::{BTreeSet, HashMap, HashSet};

use super::codec::{Crc32, Malformed, Reader, crc32, put_str, put_uvarint};
use super::filelist::{Cursor, FileIndex, IndexBuilder, Resolved, Symbols};
use super::index::MetricRuns;
use crate::chunk::{Chunk, Encoding, MAX_SAMPLES, Sample};
use crate::labels::{Interner, Label, Labels};
use crate::matcher::CompiledMatcher;

const MAGIC: &[u8; 8] = b"KMSEG03\n";
const MAGIC_V2: &[u8; 8] = b"KMSEG02\n";
const MAGIC_V1: &[u8; 8] = b"KMSEG01\n";

/// Series whose records are at most this far apart in a file are read together by
/// [`Segment::samples_each`] (the labels between two series' records, or a few series not
/// selected, cost less to read than a system call).
const READ_GAP_BYTES: u64 = 4096;

/// The most [`Segment::samples_each`] reads at once.
pub(super) const READ_SPAN_BYTES: u64 = 1 << 20;

/// The format versions [`Segment::decode`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    /// Labels in full, XOR chunks with a `u16` count.
    V1,
    /// Labels as symbols, XOR chunks with a `u16` count.
    V2,
    /// Labels as symbols, tagged chunks in either encoding.
    V3,
}

/// Where a series' chunks are.
#[derive(Debug)]
enum Chunks {
    /// In memory: a segment not written yet, or decoded whole ([`Segment::decode`]).
    Loaded(Vec<Chunk>),
    /// In the segment's file.
    Stored(Stored),
}

/// A series' chunk records in a segment file.
#[derive(Debug, Clone, Copy)]
struct Stored {
    /// Offset of the first record in the file.
    at: u64,
    /// Bytes of all its records.
    len: u32,
    /// How many records.
    count: u32,
    min_t: i64,
    max_t: i64,
}

/// One series inside a segment.
#[derive(Debug)]
pub struct SegSeries {
    /// The series' labels.
    pub labels: Labels,
    chunks: Chunks,
}

impl SegSeries {
    /// A series with its chunks in memory, in time order.
    pub fn new(labels: Labels, chunks: Vec<Chunk>) -> Self {
        SegSeries {
            labels,
            chunks: Chunks::Loaded(chunks),
        }
    }

    /// Oldest sample time.
    pub fn min_t(&self) -> i64 {
        match &self.chunks {
            Chunks::Loaded(c) => c.first().map_or(i64::MAX, Chunk::min_t),
            Chunks::Stored(s) => s.min_t,
        }
    }

    /// Newest sample time.
    pub fn max_t(&self) -> i64 {
        match &self.chunks {
            Chunks::Loaded(c) => c.last().map_or(i64::MIN, Chunk::max_t),
            Chunks::Stored(s) => s.max_t,
        }
    }

    /// Unused room in its list of chunks, when they are in memory.
    #[cfg(test)]
    pub fn spare_chunk_slots(&self) -> Option<usize> {
        match &self.chunks {
            Chunks::Loaded(c) => Some(c.capacity() - c.len()),
            Chunks::Stored(_) => None,
        }
    }

    /// Its chunks when they are in memory (`None` once they are only in the file).
    pub fn loaded(&self) -> Option<&[Chunk]> {
        match &self.chunks {
            Chunks::Loaded(c) => Some(c),
            Chunks::Stored(_) => None,
        }
    }
}

/// Where a segment's series list is.
#[derive(Debug)]
enum List {
    /// In memory, each series with its labels and its chunks or where they lie in the file: a
    /// segment not written yet, decoded whole, or read from a version 1 file (no symbols).
    Listed(Vec<SegSeries>),
    /// In the file: only what finds a series there stays in memory.
    InFile(FileIndex),
}

/// An immutable, time-ordered piece of the store.
#[derive(Debug)]
pub struct Segment {
    /// Sequence number (file name); higher is newer.
    pub seq: u64,
    /// Oldest sample time.
    pub min_t: i64,
    /// Newest sample time.
    pub max_t: i64,
    /// The file's size once encoded; until then, an upper bound (see [`Segment::bytes`]).
    bytes: AtomicU64,
    list: List,
    index: MetricRuns,
    /// The file the stored series are read from.
    file: Option<File>,
    version: Version,
}

impl Segment {
    /// Builds a segment from series data (empty chunks are dropped).
    pub fn new(seq: u64, mut series: Vec<SegSeries>) -> Arc<Segment> {
        for s in &mut series {
            if let Chunks::Loaded(chunks) = &mut s.chunks {
                chunks.retain(|c| !c.is_empty());
            }
        }
        series.retain(|s| s.loaded().is_none_or(|c| !c.is_empty()));
        // Choosing each chunk's encoding costs more than building the segment, so it is left
        // to `encode`, which the persist runs outside the head's locks.
        let upper_bound: usize = series
            .iter()
            .flat_map(|s| s.labels.iter())
            .map(|l| l.name.len() + l.value.len() + 2)
            .chain(
                series
                    .iter()
                    .filter_map(SegSeries::loaded)
                    .flatten()
                    .map(|c| c.bytes().len() + 6),
            )
            .sum();
        Arc::new(Segment::assemble(
            seq,
            series,
            upper_bound as u64 + 32,
            None,
            Version::V3,
        ))
    }

    fn assemble(
        seq: u64,
        mut series: Vec<SegSeries>,
        bytes: u64,
        file: Option<File>,
        version: Version,
    ) -> Segment {
        if !series.is_sorted_by(|a, b| a.labels <= b.labels) {
            // In place: a segment's label sets are distinct, and a stable sort's buffer would
            // be half the list again.
            series.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        }
        let index = MetricRuns::new(series.iter().map(|s| &s.labels));
        let (mut min_t, mut max_t) = (i64::MAX, i64::MIN);
        for s in &series {
            min_t = min_t.min(s.min_t());
            max_t = max_t.max(s.max_t());
        }
        Segment {
            seq,
            min_t,
            max_t,
            bytes: AtomicU64::new(bytes),
            list: List::Listed(series),
            index,
            file,
            version,
        }
    }

    /// Size in bytes: the file's, once [`Segment::encode`] ran (or the segment was read from
    /// one); before that, an upper bound from its chunks in the XOR encoding and its labels.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The series it keeps in memory, in label order: all of them until its file is written
    /// (or when read from a version 1 file), none once its list is in its file.
    pub fn listed(&self) -> &[SegSeries] {
        match &self.list {
            List::Listed(series) => series,
            List::InFile(_) => &[],
        }
    }

    /// How many series.
    pub fn series_count(&self) -> usize {
        match &self.list {
            List::Listed(series) => series.len(),
            List::InFile(idx) => idx.count() as usize,
        }
    }

    /// Approximate heap bytes of what it keeps to find its series (not their labels or
    /// chunks when it keeps those in memory).
    pub fn heap_bytes(&self) -> usize {
        self.index.heap_bytes()
            + match &self.list {
                List::Listed(series) => series.capacity() * std::mem::size_of::<SegSeries>(),
                List::InFile(idx) => idx.heap_bytes(),
            }
    }

    /// Every label name, sorted.
    pub fn label_names(&self) -> impl Iterator<Item = &String> {
        self.index.label_names()
    }

    /// Adds every value of label `name` to `out` (repeats included).
    pub fn label_values(&self, name: &str, out: &mut Vec<String>) {
        let series = match &self.list {
            List::InFile(idx) => {
                out.extend(idx.values_of(name).map(str::to_owned));
                return;
            }
            List::Listed(series) => series,
        };
        if name == crate::labels::METRIC_NAME {
            out.extend(self.index.metric_names().map(str::to_owned));
            return;
        }
        let mut values: Vec<&str> = series.iter().filter_map(|s| s.labels.get(name)).collect();
        values.sort_unstable();
        values.dedup();
        out.extend(values.into_iter().map(str::to_owned));
    }

    /// Listed series matching all matchers.
    fn select_listed<'a>(
        &'a self,
        series: &'a [SegSeries],
        ms: &'a [CompiledMatcher],
    ) -> impl Iterator<Item = &'a SegSeries> {
        let count = u32::try_from(series.len()).unwrap_or(u32::MAX);
        self.index
            .candidates(ms, count)
            .into_iter()
            .filter_map(|id| series.get(id as usize))
            .filter(move |s| ms.iter().all(|m| m.matches_labels(&s.labels)))
    }

    /// Passes `each` the labels and samples (as [`Segment::samples`] gives them) of every
    /// series matching all of `ms` that can have samples in `[start, end]`, in label order;
    /// stops at the first error `each` returns.
    ///
    /// A stored segment reads its candidates' entries from the file (neighbours together, see
    /// [`Segment::samples_each`]) and matches their labels as symbols; the labels of those
    /// that match are built with pairs from `interner`, so a set equal to the head's or to
    /// another segment's shares its pairs (compared by pointer) when `interner` has them.
    pub(crate) fn select_each<E: From<io::Error>>(
        &self,
        ms: &[CompiledMatcher],
        start: i64,
        end: i64,
        interner: &mut Interner,
        mut each: impl FnMut(&Labels, SeriesSamples<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let idx = match &self.list {
            List::Listed(series) => {
                let selected: Vec<&SegSeries> = self
                    .select_listed(series, ms)
                    .filter(|s| s.max_t() >= start && s.min_t() <= end)
                    .collect();
                return self
                    .samples_each(&selected, start, end, |s, samples| each(&s.labels, samples));
            }
            List::InFile(idx) => idx,
        };
        let file = self.file()?;
        let resolved: Vec<Resolved> = ms.iter().map(|m| idx.resolve(m)).collect();
        let ids = self.index.candidates(ms, idx.count());
        let mut cache = HashMap::new();
        for group in idx.groups(&ids, READ_GAP_BYTES).map_err(invalid)? {
            let mut cursor = Cursor::new(file, self.version, group.from, group.to);
            let mut id = group.first;
            for &want in &ids[group.ids] {
                // The entries before it: fewer than the group's span holds.
                while id < want {
                    cursor.next_entry()?.ok_or_else(|| invalid(Malformed))?;
                    id += 1;
                }
                let entry = cursor.next_entry()?.ok_or_else(|| invalid(Malformed))?;
                id += 1;
                if !resolved.iter().all(|m| m.matches(entry.pairs)) {
                    continue;
                }
                let labels = idx
                    .symbols()
                    .labels(entry.pairs, &mut cache, interner)
                    .map_err(invalid)?;
                each(
                    &labels,
                    self.decode_records(entry.records, entry.count, start, end)?,
                )?;
            }
        }
        Ok(())
    }

    /// Every series with its samples, read as a query reads them.
    #[cfg(test)]
    pub(crate) fn contents(&self) -> Vec<(Labels, Vec<Sample>)> {
        let mut out = Vec::new();
        let mut interner = Interner::default();
        self.select_each(&[], i64::MIN, i64::MAX, &mut interner, |labels, samples| {
            let mut v = Vec::new();
            samples.extend_within(i64::MIN, i64::MAX, &mut v);
            out.push((labels.clone(), v));
            Ok::<(), io::Error>(())
        })
        .unwrap();
        out
    }

    /// The file, for a segment whose series are stored.
    fn file(&self) -> io::Result<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("a stored series in a segment without a file"))
    }

    /// The bytes of a stored series' chunk records.
    fn read_stored(&self, stored: &Stored) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_span(stored.at, stored.at + u64::from(stored.len), &mut buf)?;
        Ok(buf)
    }

    /// A listed series' chunks, in time order: borrowed when in memory, else read from the
    /// file.
    pub fn chunks<'a>(&'a self, s: &'a SegSeries) -> io::Result<Cow<'a, [Chunk]>> {
        let stored = match &s.chunks {
            Chunks::Loaded(c) => return Ok(Cow::Borrowed(c)),
            Chunks::Stored(stored) => stored,
        };
        let buf = self.read_stored(stored)?;
        let mut r = Reader::new(&buf);
        let mut chunks = Vec::with_capacity(stored.count as usize);
        for _ in 0..stored.count {
            let chunk = read_chunk(&mut r, self.version).map_err(invalid)?;
            if !chunk.is_empty() {
                chunks.push(chunk);
            }
        }
        if !r.is_empty() {
            return Err(invalid(Malformed));
        }
        Ok(Cow::Owned(chunks))
    }

    /// A listed series' samples as a read of `[start, end]` needs them: its chunks when in
    /// memory, else the chunk records that can hold samples in that range, read from the file
    /// and decoded once (not rebuilt into chunks).
    pub fn samples<'a>(
        &'a self,
        s: &'a SegSeries,
        start: i64,
        end: i64,
    ) -> io::Result<SeriesSamples<'a>> {
        match &s.chunks {
            Chunks::Loaded(c) => Ok(SeriesSamples::Chunks(c)),
            Chunks::Stored(stored) => {
                self.decode_records(&self.read_stored(stored)?, stored.count, start, end)
            }
        }
    }

    /// [`Segment::samples`] of several listed series, given in the segment's order, passed
    /// to `each` in that order. Series whose records lie close together in the file are read
    /// with one positional read: a query's series are mostly one metric's, which are next to
    /// each other, so thousands of series cost a few reads instead of one each. Stops at the
    /// first error `each` returns.
    pub fn samples_each<'a, E: From<io::Error>>(
        &'a self,
        series: &[&'a SegSeries],
        start: i64,
        end: i64,
        mut each: impl FnMut(&'a SegSeries, SeriesSamples<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut buf = Vec::new();
        let mut rest = series;
        while let Some((&first, _)) = rest.split_first() {
            let Chunks::Stored(first_stored) = &first.chunks else {
                each(first, self.samples(first, start, end)?)?;
                rest = &rest[1..];
                continue;
            };
            let from = first_stored.at;
            let mut to = first_stored.at + u64::from(first_stored.len);
            let mut taken = 1;
            for s in &rest[1..] {
                let Chunks::Stored(st) = &s.chunks else {
                    break;
                };
                let next_to = st.at + u64::from(st.len);
                if st.at < to || st.at - to > READ_GAP_BYTES || next_to - from > READ_SPAN_BYTES {
                    break;
                }
                to = next_to;
                taken += 1;
            }
            let (group, after) = rest.split_at(taken);
            self.read_span(from, to, &mut buf)?;
            for &s in group {
                let Chunks::Stored(st) = &s.chunks else {
                    continue;
                };
                let at = usize::try_from(st.at - from).map_err(|_| invalid(Malformed))?;
                let bytes = buf
                    .get(at..at + st.len as usize)
                    .ok_or_else(|| invalid(Malformed))?;
                each(s, self.decode_records(bytes, st.count, start, end)?)?;
            }
            rest = after;
        }
        Ok(())
    }

    /// Reads bytes `from..to` of the file into `buf`.
    fn read_span(&self, from: u64, to: u64, buf: &mut Vec<u8>) -> io::Result<()> {
        let file = self.file()?;
        buf.clear();
        buf.resize(usize::try_from(to - from).map_err(io::Error::other)?, 0);
        file.read_exact_at(buf, from)
    }

    /// A stored series' `count` chunk records (`buf`, as read from the file) that can hold
    /// samples in `[start, end]`, decoded. A record's first sample is decoded to place it in
    /// time; the samples of one lie before the next one's first.
    fn decode_records(
        &self,
        buf: &[u8],
        count: u32,
        start: i64,
        end: i64,
    ) -> io::Result<SeriesSamples<'static>> {
        let mut r = Reader::new(buf);
        let mut records = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let (encoding, count, bytes) = read_record(&mut r, self.version).map_err(invalid)?;
            if count > 0 {
                let first =
                    Chunk::first_t(encoding, bytes, count).map_err(|_| invalid(Malformed))?;
                records.push((encoding, count, bytes, first));
            }
        }
        if !r.is_empty() {
            return Err(invalid(Malformed));
        }
        let mut samples = Vec::new();
        let mut ends = Vec::new();
        for (i, &(encoding, count, bytes, first)) in records.iter().enumerate() {
            if first > end {
                break;
            }
            if records.get(i + 1).is_some_and(|next| next.3 < start) {
                continue;
            }
            Chunk::decode_into(encoding, bytes, count, &mut samples)
                .map_err(|_| invalid(Malformed))?;
            ends.push(samples.len());
        }
        Ok(SeriesSamples::Decoded { samples, ends })
    }

    /// Writes the file's contents to `out` as they are encoded; returns its length and what
    /// the segment stored in it keeps in memory.
    pub fn write_to(&self, out: impl Write) -> io::Result<Written> {
        let series = match &self.list {
            List::Listed(series) => series,
            // Copied entry by entry, as a merge of one segment copies them.
            List::InFile(_) => return merge_into(&[self], out, true),
        };
        let mut symbols = BTreeSet::new();
        for l in series.iter().flat_map(|s| s.labels.iter()) {
            symbols.insert(l.name.as_str());
            symbols.insert(l.value.as_str());
        }
        let mut w = FileWriter::new(out, symbols.into_iter(), series.len())?;
        for s in series {
            w.add(&s.labels, &self.chunks(s)?)?;
        }
        let written = w.finish()?;
        self.bytes.store(written.len, Ordering::Relaxed);
        Ok(written)
    }

    /// The file contents.
    pub fn encode(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_to(&mut out)?;
        Ok(out)
    }

    /// The segment of a file just written at `path` ([`Segment::write_to`] or [`merge_to`]):
    /// its series list and chunks stay in the file.
    pub fn stored(seq: u64, path: &Path, written: Written) -> io::Result<Arc<Segment>> {
        let file = File::open(path)?;
        Ok(Arc::new(Segment {
            seq,
            min_t: written.min_t,
            max_t: written.max_t,
            bytes: AtomicU64::new(written.len),
            list: List::InFile(written.index),
            index: written.runs,
            file: Some(file),
            version: Version::V3,
        }))
    }

    /// This segment once [`Segment::write_to`] wrote its file at `path`.
    pub fn stored_as(&self, path: &Path, written: Written) -> io::Result<Arc<Segment>> {
        Segment::stored(self.seq, path, written)
    }

    /// Whether its chunks are read from a file (it was written, or read at start-up).
    pub fn is_stored(&self) -> bool {
        self.file.is_some()
    }

    /// Parses file contents into memory, chunks included.
    pub fn decode(seq: u64, buf: &[u8]) -> Result<Arc<Segment>, Malformed> {
        Segment::parse(seq, buf, None, &mut Loader::default()).map(Arc::new)
    }

    /// Reads the segment file at `path`, checking all of it; its series list and chunks stay
    /// in it (a version 1 file, without symbols, keeps its list in memory). Each series'
    /// newest time goes to `loader` ([`Loader::newest`]).
    pub fn open(seq: u64, path: &Path, loader: &mut Loader) -> io::Result<Arc<Segment>> {
        let mut file = File::open(path)?;
        let mut bytes = std::mem::take(&mut loader.buf);
        bytes.clear();
        let size = file.metadata()?.len();
        bytes.reserve(usize::try_from(size).unwrap_or(0));
        io::Read::read_to_end(&mut file, &mut bytes)?;
        let parsed = Segment::parse(seq, &bytes, Some(file), loader);
        loader.buf = bytes;
        parsed.map(Arc::new).map_err(invalid)
    }

    /// Parses file contents; with `file`, the chunks are checked and left in it.
    fn parse(
        seq: u64,
        buf: &[u8],
        file: Option<File>,
        loader: &mut Loader,
    ) -> Result<Segment, Malformed> {
        if buf.len() < MAGIC.len() + 4 {
            return Err(Malformed);
        }
        let version = match &buf[..8] {
            m if m == MAGIC => Version::V3,
            m if m == MAGIC_V2 => Version::V2,
            m if m == MAGIC_V1 => Version::V1,
            _ => return Err(Malformed),
        };
        let (body, crc) = buf.split_at(buf.len() - 4);
        if crc32(body) != u32::from_le_bytes(crc.try_into().map_err(|_| Malformed)?) {
            return Err(Malformed);
        }
        match file {
            Some(file) if version != Version::V1 => {
                Segment::parse_in_file(seq, body, file, version, loader)
            }
            file => Segment::parse_listed(seq, body, file, version, loader),
        }
    }

    /// Parses a file's series into a list kept in memory (with `file`, chunks left in it).
    fn parse_listed(
        seq: u64,
        body: &[u8],
        file: Option<File>,
        version: Version,
        loader: &mut Loader,
    ) -> Result<Segment, Malformed> {
        let mut r = Reader::new(&body[8..]);
        // Offset in the file of what `r` reads next.
        let offset = |r: &Reader<'_>| (body.len() - r.remaining()) as u64;
        let mut symbols = Vec::new();
        if version != Version::V1 {
            for _ in 0..r.uvarint()? {
                symbols.push(r.str()?);
            }
        }
        let symbol = |r: &mut Reader<'_>| -> Result<&str, Malformed> {
            let i = usize::try_from(r.uvarint()?).map_err(|_| Malformed)?;
            symbols.get(i).copied().ok_or(Malformed)
        };
        let n = r.uvarint()?;
        // Each series takes at least two bytes: a count bounds the reservation.
        let mut series = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(r.remaining() / 2));
        let mut scratch = Vec::new();
        for _ in 0..n {
            let labels = if version == Version::V1 {
                r.labels()?
            } else {
                let mut pairs = Vec::new();
                for _ in 0..r.uvarint()? {
                    pairs.push((symbol(&mut r)?, symbol(&mut r)?));
                }
                Labels::new(pairs)
            };
            let labels = loader.share(&labels);
            let nc = r.uvarint()?;
            let at = offset(&r);
            let mut chunks = Vec::new();
            let (mut min_t, mut max_t) = (i64::MAX, i64::MIN);
            for _ in 0..nc {
                if file.is_some() {
                    check_record(&mut r, version, &mut scratch, &mut min_t, &mut max_t)?;
                    continue;
                }
                let chunk = read_chunk(&mut r, version)?;
                if !chunk.is_empty() {
                    chunks.push(chunk);
                }
            }
            let chunks = if file.is_some() {
                Chunks::Stored(Stored {
                    at,
                    len: u32::try_from(offset(&r) - at).map_err(|_| Malformed)?,
                    count: u32::try_from(nc).map_err(|_| Malformed)?,
                    min_t,
                    max_t,
                })
            } else {
                // No spare slots kept (see `pack`); the count is the file's, so not reserved
                // ahead.
                chunks.shrink_to_fit();
                Chunks::Loaded(chunks)
            };
            if min_t <= max_t || matches!(&chunks, Chunks::Loaded(c) if !c.is_empty()) {
                let s = SegSeries { labels, chunks };
                loader.saw(&s.labels, s.max_t());
                series.push(s);
            }
        }
        if !r.is_empty() {
            return Err(Malformed);
        }
        Ok(Segment::assemble(
            seq,
            series,
            body.len() as u64 + 4,
            file,
            version,
        ))
    }

    /// Parses a file (version 2 or later) whose series list stays in it: checks every
    /// record, builds what finds the series ([`FileIndex`], [`MetricRuns`]) and tells
    /// `loader` each series' newest time.
    fn parse_in_file(
        seq: u64,
        body: &[u8],
        file: File,
        version: Version,
        loader: &mut Loader,
    ) -> Result<Segment, Malformed> {
        let mut r = Reader::new(&body[8..]);
        let offset = |r: &Reader<'_>| (body.len() - r.remaining()) as u64;
        let mut symbols = Vec::new();
        for _ in 0..r.uvarint()? {
            symbols.push(r.str()?);
        }
        let mut b = IndexBuilder::new(Symbols::new(symbols)?);
        let (mut pairs, mut scratch, mut cache) = (Vec::new(), Vec::new(), HashMap::new());
        let (mut seg_min, mut seg_max) = (i64::MAX, i64::MIN);
        for _ in 0..r.uvarint()? {
            let at = offset(&r);
            pairs.clear();
            for _ in 0..r.uvarint()? {
                let name = u32::try_from(r.uvarint()?).map_err(|_| Malformed)?;
                let value = u32::try_from(r.uvarint()?).map_err(|_| Malformed)?;
                pairs.push((name, value));
            }
            b.push(at, &pairs)?;
            let (mut min_t, mut max_t) = (i64::MAX, i64::MIN);
            for _ in 0..r.uvarint()? {
                check_record(&mut r, version, &mut scratch, &mut min_t, &mut max_t)?;
            }
            if min_t <= max_t {
                seg_min = seg_min.min(min_t);
                seg_max = seg_max.max(max_t);
                let labels = b.symbols().labels(&pairs, &mut cache, &mut loader.pairs)?;
                loader.saw(&labels, max_t);
            }
        }
        if !r.is_empty() {
            return Err(Malformed);
        }
        let (index, runs) = b.finish(offset(&r));
        Ok(Segment {
            seq,
            min_t: seg_min,
            max_t: seg_max,
            bytes: AtomicU64::new(body.len() as u64 + 4),
            list: List::InFile(index),
            index: runs,
            file: Some(file),
            version,
        })
    }
}

/// Checks one chunk record by decoding it into `scratch` (no chunk is built), widening
/// `min_t..=max_t` to its samples.
fn check_record(
    r: &mut Reader<'_>,
    version: Version,
    scratch: &mut Vec<Sample>,
    min_t: &mut i64,
    max_t: &mut i64,
) -> Result<(), Malformed> {
    let (encoding, count, bytes) = read_record(r, version)?;
    scratch.clear();
    Chunk::decode_into(encoding, bytes, count, scratch).map_err(|_| Malformed)?;
    if let (Some(first), Some(last)) = (scratch.first(), scratch.last()) {
        *min_t = (*min_t).min(first.t);
        *max_t = (*max_t).max(last.t);
    }
    Ok(())
}

/// What the segments a store opens at start-up share while they are read: one copy of each
/// label pair (and of each listed label set), one buffer for the files' contents (a buffer
/// per file would leave the allocator's heap fragmented by their sizes), and each series'
/// newest time, which the WAL's replay needs and then drops.
#[derive(Debug, Default)]
pub struct Loader {
    pairs: Interner,
    sets: HashSet<Labels>,
    buf: Vec<u8>,
    newest: HashMap<Labels, i64>,
}

impl Loader {
    /// The copy of `labels` kept here, added when new.
    fn share(&mut self, labels: &Labels) -> Labels {
        if let Some(kept) = self.sets.get(labels) {
            return kept.clone();
        }
        let labels = self.pairs.intern(labels);
        self.sets.insert(labels.clone());
        labels
    }

    /// Notes a series with samples up to `max_t`.
    fn saw(&mut self, labels: &Labels, max_t: i64) {
        match self.newest.get_mut(labels) {
            Some(t) => *t = (*t).max(max_t),
            None => {
                self.newest.insert(labels.clone(), max_t);
            }
        }
    }

    /// The newest sample time of each series in the segments opened, taken out.
    pub fn newest(&mut self) -> HashMap<Labels, i64> {
        std::mem::take(&mut self.newest)
    }
}

/// A series' samples in one segment (see [`Segment::samples`]), in time order.
#[derive(Debug)]
pub enum SeriesSamples<'a> {
    /// Chunks in memory.
    Chunks(&'a [Chunk]),
    /// Decoded from the file: all samples, and where each chunk's end (exclusive).
    Decoded {
        /// Every sample.
        samples: Vec<Sample>,
        /// The end of each chunk's samples in `samples`.
        ends: Vec<usize>,
    },
}

impl SeriesSamples<'_> {
    /// Sample counts of the chunks with samples in `[start, end]`.
    pub fn overlapping_counts(&self, start: i64, end: i64) -> Vec<usize> {
        match self {
            SeriesSamples::Chunks(chunks) => chunks
                .iter()
                .filter(|c| c.max_t() >= start && c.min_t() <= end)
                .map(Chunk::len)
                .collect(),
            SeriesSamples::Decoded { samples, ends } => {
                let mut from = 0;
                let mut out = Vec::new();
                for &to in ends {
                    let chunk = &samples[from..to];
                    if chunk.first().is_some_and(|f| f.t <= end)
                        && chunk.last().is_some_and(|l| l.t >= start)
                    {
                        out.push(chunk.len());
                    }
                    from = to;
                }
                out
            }
        }
    }

    /// Appends the samples in `[start, end]` to `out`.
    pub fn extend_within(&self, start: i64, end: i64, out: &mut Vec<Sample>) {
        match self {
            SeriesSamples::Chunks(chunks) => out.extend(
                chunks
                    .iter()
                    .filter(|c| c.max_t() >= start && c.min_t() <= end)
                    .flat_map(|c| {
                        c.iter()
                            .skip_while(move |s| s.t < start)
                            .take_while(move |s| s.t <= end)
                    }),
            ),
            SeriesSamples::Decoded { samples, .. } => {
                let from = samples.partition_point(|s| s.t < start);
                let to = samples.partition_point(|s| s.t <= end);
                if from < to {
                    out.extend_from_slice(&samples[from..to]);
                }
            }
        }
    }
}

/// Reads one chunk record: its encoding, sample count and bytes.
pub(super) fn read_record<'a>(
    r: &mut Reader<'a>,
    version: Version,
) -> Result<(Encoding, u16, &'a [u8]), Malformed> {
    let (encoding, count) = if version == Version::V3 {
        let encoding = Encoding::from_tag(r.u8()?).ok_or(Malformed)?;
        (
            encoding,
            u16::try_from(r.uvarint()?).map_err(|_| Malformed)?,
        )
    } else {
        let b = r.bytes(2)?;
        (Encoding::Xor, u16::from_le_bytes([b[0], b[1]]))
    };
    let len = usize::try_from(r.uvarint()?).map_err(|_| Malformed)?;
    Ok((encoding, count, r.bytes(len)?))
}

/// Reads one chunk record into a chunk.
fn read_chunk(r: &mut Reader<'_>, version: Version) -> Result<Chunk, Malformed> {
    let (encoding, count, bytes) = read_record(r, version)?;
    Chunk::from_encoded(encoding, bytes, count).map_err(|_| Malformed)
}

pub(super) fn invalid(_: Malformed) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed segment")
}

/// A segment file as written: its length, its time span, and what the segment stored in it
/// keeps in memory ([`FileIndex`], [`MetricRuns`]).
#[derive(Debug)]
pub struct Written {
    len: u64,
    min_t: i64,
    max_t: i64,
    index: FileIndex,
    runs: MetricRuns,
}

/// Writes a segment file series by series (current version) as it is encoded, building its
/// index as it goes: memory holds one series' record, not the file.
struct FileWriter<'a, W> {
    out: W,
    /// Bytes written so far.
    at: u64,
    crc: Crc32,
    /// The record being encoded.
    record: Vec<u8>,
    number: HashMap<&'a str, u64>,
    index: IndexBuilder,
    pairs: Vec<(u32, u32)>,
    min_t: i64,
    max_t: i64,
}

impl<'a, W: Write> FileWriter<'a, W> {
    /// Starts a file of `count` series whose label names and values are `symbols` (sorted,
    /// distinct).
    fn new(out: W, symbols: impl Iterator<Item = &'a str>, count: usize) -> io::Result<Self> {
        let symbols: Vec<&'a str> = symbols.collect();
        let mut record = MAGIC.to_vec();
        put_uvarint(&mut record, symbols.len() as u64);
        for sym in &symbols {
            put_str(&mut record, sym);
        }
        put_uvarint(&mut record, count as u64);
        let index = IndexBuilder::new(Symbols::new(symbols.iter().copied()).map_err(invalid)?);
        let number = symbols
            .into_iter()
            .enumerate()
            .map(|(i, s)| (s, i as u64))
            .collect();
        let mut w = FileWriter {
            out,
            at: 0,
            crc: Crc32::default(),
            record,
            number,
            index,
            pairs: Vec::new(),
            min_t: i64::MAX,
            max_t: i64::MIN,
        };
        w.emit()?;
        Ok(w)
    }

    /// Writes out the record encoded so far.
    fn emit(&mut self) -> io::Result<()> {
        self.out.write_all(&self.record)?;
        self.crc.update(&self.record);
        self.at += self.record.len() as u64;
        self.record.clear();
        Ok(())
    }

    /// Writes one series (labels in sorted order across calls).
    fn add(&mut self, labels: &Labels, chunks: &[Chunk]) -> io::Result<()> {
        let pieces: Vec<Piece<'_>> = chunks.iter().map(Piece::Chunk).collect();
        self.add_pieces(
            labels,
            &pieces,
            chunks.first().map_or(i64::MAX, Chunk::min_t),
            chunks.last().map_or(i64::MIN, Chunk::max_t),
        )
    }

    /// Writes one series from chunks and records copied as they are, in time order, whose
    /// samples span `min_t..=max_t`.
    fn add_pieces(
        &mut self,
        labels: &Labels,
        pieces: &[Piece<'_>],
        min_t: i64,
        max_t: i64,
    ) -> io::Result<()> {
        let out = &mut self.record;
        put_uvarint(out, labels.len() as u64);
        self.pairs.clear();
        for l in labels {
            let (Some(&name), Some(&value)) = (
                self.number.get(l.name.as_str()),
                self.number.get(l.value.as_str()),
            ) else {
                return Err(io::Error::other("a label missing from the symbol table"));
            };
            put_uvarint(out, name);
            put_uvarint(out, value);
            // Below the count of symbols, which `Symbols::new` checked fits.
            self.pairs.push((name as u32, value as u32));
        }
        put_uvarint(out, pieces.len() as u64);
        for piece in pieces {
            let (encoding, count, bytes) = match piece {
                Piece::Chunk(c) => {
                    let (encoding, bytes) = c.compact();
                    (encoding, c.len() as u64, bytes)
                }
                Piece::Record(r) => (r.encoding, u64::from(r.count), Cow::Borrowed(r.bytes)),
            };
            out.push(encoding.tag());
            put_uvarint(out, count);
            put_uvarint(out, bytes.len() as u64);
            out.extend_from_slice(&bytes);
        }
        self.index.push(self.at, &self.pairs).map_err(invalid)?;
        self.min_t = self.min_t.min(min_t);
        self.max_t = self.max_t.max(max_t);
        self.emit()?;
        // A series with a long history must not leave its record's room behind.
        if self.record.capacity() > 1 << 20 {
            self.record = Vec::new();
        }
        Ok(())
    }

    /// Ends the file with its CRC.
    fn finish(mut self) -> io::Result<Written> {
        let crc = self.crc.finish();
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.flush()?;
        let (index, runs) = self.index.finish(self.at);
        Ok(Written {
            len: self.at + 4,
            min_t: self.min_t,
            max_t: self.max_t,
            index,
            runs,
        })
    }
}

/// A chunk record of a segment file, as it is stored.
#[derive(Debug, Clone, Copy)]
struct Record<'a> {
    encoding: Encoding,
    count: u16,
    bytes: &'a [u8],
}

/// What a merged series is written from: a chunk encoded anew, or a record copied as it is.
#[derive(Debug)]
enum Piece<'a> {
    Chunk(&'a Chunk),
    Record(Record<'a>),
}

/// Merges segments (oldest first) into one file written to `out`. One series at a time:
/// memory holds one series' samples and records, not the run's.
///
/// A persist cuts each series' last chunk short, and partial chunks compress worse, so the
/// series are re-packed into full chunks. When a series' pieces follow one another in time
/// (the usual case: a window's segment and the persists after it), only the partial chunks
/// and what follows them are decoded and packed again; the chunks before them are copied as
/// they are stored, so merging the current window's segment with a new persist costs about
/// a copy of its bytes, not a decoding and encoding of all its samples.
pub fn merge_to(segs: &[Arc<Segment>], out: impl Write) -> io::Result<Written> {
    let segs: Vec<&Segment> = segs.iter().map(|s| &**s).collect();
    merge_into(&segs, out, true)
}

/// [`merge_to`], copying the chunks it can when `copy_in_order` (else decoding them all).
fn merge_into(segs: &[&Segment], out: impl Write, copy_in_order: bool) -> io::Result<Written> {
    // Two passes over the run's series in label order: the count first (labels only).
    let mut distinct = 0usize;
    let mut order = LabelOrder::new(segs, false)?;
    while order.next_group()?.is_some() {
        distinct += 1;
    }
    // A segment's symbols are those its series use: the run's are theirs together.
    let mut symbols = BTreeSet::new();
    for seg in segs {
        match &seg.list {
            List::Listed(series) => {
                for l in series.iter().flat_map(|s| s.labels.iter()) {
                    symbols.insert(l.name.as_str());
                    symbols.insert(l.value.as_str());
                }
            }
            List::InFile(idx) => symbols.extend(idx.symbols().iter()),
        }
    }
    let mut w = FileWriter::new(out, symbols.into_iter(), distinct)?;
    let mut samples = Vec::new();
    let mut order = LabelOrder::new(segs, true)?;
    while let Some(group) = order.next_group()? {
        let Some((_, first)) = group.first() else {
            continue;
        };
        let labels = &first.labels;
        if let Some(stored) = in_time_order(&group).filter(|_| copy_in_order) {
            let mut records = Vec::with_capacity(stored.len());
            for piece in &stored {
                records.push(read_records(piece.buf, piece.count, piece.version).map_err(invalid)?);
            }
            let (mut packed, mut layout) = (Vec::new(), Vec::new());
            append_in_order(&records, &mut samples, &mut packed, &mut layout)?;
            let pieces: Vec<Piece<'_>> = layout
                .iter()
                .map(|at| match *at {
                    Placed::Packed(i) => Piece::Chunk(&packed[i]),
                    Placed::Copied(seg, rec) => Piece::Record(records[seg][rec]),
                })
                .collect();
            let (min_t, max_t) = (stored[0].min_t, stored[stored.len() - 1].max_t);
            w.add_pieces(labels, &pieces, min_t, max_t)?;
        } else {
            samples.clear();
            // Oldest segment first, as `segs` lists them: samples mostly arrive in order.
            for (seg, entry) in &group {
                match &entry.body {
                    Body::Loaded(chunks) => SeriesSamples::Chunks(chunks).extend_within(
                        i64::MIN,
                        i64::MAX,
                        &mut samples,
                    ),
                    Body::Records { buf, count, .. } => seg
                        .decode_records(buf, *count, i64::MIN, i64::MAX)?
                        .extend_within(i64::MIN, i64::MAX, &mut samples),
                }
            }
            if !samples.is_sorted_by_key(|s| s.t) {
                samples.sort_by_key(|s| s.t);
            }
            samples.dedup_by_key(|s| s.t);
            w.add(labels, &pack(&samples))?;
        }
        if samples.capacity() > 1 << 20 {
            samples = Vec::new();
        }
    }
    w.finish()
}

/// A series' chunk records as a merge copies them.
struct StoredPiece<'g> {
    version: Version,
    buf: &'g [u8],
    count: u32,
    min_t: i64,
    max_t: i64,
}

/// A group's pieces when each one's samples all come after the one before's: their records,
/// in order. `None` when any is in memory or they overlap in time.
fn in_time_order<'g>(group: &'g [(&Segment, Entry<'_>)]) -> Option<Vec<StoredPiece<'g>>> {
    let mut out: Vec<StoredPiece<'g>> = Vec::with_capacity(group.len());
    for (seg, entry) in group {
        let Body::Records {
            buf,
            count,
            min_t,
            max_t,
        } = &entry.body
        else {
            return None;
        };
        if out.last().is_some_and(|prev| prev.max_t >= *min_t) {
            return None;
        }
        out.push(StoredPiece {
            version: seg.version,
            buf,
            count: *count,
            min_t: *min_t,
            max_t: *max_t,
        });
    }
    Some(out)
}

/// The oldest and newest sample times of a series' `count` records in `buf`: the first
/// record's first sample and the last record's last (records follow one another in time).
fn record_bounds(buf: &[u8], count: u32, version: Version) -> Result<(i64, i64), Malformed> {
    let records = read_records(buf, count, version)?;
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Ok((i64::MAX, i64::MIN));
    };
    let min_t = Chunk::first_t(first.encoding, first.bytes, first.count).map_err(|_| Malformed)?;
    let mut samples = Vec::with_capacity(usize::from(last.count));
    Chunk::decode_into(last.encoding, last.bytes, last.count, &mut samples)
        .map_err(|_| Malformed)?;
    Ok((min_t, samples.last().map_or(i64::MIN, |s| s.t)))
}

/// A series' chunk records in a buffer read from its segment's file.
fn read_records(buf: &[u8], count: u32, version: Version) -> Result<Vec<Record<'_>>, Malformed> {
    let mut r = Reader::new(buf);
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (encoding, count, bytes) = read_record(&mut r, version)?;
        if count > 0 {
            out.push(Record {
                encoding,
                count,
                bytes,
            });
        }
    }
    if !r.is_empty() {
        return Err(Malformed);
    }
    Ok(out)
}

/// Where a merged series' next chunk comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placed {
    /// The `i`th chunk packed anew.
    Packed(usize),
    /// Record `.1` of the group's segment `.0`, copied.
    Copied(usize, usize),
}

/// Lays out a series whose records (per segment, oldest first) follow one another in time: a
/// record is copied when nothing is waiting to be packed before it and it was closed where it
/// is stored (full, or followed by another record of its segment); any other record is decoded
/// into `open`, and the chunks that closes are packed into `packed`. `open` is left empty.
fn append_in_order(
    records: &[Vec<Record<'_>>],
    open: &mut Vec<Sample>,
    packed: &mut Vec<Chunk>,
    layout: &mut Vec<Placed>,
) -> io::Result<()> {
    open.clear();
    for (seg, recs) in records.iter().enumerate() {
        for (i, rec) in recs.iter().enumerate() {
            let closed = i + 1 < recs.len() || rec.count >= MAX_SAMPLES;
            if open.is_empty() && closed {
                layout.push(Placed::Copied(seg, i));
                continue;
            }
            Chunk::decode_into(rec.encoding, rec.bytes, rec.count, open)
                .map_err(|_| invalid(Malformed))?;
            // Every chunk but the last is closed by the sample after it: it can be written.
            let mut chunks = pack(open);
            // The last one may take more samples: they stay in `open`.
            chunks.pop();
            let done: usize = chunks.iter().map(Chunk::len).sum();
            for c in chunks {
                layout.push(Placed::Packed(packed.len()));
                packed.push(c);
            }
            open.drain(..done);
        }
    }
    for c in pack(open) {
        layout.push(Placed::Packed(packed.len()));
        packed.push(c);
    }
    open.clear();
    Ok(())
}

/// One series of a segment as a merge reads it.
struct Entry<'a> {
    labels: Labels,
    body: Body<'a>,
}

/// A series' chunks as a merge reads them.
enum Body<'a> {
    /// In memory (also the empty stand-in when only labels were asked for).
    Loaded(&'a [Chunk]),
    /// Its chunk records, read from the file, and the times of its first and last samples.
    Records {
        buf: Vec<u8>,
        count: u32,
        min_t: i64,
        max_t: i64,
    },
}

/// A segment's series in order, as a merge reads them.
enum Stream<'a> {
    Listed(std::slice::Iter<'a, SegSeries>),
    InFile {
        idx: &'a FileIndex,
        cursor: Cursor<'a>,
        cache: HashMap<(u32, u32), Arc<Label>>,
    },
}

impl<'a> Stream<'a> {
    fn new(seg: &'a Segment) -> io::Result<Self> {
        Ok(match &seg.list {
            List::Listed(series) => Stream::Listed(series.iter()),
            List::InFile(idx) => {
                let (from, to) = idx.span();
                Stream::InFile {
                    idx,
                    cursor: Cursor::new(seg.file()?, seg.version, from, to),
                    cache: HashMap::new(),
                }
            }
        })
    }

    /// The next series of `seg` (this stream's), its chunks read only when `body`.
    fn next(
        &mut self,
        seg: &'a Segment,
        interner: &mut Interner,
        body: bool,
    ) -> io::Result<Option<Entry<'a>>> {
        match self {
            Stream::Listed(series) => {
                let Some(s) = series.next() else {
                    return Ok(None);
                };
                let body = match &s.chunks {
                    Chunks::Loaded(chunks) => Body::Loaded(chunks),
                    Chunks::Stored(_) if !body => Body::Loaded(&[]),
                    Chunks::Stored(st) => Body::Records {
                        buf: seg.read_stored(st)?,
                        count: st.count,
                        min_t: st.min_t,
                        max_t: st.max_t,
                    },
                };
                Ok(Some(Entry {
                    labels: s.labels.clone(),
                    body,
                }))
            }
            Stream::InFile { idx, cursor, cache } => {
                let Some(e) = cursor.next_entry()? else {
                    return Ok(None);
                };
                let labels = idx
                    .symbols()
                    .labels(e.pairs, cache, interner)
                    .map_err(invalid)?;
                let body = if body {
                    let (min_t, max_t) =
                        record_bounds(e.records, e.count, seg.version).map_err(invalid)?;
                    Body::Records {
                        buf: e.records.to_vec(),
                        count: e.count,
                        min_t,
                        max_t,
                    }
                } else {
                    Body::Loaded(&[])
                };
                Ok(Some(Entry { labels, body }))
            }
        }
    }
}

/// The series of several segments in label order, each label set once with the segments
/// holding it (in the order given): a merge of their sorted lists, read one series at a
/// time, so no list of every series is gathered and sorted. Labels read from files share
/// their pairs through one interner, so comparing them mostly compares pointers.
struct LabelOrder<'a> {
    segs: &'a [&'a Segment],
    streams: Vec<Stream<'a>>,
    /// Each segment's next series.
    heads: Vec<Option<Entry<'a>>>,
    interner: Interner,
    bodies: bool,
}

impl<'a> LabelOrder<'a> {
    /// The series of `segs`, their chunks read only when `bodies`.
    fn new(segs: &'a [&'a Segment], bodies: bool) -> io::Result<Self> {
        let mut streams = segs
            .iter()
            .map(|s| Stream::new(s))
            .collect::<io::Result<Vec<_>>>()?;
        let mut interner = Interner::default();
        let mut heads = Vec::with_capacity(segs.len());
        for (seg, stream) in segs.iter().zip(&mut streams) {
            heads.push(stream.next(seg, &mut interner, bodies)?);
        }
        Ok(LabelOrder {
            segs,
            streams,
            heads,
            interner,
            bodies,
        })
    }

    /// The next label set's pieces, with their segments.
    fn next_group(&mut self) -> io::Result<Option<Vec<(&'a Segment, Entry<'a>)>>> {
        let Some(least) = self
            .heads
            .iter()
            .flatten()
            .map(|e| &e.labels)
            .min()
            .cloned()
        else {
            return Ok(None);
        };
        let mut group = Vec::new();
        for (i, &seg) in self.segs.iter().enumerate() {
            if self.heads[i].as_ref().is_some_and(|e| e.labels == least) {
                let next = self.streams[i].next(seg, &mut self.interner, self.bodies)?;
                if let Some(entry) = std::mem::replace(&mut self.heads[i], next) {
                    group.push((seg, entry));
                }
            }
        }
        Ok(Some(group))
    }
}

fn pack(samples: &[Sample]) -> Vec<Chunk> {
    let mut chunks: Vec<Chunk> = Vec::new();
    for s in samples {
        match chunks.last_mut() {
            Some(c) if !c.is_full_for(s.t) => c.append(s.t, s.v),
            _ => {
                let mut c = Chunk::new();
                c.append(s.t, s.v);
                chunks.push(c);
            }
        }
    }
    debug_assert!(chunks.iter().all(|c| c.len() <= usize::from(MAX_SAMPLES)));
    // A merged segment's chunks take no appends: no spare room kept, in them or in the list
    // (whose first push reserves four 72-byte chunks, 216 bytes of nothing for the many
    // series with one chunk; pushing with `reserve_exact` instead would copy quadratically).
    for c in &mut chunks {
        c.shrink_to_fit();
    }
    chunks.shrink_to_fit();
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Samples of series `s0`, `s1`, …: times strictly increasing, values whole or not.
    fn history() -> impl Strategy<Value = Vec<Vec<Sample>>> {
        let series = prop::collection::vec(
            (
                // A 3 h gap now and then crosses a chunk's longest span.
                prop_oneof![9 => 1i64..60_000, 1 => Just(3 * 3600 * 1000i64)],
                prop_oneof![
                    Just(1.0),
                    Just(0.5),
                    (0u32..1000).prop_map(f64::from),
                    any::<f64>()
                ],
            ),
            0..400,
        )
        .prop_map(|steps| {
            let mut t = 1_700_000_000_000;
            steps
                .into_iter()
                .map(|(dt, v)| {
                    t += dt;
                    Sample { t, v }
                })
                .collect()
        });
        prop::collection::vec(series, 1..5)
    }

    fn labels(i: usize) -> Labels {
        Labels::new([("s", i.to_string())])
    }

    /// Writes a segment of `series` (labels, samples) to `dir` and opens it as stored.
    fn stored(dir: &Path, seq: u64, series: Vec<(Labels, Vec<Sample>)>) -> Arc<Segment> {
        let series = series
            .into_iter()
            .filter(|(_, samples)| !samples.is_empty())
            .map(|(l, samples)| SegSeries::new(l, pack(&samples)))
            .collect();
        let seg = Segment::new(seq, series);
        let path = dir.join(format!("seg-{seq}.kms"));
        let written = seg.write_to(File::create(&path).unwrap()).unwrap();
        Segment::stored(seq, &path, written).unwrap()
    }

    /// The segment of `series` in memory, and written to `dir` and opened as stored.
    fn in_memory_and_stored(
        dir: &Path,
        series: Vec<(Labels, Vec<Sample>)>,
    ) -> (Arc<Segment>, Arc<Segment>) {
        let memory = Segment::new(
            1,
            series
                .iter()
                .map(|(l, samples)| SegSeries::new(l.clone(), pack(samples)))
                .collect(),
        );
        (memory, stored(dir, 1, series))
    }

    fn merged(dir: &Path, seq: u64, run: &[Arc<Segment>], copy: bool) -> (Arc<Segment>, Vec<u8>) {
        let path = dir.join(format!("seg-{seq}.kms"));
        let run: Vec<&Segment> = run.iter().map(|s| &**s).collect();
        let written = merge_into(&run, File::create(&path).unwrap(), copy).unwrap();
        let seg = Segment::stored(seq, &path, written).unwrap();
        (seg, std::fs::read(&path).unwrap())
    }

    fn contents(seg: &Segment) -> Vec<(Labels, Vec<Sample>)> {
        seg.contents()
    }

    /// What `select_each` passes for `ms` over `[start, end]`: labels and the samples in
    /// range, as bits, without the series that have none there.
    fn selected(
        seg: &Segment,
        ms: &[crate::matcher::Matcher],
        start: i64,
        end: i64,
    ) -> Vec<(Labels, Vec<(i64, u64)>)> {
        let ms = crate::matcher::compile_all(ms).unwrap();
        let mut out = Vec::new();
        seg.select_each(
            &ms,
            start,
            end,
            &mut Interner::default(),
            |labels, samples| {
                let mut v = Vec::new();
                samples.extend_within(start, end, &mut v);
                if !v.is_empty() {
                    out.push((
                        labels.clone(),
                        v.iter().map(|s| (s.t, s.v.to_bits())).collect(),
                    ));
                }
                Ok::<(), io::Error>(())
            },
        )
        .unwrap();
        out
    }

    /// A stored segment, its series list in its file, selects what the same segment in
    /// memory selects, whether the series it takes are neighbours in the file, a few pages
    /// apart or beyond one read's span; an error from the caller stops the reading.
    #[test]
    fn a_stored_segment_selects_what_it_selected_in_memory() {
        use crate::matcher::{MatchOp, Matcher};
        let dir = tempfile::tempdir().unwrap();
        // Noisy values compress badly: ~9 bytes a sample, so 400 series of 600 to 1,500
        // samples (of different chunk counts) make a file over three reads' span, and
        // skipping a series skips 5 to 14 KB.
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let series: Vec<(Labels, Vec<Sample>)> = (0..400)
            .map(|i| {
                let samples = (0..600 + (i as i64 % 7) * 150)
                    .map(|k| {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        Sample {
                            t: k * 15_000,
                            v: f64::from_bits(rng >> 2),
                        }
                    })
                    .collect();
                let labels = Labels::new([
                    ("__name__", format!("m{}", i % 3)),
                    ("s", i.to_string()),
                    ("odd", (i % 2).to_string()),
                ]);
                (labels, samples)
            })
            .collect();
        let (memory, seg) = in_memory_and_stored(dir.path(), series);
        assert!(seg.bytes() > 3 * READ_SPAN_BYTES);
        assert!(seg.listed().is_empty());
        let re = |name: &str, v: &str| Matcher::new(name, MatchOp::Re, v);
        for (ms, start, end) in [
            (vec![], i64::MIN, i64::MAX),
            (vec![Matcher::eq("__name__", "m1")], 3_000_000, 6_000_000),
            (
                vec![re("s", "1.*"), Matcher::eq("odd", "1")],
                14_000_000,
                i64::MAX,
            ),
            (
                vec![re("s", ".*50"), Matcher::new("odd", MatchOp::Ne, "0")],
                i64::MIN,
                0,
            ),
            (vec![Matcher::eq("none", "")], 0, i64::MAX),
            (vec![Matcher::eq("s", "nope")], i64::MIN, i64::MAX),
        ] {
            let want = selected(&memory, &ms, start, end);
            assert_eq!(selected(&seg, &ms, start, end), want, "{ms:?}");
        }
        assert_eq!(selected(&seg, &[], i64::MIN, i64::MAX).len(), 400);
        let mut calls = 0;
        let stopped = seg.select_each(&[], 0, 1, &mut Interner::default(), |_, _| {
            calls += 1;
            Err(io::Error::other("enough"))
        });
        assert!(stopped.is_err());
        assert_eq!(calls, 1);
    }

    /// A stored segment keeps a few bytes a series in memory: its series list is in its
    /// file (the labels of a scrape: a few metrics, each over targets and a label of its
    /// own, 10,000 series in all).
    #[test]
    fn a_stored_segment_keeps_a_few_bytes_a_series() {
        let dir = tempfile::tempdir().unwrap();
        let mut series = Vec::new();
        for metric in 0..20 {
            for target in 0..50 {
                for le in 0..10 {
                    let labels = Labels::new([
                        ("__name__", format!("metric_{metric}_total")),
                        (
                            "instance",
                            format!("10.0.{}.{}:9100", target / 250, target % 250),
                        ),
                        ("job", "node".to_owned()),
                        ("le", format!("0.{le}")),
                    ]);
                    series.push((labels, vec![Sample { t: 1, v: 1.0 }]));
                }
            }
        }
        let (memory, seg) = in_memory_and_stored(dir.path(), series);
        assert_eq!(seg.series_count(), 10_000);
        let per_series = seg.heap_bytes() as f64 / 10_000.0;
        assert!(per_series < 2.0, "{per_series} bytes a series");
        // In memory, a series costs its entry in the list (labels and chunks apart).
        assert!(memory.heap_bytes() >= 10_000 * std::mem::size_of::<SegSeries>());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Select over a stored segment (labels matched as symbols, entries read from the
        /// file around the metric runs) answers what the same segment in memory answers.
        #[test]
        fn select_over_a_stored_segment_answers_like_the_segment_in_memory(
            sets in prop::collection::vec(
                (
                    prop::collection::vec(
                        (
                            prop::sample::select(vec!["__name__", "A", "job", "le"]),
                            prop::sample::select(vec!["", "up", "x", "y", "z0"]),
                        ),
                        0..4,
                    ),
                    1usize..40,
                ),
                1..60,
            ),
            ms in prop::collection::vec(
                (
                    prop::sample::select(vec!["__name__", "A", "job", "le", "none"]),
                    prop::sample::select(vec![
                        crate::matcher::MatchOp::Eq,
                        crate::matcher::MatchOp::Ne,
                        crate::matcher::MatchOp::Re,
                        crate::matcher::MatchOp::Nre,
                    ]),
                    prop::sample::select(vec!["", "up", "x", "y|z0", ".*", "z.+"]),
                ),
                0..3,
            ),
            (start, end) in (0i64..30, 0i64..30),
        ) {
            let mut series: Vec<(Labels, Vec<Sample>)> = sets
                .into_iter()
                .enumerate()
                .map(|(i, (pairs, n))| {
                    let mut pairs: Vec<(String, String)> =
                        pairs.into_iter().map(|(a, b)| (a.to_owned(), b.to_owned())).collect();
                    // Distinct sets; a few hundred of them span several table entries.
                    pairs.push(("id".into(), i.to_string()));
                    let samples = (0..n as i64).map(|k| Sample { t: k, v: k as f64 }).collect();
                    (Labels::new(pairs), samples)
                })
                .collect();
            series.sort_by(|a, b| a.0.cmp(&b.0));
            let dir = tempfile::tempdir().unwrap();
            let (memory, seg) = in_memory_and_stored(dir.path(), series);
            let ms: Vec<crate::matcher::Matcher> = ms
                .into_iter()
                .map(|(n, op, v)| crate::matcher::Matcher::new(n, op, v))
                .collect();
            let (start, end) = (start.min(end), start.max(end));
            prop_assert_eq!(selected(&seg, &ms, start, end), selected(&memory, &ms, start, end));
            for name in ["__name__", "A", "job", "le", "id", "none"] {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                seg.label_values(name, &mut a);
                memory.label_values(name, &mut b);
                // Repeats allowed (the store removes them).
                b.dedup();
                prop_assert_eq!(a, b);
            }
            prop_assert!(seg.label_names().eq(memory.label_names()));
        }

        /// A window's segment merged with each persist in turn (chunks copied where they
        /// can be) is the file a merge of all the persists at once, decoding every sample,
        /// writes: the same bytes, so copying costs no compression.
        #[test]
        fn merging_persists_one_by_one_writes_what_a_full_repack_writes(
            history in history(),
            cuts in prop::collection::vec(0.0f64..1.0, 1..5),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (first, last) = history
                .iter()
                .flat_map(|s| [s.first().map(|x| x.t), s.last().map(|x| x.t)])
                .flatten()
                .fold((i64::MAX, i64::MIN), |(a, b), t| (a.min(t), b.max(t)));
            // A history of empty series has no time span to cut (and `last - first` would
            // overflow): every cut falls at the same instant.
            let (first, last) = if first > last { (0, 0) } else { (first, last) };
            let mut bounds: Vec<i64> = cuts
                .iter()
                .map(|f| first + ((last - first) as f64 * f) as i64)
                .collect();
            bounds.sort_unstable();
            bounds.push(i64::MAX);
            let mut from = i64::MIN;
            let mut persists = Vec::new();
            for (k, &to) in bounds.iter().enumerate() {
                let series = history
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        (labels(i), s.iter().filter(|x| x.t >= from && x.t < to).copied().collect())
                    })
                    .collect::<Vec<(Labels, Vec<Sample>)>>();
                if series.iter().any(|(_, s)| !s.is_empty()) {
                    persists.push(stored(dir.path(), k as u64, series));
                }
                from = to;
            }
            prop_assume!(persists.len() >= 2);
            let (reference, reference_bytes) = merged(dir.path(), 100, &persists, false);
            let mut window = Arc::clone(&persists[0]);
            let mut bytes = Vec::new();
            for (k, p) in persists[1..].iter().enumerate() {
                (window, bytes) = merged(dir.path(), 200 + k as u64, &[window, Arc::clone(p)], true);
            }
            let want: Vec<(Labels, Vec<Sample>)> = history
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.is_empty())
                .map(|(i, s)| (labels(i), s.clone()))
                .collect();
            let bits = |c: Vec<(Labels, Vec<Sample>)>| {
                c.into_iter()
                    .map(|(l, s)| (l, s.iter().map(|x| (x.t, x.v.to_bits())).collect::<Vec<_>>()))
                    .collect::<Vec<_>>()
            };
            prop_assert_eq!(bits(contents(&window)), bits(want.clone()));
            prop_assert_eq!(bits(contents(&reference)), bits(want));
            prop_assert!(bytes == reference_bytes, "{} vs {} bytes", bytes.len(), reference_bytes.len());
        }
    }

    /// Pieces of a series that overlap in time (a segment left twice by a crash during a
    /// merge) are decoded, sorted and deduplicated, not copied.
    #[test]
    fn overlapping_pieces_are_merged_by_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let samples: Vec<Sample> = (0..300)
            .map(|i| Sample {
                t: i * 1000,
                v: i as f64,
            })
            .collect();
        let a = stored(dir.path(), 1, vec![(labels(0), samples[..200].to_vec())]);
        let b = stored(dir.path(), 2, vec![(labels(0), samples[100..].to_vec())]);
        let (seg, _) = merged(dir.path(), 3, &[a, b], true);
        let got = contents(&seg);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, samples);
    }

    /// Merging a large segment with a small one copies the large one's closed chunks and
    /// packs its partial last chunk with the small one's samples.
    #[test]
    fn closed_chunks_are_copied_and_the_partial_one_is_packed_again() {
        let dir = tempfile::tempdir().unwrap();
        let samples: Vec<Sample> = (0..1000)
            .map(|i| Sample {
                t: i * 15_000,
                v: (i % 7) as f64 * 0.25,
            })
            .collect();
        let big = stored(dir.path(), 1, vec![(labels(0), samples[..970].to_vec())]);
        let small = stored(dir.path(), 2, vec![(labels(0), samples[970..].to_vec())]);
        let bufs: Vec<(Vec<u8>, u32)> = [&big, &small]
            .iter()
            .map(|seg| {
                let mut stream = Stream::new(seg).unwrap();
                let entry = stream.next(seg, &mut Interner::default(), true);
                let Some(Entry {
                    body: Body::Records { buf, count, .. },
                    ..
                }) = entry.unwrap()
                else {
                    panic!("stored")
                };
                (buf, count)
            })
            .collect();
        let records: Vec<Vec<Record<'_>>> = bufs
            .iter()
            .map(|(buf, count)| read_records(buf, *count, Version::V3).unwrap())
            .collect();
        assert_eq!(records[0].len(), 9, "8 full chunks and a partial one");
        let (mut open, mut packed, mut layout) = (Vec::new(), Vec::new(), Vec::new());
        append_in_order(&records, &mut open, &mut packed, &mut layout).unwrap();
        let mut want: Vec<Placed> = (0..8).map(|i| Placed::Copied(0, i)).collect();
        want.push(Placed::Packed(0));
        assert_eq!(layout, want);
        assert_eq!(packed[0].len(), 40);
        let (seg, _) = merged(dir.path(), 3, &[big, small], true);
        assert_eq!(contents(&seg)[0].1, samples);
    }
}
