//! The runbooks of a stack (`runbooks:`): typed parameters, steps made of built-in actions,
//! guards against runaway remediation, and their Markdown documentation. Also the one small
//! language their values use: `${{ params.NAME }}` placeholders (see [`placeholders`]), shared
//! by validation and by the engine that substitutes them.

use std::collections::BTreeMap;

use crate::source::Span;

/// `runbooks:`, by name.
pub type Runbooks = BTreeMap<String, RunbookDecl>;

/// One runbook.
#[derive(Debug, Clone, PartialEq)]
pub struct RunbookDecl {
    /// Its name (the key under `runbooks:`).
    pub name: String,
    /// `description:`, Markdown.
    pub description: String,
    /// `params:`, by name.
    pub params: BTreeMap<String, ParamDecl>,
    /// `steps:`, in order.
    pub steps: Vec<StepDecl>,
    /// `guards:`.
    pub guards: Guards,
    /// Where it is declared.
    pub span: Span,
}

impl RunbookDecl {
    /// The parameter that names what the runbook acts on: the first of type `service`. Guards
    /// (locks, rate limits, blast radius) count runs per value of this parameter.
    pub fn target_param(&self) -> Option<&str> {
        self.params
            .iter()
            .find(|(_, p)| p.ty == ParamType::Service)
            .map(|(name, _)| name.as_str())
    }
}

/// One entry of `params:`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamDecl {
    /// `type:`.
    pub ty: ParamType,
    /// `default:`, already checked against the type.
    pub default: Option<String>,
    /// `required:` (a parameter without a default that is not required is an empty string).
    pub required: bool,
}

/// The types a parameter may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// Any text.
    String,
    /// A whole number.
    Int,
    /// `true` or `false`.
    Bool,
    /// A duration like `30s`.
    Duration,
    /// The name of a service of the stack.
    Service,
}

impl ParamType {
    /// Every type, as written.
    pub const ALL: [(&'static str, ParamType); 5] = [
        ("string", ParamType::String),
        ("int", ParamType::Int),
        ("bool", ParamType::Bool),
        ("duration", ParamType::Duration),
        ("service", ParamType::Service),
    ];

    /// The name as written in the file.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, t)| *t == self)
            .map_or("string", |(n, _)| n)
    }

    /// The name with its article, for messages: "an int", "a service".
    pub fn with_article(self) -> String {
        match self {
            ParamType::Int => "an int".into(),
            other => format!("a {}", other.as_str()),
        }
    }

    /// Whether `value` is a value of this type (services are checked against the stack
    /// separately, so any name passes here).
    pub fn accepts(self, value: &str) -> Result<(), String> {
        match self {
            ParamType::String => Ok(()),
            ParamType::Int => value
                .parse::<i64>()
                .map(|_| ())
                .map_err(|_| format!("`{value}` is not a whole number")),
            ParamType::Bool => match value {
                "true" | "false" => Ok(()),
                _ => Err(format!("`{value}` is not `true` or `false`")),
            },
            ParamType::Duration => crate::units::parse_duration(value)
                .map(|_| ())
                .map_err(|why| format!("`{value}` is not a duration: {why}")),
            ParamType::Service => {
                if crate::compile::is_name(value) {
                    Ok(())
                } else {
                    Err(format!("`{value}` is not a service name"))
                }
            }
        }
    }
}

/// One step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepDecl {
    /// `name:` (or the action's name).
    pub name: String,
    /// What it does.
    pub action: Action,
    /// `timeout:` (ms).
    pub timeout_ms: u64,
    /// `retries:`: further attempts after a failure.
    pub retries: u32,
    /// `on_failure:`.
    pub on_failure: OnFailure,
}

/// The default step timeout.
pub const DEFAULT_STEP_TIMEOUT_MS: u64 = 60_000;
/// The default timeout of an approval step.
pub const DEFAULT_APPROVAL_TIMEOUT_MS: u64 = 3_600_000;

/// What happens when a step fails after its retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnFailure {
    /// The run fails (the default).
    Abort,
    /// The next step runs; the run still reports the failure.
    Continue,
    /// This runbook runs (with the same parameters where it declares them), then the run fails.
    Runbook(String),
}

/// The built-in actions. Values are text that may hold `${{ params.NAME }}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Restart every instance of a service.
    Restart {
        /// The service.
        service: String,
    },
    /// Deploy a service's previous release (or `to:`).
    Rollback {
        /// The service.
        service: String,
        /// A release id or prefix.
        to: Option<String>,
    },
    /// Set a service's replicas.
    Scale {
        /// The service.
        service: String,
        /// How many.
        replicas: String,
    },
    /// Run a program: `argv` as given, or `sh -c` with a script (`run:`).
    Command {
        /// The program and its arguments.
        argv: Vec<String>,
    },
    /// An HTTP request that must answer with `expect`.
    Http {
        /// `GET`, `POST`, ...
        method: String,
        /// An `http://` URL.
        url: String,
        /// The status expected.
        expect: u16,
    },
    /// Wait until a PromQL query returns something (within the step's timeout).
    Wait {
        /// The query.
        query: String,
    },
    /// Send a message to a receiver of `receivers:`.
    Notify {
        /// The receiver.
        receiver: String,
        /// The text.
        message: String,
    },
    /// Run another runbook.
    Runbook {
        /// Its name.
        name: String,
        /// Its parameters.
        params: BTreeMap<String, String>,
    },
    /// Wait for `kiln runbook approve RUN_ID` (within the step's timeout).
    Approve {
        /// What the approver is asked.
        message: String,
    },
    /// Take one instance out of the ingress's rotation, wait for its requests in flight,
    /// then do `then`.
    Drain {
        /// The service.
        service: String,
        /// Which instance: `1`, `api/1` or `api@1a2b3c4d/1` (as `kiln ps` and `kiln logs`
        /// name them).
        instance: String,
        /// How long to wait for requests in flight (ms).
        timeout_ms: u64,
        /// What happens to the instance afterwards.
        then: DrainThen,
    },
    /// Put an instance a `drain` with `then: keep` took out back into rotation.
    Undrain {
        /// The service.
        service: String,
        /// Which instance, as for `drain`.
        instance: String,
    },
    /// Put a route in maintenance (the ingress answers with a page), or end it.
    Maintenance {
        /// The route: its name as `routes:` gives it (`name:`, or after host and path).
        route: String,
        /// The page; `None` for `off: true`.
        page: Option<MaintenancePage>,
    },
}

/// What a `maintenance` step puts on its route, as written (values may hold placeholders;
/// [`MaintenancePage::resolve`] reads them once substituted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenancePage {
    /// `for:`, how long: a duration.
    pub duration: String,
    /// `status:`, a 4xx or 5xx status (default 503).
    pub status: String,
    /// `message:`, the page's text.
    pub message: String,
    /// `retry_after:`, a duration; `None`: the time left.
    pub retry_after: Option<String>,
}

/// The status of a maintenance page when `status:` is not given.
pub const DEFAULT_MAINTENANCE_STATUS: u16 = 503;
/// The text of a maintenance page when `message:` is not given.
pub const DEFAULT_MAINTENANCE_MESSAGE: &str = "Down for maintenance. Back soon.";

/// A maintenance page with its values read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPage {
    /// How long (ms).
    pub duration_ms: u64,
    /// The status.
    pub status: u16,
    /// The text.
    pub message: String,
    /// An explicit `Retry-After` (ms).
    pub retry_after_ms: Option<u64>,
}

impl MaintenancePage {
    /// Reads the values (after substitution); the first that does not fit is the error.
    pub fn resolve(&self) -> Result<ResolvedPage, String> {
        Ok(ResolvedPage {
            duration_ms: positive_duration(&self.duration).map_err(|why| format!("for: {why}"))?,
            status: maintenance_status(&self.status)?,
            message: self.message.clone(),
            retry_after_ms: self
                .retry_after
                .as_deref()
                .map(positive_duration)
                .transpose()
                .map_err(|why| format!("retry_after: {why}"))?,
        })
    }
}

/// A duration above zero, in ms.
pub fn positive_duration(text: &str) -> Result<u64, String> {
    match crate::units::parse_duration(text) {
        Ok(0) => Err(format!(
            "`{text}` is zero; give a duration above zero, e.g. `10m`"
        )),
        Ok(ms) => Ok(ms),
        Err(why) => Err(format!("`{text}` is not a duration: {why}")),
    }
}

/// A maintenance page's status: a 4xx or 5xx.
pub fn maintenance_status(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(status) if (400..=599).contains(&status) => Ok(status),
        Ok(status) => Err(format!(
            "status {status} is not an error: a maintenance page answers with a 4xx or 5xx (503 as a rule)"
        )),
        Err(_) => Err(format!("`{text}` is not an HTTP status like `503`")),
    }
}

/// What a `drain` does with the instance once its requests in flight are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainThen {
    /// Restart it; it rejoins the rotation once ready.
    Restart,
    /// Leave it running out of rotation until an `undrain` step or its next restart
    /// (`kiln restart`, a deploy, a crash).
    Keep,
}

impl DrainThen {
    /// Every choice, as written after `then:`.
    pub const ALL: [(&'static str, DrainThen); 2] =
        [("restart", DrainThen::Restart), ("keep", DrainThen::Keep)];

    /// The choice as written.
    pub fn as_str(self) -> &'static str {
        match self {
            DrainThen::Restart => "restart",
            DrainThen::Keep => "keep",
        }
    }
}

/// An instance as a `drain` names it: `1`, `api/1` or `api@1a2b3c4d/1` → the part before the
/// slash (a service or one of its sets), if any, and the instance number.
pub fn parse_instance(text: &str) -> Option<(Option<&str>, u32)> {
    let (prefix, number) = match text.rsplit_once('/') {
        Some((prefix, number)) => (Some(prefix), number),
        None => (None, text),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index = number.parse().ok()?;
    match prefix {
        Some(p) if p.is_empty() || p.contains(char::is_whitespace) => None,
        _ => Some((prefix, index)),
    }
}

/// How long a drain waits for requests in flight when `timeout:` is not given.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 30_000;

impl Action {
    /// The action's name as written after `action:`.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Restart { .. } => "restart",
            Action::Rollback { .. } => "rollback",
            Action::Scale { .. } => "scale",
            Action::Command { .. } => "command",
            Action::Http { .. } => "http",
            Action::Wait { .. } => "wait",
            Action::Notify { .. } => "notify",
            Action::Runbook { .. } => "runbook",
            Action::Approve { .. } => "approve",
            Action::Drain { .. } => "drain",
            Action::Undrain { .. } => "undrain",
            Action::Maintenance { .. } => "maintenance",
        }
    }

    /// Every text value of the action, for substitution and checks.
    pub fn texts_mut(&mut self) -> Vec<&mut String> {
        match self {
            Action::Restart { service } => vec![service],
            Action::Rollback { service, to } => {
                let mut v = vec![service];
                v.extend(to.as_mut());
                v
            }
            Action::Scale { service, replicas } => vec![service, replicas],
            Action::Command { argv } => argv.iter_mut().collect(),
            Action::Http { method, url, .. } => vec![method, url],
            Action::Wait { query } => vec![query],
            Action::Notify { receiver, message } => vec![receiver, message],
            Action::Runbook { params, .. } => params.values_mut().collect(),
            Action::Approve { message } => vec![message],
            Action::Drain {
                service, instance, ..
            }
            | Action::Undrain { service, instance } => vec![service, instance],
            Action::Maintenance { route, page } => {
                let mut v = vec![route];
                if let Some(page) = page {
                    v.extend([&mut page.duration, &mut page.status, &mut page.message]);
                    v.extend(page.retry_after.as_mut());
                }
                v
            }
        }
    }
}

/// `guards:`: what keeps automatic remediation from looping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guards {
    /// At most this many runs per target ...
    pub max_runs: u32,
    /// ... within this window (ms).
    pub per_ms: u64,
    /// Who is told when the limit refuses a run (a receiver).
    pub escalate: Option<String>,
    /// At most this many distinct targets within the window (the blast radius).
    pub max_targets: u32,
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            max_runs: 3,
            per_ms: 3_600_000,
            escalate: None,
            max_targets: 5,
        }
    }
}

/// A `${{ ... }}` placeholder in a runbook value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    /// Byte range of the whole `${{ ... }}`.
    pub range: std::ops::Range<usize>,
    /// The parameter named, or why the expression is not one.
    pub param: Result<String, String>,
}

/// The placeholders of a value, in order. Only `${{ params.NAME }}` is allowed; anything else
/// comes back as an error, and an unclosed `${{` as an error for the rest of the text.
pub fn placeholders(text: &str) -> Vec<Placeholder> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(start) = text[from..].find("${{").map(|i| i + from) {
        let body_start = start + 3;
        let Some(end) = text[body_start..].find("}}").map(|i| i + body_start) else {
            out.push(Placeholder {
                range: start..text.len(),
                param: Err("`${{` is never closed with `}}`".into()),
            });
            break;
        };
        let body = text[body_start..end].trim();
        let param = match body.strip_prefix("params.") {
            Some(name) if crate::compile::is_name(name) => Ok(name.to_owned()),
            _ => Err(format!(
                "`{body}`: a runbook value may only refer to its parameters, as `params.NAME`"
            )),
        };
        out.push(Placeholder {
            range: start..end + 2,
            param,
        });
        from = end + 2;
    }
    out
}

/// Replaces every `${{ params.NAME }}` of `text` with its value; a placeholder naming no given
/// parameter is left as written (validation makes that impossible for declared runbooks).
pub fn substitute(text: &str, params: &BTreeMap<String, String>) -> String {
    substitute_with(text, params, str::to_owned)
}

/// [`substitute`] for a shell script (`run:`): each value is single-quoted, so a parameter
/// (which may come from an alert's labels) is always one word and never shell syntax.
pub fn substitute_in_script(text: &str, params: &BTreeMap<String, String>) -> String {
    substitute_with(text, params, |v| format!("'{}'", v.replace('\'', r"'\''")))
}

fn substitute_with(
    text: &str,
    params: &BTreeMap<String, String>,
    render: impl Fn(&str) -> String,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for p in placeholders(text) {
        if let Ok(name) = &p.param
            && let Some(value) = params.get(name)
        {
            out.push_str(&text[last..p.range.start]);
            out.push_str(&render(value));
            last = p.range.end;
        }
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_name_parameters_and_refuse_anything_else() {
        let found = placeholders("restart ${{ params.service }} in ${{params.env}} ${{ vars.x }}");
        let params: Vec<_> = found.iter().map(|p| p.param.clone()).collect();
        assert_eq!(params[0], Ok("service".into()));
        assert_eq!(params[1], Ok("env".into()));
        assert!(params[2].is_err());
        assert!(placeholders("a ${{ params.x")[0].param.is_err());
        assert!(placeholders("no placeholders").is_empty());
    }

    #[test]
    fn substitution_replaces_known_parameters_only() {
        let params = BTreeMap::from([("service".to_owned(), "api".to_owned())]);
        assert_eq!(
            substitute("kiln restart ${{ params.service }}!", &params),
            "kiln restart api!"
        );
        assert_eq!(
            substitute("${{ params.other }}", &params),
            "${{ params.other }}"
        );
    }

    #[test]
    fn a_script_gets_each_value_as_one_quoted_word() {
        let params = BTreeMap::from([("x".to_owned(), "a'; rm -rf / #".to_owned())]);
        assert_eq!(
            substitute_in_script("echo ${{ params.x }}", &params),
            r"echo 'a'\''; rm -rf / #'"
        );
    }

    #[test]
    fn instances_are_numbers_optionally_after_their_service_or_set() {
        assert_eq!(parse_instance("1"), Some((None, 1)));
        assert_eq!(parse_instance("api/0"), Some((Some("api"), 0)));
        assert_eq!(
            parse_instance("api@1a2b3c4d/2"),
            Some((Some("api@1a2b3c4d"), 2))
        );
        for bad in ["", "api", "api-1", "api/", "/1", "api/x", "api/-1", "1.5"] {
            assert_eq!(parse_instance(bad), None, "{bad}");
        }
    }

    #[test]
    fn maintenance_pages_resolve_their_values() {
        let page = MaintenancePage {
            duration: "10m".into(),
            status: "503".into(),
            message: "Back soon".into(),
            retry_after: Some("1m".into()),
        };
        assert_eq!(
            page.resolve(),
            Ok(ResolvedPage {
                duration_ms: 600_000,
                status: 503,
                message: "Back soon".into(),
                retry_after_ms: Some(60_000),
            })
        );
        let bad = |f: fn(&mut MaintenancePage)| {
            let mut p = page.clone();
            f(&mut p);
            p.resolve().unwrap_err()
        };
        assert!(bad(|p| p.duration = "0s".into()).contains("zero"));
        assert!(bad(|p| p.duration = "soon".into()).starts_with("for: `soon` is not a duration"));
        assert!(bad(|p| p.status = "200".into()).contains("4xx or 5xx"));
        assert!(bad(|p| p.status = "x".into()).contains("not an HTTP status"));
        assert!(bad(|p| p.retry_after = Some("-1s".into())).starts_with("retry_after:"));
    }

    #[test]
    fn parameter_types_check_their_values() {
        assert!(ParamType::Int.accepts("3").is_ok());
        assert!(ParamType::Int.accepts("three").is_err());
        assert!(ParamType::Bool.accepts("yes").is_err());
        assert!(ParamType::Duration.accepts("30s").is_ok());
        assert!(ParamType::Duration.accepts("soon").is_err());
        assert!(ParamType::Service.accepts("api").is_ok());
    }
}
