//! Immutable segments: the persisted part of the store, one file `seg-<seq>.kms` each.
//!
//! File layout: magic `KMSEG02\n`, a symbol table (`uvarint count`, then the distinct label
//! names and values in sorted order, each `uvarint length` + bytes), `uvarint series count`,
//! then per series its labels (`uvarint count`, then name and value as `uvarint` symbol
//! numbers), `uvarint chunk count` and per chunk `u16 LE sample count`, `uvarint byte length`,
//! the Gorilla bytes; last a `u32 LE` CRC-32 over everything before it. A file is written to a
//! temporary name, fsynced and renamed, so a segment is either whole or absent. Version 01
//! files (labels written out in full per series) are still read; the symbol table saves
//! ~0.1 byte/sample on typical label sets (each string is stored once, not once per series).
//!
//! A segment is loaded whole into memory (compressed, ~1.3–2 bytes/sample) with its own label
//! index. That keeps reads lock-free and simple; reading chunks lazily from the file is the
//! next step if retained data outgrows memory.

use std::sync::Arc;

use super::codec::{Malformed, Reader, crc32, put_str, put_uvarint};
use super::index::Index;
use crate::chunk::{Chunk, MAX_SAMPLES, Sample};
use crate::labels::Labels;
use crate::matcher::CompiledMatcher;

const MAGIC: &[u8; 8] = b"KMSEG02\n";
const MAGIC_V1: &[u8; 8] = b"KMSEG01\n";

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
    /// Encoded size in bytes (the file's size).
    pub bytes: u64,
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
        let mut seg = Segment {
            seq,
            min_t,
            max_t,
            bytes: 0,
            series,
            index,
        };
        seg.bytes = seg.encode().len() as u64;
        Arc::new(seg)
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
                out.extend_from_slice(&(c.len() as u16).to_le_bytes());
                put_uvarint(&mut out, c.bytes().len() as u64);
                out.extend_from_slice(c.bytes());
            }
        }
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses file contents.
    pub fn decode(seq: u64, buf: &[u8]) -> Result<Arc<Segment>, Malformed> {
        if buf.len() < MAGIC.len() + 4 {
            return Err(Malformed);
        }
        let v1 = match &buf[..8] {
            m if m == MAGIC => false,
            m if m == MAGIC_V1 => true,
            _ => return Err(Malformed),
        };
        let (body, crc) = buf.split_at(buf.len() - 4);
        if crc32(body) != u32::from_le_bytes(crc.try_into().map_err(|_| Malformed)?) {
            return Err(Malformed);
        }
        let mut r = Reader::new(&body[8..]);
        let mut symbols = Vec::new();
        if !v1 {
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
        for _ in 0..n {
            let labels = if v1 {
                r.labels()?
            } else {
                let mut pairs = Vec::new();
                for _ in 0..r.uvarint()? {
                    pairs.push((symbol(&mut r)?, symbol(&mut r)?));
                }
                Labels::new(pairs)
            };
            let nc = r.uvarint()?;
            let mut chunks = Vec::new();
            for _ in 0..nc {
                let b = r.bytes(2)?;
                let count = u16::from_le_bytes([b[0], b[1]]);
                let len = usize::try_from(r.uvarint()?).map_err(|_| Malformed)?;
                chunks.push(Chunk::from_bytes(r.bytes(len)?, count).map_err(|_| Malformed)?);
            }
            series.push(SegSeries { labels, chunks });
        }
        if !r.is_empty() {
            return Err(Malformed);
        }
        Ok(Segment::new(seq, series))
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
    chunks
}
