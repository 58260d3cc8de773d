//! Promotion gates: whether a release may move from one environment to the next, as one pure
//! function over what kiln recorded and observed. Every gate returns a verdict with its reason,
//! so `kiln promote` can say all that blocks a promotion at once, and the control plane's
//! automatic promotion decides on the same answer.
//!
//! The gates, in the order they are shown:
//!
//! - **healthy**: the release never failed health in the source environment (a failed or
//!   rolled-back deploy of it there makes it unpromotable for good), it is the one serving
//!   there, every instance is ready, and no alert fires for the service there;
//! - **soak**: it has served there for at least `promote.soak`;
//! - **pipeline**: (with `promote.pipeline`) the runs of that workflow behind the release all
//!   succeeded: the run that built it, or the runs of its commit for a release made from a tree;
//! - **approval**: (with `promote.approval: true`) someone ran `kiln approve` for this release;
//! - **freeze**: now is inside no deploy freeze;
//! - **window**: (with `promote.windows`) now is inside one of the windows.
//!
//! Times are Unix milliseconds, passed in.

use kiln_spec::environments::Promotion;
use serde::Serialize;

/// Which gate a verdict is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// Serving in the source environment, ready, no alert, never failed there.
    Healthy,
    /// Served long enough.
    Soak,
    /// The pipeline behind the release succeeded.
    Pipeline,
    /// A recorded approval.
    Approval,
    /// Not inside a deploy freeze.
    Freeze,
    /// Inside a deploy window.
    Window,
}

impl Gate {
    /// Its name as shown.
    pub fn name(self) -> &'static str {
        match self {
            Gate::Healthy => "healthy",
            Gate::Soak => "soak",
            Gate::Pipeline => "pipeline",
            Gate::Approval => "approval",
            Gate::Freeze => "freeze",
            Gate::Window => "window",
        }
    }
}

/// One gate's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The gate.
    pub gate: Gate,
    /// True when it lets the release through.
    pub passed: bool,
    /// Why, in a sentence.
    pub reason: String,
}

/// What serves in the source environment now, as the control plane sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    /// The release its service runs (`sha256:...`).
    pub release: String,
    /// When the deploy that made it serve there finished.
    pub since_ms: i64,
    /// Instances ready.
    pub ready: usize,
    /// Instances wanted.
    pub desired: usize,
}

/// A pipeline run behind the release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFact {
    /// Its id (`kiln ci show ID`).
    pub id: u64,
    /// Its recorded status: `success`, `failure`, `running`, ...
    pub status: String,
}

/// A recorded approval of the release for the target environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalFact {
    /// `user@host`.
    pub by: String,
    /// When.
    pub at_ms: i64,
}

/// Everything the gates look at.
#[derive(Debug, Clone)]
pub struct GateInput<'a> {
    /// The target environment's `promote:`.
    pub rule: &'a Promotion,
    /// The release to promote.
    pub release: &'a str,
    /// Now.
    pub now_ms: i64,
    /// What serves in `rule.from` (None: nothing, or the control plane is not running).
    pub serving: Option<Serving>,
    /// Deploys of this release in `rule.from` that failed or were rolled back, as `#id` labels.
    pub failed_deploys: Vec<String>,
    /// Alerts firing for the service in `rule.from`, by name.
    pub firing: Vec<String>,
    /// Runs of `rule.pipeline` behind the release.
    pub runs: Vec<RunFact>,
    /// Approvals recorded for this release and environment.
    pub approvals: Vec<ApprovalFact>,
}

/// Every gate's verdict, in the order of the module documentation.
pub fn evaluate(input: &GateInput<'_>) -> Vec<Verdict> {
    let rule = input.rule;
    let verdict = |gate, passed, reason: String| Verdict {
        gate,
        passed,
        reason,
    };
    let short = short(input.release);
    let from = rule.from.as_str();
    let mut out = Vec::new();
    let serving_this = input
        .serving
        .as_ref()
        .filter(|s| s.release == input.release);
    out.push(match (&input.failed_deploys[..], serving_this, &input.serving) {
        ([first, ..], _, _) => verdict(
            Gate::Healthy,
            false,
            format!("{short} failed health in {from} (deploy {first}); a release that failed there is never promoted"),
        ),
        ([], None, Some(other)) => verdict(
            Gate::Healthy,
            false,
            format!("{from} serves {}, not {short}", self::short(&other.release)),
        ),
        ([], None, None) => verdict(
            Gate::Healthy,
            false,
            format!("nothing serves in {from} (is the control plane up, and was {short} deployed there?)"),
        ),
        ([], Some(s), _) if s.desired == 0 || s.ready < s.desired => verdict(
            Gate::Healthy,
            false,
            format!("{} of {} instances ready in {from}", s.ready, s.desired),
        ),
        ([], Some(_), _) if !input.firing.is_empty() => verdict(
            Gate::Healthy,
            false,
            format!("alerts firing in {from}: {}", input.firing.join(", ")),
        ),
        ([], Some(s), _) => verdict(
            Gate::Healthy,
            true,
            format!("{short} serves in {from}, {} of {} instances ready, no alert firing", s.ready, s.desired),
        ),
    });
    out.push(match serving_this {
        None => verdict(
            Gate::Soak,
            false,
            format!("{short} is not serving in {from}, so it has not soaked"),
        ),
        Some(s) => {
            let served = input.now_ms.saturating_sub(s.since_ms).max(0);
            let needed = i64::try_from(rule.soak_ms).unwrap_or(i64::MAX);
            if served >= needed {
                verdict(
                    Gate::Soak,
                    true,
                    format!(
                        "served {} in {from} (soak {})",
                        seconds(served),
                        seconds(needed)
                    ),
                )
            } else {
                verdict(
                    Gate::Soak,
                    false,
                    format!(
                        "served {} of {} in {from}; {} to go",
                        seconds(served),
                        seconds(needed),
                        seconds(needed - served)
                    ),
                )
            }
        }
    });
    if let Some(pipeline) = &rule.pipeline {
        let bad: Vec<String> = input
            .runs
            .iter()
            .filter(|r| r.status != "success")
            .map(|r| format!("run {} {}", r.id, r.status))
            .collect();
        out.push(if input.runs.is_empty() {
            verdict(
                Gate::Pipeline,
                false,
                format!("no run of `{pipeline}` is recorded for {short} (or its commit)"),
            )
        } else if bad.is_empty() {
            let ids: Vec<String> = input.runs.iter().map(|r| r.id.to_string()).collect();
            verdict(
                Gate::Pipeline,
                true,
                format!("`{pipeline}` succeeded (run {})", ids.join(", ")),
            )
        } else {
            verdict(
                Gate::Pipeline,
                false,
                format!("`{pipeline}` did not succeed: {}", bad.join(", ")),
            )
        });
    }
    if rule.approval {
        out.push(match input.approvals.first() {
            Some(a) => verdict(
                Gate::Approval,
                true,
                format!("approved by {} at {}", a.by, rfc3339(a.at_ms)),
            ),
            None => verdict(
                Gate::Approval,
                false,
                format!("{short} is not approved; run `kiln approve SERVICE --env ENV --release {short}`"),
            ),
        });
    }
    let freeze = rule.freezes.iter().find(|f| f.contains(input.now_ms));
    out.push(match freeze {
        Some(f) => verdict(
            Gate::Freeze,
            false,
            format!("deploys are frozen until {}", rfc3339(f.to_ms)),
        ),
        None => verdict(Gate::Freeze, true, "no deploy freeze now".into()),
    });
    if !rule.windows.is_empty() {
        let open = rule.windows.iter().any(|w| w.contains(input.now_ms));
        out.push(verdict(
            Gate::Window,
            open,
            if open {
                "inside a deploy window".into()
            } else {
                format!(
                    "outside every deploy window (now {})",
                    rfc3339(input.now_ms)
                )
            },
        ));
    }
    out
}

/// True when every verdict passed.
pub fn all_pass(verdicts: &[Verdict]) -> bool {
    verdicts.iter().all(|v| v.passed)
}

fn short(release: &str) -> &str {
    let hex = release.strip_prefix("sha256:").unwrap_or(release);
    hex.get(..12).unwrap_or(hex)
}

fn seconds(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_spec::environments::{Freeze, parse_window};
    use kiln_spec::source::{FileId, Span};

    const NOW: i64 = 1_795_431_600_000; // Monday 2026-11-23 11:00 UTC
    const RELEASE: &str = "sha256:0123456789abcdef";

    fn rule() -> Promotion {
        Promotion {
            from: "staging".into(),
            soak_ms: 10_000,
            approval: true,
            pipeline: Some("ci".into()),
            freezes: Vec::new(),
            windows: Vec::new(),
            auto: false,
            span: Span::new(FileId(0), 0, 0),
        }
    }

    fn green(rule: &Promotion) -> GateInput<'_> {
        GateInput {
            rule,
            release: RELEASE,
            now_ms: NOW,
            serving: Some(Serving {
                release: RELEASE.into(),
                since_ms: NOW - 10_000,
                ready: 2,
                desired: 2,
            }),
            failed_deploys: Vec::new(),
            firing: Vec::new(),
            runs: vec![RunFact {
                id: 7,
                status: "success".into(),
            }],
            approvals: vec![ApprovalFact {
                by: "ana@build".into(),
                at_ms: NOW - 1,
            }],
        }
    }

    fn failing(verdicts: &[Verdict]) -> Vec<(Gate, &str)> {
        verdicts
            .iter()
            .filter(|v| !v.passed)
            .map(|v| (v.gate, v.reason.as_str()))
            .collect()
    }

    #[test]
    fn a_soaked_approved_green_release_passes_every_gate() {
        let rule = rule();
        let verdicts = evaluate(&green(&rule));
        assert!(all_pass(&verdicts), "{verdicts:#?}");
        let gates: Vec<Gate> = verdicts.iter().map(|v| v.gate).collect();
        assert_eq!(
            gates,
            [
                Gate::Healthy,
                Gate::Soak,
                Gate::Pipeline,
                Gate::Approval,
                Gate::Freeze
            ]
        );
    }

    #[test]
    fn every_failing_gate_says_why() {
        let mut rule = rule();
        rule.freezes = vec![Freeze {
            from_ms: NOW - 1,
            to_ms: NOW + 3_600_000,
        }];
        rule.windows =
            vec![parse_window("Sat,Sun 10:00-12:00 UTC").unwrap_or_else(|e| panic!("{e}"))];
        let mut input = green(&rule);
        input.serving = input.serving.map(|s| Serving {
            since_ms: NOW - 4_000,
            ready: 1,
            ..s
        });
        input.runs[0].status = "failure".into();
        input.approvals.clear();
        let verdicts = evaluate(&input);
        let failed = failing(&verdicts);
        assert_eq!(
            failed,
            [
                (Gate::Healthy, "1 of 2 instances ready in staging"),
                (Gate::Soak, "served 4s of 10s in staging; 6s to go"),
                (Gate::Pipeline, "`ci` did not succeed: run 7 failure"),
                (
                    Gate::Approval,
                    "0123456789ab is not approved; run `kiln approve SERVICE --env ENV --release 0123456789ab`"
                ),
                (
                    Gate::Freeze,
                    "deploys are frozen until 2026-11-23T12:00:00Z"
                ),
                (
                    Gate::Window,
                    "outside every deploy window (now 2026-11-23T11:00:00Z)"
                ),
            ]
        );
    }

    #[test]
    fn a_release_that_failed_health_upstream_is_never_promotable() {
        let rule = rule();
        let mut input = green(&rule);
        input.failed_deploys = vec!["#12".into()];
        let verdicts = evaluate(&input);
        assert_eq!(
            failing(&verdicts),
            [(
                Gate::Healthy,
                "0123456789ab failed health in staging (deploy #12); a release that failed there is never promoted"
            )]
        );
    }

    #[test]
    fn another_release_serving_or_an_alert_blocks() {
        let rule = rule();
        let mut input = green(&rule);
        input.firing = vec!["HighErrorRate".into()];
        let verdicts = evaluate(&input);
        assert_eq!(
            failing(&verdicts),
            [(Gate::Healthy, "alerts firing in staging: HighErrorRate")]
        );
        input.serving = input.serving.map(|s| Serving {
            release: "sha256:ffffffffffffffff".into(),
            ..s
        });
        let verdicts = evaluate(&input);
        assert_eq!(
            failing(&verdicts),
            [
                (
                    Gate::Healthy,
                    "staging serves ffffffffffff, not 0123456789ab"
                ),
                (
                    Gate::Soak,
                    "0123456789ab is not serving in staging, so it has not soaked"
                ),
            ]
        );
    }

    #[test]
    fn optional_gates_are_left_out_when_not_asked_for() {
        let mut rule = rule();
        rule.approval = false;
        rule.pipeline = None;
        let mut input = green(&rule);
        input.runs.clear();
        input.approvals.clear();
        let verdicts = evaluate(&input);
        assert!(all_pass(&verdicts));
        assert_eq!(verdicts.len(), 3);
    }

    proptest::proptest! {
        #[test]
        fn soak_passes_exactly_when_served_long_enough(served in 0i64..100_000, soak in 0u64..100_000) {
            let mut rule = rule();
            rule.soak_ms = soak;
            let mut input = green(&rule);
            input.serving = input.serving.map(|s| Serving { since_ms: NOW - served, ..s });
            let soak_verdict = evaluate(&input).into_iter().find(|v| v.gate == Gate::Soak);
            proptest::prop_assert_eq!(soak_verdict.map(|v| v.passed), Some(served >= i64::try_from(soak).unwrap_or(0)));
        }
    }
}
