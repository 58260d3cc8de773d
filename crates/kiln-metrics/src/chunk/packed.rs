//! Bit-packed integer sequences, the building block of the decimal chunk encoding.
//!
//! A sequence `x0, x1, …` is coded as its first differences (order 1, for gauges) or its
//! differences of differences (order 2, for counters and timestamps), whichever is smaller. The
//! residuals are divided by their greatest common divisor (memory sizes move in pages, counters
//! of batches in batch sizes), zig-zagged, and each is written in the narrowest of up to three
//! width classes chosen per sequence to minimise the total size (prefix `0`, `10`, `11`; a
//! single class needs no prefix, so a sequence whose residuals are all zero, such as perfectly
//! regular timestamps, costs no bits per sample at all).
//!
//! Header of one sequence: order bit (`0` = 1, `1` = 2), the divisor, `x0` (zig-zag), for order
//! 2 the first difference (zig-zag), each as [`write_varbits`]; then 2 bits of class count and
//! 7 bits per class width. All arithmetic wraps, so any `i64` sequence round-trips.

use super::bits::{BitReader, BitWriter, BitsExhausted};

/// Most width classes of one sequence.
const MAX_CLASSES: usize = 3;

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

fn bit_len(u: u64) -> u32 {
    64 - u.leading_zeros()
}

/// Writes `v` as 7 bits of length, then that many bits.
pub fn write_varbits(w: &mut BitWriter, v: u64) {
    let n = bit_len(v);
    w.write_bits(u64::from(n), 7);
    w.write_bits(v, n);
}

/// Reads what [`write_varbits`] wrote.
pub fn read_varbits(r: &mut BitReader<'_>) -> Result<u64, BitsExhausted> {
    let n = r.read_bits(7)? as u32;
    if n > 64 {
        return Err(BitsExhausted);
    }
    r.read_bits(n)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Prefix length of class `i` out of `n` classes.
fn prefix_bits(n: usize, i: usize) -> u64 {
    match (n, i) {
        (1, _) => 0,
        (2, _) | (_, 0) => 1,
        _ => 2,
    }
}

/// How one sequence is coded: everything its header holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqCode {
    order: u8,
    divisor: i64,
    first: i64,
    first_delta: i64,
    widths: Vec<u32>,
}

/// A planned sequence: its code and its residuals (already divided), ready to write.
#[derive(Debug, Clone)]
pub struct Plan {
    code: SeqCode,
    residuals: Vec<u64>,
    bits: u64,
}

impl Plan {
    /// The cheapest coding of `xs` (non-empty).
    pub fn new(xs: &[i64]) -> Plan {
        let one = Plan::with_order(xs, 1);
        let two = Plan::with_order(xs, 2);
        if two.bits < one.bits { two } else { one }
    }

    /// Total size in bits, header included.
    pub fn bits(&self) -> u64 {
        self.bits
    }

    /// Number of leading samples that have no residual (they are in the header).
    fn lead(&self) -> usize {
        usize::from(self.code.order)
    }

    fn with_order(xs: &[i64], order: u8) -> Plan {
        let first = xs.first().copied().unwrap_or(0);
        let deltas: Vec<i64> = xs.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
        let (first_delta, raw): (i64, Vec<i64>) = if order == 1 {
            (0, deltas)
        } else {
            let dd = deltas.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
            (deltas.first().copied().unwrap_or(0), dd)
        };
        let g = raw.iter().fold(0, |g, r| gcd(g, r.unsigned_abs()));
        // 0 (no or only zero residuals) and 2^63 (only i64::MIN) leave residuals as they are.
        let divisor = i64::try_from(g).ok().filter(|&g| g > 0).unwrap_or(1);
        let residuals: Vec<u64> = raw.iter().map(|r| zigzag(r / divisor)).collect();
        let mut counts = [0u64; 65];
        for &r in &residuals {
            counts[bit_len(r) as usize] += 1;
        }
        let widths = best_widths(&counts);
        let mut code = SeqCode {
            order,
            divisor,
            first,
            first_delta,
            widths,
        };
        if xs.len() < 2 {
            // Nothing after x0: the smallest header.
            code.order = 1;
        }
        let mut bits = header_bits(&code);
        for &r in &residuals {
            let (i, w) = class_of(&code.widths, r);
            bits += prefix_bits(code.widths.len(), i) + u64::from(w);
        }
        Plan {
            code,
            residuals,
            bits,
        }
    }

    /// Writes the header.
    pub fn write_header(&self, w: &mut BitWriter) {
        let c = &self.code;
        w.write_bit(c.order == 2);
        write_varbits(w, c.divisor as u64);
        write_varbits(w, zigzag(c.first));
        if c.order == 2 {
            write_varbits(w, zigzag(c.first_delta));
        }
        w.write_bits(c.widths.len() as u64, 2);
        for &width in &c.widths {
            w.write_bits(u64::from(width), 7);
        }
    }

    /// Writes the residual of sample `i` (nothing for the samples in the header).
    pub fn write_sample(&self, w: &mut BitWriter, i: usize) {
        let Some(&r) = i
            .checked_sub(self.lead())
            .and_then(|k| self.residuals.get(k))
        else {
            return;
        };
        let n = self.code.widths.len();
        let (class, width) = class_of(&self.code.widths, r);
        match (n, class) {
            (1, _) => {}
            (2, c) => w.write_bit(c == 1),
            (_, 0) => w.write_bit(false),
            (_, c) => w.write_bits(0b10 | (c as u64 - 1), 2),
        }
        w.write_bits(r, width);
    }
}

fn class_of(widths: &[u32], r: u64) -> (usize, u32) {
    let len = bit_len(r);
    // The last class of a plan is as wide as its widest residual, so `position` finds one.
    let i = widths
        .iter()
        .position(|&w| w >= len)
        .unwrap_or(widths.len() - 1);
    (i, widths[i])
}

fn header_bits(c: &SeqCode) -> u64 {
    let varbits = |u: u64| 7 + u64::from(bit_len(u));
    let mut bits = 1 + varbits(c.divisor as u64) + varbits(zigzag(c.first));
    if c.order == 2 {
        bits += varbits(zigzag(c.first_delta));
    }
    bits + 2 + 7 * c.widths.len() as u64
}

/// The class widths (increasing, the last one fitting every residual) that minimise the
/// residuals' total size, given how many residuals have each bit length.
fn best_widths(counts: &[u64; 65]) -> Vec<u32> {
    let max = counts.iter().rposition(|&c| c > 0).unwrap_or(0);
    // at_most[w]: residuals of at most w bits.
    let mut at_most = [0u64; 65];
    let mut sum = 0;
    for (w, c) in counts.iter().enumerate() {
        sum += c;
        at_most[w] = sum;
    }
    let total = sum;
    let top = max as u64;
    let mut best = (total * top, vec![max as u32]);
    for w1 in 0..max {
        let (a, a_bits) = (at_most[w1], w1 as u64);
        let two = a * (1 + a_bits) + (total - a) * (1 + top) + 7;
        if two < best.0 {
            best = (two, vec![w1 as u32, max as u32]);
        }
        for (w2, &b) in at_most.iter().enumerate().take(max).skip(w1 + 1) {
            let three = a * (1 + a_bits) + (b - a) * (2 + w2 as u64) + (total - b) * (2 + top) + 14;
            if three < best.0 {
                best = (three, vec![w1 as u32, w2 as u32, max as u32]);
            }
        }
    }
    best.1
}

/// Decodes one sequence, sample by sample, interleaved with other sequences.
#[derive(Debug, Clone)]
pub struct SeqDecoder {
    code: SeqCode,
    x: i64,
    delta: i64,
}

impl SeqDecoder {
    /// Reads a header written by [`Plan::write_header`].
    pub fn read_header(r: &mut BitReader<'_>) -> Result<SeqDecoder, BitsExhausted> {
        let order = if r.read_bit()? { 2 } else { 1 };
        let divisor = i64::try_from(read_varbits(r)?).map_err(|_| BitsExhausted)?;
        let first = unzigzag(read_varbits(r)?);
        let first_delta = if order == 2 {
            unzigzag(read_varbits(r)?)
        } else {
            0
        };
        let n = r.read_bits(2)? as usize;
        if n == 0 || n > MAX_CLASSES {
            return Err(BitsExhausted);
        }
        let mut widths = Vec::with_capacity(n);
        for _ in 0..n {
            let width = r.read_bits(7)? as u32;
            if width > 64 {
                return Err(BitsExhausted);
            }
            widths.push(width);
        }
        Ok(SeqDecoder {
            code: SeqCode {
                order,
                divisor,
                first,
                first_delta,
                widths,
            },
            x: 0,
            delta: 0,
        })
    }

    /// The value of sample `i` (samples are read in order, from 0).
    pub fn next(&mut self, r: &mut BitReader<'_>, i: usize) -> Result<i64, BitsExhausted> {
        let c = &self.code;
        match (i, c.order) {
            (0, _) => self.x = c.first,
            (1, 2) => {
                self.delta = c.first_delta;
                self.x = c.first.wrapping_add(c.first_delta);
            }
            _ => {
                let class = match c.widths.len() {
                    1 => 0,
                    2 => usize::from(r.read_bit()?),
                    _ if !r.read_bit()? => 0,
                    _ => 1 + usize::from(r.read_bit()?),
                };
                let residual = unzigzag(r.read_bits(c.widths[class])?).wrapping_mul(c.divisor);
                if c.order == 1 {
                    self.x = self.x.wrapping_add(residual);
                } else {
                    self.delta = self.delta.wrapping_add(residual);
                    self.x = self.x.wrapping_add(self.delta);
                }
            }
        }
        Ok(self.x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(xs: &[i64]) -> (Vec<i64>, u64) {
        let plan = Plan::new(xs);
        let mut w = BitWriter::new();
        plan.write_header(&mut w);
        for i in 0..xs.len() {
            plan.write_sample(&mut w, i);
        }
        let written = (w.bytes().len() * 8) as u64 - u64::from(w.free_bits());
        assert_eq!(written, plan.bits(), "planned size is the written size");
        let mut r = BitReader::new(w.bytes());
        let mut d = SeqDecoder::read_header(&mut r).unwrap();
        let out = (0..xs.len()).map(|i| d.next(&mut r, i).unwrap()).collect();
        (out, plan.bits())
    }

    #[test]
    fn regular_sequences_cost_no_bits_per_sample() {
        let ts: Vec<i64> = (0..120).map(|i| 1_700_000_000_000 + i * 15_000).collect();
        let (out, bits) = round_trip(&ts);
        assert_eq!(out, ts);
        assert!(bits < 100, "{bits} bits: only the header");
    }

    #[test]
    fn common_divisor_is_factored_out() {
        let pages: Vec<i64> = [3, -1, 7, 0, 2, -5, 64, -64]
            .iter()
            .scan(1i64 << 28, |x, d| {
                *x += d * 4096;
                Some(*x)
            })
            .collect();
        let (out, bits) = round_trip(&pages);
        assert_eq!(out, pages);
        assert!(bits < 8 * 9 + 80, "{bits} bits");
    }

    #[test]
    fn extremes_wrap_and_round_trip() {
        for xs in [
            vec![i64::MIN, i64::MAX, 0, i64::MIN, -1],
            vec![i64::MIN, 0, i64::MIN, 0],
            vec![5],
        ] {
            assert_eq!(round_trip(&xs).0, xs);
        }
    }

    proptest! {
        #[test]
        fn any_sequence_round_trips(xs in proptest::collection::vec(any::<i64>(), 1..200)) {
            prop_assert_eq!(round_trip(&xs).0, xs);
        }

        #[test]
        fn small_steps_round_trip(
            start in any::<i64>(),
            steps in proptest::collection::vec(-1000i64..1000, 1..200),
        ) {
            let xs: Vec<i64> = steps.iter().scan(start, |x, d| { *x = x.wrapping_add(*d); Some(*x) }).collect();
            prop_assert_eq!(round_trip(&xs).0, xs);
        }
    }
}
