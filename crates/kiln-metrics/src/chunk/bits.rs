//! A big-endian bit writer and reader, the substrate of the Gorilla codec.
//!
//! The reader never panics on short input: running off the end is a [`BitsExhausted`] error,
//! because chunk bytes come from disk and may be truncated or corrupt.

/// Appends bits most-significant first into a byte vector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BitWriter {
    bytes: Vec<u8>,
    /// Bits still free in the last byte (0..=7); 0 means a new byte is needed next.
    free: u8,
}

impl BitWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes one bit.
    pub fn write_bit(&mut self, bit: bool) {
        self.write_bits(u64::from(bit), 1);
    }

    /// Writes the low `n` bits of `value` (n ≤ 64), most significant first.
    pub fn write_bits(&mut self, value: u64, n: u32) {
        BitSink::new(&mut self.bytes, &mut self.free).write_bits(value, n);
    }

    /// Releases spare capacity.
    pub fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
    }

    /// The bytes written so far (the last byte may be partly used).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes written, without copying.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Unused low bits in the last byte.
    pub fn free_bits(&self) -> u32 {
        u32::from(self.free)
    }
}

/// Writes bits into bytes and a count of free bits kept elsewhere. A [`Chunk`](super::Chunk)
/// keeps both as its own fields, where the count packs with its other small fields: nested in
/// a [`BitWriter`] it would be padded to 8 bytes, and the chunk (one in every head series)
/// would not fit its allocator size class.
pub(crate) struct BitSink<'a> {
    bytes: &'a mut Vec<u8>,
    /// Bits still free in the last byte (0..=7); 0 means a new byte is needed next.
    free: &'a mut u8,
}

impl<'a> BitSink<'a> {
    pub(crate) fn new(bytes: &'a mut Vec<u8>, free: &'a mut u8) -> Self {
        BitSink { bytes, free }
    }

    /// Writes one bit.
    pub(crate) fn write_bit(&mut self, bit: bool) {
        self.write_bits(u64::from(bit), 1);
    }

    /// Writes the low `n` bits of `value` (n ≤ 64), most significant first.
    pub(crate) fn write_bits(&mut self, value: u64, mut n: u32) {
        let mut free = u32::from(*self.free);
        while n > 0 {
            if free == 0 {
                if self.bytes.len() == self.bytes.capacity() {
                    self.grow();
                }
                self.bytes.push(0);
                free = 8;
            }
            let take = n.min(free);
            // The `take` bits of `value` just below bit `n`.
            let chunk = ((value >> (n - take)) & ((1u64 << take) - 1)) as u8;
            let shift = free - take;
            if let Some(last) = self.bytes.last_mut() {
                *last |= chunk << shift;
            }
            free -= take;
            n -= take;
        }
        // 0..=7: a byte pushed above has at least one bit taken.
        *self.free = free as u8;
    }

    /// Makes room for more bytes: 24 at first (a chunk's first sample takes 16), then half
    /// as many again. Every head series has an open chunk, and `Vec`'s doubling would leave
    /// it a quarter to a half empty on average; growing by a quarter cost 4% more
    /// instructions per append in reallocations (callgrind), a half costs as many as doubling.
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let more = if self.bytes.is_empty() {
            24
        } else {
            self.bytes.len() / 2 + 8
        };
        self.bytes.reserve_exact(more);
    }
}

/// Reading past the end of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bit stream exhausted")]
pub struct BitsExhausted;

/// Reads bits most-significant first.
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// A reader at the first bit of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, pos: 0 }
    }

    /// Reads one bit.
    #[inline]
    pub fn read_bit(&mut self) -> Result<bool, BitsExhausted> {
        Ok(self.read_bits(1)? == 1)
    }

    /// Reads `n` bits (n ≤ 64) into the low bits of the result: one 8-byte load (and one
    /// more byte when the bits straddle it), not a loop over bytes, since decoding a chunk
    /// is mostly this.
    #[inline]
    pub fn read_bits(&mut self, n: u32) -> Result<u64, BitsExhausted> {
        if n == 0 {
            return Ok(0);
        }
        if n > 64 || self.pos + n as usize > self.bytes.len() * 8 {
            return Err(BitsExhausted);
        }
        let first = self.pos / 8;
        let used = self.pos % 8;
        let word = match self.bytes.get(first..first + 8) {
            Some(eight) => {
                let mut b = [0u8; 8];
                b.copy_from_slice(eight);
                u64::from_be_bytes(b)
            }
            None => {
                // The stream's last bytes: pad with zeros (never returned, see the check).
                let mut b = [0u8; 8];
                let tail = &self.bytes[first..];
                b[..tail.len()].copy_from_slice(tail);
                u64::from_be_bytes(b)
            }
        };
        let mut out = (word << used) >> (64 - n);
        let in_word = 64 - used as u32;
        if n > in_word {
            // The last 1..=7 bits come from the ninth byte.
            let rest = n - in_word;
            let ninth = self.bytes.get(first + 8).copied().map_or(0, u64::from);
            out |= ninth >> (8 - rest);
        }
        self.pos += n as usize;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_grows_by_half_not_double() {
        let mut w = BitWriter::new();
        for n in 1..=300usize {
            w.write_bits(0xa5, 8);
            let cap = w.bytes.capacity();
            assert!(
                cap <= (n + n / 2 + 8).max(24),
                "{n} bytes in a buffer of {cap}"
            );
        }
    }

    #[test]
    fn round_trip_mixed_widths() {
        let mut w = BitWriter::new();
        let items: [(u64, u32); 6] = [
            (1, 1),
            (0b101, 3),
            (u64::MAX, 64),
            (0, 7),
            (0x3fff, 14),
            (12345, 20),
        ];
        for (v, n) in items {
            w.write_bits(v, n);
        }
        let mut r = BitReader::new(w.bytes());
        for (v, n) in items {
            assert_eq!(r.read_bits(n).unwrap(), v, "width {n}");
        }
        assert!(r.read_bits(8).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_widths_at_any_offsets_round_trip(
            items in proptest::collection::vec((proptest::prelude::any::<u64>(), 0u32..=64), 0..80),
        ) {
            let items: Vec<(u64, u32)> = items
                .into_iter()
                .map(|(v, n)| (if n == 64 { v } else { v & ((1u64 << n) - 1) }, n))
                .collect();
            let mut w = BitWriter::new();
            for &(v, n) in &items {
                w.write_bits(v, n);
            }
            let mut r = BitReader::new(w.bytes());
            for &(v, n) in &items {
                proptest::prop_assert_eq!(r.read_bits(n), Ok(v));
            }
            // The writer pads only to a whole byte: one bit more than that padding is too many.
            let padding = w.bytes().len() * 8 - items.iter().map(|i| i.1 as usize).sum::<usize>();
            proptest::prop_assert!(padding < 8);
            proptest::prop_assert!(r.read_bits(padding as u32 + 1).is_err());
        }
    }
}
