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
//! A segment is loaded whole into memory (compressed, ~1.3–2 bytes/sample) with its own label
//! index. That keeps reads lock-free and simple; reading chunks lazily from the file is the
//! next step if retained data outgrows memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::codec::{Malformed, Reader, crc32, put_str, put_uvarint};
use super::index::Index;
use crate::chunk::{Chunk, Encoding, MAX_SAMPLES, Sample};
use crate::labels::{Interner, Labels};
use crate::matcher::CompiledMatcher;

const MAGIC: &[u8; 8] = b"KMSEG03\n";
const MAGIC_V2: &[u8; 8] = b"KMSEG02\n";
const MAGIC_V1: &[u8; 8] = b"KMSEG01\n";

/// The format versions [`Segment::decode`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    /// Labels in full, XOR chunks with a `u16` count.
    V1,
    /// Labels as symbols, XOR chunks with a `u16` count.
    V2,
    /// Labels as symbols, tagged chunks in either encoding.
    V3,
}

/// One series inside a segment.
#[derive(Debug)]
pub struct SegSeries {
    /// The series' labels.
    pub labels: Labels,
    /// Its chunks, in time order.
    pub chunks: Vec<Chunk>,
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
    series: Vec<SegSeries>,
    index: Index,
}

impl Segment {
    /// Builds a segment from series data (empty chunks are dropped).
    pub fn new(seq: u64, mut series: Vec<SegSeries>) -> Arc<Segment> {
        for s in &mut series {
            s.chunks.retain(|c| !c.is_empty());
        }
        series.retain(|s| !s.chunks.is_empty());
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        let mut index = Index::default();
        let (mut min_t, mut max_t) = (i64::MAX, i64::MIN);
        for (i, s) in series.iter().enumerate() {
            index.add(i as u32, &s.labels);
            for c in &s.chunks {
                min_t = min_t.min(c.min_t());
                max_t = max_t.max(c.max_t());
            }
        }
        // Choosing each chunk's encoding costs more than building the segment, so it is left
        // to `encode`, which the persist runs outside the head's locks.
        let upper_bound: usize = series
            .iter()
            .flat_map(|s| s.labels.iter())
            .map(|l| l.name.len() + l.value.len() + 2)
            .chain(
                series
                    .iter()
                    .flat_map(|s| &s.chunks)
                    .map(|c| c.bytes().len() + 6),
            )
            .sum();
        Arc::new(Segment {
            seq,
            min_t,
            max_t,
            bytes: AtomicU64::new(upper_bound as u64 + 32),
            series,
            index,
        })
    }

    /// Size in bytes: the file's, once [`Segment::encode`] ran (or the segment was read from
    /// one); before that, an upper bound from its chunks in the XOR encoding and its labels.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// All series.
    pub fn series(&self) -> &[SegSeries] {
        &self.series
    }

    /// The label index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Series matching all matchers.
    pub fn select<'a>(&'a self, ms: &'a [CompiledMatcher]) -> impl Iterator<Item = &'a SegSeries> {
        self.index
            .candidates(ms)
            .into_iter()
            .filter_map(|id| self.series.get(id as usize))
            .filter(move |s| ms.iter().all(|m| m.matches_labels(&s.labels)))
    }

    /// The file contents.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        let symbols: std::collections::BTreeSet<&str> = self
            .series
            .iter()
            .flat_map(|s| s.labels.iter())
            .flat_map(|l| [l.name.as_str(), l.value.as_str()])
            .collect();
        put_uvarint(&mut out, symbols.len() as u64);
        for sym in &symbols {
            put_str(&mut out, sym);
        }
        let number: std::collections::HashMap<&str, u64> = symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (*s, i as u64))
            .collect();
        put_uvarint(&mut out, self.series.len() as u64);
        for s in &self.series {
            put_uvarint(&mut out, s.labels.len() as u64);
            for l in &s.labels {
                put_uvarint(&mut out, number[l.name.as_str()]);
                put_uvarint(&mut out, number[l.value.as_str()]);
            }
            put_uvarint(&mut out, s.chunks.len() as u64);
            for c in &s.chunks {
                let (encoding, bytes) = c.compact();
                out.push(encoding.tag());
                put_uvarint(&mut out, c.len() as u64);
                put_uvarint(&mut out, bytes.len() as u64);
                out.extend_from_slice(&bytes);
            }
        }
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        self.bytes.store(out.len() as u64, Ordering::Relaxed);
        out
    }

    /// Parses file contents.
    pub fn decode(seq: u64, buf: &[u8]) -> Result<Arc<Segment>, Malformed> {
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
        let mut r = Reader::new(&body[8..]);
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
        let mut series = Vec::new();
        // The segment's series share their label pairs, as the head's do.
        let mut interner = Interner::default();
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
            let labels = interner.intern(&labels);
            let nc = r.uvarint()?;
            let mut chunks = Vec::new();
            for _ in 0..nc {
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
                let bytes = r.bytes(len)?;
                chunks.push(Chunk::from_encoded(encoding, bytes, count).map_err(|_| Malformed)?);
            }
            // No spare slots kept (see `pack`); the count is the file's, so not reserved ahead.
            chunks.shrink_to_fit();
            series.push(SegSeries { labels, chunks });
        }
        if !r.is_empty() {
            return Err(Malformed);
        }
        let seg = Segment::new(seq, series);
        seg.bytes.store(buf.len() as u64, Ordering::Relaxed);
        Ok(seg)
    }
}

/// Merges segments (oldest first) into one, re-packing each series into full chunks, which
/// compresses better than the partial chunks a persist cuts.
pub fn merge(seq: u64, segs: &[Arc<Segment>]) -> Arc<Segment> {
    let mut by_labels: std::collections::BTreeMap<Labels, Vec<Sample>> = Default::default();
    for seg in segs {
        for s in seg.series() {
            let out = by_labels.entry(s.labels.clone()).or_default();
            for c in &s.chunks {
                out.extend(c.iter());
            }
        }
    }
    let series = by_labels
        .into_iter()
        .map(|(labels, mut samples)| {
            samples.sort_by_key(|s| s.t);
            samples.dedup_by_key(|s| s.t);
            SegSeries {
                labels,
                chunks: pack(&samples),
            }
        })
        .collect();
    Segment::new(seq, series)
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
