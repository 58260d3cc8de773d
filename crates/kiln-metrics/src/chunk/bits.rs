//! A big-endian bit writer and reader, the substrate of the Gorilla codec.
//!
//! The reader never panics on short input: running off the end is a [`BitsExhausted`] error,
//! because chunk bytes come from disk and may be truncated or corrupt.

/// Appends bits most-significant first into a byte vector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BitWriter {
    bytes: Vec<u8>,
    /// Bits still free in the last byte (0..=7); 0 means a new byte is needed next.
    free: u32,
}

impl BitWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a writer over existing bytes whose last byte has `free` unused low bits.
    pub fn from_parts(bytes: Vec<u8>, free: u32) -> Self {
        BitWriter {
            bytes,
            free: free.min(7),
        }
    }

    /// Writes one bit.
    pub fn write_bit(&mut self, bit: bool) {
        self.write_bits(u64::from(bit), 1);
    }

    /// Writes the low `n` bits of `value` (n ≤ 64), most significant first.
    pub fn write_bits(&mut self, value: u64, mut n: u32) {
        while n > 0 {
            if self.free == 0 {
                self.bytes.push(0);
                self.free = 8;
            }
            let take = n.min(self.free);
            // The `take` bits of `value` just below bit `n`.
            let chunk = ((value >> (n - take)) & ((1u64 << take) - 1)) as u8;
            let shift = self.free - take;
            if let Some(last) = self.bytes.last_mut() {
                *last |= chunk << shift;
            }
            self.free -= take;
            n -= take;
        }
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
        self.free
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
    pub fn read_bit(&mut self) -> Result<bool, BitsExhausted> {
        Ok(self.read_bits(1)? == 1)
    }

    /// Reads `n` bits (n ≤ 64) into the low bits of the result.
    pub fn read_bits(&mut self, mut n: u32) -> Result<u64, BitsExhausted> {
        if self.pos + n as usize > self.bytes.len() * 8 {
            return Err(BitsExhausted);
        }
        let mut out: u64 = 0;
        while n > 0 {
            let byte = self.bytes[self.pos / 8];
            let used = (self.pos % 8) as u32;
            let avail = 8 - used;
            let take = n.min(avail);
            let bits = (u64::from(byte) >> (avail - take)) & ((1u64 << take) - 1);
            out = if take == 64 {
                bits
            } else {
                (out << take) | bits
            };
            self.pos += take as usize;
            n -= take;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
