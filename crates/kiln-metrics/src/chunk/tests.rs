//! Codec tests: exact round trips (bit-for-bit, NaN payloads included) and compression ratio.

use super::*;
use proptest::prelude::*;

fn encode(samples: &[(i64, f64)]) -> Vec<Chunk> {
    let mut chunks = vec![Chunk::new()];
    for &(t, v) in samples {
        if chunks.last().is_some_and(|c| c.is_full_for(t)) {
            chunks.push(Chunk::new());
        }
        chunks.last_mut().unwrap().append(t, v);
    }
    chunks
}

fn decode(chunks: &[Chunk]) -> Vec<(i64, u64)> {
    chunks
        .iter()
        .flat_map(|c| c.iter())
        .map(|s| (s.t, s.v.to_bits()))
        .collect()
}

#[test]
fn empty_chunk_iterates_nothing() {
    assert_eq!(Chunk::new().iter().count(), 0);
}

#[test]
fn round_trip_special_values() {
    let vals = [
        0.0,
        -0.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e-300,
        f64::MAX,
        1.5,
    ];
    let samples: Vec<_> = vals
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as i64 * 15_000, v))
        .collect();
    let chunks = encode(&samples);
    let want: Vec<_> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
    assert_eq!(decode(&chunks), want);
}

#[test]
fn chunk_cut_at_120_samples_and_two_hours() {
    let samples: Vec<_> = (0..250).map(|i| (i * 1000, i as f64)).collect();
    let chunks = encode(&samples);
    assert_eq!(
        chunks.iter().map(Chunk::len).collect::<Vec<_>>(),
        [120, 120, 10]
    );
    let sparse: Vec<_> = (0..10).map(|i| (i * 3_600_000, 1.0)).collect();
    assert_eq!(encode(&sparse).len(), 5, "2 h span limit");
}

#[test]
fn from_bytes_rejects_truncation() {
    let c = encode(&[(0, 1.0), (10, 2.0), (25, 3.5)]).remove(0);
    assert_eq!(Chunk::from_bytes(c.bytes(), 3).unwrap(), c);
    assert!(Chunk::from_bytes(&c.bytes()[..c.bytes().len() - 3], 3).is_err());
    assert!(Chunk::from_bytes(&[], 1).is_err());
}

#[test]
fn appending_after_rebuild_continues_the_stream() {
    let mut c = encode(&[(0, 1.0), (10, 2.0)]).remove(0);
    let mut rebuilt = Chunk::from_bytes(c.bytes(), 2).unwrap();
    c.append(30, 7.0);
    rebuilt.append(30, 7.0);
    assert_eq!(c, rebuilt);
}

/// A tiny deterministic generator so the ratio measurement is reproducible.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn bytes_per_sample(series: &[Vec<(i64, f64)>]) -> f64 {
    let mut bytes = 0usize;
    let mut n = 0usize;
    for s in series {
        for c in encode(s) {
            // 2 bytes of count plus the stream, as stored on disk.
            bytes += c.bytes().len() + 2;
        }
        n += s.len();
    }
    bytes as f64 / n as f64
}

#[test]
fn realistic_data_compresses_like_gorilla() {
    let mut rng = 42u64;
    let mut series = Vec::new();
    for k in 0..50 {
        // Counters scraped every 15 s; one scrape in ten is late or early by up to 5 ms (the
        // scrape loop keeps its phase, so most deltas are exact), integer increments.
        let mut counter = Vec::new();
        let mut c = 0.0;
        for i in 0..720i64 {
            let r = xorshift(&mut rng);
            let jitter = if r.is_multiple_of(10) {
                (r / 10 % 11) as i64 - 5
            } else {
                0
            };
            c += (xorshift(&mut rng) % 20) as f64;
            counter.push((i * 15_000 + jitter, c));
        }
        series.push(counter);
        // Gauges: a slowly moving value with two decimals (e.g. memory in MiB, load).
        let mut gauge = Vec::new();
        let mut g = 100.0 + k as f64;
        for i in 0..720i64 {
            if xorshift(&mut rng).is_multiple_of(4) {
                g = ((g + (xorshift(&mut rng) % 200) as f64 / 100.0 - 1.0) * 100.0).round() / 100.0;
            }
            gauge.push((i * 15_000, g));
        }
        series.push(gauge);
    }
    let bps = bytes_per_sample(&series);
    println!("bytes/sample on counters with jitter and gauges: {bps:.3}");
    assert!(bps < 3.0, "compression regressed: {bps}");
    // Regular timestamps and constant values: the best case is well under a byte.
    let constant: Vec<_> = (0..720).map(|i| (i * 15_000, 1.0)).collect();
    assert!(bytes_per_sample(&[constant]) < 0.5);
}

/// Values as they come: mostly decimals (counters, gauges, sums rounded to some places), with
/// NaNs (the staleness marker and other payloads), signed zeros, infinities and raw bit patterns.
fn any_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => (-1_000_000_000i64..1_000_000_000, 0u32..9)
            .prop_map(|(m, k)| m as f64 / 10f64.powi(k as i32)),
        2 => (0u64..1 << 40).prop_map(|m| m as f64),
        1 => Just(f64::from_bits(crate::query::STALE_NAN_BITS)),
        1 => any::<u64>().prop_map(|payload| f64::from_bits(0x7ff8_0000_0000_0000 | payload)),
        1 => prop::sample::select(vec![0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY, f64::MAX]),
        1 => any::<u64>().prop_map(f64::from_bits),
    ]
}

/// A chunk's worth of samples: increasing timestamps, regular or jittered, and values from
/// `values` (a constant, a handful, or a mix).
fn chunk_samples() -> impl Strategy<Value = Vec<(i64, f64)>> {
    let values = prop_oneof![
        proptest::collection::vec(any_value(), 1..121),
        (any_value(), 1usize..121).prop_map(|(v, n)| vec![v; n]),
        proptest::collection::vec(-50i64..50, 1..121).prop_map(|steps| {
            steps
                .iter()
                .scan(1e6, |c, d| {
                    *c += *d as f64 * 0.25;
                    Some(*c)
                })
                .collect()
        }),
    ];
    (
        any::<i32>(),
        values,
        proptest::collection::vec(1i64..20_000, 120),
        any::<bool>(),
    )
        .prop_map(|(start, values, gaps, regular)| {
            let mut t = i64::from(start) * 1000;
            values
                .into_iter()
                .zip(gaps)
                .map(|(v, gap)| {
                    t += if regular { 15_000 } else { gap };
                    (t, v)
                })
                .collect()
        })
}

proptest! {
    #[test]
    fn every_encoding_round_trips_bit_exactly(samples in chunk_samples()) {
        let mut chunk = Chunk::new();
        for &(t, v) in &samples {
            chunk.append(t, v);
        }
        let want: Vec<_> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        let count = samples.len() as u16;
        let as_bits = |s: Vec<Sample>| s.iter().map(|s| (s.t, s.v.to_bits())).collect::<Vec<_>>();
        prop_assert_eq!(as_bits(ChunkIter::new(chunk.bytes(), count).collect()), want.clone());
        let as_samples: Vec<Sample> = chunk.samples();
        if let Some(bytes) = decimal::encode(&as_samples, usize::MAX) {
            prop_assert_eq!(as_bits(DecimalIter::new(&bytes, count).collect()), want.clone());
            prop_assert_eq!(&Chunk::from_encoded(Encoding::Decimal, &bytes, count).unwrap(), &chunk);
        } else {
            // Refused only for a value that is not a decimal.
            let small_integer = |v: f64| v.fract() == 0.0 && v.abs() < 9e18 && v.to_bits() != (-0.0f64).to_bits();
            prop_assert!(samples.iter().any(|&(_, v)| !small_integer(v)));
        }
        let (encoding, bytes) = chunk.compact();
        prop_assert!(bytes.len() <= chunk.bytes().len());
        let rebuilt = Chunk::from_encoded(encoding, &bytes, count).unwrap();
        prop_assert_eq!(as_bits(rebuilt.samples()), want);
        prop_assert_eq!(rebuilt, chunk);
    }

    #[test]
    fn decoding_garbage_in_any_encoding_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        n in 0u16..200,
        tag in 0u8..3,
    ) {
        if let Some(encoding) = Encoding::from_tag(tag) {
            let _ = Chunk::from_encoded(encoding, &bytes, n);
        }
        let _ = DecimalIter::new(&bytes, n).count();
    }

    #[test]
    fn round_trip_any_values(
        start in -1_000_000_000_000i64..1_000_000_000_000,
        steps in proptest::collection::vec((0i64..100_000_000, any::<u64>()), 1..400),
    ) {
        let mut t = start;
        let mut samples = Vec::new();
        for (dt, bits) in steps {
            t += dt;
            samples.push((t, f64::from_bits(bits)));
        }
        let chunks = encode(&samples);
        let want: Vec<_> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        prop_assert_eq!(decode(&chunks), want);
        for c in &chunks {
            prop_assert_eq!(&Chunk::from_bytes(c.bytes(), c.len() as u16).unwrap(), c);
        }
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), n in 0u16..200) {
        let _ = ChunkIter::new(&bytes, n).count();
        let _ = Chunk::from_bytes(&bytes, n);
    }
}

#[test]
fn decimal_values_get_the_decimal_encoding_and_the_stale_marker_keeps_xor() {
    let mut sums = Chunk::new();
    let mut stale = Chunk::new();
    let mut sum = 0.0f64;
    for i in 0..120i64 {
        sum = ((sum + 0.012_345 * (i % 7) as f64) * 1e6).round() / 1e6;
        sums.append(i * 15_000, sum);
        stale.append(
            i * 15_000,
            if i == 119 {
                f64::from_bits(crate::query::STALE_NAN_BITS)
            } else {
                sum
            },
        );
    }
    let (encoding, bytes) = sums.compact();
    assert_eq!(encoding, Encoding::Decimal);
    assert!(
        bytes.len() * 2 < sums.bytes().len(),
        "{} vs {} bytes",
        bytes.len(),
        sums.bytes().len()
    );
    let (encoding, bytes) = stale.compact();
    assert_eq!(encoding, Encoding::Xor);
    let back = Chunk::from_encoded(encoding, &bytes, 120).unwrap();
    assert_eq!(
        back.samples().last().map(|s| s.v.to_bits()),
        Some(crate::query::STALE_NAN_BITS)
    );
}

#[test]
fn unknown_tags_and_backward_timestamps_are_refused() {
    assert_eq!(Encoding::from_tag(2), None);
    for e in [Encoding::Xor, Encoding::Decimal] {
        assert_eq!(Encoding::from_tag(e.tag()), Some(e));
    }
    // A decimal stream can describe time going back; a chunk must not accept it.
    let backwards = [Sample { t: 2000, v: 1.0 }, Sample { t: 1000, v: 2.0 }];
    let bytes = decimal::encode(&backwards, usize::MAX).unwrap();
    assert_eq!(DecimalIter::new(&bytes, 2).count(), 2);
    assert!(Chunk::from_encoded(Encoding::Decimal, &bytes, 2).is_err());
}

#[test]
fn a_chunk_stays_small() {
    // Every head series holds one, and every persisted chunk in memory: 56 bytes and the
    // allocator's header fill a 64-byte block (it was 72, an 80-byte block).
    assert!(std::mem::size_of::<Chunk>() <= 56);
}

#[test]
fn the_first_timestamp_is_read_back_from_the_stream() {
    let mut c = Chunk::new();
    assert_eq!(c.min_t(), 0);
    for t in [-5_000, 1_000, 7_000] {
        let mut c = Chunk::new();
        c.append(t, 1.5);
        c.append(t + 15_000, 2.5);
        assert_eq!((c.min_t(), c.max_t()), (t, t + 15_000));
    }
    // The span limit counts from the first sample.
    c.append(1_000, 0.0);
    assert!(!c.is_full_for(1_000 + MAX_SPAN_MS - 1));
    assert!(c.is_full_for(1_000 + MAX_SPAN_MS));
}
