//! `environments:` — the root's services (and routes) instantiated once per environment:
//!
//! ```yaml
//! environments:
//!   staging:
//!     vars: { greeting: Hi staging }        # overrides of declared vars
//!     secrets: { db_url: { env: STAGING_DB_URL } }   # overrides of declared secrets' sources
//!     routes: [ { host: staging.shop.localhost, path: /, service: web } ]
//!     services:                             # how a service runs here (not what runs)
//!       api: { replicas: 1, env: { LOG_LEVEL: debug } }
//!     deploy: { auto: true }                # new releases deploy here by themselves
//!   production:
//!     promote:
//!       from: staging                       # an environment declared earlier
//!       soak: 10s                           # serving there, ready, no alert firing, this long
//!       approval: true                      # `kiln approve` recorded for the release
//!       pipeline: ci                        # the release came from a green run of `ci`
//!       freeze: [ { from: 2026-12-24T00:00:00Z, to: 2026-12-27T00:00:00Z } ]
//!       windows: [ "Mon-Fri 08:00-18:00 UTC" ]
//!       auto: false                         # the control plane promotes once the gates pass
//! ```
//!
//! Each environment is a scope with prefix `environments.NAME.`, so `services.api` written
//! inside a service means the same environment's `api`, and the supervisor runs it as
//! `api.NAME`. `resources:` and `modules:` stay shared: references to them from inside an
//! environment read the root's. Routes: an environment gets its own `routes:`; the last
//! environment (production) also gets the top-level `routes:`, so adding environments to a
//! stack keeps its public routes where they were.
//!
//! Only the first environment makes releases (from `path:` or a pipeline's `release:`); every
//! other one must `promote:` from an earlier one, and its services run the release recorded
//! as promoted to them (`FileSystem::promoted_release`): the same digest, never a rebuild.
//! Until a release has been promoted, such a service is not created, and neither is anything
//! in that environment that depends on it (`Stack::awaiting_promotion` lists them).
//!
//! `services:` of an environment overrides how a root service runs there: `env` is merged
//! key by key, every other overridable key (`OVERRIDABLE`) replaces the root's value whole.
//! What makes the artifact (`run`, `path`, `release`, ...) is the same everywhere, and so is
//! the dependency graph: overriding those is refused with the reason.

use std::path::Path;

use indexmap::IndexMap;

use crate::diag::{Code, Diagnostic};
use crate::environments::{Environment, Freeze, Promotion, parse_window};
use crate::model::{Resource, Scope, ScopeId, SecretSource, Value, ValueKind};
use crate::schema;
use crate::source::Span;
use crate::suggest::closest;
use crate::units;
use crate::yaml::{Key, Node, Value as Y};

use super::Compiler;

const ENVIRONMENT_KEYS: &[&str] = &[
    "vars",
    "secrets",
    "routes",
    "services",
    "deploy",
    "promote",
    "description",
];
const PROMOTE_KEYS: &[&str] = &[
    "from", "soak", "approval", "pipeline", "freeze", "windows", "auto",
];
/// Service keys an environment may override: how many instances, their settings and limits,
/// probes and how a release rolls out there.
const OVERRIDABLE: &[&str] = &[
    "replicas",
    "env",
    "health",
    "resources",
    "deploy",
    "stop",
    "restart",
    "backoff",
    "ready_timeout",
    "metrics",
    "user",
];
/// Service keys that make the release or the command that runs it: build once, deploy many.
const SAME_ARTIFACT: &[&str] = &[
    "run", "shell", "path", "workdir", "release", "job", "env_file",
];
/// Service keys that shape the stack's graph, the same in every environment.
const SAME_GRAPH: &[&str] = &[
    "depends_on",
    "lifecycle",
    "reconcile",
    "kind",
    "description",
];
const FREEZE_KEYS: &[&str] = &["from", "to", "reason"];
const EXPECTED: &str = "a mapping of environments: `staging: { deploy: { auto: true } }`";

/// What the root file declares that environments instantiate.
pub(super) struct Instantiated<'n> {
    /// The root's `services:` entries (from its file and includes).
    pub services: Vec<(&'n Key, &'n Node)>,
    /// Its `routes:` lists.
    pub routes: Vec<&'n Node>,
}

impl Compiler<'_> {
    /// Compiles `environments:` and instantiates the root's services and routes in each.
    pub(super) fn environments(
        &mut self,
        node: &Node,
        declared: &Instantiated<'_>,
        base: &Path,
    ) -> Vec<Environment> {
        let Some(entries) = self.map(node, "environments", EXPECTED) else {
            return Vec::new();
        };
        if entries.is_empty() {
            self.emit(
                Diagnostic::new(
                    Code::InvalidValue,
                    node.span,
                    "environments",
                    "`environments` declares no environment",
                )
                .label("empty")
                .help("declare at least one, e.g. `staging: {}`, or remove `environments:`"),
            );
            return Vec::new();
        }
        let keyed: Vec<(&Key, &Node)> = entries.iter().map(|(k, v)| (k, v)).collect();
        let mut out: Vec<Environment> = Vec::new();
        let mut route_claims = IndexMap::new();
        let last = keyed.len() - 1;
        self.environment_names = keyed.iter().map(|(k, _)| k.text.clone()).collect();
        for (position, (key, env_node)) in
            self.unique(&keyed, "environments").into_iter().enumerate()
        {
            let path = format!("environments.{}", key.text);
            let fields = self
                .map(
                    env_node,
                    &path,
                    "an environment: a mapping with `vars:`, `routes:`, `deploy:` or `promote:`",
                )
                .unwrap_or_default();
            self.check_keys(fields, ENVIRONMENT_KEYS, &path, "an environment");
            let field = |name: &str| fields.iter().find(|(k, _)| k.text == name).map(|(_, v)| v);
            let scope = self.scopes.len();
            let mut env_scope = Scope::new(format!("{path}."), None);
            env_scope.environment = Some(key.text.clone());
            self.scopes.push(env_scope);
            self.input_types.push(IndexMap::new());
            if let Some(vars) = field("vars") {
                self.environment_vars(scope, vars, &path);
            }
            if let Some(secrets) = field("secrets") {
                self.environment_secrets(format!("{path}.secrets."), secrets, &path);
            }
            let overrides = field("services")
                .map(|n| self.service_overrides(n, &path, &declared.services))
                .unwrap_or_default();
            let auto_deploy = field("deploy").is_some_and(|d| self.deploy_rule(d, &path));
            let promote = field("promote").and_then(|p| self.promotion(p, &path, &out));
            if promote.is_none() && field("promote").is_none() && position > 0 {
                self.emit(
                    Diagnostic::new(
                        Code::MissingKey,
                        key.span,
                        format!("{path}.promote"),
                        format!("environment `{}` has no `promote:`", key.text),
                    )
                    .label("releases reach it how?")
                    .help(format!(
                        "only the first environment builds releases; add `promote: {{ from: {} }}` so this one deploys the same digests",
                        out.last().map_or("staging", |e: &Environment| e.name.as_str())
                    )),
                );
            }
            let environment = Environment {
                name: key.text.clone(),
                scope,
                auto_deploy,
                promote,
                span: key.span,
            };
            let promoted = position > 0;
            if promoted {
                self.promoted_scopes.push(scope);
            }
            // The services are the same nodes in every environment: their mistakes are
            // reported once, from the first.
            let before = self.diags.len();
            if position == 0 {
                self.shared_service_spans = declared
                    .services
                    .iter()
                    .map(|(key, node)| Span {
                        file: key.span.file,
                        start: key.span.start,
                        end: node.span.end.max(key.span.end),
                    })
                    .collect();
            }
            if position == 0 {
                self.check_overridden_values(&path, &declared.services, &overrides);
            }
            for (service_key, service_node) in &declared.services {
                let merged = overrides
                    .iter()
                    .find(|(name, _)| *name == service_key.text)
                    .map(|(_, fields)| with_overrides(service_node, fields));
                self.resource(
                    scope,
                    service_key,
                    merged.as_ref().unwrap_or(service_node),
                    base,
                    Some(&schema::SERVICE),
                );
            }
            if promoted {
                // Mistakes in this environment's own overrides are its own; the rest were
                // found in the first environment already.
                let own: Vec<Span> = overrides
                    .iter()
                    .flat_map(|(_, fields)| fields.iter().map(|(k, v)| covering(k.span, v.span)))
                    .collect();
                self.diags.retain_after(before, |span| {
                    span.is_some_and(|s| own.iter().any(|o| within(s, *o)))
                });
                for (service_key, _) in &declared.services {
                    let address = format!("{path}.services.{}", service_key.text);
                    self.promoted_release(&environment, &address);
                }
            }
            let mut lists: Vec<&Node> = field("routes").into_iter().collect();
            if position == last {
                lists.extend(declared.routes.iter().copied());
            }
            self.routes(&lists, scope, &mut route_claims);
            out.push(environment);
        }
        out
    }

    /// `services:` of an environment: for each declared service, the keys it overrides (only
    /// the overridable ones, checked; everything else is reported with the reason).
    fn service_overrides<'n>(
        &mut self,
        node: &'n Node,
        env_path: &str,
        services: &[(&Key, &Node)],
    ) -> Vec<(String, Vec<&'n (Key, Node)>)> {
        let path = format!("{env_path}.services");
        let Some(entries) = self.map(
            node,
            &path,
            "a mapping of declared services to the settings they override, e.g. `api: { replicas: 3 }`",
        ) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, value) in entries {
            if !services.iter().any(|(k, _)| k.text == key.text) {
                let declared = services.iter().map(|(k, _)| k.text.clone()).collect();
                self.undeclared(key, &path, "service", declared);
                continue;
            }
            let service_path = format!("{path}.{}", key.text);
            let Some(fields) = self.map(
                value,
                &service_path,
                "a mapping of the settings this environment overrides, e.g. `{ replicas: 3 }`",
            ) else {
                continue;
            };
            let mut kept = Vec::new();
            for field in fields {
                let name = field.0.text.as_str();
                if OVERRIDABLE.contains(&name) {
                    kept.push(field);
                } else if SAME_ARTIFACT.contains(&name) || SAME_GRAPH.contains(&name) {
                    self.not_overridable(&field.0, &service_path);
                } else {
                    self.unknown_key(
                        &field.0,
                        &service_path,
                        OVERRIDABLE.iter().copied(),
                        "a service's environment overrides",
                    );
                }
            }
            out.push((key.text.clone(), kept));
        }
        out
    }

    /// The root's values that the first environment overrides are still the user's: checked
    /// here, as the compiled copy of the service no longer holds them.
    fn check_overridden_values(
        &mut self,
        env_path: &str,
        services: &[(&Key, &Node)],
        overrides: &[(String, Vec<&(Key, Node)>)],
    ) {
        for (name, fields) in overrides {
            let Some((
                _,
                Node {
                    value: Y::Map(base),
                    ..
                },
            )) = services.iter().find(|(k, _)| k.text == *name)
            else {
                continue;
            };
            for (key, _) in fields {
                let Some((_, value)) = base.iter().find(|(k, _)| k.text == key.text) else {
                    continue;
                };
                if let Some(attr) = schema::SERVICE.attr(&key.text) {
                    let path = format!("{env_path}.services.{name}.{}", key.text);
                    self.attribute(value, &path, attr.ty);
                }
            }
        }
    }

    fn not_overridable(&mut self, key: &Key, service_path: &str) {
        let name = key.text.as_str();
        let (why, help) = if SAME_ARTIFACT.contains(&name) {
            (
                "build once, deploy many: every environment runs the same release with the same command",
                "make the difference a setting the program reads: override `env:` here (or the environment's `vars:`)",
            )
        } else {
            (
                "the stack's graph is the same in every environment",
                "declare it once on the service under the top-level `services:`",
            )
        };
        self.emit(
            Diagnostic::new(
                Code::InvalidValue,
                key.span,
                format!("{service_path}.{name}"),
                format!("`{name}` cannot differ between environments: {why}"),
            )
            .label("not overridable per environment")
            .help(format!(
                "{help}; an environment may override: {}",
                OVERRIDABLE.join(", ")
            )),
        );
    }

    /// `vars:` of an environment: overrides of vars the stack declares.
    fn environment_vars(&mut self, scope: ScopeId, node: &Node, env_path: &str) {
        let path = format!("{env_path}.vars");
        let Some(entries) = self.map(node, &path, "a mapping of declared vars to values") else {
            return;
        };
        for (key, value) in entries {
            if !self.vars.contains_key(&key.text) {
                self.undeclared(key, &path, "var", self.vars.keys().cloned().collect());
                continue;
            }
            self.scopes[scope]
                .vars
                .insert(key.text.clone(), value.to_json());
        }
    }

    /// `secrets:` of an environment: another source for a declared secret, kept in the
    /// stack's secrets under `environments.NAME.secrets.SECRET` (what evaluation reads inside
    /// the environment).
    fn environment_secrets(&mut self, prefix: String, node: &Node, env_path: &str) {
        let path = format!("{env_path}.secrets");
        let Some(entries) = self.map(
            node,
            &path,
            "a mapping of declared secrets to `{ env: VAR }` or `{ file: PATH }`",
        ) else {
            return;
        };
        for (key, value) in entries {
            if !self.secrets.contains_key(&key.text) {
                let declared = self
                    .secrets
                    .keys()
                    .filter(|k| !k.contains('.'))
                    .cloned()
                    .collect();
                self.undeclared(key, &path, "secret", declared);
                continue;
            }
            if let Some(source) = self.secret(key, value) {
                let source: SecretSource = source;
                self.secrets.insert(format!("{prefix}{}", key.text), source);
            }
        }
    }

    fn undeclared(&mut self, key: &Key, path: &str, what: &str, declared: Vec<String>) {
        let help = match closest(&key.text, declared.iter().map(String::as_str)) {
            Some(best) => format!("did you mean `{best}`?"),
            None => format!(
                "an environment overrides {what}s the stack declares under `{what}s:`; declare `{}` there first",
                key.text
            ),
        };
        self.emit(
            Diagnostic::new(
                Code::UnknownReference,
                key.span,
                format!("{path}.{}", key.text),
                format!("the stack declares no {what} `{}`", key.text),
            )
            .label(format!("unknown {what}"))
            .help(help),
        );
    }

    /// `deploy: { auto: BOOL }`.
    fn deploy_rule(&mut self, node: &Node, env_path: &str) -> bool {
        let path = format!("{env_path}.deploy");
        let Some(fields) = self.map(node, &path, "`{ auto: true }`") else {
            return false;
        };
        self.check_keys(fields, &["auto"], &path, "`deploy`");
        fields
            .iter()
            .find(|(k, _)| k.text == "auto")
            .is_some_and(|(_, v)| self.boolean(v, &format!("{path}.auto")))
    }

    /// `promote:`; `earlier` are the environments declared before this one.
    fn promotion(
        &mut self,
        node: &Node,
        env_path: &str,
        earlier: &[Environment],
    ) -> Option<Promotion> {
        let path = format!("{env_path}.promote");
        let fields = self.map(
            node,
            &path,
            "`{ from: staging, soak: 10m, approval: true }`",
        )?;
        self.check_keys(fields, PROMOTE_KEYS, &path, "`promote`");
        let field = |name: &str| fields.iter().find(|(k, _)| k.text == name).map(|(_, v)| v);
        let mut ok = true;
        let from = match field("from") {
            None => {
                self.emit(
                    Diagnostic::new(
                        Code::MissingKey,
                        node.span,
                        format!("{path}.from"),
                        "`promote` has no `from`",
                    )
                    .label("promote from where?")
                    .help(format!(
                        "name the environment releases come from, e.g. `from: {}`",
                        earlier.last().map_or("staging", |e| e.name.as_str())
                    )),
                );
                ok = false;
                String::new()
            }
            Some(v) => {
                let from = self.string(v, &format!("{path}.from")).unwrap_or_default();
                if !earlier.iter().any(|e| e.name == from) {
                    self.not_an_earlier_environment(v, &path, &from, env_path, earlier);
                    ok = false;
                }
                from
            }
        };
        let soak_ms = match field("soak") {
            None => 0,
            Some(v) => self.soak(v, &format!("{path}.soak")).unwrap_or_else(|| {
                ok = false;
                0
            }),
        };
        let flag = |cx: &mut Self, name: &str| {
            field(name).is_some_and(|v| cx.boolean(v, &format!("{path}.{name}")))
        };
        let approval = flag(self, "approval");
        let auto = flag(self, "auto");
        let pipeline = field("pipeline").and_then(|v| self.string(v, &format!("{path}.pipeline")));
        let freezes = field("freeze").map_or_else(Vec::new, |v| {
            self.freezes(v, &format!("{path}.freeze"))
                .unwrap_or_else(|| {
                    ok = false;
                    Vec::new()
                })
        });
        let windows = field("windows").map_or_else(Vec::new, |v| {
            self.windows(v, &format!("{path}.windows"))
                .unwrap_or_else(|| {
                    ok = false;
                    Vec::new()
                })
        });
        ok.then_some(Promotion {
            from,
            soak_ms,
            approval,
            pipeline,
            freezes,
            windows,
            auto,
            span: node.span,
        })
    }

    fn not_an_earlier_environment(
        &mut self,
        v: &Node,
        path: &str,
        from: &str,
        env_path: &str,
        earlier: &[Environment],
    ) {
        let this = env_path.trim_start_matches("environments.");
        let names: Vec<&str> = earlier.iter().map(|e| e.name.as_str()).collect();
        let (message, help) = if from == this {
            (
                format!("environment `{this}` promotes from itself"),
                "promote from the environment before it".to_owned(),
            )
        } else if self.declared_later(from) {
            (
                format!(
                    "`{from}` is declared after `{this}`: releases flow down the list, so promotions cannot loop"
                ),
                format!("move `{from}` above `{this}` under `environments:`"),
            )
        } else {
            (
                format!("there is no environment `{from}`"),
                match closest(from, names.iter().copied()) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None if names.is_empty() => {
                        "the first environment builds its own releases; remove `promote:` from it"
                            .to_owned()
                    }
                    None => format!(
                        "environments declared before this one: {}",
                        names.join(", ")
                    ),
                },
            )
        };
        self.emit(
            Diagnostic::new(Code::InvalidValue, v.span, format!("{path}.from"), message)
                .label("expected an environment declared earlier")
                .help(help),
        );
    }

    /// True when an environment of this name is declared anywhere under `environments:`.
    fn declared_later(&self, name: &str) -> bool {
        self.environment_names.iter().any(|n| n == name)
    }

    fn soak(&mut self, node: &Node, path: &str) -> Option<u64> {
        let text = match &node.value {
            Y::String { text, .. } => text.clone(),
            Y::Number(_) => String::new(),
            _ => {
                self.wrong_type(node, path, "a duration like `10m`");
                return None;
            }
        };
        match units::parse_duration(&text) {
            Ok(ms) => Some(ms),
            Err(why) => {
                let why = if text.is_empty() {
                    "a bare number has no unit; write `10s` or `10m`".to_owned()
                } else {
                    why
                };
                self.bad_duration(node, path, &why);
                None
            }
        }
    }

    fn freezes(&mut self, node: &Node, path: &str) -> Option<Vec<Freeze>> {
        let expected = "a list of `{ from: 2026-12-24T00:00:00Z, to: 2026-12-27T00:00:00Z }`";
        let Y::Seq(items) = &node.value else {
            self.wrong_type(node, path, expected);
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let Some(fields) = self.map(item, &item_path, expected) else {
                ok = false;
                continue;
            };
            self.check_keys(fields, FREEZE_KEYS, &item_path, "a freeze");
            let time = |cx: &mut Self, name: &str| -> Option<(i64, Span)> {
                let Some((_, v)) = fields.iter().find(|(k, _)| k.text == name) else {
                    cx.emit(
                        Diagnostic::new(
                            Code::MissingKey,
                            item.span,
                            format!("{item_path}.{name}"),
                            format!("the freeze has no `{name}`"),
                        )
                        .label(format!("needs `{name}:`"))
                        .help(expected.trim_start_matches("a list of ")),
                    );
                    return None;
                };
                cx.rfc3339(v, &format!("{item_path}.{name}"))
                    .map(|t| (t, v.span))
            };
            let (from, to) = (time(self, "from"), time(self, "to"));
            match (from, to) {
                (Some((from_ms, _)), Some((to_ms, span))) if to_ms <= from_ms => {
                    self.emit(
                        Diagnostic::new(
                            Code::InvalidValue,
                            span,
                            format!("{item_path}.to"),
                            "the freeze ends before it starts",
                        )
                        .label("not after `from`")
                        .help("swap `from` and `to`"),
                    );
                    ok = false;
                }
                (Some((from_ms, _)), Some((to_ms, _))) => out.push(Freeze { from_ms, to_ms }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn rfc3339(&mut self, node: &Node, path: &str) -> Option<i64> {
        let text = match &node.value {
            Y::String { text, .. } => text.clone(),
            _ => {
                self.wrong_type(node, path, "an RFC 3339 time like `2026-12-24T00:00:00Z`");
                return None;
            }
        };
        match text.parse::<jiff::Timestamp>() {
            Ok(t) => Some(t.as_millisecond()),
            Err(err) => {
                self.emit(
                    Diagnostic::new(
                        Code::InvalidValue,
                        node.span,
                        path,
                        format!("`{text}` is not an RFC 3339 time: {err}"),
                    )
                    .label("expected a time with its offset")
                    .help("e.g. `2026-12-24T00:00:00Z` or `2026-12-24T09:00:00+01:00`"),
                );
                None
            }
        }
    }

    fn windows(&mut self, node: &Node, path: &str) -> Option<Vec<crate::environments::Window>> {
        let Y::Seq(items) = &node.value else {
            self.wrong_type(
                node,
                path,
                "a list of windows like `Mon-Fri 08:00-18:00 UTC`",
            );
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let text = self.string(item, &item_path)?;
            match parse_window(&text) {
                Ok(w) => out.push(w),
                Err(why) => self.emit(
                    Diagnostic::new(Code::InvalidValue, item.span, &item_path, format!("`{text}` is not a deploy window: {why}"))
                        .label("expected `DAYS HH:MM-HH:MM UTC`")
                        .help("e.g. `Mon-Fri 08:00-18:00 UTC`, `Sat,Sun 10:00-12:00 UTC`, `* 00:00-06:00 UTC`"),
                ),
            }
        }
        (out.len() == items.len()).then_some(out)
    }

    /// A service of a promoted environment runs the release recorded as promoted to it; with
    /// none yet, it waits (it is left out of the stack after references are checked).
    fn promoted_release(&mut self, environment: &Environment, address: &str) {
        let Some(resource) = self.resources.get(address) else {
            return;
        };
        let releases = resource.attrs.contains_key("release")
            || matches!(
                resource.attrs.get("path").map(|v| &v.kind),
                Some(ValueKind::Literal(_))
            );
        if !releases {
            return;
        }
        let span = resource.span;
        let mut rendered = resource.rendered.clone();
        match self
            .fs
            .promoted_release(&self.stack_dir, &environment.name, address)
        {
            None => {}
            Some(Ok(Some(digest))) => {
                rendered.insert(
                    "release_id".into(),
                    Value {
                        kind: ValueKind::Literal(serde_json::Value::String(digest)),
                        span,
                    },
                );
            }
            Some(Ok(None)) => self.awaiting_promotion.push(address.to_owned()),
            // Placed at the environment: the service is written once for all of them, the
            // record that cannot be read is this environment's.
            Some(Err(err)) => self.emit(
                Diagnostic::new(
                    Code::BadSource,
                    environment.span,
                    address,
                    format!(
                        "cannot read the release promoted to `{}`: {err}",
                        environment.name
                    ),
                )
                .label("its services run the release promoted to it")
                .related(span, "this service's release")
                .help("check `.kiln/state.db` (`kiln state list`)"),
            ),
        }
        if let Some(resource) = self.resources.get_mut(address) {
            resource.rendered = rendered;
        }
    }
}

/// The service `base` as an environment runs it: each override replaces the root's value of
/// its key, except `env`, merged key by key (the environment's value wins).
fn with_overrides(base: &Node, overrides: &[&(Key, Node)]) -> Node {
    let Y::Map(entries) = &base.value else {
        return base.clone();
    };
    let mut merged: Vec<(Key, Node)> = entries.clone();
    for &(key, value) in overrides {
        match merged.iter_mut().find(|(k, _)| k.text == key.text) {
            Some((_, existing)) if key.text == "env" => {
                *existing = merge_maps(existing, value);
            }
            Some(entry) => *entry = (key.clone(), value.clone()),
            None => merged.push((key.clone(), value.clone())),
        }
    }
    Node {
        value: Y::Map(merged),
        span: base.span,
    }
}

/// The span from `first`'s start to `last`'s end (same file).
fn covering(first: Span, last: Span) -> Span {
    Span {
        file: first.file,
        start: first.start.min(last.start),
        end: first.end.max(last.end),
    }
}

/// True when `inner` is written inside `outer`.
fn within(inner: Span, outer: Span) -> bool {
    inner.file == outer.file && outer.start <= inner.start && inner.end <= outer.end
}

/// `over`'s entries replacing or added to `base`'s, when both are mappings; otherwise `over`.
fn merge_maps(base: &Node, over: &Node) -> Node {
    let (Y::Map(base_entries), Y::Map(over_entries)) = (&base.value, &over.value) else {
        return over.clone();
    };
    let mut merged = base_entries.clone();
    for (key, value) in over_entries {
        match merged.iter_mut().find(|(k, _)| k.text == key.text) {
            Some(entry) => *entry = (key.clone(), value.clone()),
            None => merged.push((key.clone(), value.clone())),
        }
    }
    Node {
        value: Y::Map(merged),
        span: over.span,
    }
}

/// Leaves out what waits for a promotion: the services in `awaiting` and everything that
/// depends on them, transitively. Returns every address left out, in stack order.
pub(super) fn prune_awaiting(
    resources: &mut IndexMap<String, Resource>,
    awaiting: &[String],
) -> Vec<String> {
    let mut out: Vec<String> = awaiting.to_vec();
    loop {
        let more: Vec<String> = resources
            .iter()
            .filter(|(a, r)| !out.contains(a) && r.depends_on.keys().any(|d| out.contains(d)))
            .map(|(a, _)| a.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        out.extend(more);
    }
    resources.retain(|a, _| !out.contains(a));
    out
}
