//! Which segments to merge next: a pure function of their time spans and sizes.
//!
//! Each segment keeps its series' labels, postings and chunk locations in memory, so memory
//! grows with the number of segments times the series in each: a long retention must end up
//! in few segments. Like Prometheus's block compaction, segments are merged by aligned time
//! windows of growing length: 2 h, then three times the previous, up to a tenth of the
//! retention (6 h, 18 h, 54 h, …; 15 days' retention ends at 18 h windows, about 25
//! segments). A window's segments are merged once a newer segment lies past the window, so
//! each sample is rewritten once per level. Until then, the segments of the current 2 h
//! window are merged while they are small, so a window written every few minutes does not
//! hold dozens of them.
//!
//! A segment belongs to the window its oldest sample falls in; its newest may lie a little
//! past the window's end (a persist does not cut at window boundaries), which the next level
//! absorbs.

use std::ops::Range;
use std::time::Duration;

/// What the planner knows of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Oldest sample time, in milliseconds.
    pub min_t: i64,
    /// Size of its file in bytes.
    pub bytes: u64,
}

/// The shortest window: segments written within it are merged into one.
pub const BASE_WINDOW_MS: i64 = 2 * 3600 * 1000;

/// The window lengths for `retention`, shortest first: 2 h, then ×3 while at most a tenth of
/// the retention.
pub fn windows(retention: Duration) -> Vec<i64> {
    let longest = i64::try_from(retention.as_millis() / 10).unwrap_or(i64::MAX);
    let mut out = vec![BASE_WINDOW_MS];
    while let Some(next) = out.last().and_then(|w| w.checked_mul(3)) {
        if next > longest {
            break;
        }
        out.push(next);
    }
    out
}

/// The next run of adjacent segments (oldest first, as the store lists them) to merge into
/// one, if any: first a finished window, the longest first (merging its segments at once
/// saves rewriting them at each shorter level), then small segments of one base window.
pub fn next_run(segs: &[Span], windows: &[i64], small_below: u64) -> Option<Range<usize>> {
    for &window in windows.iter().rev() {
        let key = |s: &Span| s.min_t.div_euclid(window);
        let mut start = 0;
        while start < segs.len() {
            let end = run_end(segs, start, |s| key(s) == key(&segs[start]));
            // Finished: a segment after the run lies in a later window.
            let finished = segs
                .get(end)
                .is_some_and(|next| key(next) > key(&segs[start]));
            if finished && end - start >= 2 {
                return Some(start..end);
            }
            start = end;
        }
    }
    let base = windows.first().copied().unwrap_or(BASE_WINDOW_MS);
    let key = |s: &Span| s.min_t.div_euclid(base);
    let small = |s: &Span| s.bytes < small_below;
    let mut start = 0;
    while start < segs.len() {
        if !small(&segs[start]) {
            start += 1;
            continue;
        }
        let end = run_end(segs, start, |s| small(s) && key(s) == key(&segs[start]));
        if end - start >= 2 {
            return Some(start..end);
        }
        start = end;
    }
    None
}

/// The end (exclusive) of the run from `start` whose segments all satisfy `same`.
fn run_end(segs: &[Span], start: usize, same: impl Fn(&Span) -> bool) -> usize {
    start + 1 + segs[start + 1..].iter().take_while(|s| same(s)).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: i64 = 3600 * 1000;
    const MIB: u64 = 1 << 20;

    fn span(hours: f64, mib: u64) -> Span {
        Span {
            min_t: (hours * H as f64) as i64,
            bytes: mib * MIB,
        }
    }

    /// Applies the planner until it has nothing left, as the store does; returns the merged
    /// spans and how many merges it took.
    fn settle(mut segs: Vec<Span>, windows: &[i64], small_below: u64) -> (Vec<Span>, usize) {
        let mut merges = 0;
        while let Some(run) = next_run(&segs, windows, small_below) {
            assert!(run.len() >= 2 && run.end <= segs.len(), "{run:?}");
            let merged = Span {
                min_t: segs[run.start].min_t,
                bytes: segs[run.clone()].iter().map(|s| s.bytes).sum(),
            };
            segs.splice(run, [merged]);
            merges += 1;
            assert!(merges <= 10_000, "the planner does not settle");
        }
        (segs, merges)
    }

    #[test]
    fn windows_grow_threefold_up_to_a_tenth_of_the_retention() {
        let day = 24 * H;
        assert_eq!(
            windows(Duration::from_secs(15 * 24 * 3600)),
            [2 * H, 6 * H, 18 * H]
        );
        assert_eq!(windows(Duration::from_secs(3600)), [2 * H]);
        assert_eq!(
            windows(Duration::from_secs(90 * 24 * 3600)),
            [2 * H, 6 * H, 18 * H, 54 * H, 162 * H]
        );
        assert!(windows(Duration::MAX).len() < 40);
        assert!(windows(Duration::from_secs(15 * 24 * 3600)).last() < Some(&(2 * day)));
    }

    #[test]
    fn a_window_is_merged_once_a_later_segment_exists() {
        let w = windows(Duration::from_secs(15 * 24 * 3600));
        // Three big segments in the first 2 h: nothing newer yet, so nothing to merge.
        let segs = vec![span(0.0, 20), span(0.5, 20), span(1.0, 20)];
        assert_eq!(next_run(&segs, &w, 16 * MIB), None);
        let mut later = segs.clone();
        later.push(span(2.1, 1));
        assert_eq!(next_run(&later, &w, 16 * MIB), Some(0..3));
    }

    #[test]
    fn small_segments_of_the_current_window_are_merged_at_once() {
        let w = windows(Duration::from_secs(15 * 24 * 3600));
        let segs = vec![span(0.0, 20), span(0.5, 1), span(1.0, 1), span(1.5, 1)];
        assert_eq!(next_run(&segs, &w, 16 * MIB), Some(1..4));
        // Not across a window's boundary.
        let segs = vec![span(1.5, 1), span(2.5, 1)];
        assert_eq!(next_run(&segs, &w, 16 * MIB), None);
    }

    #[test]
    fn the_longest_finished_window_goes_first() {
        let w = windows(Duration::from_secs(15 * 24 * 3600));
        let segs: Vec<Span> = (0..7).map(|i| span(f64::from(i), 20)).collect();
        // 0–6 h is finished (a segment at 6 h exists): merged whole, not in 2 h pieces.
        assert_eq!(next_run(&segs, &w, 16 * MIB), Some(0..6));
    }

    #[test]
    fn fifteen_days_of_five_minute_persists_end_in_few_segments() {
        let retention = Duration::from_secs(15 * 24 * 3600);
        let w = windows(retention);
        let mut segs = Vec::new();
        let mut merges = 0;
        // A persist every 5 minutes, 2 MiB each, compaction after every persist.
        for i in 0..15 * 24 * 12 {
            segs.push(span(f64::from(i) / 12.0, 2));
            let (settled, n) = settle(segs, &w, 16 * MIB);
            segs = settled;
            merges += n;
        }
        assert!(segs.len() <= 30, "{} segments", segs.len());
        assert!(segs.windows(2).all(|p| p[0].min_t < p[1].min_t));
        // Each sample is rewritten a handful of times, not once per persist.
        let persists = 15 * 24 * 12;
        assert!(merges < persists, "{merges} merges for {persists} persists");
    }

    proptest! {
        #[test]
        fn runs_are_adjacent_and_settle(
            gaps in prop::collection::vec((0i64..(30 * H), 0u64..(40 * MIB)), 0..60),
            retention_days in 0u64..120,
            small_below in 0u64..(32 * MIB),
        ) {
            let w = windows(Duration::from_secs(retention_days * 24 * 3600));
            let mut t = 0;
            let segs: Vec<Span> = gaps
                .iter()
                .map(|&(gap, bytes)| {
                    t += gap;
                    Span { min_t: t, bytes }
                })
                .collect();
            let (settled, merges) = settle(segs.clone(), &w, small_below);
            // Each merge leaves at least one segment fewer.
            prop_assert!(settled.len() + merges <= segs.len());
            // Settled: no finished window of the longest length holds two segments.
            let longest = *w.last().unwrap();
            for pair in settled.windows(3) {
                let finished = pair[2].min_t.div_euclid(longest) > pair[1].min_t.div_euclid(longest);
                prop_assert!(
                    !(finished && pair[0].min_t.div_euclid(longest) == pair[1].min_t.div_euclid(longest)),
                    "{:?}", settled
                );
            }
        }
    }
}
