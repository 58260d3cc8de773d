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

proptest! {
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
