//! `environments:` as values: the ordered environments a stack's services are instantiated in,
//! each one's promotion rule (`promote:`), and the two calendars a promotion obeys: deploy
//! freezes (RFC 3339 intervals) and deploy windows (`Mon-Fri 08:00-18:00 UTC`).
//!
//! Compiling them from YAML is `compile/environments.rs`; evaluating the gates is
//! `kiln_delivery::gates`. Times are milliseconds since the Unix epoch, passed in: nothing here
//! reads a clock.

use crate::model::ScopeId;
use crate::source::Span;

/// One environment, e.g. `staging` or `production`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    /// Its name under `environments:`.
    pub name: String,
    /// The scope holding its instances (prefix `environments.NAME.`).
    pub scope: ScopeId,
    /// `deploy: { auto: true }`: a new release deploys here by itself (the first environment).
    pub auto_deploy: bool,
    /// `promote:`: how releases reach this environment (absent: it builds its own, which only
    /// the first environment may do).
    pub promote: Option<Promotion>,
    /// Where the environment is declared (its key).
    pub span: Span,
}

impl Environment {
    /// The address prefix of everything instantiated in it.
    pub fn prefix(&self) -> String {
        format!("environments.{}.", self.name)
    }
}

/// `promote:` of an environment: the gates a release passes to move here from `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    /// The environment releases come from (declared earlier).
    pub from: String,
    /// How long the release must have served in `from`, every instance ready, no alert firing.
    pub soak_ms: u64,
    /// A recorded `kiln approve` for the release is required.
    pub approval: bool,
    /// A workflow whose successful run must have produced (or tested) the release.
    pub pipeline: Option<String>,
    /// Intervals in which nothing is promoted.
    pub freezes: Vec<Freeze>,
    /// When given, promotions happen only inside one of them.
    pub windows: Vec<Window>,
    /// The control plane promotes by itself once every gate passes.
    pub auto: bool,
    /// Where `promote:` is written.
    pub span: Span,
}

/// A deploy freeze: `[from_ms, to_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freeze {
    /// Start, inclusive.
    pub from_ms: i64,
    /// End, exclusive.
    pub to_ms: i64,
}

impl Freeze {
    /// True when `now_ms` falls inside the freeze.
    pub fn contains(&self, now_ms: i64) -> bool {
        (self.from_ms..self.to_ms).contains(&now_ms)
    }
}

/// A weekly deploy window in UTC, e.g. `Mon-Fri 08:00-18:00 UTC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Which days it opens, Monday first.
    pub days: [bool; 7],
    /// Opening minute of the day, inclusive.
    pub start_minute: u16,
    /// Closing minute of the day, exclusive (greater than `start_minute`).
    pub end_minute: u16,
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;

impl Window {
    /// True when `now_ms` (Unix milliseconds) falls inside the window.
    pub fn contains(&self, now_ms: i64) -> bool {
        let days = now_ms.div_euclid(DAY_MS);
        // 1970-01-01 was a Thursday (index 3, Monday first).
        let weekday = usize::try_from((days + 3).rem_euclid(7)).unwrap_or(0);
        let minute = now_ms.rem_euclid(DAY_MS) / MINUTE_MS;
        self.days[weekday]
            && (i64::from(self.start_minute)..i64::from(self.end_minute)).contains(&minute)
    }
}

/// Parses `Mon-Fri 08:00-18:00 UTC` (days: a name, a range `Mon-Fri`, a list `Mon,Wed`, or
/// `*`; the zone must be UTC and may be left out). A window that crosses midnight is refused:
/// write it as two windows.
pub fn parse_window(text: &str) -> Result<Window, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let (days, hours) = match words.as_slice() {
        [days, hours] | [days, hours, "UTC" | "utc" | "Z"] => (*days, *hours),
        [_, _, zone] => {
            return Err(format!(
                "`{zone}`: windows are in UTC; convert the hours and write `UTC`"
            ));
        }
        _ => return Err("expected `DAYS HH:MM-HH:MM UTC`, like `Mon-Fri 08:00-18:00 UTC`".into()),
    };
    let days = parse_days(days)?;
    let (start, end) = hours
        .split_once('-')
        .ok_or_else(|| format!("`{hours}` is not a time range like `08:00-18:00`"))?;
    let start_minute = parse_clock(start)?;
    let end_minute = parse_clock(end)?;
    if end_minute <= start_minute {
        return Err(format!(
            "`{hours}` ends before it starts; a window that crosses midnight is two windows (`{start}-24:00` and `00:00-{end}`)"
        ));
    }
    Ok(Window {
        days,
        start_minute,
        end_minute,
    })
}

fn parse_days(text: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    if text == "*" {
        return Ok([true; 7]);
    }
    for part in text.split(',') {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let (first, last) = (day_index(first)?, day_index(last)?);
        if last < first {
            return Err(format!(
                "`{part}` runs backwards; weeks start on Monday (write `{}-Sun,Mon-{}`)",
                DAY_NAMES[first], DAY_NAMES[last]
            ));
        }
        days[first..=last].iter_mut().for_each(|d| *d = true);
    }
    Ok(days)
}

fn day_index(name: &str) -> Result<usize, String> {
    const FULL: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let lower = name.to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .zip(FULL)
        .position(|(short, full)| lower == *short || lower == full)
        .ok_or_else(|| format!("`{name}` is not a day; use Mon, Tue, Wed, Thu, Fri, Sat, Sun"))
}

fn parse_clock(text: &str) -> Result<u16, String> {
    let bad = || format!("`{text}` is not a time of day like `08:00`");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) || text.len() != 5 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-23 was a Monday.
    const MONDAY_MIDNIGHT_MS: i64 = 1_795_392_000_000;
    const HOUR_MS: i64 = 60 * MINUTE_MS;

    #[test]
    fn office_hours_open_on_weekdays_only() {
        let w = parse_window("Mon-Fri 08:00-18:00 UTC").unwrap_or_else(|e| panic!("{e}"));
        assert!(!w.contains(MONDAY_MIDNIGHT_MS + 7 * HOUR_MS + 59 * MINUTE_MS));
        assert!(w.contains(MONDAY_MIDNIGHT_MS + 8 * HOUR_MS));
        assert!(w.contains(MONDAY_MIDNIGHT_MS + 4 * DAY_MS + 17 * HOUR_MS + 59 * MINUTE_MS));
        assert!(!w.contains(MONDAY_MIDNIGHT_MS + 4 * DAY_MS + 18 * HOUR_MS));
        assert!(!w.contains(MONDAY_MIDNIGHT_MS + 5 * DAY_MS + 12 * HOUR_MS));
    }

    #[test]
    fn lists_full_names_and_every_day_are_understood() {
        let w = parse_window("Monday,Wed 00:00-24:00").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.days, [true, false, true, false, false, false, false]);
        assert_eq!(w.end_minute, 1440);
        let all = parse_window("* 10:00-11:00 UTC").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all.days, [true; 7]);
    }

    #[test]
    fn mistakes_say_what_is_wrong() {
        let err = |t: &str| parse_window(t).err().unwrap_or_default();
        assert!(err("Mon-Fri 18:00-08:00 UTC").contains("crosses midnight"));
        assert!(err("Mon-Fri 08:00-18:00 CET").contains("UTC"));
        assert!(err("Fri-Mon 08:00-18:00").contains("backwards"));
        assert!(err("Mox 08:00-18:00").contains("not a day"));
        assert!(err("Mon 8:00-18:00").contains("time of day"));
        assert!(err("Mon 08:60-18:00").contains("time of day"));
        assert!(err("weekdays").contains("expected"));
    }

    #[test]
    fn freezes_are_half_open() {
        let f = Freeze {
            from_ms: 10,
            to_ms: 20,
        };
        assert!(!f.contains(9) && f.contains(10) && f.contains(19) && !f.contains(20));
    }

    proptest::proptest! {
        #[test]
        fn window_parsing_never_panics(text in "\\PC{0,40}") {
            let _ = parse_window(&text);
        }

        #[test]
        fn a_valid_window_contains_exactly_its_minutes(
            start in 0u16..1439, len in 1u16..600, day in 0usize..7, minute in 0i64..1440,
        ) {
            let end = (start + len).min(1440);
            let text = format!("{} {:02}:{:02}-{:02}:{:02} UTC",
                DAY_NAMES[day], start / 60, start % 60, end / 60, end % 60);
            let w = parse_window(&text).map_err(proptest::test_runner::TestCaseError::fail)?;
            let at = MONDAY_MIDNIGHT_MS + i64::try_from(day).unwrap_or(0) * DAY_MS + minute * MINUTE_MS;
            let inside = (i64::from(start)..i64::from(end)).contains(&minute);
            proptest::prop_assert_eq!(w.contains(at), inside);
        }
    }
}
