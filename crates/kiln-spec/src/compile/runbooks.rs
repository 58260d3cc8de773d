//! Compiles `runbooks:` (root file only) into [`Runbooks`]: parameters and their defaults,
//! steps and the arguments of each built-in action, guards. Every value is checked where it is
//! written: `${{ params.NAME }}` must name a declared parameter of a fitting type, services,
//! receivers and runbooks must exist, queries must parse. Calls between runbooks (steps with
//! `action: runbook` and `on_failure: NAME`) must not loop; alerts' `runbook:` must name a
//! declared runbook. Runs after `compile_alerting`, which provides the receivers.

use std::collections::BTreeMap;

use super::Compiler;
use crate::alerting::ReceiverDecl;
use crate::diag::{Code, Diagnostic};
use crate::runbooks::{
    Action, DEFAULT_APPROVAL_TIMEOUT_MS, DEFAULT_DRAIN_TIMEOUT_MS, DEFAULT_MAINTENANCE_MESSAGE,
    DEFAULT_MAINTENANCE_STATUS, DEFAULT_STEP_TIMEOUT_MS, DrainThen, Guards, MaintenancePage,
    OnFailure, ParamDecl, ParamType, RunbookDecl, Runbooks, StepDecl, maintenance_status,
    parse_instance, placeholders, positive_duration,
};
use crate::source::Span;
use crate::suggest::closest;
use crate::yaml::{Key, Node, Value as Y};

const RUNBOOK_KEYS: &[&str] = &["description", "params", "steps", "guards"];
const PARAM_KEYS: &[&str] = &["type", "default", "required", "description"];
const STEP_KEYS: &[&str] = &[
    "name",
    "action",
    "with",
    "run",
    "timeout",
    "retries",
    "on_failure",
];
const GUARD_KEYS: &[&str] = &["max_runs", "per", "escalate", "max_targets"];
/// Each action with the keys its `with:` takes; required keys first, up to the count.
const ACTIONS: &[(&str, &[&str], usize)] = &[
    ("restart", &["service"], 1),
    ("rollback", &["service", "to"], 1),
    ("scale", &["service", "replicas"], 2),
    ("command", &["argv"], 1),
    ("http", &["url", "method", "expect"], 1),
    ("wait", &["query"], 1),
    ("notify", &["receiver", "message"], 2),
    ("runbook", &["name", "params"], 1),
    ("approve", &["message"], 0),
    ("drain", &["service", "instance", "timeout", "then"], 2),
    ("undrain", &["service", "instance"], 2),
    (
        "maintenance",
        &["route", "for", "status", "message", "retry_after", "off"],
        1,
    ),
];
/// The keys of a `maintenance` step that describe the page (none of them goes with `off`).
const PAGE_KEYS: &[&str] = &["for", "status", "message", "retry_after"];
const MAX_RETRIES: u32 = 10;

/// What a runbook value must be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    Text,
    Service,
    Count,
    Receiver,
    Url,
    Query,
    Instance,
    Route,
    Duration,
    Status,
}

/// What the checks of one runbook need to know about the others.
struct Context<'a> {
    runbook: &'a str,
    params: &'a BTreeMap<String, ParamDecl>,
    all_params: &'a BTreeMap<String, BTreeMap<String, ParamDecl>>,
    receivers: &'a [ReceiverDecl],
}

impl Compiler<'_> {
    /// `runbooks:` of the root file, and the alerts' `runbook:` names checked against it.
    pub(super) fn compile_runbooks(
        &mut self,
        entries: &[(Key, Node)],
        receivers: &[ReceiverDecl],
    ) -> Runbooks {
        let mut runbooks = Runbooks::new();
        let declared: Vec<(&Key, &Node)> = match entries.iter().find(|(k, _)| k.text == "runbooks")
        {
            Some((_, node)) => match self.map(
                node,
                "runbooks",
                "a mapping of runbook names to runbooks: `restart-api: { steps: [...] }`",
            ) {
                Some(items) => items.iter().map(|(k, v)| (k, v)).collect(),
                None => Vec::new(),
            },
            None => Vec::new(),
        };
        // Parameters first, so a call can be checked against a runbook declared after it.
        let mut all_params = BTreeMap::new();
        let mut bodies = Vec::new();
        for (key, node) in &declared {
            let path = format!("runbooks.{}", key.text);
            if !super::is_name(&key.text) {
                self.invalid(
                    key.span,
                    &path,
                    format!("`{}` is not a valid runbook name", key.text),
                    "use letters, digits, `-` and `_`, starting with a letter",
                );
                continue;
            }
            let Some(fields) = self.map(
                node,
                &path,
                "a runbook: `{ description: ..., params: {...}, steps: [...] }`",
            ) else {
                continue;
            };
            self.check_keys(fields, RUNBOOK_KEYS, &path, "a runbook");
            let params = match fields.iter().find(|(k, _)| k.text == "params") {
                Some((_, v)) => self.params(v, &format!("{path}.params")),
                None => BTreeMap::new(),
            };
            all_params.insert(key.text.clone(), params);
            bodies.push((*key, *node, fields));
        }
        let mut calls: Vec<(String, String, Span)> = Vec::new();
        for (key, node, fields) in bodies {
            let name = key.text.clone();
            let path = format!("runbooks.{name}");
            let get = |k: &str| fields.iter().find(|(key, _)| key.text == k).map(|(_, v)| v);
            let description = get("description")
                .and_then(|v| self.string(v, &format!("{path}.description")))
                .unwrap_or_default();
            let params = all_params.get(&name).cloned().unwrap_or_default();
            let cx = Context {
                runbook: &name,
                params: &params,
                all_params: &all_params,
                receivers,
            };
            let guards = match get("guards") {
                Some(v) => self.guards(v, &format!("{path}.guards"), &cx),
                None => Guards::default(),
            };
            let steps = match get("steps") {
                Some(v) => self.steps(v, &format!("{path}.steps"), &cx, &mut calls),
                None => {
                    self.missing(
                        node.span,
                        &path,
                        "steps",
                        "a runbook has no `steps`",
                        "add `steps: [ { action: restart, with: { service: api } } ]`",
                    );
                    Vec::new()
                }
            };
            runbooks.insert(
                name.clone(),
                RunbookDecl {
                    name,
                    description,
                    params,
                    steps,
                    guards,
                    span: key.span,
                },
            );
        }
        self.runbook_cycles(&all_params, &calls);
        self.alert_runbooks(entries, &all_params);
        runbooks
    }

    fn params(&mut self, node: &Node, path: &str) -> BTreeMap<String, ParamDecl> {
        let mut out = BTreeMap::new();
        let Some(entries) = self.map(
            node,
            path,
            "a mapping of parameter names: `service: { type: service, required: true }`",
        ) else {
            return out;
        };
        for (key, value) in entries {
            let param_path = format!("{path}.{}", key.text);
            if !super::is_name(&key.text) {
                self.invalid(
                    key.span,
                    &param_path,
                    format!("`{}` is not a valid parameter name", key.text),
                    "use letters, digits, `-` and `_`, starting with a letter",
                );
                continue;
            }
            if let Some(param) = self.param(value, &param_path) {
                out.insert(key.text.clone(), param);
            }
        }
        out
    }

    fn param(&mut self, node: &Node, path: &str) -> Option<ParamDecl> {
        let entries = self.map(node, path, "a parameter: `{ type: service, default: api }`")?;
        self.check_keys(entries, PARAM_KEYS, path, "a parameter");
        let get = |k: &str| {
            entries
                .iter()
                .find(|(key, _)| key.text == k)
                .map(|(_, v)| v)
        };
        let types: Vec<&str> = ParamType::ALL.iter().map(|(n, _)| *n).collect();
        let ty = match get("type") {
            None => Some(ParamType::String),
            Some(v) => {
                let text = self.string(v, &format!("{path}.type"))?;
                let found = ParamType::ALL
                    .iter()
                    .find(|(n, _)| *n == text)
                    .map(|(_, t)| *t);
                if found.is_none() {
                    let help = match closest(&text, types.iter().copied()) {
                        Some(best) => format!("did you mean `{best}`?"),
                        None => format!("use one of {}", types.join(", ")),
                    };
                    self.invalid(
                        v.span,
                        &format!("{path}.type"),
                        format!("`{text}` is not a parameter type"),
                        &help,
                    );
                }
                found
            }
        }?;
        let required = get("required")
            .map(|v| self.boolean(v, &format!("{path}.required")))
            .unwrap_or(false);
        let default = match get("default") {
            None => None,
            Some(v) => {
                let default_path = format!("{path}.default");
                let text = self.scalar_text(v, &default_path)?;
                if let Err(why) = ty.accepts(&text) {
                    self.emit(
                        Diagnostic::new(
                            Code::WrongType,
                            v.span,
                            &default_path,
                            format!("the default does not fit `type: {}`: {why}", ty.as_str()),
                        )
                        .label(format!("expected {}", ty.with_article()))
                        .help("change the default or the type"),
                    );
                    return None;
                }
                if ty == ParamType::Service && !self.service_exists(&text, v.span, &default_path) {
                    return None;
                }
                if required {
                    self.invalid(
                        v.span,
                        &default_path,
                        "a required parameter with a default is never missing".into(),
                        "remove `required: true` or the default",
                    );
                }
                Some(text)
            }
        };
        Some(ParamDecl {
            ty,
            default,
            required,
        })
    }

    fn guards(&mut self, node: &Node, path: &str, cx: &Context<'_>) -> Guards {
        let mut guards = Guards::default();
        let Some(entries) = self.map(
            node,
            path,
            "guards: `{ max_runs: 3, per: 1h, escalate: oncall, max_targets: 2 }`",
        ) else {
            return guards;
        };
        self.check_keys(entries, GUARD_KEYS, path, "`guards`");
        for (key, value) in entries {
            let key_path = format!("{path}.{}", key.text);
            match key.text.as_str() {
                "max_runs" => {
                    if let Some(n) = self.count(value, &key_path, 1) {
                        guards.max_runs = n;
                    }
                }
                "max_targets" => {
                    if let Some(n) = self.count(value, &key_path, 1) {
                        guards.max_targets = n;
                    }
                }
                "per" => {
                    if let Some(ms) = self.duration(value, &key_path) {
                        if ms == 0 {
                            self.invalid(
                                value.span,
                                &key_path,
                                "a guard window of zero counts nothing".into(),
                                "use e.g. `per: 1h`",
                            );
                        } else {
                            guards.per_ms = ms;
                        }
                    }
                }
                "escalate" => {
                    guards.escalate = self.runbook_value(value, &key_path, Expect::Receiver, cx);
                }
                _ => {}
            }
        }
        guards
    }

    fn steps(
        &mut self,
        node: &Node,
        path: &str,
        cx: &Context<'_>,
        calls: &mut Vec<(String, String, Span)>,
    ) -> Vec<StepDecl> {
        let Y::Seq(items) = &node.value else {
            self.wrong_type(
                node,
                path,
                "a list of steps: `- { action: restart, with: { service: api } }`",
            );
            return Vec::new();
        };
        if items.is_empty() {
            self.invalid(
                node.span,
                path,
                "a runbook without steps does nothing".into(),
                "add a step, e.g. `- { action: restart, with: { service: api } }`",
            );
        }
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.step(item, &format!("{path}[{i}]"), cx, calls))
            .collect()
    }

    fn step(
        &mut self,
        node: &Node,
        path: &str,
        cx: &Context<'_>,
        calls: &mut Vec<(String, String, Span)>,
    ) -> Option<StepDecl> {
        let entries = self.map(
            node,
            path,
            "a step: `{ action: restart, with: { service: api } }` or `{ run: ./fix.sh }`",
        )?;
        self.check_keys(entries, STEP_KEYS, path, "a step");
        let get = |k: &str| entries.iter().find(|(key, _)| key.text == k);
        let action = match (get("action"), get("run")) {
            (Some((_, kind)), None) => {
                self.action(kind, get("with").map(|(_, v)| v), path, cx, calls)
            }
            (None, Some((_, script))) => {
                if let Some((k, _)) = get("with") {
                    self.invalid(
                        k.span,
                        &format!("{path}.with"),
                        "`with:` belongs to `action:`; a `run:` step is a shell script".into(),
                        "remove `with:`, or write `action: command, with: { argv: [...] }`",
                    );
                }
                self.runbook_value(script, &format!("{path}.run"), Expect::Text, cx)
                    .map(|script| Action::Command {
                        argv: vec!["sh".into(), "-c".into(), script],
                    })
            }
            (Some((k, _)), Some(_)) => {
                self.invalid(
                    k.span,
                    path,
                    "a step has either `action:` or `run:`, not both".into(),
                    "split it into two steps",
                );
                None
            }
            (None, None) => {
                self.missing(
                    node.span,
                    path,
                    "action",
                    "a step has neither `action:` nor `run:`",
                    "add `action: restart, with: { service: api }` or `run: ./fix.sh`",
                );
                None
            }
        };
        let default_timeout = match &action {
            Some(Action::Approve { .. }) => DEFAULT_APPROVAL_TIMEOUT_MS,
            _ => DEFAULT_STEP_TIMEOUT_MS,
        };
        let timeout_ms = match get("timeout") {
            Some((_, v)) => self.duration(v, &format!("{path}.timeout")),
            None => Some(default_timeout),
        };
        let retries = match get("retries") {
            Some((_, v)) => {
                let n = self.count(v, &format!("{path}.retries"), 0)?;
                if n > MAX_RETRIES {
                    self.invalid(
                        v.span,
                        &format!("{path}.retries"),
                        format!("{n} retries: at most {MAX_RETRIES}"),
                        "a step that fails ten times will not pass on the eleventh; use `on_failure:` instead",
                    );
                    return None;
                }
                Some(n)
            }
            None => Some(0),
        };
        let on_failure = match get("on_failure") {
            None => Some(OnFailure::Abort),
            Some((_, v)) => self.on_failure(v, &format!("{path}.on_failure"), cx, calls),
        };
        let action = action?;
        if let (
            Action::Drain {
                timeout_ms: wait, ..
            },
            Some(step_ms),
        ) = (&action, timeout_ms)
            && step_ms <= *wait
        {
            let at = get("timeout").map_or(node.span, |(_, v)| v.span);
            self.invalid(
                at,
                &format!("{path}.timeout"),
                format!(
                    "the step's timeout ({}) leaves no time after the drain's wait ({})",
                    crate::units::format_duration(step_ms),
                    crate::units::format_duration(*wait)
                ),
                "give the step a longer `timeout:` than its `with: { timeout: ... }`, e.g. twice as long",
            );
            return None;
        }
        let name = match get("name") {
            Some((_, v)) => self.string(v, &format!("{path}.name"))?,
            None => action.kind().to_owned(),
        };
        Some(StepDecl {
            name,
            action,
            timeout_ms: timeout_ms?,
            retries: retries?,
            on_failure: on_failure?,
        })
    }

    fn on_failure(
        &mut self,
        node: &Node,
        path: &str,
        cx: &Context<'_>,
        calls: &mut Vec<(String, String, Span)>,
    ) -> Option<OnFailure> {
        let text = self.string(node, path)?;
        match text.as_str() {
            "abort" => return Some(OnFailure::Abort),
            "continue" => return Some(OnFailure::Continue),
            _ => {}
        }
        if !self.runbook_exists(&text, node.span, path, cx, "`abort`, `continue` or ") {
            return None;
        }
        // The fallback gets the caller's parameters: each one it requires must be one of them.
        for (name, param) in cx.all_params.get(&text).into_iter().flatten() {
            if param.required && param.default.is_none() && !cx.params.contains_key(name) {
                self.emit(
                    Diagnostic::new(
                        Code::MissingKey,
                        node.span,
                        path,
                        format!(
                            "runbook `{text}` requires the parameter `{name}`, which `{}` does not have",
                            cx.runbook
                        ),
                    )
                    .label("its parameters come from this runbook's")
                    .help(format!(
                        "declare `{name}` in `runbooks.{}.params`, or give `{name}` a default in `{text}`",
                        cx.runbook
                    )),
                );
            }
        }
        calls.push((cx.runbook.to_owned(), text.clone(), node.span));
        Some(OnFailure::Runbook(text))
    }

    fn action(
        &mut self,
        kind_node: &Node,
        with: Option<&Node>,
        path: &str,
        cx: &Context<'_>,
        calls: &mut Vec<(String, String, Span)>,
    ) -> Option<Action> {
        let kind = self.string(kind_node, &format!("{path}.action"))?;
        let Some((_, keys, required)) = ACTIONS.iter().find(|(name, _, _)| *name == kind) else {
            let names: Vec<&str> = ACTIONS.iter().map(|(n, _, _)| *n).collect();
            let help = match closest(&kind, names.iter().copied()) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!("the actions are {}", names.join(", ")),
            };
            self.emit(
                Diagnostic::new(
                    Code::InvalidValue,
                    kind_node.span,
                    format!("{path}.action"),
                    format!("unknown action `{kind}`"),
                )
                .label("unknown action")
                .help(help),
            );
            return None;
        };
        let with_path = format!("{path}.with");
        let fields: &[(Key, Node)] = match with {
            Some(node) => self.map(
                node,
                &with_path,
                "the action's arguments: `{ service: api }`",
            )?,
            None => &[],
        };
        self.check_keys(fields, keys, &with_path, &format!("`{kind}`'s arguments"));
        let mut ok = true;
        for key in &keys[..*required] {
            if !fields.iter().any(|(k, _)| k.text == *key) {
                ok = false;
                self.missing(
                    with.map_or(kind_node.span, |n| n.span),
                    &with_path,
                    key,
                    &format!("the `{kind}` action needs `{key}`"),
                    &format!("add `with: {{ {key}: ... }}`"),
                );
            }
        }
        let get = |k: &str| fields.iter().find(|(key, _)| key.text == k).map(|(_, v)| v);
        let mut arg = |cx: &Context<'_>, key: &str, expect: Expect| -> Option<String> {
            let node = get(key)?;
            let value = self.runbook_value(node, &format!("{with_path}.{key}"), expect, cx);
            ok &= value.is_some();
            value
        };
        let action = match kind.as_str() {
            "restart" => Action::Restart {
                service: arg(cx, "service", Expect::Service).unwrap_or_default(),
            },
            "rollback" => Action::Rollback {
                service: arg(cx, "service", Expect::Service).unwrap_or_default(),
                to: arg(cx, "to", Expect::Text),
            },
            "scale" => Action::Scale {
                service: arg(cx, "service", Expect::Service).unwrap_or_default(),
                replicas: arg(cx, "replicas", Expect::Count).unwrap_or_default(),
            },
            "http" => {
                let method = arg(cx, "method", Expect::Text).unwrap_or_else(|| "GET".into());
                let url = arg(cx, "url", Expect::Url).unwrap_or_default();
                let expect = match get("expect") {
                    Some(v) => match v.value {
                        Y::Number(n) if n.fract() == 0.0 && (100.0..600.0).contains(&n) => n as u16,
                        _ => {
                            ok = false;
                            self.wrong_type(
                                v,
                                &format!("{with_path}.expect"),
                                "an HTTP status like `200`",
                            );
                            200
                        }
                    },
                    None => 200,
                };
                Action::Http {
                    method,
                    url,
                    expect,
                }
            }
            "wait" => Action::Wait {
                query: arg(cx, "query", Expect::Query).unwrap_or_default(),
            },
            "notify" => Action::Notify {
                receiver: arg(cx, "receiver", Expect::Receiver).unwrap_or_default(),
                message: arg(cx, "message", Expect::Text).unwrap_or_default(),
            },
            "approve" => Action::Approve {
                message: arg(cx, "message", Expect::Text)
                    .unwrap_or_else(|| "approve to continue".into()),
            },
            "drain" => {
                let service = arg(cx, "service", Expect::Service).unwrap_or_default();
                let instance = arg(cx, "instance", Expect::Instance).unwrap_or_default();
                let timeout_ms = match get("timeout") {
                    Some(v) => self.duration(v, &format!("{with_path}.timeout")),
                    None => Some(DEFAULT_DRAIN_TIMEOUT_MS),
                };
                let then = match get("then") {
                    Some(v) => self.drain_then(v, &format!("{with_path}.then")),
                    None => Some(DrainThen::Restart),
                };
                ok &= timeout_ms.is_some() && then.is_some();
                ok &= self.instance_of_service(&service, &instance, get("instance"), &with_path);
                Action::Drain {
                    service,
                    instance,
                    timeout_ms: timeout_ms.unwrap_or_default(),
                    then: then.unwrap_or(DrainThen::Restart),
                }
            }
            "undrain" => {
                let service = arg(cx, "service", Expect::Service).unwrap_or_default();
                let instance = arg(cx, "instance", Expect::Instance).unwrap_or_default();
                ok &= self.instance_of_service(&service, &instance, get("instance"), &with_path);
                Action::Undrain { service, instance }
            }
            "maintenance" => {
                let route = arg(cx, "route", Expect::Route).unwrap_or_default();
                // Read as written here; a value that is not a boolean is reported below.
                let off = matches!(get("off").map(|n| &n.value), Some(Y::Bool(true)));
                let page = (!off).then(|| MaintenancePage {
                    duration: arg(cx, "for", Expect::Duration).unwrap_or_default(),
                    status: arg(cx, "status", Expect::Status)
                        .unwrap_or_else(|| DEFAULT_MAINTENANCE_STATUS.to_string()),
                    message: arg(cx, "message", Expect::Text)
                        .unwrap_or_else(|| DEFAULT_MAINTENANCE_MESSAGE.to_owned()),
                    retry_after: arg(cx, "retry_after", Expect::Duration),
                });
                match get("off") {
                    // Whether a page was meant is unknown: only the value is reported.
                    Some(v) if !matches!(v.value, Y::Bool(_)) => {
                        ok = false;
                        self.boolean(v, &format!("{with_path}.off"));
                    }
                    _ => {
                        let at = with.map_or(kind_node.span, |n| n.span);
                        ok &= self.maintenance_keys(off, fields, at, &with_path);
                    }
                }
                Action::Maintenance { route, page }
            }
            "command" => match get("argv") {
                Some(node) => match &node.value {
                    Y::Seq(items) if !items.is_empty() => {
                        let argv: Vec<Option<String>> = items
                            .iter()
                            .enumerate()
                            .map(|(i, item)| {
                                self.runbook_value(
                                    item,
                                    &format!("{with_path}.argv[{i}]"),
                                    Expect::Text,
                                    cx,
                                )
                            })
                            .collect();
                        ok &= argv.iter().all(Option::is_some);
                        Action::Command {
                            argv: argv.into_iter().flatten().collect(),
                        }
                    }
                    _ => {
                        ok = false;
                        self.wrong_type(
                            node,
                            &format!("{with_path}.argv"),
                            "a program and its arguments: `[./fix.sh, --fast]`",
                        );
                        Action::Command { argv: Vec::new() }
                    }
                },
                None => Action::Command { argv: Vec::new() },
            },
            _ => {
                let name = match get("name") {
                    Some(node) => {
                        let name = self.string(node, &format!("{with_path}.name"));
                        match name {
                            Some(n)
                                if self.runbook_exists(
                                    &n,
                                    node.span,
                                    &format!("{with_path}.name"),
                                    cx,
                                    "",
                                ) =>
                            {
                                calls.push((cx.runbook.to_owned(), n.clone(), node.span));
                                n
                            }
                            _ => {
                                ok = false;
                                String::new()
                            }
                        }
                    }
                    None => String::new(),
                };
                let params = self.call_params(
                    &name,
                    get("params"),
                    with.map_or(kind_node.span, |n| n.span),
                    &with_path,
                    cx,
                );
                ok &= params.is_some();
                Action::Runbook {
                    name,
                    params: params.unwrap_or_default(),
                }
            }
        };
        ok.then_some(action)
    }

    /// `then:` of a drain.
    fn drain_then(&mut self, node: &Node, path: &str) -> Option<DrainThen> {
        let text = self.string(node, path)?;
        if let Some((_, then)) = DrainThen::ALL.iter().find(|(n, _)| *n == text) {
            return Some(*then);
        }
        let names: Vec<&str> = DrainThen::ALL.iter().map(|(n, _)| *n).collect();
        let help = if text == "stop" {
            "kiln cannot hold one instance of a service down yet: use `keep` (running, out of \
             rotation until `undrain`) or the `scale` action"
                .to_owned()
        } else {
            match closest(&text, names.iter().copied()) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!("use one of {}", names.join(", ")),
            }
        };
        self.emit(
            Diagnostic::new(
                Code::InvalidValue,
                node.span,
                path,
                format!("`{text}` is not what a drain can do next"),
            )
            .label(format!("expected one of {}", names.join(", ")))
            .help(help),
        );
        None
    }

    /// An instance written as `api/1` must belong to the drained service (when both are
    /// written out rather than parameters).
    fn instance_of_service(
        &mut self,
        service: &str,
        instance: &str,
        node: Option<&Node>,
        with_path: &str,
    ) -> bool {
        let (Some(node), Some((Some(prefix), _))) = (node, parse_instance(instance)) else {
            return true;
        };
        let named = prefix.split_once('@').map_or(prefix, |(s, _)| s);
        if service.is_empty() || !placeholders(service).is_empty() || named == service {
            return true;
        }
        self.emit(
            Diagnostic::new(
                Code::InvalidValue,
                node.span,
                format!("{with_path}.instance"),
                format!("instance `{instance}` is not an instance of `{service}`"),
            )
            .label(format!("an instance of `{named}`"))
            .help(format!(
                "name an instance of `{service}`, e.g. `{service}/1`, or just its number"
            )),
        );
        false
    }

    /// `with: { name: other, params: {...} }`: each parameter known to `other` and of its
    /// type; each one it requires given.
    fn call_params(
        &mut self,
        callee: &str,
        node: Option<&Node>,
        call_span: Span,
        path: &str,
        cx: &Context<'_>,
    ) -> Option<BTreeMap<String, String>> {
        let declared = cx.all_params.get(callee)?;
        let path = format!("{path}.params");
        let entries: &[(Key, Node)] = match node {
            Some(n) => self.map(n, &path, "the runbook's parameters: `{ service: api }`")?,
            None => &[],
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, value) in entries {
            let key_path = format!("{path}.{}", key.text);
            let Some(param) = declared.get(&key.text) else {
                ok = false;
                let help = match closest(&key.text, declared.keys().map(String::as_str)) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None if declared.is_empty() => format!("`{callee}` takes no parameters"),
                    None => format!(
                        "`{callee}` takes {}",
                        declared.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                };
                self.emit(
                    Diagnostic::new(
                        Code::UnknownKey,
                        key.span,
                        &key_path,
                        format!("runbook `{callee}` has no parameter `{}`", key.text),
                    )
                    .label("unknown parameter")
                    .help(help),
                );
                continue;
            };
            let expect = match param.ty {
                ParamType::Service => Expect::Service,
                ParamType::Int => Expect::Count,
                _ => Expect::Text,
            };
            match self.runbook_value(value, &key_path, expect, cx) {
                Some(text) => {
                    if placeholders(&text).is_empty()
                        && let Err(why) = param.ty.accepts(&text)
                    {
                        ok = false;
                        self.emit(
                            Diagnostic::new(
                                Code::WrongType,
                                value.span,
                                &key_path,
                                format!(
                                    "`{}` of `{callee}` is {}: {why}",
                                    key.text,
                                    param.ty.with_article()
                                ),
                            )
                            .label(format!("expected {}", param.ty.with_article()))
                            .help(format!("give {}", param.ty.with_article())),
                        );
                        continue;
                    }
                    out.insert(key.text.clone(), text);
                }
                None => ok = false,
            }
        }
        for (name, param) in declared {
            if param.required
                && param.default.is_none()
                && !out.contains_key(name)
                && !entries.iter().any(|(k, _)| &k.text == name)
            {
                ok = false;
                self.missing(
                    node.map_or(call_span, |n| n.span),
                    &path,
                    name,
                    &format!("runbook `{callee}` requires the parameter `{name}`"),
                    &format!("add `params: {{ {name}: ... }}`"),
                );
            }
        }
        ok.then_some(out)
    }

    /// Checks one value: its placeholders, then what it must be.
    fn runbook_value(
        &mut self,
        node: &Node,
        path: &str,
        expect: Expect,
        cx: &Context<'_>,
    ) -> Option<String> {
        let text = self.scalar_text(node, path)?;
        let found = placeholders(&text);
        let mut ok = true;
        for p in &found {
            let span = super::text_span(
                &self.sources,
                node.span,
                &text,
                p.range.start,
                p.range.len(),
            );
            match &p.param {
                Err(why) => {
                    ok = false;
                    self.emit(
                        Diagnostic::new(Code::BadExpression, span, path, why.clone())
                            .label("not a parameter")
                            .help("write `${{ params.NAME }}` with NAME declared under the runbook's `params:`"),
                    );
                }
                Ok(name) if !cx.params.contains_key(name) => {
                    ok = false;
                    let help = match closest(name, cx.params.keys().map(String::as_str)) {
                        Some(best) => format!("did you mean `{best}`?"),
                        None => format!(
                            "declare it: `runbooks.{}.params: {{ {name}: {{ type: string }} }}`",
                            cx.runbook
                        ),
                    };
                    self.emit(
                        Diagnostic::new(
                            Code::UnknownReference,
                            span,
                            path,
                            format!("runbook `{}` has no parameter `{name}`", cx.runbook),
                        )
                        .label("undeclared parameter")
                        .help(help),
                    );
                }
                Ok(_) => {}
            }
        }
        if !ok {
            return None;
        }
        if let [only] = found.as_slice() {
            if expect == Expect::Receiver {
                self.invalid(
                    node.span,
                    path,
                    "a receiver is named as written, not by a parameter".into(),
                    "name a receiver of `receivers:`",
                );
                return None;
            }
            let whole = only.range.start == 0 && only.range.end == text.len();
            let wanted = match expect {
                Expect::Service => Some(ParamType::Service),
                Expect::Count | Expect::Status => Some(ParamType::Int),
                Expect::Duration => Some(ParamType::Duration),
                _ => None,
            };
            if let (Some(wanted), Ok(name)) = (wanted, &only.param) {
                let declared = cx.params.get(name).map(|p| p.ty);
                if !whole || declared != Some(wanted) {
                    self.emit(
                        Diagnostic::new(
                            Code::WrongType,
                            node.span,
                            path,
                            format!(
                                "expected {}, found {}",
                                wanted.with_article(),
                                if whole {
                                    format!("`params.{name}` of type {}", declared.map_or("string", ParamType::as_str))
                                } else {
                                    "text around a parameter".to_owned()
                                }
                            ),
                        )
                        .label(format!("expected {}", wanted.with_article()))
                        .help(format!(
                            "write `${{{{ params.{name} }}}}` alone and declare `{name}: {{ type: {} }}`",
                            wanted.as_str()
                        )),
                    );
                    return None;
                }
            }
            return Some(text);
        }
        if !found.is_empty() {
            return Some(text);
        }
        let fits = match expect {
            Expect::Text => true,
            Expect::Service => self.service_exists(&text, node.span, path),
            Expect::Count => {
                let fits = text.parse::<u32>().is_ok();
                if !fits {
                    self.wrong_type(node, path, "a whole number like `3`");
                }
                fits
            }
            Expect::Receiver => {
                let fits = cx.receivers.iter().any(|r| r.name == text);
                if !fits {
                    let help = match closest(&text, cx.receivers.iter().map(|r| r.name.as_str())) {
                        Some(best) => format!("did you mean `{best}`?"),
                        None => "declare it under `receivers:`".to_owned(),
                    };
                    self.emit(
                        Diagnostic::new(
                            Code::UnknownReference,
                            node.span,
                            path,
                            format!("no receiver named `{text}`"),
                        )
                        .label("unknown receiver")
                        .help(help),
                    );
                }
                fits
            }
            Expect::Url => {
                let fits = text.starts_with("http://")
                    && text.len() > "http://".len()
                    && !text.contains(char::is_whitespace);
                if !fits {
                    self.invalid(
                        node.span,
                        path,
                        format!("`{text}` is not an http:// URL"),
                        "write the full URL, e.g. `http://127.0.0.1:8080/health`",
                    );
                }
                fits
            }
            Expect::Query => self.promql(node, path).is_some(),
            Expect::Route => self.route_exists(&text, node.span, path),
            Expect::Duration => self.checked(
                node,
                path,
                positive_duration(&text),
                "a duration above zero",
            ),
            Expect::Status => {
                self.checked(node, path, maintenance_status(&text), "a 4xx or 5xx status")
            }
            Expect::Instance => {
                let fits = parse_instance(&text).is_some();
                if !fits {
                    self.invalid(
                        node.span,
                        path,
                        format!("`{text}` does not name an instance"),
                        "write its number (`1`) or the service and number as `kiln ps` shows them (`api/1`)",
                    );
                }
                fits
            }
        };
        fits.then_some(text)
    }

    /// A scalar as text: strings as written, numbers and booleans as YAML prints them.
    fn scalar_text(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Y::String { text, .. } => Some(text.clone()),
            Y::Number(n) => Some(n.to_string()),
            Y::Bool(b) => Some(b.to_string()),
            _ => {
                self.wrong_type(node, path, "a string, number or boolean");
                None
            }
        }
    }

    fn count(&mut self, node: &Node, path: &str, min: u32) -> Option<u32> {
        match node.value {
            Y::Number(n) if n.fract() == 0.0 && n >= f64::from(min) && n <= f64::from(u32::MAX) => {
                Some(n as u32)
            }
            _ => {
                self.wrong_type(node, path, &format!("a whole number of at least {min}"));
                None
            }
        }
    }

    /// `off: true` takes no page keys; a page needs `for`. Whether the keys fit.
    fn maintenance_keys(
        &mut self,
        off: bool,
        fields: &[(Key, Node)],
        with_span: Span,
        with_path: &str,
    ) -> bool {
        if !off {
            if fields.iter().any(|(k, _)| k.text == "for") {
                return true;
            }
            self.missing(
                with_span,
                with_path,
                "for",
                "the `maintenance` action needs `for` (how long the page stays up)",
                "add `for: 10m`, or `off: true` to end a maintenance",
            );
            return false;
        }
        let mut ok = true;
        for (key, _) in fields
            .iter()
            .filter(|(k, _)| PAGE_KEYS.contains(&k.text.as_str()))
        {
            ok = false;
            self.invalid(
                key.span,
                &format!("{with_path}.{}", key.text),
                format!(
                    "`{}` has no meaning with `off: true`, which ends the maintenance",
                    key.text
                ),
                &format!(
                    "remove `{}:`, or remove `off: true` to start a maintenance",
                    key.text
                ),
            );
        }
        ok
    }

    /// Reports `result`'s error at `node` (expected: `expected`); whether it was fine.
    fn checked<T>(
        &mut self,
        node: &Node,
        path: &str,
        result: Result<T, String>,
        expected: &str,
    ) -> bool {
        let Err(why) = result else {
            return true;
        };
        self.emit(
            Diagnostic::new(Code::InvalidValue, node.span, path, why)
                .label(format!("expected {expected}"))
                .help(format!("give {expected}, e.g. `{}`", example(expected))),
        );
        false
    }

    /// A route named as `routes:` names it (`web`), or by its address (`routes.web`,
    /// `environments.staging.routes.web`).
    fn route_exists(&mut self, name: &str, span: Span, path: &str) -> bool {
        let is_route = |a: &str| {
            self.resources
                .get(a)
                .is_some_and(|r| r.kind == crate::schema::ROUTE.kind)
        };
        if is_route(&format!("routes.{name}")) || is_route(name) {
            return true;
        }
        self.unknown_route(name, span, path);
        false
    }

    /// "no route named `x`", with the closest declared route or the known ones.
    pub(super) fn unknown_route(&mut self, name: &str, span: Span, path: &str) {
        let known: Vec<&str> = self
            .resources
            .iter()
            .filter(|(_, r)| r.kind == crate::schema::ROUTE.kind)
            .filter_map(|(a, _)| a.strip_prefix("routes."))
            .collect();
        let help = match closest(name, known.iter().copied()) {
            Some(best) => format!("did you mean `{best}`?"),
            None if known.is_empty() => "the stack declares no `routes:`".to_owned(),
            None => format!(
                "routes are named by `name:` or after host and path; known: {}",
                known.join(", ")
            ),
        };
        self.emit(
            Diagnostic::new(
                Code::UnknownReference,
                span,
                path,
                format!("no route named `{name}`"),
            )
            .label("unknown route")
            .help(help),
        );
    }

    fn service_exists(&mut self, name: &str, span: Span, path: &str) -> bool {
        if self.resources.contains_key(&format!("services.{name}")) {
            return true;
        }
        let known: Vec<&str> = self
            .resources
            .keys()
            .filter_map(|a| a.strip_prefix("services."))
            .collect();
        let help = match closest(name, known.iter().copied()) {
            Some(best) => format!("did you mean `{best}`?"),
            None => "name a service declared under `services:`".to_owned(),
        };
        self.emit(
            Diagnostic::new(
                Code::UnknownReference,
                span,
                path,
                format!("no service named `{name}`"),
            )
            .label("unknown service")
            .help(help),
        );
        false
    }

    fn runbook_exists(
        &mut self,
        name: &str,
        span: Span,
        path: &str,
        cx: &Context<'_>,
        alternatives: &str,
    ) -> bool {
        if cx.all_params.contains_key(name) {
            return true;
        }
        let help = match closest(name, cx.all_params.keys().map(String::as_str)) {
            Some(best) => format!("did you mean `{best}`?"),
            None => format!("use {alternatives}a runbook declared under `runbooks:`"),
        };
        self.emit(
            Diagnostic::new(
                Code::UnknownReference,
                span,
                path,
                format!("no runbook named `{name}`"),
            )
            .label("unknown runbook")
            .help(help),
        );
        false
    }

    /// Runbooks that call each other in a loop would run forever: one diagnostic per loop,
    /// with every call of it.
    fn runbook_cycles(
        &mut self,
        runbooks: &BTreeMap<String, BTreeMap<String, ParamDecl>>,
        calls: &[(String, String, Span)],
    ) {
        let names: Vec<&str> = runbooks.keys().map(String::as_str).collect();
        let index = |n: &str| names.iter().position(|m| *m == n);
        let mut edges = vec![Vec::new(); names.len()];
        for (from, to, _) in calls {
            if let (Some(f), Some(t)) = (index(from), index(to))
                && !edges[f].contains(&t)
            {
                edges[f].push(t);
            }
        }
        let span_of = |from: &str, to: &str| {
            calls
                .iter()
                .find(|(f, t, _)| f == from && t == to)
                .map(|(_, _, s)| *s)
        };
        for component in crate::resolve::strongly_connected(&edges) {
            let first = component[0];
            if component.len() == 1 && !edges[first].contains(&first) {
                continue;
            }
            let cycle: Vec<&str> = crate::resolve::cycle_path(&edges, &component)
                .into_iter()
                .map(|i| names[i])
                .collect();
            let Some(span) = span_of(cycle[0], cycle[1]) else {
                continue;
            };
            let mut d = Diagnostic::new(
                Code::Cycle,
                span,
                format!("runbooks.{}", cycle[0]),
                format!("runbook call cycle: {}", cycle.join(" → ")),
            )
            .label(format!("{} calls {}", cycle[0], cycle[1]))
            .help("break the loop: a runbook must not end up calling itself");
            for pair in cycle.windows(2).skip(1) {
                if let Some(span) = span_of(pair[0], pair[1]) {
                    d = d.related(span, format!("{} calls {}", pair[0], pair[1]));
                }
            }
            self.emit(d);
        }
    }

    /// `alerts[i].runbook` must name a declared runbook.
    fn alert_runbooks(
        &mut self,
        entries: &[(Key, Node)],
        runbooks: &BTreeMap<String, BTreeMap<String, ParamDecl>>,
    ) {
        let Some((
            _,
            Node {
                value: Y::Seq(alerts),
                ..
            },
        )) = entries.iter().find(|(k, _)| k.text == "alerts")
        else {
            return;
        };
        for alert in alerts {
            let Y::Map(fields) = &alert.value else {
                continue;
            };
            let Some((_, node)) = fields.iter().find(|(k, _)| k.text == "runbook") else {
                continue;
            };
            let Y::String { text, .. } = &node.value else {
                continue;
            };
            // A malformed name was reported by the alert's own checks.
            if runbooks.contains_key(text) || !super::is_name(text) {
                continue;
            }
            let alert_name = fields
                .iter()
                .find(|(k, _)| k.text == "name")
                .and_then(|(_, v)| match &v.value {
                    Y::String { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .unwrap_or("?");
            let help = match closest(text, runbooks.keys().map(String::as_str)) {
                Some(best) => format!("did you mean `{best}`?"),
                None => "declare it under `runbooks:`, or remove `runbook:`".to_owned(),
            };
            self.emit(
                Diagnostic::new(
                    Code::UnknownReference,
                    node.span,
                    format!("alerts.{alert_name}.runbook"),
                    format!("no runbook named `{text}`"),
                )
                .label("unknown runbook")
                .help(help),
            );
        }
    }
}

/// An example of a value of the kind `expected` describes.
fn example(expected: &str) -> &'static str {
    if expected.contains("status") {
        "503"
    } else {
        "10m"
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::runbooks::{Action, OnFailure, ParamType};
    use crate::{MemoryFs, load};

    const STACK: &str = r##"
name: demo
services:
  api: { run: sleep 1000 }
receivers:
  - { name: oncall, webhook: "http://127.0.0.1:9093/hook" }
alerts:
  - { name: api-down, expr: 'up == 0', runbook: recover }
runbooks:
  recover:
    description: "# Recover\nRestarts, then pages."
    params:
      service: { type: service, default: api }
      replicas: { type: int, default: 2 }
    guards: { max_runs: 2, per: 30m, escalate: oncall, max_targets: 1 }
    steps:
      - { action: restart, with: { service: "${{ params.service }}" }, timeout: 10s, retries: 2, on_failure: page }
      - { action: scale, with: { service: api, replicas: "${{ params.replicas }}" }, on_failure: continue }
      - { name: check, run: "curl -f http://127.0.0.1/health", timeout: 5s }
      - { action: approve, with: { message: "roll back ${{ params.service }}?" } }
      - { action: runbook, with: { name: page, params: { service: "${{ params.service }}" } } }
  page:
    params:
      service: { type: service, required: true }
    steps:
      - { action: notify, with: { receiver: oncall, message: "look at ${{ params.service }}" } }
"##;

    #[test]
    fn a_valid_runbook_compiles_to_its_model() {
        let mut fs = MemoryFs::new();
        fs.add("/s/kiln.yaml", STACK);
        let stack = match load(&fs, Path::new("/s/kiln.yaml")) {
            Ok(stack) => stack,
            Err(failure) => panic!("{:#?}", failure.diagnostics),
        };
        let recover = &stack.runbooks["recover"];
        assert_eq!(recover.description, "# Recover\nRestarts, then pages.");
        assert_eq!(recover.params["replicas"].ty, ParamType::Int);
        assert_eq!(recover.params["replicas"].default.as_deref(), Some("2"));
        assert_eq!(recover.target_param(), Some("service"));
        assert_eq!(recover.guards.max_runs, 2);
        assert_eq!(recover.guards.per_ms, 1_800_000);
        assert_eq!(recover.guards.escalate.as_deref(), Some("oncall"));
        let steps = &recover.steps;
        assert_eq!(steps.len(), 5);
        assert_eq!(steps[0].timeout_ms, 10_000);
        assert_eq!(steps[0].retries, 2);
        assert_eq!(steps[0].on_failure, OnFailure::Runbook("page".into()));
        assert_eq!(steps[1].on_failure, OnFailure::Continue);
        assert_eq!(steps[2].name, "check");
        assert_eq!(
            steps[2].action,
            Action::Command {
                argv: vec![
                    "sh".into(),
                    "-c".into(),
                    "curl -f http://127.0.0.1/health".into()
                ]
            }
        );
        assert_eq!(
            steps[3].timeout_ms,
            crate::runbooks::DEFAULT_APPROVAL_TIMEOUT_MS
        );
        assert!(
            matches!(&steps[4].action, Action::Runbook { name, params } if name == "page" && params["service"] == "${{ params.service }}")
        );
        assert_eq!(stack.alerting.alerts[0].runbook.as_deref(), Some("recover"));
    }

    #[test]
    fn drain_steps_compile_with_their_defaults() {
        let mut fs = MemoryFs::new();
        fs.add(
            "/s/kiln.yaml",
            r#"
name: demo
services:
  api: { run: sleep 1000, replicas: 2 }
runbooks:
  rotate:
    params:
      instance: { type: string, required: true }
    steps:
      - { action: drain, with: { service: api, instance: "${{ params.instance }}" } }
      - { action: drain, with: { service: api, instance: api/1, timeout: 5s, then: keep } }
      - { action: undrain, with: { service: api, instance: 1 } }
"#,
        );
        let stack = match load(&fs, Path::new("/s/kiln.yaml")) {
            Ok(stack) => stack,
            Err(failure) => panic!("{:#?}", failure.diagnostics),
        };
        let steps = &stack.runbooks["rotate"].steps;
        assert_eq!(
            steps[0].action,
            Action::Drain {
                service: "api".into(),
                instance: "${{ params.instance }}".into(),
                timeout_ms: crate::runbooks::DEFAULT_DRAIN_TIMEOUT_MS,
                then: crate::runbooks::DrainThen::Restart,
            }
        );
        assert_eq!(
            steps[1].action,
            Action::Drain {
                service: "api".into(),
                instance: "api/1".into(),
                timeout_ms: 5_000,
                then: crate::runbooks::DrainThen::Keep,
            }
        );
        assert_eq!(
            steps[2].action,
            Action::Undrain {
                service: "api".into(),
                instance: "1".into(),
            }
        );
    }

    #[test]
    fn maintenance_steps_compile_with_their_defaults() {
        let mut fs = MemoryFs::new();
        fs.add(
            "/s/kiln.yaml",
            r#"
name: demo
services:
  web: { run: sleep 1000 }
routes:
  - { name: shop, host: shop.localhost, service: web }
runbooks:
  pause:
    params:
      route: { type: string, default: shop }
      long: { type: duration, default: 5m }
    steps:
      - { action: maintenance, with: { route: shop, for: 10m, status: 502, message: "Back <soon>", retry_after: 30s } }
      - { action: maintenance, with: { route: "${{ params.route }}", for: "${{ params.long }}" } }
      - { action: maintenance, with: { route: routes.shop, off: true } }
"#,
        );
        let stack = match load(&fs, Path::new("/s/kiln.yaml")) {
            Ok(stack) => stack,
            Err(failure) => panic!("{:#?}", failure.diagnostics),
        };
        let steps = &stack.runbooks["pause"].steps;
        let page = |duration: &str, status: &str, message: &str, retry_after: Option<&str>| {
            Some(crate::runbooks::MaintenancePage {
                duration: duration.into(),
                status: status.into(),
                message: message.into(),
                retry_after: retry_after.map(str::to_owned),
            })
        };
        assert_eq!(
            steps[0].action,
            Action::Maintenance {
                route: "shop".into(),
                page: page("10m", "502", "Back <soon>", Some("30s")),
            }
        );
        assert_eq!(
            steps[1].action,
            Action::Maintenance {
                route: "${{ params.route }}".into(),
                page: page(
                    "${{ params.long }}",
                    "503",
                    crate::runbooks::DEFAULT_MAINTENANCE_MESSAGE,
                    None
                ),
            }
        );
        assert_eq!(
            steps[2].action,
            Action::Maintenance {
                route: "routes.shop".into(),
                page: None,
            }
        );
    }
}
