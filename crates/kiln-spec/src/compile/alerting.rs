//! Compiles `alerts:`, `receivers:`, `notify:` and `inhibit:` (root file only) into
//! [`Alerting`]. PromQL is checked by parsing it with `promql-parser` (a pure parser, so the
//! spec crate stays free of I/O); SLO subjects are checked against the stack's services and
//! routes, so this runs once those are compiled.

use std::collections::BTreeMap;

use indexmap::IndexMap;

use super::Compiler;
use crate::alerting::{
    AlertDecl, Alerting, InhibitDecl, LATENCY_BUCKETS, MaintenanceSchedule, MaintenanceWindow,
    MatchOp, Matcher, NotifyPolicy, ReceiverDecl, ReceiverKind, RuleDecl, Severity, SloDecl,
    SloKind, SloTarget, is_label_name, parse_matcher, parse_template,
};
use crate::diag::{Code, Diagnostic};
use crate::source::Span;
use crate::units;
use crate::yaml::{Key, Node, Value as Y};

const ALERT_KEYS: &[&str] = &[
    "name",
    "expr",
    "for",
    "keep_firing_for",
    "slo",
    "severity",
    "labels",
    "annotations",
    "runbook",
    "description",
];
const SLO_KEYS: &[&str] = &[
    "service",
    "route",
    "objective",
    "window",
    "kind",
    "threshold",
    "min_requests",
];
const RECEIVER_KEYS: &[&str] = &["name", "webhook", "slack", "command", "description"];
const NOTIFY_KEYS: &[&str] = &[
    "receivers",
    "group_by",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "evaluation_interval",
    "incidents",
    "maintenance",
];
const INCIDENT_KEYS: &[&str] = &["auto_resolve_after"];
const MAINTENANCE_KEYS: &[&str] = &["services", "from", "to", "weekly", "description"];
const WEEKLY_KEYS: &[&str] = &["days", "from", "to"];
const INHIBIT_KEYS: &[&str] = &["source_matchers", "target_matchers", "equal"];
/// Labels kiln sets itself on every alert.
const RESERVED_LABELS: &[&str] = &["alertname", "severity"];

impl Compiler<'_> {
    /// The alerting sections of the root file.
    pub(super) fn compile_alerting(&mut self, entries: &[(Key, Node)]) -> Alerting {
        let section = |name: &str| entries.iter().find(|(k, _)| k.text == name).map(|(_, v)| v);
        let mut alerting = Alerting::default();
        if let Some(node) = section("receivers") {
            self.unique_names(node, "receivers");
            let receivers = self.list(
                node,
                "receivers",
                "a list of receivers: `- { name: ops, webhook: http://127.0.0.1:9093/hook }`",
                Self::receiver,
            );
            alerting.receivers = receivers.into_iter().map(|(r, _)| r).collect();
        }
        let receivers = alerting.receivers.clone();
        if let Some(node) = section("notify") {
            alerting.notify = self.notify(node, &receivers);
        }
        if let Some(node) = section("inhibit") {
            alerting.inhibit = self
                .list(node, "inhibit", "a list of rules: `- { source_matchers: [severity=page], target_matchers: [severity=ticket], equal: [service] }`", Self::inhibit)
                .into_iter()
                .map(|(rule, _)| rule)
                .collect();
        }
        if let Some(node) = section("alerts") {
            self.unique_names(node, "alerts");
            let alerts = self.list(
                node,
                "alerts",
                "a list of alerts: `- { name: api-errors, expr: 'rate(...) > 0', for: 1m }`",
                Self::alert,
            );
            alerting.alerts = alerts.into_iter().map(|(a, _)| a).collect();
        }
        alerting
    }

    /// Decodes each item of a list; items that fail are left out (their mistakes recorded).
    fn list<T>(
        &mut self,
        node: &Node,
        path: &str,
        expected: &str,
        item: fn(&mut Self, &Node, &str) -> Option<T>,
    ) -> Vec<(T, Span)> {
        let Y::Seq(items) = &node.value else {
            if !matches!(node.value, Y::Null) {
                self.wrong_type(node, path, expected);
            }
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, n)| item(self, n, &format!("{path}[{i}]")).map(|t| (t, n.span)))
            .collect()
    }

    /// Reports entries of a list that share a `name:` (whatever else is wrong with them).
    fn unique_names(&mut self, list: &Node, section: &str) {
        let Y::Seq(items) = &list.value else { return };
        let mut seen: IndexMap<&str, Span> = IndexMap::new();
        for item in items {
            let Y::Map(entries) = &item.value else {
                continue;
            };
            let Some((_, name)) = entries.iter().find(|(k, _)| k.text == "name") else {
                continue;
            };
            let Y::String { text, .. } = &name.value else {
                continue;
            };
            if let Some(first) = seen.get(text.as_str()) {
                self.emit(
                    Diagnostic::new(
                        Code::DuplicateName,
                        name.span,
                        format!("{section}.{text}"),
                        format!("two {section} are named `{text}`"),
                    )
                    .label("named again here")
                    .related(*first, "first named here")
                    .help("names must be unique; rename one of them"),
                );
            } else {
                seen.insert(text, name.span);
            }
        }
    }

    fn alert(&mut self, node: &Node, path: &str) -> Option<AlertDecl> {
        let entries = self.map(
            node,
            path,
            "an alert: `{ name: api-errors, expr: ..., for: 1m }`",
        )?;
        self.check_keys(entries, ALERT_KEYS, path, "an alert");
        let get = |key: &str| entries.iter().find(|(k, _)| k.text == key);
        let name = match get("name") {
            Some((_, v)) => self.name_value(v, &format!("{path}.name"))?,
            None => {
                self.missing(
                    node.span,
                    path,
                    "name",
                    "an alert has no `name`",
                    "add `name: api-errors`",
                );
                return None;
            }
        };
        let path = format!("alerts.{name}");
        if get("slo").is_some()
            && let Some((k, _)) = get("severity")
        {
            self.invalid(
                k.span,
                &format!("{path}.severity"),
                "an SLO alert chooses its own severity".into(),
                "remove `severity:`: fast burns page, slow burns open a ticket",
            );
        }
        let for_ms = get("for").and_then(|(_, v)| self.duration(v, &format!("{path}.for")));
        let keep_ms = get("keep_firing_for")
            .and_then(|(_, v)| self.duration(v, &format!("{path}.keep_firing_for")));
        let rule = match (get("expr"), get("slo")) {
            (Some((_, expr)), None) => {
                let text = self.promql(expr, &format!("{path}.expr"))?;
                RuleDecl::Expr {
                    expr: text,
                    for_ms: for_ms.unwrap_or(0),
                    keep_firing_for_ms: keep_ms.unwrap_or(0),
                }
            }
            (None, Some((_, slo))) => {
                for key in ["for", "keep_firing_for"] {
                    if let Some((k, _)) = get(key) {
                        self.emit(
                            Diagnostic::new(
                                Code::InvalidValue,
                                k.span,
                                format!("{path}.{key}"),
                                format!("`{key}` does not apply to an SLO alert"),
                            )
                            .label("not for SLOs")
                            .help("an SLO's burn-rate alerts use a short window instead of `for`; remove this key"),
                        );
                    }
                }
                RuleDecl::Slo(self.slo(slo, &format!("{path}.slo"))?)
            }
            (Some(_), Some((k, _))) => {
                self.emit(
                    Diagnostic::new(
                        Code::InvalidValue,
                        k.span,
                        path.clone(),
                        "an alert has either `expr:` or `slo:`, not both",
                    )
                    .label("second rule")
                    .help("split it into two alerts"),
                );
                return None;
            }
            (None, None) => {
                self.missing(
                    node.span,
                    &path,
                    "expr",
                    "an alert needs `expr:` (PromQL) or `slo:`",
                    "add `expr: 'sum(rate(http_requests_total{code_class=\"5xx\"}[1m])) > 0'` or `slo: { service: api, objective: 99.9% }`",
                );
                return None;
            }
        };
        let severity = get("severity").and_then(|(_, v)| {
            let text = self.string(v, &format!("{path}.severity"))?;
            let parsed = Severity::parse(&text);
            if parsed.is_none() {
                self.invalid(
                    v.span,
                    &format!("{path}.severity"),
                    format!("`{text}` is not a severity"),
                    "use `page`, `ticket` or `info`",
                );
            }
            parsed
        });
        let labels = get("labels")
            .map(|(_, v)| self.string_map(v, &format!("{path}.labels"), true))
            .unwrap_or_default();
        let annotations = get("annotations")
            .map(|(_, v)| self.string_map(v, &format!("{path}.annotations"), false))
            .unwrap_or_default();
        let runbook =
            get("runbook").and_then(|(_, v)| self.name_value(v, &format!("{path}.runbook")));
        Some(AlertDecl {
            name,
            rule,
            severity,
            labels,
            annotations,
            runbook,
            span: node.span,
        })
    }

    pub(super) fn promql(&mut self, node: &Node, path: &str) -> Option<String> {
        let text = self.string(node, path)?;
        match promql_parser::parser::parse(&text) {
            Ok(expr) => {
                use promql_parser::parser::value::ValueType;
                if !matches!(expr.value_type(), ValueType::Vector | ValueType::Scalar) {
                    self.emit(
                        Diagnostic::new(
                            Code::BadExpression,
                            node.span,
                            path,
                            format!("`{text}` is a range vector; an alert needs an instant vector"),
                        )
                        .label("range vector")
                        .help("wrap it in a function such as `rate(...)` or `max_over_time(...)`"),
                    );
                    return None;
                }
                Some(text)
            }
            Err(why) => {
                let why = why.trim().replace('\n', "; ");
                self.emit(
                    Diagnostic::new(Code::BadExpression, node.span, path, format!("invalid PromQL: {why}"))
                        .label("does not parse")
                        .help("write a PromQL expression, e.g. `sum(rate(http_requests_total{code_class=\"5xx\"}[1m])) > 0`; quote it in YAML when it contains `{` or `:`"),
                );
                None
            }
        }
    }

    fn slo(&mut self, node: &Node, path: &str) -> Option<SloDecl> {
        let entries = self.map(
            node,
            path,
            "an SLO: `{ service: api, objective: 99.9%, window: 30d }`",
        )?;
        self.check_keys(entries, SLO_KEYS, path, "an SLO");
        let get = |key: &str| entries.iter().find(|(k, _)| k.text == key).map(|(_, v)| v);
        let target = match (get("service"), get("route")) {
            (Some(v), None) => self.slo_service(v, &format!("{path}.service")),
            (None, Some(v)) => self.slo_route(v, &format!("{path}.route")),
            _ => {
                self.invalid(
                    node.span,
                    path,
                    "an SLO measures exactly one of `service:` or `route:`".into(),
                    "e.g. `slo: { service: api, objective: 99.9% }`",
                );
                None
            }
        };
        let objective = match get("objective") {
            Some(v) => self.objective(v, &format!("{path}.objective")),
            None => {
                self.missing(
                    node.span,
                    path,
                    "objective",
                    "an SLO has no `objective`",
                    "add `objective: 99.9%`",
                );
                None
            }
        };
        let window_ms = match get("window") {
            Some(v) => self.duration(v, &format!("{path}.window")).and_then(|ms| {
                if ms < 3_600_000 {
                    self.invalid(
                        v.span,
                        &format!("{path}.window"),
                        "an SLO window shorter than 1h".into(),
                        "SLO windows are days or weeks, e.g. `30d` or `7d`",
                    );
                    return None;
                }
                Some(ms)
            }),
            None => Some(30 * 86_400_000),
        };
        let kind = match get("kind") {
            None => Some("availability".to_owned()),
            Some(v) => self.string(v, &format!("{path}.kind")),
        };
        let threshold = get("threshold");
        let kind = match kind.as_deref() {
            Some("availability") => {
                if let Some(t) = threshold {
                    self.invalid(
                        t.span,
                        &format!("{path}.threshold"),
                        "`threshold` only applies to `kind: latency`".into(),
                        "remove it, or write `kind: latency`",
                    );
                }
                Some(SloKind::Availability)
            }
            Some("latency") => match threshold {
                Some(t) => self.latency_threshold(t, &format!("{path}.threshold")),
                None => {
                    self.missing(
                        node.span,
                        path,
                        "threshold",
                        "a latency SLO has no `threshold`",
                        "add `threshold: 250ms`",
                    );
                    None
                }
            },
            Some(other) => {
                let v = get("kind")?;
                self.invalid(
                    v.span,
                    &format!("{path}.kind"),
                    format!("`{other}` is not an SLO kind"),
                    "use `availability` (share of non-5xx) or `latency` (share under `threshold`)",
                );
                None
            }
            None => None,
        };
        let min_requests = match get("min_requests") {
            None => Some(10),
            Some(v) => match v.value {
                Y::Number(n) if n >= 0.0 && n.fract() == 0.0 => Some(n as u64),
                _ => {
                    self.wrong_type(
                        v,
                        &format!("{path}.min_requests"),
                        "a whole number of requests, like `100`",
                    );
                    None
                }
            },
        };
        let (target, routes) = target?;
        Some(SloDecl {
            target,
            routes,
            objective: objective?,
            window_ms: window_ms?,
            kind: kind?,
            min_requests: min_requests?,
        })
    }

    /// The routes that measure a service's requests: its ingress routes, and its own stable
    /// address (`services.<name>`, what other services call), which every service has.
    fn routes_of(&self, service: &str) -> Vec<String> {
        let mut routes: Vec<String> = self
            .resources
            .values()
            .filter(|r| r.kind == crate::schema::ROUTE.kind)
            .filter(|r| {
                r.attrs.get("service").is_some_and(|v| {
                    matches!(&v.kind, crate::model::ValueKind::Literal(serde_json::Value::String(s)) if s == service)
                })
            })
            .map(|r| r.address.clone())
            .collect();
        routes.push(format!("services.{service}"));
        routes.sort();
        routes
    }

    fn slo_service(&mut self, node: &Node, path: &str) -> Option<(SloTarget, Vec<String>)> {
        let name = self.known_service(node, path)?;
        let routes = self.routes_of(&name);
        Some((SloTarget::Service(name), routes))
    }

    /// The name of a service the stack declares, or a diagnostic.
    fn known_service(&mut self, node: &Node, path: &str) -> Option<String> {
        let name = self.string(node, path)?;
        let known: Vec<&str> = self
            .resources
            .keys()
            .filter_map(|a| a.strip_prefix("services."))
            .collect();
        if !known.contains(&name.as_str()) {
            let help = match crate::suggest::closest(&name, known.iter().copied()) {
                Some(best) => format!("did you mean `{best}`?"),
                None => "name a service declared under `services:`".to_owned(),
            };
            self.emit(
                Diagnostic::new(
                    Code::UnknownReference,
                    node.span,
                    path,
                    format!("no service named `{name}`"),
                )
                .label("unknown service")
                .help(help),
            );
            return None;
        }
        Some(name)
    }

    fn slo_route(&mut self, node: &Node, path: &str) -> Option<(SloTarget, Vec<String>)> {
        let name = self.string(node, path)?;
        let address = format!("routes.{name}");
        if !self.resources.contains_key(&address) {
            self.unknown_route(&name, node.span, path);
            return None;
        }
        Some((SloTarget::Route(name), vec![address]))
    }

    fn objective(&mut self, node: &Node, path: &str) -> Option<f64> {
        let parsed = match &node.value {
            Y::String { text, .. } => units::parse_percent(text),
            Y::Number(n) => Err(format!("`{n}` has no `%`")),
            _ => {
                self.wrong_type(node, path, "a percentage like `99.9%`");
                return None;
            }
        };
        match parsed {
            Ok(f) if f > 0.0 && f < 1.0 => Some(f),
            Ok(_) => {
                self.invalid(node.span, path, "an objective must be above 0% and below 100%".into(), "100% leaves no error budget to burn and 0% has no good requests; use e.g. `99.9%`");
                None
            }
            Err(why) => {
                self.emit(
                    Diagnostic::new(
                        Code::BadUnit,
                        node.span,
                        path,
                        format!("invalid objective: {why}"),
                    )
                    .label("expected a percentage")
                    .help("write it like `99.9%`"),
                );
                None
            }
        }
    }

    fn latency_threshold(&mut self, node: &Node, path: &str) -> Option<SloKind> {
        let ms = self.duration(node, path)?;
        let seconds = ms as f64 / 1000.0;
        if LATENCY_BUCKETS.iter().any(|b| (b - seconds).abs() < 1e-9) {
            return Some(SloKind::Latency {
                threshold_seconds: seconds,
            });
        }
        let nearest = LATENCY_BUCKETS
            .iter()
            .min_by(|a, b| (*a - seconds).abs().total_cmp(&(*b - seconds).abs()))
            .copied()
            .unwrap_or(0.25);
        let list: Vec<String> = LATENCY_BUCKETS.iter().map(|b| format_seconds(*b)).collect();
        self.invalid(
            node.span,
            path,
            format!(
                "the ingress measures latency in buckets, and {} is not a bucket bound",
                format_seconds(seconds)
            ),
            &format!(
                "use `{}` (nearest) or one of {}",
                format_seconds(nearest),
                list.join(", ")
            ),
        );
        None
    }

    fn receiver(&mut self, node: &Node, path: &str) -> Option<ReceiverDecl> {
        let entries = self.map(
            node,
            path,
            "a receiver: `{ name: ops, webhook: http://127.0.0.1:9093/hook }`",
        )?;
        self.check_keys(entries, RECEIVER_KEYS, path, "a receiver");
        let get = |key: &str| entries.iter().find(|(k, _)| k.text == key).map(|(_, v)| v);
        let name = match get("name") {
            Some(v) => self.name_value(v, &format!("{path}.name")),
            None => {
                self.missing(
                    node.span,
                    path,
                    "name",
                    "a receiver has no `name`",
                    "add `name: ops`",
                );
                None
            }
        };
        let kinds: Vec<&(Key, Node)> = entries
            .iter()
            .filter(|(k, _)| matches!(k.text.as_str(), "webhook" | "slack" | "command"))
            .collect();
        let [(key, value)] = kinds.as_slice() else {
            self.invalid(
                node.span,
                path,
                "a receiver needs exactly one of `webhook:`, `slack:` or `command:`".into(),
                "e.g. `webhook: http://127.0.0.1:9093/hook`",
            );
            return None;
        };
        let key_path = format!("{path}.{}", key.text);
        let kind = match key.text.as_str() {
            "command" => {
                let argv = match &value.value {
                    Y::Seq(items) => items
                        .iter()
                        .map(|i| match &i.value {
                            Y::String { text, .. } => Some(text.clone()),
                            _ => None,
                        })
                        .collect::<Option<Vec<_>>>(),
                    Y::String { text, .. } => {
                        Some(text.split_whitespace().map(str::to_owned).collect())
                    }
                    _ => None,
                };
                match argv {
                    Some(argv) if !argv.is_empty() => ReceiverKind::Command { argv },
                    _ => {
                        self.wrong_type(
                            value,
                            &key_path,
                            "a program and its arguments: `[notify-send, kiln]`",
                        );
                        return None;
                    }
                }
            }
            kind => {
                let url = self.string(value, &key_path)?;
                if url.starts_with("https://") {
                    self.invalid(value.span, &key_path, format!("`{url}`: kiln's notifier speaks plain HTTP only"), "use an `http://` URL, e.g. a local relay in front of the HTTPS endpoint, or a `command:` receiver running `curl`");
                    return None;
                }
                if !url.starts_with("http://")
                    || url.len() <= "http://".len()
                    || url.contains(char::is_whitespace)
                {
                    self.invalid(
                        value.span,
                        &key_path,
                        format!("`{url}` is not an http:// URL"),
                        "write the full URL, e.g. `http://127.0.0.1:9093/hook`",
                    );
                    return None;
                }
                if kind == "slack" {
                    ReceiverKind::Slack { url }
                } else {
                    ReceiverKind::Webhook { url }
                }
            }
        };
        Some(ReceiverDecl { name: name?, kind })
    }

    fn notify(&mut self, node: &Node, receivers: &[ReceiverDecl]) -> NotifyPolicy {
        let mut policy = NotifyPolicy::default();
        let Some(entries) = self.map(
            node,
            "notify",
            "`{ group_by: [alertname], group_wait: 5s, repeat_interval: 4h }`",
        ) else {
            return policy;
        };
        self.check_keys(entries, NOTIFY_KEYS, "notify", "`notify`");
        for (key, value) in entries {
            let path = format!("notify.{}", key.text);
            let slot = match key.text.as_str() {
                "group_wait" => &mut policy.group_wait_ms,
                "group_interval" => &mut policy.group_interval_ms,
                "repeat_interval" => &mut policy.repeat_interval_ms,
                "evaluation_interval" => &mut policy.evaluation_interval_ms,
                "group_by" => {
                    policy.group_by = self.label_names(value, &path);
                    continue;
                }
                "incidents" => {
                    let Some(entries) = self.map(value, &path, "`{ auto_resolve_after: 5m }`")
                    else {
                        continue;
                    };
                    self.check_keys(entries, INCIDENT_KEYS, &path, "`notify.incidents`");
                    for (key, value) in entries {
                        if key.text == "auto_resolve_after" {
                            let key_path = format!("{path}.auto_resolve_after");
                            if let Some(ms) = self.duration(value, &key_path) {
                                policy.incidents.auto_resolve_after_ms = ms;
                            }
                        }
                    }
                    continue;
                }
                "maintenance" => {
                    policy.maintenance = self
                        .list(value, &path, "a list of windows: `- { services: [api], from: \"2026-12-01T02:00:00Z\", to: \"2026-12-01T04:00:00Z\" }`", Self::maintenance)
                        .into_iter()
                        .map(|(w, _)| w)
                        .collect();
                    continue;
                }
                "receivers" => {
                    policy.receivers = self.names(value, &path);
                    for (i, name) in policy.receivers.iter().enumerate() {
                        if !receivers.iter().any(|r| &r.name == name) {
                            let span = match &value.value {
                                Y::Seq(items) => items.get(i).map_or(value.span, |n| n.span),
                                _ => value.span,
                            };
                            let known: Vec<&str> =
                                receivers.iter().map(|r| r.name.as_str()).collect();
                            let help = match crate::suggest::closest(name, known.iter().copied()) {
                                Some(best) => format!("did you mean `{best}`?"),
                                None => "declare it under `receivers:`".to_owned(),
                            };
                            self.emit(
                                Diagnostic::new(
                                    Code::UnknownReference,
                                    span,
                                    path.clone(),
                                    format!("no receiver named `{name}`"),
                                )
                                .label("unknown receiver")
                                .help(help),
                            );
                        }
                    }
                    continue;
                }
                _ => continue,
            };
            if let Some(ms) = self.duration(value, &path) {
                if key.text == "evaluation_interval" && !(1_000..=60_000).contains(&ms) {
                    self.invalid(value.span, &path, "the evaluation interval must be between 1s and 1m".into(), "rules over kiln's request metrics need at least every 5s; the default is `5s`");
                    continue;
                }
                *slot = ms;
            }
        }
        policy
    }

    /// One maintenance window: `services:` (known services; none means every alert) and either
    /// `from:`/`to:` (RFC 3339) or `weekly:`.
    fn maintenance(&mut self, node: &Node, path: &str) -> Option<MaintenanceWindow> {
        let entries = self.map(
            node,
            path,
            "a window: `{ services: [api], from: \"2026-12-01T02:00:00Z\", to: \"2026-12-01T04:00:00Z\" }` or `{ services: [api], weekly: { days: [sun], from: \"02:00\", to: \"04:00\" } }`",
        )?;
        self.check_keys(entries, MAINTENANCE_KEYS, path, "a maintenance window");
        let get = |key: &str| entries.iter().find(|(k, _)| k.text == key).map(|(_, v)| v);
        let mut services = Vec::new();
        let mut ok = true;
        if let Some(list) = get("services") {
            let services_path = format!("{path}.services");
            match &list.value {
                Y::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        match self.known_service(item, &format!("{services_path}[{i}]")) {
                            Some(name) => services.push(name),
                            None => ok = false,
                        }
                    }
                }
                _ => {
                    self.wrong_type(
                        list,
                        &services_path,
                        "a list of service names: `[api, web]`",
                    );
                    ok = false;
                }
            }
        }
        let schedule = match (get("from"), get("to"), get("weekly")) {
            (Some(from), Some(to), None) => {
                let from_ms = self.instant(from, &format!("{path}.from"));
                let to_ms = self.instant(to, &format!("{path}.to"));
                let (from_ms, to_ms) = (from_ms?, to_ms?);
                if to_ms <= from_ms {
                    self.invalid(
                        to.span,
                        &format!("{path}.to"),
                        "the window ends before it starts".into(),
                        "`to:` must be later than `from:`",
                    );
                    return None;
                }
                MaintenanceSchedule::Once { from_ms, to_ms }
            }
            (None, None, Some(weekly)) => self.weekly(weekly, &format!("{path}.weekly"))?,
            _ => {
                self.invalid(
                    node.span,
                    path,
                    "a maintenance window needs either `from:` and `to:`, or `weekly:`".into(),
                    "e.g. `from: \"2026-12-01T02:00:00Z\", to: \"2026-12-01T04:00:00Z\"` or `weekly: { days: [sun], from: \"02:00\", to: \"04:00\" }`",
                );
                return None;
            }
        };
        ok.then_some(MaintenanceWindow { services, schedule })
    }

    fn weekly(&mut self, node: &Node, path: &str) -> Option<MaintenanceSchedule> {
        let help = "`{ days: [sat, sun], from: \"02:00\", to: \"04:00\" }` (UTC)";
        let entries = self.map(node, path, help)?;
        self.check_keys(entries, WEEKLY_KEYS, path, "a weekly window");
        let get = |key: &str| entries.iter().find(|(k, _)| k.text == key).map(|(_, v)| v);
        let mut days = Vec::new();
        let mut ok = true;
        match get("days") {
            Some(Node {
                value: Y::Seq(items),
                ..
            }) => {
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}.days[{i}]");
                    let Some(text) = self.string(item, &item_path) else {
                        ok = false;
                        continue;
                    };
                    match crate::alerting::WEEKDAYS
                        .iter()
                        .position(|d| d.eq_ignore_ascii_case(&text))
                    {
                        Some(day) => days.push(u8::try_from(day).unwrap_or(0)),
                        None => {
                            ok = false;
                            self.invalid(
                                item.span,
                                &item_path,
                                format!("`{text}` is not a day"),
                                "write one of mon, tue, wed, thu, fri, sat, sun",
                            );
                        }
                    }
                }
            }
            Some(other) => {
                self.wrong_type(
                    other,
                    &format!("{path}.days"),
                    "a list of days: `[sat, sun]`",
                );
                ok = false;
            }
            None => {
                self.missing(
                    node.span,
                    path,
                    "days",
                    "a weekly window has no `days`",
                    "add `days: [sun]`",
                );
                ok = false;
            }
        }
        let mut minute = |key: &str| match get(key) {
            Some(value) => self.minute_of_day(value, &format!("{path}.{key}")),
            None => {
                self.missing(
                    node.span,
                    path,
                    key,
                    &format!("a weekly window has no `{key}`"),
                    &format!("add `{key}: \"02:00\"` (UTC)"),
                );
                None
            }
        };
        let from_minute = minute("from");
        let to_minute = minute("to");
        let (from_minute, to_minute) = (from_minute?, to_minute?);
        if from_minute == to_minute {
            self.invalid(
                node.span,
                path,
                "the window starts and ends at the same minute".into(),
                "give it a length; a `to:` earlier than `from:` runs past midnight",
            );
            return None;
        }
        ok.then_some(MaintenanceSchedule::Weekly {
            days,
            from_minute,
            to_minute,
        })
    }

    /// An RFC 3339 time, as ms since the epoch.
    fn instant(&mut self, node: &Node, path: &str) -> Option<i64> {
        let text = self.string(node, path)?;
        match text.parse::<jiff::Timestamp>() {
            Ok(t) => Some(t.as_millisecond()),
            Err(e) => {
                self.invalid(
                    node.span,
                    path,
                    format!("`{text}` is not an RFC 3339 time: {e}"),
                    "write a time with its offset, e.g. `2026-12-01T02:00:00Z`",
                );
                None
            }
        }
    }

    /// `HH:MM` (24 h), as minutes since midnight.
    fn minute_of_day(&mut self, node: &Node, path: &str) -> Option<u32> {
        let text = self.string(node, path)?;
        let parsed = text.split_once(':').and_then(|(h, m)| {
            let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
            (h < 24 && m < 60 && text.len() == 5).then_some(h * 60 + m)
        });
        if parsed.is_none() {
            self.invalid(
                node.span,
                path,
                format!("`{text}` is not a time of day"),
                "write `HH:MM` in 24-hour UTC, e.g. `02:00` or `23:30`",
            );
        }
        parsed
    }

    fn inhibit(&mut self, node: &Node, path: &str) -> Option<InhibitDecl> {
        let entries = self.map(node, path, "an inhibit rule: `{ source_matchers: [severity=page], target_matchers: [severity=ticket], equal: [service] }`")?;
        self.check_keys(entries, INHIBIT_KEYS, path, "an inhibit rule");
        let get = |key: &str| entries.iter().find(|(k, _)| k.text == key).map(|(_, v)| v);
        let mut matchers = |key: &str| match get(key) {
            Some(v) => self.matchers(v, &format!("{path}.{key}")),
            None => {
                self.missing(
                    node.span,
                    path,
                    key,
                    &format!("an inhibit rule has no `{key}`"),
                    &format!("add `{key}: [severity=page]`"),
                );
                None
            }
        };
        let source = matchers("source_matchers");
        let target = matchers("target_matchers");
        let equal = get("equal")
            .map(|v| self.label_names(v, &format!("{path}.equal")))
            .unwrap_or_default();
        Some(InhibitDecl {
            source: source?,
            target: target?,
            equal,
        })
    }

    fn matchers(&mut self, node: &Node, path: &str) -> Option<Vec<Matcher>> {
        let Y::Seq(items) = &node.value else {
            self.wrong_type(
                node,
                path,
                "a list of matchers: `[severity=\"page\", service=~\"api|web\"]`",
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let Some(text) = self.string(item, &item_path) else {
                ok = false;
                continue;
            };
            let checked = parse_matcher(&text).and_then(|m| match m.op {
                MatchOp::Regex | MatchOp::NotRegex => {
                    regex::Regex::new(&format!("^(?:{})$", m.value))
                        .map(|_| m)
                        .map_err(|e| format!("invalid regex: {}", regex_reason(&e)))
                }
                _ => Ok(m),
            });
            match checked {
                Ok(m) => out.push(m),
                Err(why) => {
                    ok = false;
                    self.invalid(item.span, &item_path, format!("not a matcher: {why}"), "write `name=\"value\"`, `name!=\"value\"`, `name=~\"regex\"` or `name!~\"regex\"`");
                }
            }
        }
        ok.then_some(out)
    }

    fn string_map(&mut self, node: &Node, path: &str, labels: bool) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(entries) = self.map(node, path, "a mapping of names to strings") else {
            return out;
        };
        for (key, value) in entries {
            let key_path = format!("{path}.{}", key.text);
            if !is_label_name(&key.text) {
                self.invalid(
                    key.span,
                    &key_path,
                    format!("`{}` is not a label name", key.text),
                    "use letters, digits and `_`, not starting with a digit",
                );
                continue;
            }
            if labels && RESERVED_LABELS.contains(&key.text.as_str()) {
                self.invalid(key.span, &key_path, format!("`{}` is set by kiln", key.text), "`alertname` is the alert's name and `severity` its `severity:`; remove this label");
                continue;
            }
            let text = match &value.value {
                Y::String { text, .. } => text.clone(),
                Y::Number(n) => n.to_string(),
                Y::Bool(b) => b.to_string(),
                _ => {
                    self.wrong_type(value, &key_path, "a string");
                    continue;
                }
            };
            if let Err(why) = parse_template(&text) {
                self.emit(
                    Diagnostic::new(
                        Code::BadExpression,
                        value.span,
                        &key_path,
                        format!("invalid template: {why}"),
                    )
                    .label("template")
                    .help("templates may use `{{ $value }}` and `{{ $labels.NAME }}`"),
                );
                continue;
            }
            out.insert(key.text.clone(), text);
        }
        out
    }

    pub(super) fn names(&mut self, node: &Node, path: &str) -> Vec<String> {
        let Y::Seq(items) = &node.value else {
            self.wrong_type(node, path, "a list of names");
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, n)| self.string(n, &format!("{path}[{i}]")))
            .collect()
    }

    fn label_names(&mut self, node: &Node, path: &str) -> Vec<String> {
        let Y::Seq(items) = &node.value else {
            self.wrong_type(node, path, "a list of label names: `[alertname, service]`");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let Some(name) = self.string(item, &item_path) else {
                continue;
            };
            if is_label_name(&name) {
                out.push(name);
            } else {
                self.invalid(
                    item.span,
                    &item_path,
                    format!("`{name}` is not a label name"),
                    "use letters, digits and `_`, not starting with a digit",
                );
            }
        }
        out
    }

    pub(super) fn name_value(&mut self, node: &Node, path: &str) -> Option<String> {
        let name = self.string(node, path)?;
        if super::is_name(&name) {
            Some(name)
        } else {
            self.invalid(
                node.span,
                path,
                format!("`{name}` is not a valid name"),
                "use letters, digits, `-` and `_`, starting with a letter",
            );
            None
        }
    }

    pub(super) fn duration(&mut self, node: &Node, path: &str) -> Option<u64> {
        let text = match &node.value {
            Y::String { text, .. } => text.clone(),
            Y::Number(n) => n.to_string(),
            _ => {
                self.wrong_type(node, path, "a duration like `30s`");
                return None;
            }
        };
        match units::parse_duration(&text) {
            Ok(ms) => Some(ms),
            Err(why) => {
                self.bad_duration(node, path, &why);
                None
            }
        }
    }

    pub(super) fn invalid(&mut self, span: Span, path: &str, message: String, help: &str) {
        self.emit(
            Diagnostic::new(Code::InvalidValue, span, path, message)
                .label("invalid")
                .help(help),
        );
    }

    pub(super) fn missing(&mut self, span: Span, path: &str, key: &str, message: &str, help: &str) {
        self.emit(
            Diagnostic::new(Code::MissingKey, span, super::join(path, key), message)
                .label(format!("expected a `{key}:` key in this mapping"))
                .help(help),
        );
    }
}

/// The last line of a regex error (the others repeat the pattern with a caret).
fn regex_reason(error: &regex::Error) -> String {
    let text = error.to_string();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(&text);
    last.trim().trim_start_matches("error: ").to_owned()
}

fn format_seconds(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{}ms", (seconds * 1e6).round() / 1e3)
    } else {
        format!("{seconds}s")
    }
}
