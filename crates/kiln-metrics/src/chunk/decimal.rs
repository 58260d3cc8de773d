//! The decimal chunk encoding, for chunks whose values are all decimals.
//!
//! Most samples are integers (counters, bytes, queue depths) or decimals with a few places
//! (a latency sum rounded to microseconds). XOR-ing their IEEE bits, as Gorilla does, costs
//! 10–50 bits a sample; VictoriaMetrics instead stores such values as integers `m` with one
//! shared exponent, `v = m / 10^k`. This encoding does that when *every* value of the chunk
//! round-trips bit for bit through `m as f64 / 10^k` (so `-0.0`, NaN — the staleness marker
//! included — infinities and values needing more than 22 places or an `m` beyond `i64` leave
//! the chunk in the XOR encoding), then codes the timestamps and the `m`s as two
//! [`packed`](super::packed) integer sequences, interleaved sample by sample.
//!
//! Layout: 5 bits of `k`, the timestamps' sequence header, the values' sequence header, then
//! per sample the timestamp's residual and the value's residual. The sample count is kept
//! outside, as for the XOR encoding.

use super::Sample;
use super::bits::{BitReader, BitWriter, BitsExhausted};
use super::packed::{Plan, SeqDecoder};

/// Most decimal places: 10^22 is the largest power of ten an `f64` holds exactly, so the
/// division that decodes a value is one correctly rounded operation.
const MAX_DECIMALS: usize = 22;

const POW10: [f64; MAX_DECIMALS + 1] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

fn value_of(m: i64, decimals: usize) -> f64 {
    m as f64 / POW10[decimals]
}

/// The integer `m` with `m / 10^decimals == v` bit for bit, if there is one.
fn mantissa(v: f64, decimals: usize) -> Option<i64> {
    let scaled = (v * POW10[decimals]).round();
    // Below 2^63, the cast is exact.
    if !scaled.is_finite() || scaled.abs() >= 9.2e18 {
        return None;
    }
    let m = scaled as i64;
    (value_of(m, decimals).to_bits() == v.to_bits()).then_some(m)
}

/// Encodes samples (non-decreasing timestamps) if every value is a decimal and the result is
/// shorter than `limit` bytes (the size of another encoding of them).
pub fn encode(samples: &[Sample], limit: usize) -> Option<Vec<u8>> {
    let mut decimals = 0;
    for s in samples {
        if mantissa(s.v, decimals).is_none() {
            decimals = (decimals + 1..=MAX_DECIMALS).find(|&k| mantissa(s.v, k).is_some())?;
        }
    }
    // Values seen before `decimals` grew are checked again at the final scale.
    let ms: Vec<i64> = samples
        .iter()
        .map(|s| mantissa(s.v, decimals))
        .collect::<Option<_>>()?;
    let ts: Vec<i64> = samples.iter().map(|s| s.t).collect();
    let (times, values) = (Plan::new(&ts), Plan::new(&ms));
    let bits = 5 + times.bits() + values.bits();
    if bits.div_ceil(8) >= limit as u64 {
        return None;
    }
    let mut w = BitWriter::new();
    w.write_bits(decimals as u64, 5);
    times.write_header(&mut w);
    values.write_header(&mut w);
    for i in 0..samples.len() {
        times.write_sample(&mut w, i);
        values.write_sample(&mut w, i);
    }
    Some(w.into_bytes())
}

/// Decoding iterator over a decimal chunk. Like [`super::ChunkIter`], corrupt or short input
/// ends the iteration early and sets [`DecimalIter::error`].
#[derive(Debug, Clone)]
pub struct DecimalIter<'a> {
    r: BitReader<'a>,
    count: u16,
    read: u16,
    state: Option<(usize, SeqDecoder, SeqDecoder)>,
    /// Set when the stream ended before `count` samples were read.
    pub error: bool,
}

impl<'a> DecimalIter<'a> {
    /// An iterator over `count` samples in `bytes`.
    pub fn new(bytes: &'a [u8], count: u16) -> Self {
        DecimalIter {
            r: BitReader::new(bytes),
            count,
            read: 0,
            state: None,
            error: false,
        }
    }

    fn next_sample(&mut self) -> Result<Sample, BitsExhausted> {
        if self.state.is_none() {
            let decimals = self.r.read_bits(5)? as usize;
            if decimals > MAX_DECIMALS {
                return Err(BitsExhausted);
            }
            let times = SeqDecoder::read_header(&mut self.r)?;
            let values = SeqDecoder::read_header(&mut self.r)?;
            self.state = Some((decimals, times, values));
        }
        let Some((decimals, times, values)) = &mut self.state else {
            return Err(BitsExhausted);
        };
        let i = usize::from(self.read);
        let t = times.next(&mut self.r, i)?;
        let m = values.next(&mut self.r, i)?;
        Ok(Sample {
            t,
            v: value_of(m, *decimals),
        })
    }
}

impl Iterator for DecimalIter<'_> {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        if self.read >= self.count || self.error {
            return None;
        }
        match self.next_sample() {
            Ok(s) => {
                self.read += 1;
                Some(s)
            }
            Err(BitsExhausted) => {
                self.error = true;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(values: &[f64]) -> Vec<Sample> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| Sample {
                t: 1_700_000_000_000 + i as i64 * 15_000,
                v,
            })
            .collect()
    }

    fn bits(s: &[Sample]) -> Vec<(i64, u64)> {
        s.iter().map(|s| (s.t, s.v.to_bits())).collect()
    }

    #[test]
    fn decimals_round_trip_exactly() {
        for values in [
            &[0.0, 0.1, 0.2, 0.30000000000000004, -7.25][..],
            &[12345.678901, -7.25, 0.0],
            &[1e15, 3.0, 0.5, -1e15],
            &[i64::MAX as f64 / 2.0, 1.0],
        ] {
            let s = samples(values);
            let bytes = encode(&s, usize::MAX).unwrap();
            let back: Vec<_> = DecimalIter::new(&bytes, s.len() as u16).collect();
            assert_eq!(bits(&back), bits(&s));
        }
        // 17 places and 1e15 together need an `m` beyond i64: refused, not rounded.
        assert!(encode(&samples(&[0.30000000000000004, 1e15]), usize::MAX).is_none());
    }

    #[test]
    fn non_decimals_are_refused() {
        for v in [
            -0.0,
            f64::NAN,
            f64::from_bits(crate::query::STALE_NAN_BITS),
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
            f64::MIN_POSITIVE,
            std::f64::consts::PI.sqrt() * 1e-10,
        ] {
            assert!(encode(&samples(&[1.0, v]), usize::MAX).is_none(), "{v:e}");
        }
    }

    #[test]
    fn counters_cost_a_few_bits_a_sample() {
        let mut c = 0.0;
        let values: Vec<f64> = (0..120u32)
            .map(|i| {
                c += f64::from(i * 7 % 20);
                c
            })
            .collect();
        let bytes = encode(&samples(&values), usize::MAX).unwrap();
        assert!(bytes.len() < 120 * 6 / 8 + 24, "{} bytes", bytes.len());
    }

    #[test]
    fn truncated_input_stops_with_an_error() {
        let s = samples(&[1.5, 2.25, 3.125, 4.0, 100.5]);
        let bytes = encode(&s, usize::MAX).unwrap();
        for cut in 0..bytes.len() {
            let mut it = DecimalIter::new(&bytes[..cut], s.len() as u16);
            let n = it.by_ref().count();
            assert!(n < s.len() && it.error, "cut at {cut}: {n} samples");
        }
    }
}
