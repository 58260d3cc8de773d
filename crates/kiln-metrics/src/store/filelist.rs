//! A stored segment's series list, kept in its file: what stays in memory to find and read
//! its series there ([`FileIndex`]: the symbol table, a file offset every [`STRIDE`] series,
//! each label name's values as symbols), and the sequential reader of a file's series entries
//! ([`Cursor`]).
//!
//! A series entry is its labels as symbol pairs and its chunk records (see `segment.rs` for
//! the layout). Matching reads labels as symbol numbers: each matcher is resolved once per
//! query and segment to the set of value symbols it accepts ([`Resolved`]), and only the
//! series that match get their labels built, with pairs shared through an [`Interner`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::codec::{Malformed, Reader};
use super::index::{MetricRuns, MetricRunsBuilder};
use super::segment::{READ_SPAN_BYTES, Version, invalid, read_record};
use crate::labels::{Interner, Label, Labels, METRIC_NAME};
use crate::matcher::CompiledMatcher;

/// Series per entry of the table of offsets: a read of a run of series starts at most this
/// many entries early (a few KB of a 2 h segment), for half a byte a series.
pub(super) const STRIDE: u32 = 16;

/// A file's symbol table: its distinct label names and values, sorted, in one string.
#[derive(Debug)]
pub(super) struct Symbols {
    text: Box<str>,
    /// The end of each symbol in `text`.
    ends: Box<[u32]>,
}

impl Symbols {
    /// The table of `sorted` (strictly ascending, as every writer writes it).
    pub(super) fn new<'a>(sorted: impl IntoIterator<Item = &'a str>) -> Result<Symbols, Malformed> {
        let (mut text, mut ends) = (String::new(), Vec::new());
        let mut prev: Option<&str> = None;
        for s in sorted {
            if prev.is_some_and(|p| p >= s) {
                return Err(Malformed);
            }
            text.push_str(s);
            ends.push(u32::try_from(text.len()).map_err(|_| Malformed)?);
            prev = Some(s);
        }
        Ok(Symbols {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        })
    }

    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Symbol `i`.
    pub(super) fn get(&self, i: u32) -> Option<&str> {
        let i = i as usize;
        let end = *self.ends.get(i)? as usize;
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1] as usize,
        };
        self.text.get(start..end)
    }

    /// The number of symbol `s`.
    pub(super) fn find(&self, s: &str) -> Option<u32> {
        let (mut lo, mut hi) = (0, u32::try_from(self.len()).ok()?);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid)?.cmp(s) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// Every symbol, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &str> {
        (0..u32::try_from(self.len()).unwrap_or(u32::MAX)).filter_map(|i| self.get(i))
    }

    fn heap_bytes(&self) -> usize {
        self.text.len() + self.ends.len() * 4
    }

    /// The labels of the symbol pairs `pairs`: each pair from `cache`, else from `interner`
    /// (and then kept in `cache`).
    pub(super) fn labels(
        &self,
        pairs: &[(u32, u32)],
        cache: &mut HashMap<(u32, u32), Arc<Label>>,
        interner: &mut Interner,
    ) -> Result<Labels, Malformed> {
        let mut out = Vec::with_capacity(pairs.len());
        for &(n, v) in pairs {
            let pair = match cache.get(&(n, v)) {
                Some(p) => Arc::clone(p),
                None => {
                    let name = self.get(n).ok_or(Malformed)?;
                    let value = self.get(v).ok_or(Malformed)?;
                    let p = interner.pair(name, value);
                    cache.insert((n, v), Arc::clone(&p));
                    p
                }
            };
            out.push(pair);
        }
        Labels::from_sorted_pairs(out).ok_or(Malformed)
    }
}

/// What a stored segment keeps in memory of its series list.
#[derive(Debug)]
pub(super) struct FileIndex {
    count: u32,
    symbols: Symbols,
    /// The file offset of series `k * STRIDE` for each `k`, then the end of the list.
    sparse: Box<[u64]>,
    /// Per label name (symbol), the symbols of its values, both ascending.
    values: Box<[(u32, Box<[u32]>)]>,
}

/// The series a query reads with one [`Cursor`]: ids `first..` from `from` to `to` in the
/// file, of which `ids` (a range of the candidates) are candidates.
#[derive(Debug)]
pub(super) struct Group {
    pub first: u32,
    pub from: u64,
    pub to: u64,
    pub ids: Range<usize>,
}

impl FileIndex {
    pub(super) fn count(&self) -> u32 {
        self.count
    }

    pub(super) fn symbols(&self) -> &Symbols {
        &self.symbols
    }

    /// Approximate heap bytes.
    pub(super) fn heap_bytes(&self) -> usize {
        self.symbols.heap_bytes()
            + self.sparse.len() * 8
            + self
                .values
                .iter()
                .map(|(_, v)| 24 + v.len() * 4)
                .sum::<usize>()
    }

    /// Where the series list lies in the file.
    pub(super) fn span(&self) -> (u64, u64) {
        (
            self.sparse.first().copied().unwrap_or(0),
            self.sparse.last().copied().unwrap_or(0),
        )
    }

    /// The values of label `name`, sorted.
    pub(super) fn values_of(&self, name: &str) -> impl Iterator<Item = &str> {
        self.symbols
            .find(name)
            .map(|n| self.value_ids(n))
            .unwrap_or_default()
            .iter()
            .filter_map(|&v| self.symbols.get(v))
    }

    fn value_ids(&self, name: u32) -> &[u32] {
        self.values
            .binary_search_by_key(&name, |(n, _)| *n)
            .map_or(&[], |i| &self.values[i].1)
    }

    /// `m` as the symbols it accepts.
    pub(super) fn resolve(&self, m: &CompiledMatcher) -> Resolved {
        let name = self.symbols.find(m.name());
        let mut accept = vec![0u64; self.symbols.len().div_ceil(64)];
        for &v in name.map(|n| self.value_ids(n)).unwrap_or_default() {
            if self.symbols.get(v).is_some_and(|s| m.matches(s)) {
                accept[v as usize / 64] |= 1 << (v % 64);
            }
        }
        Resolved {
            name,
            accept,
            absent: m.matches(""),
        }
    }

    /// Candidate ids (ascending, below the count) split into the reads that take them: ids
    /// whose entries lie at most `gap` bytes apart are read together.
    pub(super) fn groups(&self, ids: &[u32], gap: u64) -> Result<Vec<Group>, Malformed> {
        let offset = |block: u32| self.sparse.get(block as usize).copied().ok_or(Malformed);
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(&first) = ids.get(i) {
            let b0 = first / STRIDE;
            let mut b1 = b0;
            let mut j = i + 1;
            while let Some(&id) = ids.get(j) {
                let b = id / STRIDE;
                if b > b1 + 1 && offset(b)? - offset(b1 + 1)? > gap {
                    break;
                }
                b1 = b1.max(b);
                j += 1;
            }
            out.push(Group {
                first: b0 * STRIDE,
                from: offset(b0)?,
                to: offset(b1 + 1)?,
                ids: i..j,
            });
            i = j;
        }
        Ok(out)
    }
}

/// A matcher resolved against one file's symbols.
#[derive(Debug)]
pub(super) struct Resolved {
    /// The label name's symbol (`None`: no series has the label).
    name: Option<u32>,
    /// The value symbols accepted, as a bit set.
    accept: Vec<u64>,
    /// Whether a series without the label matches.
    absent: bool,
}

impl Resolved {
    /// Whether a series with these symbol pairs matches.
    pub(super) fn matches(&self, pairs: &[(u32, u32)]) -> bool {
        match self.name.and_then(|n| pairs.iter().find(|p| p.0 == n)) {
            Some(&(_, v)) => self
                .accept
                .get(v as usize / 64)
                .is_some_and(|w| (w >> (v % 64)) & 1 == 1),
            None => self.absent,
        }
    }
}

/// Builds a [`FileIndex`] and the [`MetricRuns`] of a file series by series, as it is
/// written or read.
#[derive(Debug)]
pub(super) struct IndexBuilder {
    symbols: Symbols,
    metric: Option<u32>,
    sparse: Vec<u64>,
    values: BTreeMap<u32, BTreeSet<u32>>,
    runs: MetricRunsBuilder,
    count: u32,
}

impl IndexBuilder {
    pub(super) fn new(symbols: Symbols) -> Self {
        IndexBuilder {
            metric: symbols.find(METRIC_NAME),
            symbols,
            sparse: Vec::new(),
            values: BTreeMap::new(),
            runs: MetricRunsBuilder::default(),
            count: 0,
        }
    }

    pub(super) fn symbols(&self) -> &Symbols {
        &self.symbols
    }

    /// Adds the next series, whose entry starts at file offset `at`.
    pub(super) fn push(&mut self, at: u64, pairs: &[(u32, u32)]) -> Result<(), Malformed> {
        let len = self.symbols.len();
        if pairs
            .iter()
            .any(|&(n, v)| n as usize >= len || v as usize >= len)
        {
            return Err(Malformed);
        }
        if self.count.is_multiple_of(STRIDE) {
            self.sparse.push(at);
        }
        self.count = self.count.checked_add(1).ok_or(Malformed)?;
        for &(n, v) in pairs {
            self.values.entry(n).or_default().insert(v);
        }
        let metric = self
            .metric
            .and_then(|m| pairs.iter().find(|p| p.0 == m))
            .and_then(|p| self.symbols.get(p.1));
        self.runs
            .push(metric, pairs.iter().filter_map(|p| self.symbols.get(p.0)));
        Ok(())
    }

    /// The index of the series pushed, whose list ends at file offset `end`.
    pub(super) fn finish(mut self, end: u64) -> (FileIndex, MetricRuns) {
        self.sparse.push(end);
        let index = FileIndex {
            count: self.count,
            symbols: self.symbols,
            sparse: self.sparse.into_boxed_slice(),
            values: self
                .values
                .into_iter()
                .map(|(n, v)| (n, v.into_iter().collect()))
                .collect(),
        };
        (index, self.runs.finish())
    }
}

/// One series entry as a [`Cursor`] reads it.
#[derive(Debug)]
pub(super) struct RawEntry<'b> {
    /// Its labels as (name, value) symbols.
    pub pairs: &'b [(u32, u32)],
    /// How many chunk records.
    pub count: u32,
    /// Its chunk records.
    pub records: &'b [u8],
}

/// Parses the entry at the start of `buf` into `pairs`: returns its length, its record count
/// and where its records lie in `buf`. Fails on an entry cut short by the end of `buf`.
fn parse_entry(
    buf: &[u8],
    version: Version,
    pairs: &mut Vec<(u32, u32)>,
) -> Result<(usize, u32, Range<usize>), Malformed> {
    let mut r = Reader::new(buf);
    pairs.clear();
    let symbol = |r: &mut Reader<'_>| u32::try_from(r.uvarint()?).map_err(|_| Malformed);
    for _ in 0..r.uvarint()? {
        pairs.push((symbol(&mut r)?, symbol(&mut r)?));
    }
    let count = u32::try_from(r.uvarint()?).map_err(|_| Malformed)?;
    let start = buf.len() - r.remaining();
    for _ in 0..count {
        read_record(&mut r, version)?;
    }
    let end = buf.len() - r.remaining();
    Ok((end, count, start..end))
}

/// Reads a span of a file's series entries in order, a bounded piece at a time.
#[derive(Debug)]
pub(super) struct Cursor<'f> {
    file: &'f File,
    version: Version,
    buf: Vec<u8>,
    /// The file offset of `buf[0]`.
    at: u64,
    /// The next entry's position in `buf`.
    pos: usize,
    end: u64,
    pairs: Vec<(u32, u32)>,
}

impl<'f> Cursor<'f> {
    /// Reads the entries from file offset `from` (an entry's start) to `end`.
    pub(super) fn new(file: &'f File, version: Version, from: u64, end: u64) -> Self {
        Cursor {
            file,
            version,
            buf: Vec::new(),
            at: from,
            pos: 0,
            end,
            pairs: Vec::new(),
        }
    }

    /// The next entry, `None` at the span's end.
    pub(super) fn next_entry(&mut self) -> io::Result<Option<RawEntry<'_>>> {
        if self.at + self.pos as u64 >= self.end {
            return Ok(None);
        }
        // Each failed parse reads more of the span, which ends: bounded by its length.
        loop {
            match parse_entry(&self.buf[self.pos..], self.version, &mut self.pairs) {
                Ok((len, count, records)) => {
                    let base = self.pos;
                    self.pos += len;
                    return Ok(Some(RawEntry {
                        pairs: &self.pairs,
                        count,
                        records: &self.buf[base + records.start..base + records.end],
                    }));
                }
                Err(_) if self.at + (self.buf.len() as u64) < self.end => self.refill()?,
                Err(e) => return Err(invalid(e)),
            }
        }
    }

    /// Drops what was parsed and reads more of the span: at least as much as is buffered
    /// (an entry larger than a read doubles it), at most to the span's end.
    fn refill(&mut self) -> io::Result<()> {
        self.buf.drain(..self.pos);
        self.at += self.pos as u64;
        self.pos = 0;
        let have = self.buf.len();
        let left = self.end - self.at - have as u64;
        let more = usize::try_from(left.min(READ_SPAN_BYTES.max(have as u64)))
            .map_err(io::Error::other)?;
        self.buf.resize(have + more, 0);
        self.file
            .read_exact_at(&mut self.buf[have..], self.at + have as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_found_by_their_text() {
        let symbols = Symbols::new(["", "a", "bc", "d"]).unwrap();
        assert_eq!(symbols.find("bc"), Some(2));
        assert_eq!(symbols.find(""), Some(0));
        assert_eq!(symbols.find("b"), None);
        assert_eq!(symbols.get(3), Some("d"));
        assert_eq!(symbols.get(4), None);
        assert_eq!(symbols.iter().collect::<Vec<_>>(), ["", "a", "bc", "d"]);
        assert!(Symbols::new(["b", "a"]).is_err());
    }
}
