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
}
