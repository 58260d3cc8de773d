//! The four DORA metrics from kiln's own deploy records, each with its performance level.
//!
//! Definitions (over the deploys that started inside the window, per service or all):
//!
//! - **Deployment frequency**: changes deployed successfully per day. A change is a deploy not
//!   triggered as a rollback (`rollback`, `auto-rollback`).
//! - **Lead time for changes**: the median time from the release's commit (its committer date,
//!   recorded with the release) to the deploy's finish, when the new release serves.
//! - **Change failure rate**: the share of changes that failed: the deploy itself failed or was
//!   rolled back automatically, or the service's next deploy was a rollback, or an incident
//!   for the service was detected within [`INCIDENT_WINDOW_SECONDS`] after the deploy finished
//!   (and before the service's next deploy started: the newest change takes the blame).
//! - **Failed deployment recovery time**: the median time from a failed change to the service
//!   serving a good release again: the failed deploy's start to its own finish when kiln rolled
//!   it back automatically (the old release kept serving meanwhile), or the bad deploy's finish
//!   to the rollback's finish, or, for a change failed by an incident, the deploy's finish to
//!   the incident's mitigation (an incident not mitigated yet gives no figure).
//!
//! Medians, not means: one long outage should not hide what usually happens.
//!
//! Performance levels follow the 2024 Accelerate State of DevOps report (DORA), whose four
//! clusters are: **elite** — on-demand deploys (several a day), lead time under a day, 5 %
//! change failure rate, recovery under an hour; **high** — between daily and weekly, between a
//! day and a week, 20 %, under a day; **medium** — between weekly and monthly, between a week
//! and a month, 10 %, under a day; **low** — between monthly and every six months, between a
//! month and six months, 40 %, between a week and a month. Each metric is graded alone here:
//!
//! | level  | deploys       | lead time | failure rate | recovery |
//! |--------|---------------|-----------|--------------|----------|
//! | elite  | ≥ 1 a day     | < 1 day   | ≤ 5 %        | < 1 hour |
//! | high   | ≥ 1 a week    | < 1 week  | ≤ 20 %       | < 1 day  |
//! | medium | ≥ 1 a month   | < 1 month | < 40 %       | < 1 week |
//! | low    | less          | longer    | ≥ 40 %       | longer   |
//!
//! The report's medium cluster failed less often (10 %) than its high one (20 %); graded alone,
//! a rate up to 20 % is `high`, and `medium` covers the rest below the low cluster's 40 %.
//! Recovery: the report gives both high and medium "under a day"; kiln keeps `medium` up to a
//! week (the low cluster's lower bound).

use serde::Serialize;

const HOUR: i64 = 3_600;
const DAY: i64 = 24 * HOUR;
const WEEK: i64 = 7 * DAY;
const MONTH: i64 = 30 * DAY;

/// How long after a deploy an incident of its service still counts against it: 24 hours.
pub const INCIDENT_WINDOW_SECONDS: i64 = DAY;

/// One recorded incident, as far as DORA is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentFact {
    /// The service's address (as in [`DeployFact::service`]).
    pub service: String,
    /// When its first alert fired.
    pub detected_at: jiff::Timestamp,
    /// When every alert had resolved (or someone said it was mitigated); `None`: not yet.
    pub mitigated_at: Option<jiff::Timestamp>,
}

/// How a recorded deploy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployResult {
    /// The new release serves.
    Succeeded,
    /// It did not become ready; the previous release kept serving.
    Failed,
    /// It was rolled back automatically (health, canary analysis).
    RolledBack,
}

/// One recorded deploy, as far as DORA is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployFact {
    /// The service's address.
    pub service: String,
    /// What asked for it: `apply`, `deploy`, `push`, `rollback`, ...
    pub trigger: String,
    /// How it ended.
    pub result: DeployResult,
    /// When it started.
    pub started_at: jiff::Timestamp,
    /// When it finished.
    pub finished_at: jiff::Timestamp,
    /// When the deployed release's commit was made, when known.
    pub committed_at: Option<jiff::Timestamp>,
}

impl DeployFact {
    fn is_rollback(&self) -> bool {
        matches!(self.trigger.as_str(), "rollback" | "auto-rollback")
    }
}

/// A DORA performance level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The best cluster.
    Elite,
    /// The second.
    High,
    /// The third.
    Medium,
    /// The last.
    Low,
}

impl Level {
    /// `elite`, `high`, `medium`, `low`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Elite => "elite",
            Level::High => "high",
            Level::Medium => "medium",
            Level::Low => "low",
        }
    }
}

/// The four figures; `None` where the records hold nothing to measure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Length of the window, in seconds.
    pub window_seconds: i64,
    /// Changes deployed successfully in the window.
    pub deployments: usize,
    /// Changes attempted (successful or not) in the window.
    pub changes: usize,
    /// Changes that failed.
    pub failed_changes: usize,
    /// Successful changes per day.
    pub deployments_per_day: f64,
    /// Level of the deployment frequency (none without any deploy).
    pub deployment_frequency_level: Option<Level>,
    /// Median lead time for changes, in seconds.
    pub lead_time_seconds: Option<i64>,
    /// Its level.
    pub lead_time_level: Option<Level>,
    /// Failed changes over changes, 0..=1.
    pub change_failure_rate: Option<f64>,
    /// Its level.
    pub change_failure_level: Option<Level>,
    /// Median failed-deployment recovery time, in seconds.
    pub recovery_seconds: Option<i64>,
    /// Its level.
    pub recovery_level: Option<Level>,
}

/// Computes the metrics for the deploys that started in `[since, now]`. `deploys` may hold the
/// whole history in any order: a change just before `now` whose rollback came later is judged
/// by what followed it.
pub fn compute(deploys: &[DeployFact], since: jiff::Timestamp, now: jiff::Timestamp) -> Report {
    compute_with_incidents(deploys, &[], since, now)
}

/// [`compute`], with incidents counting against the change they followed (see the module's
/// definitions).
pub fn compute_with_incidents(
    deploys: &[DeployFact],
    incidents: &[IncidentFact],
    since: jiff::Timestamp,
    now: jiff::Timestamp,
) -> Report {
    let mut ordered: Vec<&DeployFact> = deploys.iter().collect();
    ordered.sort_by_key(|d| (d.started_at, d.finished_at));
    let in_window = |d: &DeployFact| d.started_at >= since && d.started_at <= now;
    let mut changes = 0;
    let mut deployments = 0;
    let mut failed = 0;
    let mut lead_times = Vec::new();
    let mut recoveries = Vec::new();
    for (i, deploy) in ordered.iter().enumerate() {
        if deploy.is_rollback() || !in_window(deploy) {
            continue;
        }
        changes += 1;
        let next = ordered[i + 1..]
            .iter()
            .find(|d| d.service == deploy.service);
        let rollback = next.filter(|next| next.is_rollback());
        match (deploy.result, rollback) {
            (DeployResult::Succeeded, None) => {
                deployments += 1;
                if let Some(committed) = deploy.committed_at {
                    lead_times.push(seconds(committed, deploy.finished_at));
                }
                if let Some(incident) = incident_after(deploy, next.copied(), incidents) {
                    failed += 1;
                    if let Some(mitigated) = incident.mitigated_at {
                        recoveries.push(seconds(deploy.finished_at, mitigated));
                    }
                }
            }
            (DeployResult::Succeeded, Some(rollback)) => {
                deployments += 1;
                failed += 1;
                if let Some(committed) = deploy.committed_at {
                    lead_times.push(seconds(committed, deploy.finished_at));
                }
                recoveries.push(seconds(deploy.finished_at, rollback.finished_at));
            }
            (DeployResult::Failed | DeployResult::RolledBack, _) => {
                failed += 1;
                recoveries.push(seconds(deploy.started_at, deploy.finished_at));
            }
        }
    }
    let window_seconds = (now.as_second() - since.as_second()).max(1);
    let per_day = deployments as f64 * DAY as f64 / window_seconds as f64;
    let lead_time = median(&mut lead_times);
    let rate = (changes > 0).then(|| failed as f64 / changes as f64);
    let recovery = median(&mut recoveries);
    Report {
        window_seconds,
        deployments,
        changes,
        failed_changes: failed,
        deployments_per_day: per_day,
        deployment_frequency_level: (deployments > 0).then(|| frequency_level(per_day)),
        lead_time_seconds: lead_time,
        lead_time_level: lead_time.map(lead_time_level),
        change_failure_rate: rate,
        change_failure_level: rate.map(failure_level),
        recovery_seconds: recovery,
        recovery_level: recovery.map(recovery_level),
    }
}

/// The first incident of the deploy's service detected after it finished, within the
/// window, and before the service's next deploy started.
fn incident_after<'a>(
    deploy: &DeployFact,
    next: Option<&DeployFact>,
    incidents: &'a [IncidentFact],
) -> Option<&'a IncidentFact> {
    incidents
        .iter()
        .filter(|incident| {
            incident.service == deploy.service
                && incident.detected_at >= deploy.finished_at
                && seconds(deploy.finished_at, incident.detected_at) < INCIDENT_WINDOW_SECONDS
                && next.is_none_or(|n| incident.detected_at < n.started_at)
        })
        .min_by_key(|incident| incident.detected_at)
}

fn seconds(from: jiff::Timestamp, to: jiff::Timestamp) -> i64 {
    (to.as_second() - from.as_second()).max(0)
}

/// The median (the lower middle of an even count, so it is always a recorded value).
fn median(values: &mut [i64]) -> Option<i64> {
    values.sort_unstable();
    values.get(values.len().checked_sub(1)? / 2).copied()
}

/// Grades successful changes per day.
pub fn frequency_level(per_day: f64) -> Level {
    if per_day >= 1.0 {
        Level::Elite
    } else if per_day * 7.0 >= 1.0 {
        Level::High
    } else if per_day * 30.0 >= 1.0 {
        Level::Medium
    } else {
        Level::Low
    }
}

/// Grades a lead time for changes.
pub fn lead_time_level(seconds: i64) -> Level {
    match seconds {
        s if s < DAY => Level::Elite,
        s if s < WEEK => Level::High,
        s if s < MONTH => Level::Medium,
        _ => Level::Low,
    }
}

/// Grades a change failure rate (0..=1).
pub fn failure_level(rate: f64) -> Level {
    if rate <= 0.05 {
        Level::Elite
    } else if rate <= 0.20 {
        Level::High
    } else if rate < 0.40 {
        Level::Medium
    } else {
        Level::Low
    }
}

/// Grades a failed deployment recovery time.
pub fn recovery_level(seconds: i64) -> Level {
    match seconds {
        s if s < HOUR => Level::Elite,
        s if s < DAY => Level::High,
        s if s < WEEK => Level::Medium,
        _ => Level::Low,
    }
}

/// What each level asks of a metric, for a reader who wants to know how far the next one is;
/// in the order deployment frequency, lead time, change failure rate, recovery (the table
/// above, which the level functions implement).
pub const THRESHOLDS: [&str; 4] = [
    "elite ≥ 1/day · high ≥ 1/week · medium ≥ 1/month",
    "elite < 1 day · high < 1 week · medium < 1 month",
    "elite ≤ 5 % · high ≤ 20 % · medium < 40 %",
    "elite < 1 hour · high < 1 day · medium < 1 week",
];

/// How many weeks a trend shows at most.
pub const TREND_WEEKS: i64 = 12;
/// Windows up to this long are trended per day, longer ones per ISO week.
pub const DAILY_TREND_UP_TO_SECONDS: i64 = 14 * DAY;

/// The width of a trend's buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    /// UTC days.
    Day,
    /// ISO weeks (Monday 00:00 UTC to the next Monday).
    Week,
}

impl Bucket {
    /// `day` or `week`.
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Day => "day",
            Bucket::Week => "week",
        }
    }

    /// The start of the bucket holding `second` (Unix seconds).
    fn floor(self, second: i64) -> i64 {
        match self {
            Bucket::Day => second.div_euclid(DAY) * DAY,
            // 1970-01-05, four days after the epoch, was a Monday.
            Bucket::Week => (second - 4 * DAY).div_euclid(WEEK) * WEEK + 4 * DAY,
        }
    }

    fn seconds(self) -> i64 {
        match self {
            Bucket::Day => DAY,
            Bucket::Week => WEEK,
        }
    }
}

/// One bucket of a trend: the four figures over the deploys that started in it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendPoint {
    /// Where the bucket starts.
    pub start: jiff::Timestamp,
    /// Its figures (over the part of it before `now` for the current one).
    pub report: Report,
}

/// The four figures per day (a window up to [`DAILY_TREND_UP_TO_SECONDS`]) or per ISO week
/// (at most the last [`TREND_WEEKS`]) from the bucket holding `since` to the one holding `now`,
/// each computed by [`compute_with_incidents`]: a deploy counts in the bucket it started in.
pub fn trend(
    deploys: &[DeployFact],
    incidents: &[IncidentFact],
    since: jiff::Timestamp,
    now: jiff::Timestamp,
) -> (Bucket, Vec<TrendPoint>) {
    let (since_s, now_s) = (since.as_second(), now.as_second());
    let bucket = if now_s - since_s <= DAILY_TREND_UP_TO_SECONDS {
        Bucket::Day
    } else {
        Bucket::Week
    };
    let oldest = bucket.floor(now_s) - (TREND_WEEKS - 1) * WEEK;
    let mut start = bucket.floor(since_s).max(oldest);
    let mut points = Vec::new();
    // Bounded: at most 15 days or TREND_WEEKS weeks.
    while start <= now_s {
        let next = start + bucket.seconds();
        let (Ok(from), Ok(next_at)) = (
            jiff::Timestamp::from_second(start),
            jiff::Timestamp::from_second(next),
        ) else {
            break;
        };
        // A deploy starting exactly at the next bucket's start belongs to that one.
        let to = next_at
            .checked_sub(jiff::SignedDuration::from_nanos(1))
            .unwrap_or(next_at)
            .min(now);
        points.push(TrendPoint {
            start: from,
            report: compute_with_incidents(deploys, incidents, from, to),
        });
        start = next;
    }
    (bucket, points)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> jiff::Timestamp {
        text.parse().unwrap_or_default()
    }

    fn deploy(
        service: &str,
        trigger: &str,
        result: DeployResult,
        started: &str,
        seconds: i64,
        committed: Option<&str>,
    ) -> DeployFact {
        let started_at = t(started);
        DeployFact {
            service: service.into(),
            trigger: trigger.into(),
            result,
            started_at,
            finished_at: started_at
                .checked_add(jiff::SignedDuration::from_secs(seconds))
                .unwrap_or(started_at),
            committed_at: committed.map(t),
        }
    }

    /// Ten days of history for two services, with times chosen so every figure is exact.
    fn history() -> Vec<DeployFact> {
        use DeployResult::*;
        vec![
            // Before the window: ignored, except that it is not a rollback target.
            deploy(
                "services.api",
                "push",
                Succeeded,
                "2026-10-01T00:00:00Z",
                60,
                Some("2026-09-30T00:00:00Z"),
            ),
            // Lead time 1 h (commit 10:00, deploy 10:59 + 60 s).
            deploy(
                "services.api",
                "push",
                Succeeded,
                "2026-11-01T10:59:00Z",
                60,
                Some("2026-11-01T10:00:00Z"),
            ),
            // Lead time 3 h; rolled back by hand 30 min after it finished: a failure, recovery 30 min.
            deploy(
                "services.api",
                "push",
                Succeeded,
                "2026-11-02T11:59:00Z",
                60,
                Some("2026-11-02T09:00:00Z"),
            ),
            deploy(
                "services.api",
                "rollback",
                Succeeded,
                "2026-11-02T12:29:00Z",
                60,
                None,
            ),
            // Rolled back automatically after 120 s: a failure, recovery 2 min, no lead time.
            deploy(
                "services.web",
                "push",
                RolledBack,
                "2026-11-03T08:00:00Z",
                120,
                Some("2026-11-03T07:00:00Z"),
            ),
            // Lead time 2 h.
            deploy(
                "services.web",
                "deploy",
                Succeeded,
                "2026-11-04T08:59:00Z",
                60,
                Some("2026-11-04T07:00:00Z"),
            ),
            // Failed to become ready after 600 s: a failure, recovery 10 min.
            deploy(
                "services.web",
                "push",
                Failed,
                "2026-11-05T08:00:00Z",
                600,
                None,
            ),
        ]
    }

    #[test]
    fn a_scripted_history_gives_exactly_the_expected_figures() {
        let report = compute(
            &history(),
            t("2026-11-01T00:00:00Z"),
            t("2026-11-11T00:00:00Z"),
        );
        assert_eq!(
            report,
            Report {
                window_seconds: 10 * DAY,
                // Five changes; three of them deployed (one later rolled back).
                deployments: 3,
                changes: 5,
                failed_changes: 3,
                deployments_per_day: 0.3,
                deployment_frequency_level: Some(Level::High),
                // Lead times 1 h, 3 h, 2 h: median 2 h.
                lead_time_seconds: Some(2 * HOUR),
                lead_time_level: Some(Level::Elite),
                change_failure_rate: Some(0.6),
                change_failure_level: Some(Level::Low),
                // Recoveries 30 min, 2 min, 10 min: median 10 min.
                recovery_seconds: Some(600),
                recovery_level: Some(Level::Elite),
            }
        );
    }

    #[test]
    fn one_service_alone_and_an_empty_window() {
        let api: Vec<DeployFact> = history()
            .into_iter()
            .filter(|d| d.service == "services.api")
            .collect();
        let report = compute(&api, t("2026-11-01T00:00:00Z"), t("2026-11-03T00:00:00Z"));
        assert_eq!(
            (report.deployments, report.changes, report.failed_changes),
            (2, 2, 1)
        );
        assert_eq!(report.deployments_per_day, 1.0);
        assert_eq!(report.deployment_frequency_level, Some(Level::Elite));
        assert_eq!(report.lead_time_seconds, Some(HOUR));
        assert_eq!(report.change_failure_rate, Some(0.5));
        assert_eq!(report.recovery_seconds, Some(30 * 60));
        let empty = compute(&api, t("2026-12-01T00:00:00Z"), t("2026-12-02T00:00:00Z"));
        assert_eq!(empty.deployments, 0);
        assert_eq!(empty.deployment_frequency_level, None);
        assert_eq!(empty.lead_time_level, None);
        assert_eq!(empty.change_failure_rate, None);
        assert_eq!(empty.recovery_level, None);
    }

    /// The same history with incidents: one after the api's 1 h lead-time deploy (mitigated
    /// 45 min after that deploy finished), one after web's good deploy but only after web's
    /// next change started (so it is that change's, which had already failed; it is still
    /// unmitigated), and one after a change already rolled back by hand (counted once).
    #[test]
    fn incidents_fail_the_change_they_followed() {
        let incident = |service: &str, detected: &str, mitigated: Option<&str>| IncidentFact {
            service: service.into(),
            detected_at: t(detected),
            mitigated_at: mitigated.map(t),
        };
        let incidents = [
            incident(
                "services.api",
                "2026-11-01T11:30:00Z",
                Some("2026-11-01T11:45:00Z"),
            ),
            incident("services.web", "2026-11-05T08:30:00Z", None),
            incident(
                "services.api",
                "2026-11-03T13:31:00Z",
                Some("2026-11-03T14:00:00Z"),
            ),
        ];
        let report = compute_with_incidents(
            &history(),
            &incidents,
            t("2026-11-01T00:00:00Z"),
            t("2026-11-11T00:00:00Z"),
        );
        // The api change of 11-01 fails too: four of five changes.
        assert_eq!((report.changes, report.failed_changes), (5, 4));
        assert_eq!(report.change_failure_rate, Some(0.8));
        // Recoveries 45 min, 30 min, 2 min, 10 min: median (lower middle) 10 min.
        assert_eq!(report.recovery_seconds, Some(600));
        // Without incidents the figures are the ones above.
        assert_eq!(
            compute_with_incidents(
                &history(),
                &[],
                t("2026-11-01T00:00:00Z"),
                t("2026-11-11T00:00:00Z")
            ),
            compute(
                &history(),
                t("2026-11-01T00:00:00Z"),
                t("2026-11-11T00:00:00Z")
            )
        );
        // An incident detected before the deploy finished is not its fault; one mitigated
        // later and alone gives its own recovery time.
        let api_only: Vec<DeployFact> = history()
            .into_iter()
            .filter(|d| d.service == "services.api")
            .take(2)
            .collect();
        let early = [incident(
            "services.api",
            "2026-11-01T10:59:30Z",
            Some("2026-11-01T11:10:00Z"),
        )];
        let report = compute_with_incidents(
            &api_only,
            &early,
            t("2026-11-01T00:00:00Z"),
            t("2026-11-02T00:00:00Z"),
        );
        assert_eq!((report.changes, report.failed_changes), (1, 0));
        let late = [incident(
            "services.api",
            "2026-11-01T12:00:00Z",
            Some("2026-11-01T14:00:00Z"),
        )];
        let report = compute_with_incidents(
            &api_only,
            &late,
            t("2026-11-01T00:00:00Z"),
            t("2026-11-02T00:00:00Z"),
        );
        assert_eq!((report.changes, report.failed_changes), (1, 1));
        assert_eq!(report.recovery_seconds, Some(3 * HOUR));
        // 24 h and 30 s after the deploy finished: too late to blame it.
        let too_late = [incident("services.api", "2026-11-02T11:00:30Z", None)];
        let report = compute_with_incidents(
            &api_only,
            &too_late,
            t("2026-11-01T00:00:00Z"),
            t("2026-11-02T00:00:00Z"),
        );
        assert_eq!(report.failed_changes, 0);
    }

    #[test]
    fn levels_follow_the_2024_thresholds_at_their_edges() {
        assert_eq!(frequency_level(1.0), Level::Elite);
        assert_eq!(frequency_level(0.99), Level::High);
        assert_eq!(frequency_level(1.0 / 7.0), Level::High);
        assert_eq!(frequency_level(1.0 / 30.0), Level::Medium);
        assert_eq!(frequency_level(1.0 / 31.0), Level::Low);
        assert_eq!(lead_time_level(DAY - 1), Level::Elite);
        assert_eq!(lead_time_level(DAY), Level::High);
        assert_eq!(lead_time_level(WEEK), Level::Medium);
        assert_eq!(lead_time_level(MONTH), Level::Low);
        assert_eq!(failure_level(0.05), Level::Elite);
        assert_eq!(failure_level(0.2), Level::High);
        assert_eq!(failure_level(0.39), Level::Medium);
        assert_eq!(failure_level(0.4), Level::Low);
        assert_eq!(recovery_level(HOUR - 1), Level::Elite);
        assert_eq!(recovery_level(HOUR), Level::High);
        assert_eq!(recovery_level(DAY), Level::Medium);
        assert_eq!(recovery_level(WEEK), Level::Low);
    }

    #[test]
    fn buckets_start_on_utc_midnight_and_iso_monday() {
        let monday = t("2026-11-23T00:00:00Z").as_second();
        for day in 0..7 {
            let at = monday + day * DAY + 5 * HOUR;
            assert_eq!(Bucket::Week.floor(at), monday);
            assert_eq!(Bucket::Day.floor(at), monday + day * DAY);
        }
        assert_eq!(Bucket::Week.floor(monday - 1), monday - WEEK);
        assert_eq!(Bucket::Week.floor(monday), monday);
    }

    #[test]
    fn a_scripted_history_is_trended_week_by_week_exactly() {
        use DeployResult::*;
        // Thursday 2026-11-26 noon; the window opens on Monday 2026-10-26 (a 31-day window).
        let now = t("2026-11-26T12:00:00Z");
        let since = t("2026-10-26T12:00:00Z");
        let history = vec![
            // Before the window: in no bucket.
            deploy("web", "deploy", Succeeded, "2026-10-20T10:00:00Z", 60, None),
            // Week of 10-26: two good changes, lead times 2 h and 4 h.
            deploy(
                "web",
                "deploy",
                Succeeded,
                "2026-10-27T10:00:00Z",
                60,
                Some("2026-10-27T08:01:00Z"),
            ),
            deploy(
                "web",
                "deploy",
                Succeeded,
                "2026-10-29T10:00:00Z",
                60,
                Some("2026-10-29T06:01:00Z"),
            ),
            // Week of 11-02: nothing.
            // Week of 11-09: a change rolled back 30 minutes later.
            deploy(
                "web",
                "deploy",
                Succeeded,
                "2026-11-10T10:00:00Z",
                60,
                Some("2026-11-10T09:01:00Z"),
            ),
            deploy(
                "web",
                "rollback",
                Succeeded,
                "2026-11-10T10:30:00Z",
                60,
                None,
            ),
            // Exactly at Monday 11-16 00:00: that week's, not the previous one's.
            deploy("web", "deploy", Failed, "2026-11-16T00:00:00Z", 120, None),
            // Week of 11-23 (the current one, up to now): one good change.
            deploy(
                "web",
                "deploy",
                Succeeded,
                "2026-11-24T10:00:00Z",
                60,
                Some("2026-11-23T10:01:00Z"),
            ),
            // After now: in no bucket.
            deploy("web", "deploy", Succeeded, "2026-11-26T13:00:00Z", 60, None),
        ];
        let (bucket, points) = trend(&history, &[], since, now);
        assert_eq!(bucket, Bucket::Week);
        let starts: Vec<String> = points.iter().map(|p| p.start.to_string()).collect();
        assert_eq!(
            starts,
            [
                "2026-10-26T00:00:00Z",
                "2026-11-02T00:00:00Z",
                "2026-11-09T00:00:00Z",
                "2026-11-16T00:00:00Z",
                "2026-11-23T00:00:00Z",
            ]
        );
        let figures: Vec<_> = points
            .iter()
            .map(|p| {
                let r = &p.report;
                (
                    r.changes,
                    r.deployments,
                    r.failed_changes,
                    r.lead_time_seconds,
                    r.recovery_seconds,
                )
            })
            .collect();
        assert_eq!(
            figures,
            [
                (2, 2, 0, Some(2 * HOUR), None),
                (0, 0, 0, None, None),
                (1, 1, 1, Some(HOUR), Some(30 * 60)),
                (1, 0, 1, None, Some(120)),
                (1, 1, 0, Some(DAY), None),
            ]
        );
        let first = &points[0].report;
        assert!((first.deployments_per_day - 2.0 / 7.0).abs() < 1e-4);
        assert_eq!(first.deployment_frequency_level, Some(Level::High));
        assert_eq!(points[2].report.change_failure_rate, Some(1.0));
        // The current week is graded over the part of it that has passed (3.5 days).
        assert_eq!(points[4].report.window_seconds, 3 * DAY + 12 * HOUR);
    }

    #[test]
    fn a_short_window_is_trended_per_day_and_a_long_one_keeps_twelve_weeks() {
        let now = t("2026-11-26T12:00:00Z");
        let (bucket, points) = trend(&[], &[], t("2026-11-19T12:00:00Z"), now);
        assert_eq!(bucket, Bucket::Day);
        assert_eq!(points.len(), 8);
        assert_eq!(points[0].start.to_string(), "2026-11-19T00:00:00Z");
        assert!(points.iter().all(|p| p.report.changes == 0));
        let (bucket, points) = trend(&[], &[], t("2025-11-26T12:00:00Z"), now);
        assert_eq!(bucket, Bucket::Week);
        assert_eq!(points.len(), TREND_WEEKS as usize);
        assert_eq!(points[11].start.to_string(), "2026-11-23T00:00:00Z");
    }
}
