//! Property tests for the evaluator's per-query shortcuts: a range query (one evaluator for
//! every step, with labels derived once per series, windows found by cursors moving forward,
//! groups and matches found by identity) must equal the same expression evaluated as a fresh
//! instant query at each step, on random series.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::eval::{STALE_NAN_BITS, seek};
use super::tests::MemSource;
use super::{Engine, QueryError, Value};
use crate::chunk::Sample;
use crate::labels::Labels;
use crate::store::Series;

/// Dashboard-like queries plus the operators that derive labels: binary matching with
/// `on`/`ignoring`/`group_left`, set operators, `without`, unary minus, name-dropping functions.
const QUERIES: [&str; 18] = [
    "sum by (route) (rate(req_total[1m]))",
    r#"sum(rate(req_total{code="500"}[1m])) / sum(rate(req_total[1m]))"#,
    "histogram_quantile(0.9, sum by (le, route) (rate(lat_bucket[1m])))",
    "histogram_quantile(0.5, rate(lat_bucket[2m]))",
    "sum by (instance) (mem)",
    "topk(2, sum by (route) (rate(req_total[1m])))",
    "sum without (code) (increase(req_total[90s]))",
    "avg by (job) (mem) - on (job) group_left max by (job) (mem)",
    "rate(req_total[1m]) / ignoring (code) group_left sum without (code) (rate(req_total[1m]))",
    "mem > bool 50",
    "-mem",
    "abs(mem - 40)",
    "req_total and on (route) mem",
    "req_total unless on (instance) mem",
    "mem or req_total",
    "count by (route) (req_total)",
    "max_over_time(mem[45s]) * 2",
    "irate(req_total[30s])",
];

fn label_set() -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
    let metric = prop_oneof![Just("req_total"), Just("mem"), Just("lat_bucket")];
    (
        metric,
        prop::sample::select(vec!["a", "b"]),
        prop::sample::select(vec!["x", "y", "z"]),
        prop::sample::select(vec!["/r0", "/r1"]),
        prop::sample::select(vec!["200", "500"]),
        prop::sample::select(vec!["0.1", "1", "+Inf"]),
    )
        .prop_map(|(metric, job, instance, route, code, le)| {
            let mut l = vec![
                ("__name__", metric),
                ("job", job),
                ("instance", instance),
                ("route", route),
            ];
            match metric {
                "req_total" => l.push(("code", code)),
                "lat_bucket" => l.push(("le", le)),
                _ => {}
            }
            l
        })
}

/// Samples at irregular times within 0..=400 s: counters that sometimes reset, gauges, and
/// now and then a staleness marker.
fn samples() -> impl Strategy<Value = Vec<Sample>> {
    prop::collection::vec((1i64..30, 0u8..20, 0.0f64..100.0), 1..40).prop_map(|steps| {
        let mut t = 0;
        let mut v = 0.0;
        let mut out = Vec::new();
        for (dt, kind, x) in steps {
            t += dt * 1000;
            if t > 400_000 {
                break;
            }
            v = match kind {
                0 => f64::from_bits(STALE_NAN_BITS),
                1 => x,
                _ if v.is_nan() => x,
                _ => v + x,
            };
            out.push(Sample { t, v });
        }
        out
    })
}

fn source() -> impl Strategy<Value = MemSource> {
    prop::collection::vec((label_set(), samples()), 1..12).prop_map(|series| {
        // One series per label set, like a store.
        let mut by_labels: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();
        for (labels, samples) in series {
            by_labels.insert(Labels::new(labels), samples);
        }
        MemSource(
            by_labels
                .into_iter()
                .map(|(labels, samples)| Series { labels, samples })
                .collect(),
        )
    })
}

/// Values compared bit for bit, so NaN results compare equal to themselves.
type Points = BTreeMap<Labels, Vec<(i64, u64)>>;

fn range_points(v: &Value) -> Points {
    let Value::Matrix(m) = v else {
        return Points::new();
    };
    m.iter()
        .map(|s| {
            let pts = s.samples.iter().map(|x| (x.t, x.v.to_bits())).collect();
            (s.labels.clone(), pts)
        })
        .collect()
}

fn stepwise(
    engine: &Engine<'_, MemSource>,
    q: &str,
    start: i64,
    end: i64,
    step: i64,
) -> Result<Points, QueryError> {
    let mut out = Points::new();
    let mut t = start;
    while t <= end {
        match engine.query(q, t)? {
            Value::Vector(els) => {
                for e in els {
                    out.entry(e.labels).or_default().push((t, e.v.to_bits()));
                }
            }
            Value::Scalar { v, .. } => {
                out.entry(Labels::default())
                    .or_default()
                    .push((t, v.to_bits()));
            }
            other => panic!("{q}: unexpected {}", other.result_type()),
        }
        t += step;
    }
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_range_query_equals_instant_queries_at_its_steps(
        src in source(),
        query in prop::sample::select(QUERIES.to_vec()),
        start in 0i64..300,
        steps in 0i64..25,
        step in prop::sample::select(vec![1i64, 7, 15, 60]),
    ) {
        let engine = Engine::new(&src);
        let (start, step) = (start * 1000, step * 1000);
        let end = start + steps * step;
        let expected = stepwise(&engine, query, start, end, step);
        match engine.query_range(query, start, end, step) {
            Ok(got) => {
                let expected = expected
                    .map_err(|e| TestCaseError::fail(format!("steps fail, range does not: {e}")))?;
                prop_assert_eq!(range_points(&got), expected, "{}", query);
            }
            // The range query fails at its first failing step; so must some instant query.
            Err(e) => prop_assert!(expected.is_err(), "{}: range fails alone: {}", query, e),
        }
    }

    #[test]
    fn seek_finds_the_partition_point(
        mut times in prop::collection::vec(0i64..1000, 0..200),
        threshold in 0i64..1000,
        from_fraction in 0.0f64..=1.0,
    ) {
        times.sort_unstable();
        let s: Vec<Sample> = times.iter().map(|&t| Sample { t, v: 0.0 }).collect();
        let want = s.partition_point(|x| x.t < threshold);
        // Any start at or before the answer is allowed.
        let from = (want as f64 * from_fraction) as usize;
        prop_assert_eq!(seek(&s, from, |x| x.t < threshold), want);
    }
}
