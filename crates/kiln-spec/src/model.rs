//! The typed stack: what `kiln.yaml` and everything it pulls in declare, after validation.

use std::collections::BTreeMap;

use indexmap::IndexMap;

use crate::source::{SourceMap, Span};

/// Index of a [`Scope`] in [`Stack::scopes`]; the root stack is scope 0.
pub type ScopeId = usize;

/// A validated stack.
#[derive(Debug)]
pub struct Stack {
    /// `name:` of the root file.
    pub name: String,
    /// Every file read, for diagnostics and the digest.
    pub sources: SourceMap,
    /// sha256 over every file read, in load order.
    pub digest: String,
    /// `vars:` with their declared defaults (the caller may override them).
    pub vars: IndexMap<String, serde_json::Value>,
    /// `secrets:`: where each secret's value comes from.
    pub secrets: IndexMap<String, SecretSource>,
    /// The root and one scope per module instance.
    pub scopes: Vec<Scope>,
    /// Every resource by address, in declaration order.
    pub resources: IndexMap<String, Resource>,
    /// Where the ingress listens (`ingress: { listen: ... }`), when the stack has one.
    pub ingress_listen: Option<std::net::SocketAddr>,
    /// `ingress.tls`: serve HTTPS with these files instead of plain HTTP.
    pub ingress_tls: Option<IngressTls>,
    /// `ingress:`'s limits on clients.
    pub ingress_limits: IngressLimits,
    /// `source:`: the repository whose pushes the control plane follows.
    pub change_source: Option<ChangeSource>,
    /// `alerts:`, `receivers:`, `notify:` and `inhibit:`.
    pub alerting: crate::alerting::Alerting,
    /// `environments:`, in declaration order (empty: the stack has none, and its services are
    /// instantiated once, at the root).
    pub environments: Vec<crate::environments::Environment>,
    /// Services of promoted environments that no release has been promoted to yet, and what
    /// depends on them: left out of `resources` until a promotion.
    pub awaiting_promotion: Vec<String>,
    /// `runbooks:`, by name.
    pub runbooks: crate::runbooks::Runbooks,
}

impl Stack {
    /// The environment named `name`.
    pub fn environment(&self, name: &str) -> Option<&crate::environments::Environment> {
        self.environments.iter().find(|e| e.name == name)
    }

    /// The last environment (production), whose deploys count for DORA.
    pub fn production(&self) -> Option<&crate::environments::Environment> {
        self.environments.last()
    }

    /// The environment the resource at `address` is instantiated in.
    pub fn environment_of(&self, address: &str) -> Option<&crate::environments::Environment> {
        self.environments
            .iter()
            .find(|e| address.starts_with(&e.prefix()))
    }

    /// True when a new release reaches `address` by itself (a green push run): always without
    /// environments; with them, only in an environment with `deploy: { auto: true }`.
    pub fn deploys_new_releases(&self, address: &str) -> bool {
        self.environments.is_empty() || self.environment_of(address).is_some_and(|e| e.auto_deploy)
    }
}

/// `source:` in `kiln.yaml` (see `compile/delivery.rs` for the shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSource {
    /// `.` (the stack's own repository), a path relative to the stack's directory, or a URL.
    pub repo: String,
    /// Short branch names whose new heads are followed.
    pub branches: Vec<String>,
    /// How often to ask `git ls-remote` for new heads, in milliseconds; `None`: never.
    pub poll_ms: Option<u64>,
    /// The name of the secret (under `secrets:`) that signs GitHub push webhooks.
    pub webhook_secret: Option<String>,
    /// Where `source:` is written.
    pub span: Span,
}

/// `ingress: { header_timeout, idle_timeout, send_timeout, max_connections }`: limits on
/// clients, each `None` when not declared (the ingress's default then applies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngressLimits {
    /// Time to send a request's head, and to start the next one on a kept-alive connection.
    pub header_timeout_ms: Option<u64>,
    /// A connection without requests for this long is closed (HTTP/2 included).
    pub idle_timeout_ms: Option<u64>,
    /// A client that reads nothing of its response for this long loses its connection.
    pub send_timeout_ms: Option<u64>,
    /// Client connections open at once; more are closed as soon as accepted.
    pub max_connections: Option<u32>,
}

/// The certificate and key the ingress terminates TLS with. Loading checked that both files
/// are readable PEM of the right kind; whether the key belongs to the certificate needs
/// cryptography, which the binary checks (`kiln/src/tls.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressTls {
    /// PEM certificate chain, end-entity first, resolved against the stack file's directory.
    pub cert: std::path::PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1), resolved the same way.
    pub key: std::path::PathBuf,
    /// Where `cert:` is written, to place diagnostics about the files' contents.
    pub cert_span: Span,
    /// Where `key:` is written.
    pub key_span: Span,
}

/// Where a secret's value is read from at plan time. Values never enter the state in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of the kiln process.
    Env(String),
    /// A file, relative to the stack's directory.
    File(String),
}

/// The root stack or one module instance.
#[derive(Debug)]
pub struct Scope {
    /// Address prefix of everything in the scope: `""` for the root, `modules.db.` for a module.
    pub prefix: String,
    /// The scope the module was called from.
    pub parent: Option<ScopeId>,
    /// Input values as written at the call site (evaluated in the parent scope), with defaults.
    pub inputs: IndexMap<String, Value>,
    /// Declared outputs (evaluated in this scope).
    pub outputs: IndexMap<String, Value>,
    /// Module instances called from this scope, by name.
    pub modules: IndexMap<String, ScopeId>,
    /// The environment this scope instantiates the root's services for (`None`: the root or a
    /// module).
    pub environment: Option<String>,
    /// The environment's `vars:` overrides (what `vars.NAME` reads inside it instead of the
    /// stack's value).
    pub vars: IndexMap<String, serde_json::Value>,
}

impl Scope {
    /// A scope with nothing declared in it yet.
    pub fn new(prefix: String, parent: Option<ScopeId>) -> Scope {
        Scope {
            prefix,
            parent,
            inputs: IndexMap::new(),
            outputs: IndexMap::new(),
            modules: IndexMap::new(),
            environment: None,
            vars: IndexMap::new(),
        }
    }

    /// Where `NAME` of `head` (`resources`, `modules`, `routes`, ...) is read from this scope:
    /// an environment instantiates only services and routes, so its `resources.` and
    /// `modules.` are the root's (scope 0); a module's routes are the root's too.
    pub fn reads(&self, id: ScopeId, head: &str) -> (ScopeId, &str) {
        match (head, self.environment.is_some()) {
            ("resources" | "modules", true) => (0, ""),
            ("routes", false) => (id, ""),
            _ => (id, self.prefix.as_str()),
        }
    }
}

/// A resource to manage.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Full address, e.g. `resources.motd` or `modules.db.resources.server`.
    pub address: String,
    /// The scope it is declared in.
    pub scope: ScopeId,
    /// Its kind (`file`, `exec`).
    pub kind: String,
    /// Declared attributes, in file order.
    pub attrs: IndexMap<String, Value>,
    /// Attributes rendered from template files (`template:` becomes `content`), read at load
    /// time so that their references are dependencies like any other.
    pub rendered: IndexMap<String, Value>,
    /// Every resource this one depends on (explicit and through references), by address,
    /// with the place that creates the dependency.
    pub depends_on: BTreeMap<String, Span>,
    /// For services: what a dependency must reach before this one starts (absent: healthy).
    pub conditions: BTreeMap<String, Condition>,
    /// Lifecycle rules.
    pub lifecycle: Lifecycle,
    /// What the control plane does on drift.
    pub reconcile: Reconcile,
    /// Where the resource is declared (its key).
    pub span: Span,
}

impl Resource {
    /// A resource with no attributes, dependencies or rules yet.
    pub fn new(address: String, scope: ScopeId, kind: &str, span: Span) -> Resource {
        Resource {
            address,
            scope,
            kind: kind.to_owned(),
            attrs: IndexMap::new(),
            rendered: IndexMap::new(),
            depends_on: BTreeMap::new(),
            conditions: BTreeMap::new(),
            lifecycle: Lifecycle::default(),
            reconcile: Reconcile::default(),
            span,
        }
    }
}

/// What a service waits for in a dependency (docker compose's `depends_on` conditions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The dependency's first instance has started (spawned, not yet ready): its provider
    /// reports the start during the apply, and the dependent goes ahead with the outputs known
    /// by then (a service's stable `url`, `release`, `instances`).
    Started,
    /// The dependency's instances are ready (their readiness probes pass).
    Healthy,
    /// The dependency is a `job` whose instances all exited with status 0.
    CompletedSuccessfully,
}

/// Terraform-style lifecycle rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lifecycle {
    /// On replacement, create the new one before destroying the old one.
    pub create_before_destroy: bool,
    /// Refuse any plan that destroys this resource.
    pub prevent_destroy: bool,
    /// Attributes whose changes are ignored after creation.
    pub ignore_changes: Vec<String>,
}

/// What the control plane does when it observes drift.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reconcile {
    /// Report drift as an event; `kiln apply` repairs it.
    #[default]
    Report,
    /// Repair drift by itself.
    Auto,
}

/// A declared value that may contain `${{ }}` expressions.
#[derive(Debug, Clone)]
pub struct Value {
    /// The value.
    pub kind: ValueKind,
    /// Where it is written.
    pub span: Span,
}

/// The shapes a declared value takes.
#[derive(Debug, Clone)]
pub enum ValueKind {
    /// A value without expressions.
    Literal(serde_json::Value),
    /// A string with `${{ }}` in it.
    Template {
        /// The parsed template.
        template: Box<kiln_expr::Template>,
        /// The string as written (after YAML escapes), to map expression offsets to the file.
        text: String,
    },
    /// A list that contains templates.
    List(Vec<Value>),
    /// A mapping that contains templates.
    Map(IndexMap<String, Value>),
}

impl Value {
    /// True when nothing in the value needs evaluating.
    pub fn is_literal(&self) -> bool {
        matches!(self.kind, ValueKind::Literal(_))
    }

    /// Every `${{ }}` template in the value, with the span of the string that holds it.
    pub fn templates(&self) -> Vec<(&kiln_expr::Template, &str, Span)> {
        let mut out = Vec::new();
        self.collect_templates(&mut out);
        out
    }

    fn collect_templates<'a>(&'a self, out: &mut Vec<(&'a kiln_expr::Template, &'a str, Span)>) {
        match &self.kind {
            ValueKind::Literal(_) => {}
            ValueKind::Template { template, text } => out.push((template, text, self.span)),
            ValueKind::List(items) => items.iter().for_each(|v| v.collect_templates(out)),
            ValueKind::Map(entries) => entries.values().for_each(|v| v.collect_templates(out)),
        }
    }
}
