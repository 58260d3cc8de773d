//! The alerting part of a stack: `alerts:` (PromQL rules and SLOs), `receivers:` (where
//! notifications go), `notify:` (grouping and timing, Alertmanager's `route:`) and `inhibit:`.
//! Also the two small languages they use, so that validation and the evaluator share one
//! parser: label matchers (`severity="page"`, `service=~"api|web"`) and annotation templates
//! (`{{ $labels.route }}`, `{{ $value }}`).

use std::collections::BTreeMap;

use crate::source::Span;

/// Everything a stack declares about alerting. Empty when it declares nothing.
#[derive(Debug, Clone, Default)]
pub struct Alerting {
    /// `alerts:`, in file order.
    pub alerts: Vec<AlertDecl>,
    /// `receivers:`, in file order.
    pub receivers: Vec<ReceiverDecl>,
    /// `notify:`.
    pub notify: NotifyPolicy,
    /// `inhibit:`, in file order.
    pub inhibit: Vec<InhibitDecl>,
}

/// One entry of `alerts:`.
#[derive(Debug, Clone)]
pub struct AlertDecl {
    /// `name:`, unique in the stack; becomes the `alertname` label.
    pub name: String,
    /// What is watched.
    pub rule: RuleDecl,
    /// `severity:`; an SLO's generated alerts choose their own (page or ticket).
    pub severity: Option<Severity>,
    /// Extra labels on every alert of the rule.
    pub labels: BTreeMap<String, String>,
    /// Annotations, as templates (see [`parse_template`]).
    pub annotations: BTreeMap<String, String>,
    /// `runbook:`, the runbook run when the alert goes firing (a declared runbook: checked
    /// with `runbooks:`).
    pub runbook: Option<String>,
    /// Where the entry is written.
    pub span: Span,
}

/// How an alert decides it is firing.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleDecl {
    /// A PromQL expression: every element of its result is an alert.
    Expr {
        /// The expression (it parses: checked at load time).
        expr: String,
        /// `for:`: how long an element must be present before the alert fires (ms).
        for_ms: u64,
        /// `keep_firing_for:`: how long a firing alert keeps firing after its element is gone (ms).
        keep_firing_for_ms: u64,
    },
    /// A service level objective, turned into burn-rate alerts.
    Slo(SloDecl),
}

/// `slo: { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct SloDecl {
    /// What is measured, as written.
    pub target: SloTarget,
    /// The route addresses whose requests count (`routes.shop`), sorted: the route itself, or
    /// every route that serves the service.
    pub routes: Vec<String>,
    /// The objective as a fraction in (0, 1), e.g. 0.999.
    pub objective: f64,
    /// The SLO window (ms), e.g. 30 days.
    pub window_ms: u64,
    /// What counts as a good request.
    pub kind: SloKind,
    /// Fewer requests than this over an alert's long window never alert.
    pub min_requests: u64,
}

/// The subject of an SLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SloTarget {
    /// `service: api`.
    Service(String),
    /// `route: shop` (a route's name).
    Route(String),
}

/// What a good request is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SloKind {
    /// Any response but a 5xx.
    Availability,
    /// A response whose headers came within the threshold (seconds; one of
    /// [`LATENCY_BUCKETS`], since the ingress's histogram has only those bounds).
    Latency {
        /// The threshold in seconds.
        threshold_seconds: f64,
    },
}

/// The ingress's latency histogram bounds (seconds); a latency SLO's threshold must be one of
/// them. The binary's tests check that they equal `kiln_ingress::LATENCY_BOUNDS`.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Wake someone up.
    Page,
    /// Someone should look during working hours.
    Ticket,
    /// For the record.
    Info,
}

impl Severity {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
            Severity::Info => "info",
        }
    }

    /// Parses a label value.
    pub fn parse(text: &str) -> Option<Severity> {
        match text {
            "page" => Some(Severity::Page),
            "ticket" => Some(Severity::Ticket),
            "info" => Some(Severity::Info),
            _ => None,
        }
    }
}

/// One entry of `receivers:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverDecl {
    /// `name:`, unique.
    pub name: String,
    /// How notifications are delivered.
    pub kind: ReceiverKind,
}

/// The ways a notification leaves kiln.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverKind {
    /// `webhook: URL`: an HTTP POST of Alertmanager's version 4 JSON.
    Webhook {
        /// An `http://` URL (the notifier has no TLS client).
        url: String,
    },
    /// `slack: URL`: a Slack-compatible incoming webhook (`{"text": ...}`).
    Slack {
        /// The incoming-webhook URL.
        url: String,
    },
    /// `command: [argv]`: runs the program with the webhook JSON on its stdin.
    Command {
        /// Program and arguments (no shell).
        argv: Vec<String>,
    },
}

/// `notify:`: which receivers get what, and when (Alertmanager's route settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyPolicy {
    /// Receivers every group is sent to; empty means every declared receiver.
    pub receivers: Vec<String>,
    /// Labels that split alerts into groups (one notification per group).
    pub group_by: Vec<String>,
    /// How long a new group waits for more alerts before its first notification (ms).
    pub group_wait_ms: u64,
    /// How long a group waits before notifying about changes to it (ms).
    pub group_interval_ms: u64,
    /// How long before an unchanged, still-firing group is notified again (ms).
    pub repeat_interval_ms: u64,
    /// How often rules are evaluated (ms).
    pub evaluation_interval_ms: u64,
    /// `incidents:`: how incidents close.
    pub incidents: IncidentPolicy,
    /// `maintenance:`: when alerts of some services are muted.
    pub maintenance: Vec<MaintenanceWindow>,
}

/// `notify.incidents`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentPolicy {
    /// `auto_resolve_after:`: a mitigated incident quiet this long is resolved (ms).
    pub auto_resolve_after_ms: u64,
}

impl Default for IncidentPolicy {
    fn default() -> Self {
        IncidentPolicy {
            auto_resolve_after_ms: 5 * 60_000,
        }
    }
}

/// One entry of `notify.maintenance`: alerts of these services are muted (not notified, and
/// they open no incident) while the window is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceWindow {
    /// Service names, matched against the alerts' `service` label; empty: every alert.
    pub services: Vec<String>,
    /// When.
    pub schedule: MaintenanceSchedule,
}

/// When a maintenance window is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaintenanceSchedule {
    /// `from:`/`to:`, RFC 3339 times (ms since the epoch), `from` before `to`.
    Once {
        /// Start, inclusive.
        from_ms: i64,
        /// End, exclusive.
        to_ms: i64,
    },
    /// `weekly: { days: [sat, sun], from: "02:00", to: "04:00" }`, in UTC; a window whose
    /// `to` is not after its `from` runs past midnight into the next day.
    Weekly {
        /// Days it starts on, 0 = Monday.
        days: Vec<u8>,
        /// Minute of the day it starts at.
        from_minute: u32,
        /// Minute of the day it ends at (exclusive).
        to_minute: u32,
    },
}

/// The days of `weekly.days`, Monday first.
pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl MaintenanceWindow {
    /// Whether an alert of `service` (its label, if any) is muted at `now_ms`.
    pub fn covers(&self, service: Option<&str>, now_ms: i64) -> bool {
        let applies = self.services.is_empty()
            || service.is_some_and(|s| self.services.iter().any(|w| w == s));
        applies && self.is_on(now_ms)
    }

    /// Whether the window is on at `now_ms`.
    pub fn is_on(&self, now_ms: i64) -> bool {
        match &self.schedule {
            MaintenanceSchedule::Once { from_ms, to_ms } => *from_ms <= now_ms && now_ms < *to_ms,
            MaintenanceSchedule::Weekly {
                days,
                from_minute,
                to_minute,
            } => {
                const DAY_MS: i64 = 86_400_000;
                // 1970-01-01 was a Thursday (3, Monday being 0).
                let day = u8::try_from((now_ms.div_euclid(DAY_MS) + 3).rem_euclid(7)).unwrap_or(0);
                let yesterday = (day + 6) % 7;
                let minute = u32::try_from(now_ms.rem_euclid(DAY_MS) / 60_000).unwrap_or(0);
                if from_minute < to_minute {
                    days.contains(&day) && (*from_minute..*to_minute).contains(&minute)
                } else {
                    (days.contains(&day) && minute >= *from_minute)
                        || (days.contains(&yesterday) && minute < *to_minute)
                }
            }
        }
    }
}

impl Default for NotifyPolicy {
    fn default() -> Self {
        NotifyPolicy {
            receivers: Vec::new(),
            group_by: vec!["alertname".into()],
            group_wait_ms: 5_000,
            group_interval_ms: 60_000,
            repeat_interval_ms: 4 * 3_600_000,
            evaluation_interval_ms: 5_000,
            incidents: IncidentPolicy::default(),
            maintenance: Vec::new(),
        }
    }
}

/// One entry of `inhibit:`: while an alert matching `source` fires, alerts matching `target`
/// with the same values of the `equal` labels are not notified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InhibitDecl {
    /// `source_matchers:`.
    pub source: Vec<Matcher>,
    /// `target_matchers:`.
    pub target: Vec<Matcher>,
    /// `equal:`.
    pub equal: Vec<String>,
}

/// A label matcher, as Alertmanager writes them: `name="value"`, `name!="value"`,
/// `name=~"regex"`, `name!~"regex"` (quotes optional; regexes are anchored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// The label name.
    pub name: String,
    /// The comparison.
    pub op: MatchOp,
    /// The value or the regex.
    pub value: String,
}

/// The comparisons of a [`Matcher`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
}

impl MatchOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}{}{:?}",
            self.name,
            self.op.as_str(),
            self.value.as_str()
        )
    }
}

/// True for a valid Prometheus label name.
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses one matcher (`severity="page"`). A regex's validity is checked by the caller, which
/// compiles it.
pub fn parse_matcher(text: &str) -> Result<Matcher, String> {
    let text = text.trim();
    let at = text
        .find(['=', '!'])
        .ok_or_else(|| format!("`{text}` has no operator; write `name=\"value\"`"))?;
    let name = text[..at].trim();
    let rest = &text[at..];
    let (op, value) = [
        ("=~", MatchOp::Regex),
        ("!~", MatchOp::NotRegex),
        ("!=", MatchOp::NotEqual),
        ("=", MatchOp::Equal),
    ]
    .into_iter()
    .find_map(|(symbol, op)| rest.strip_prefix(symbol).map(|v| (op, v)))
    .ok_or_else(|| format!("`{text}`: the operator must be one of = != =~ !~"))?;
    if !is_label_name(name) {
        return Err(format!("`{name}` is not a label name"));
    }
    let value = value.trim();
    let value = match value.strip_prefix('"') {
        Some(quoted) => quoted
            .strip_suffix('"')
            .ok_or_else(|| format!("`{text}`: the value's closing quote is missing"))?
            .replace("\\\"", "\""),
        None => value.to_owned(),
    };
    Ok(Matcher {
        name: name.to_owned(),
        op,
        value,
    })
}

/// A piece of an annotation template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePiece {
    /// Text copied as is.
    Text(String),
    /// `{{ $value }}`: the alert's value.
    Value,
    /// `{{ $labels.NAME }}`: a label's value (empty when absent).
    Label(String),
}

/// Parses an annotation template. kiln supports the part of Prometheus's Go templates that
/// alert annotations use: `{{ $value }}` and `{{ $labels.NAME }}` (also spelt `.Value` and
/// `.Labels.NAME`).
pub fn parse_template(text: &str) -> Result<Vec<TemplatePiece>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            pieces.push(TemplatePiece::Text(rest[..open].to_owned()));
        }
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| "a `{{` is never closed by `}}`".to_owned())?;
        let action = after[..close].trim();
        let piece = match action {
            "$value" | ".Value" => TemplatePiece::Value,
            _ => match action
                .strip_prefix("$labels.")
                .or_else(|| action.strip_prefix(".Labels."))
            {
                Some(name) if is_label_name(name) => TemplatePiece::Label(name.to_owned()),
                _ => {
                    return Err(format!(
                        "`{{{{ {action} }}}}` is not supported; use `{{{{ $value }}}}` or `{{{{ $labels.NAME }}}}`"
                    ));
                }
            },
        };
        pieces.push(piece);
        rest = &after[close + 2..];
    }
    if rest.contains("}}") {
        return Err("a `}}` has no `{{` before it".into());
    }
    if !rest.is_empty() {
        pieces.push(TemplatePiece::Text(rest.to_owned()));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_in_alertmanager_syntax() {
        assert_eq!(
            parse_matcher("severity=\"page\""),
            Ok(Matcher {
                name: "severity".into(),
                op: MatchOp::Equal,
                value: "page".into()
            })
        );
        let m = parse_matcher("service=~api|web").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((m.op, m.value.as_str()), (MatchOp::Regex, "api|web"));
        let m = parse_matcher(" a != \"x\" ").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((m.op, m.value.as_str()), (MatchOp::NotEqual, "x"));
        assert_eq!(parse_matcher("a!~b").map(|m| m.op), Ok(MatchOp::NotRegex));
        assert!(parse_matcher("severity").is_err());
        assert!(parse_matcher("9x=1").is_err());
        assert!(parse_matcher("a=\"open").is_err());
        assert_eq!(
            parse_matcher("a=\"x\"").map(|m| m.to_string()),
            Ok("a=\"x\"".into())
        );
    }

    #[test]
    fn templates_know_value_and_labels() {
        assert_eq!(
            parse_template("errors on {{ $labels.route }}: {{$value}}!"),
            Ok(vec![
                TemplatePiece::Text("errors on ".into()),
                TemplatePiece::Label("route".into()),
                TemplatePiece::Text(": ".into()),
                TemplatePiece::Value,
                TemplatePiece::Text("!".into()),
            ])
        );
        assert!(parse_template("{{ humanize $value }}").is_err());
        assert!(parse_template("{{ $labels.route ").is_err());
        assert!(parse_template("x }}").is_err());
        assert_eq!(parse_template(""), Ok(vec![]));
    }

    #[test]
    fn maintenance_windows_cover_their_services_and_times() {
        // 2026-11-29 is a Sunday.
        let at = |text: &str| {
            text.parse::<jiff::Timestamp>()
                .map_or(0, |t| t.as_millisecond())
        };
        let once = MaintenanceWindow {
            services: vec!["api".into()],
            schedule: MaintenanceSchedule::Once {
                from_ms: at("2026-11-29T02:00:00Z"),
                to_ms: at("2026-11-29T04:00:00Z"),
            },
        };
        assert!(once.covers(Some("api"), at("2026-11-29T02:00:00Z")));
        assert!(
            !once.covers(Some("api"), at("2026-11-29T04:00:00Z")),
            "the end is exclusive"
        );
        assert!(!once.covers(Some("web"), at("2026-11-29T03:00:00Z")));
        assert!(!once.covers(None, at("2026-11-29T03:00:00Z")));
        let weekly = |from_minute, to_minute| MaintenanceWindow {
            services: Vec::new(),
            schedule: MaintenanceSchedule::Weekly {
                days: vec![6],
                from_minute,
                to_minute,
            },
        };
        let sunday_night = weekly(2 * 60, 4 * 60);
        assert!(sunday_night.covers(None, at("2026-11-29T03:59:00Z")));
        assert!(sunday_night.covers(Some("any"), at("2026-12-06T02:00:00Z")));
        assert!(
            !sunday_night.covers(None, at("2026-11-30T03:00:00Z")),
            "Monday"
        );
        assert!(!sunday_night.covers(None, at("2026-11-29T04:00:00Z")));
        // 23:00 on Sunday to 01:00 on Monday.
        let past_midnight = weekly(23 * 60, 60);
        assert!(past_midnight.covers(None, at("2026-11-29T23:30:00Z")));
        assert!(past_midnight.covers(None, at("2026-11-30T00:59:00Z")));
        assert!(!past_midnight.covers(None, at("2026-11-30T01:00:00Z")));
        assert!(
            !past_midnight.covers(None, at("2026-11-29T00:30:00Z")),
            "Saturday night's"
        );
        // Before the epoch too (1969-12-28 was a Sunday).
        assert!(past_midnight.covers(None, at("1969-12-28T23:30:00Z")));
    }
}
