//! SLOs → alert rules, after the Google SRE Workbook ("Alerting on SLOs", table 5-8): for a
//! 30-day window, page when the error budget burns 14.4× faster than sustainable over both 1 h
//! and 5 m (2% of the budget in an hour), page at 6× over both 6 h and 30 m (5% in six
//! hours), open a ticket at 1× over both 3 d and 6 h (10% in three days). The short window
//! makes an alert stop soon after the burn stops. Other SLO windows scale the alert windows
//! in proportion (a 7-day SLO pages on 14.4× over 14 m and 70 s), which keeps the share of
//! the budget each alert stands for. A minimum-traffic guard keeps one failed request on a
//! quiet route from paging: below `min_requests` over the long window, nothing fires.

use kiln_spec::alerting::{AlertDecl, Severity, SloDecl, SloKind, SloTarget};

use crate::LabelSet;
use crate::rule::Rule;

/// One burn-rate alert: both windows must burn faster than `factor` × the sustainable rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurnWindow {
    /// The long window (ms) for a 30-day SLO.
    pub long_ms: u64,
    /// The short window (ms) for a 30-day SLO.
    pub short_ms: u64,
    /// The burn rate: how many times faster than the budget allows.
    pub factor: f64,
    /// What the alert does.
    pub severity: Severity,
}

const HOUR: u64 = 3_600_000;
const MINUTE: u64 = 60_000;
/// The SLO window the Workbook's table is written for.
const WORKBOOK_SLO_WINDOW_MS: u64 = 30 * 24 * HOUR;

/// The Workbook's recommended alerts, in order of urgency.
pub const WORKBOOK_WINDOWS: [BurnWindow; 3] = [
    BurnWindow {
        long_ms: HOUR,
        short_ms: 5 * MINUTE,
        factor: 14.4,
        severity: Severity::Page,
    },
    BurnWindow {
        long_ms: 6 * HOUR,
        short_ms: 30 * MINUTE,
        factor: 6.0,
        severity: Severity::Page,
    },
    BurnWindow {
        long_ms: 3 * 24 * HOUR,
        short_ms: 6 * HOUR,
        factor: 1.0,
        severity: Severity::Ticket,
    },
];

/// The rules an SLO alert stands for, one per burn window.
pub fn slo_rules(alert: &AlertDecl, slo: &SloDecl) -> Vec<Rule> {
    let selector = route_selector(&slo.routes);
    let budget = tidy(1.0 - slo.objective);
    let (subject_label, subject) = match &slo.target {
        SloTarget::Service(s) => ("service", s.as_str()),
        SloTarget::Route(r) => ("route", r.as_str()),
    };
    WORKBOOK_WINDOWS
        .iter()
        .map(|w| {
            let long = promql_duration(scale(w.long_ms, slo.window_ms));
            let short = promql_duration(scale(w.short_ms, slo.window_ms));
            let threshold = format!("({} * {budget})", w.factor);
            let mut expr = format!(
                "({} > {threshold}) and ({} > {threshold})",
                error_ratio(&selector, slo.kind, &long),
                error_ratio(&selector, slo.kind, &short),
            );
            if slo.min_requests > 0 {
                expr.push_str(&format!(
                    " and (sum(increase(http_requests_total{{{selector}}}[{long}])) >= {})",
                    slo.min_requests
                ));
            }
            let mut labels: LabelSet = alert.labels.clone();
            labels.insert("severity".into(), w.severity.as_str().into());
            labels.insert("slo".into(), alert.name.clone());
            labels.insert(subject_label.into(), subject.into());
            labels.insert("long_window".into(), long.clone());
            labels.insert("short_window".into(), short.clone());
            let mut annotations = alert.annotations.clone();
            annotations.entry("summary".into()).or_insert_with(|| {
                format!(
                    "{} {subject}: error budget burning {}x faster than sustainable",
                    subject_label, w.factor
                )
            });
            annotations.entry("description".into()).or_insert_with(|| {
                format!(
                    "{} of requests were bad over the last {long} (and {short}); the objective {}% over {} allows {budget}.",
                    "{{ $value }}",
                    tidy(slo.objective * 100.0),
                    promql_duration(slo.window_ms),
                )
            });
            Rule {
                name: alert.name.clone(),
                group: format!("slo:{}", alert.name),
                expr,
                for_ms: 0,
                keep_firing_for_ms: 0,
                labels,
                annotations,
                // Automation answers the fast burns; a slow burn's ticket is for a human,
                // and with little history it would fire first and act on noise.
                runbook: match w.severity {
                    Severity::Page => alert.runbook.clone(),
                    Severity::Ticket | Severity::Info => None,
                },
            }
        })
        .collect()
}

/// The share of bad requests over `window`.
fn error_ratio(selector: &str, kind: SloKind, window: &str) -> String {
    match kind {
        SloKind::Availability => format!(
            "sum(rate(http_requests_total{{{selector},code_class=\"5xx\"}}[{window}])) / sum(rate(http_requests_total{{{selector}}}[{window}]))"
        ),
        SloKind::Latency { threshold_seconds } => format!(
            "1 - sum(rate(http_request_duration_seconds_bucket{{{selector},le=\"{threshold_seconds}\"}}[{window}])) / sum(rate(http_request_duration_seconds_count{{{selector}}}[{window}]))"
        ),
    }
}

/// `route="routes.a"`, or a regex over several routes.
fn route_selector(routes: &[String]) -> String {
    match routes {
        [one] => format!("route=\"{one}\""),
        many => {
            let alternatives: Vec<String> = many
                .iter()
                .map(|r| regex::escape(r).replace('\\', "\\\\"))
                .collect();
            format!("route=~\"{}\"", alternatives.join("|"))
        }
    }
}

/// A Workbook window scaled to the SLO's window, in whole seconds (at least one).
fn scale(workbook_ms: u64, slo_window_ms: u64) -> u64 {
    let scaled =
        u128::from(workbook_ms) * u128::from(slo_window_ms) / u128::from(WORKBOOK_SLO_WINDOW_MS);
    let seconds = u64::try_from(scaled / 1000)
        .unwrap_or(u64::MAX / 1000)
        .max(1);
    seconds * 1000
}

/// A duration in PromQL's syntax, in the largest unit that divides it.
pub(crate) fn promql_duration(ms: u64) -> String {
    for (unit, size) in [("d", 24 * HOUR), ("h", HOUR), ("m", MINUTE), ("s", 1_000)] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// A number without floating-point noise (`1 - 0.999` is 0.001, not 0.0010000000000000009).
fn tidy(x: f64) -> f64 {
    (x * 1e12).round() / 1e12
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_spec::alerting::RuleDecl;

    fn alert(slo: SloDecl) -> (AlertDecl, SloDecl) {
        let decl = AlertDecl {
            name: "api-availability".into(),
            rule: RuleDecl::Slo(slo.clone()),
            severity: None,
            labels: [("team".to_owned(), "web".to_owned())].into(),
            annotations: LabelSet::new(),
            runbook: Some("rollback-api".into()),
            span: kiln_spec::source::Span::new(kiln_spec::source::FileId(0), 0, 0),
        };
        (decl, slo)
    }

    fn availability(objective: f64, window_ms: u64) -> SloDecl {
        SloDecl {
            target: SloTarget::Service("api".into()),
            routes: vec!["routes.api".into()],
            objective,
            window_ms,
            kind: SloKind::Availability,
            min_requests: 50,
        }
    }

    #[test]
    fn thirty_days_gives_the_workbook_table() {
        let (decl, slo) = alert(availability(0.999, WORKBOOK_SLO_WINDOW_MS));
        let rules = slo_rules(&decl, &slo);
        let got: Vec<(&str, &str, &str)> = rules
            .iter()
            .map(|r| {
                (
                    r.labels["severity"].as_str(),
                    r.labels["long_window"].as_str(),
                    r.labels["short_window"].as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("page", "1h", "5m"),
                ("page", "6h", "30m"),
                ("ticket", "3d", "6h")
            ]
        );
        assert_eq!(
            rules[0].expr,
            "(sum(rate(http_requests_total{route=\"routes.api\",code_class=\"5xx\"}[1h])) / sum(rate(http_requests_total{route=\"routes.api\"}[1h])) > (14.4 * 0.001)) \
             and (sum(rate(http_requests_total{route=\"routes.api\",code_class=\"5xx\"}[5m])) / sum(rate(http_requests_total{route=\"routes.api\"}[5m])) > (14.4 * 0.001)) \
             and (sum(increase(http_requests_total{route=\"routes.api\"}[1h])) >= 50)"
        );
        assert!(rules[1].expr.contains("> (6 * 0.001)"));
        assert!(rules[2].expr.contains("> (1 * 0.001)"));
        for r in &rules {
            assert_eq!(r.labels["slo"], "api-availability");
            assert_eq!(r.labels["service"], "api");
            assert_eq!(r.labels["team"], "web");
            assert_eq!(r.for_ms, 0);
            assert!(r.annotations["description"].contains("{{ $value }}"));
        }
        let runbooks: Vec<Option<&str>> = rules.iter().map(|r| r.runbook.as_deref()).collect();
        assert_eq!(
            runbooks,
            [Some("rollback-api"), Some("rollback-api"), None],
            "pages run the runbook, the ticket does not"
        );
    }

    #[test]
    fn the_burn_factors_spend_the_workbook_budget_shares() {
        // 14.4× over 1h of 30d is 2% of the budget; 6× over 6h is 5%; 1× over 3d is 10%.
        let share = |w: &BurnWindow| w.factor * w.long_ms as f64 / WORKBOOK_SLO_WINDOW_MS as f64;
        let shares: Vec<f64> = WORKBOOK_WINDOWS.iter().map(|w| tidy(share(w))).collect();
        assert_eq!(shares, [0.02, 0.05, 0.1]);
    }

    #[test]
    fn other_windows_scale_the_alert_windows() {
        let (decl, slo) = alert(availability(0.99, 7 * 24 * HOUR));
        let rules = slo_rules(&decl, &slo);
        assert_eq!(rules[0].labels["long_window"], "14m");
        assert_eq!(rules[0].labels["short_window"], "70s");
        assert_eq!(rules[2].labels["long_window"], "1008m");
        assert!(rules[0].expr.contains("> (14.4 * 0.01)"));
    }

    #[test]
    fn latency_counts_requests_over_the_threshold_bucket() {
        let mut slo = availability(0.95, WORKBOOK_SLO_WINDOW_MS);
        slo.kind = SloKind::Latency {
            threshold_seconds: 0.25,
        };
        slo.min_requests = 0;
        slo.routes = vec!["routes.a".into(), "routes.b".into()];
        let (decl, slo) = alert(slo);
        let rules = slo_rules(&decl, &slo);
        assert_eq!(
            rules[0].expr,
            "(1 - sum(rate(http_request_duration_seconds_bucket{route=~\"routes\\\\.a|routes\\\\.b\",le=\"0.25\"}[1h])) / sum(rate(http_request_duration_seconds_count{route=~\"routes\\\\.a|routes\\\\.b\"}[1h])) > (14.4 * 0.05)) \
             and (1 - sum(rate(http_request_duration_seconds_bucket{route=~\"routes\\\\.a|routes\\\\.b\",le=\"0.25\"}[5m])) / sum(rate(http_request_duration_seconds_count{route=~\"routes\\\\.a|routes\\\\.b\"}[5m])) > (14.4 * 0.05))"
        );
        for r in &rules {
            promql_parser::parser::parse(&r.expr).unwrap_or_else(|e| panic!("{e}: {}", r.expr));
        }
    }

    #[test]
    fn durations_in_promql_syntax() {
        assert_eq!(promql_duration(3_600_000), "1h");
        assert_eq!(promql_duration(90_000), "90s");
        assert_eq!(promql_duration(259_200_000), "3d");
        assert_eq!(promql_duration(1_500), "1500ms");
        assert_eq!(scale(300_000, 3_600_000), 1_000);
    }
}
