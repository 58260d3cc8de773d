//! Uptime over a window, from the control plane's readiness samples.
//!
//! A service is *up* at a moment when at least one of its instances is ready
//! (`max by (service) (kiln_instance_ready)`). The expression is evaluated at evenly spaced
//! moments of the window (every minute over 24 h, every 30 minutes over 30 days), and uptime
//! is the share of those moments at which the service was up. Moments with no sample at all
//! (kiln was not running, or the store does not reach back that far) count neither way; when
//! the first sampled moment comes after the window's start, the figure says so with
//! [`Uptime::since_ms`] instead of pretending to cover the whole window.

use serde::{Deserialize, Serialize};

/// The series whose samples give readiness per service (1 when an instance is ready).
pub const READY_BY_SERVICE: &str = "max by (service) (kiln_instance_ready)";

/// A window uptime is reported over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// `24h`, `30d`.
    pub name: &'static str,
    /// Its length (ms).
    pub length_ms: i64,
    /// The spacing of the sampled moments (ms).
    pub step_ms: i64,
}

/// The windows the overview shows: 1,440 sampled moments each.
pub const WINDOWS: [Window; 2] = [
    Window {
        name: "24h",
        length_ms: 24 * 3_600_000,
        step_ms: 60_000,
    },
    Window {
        name: "30d",
        length_ms: 30 * 24 * 3_600_000,
        step_ms: 30 * 60_000,
    },
];

/// Uptime over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Uptime {
    /// The window's name (`24h`).
    pub window: String,
    /// Share of sampled moments the service was up (0..=1); none without any sample.
    pub ratio: Option<f64>,
    /// When the samples start, if later than the window's start: the figure covers only
    /// the time since then.
    pub since_ms: Option<i64>,
    /// How many moments had a sample.
    pub moments: usize,
}

/// Uptime from the readiness points (`[time ms, 0 or 1]`) of one service over `window`,
/// which ends at `end_ms`.
pub fn uptime(points: &[(i64, f64)], window: &Window, end_ms: i64) -> Uptime {
    let start = end_ms - window.length_ms;
    let inside: Vec<&(i64, f64)> = points
        .iter()
        .filter(|(t, v)| *t >= start && *t <= end_ms && v.is_finite())
        .collect();
    let up = inside.iter().filter(|(_, v)| *v >= 1.0).count();
    let first = inside.first().map(|(t, _)| *t);
    Uptime {
        window: window.name.to_owned(),
        ratio: (!inside.is_empty()).then(|| up as f64 / inside.len() as f64),
        since_ms: first.filter(|t| *t > start + window.step_ms),
        moments: inside.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Window = WINDOWS[0];

    #[test]
    fn a_full_window_of_samples_has_no_since() {
        let end = 100 * DAY.length_ms;
        let points: Vec<(i64, f64)> = (0..=1440)
            .map(|i| (end - DAY.length_ms + i * DAY.step_ms, 1.0))
            .collect();
        let u = uptime(&points, &DAY, end);
        assert_eq!(u.ratio, Some(1.0));
        assert_eq!(u.since_ms, None);
        assert_eq!(u.moments, 1441);
    }

    #[test]
    fn a_short_history_says_since_when() {
        let end = 100 * DAY.length_ms;
        // Ten minutes of samples, down for two of them.
        let points: Vec<(i64, f64)> = (0..10)
            .map(|i| (end - 600_000 + i * 60_000, if i < 2 { 0.0 } else { 1.0 }))
            .collect();
        let u = uptime(&points, &DAY, end);
        assert_eq!(u.ratio, Some(0.8));
        assert_eq!(u.since_ms, Some(end - 600_000));
        assert_eq!(u.window, "24h");
    }

    #[test]
    fn no_samples_is_no_figure_and_points_outside_are_ignored() {
        let end = 100 * DAY.length_ms;
        let u = uptime(&[], &DAY, end);
        assert_eq!((u.ratio, u.since_ms, u.moments), (None, None, 0));
        let old = [
            (end - 2 * DAY.length_ms, 0.0),
            (end, 1.0),
            (end - 1, f64::NAN),
        ];
        let u = uptime(&old, &DAY, end);
        assert_eq!((u.ratio, u.moments), (Some(1.0), 1));
    }
}
