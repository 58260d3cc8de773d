//! `kiln dora`: the four DORA metrics from the deploys, releases and incidents kiln recorded
//! (an incident soon after a deploy fails that change). The figures
//! and levels are computed by `kiln_delivery::dora` (pure, with the 2024 thresholds); this
//! module reads the records and prints.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_delivery::dora::{self, DeployFact, DeployResult, IncidentFact, Level, Report};

use crate::cli::DoraArgs;
use crate::ops::{self, Failure};

/// How many deploys are read at most (the newest).
const MAX_DEPLOYS: usize = 100_000;

/// `kiln dora [--since 30d] [--service S] [--until TIME] [--json]`.
pub fn command(dir: &Path, args: &DoraArgs) -> Result<(), Failure> {
    let until: jiff::Timestamp = match &args.until {
        Some(text) => text.parse().map_err(|e| {
            Failure::Invalid(format!("error: --until {text}: {e} (expected RFC 3339)"))
        })?,
        None => jiff::Timestamp::now(),
    };
    let since = window_start(&args.since, until)
        .map_err(|why| Failure::Invalid(format!("error: --since: {why}")))?;
    let service = args.service.as_deref().map(crate::deploys::service_address);
    let store = ops::open_store(dir)?;
    let facts = Facts::read(&store, dir, service.as_deref())?;
    let report = dora::compute_with_incidents(&facts.deploys, &facts.incidents, since, until);
    if args.output.json {
        let value = serde_json::json!({
            "service": service,
            "since": since.to_string(),
            "until": until.to_string(),
            "metrics": report,
        });
        println!("{value:#}");
        return Ok(());
    }
    print!("{}", text(&report, service.as_deref(), &args.since));
    Ok(())
}

/// Where a window of `since` (a duration: `30d`) back from `until` starts; why not, when
/// `since` is no duration.
pub fn window_start(since: &str, until: jiff::Timestamp) -> Result<jiff::Timestamp, String> {
    let window_ms = kiln_spec::units::parse_duration(since)?;
    Ok(until
        .checked_sub(jiff::SignedDuration::from_millis(
            i64::try_from(window_ms).unwrap_or(i64::MAX),
        ))
        .unwrap_or(jiff::Timestamp::MIN))
}

/// What DORA is computed from: the recorded deploys (of production, when the stack declares
/// environments) with their releases' commit times, and the incidents.
#[derive(Debug, Default)]
pub struct Facts {
    /// The deploys, newest first.
    pub deploys: Vec<DeployFact>,
    /// The incidents.
    pub incidents: Vec<IncidentFact>,
}

impl Facts {
    /// Reads them for one service address, or (none) every service.
    pub fn read(
        store: &kiln_state::Store,
        dir: &Path,
        service: Option<&str>,
    ) -> Result<Facts, Failure> {
        let mut deploys = store.deploys(service, MAX_DEPLOYS)?;
        // With environments, delivery is measured where users are: the last one.
        if let Some(production) = production_prefix(dir) {
            deploys.retain(|d| d.deploy.service.starts_with(&production));
        }
        let mut commit_times: BTreeMap<String, BTreeMap<String, Option<jiff::Timestamp>>> =
            BTreeMap::new();
        let mut facts = Vec::new();
        for record in &deploys {
            let d = &record.deploy;
            if !commit_times.contains_key(&d.service) {
                let releases = store.releases(&d.service)?;
                commit_times.insert(
                    d.service.clone(),
                    releases
                        .into_iter()
                        .map(|r| (r.digest, r.committed_at.and_then(|t| t.parse().ok())))
                        .collect(),
                );
            }
            let Ok(started_at) = d.started_at.parse::<jiff::Timestamp>() else {
                continue;
            };
            // From the deploy's own clock (the row's `finished_at` is when it was recorded).
            let finished_at = started_at
                .checked_add(jiff::SignedDuration::from_millis(
                    i64::try_from(d.duration_ms).unwrap_or(i64::MAX),
                ))
                .unwrap_or(started_at);
            let result = match d.result.as_str() {
                "succeeded" => DeployResult::Succeeded,
                "rolled-back" => DeployResult::RolledBack,
                _ => DeployResult::Failed,
            };
            facts.push(DeployFact {
                service: d.service.clone(),
                trigger: d.trigger.clone(),
                result,
                started_at,
                finished_at,
                committed_at: commit_times
                    .get(&d.service)
                    .and_then(|r| r.get(&d.to_release))
                    .copied()
                    .flatten(),
            });
        }
        Ok(Facts {
            deploys: facts,
            incidents: incident_facts(store, service)?,
        })
    }
}

/// The recorded incidents, by service address, as DORA needs them.
fn incident_facts(
    store: &kiln_state::Store,
    service: Option<&str>,
) -> Result<Vec<IncidentFact>, Failure> {
    let time = |ms: i64| jiff::Timestamp::from_millisecond(ms).ok();
    let mut facts = Vec::new();
    for record in store.incidents(false, MAX_DEPLOYS)? {
        let incident = crate::incidents::from_record(&record).map_err(Failure::State)?;
        let address = crate::deploys::service_address(&incident.service);
        if service.is_some_and(|s| s != address) {
            continue;
        }
        let Some(detected_at) = time(incident.milestones.detected.at) else {
            continue;
        };
        facts.push(IncidentFact {
            service: address,
            detected_at,
            mitigated_at: incident.milestones.mitigated.and_then(|m| time(m.at)),
        });
    }
    Ok(facts)
}

/// `environments.NAME.` of the stack's last environment, when it declares environments (a
/// stack that does not load is measured whole).
fn production_prefix(dir: &Path) -> Option<String> {
    let stack = ops::load_stack(dir).ok()?;
    stack
        .production()
        .map(kiln_spec::environments::Environment::prefix)
}

/// The report as a small table.
fn text(report: &Report, service: Option<&str>, since: &str) -> String {
    let level = |l: Option<Level>| l.map_or("-", Level::as_str);
    let mut out = format!(
        "DORA metrics for {} over the last {since} ({} change{}, {} deployed, {} failed)\n\n",
        service.unwrap_or("every service"),
        report.changes,
        if report.changes == 1 { "" } else { "s" },
        report.deployments,
        report.failed_changes
    );
    out.push_str(&format!("{:<34} {:>16}  {}\n", "metric", "value", "level"));
    let rows = [
        (
            "deployment frequency",
            format!("{:.2}/day", report.deployments_per_day),
            level(report.deployment_frequency_level),
        ),
        (
            "lead time for changes (median)",
            report.lead_time_seconds.map_or("-".into(), duration),
            level(report.lead_time_level),
        ),
        (
            "change failure rate",
            report
                .change_failure_rate
                .map_or("-".into(), |r| format!("{:.1}%", r * 100.0)),
            level(report.change_failure_level),
        ),
        (
            "failed deployment recovery (median)",
            report.recovery_seconds.map_or("-".into(), duration),
            level(report.recovery_level),
        ),
    ];
    for (name, value, level) in rows {
        out.push_str(&format!("{name:<34} {value:>16}  {level}\n"));
    }
    out.push_str("\nlevels: DORA 2024 (elite, high, medium, low); `-`: nothing to measure yet\n");
    out
}

/// `45s`, `12m 5s`, `3h 20m`, `2d 4h`.
fn duration(seconds: i64) -> String {
    kiln_alerts::incident::duration(seconds.saturating_mul(1_000))
}

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(725), "12m 5s");
        assert_eq!(duration(12_000), "3h 20m");
        assert_eq!(duration(187_200), "2d 4h");
    }
}
