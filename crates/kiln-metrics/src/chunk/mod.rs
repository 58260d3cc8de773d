//! Gorilla-compressed chunks: delta-of-delta timestamps and XOR-compressed values.
//!
//! A chunk holds up to [`MAX_SAMPLES`] samples spanning at most [`MAX_SPAN_MS`]. Layout of the
//! bit stream (after Facebook's Gorilla paper, as Prometheus's TSDB uses it):
//!
//! - sample 0: 64-bit timestamp, 64-bit value;
//! - timestamps after that: the delta of deltas `dod` (with the first delta taken against 0),
//!   coded `0` (dod = 0), `10`+14 bits, `110`+17 bits, `1110`+20 bits, or `1111`+64 bits;
//! - values after that: `v XOR prev`; `0` when equal, `10`+meaningful bits when they fit the
//!   previous leading/trailing-zero window, else `11`+5 bits leading zeros+6 bits length+bits.
//!
//! The sample count is kept outside the bit stream (in the chunk header on disk), so the
//! iterator knows where the stream ends without a terminator.
//!
//! Chunks are built and kept in memory in this XOR encoding (it appends in place). When a chunk
//! is written to disk, [`Chunk::compact`] picks the smaller of it and the [`decimal`] encoding
//! (integers and decimals as bit-packed integers), named by an [`Encoding`] tag.

mod bits;
pub mod decimal;
mod packed;

use std::borrow::Cow;

use bits::BitSink;
pub use bits::{BitReader, BitWriter, BitsExhausted};
pub use decimal::DecimalIter;

/// How a chunk's bytes are encoded on disk (one tag byte per chunk in a segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Gorilla: delta-of-delta timestamps, XOR values (this module).
    Xor,
    /// Bit-packed timestamps and decimal mantissas ([`decimal`]).
    Decimal,
}

impl Encoding {
    /// The tag byte.
    pub fn tag(self) -> u8 {
        match self {
            Encoding::Xor => 0,
            Encoding::Decimal => 1,
        }
    }

    /// The encoding a tag byte names, if any.
    pub fn from_tag(tag: u8) -> Option<Encoding> {
        match tag {
            0 => Some(Encoding::Xor),
            1 => Some(Encoding::Decimal),
            _ => None,
        }
    }
}

/// Most samples in one chunk (Prometheus's value: ~1.3 bytes/sample is reached by then).
pub const MAX_SAMPLES: u16 = 120;
/// Longest time span of one chunk, in milliseconds (2 hours).
pub const MAX_SPAN_MS: i64 = 2 * 60 * 60 * 1000;

/// One `(timestamp ms, value)` pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub t: i64,
    /// The value.
    pub v: f64,
}

/// An append-only compressed chunk.
///
/// Every head series holds one and so does every persisted chunk kept in memory, so its size
/// counts: 56 bytes, which with the allocator's 8-byte header is a 64-byte block (72 bytes
/// were an 80-byte one). The XOR window is kept in bytes (both values are at most 64), the
/// writer's free-bit count next to them rather than in a nested [`BitWriter`] (whose padding
/// would cost 8 bytes), and the first timestamp is read from the first 8 bytes, where the
/// first sample writes it, instead of being kept twice.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    bytes: Vec<u8>,
    /// Bits still free in the last byte (see [`BitSink`]).
    free: u8,
    count: u16,
    last_t: i64,
    last_delta: i64,
    last_v: u64,
    leading: u8,
    trailing: u8,
}

impl Default for Chunk {
    fn default() -> Self {
        Self::new()
    }
}

impl Chunk {
    /// An empty chunk.
    pub fn new() -> Self {
        Chunk {
            bytes: Vec::new(),
            free: 0,
            count: 0,
            last_t: 0,
            last_delta: 0,
            last_v: 0,
            // 0xff marks "no window yet" so the first XOR always writes a fresh window.
            leading: 0xff,
            trailing: 0,
        }
    }

    /// An empty chunk whose [`Chunk::max_t`] is `t` until its first sample: a head series
    /// keeps the newest timestamp it ever took there between persists.
    pub fn empty_after(t: i64) -> Self {
        Chunk {
            last_t: t,
            ..Chunk::new()
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// First timestamp (meaningless when empty).
    pub fn min_t(&self) -> i64 {
        // The first sample's timestamp: the stream's first 64 bits, big-endian.
        self.bytes
            .first_chunk::<8>()
            .map_or(0, |first| i64::from_be_bytes(*first))
    }

    /// Last timestamp (when empty: the one it was made [`Chunk::empty_after`], else 0).
    pub fn max_t(&self) -> i64 {
        self.last_t
    }

    /// Releases spare capacity (for a chunk that takes no more appends).
    pub fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
    }

    /// Compressed bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn sink(&mut self) -> BitSink<'_> {
        BitSink::new(&mut self.bytes, &mut self.free)
    }

    /// True when the chunk cannot take a sample at `t` (full, or `t` past the span limit).
    pub fn is_full_for(&self, t: i64) -> bool {
        self.count >= MAX_SAMPLES
            || (self.count > 0 && t.saturating_sub(self.min_t()) >= MAX_SPAN_MS)
    }

    /// Appends a sample. The caller keeps timestamps non-decreasing and checks [`Self::is_full_for`].
    pub fn append(&mut self, t: i64, v: f64) {
        let bits = v.to_bits();
        if self.count == 0 {
            self.sink().write_bits(t as u64, 64);
            self.sink().write_bits(bits, 64);
        } else {
            let delta = t.wrapping_sub(self.last_t);
            self.write_dod(delta.wrapping_sub(self.last_delta));
            self.last_delta = delta;
            self.write_xor(bits);
        }
        self.last_t = t;
        self.last_v = bits;
        self.count += 1;
    }

    fn write_dod(&mut self, dod: i64) {
        // Each bucket holds a signed value in two's complement of the given width.
        let fits = |bits: u32| dod >= -(1i64 << (bits - 1)) && dod < (1i64 << (bits - 1));
        if dod == 0 {
            self.sink().write_bit(false);
        } else if fits(14) {
            self.sink().write_bits(0b10, 2);
            self.sink().write_bits(dod as u64, 14);
        } else if fits(17) {
            self.sink().write_bits(0b110, 3);
            self.sink().write_bits(dod as u64, 17);
        } else if fits(20) {
            self.sink().write_bits(0b1110, 4);
            self.sink().write_bits(dod as u64, 20);
        } else {
            self.sink().write_bits(0b1111, 4);
            self.sink().write_bits(dod as u64, 64);
        }
    }

    fn write_xor(&mut self, bits: u64) {
        let xor = bits ^ self.last_v;
        if xor == 0 {
            self.sink().write_bit(false);
            return;
        }
        self.sink().write_bit(true);
        // Leading zeros are capped at 31 to fit 5 bits.
        let leading = xor.leading_zeros().min(31);
        let trailing = xor.trailing_zeros();
        let (window_leading, window_trailing) = (u32::from(self.leading), u32::from(self.trailing));
        if self.leading != 0xff && leading >= window_leading && trailing >= window_trailing {
            self.sink().write_bit(false);
            let sig = 64 - window_leading - window_trailing;
            self.sink().write_bits(xor >> window_trailing, sig);
        } else {
            self.sink().write_bit(true);
            let sig = 64 - leading - trailing;
            self.sink().write_bits(u64::from(leading), 5);
            // 64 significant bits do not fit in 6 bits; 0 stands for 64 (0 is impossible).
            self.sink().write_bits(u64::from(sig & 63), 6);
            self.sink().write_bits(xor >> trailing, sig);
            // Both are at most 64 (leading at most 31).
            self.leading = leading as u8;
            self.trailing = trailing as u8;
        }
    }

    /// Iterates the samples.
    pub fn iter(&self) -> ChunkIter<'_> {
        ChunkIter::new(&self.bytes, self.count)
    }

    /// Decodes every sample (stops quietly at corrupt data; see [`ChunkIter`]).
    pub fn samples(&self) -> Vec<Sample> {
        self.iter().collect()
    }

    /// Rebuilds a chunk from its persisted form by re-appending (validates the bytes too).
    pub fn from_bytes(bytes: &[u8], count: u16) -> Result<Chunk, BitsExhausted> {
        Chunk::from_encoded(Encoding::Xor, bytes, count)
    }

    /// Rebuilds a chunk from bytes in any encoding (validating them: every sample must
    /// decode, with timestamps in order).
    pub fn from_encoded(
        encoding: Encoding,
        bytes: &[u8],
        count: u16,
    ) -> Result<Chunk, BitsExhausted> {
        let mut c = Chunk::new();
        let mut append = |s: Sample| {
            // The decimal encoding can describe any timestamps; a chunk's must not go back.
            let in_order = c.is_empty() || s.t >= c.last_t;
            if in_order {
                c.append(s.t, s.v);
            }
            in_order
        };
        let complete = decode_each(encoding, bytes, count, &mut append);
        if !complete || c.count != count {
            return Err(BitsExhausted);
        }
        // A rebuilt chunk is a segment's: it takes no appends, so it keeps no spare room.
        c.shrink_to_fit();
        Ok(c)
    }

    /// The first sample's timestamp of bytes in any encoding (decoding only that sample).
    pub fn first_t(encoding: Encoding, bytes: &[u8], count: u16) -> Result<i64, BitsExhausted> {
        let first = match encoding {
            Encoding::Xor => ChunkIter::new(bytes, count).next(),
            Encoding::Decimal => DecimalIter::new(bytes, count).next(),
        };
        first.map(|s| s.t).ok_or(BitsExhausted)
    }

    /// Decodes bytes in any encoding straight to samples, appended to `out`, checked as
    /// [`Chunk::from_encoded`] checks them (every sample decodes, timestamps in order), without
    /// building a chunk: how a query reads a stored segment's chunks.
    pub fn decode_into(
        encoding: Encoding,
        bytes: &[u8],
        count: u16,
        out: &mut Vec<Sample>,
    ) -> Result<(), BitsExhausted> {
        let first = out.len();
        out.reserve(usize::from(count));
        let mut last_t = i64::MIN;
        let mut push = |s: Sample| {
            let in_order = s.t >= last_t;
            last_t = s.t;
            if in_order {
                out.push(s);
            }
            in_order
        };
        let complete = decode_each(encoding, bytes, count, &mut push);
        if !complete || out.len() - first != usize::from(count) {
            out.truncate(first);
            return Err(BitsExhausted);
        }
        Ok(())
    }

    /// The smallest encoding of this chunk and its bytes: the [`decimal`] one when every
    /// value is a decimal and that is smaller, else the XOR bytes as they are.
    pub fn compact(&self) -> (Encoding, Cow<'_, [u8]>) {
        match decimal::encode(&self.samples(), self.bytes().len()) {
            Some(bytes) => (Encoding::Decimal, Cow::Owned(bytes)),
            None => (Encoding::Xor, Cow::Borrowed(self.bytes())),
        }
    }
}

/// Decoding iterator over a chunk's bit stream.
///
/// Corrupt or short input ends the iteration early and sets [`ChunkIter::error`] rather than
/// panicking.
#[derive(Debug, Clone)]
pub struct ChunkIter<'a> {
    r: BitReader<'a>,
    remaining: u16,
    read: u16,
    t: i64,
    delta: i64,
    v: u64,
    leading: u32,
    trailing: u32,
    /// Set when the stream ended before `count` samples were read.
    pub error: bool,
}

impl<'a> ChunkIter<'a> {
    /// An iterator over `count` samples in `bytes`.
    pub fn new(bytes: &'a [u8], count: u16) -> Self {
        ChunkIter {
            r: BitReader::new(bytes),
            remaining: count,
            read: 0,
            t: 0,
            delta: 0,
            v: 0,
            leading: 0,
            trailing: 0,
            error: false,
        }
    }

    fn next_sample(&mut self) -> Result<Sample, BitsExhausted> {
        if self.read == 0 {
            self.t = self.r.read_bits(64)? as i64;
            self.v = self.r.read_bits(64)?;
        } else {
            let dod = self.read_dod()?;
            self.delta = self.delta.wrapping_add(dod);
            self.t = self.t.wrapping_add(self.delta);
            self.read_xor()?;
        }
        self.read += 1;
        Ok(Sample {
            t: self.t,
            v: f64::from_bits(self.v),
        })
    }

    fn read_dod(&mut self) -> Result<i64, BitsExhausted> {
        let mut prefix = 0;
        while prefix < 4 && self.r.read_bit()? {
            prefix += 1;
        }
        let width = match prefix {
            0 => return Ok(0),
            1 => 14,
            2 => 17,
            3 => 20,
            _ => 64,
        };
        let raw = self.r.read_bits(width)?;
        // Sign-extend the two's-complement value of `width` bits.
        Ok(if width == 64 {
            raw as i64
        } else {
            ((raw << (64 - width)) as i64) >> (64 - width)
        })
    }

    fn read_xor(&mut self) -> Result<(), BitsExhausted> {
        if !self.r.read_bit()? {
            return Ok(());
        }
        if self.r.read_bit()? {
            self.leading = self.r.read_bits(5)? as u32;
            let sig = self.r.read_bits(6)? as u32;
            let sig = if sig == 0 { 64 } else { sig };
            self.trailing = 64u32.saturating_sub(self.leading + sig);
        }
        let sig = 64u32.saturating_sub(self.leading + self.trailing);
        if sig == 0 {
            // Only a corrupt stream can describe an empty window.
            return Err(BitsExhausted);
        }
        let xor = self.r.read_bits(sig)? << self.trailing;
        self.v ^= xor;
        Ok(())
    }
}

impl Iterator for ChunkIter<'_> {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        if self.remaining == 0 || self.error {
            return None;
        }
        self.remaining -= 1;
        match self.next_sample() {
            Ok(s) => Some(s),
            Err(BitsExhausted) => {
                self.error = true;
                None
            }
        }
    }
}

/// Feeds `f` each sample of bytes in `encoding` until it returns false; true when every one
/// decoded and `f` took them all.
fn decode_each(
    encoding: Encoding,
    bytes: &[u8],
    count: u16,
    f: &mut impl FnMut(Sample) -> bool,
) -> bool {
    match encoding {
        Encoding::Xor => {
            let mut it = ChunkIter::new(bytes, count);
            it.by_ref().all(f) && !it.error
        }
        Encoding::Decimal => {
            let mut it = DecimalIter::new(bytes, count);
            it.by_ref().all(f) && !it.error
        }
    }
}

#[cfg(test)]
mod tests;
