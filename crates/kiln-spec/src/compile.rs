//! From YAML nodes to the typed [`Stack`]: strict keys, types, units, expressions, includes and
//! modules. Every check records a diagnostic and carries on, so one run reports every mistake.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use sha2::{Digest, Sha256};

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::load::{FileSystem, normalize};
use crate::model::{
    Condition, Lifecycle, Reconcile, Resource, Scope, ScopeId, SecretSource, Stack, Value,
    ValueKind,
};
use crate::resolve;
use crate::schema::{self, AttrType, KindSchema};
use crate::source::{SourceMap, Span};
use crate::suggest::closest;
use crate::units;
use crate::yaml::{self, Key, Node, Value as Y};

mod alerting;
mod delivery;
mod environments;
mod runbooks;

/// Names an expression in a stack file may start with.
pub const NAMED_VALUES: &[&str] = &[
    "vars",
    "secrets",
    "env",
    "inputs",
    "resources",
    "services",
    "routes",
    "modules",
];

const ROOT_KEYS: &[&str] = &[
    "environments",
    "source",
    "alerts",
    "receivers",
    "notify",
    "inhibit",
    "runbooks",
    "routes",
    "ingress",
    "services",
    "name",
    "description",
    "include",
    "vars",
    "secrets",
    "modules",
    "resources",
    "outputs",
];
const INCLUDE_KEYS: &[&str] = &[
    "routes",
    "services",
    "include",
    "vars",
    "secrets",
    "modules",
    "resources",
    "outputs",
];
const MODULE_KEYS: &[&str] = &[
    "services",
    "description",
    "include",
    "inputs",
    "modules",
    "resources",
    "outputs",
];
const MODULE_CALL_KEYS: &[&str] = &["source", "inputs", "description"];
const INPUT_DECL_KEYS: &[&str] = &["type", "default", "description"];
const INPUT_TYPES: &[&str] = &["string", "number", "boolean", "list", "map", "any"];
const LIFECYCLE_KEYS: &[&str] = &["create_before_destroy", "prevent_destroy", "ignore_changes"];
const MAX_MODULE_DEPTH: usize = 16;

/// Loading failed: every mistake found, and the files they point into.
#[derive(Debug)]
pub struct LoadFailure {
    /// The files read, to render the diagnostics.
    pub sources: SourceMap,
    /// Every mistake, in file and position order.
    pub diagnostics: Vec<Diagnostic>,
}

/// Loads and validates a stack from its root file (`kiln.yaml`).
pub fn load(fs: &dyn FileSystem, root_file: &Path) -> Result<Stack, Box<LoadFailure>> {
    let mut cx = Compiler {
        fs,
        sources: SourceMap::default(),
        diags: Diagnostics::default(),
        scopes: Vec::new(),
        resources: IndexMap::new(),
        vars: IndexMap::new(),
        secrets: IndexMap::new(),
        name: String::new(),
        module_chain: Vec::new(),
        input_types: Vec::new(),
        ingress_listen: None,
        stack_dir: root_file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        ingress_tls: None,
        ingress_limits: crate::model::IngressLimits::default(),
        change_source: None,
        alerting: crate::alerting::Alerting::default(),
        environments: Vec::new(),
        environment_names: Vec::new(),
        shared_service_spans: Vec::new(),
        promoted_scopes: Vec::new(),
        awaiting_promotion: Vec::new(),
        runbooks: crate::runbooks::Runbooks::new(),
    };
    cx.root(root_file);
    if cx.diags.is_empty() {
        let mut diags = std::mem::take(&mut cx.diags);
        resolve::resolve(&mut cx.as_view(), &mut diags);
        cx.diags = diags;
    }
    // References were checked with every environment's services present; what waits for a
    // promotion leaves the stack only now.
    let awaiting_promotion =
        environments::prune_awaiting(&mut cx.resources, &cx.awaiting_promotion);
    let Compiler {
        sources,
        diags,
        scopes,
        resources,
        vars,
        secrets,
        name,
        ingress_listen,
        ingress_tls,
        ingress_limits,
        change_source,
        alerting,
        environments,
        runbooks,
        shared_service_spans,
        ..
    } = cx;
    if !diags.is_empty() {
        let mut diags = diags;
        // Every environment's services are copies of the root `services:`: a mistake written
        // there is the user's `services.NAME...`, said once, not once per environment.
        let written_in_services = |span: Option<Span>| {
            span.is_some_and(|s| {
                shared_service_spans
                    .iter()
                    .any(|o| o.file == s.file && o.start <= s.start && s.end <= o.end)
            })
        };
        for environment in &environments {
            diags.rewrite_key_prefix(
                &format!("{}services.", environment.prefix()),
                "services.",
                written_in_services,
            );
        }
        return Err(Box::new(LoadFailure {
            sources,
            diagnostics: diags.into_sorted(),
        }));
    }
    let digest = digest(&sources);
    Ok(Stack {
        name,
        sources,
        digest,
        vars,
        secrets,
        scopes,
        resources,
        ingress_listen,
        ingress_tls,
        ingress_limits,
        change_source,
        alerting,
        environments,
        awaiting_promotion,
        runbooks,
    })
}

fn digest(sources: &SourceMap) -> String {
    let mut hasher = Sha256::new();
    for (_, file) in sources.files() {
        hasher.update(file.path.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(file.text.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

/// What the reference resolver needs from a finished compile.
pub(crate) struct View<'a> {
    pub scopes: &'a [Scope],
    pub resources: &'a mut IndexMap<String, Resource>,
    pub vars: &'a IndexMap<String, serde_json::Value>,
    pub secrets: &'a IndexMap<String, SecretSource>,
    pub sources: &'a SourceMap,
}

struct Compiler<'fs> {
    fs: &'fs dyn FileSystem,
    sources: SourceMap,
    diags: Diagnostics,
    scopes: Vec<Scope>,
    resources: IndexMap<String, Resource>,
    vars: IndexMap<String, serde_json::Value>,
    secrets: IndexMap<String, SecretSource>,
    name: String,
    /// Module sources being loaded, outermost first, to refuse a module that calls itself.
    module_chain: Vec<PathBuf>,
    /// Declared input types per scope (for type checks of literal inputs).
    input_types: Vec<IndexMap<String, String>>,
    /// `ingress.listen`, or the default when the stack has routes.
    ingress_listen: Option<std::net::SocketAddr>,
    /// The root file's directory, where pipeline artifacts are looked up.
    stack_dir: PathBuf,
    /// `ingress.tls`, when both files are readable PEM of the right kind.
    ingress_tls: Option<crate::model::IngressTls>,
    /// `ingress:`'s limits on clients.
    ingress_limits: crate::model::IngressLimits,
    /// `source:`, when declared and valid.
    change_source: Option<crate::model::ChangeSource>,
    /// `alerts:`, `receivers:`, `notify:` and `inhibit:` (root file only).
    alerting: crate::alerting::Alerting,
    /// `environments:`, in order.
    environments: Vec<crate::environments::Environment>,
    /// Every name under `environments:`, to tell "declared later" from "unknown".
    environment_names: Vec<String>,
    /// Where the root `services:` entries are written, when environments copy them.
    shared_service_spans: Vec<Span>,
    /// Scopes of environments that receive releases by promotion rather than building them.
    promoted_scopes: Vec<ScopeId>,
    /// Services of promoted environments to which no release has been promoted yet.
    awaiting_promotion: Vec<String>,
    /// `runbooks:` (root file only).
    runbooks: crate::runbooks::Runbooks,
}

/// The sections of one scope gathered from its file and its includes, with the key of each entry
/// so duplicates can cite both places.
#[derive(Default)]
struct Sections<'n> {
    vars: Vec<(&'n Key, &'n Node)>,
    secrets: Vec<(&'n Key, &'n Node)>,
    modules: Vec<(&'n Key, &'n Node)>,
    resources: Vec<(&'n Key, &'n Node)>,
    services: Vec<(&'n Key, &'n Node)>,
    outputs: Vec<(&'n Key, &'n Node)>,
    inputs: Vec<(&'n Key, &'n Node)>,
}

impl<'fs> Compiler<'fs> {
    fn as_view(&mut self) -> View<'_> {
        View {
            scopes: &self.scopes,
            resources: &mut self.resources,
            vars: &self.vars,
            secrets: &self.secrets,
            sources: &self.sources,
        }
    }

    fn emit(&mut self, diagnostic: Diagnostic) {
        self.diags.push(diagnostic);
    }

    fn err(
        &mut self,
        code: Code,
        span: Span,
        path: &str,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.diags
            .push_mut(Diagnostic::new(code, span, path, message))
    }

    fn read(
        &mut self,
        path: &Path,
        from: Option<(Span, &str)>,
    ) -> Option<(crate::source::FileId, Node)> {
        let path = normalize(path);
        let text = match self.fs.read_to_string(&path) {
            Ok(text) => text,
            Err(err) => {
                let message = format!("cannot read {}: {err}", path.display());
                match from {
                    Some((span, key_path)) => {
                        self.emit(
                            Diagnostic::new(Code::BadSource, span, key_path, message)
                                .label("referenced here"),
                        );
                    }
                    None => self.diags.push(Diagnostic::unplaced(Code::Io, message)),
                }
                return None;
            }
        };
        let file = self.sources.add(path, text);
        let text = self.sources.file(file).text.clone();
        let node = yaml::parse(file, &text, &mut self.diags)?;
        Some((file, node))
    }

    fn root(&mut self, root_file: &Path) {
        let Some((_, node)) = self.read(root_file, None) else {
            return;
        };
        let base = root_file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let Some(entries) = self.map(
            &node,
            "",
            "the stack: a mapping with `name:` and sections such as `resources:`",
        ) else {
            return;
        };
        self.check_keys(entries, ROOT_KEYS, "", "the stack file");
        self.section_types(entries, "");
        match entries.iter().find(|(k, _)| k.text == "name") {
            Some((_, v)) => self.name = self.stack_name(v),
            None => {
                self.emit(
                    Diagnostic::new(
                        Code::MissingKey,
                        node.span,
                        "name",
                        "the stack has no `name`",
                    )
                    .help("add `name: my-stack` at the top of the file")
                    .label("expected a `name:` key in this mapping"),
                );
            }
        }
        let includes = self.includes(entries, &base, "");
        let mut sections = Sections::default();
        Self::gather(entries, &mut sections);
        for (_, inc) in &includes {
            if let Y::Map(inc_entries) = &inc.value {
                Self::gather(inc_entries, &mut sections);
            }
        }
        self.scopes.push(Scope::new(String::new(), None));
        self.input_types.push(IndexMap::new());
        self.root_sections(&sections);
        let environments = entries.iter().find(|(k, _)| k.text == "environments");
        let instantiated = environments.map(|_| std::mem::take(&mut sections.services));
        self.scope_body(0, &sections, &base);
        self.ingress(entries, &base);
        self.change_source(entries);
        let mut route_lists: Vec<&Node> = entries
            .iter()
            .filter(|(k, _)| k.text == "routes")
            .map(|(_, v)| v)
            .collect();
        for (_, inc) in &includes {
            if let Y::Map(inc_entries) = &inc.value {
                route_lists.extend(
                    inc_entries
                        .iter()
                        .filter(|(k, _)| k.text == "routes")
                        .map(|(_, v)| v),
                );
            }
        }
        match (environments, instantiated) {
            (Some((_, node)), Some(services)) => {
                let declared = environments::Instantiated {
                    services: self.unique(&services, "services"),
                    routes: route_lists,
                };
                self.environments = self.environments(node, &declared, &base);
            }
            _ => self.routes(&route_lists, 0, &mut IndexMap::new()),
        }
        if self.ingress_listen.is_none()
            && self
                .resources
                .values()
                .any(|r| r.kind == schema::ROUTE.kind)
        {
            self.ingress_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 8080)));
        }
        self.alerting = self.compile_alerting(entries);
        let receivers = self.alerting.receivers.clone();
        self.runbooks = self.compile_runbooks(entries, &receivers);
    }

    /// `ingress: { listen: ADDRESS, tls: { cert: PATH, key: PATH } }`.
    fn ingress(&mut self, entries: &[(Key, Node)], base: &Path) {
        let Some((_, node)) = entries.iter().find(|(k, _)| k.text == "ingress") else {
            return;
        };
        let Some(fields) = self.map(node, "ingress", "`{ listen: 127.0.0.1:8080 }`") else {
            return;
        };
        self.check_keys(
            fields,
            &[
                "listen",
                "tls",
                "header_timeout",
                "idle_timeout",
                "send_timeout",
                "max_connections",
            ],
            "ingress",
            "`ingress`",
        );
        self.ingress_limits(fields);
        let tls = fields.iter().find(|(k, _)| k.text == "tls");
        if let Some((_, tls)) = tls {
            self.ingress_tls(tls, base);
        }
        let Some((_, listen)) = fields.iter().find(|(k, _)| k.text == "listen") else {
            let port = if tls.is_some() { 8443 } else { 8080 };
            self.ingress_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
            return;
        };
        let text = match &listen.value {
            Y::String { text, .. } => text.clone(),
            Y::Number(n) => format!("127.0.0.1:{n}"),
            _ => String::new(),
        };
        let parsed = text.parse::<std::net::SocketAddr>().ok().or_else(|| {
            text.parse::<u16>()
                .ok()
                .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p)))
        });
        match parsed {
            Some(addr) => self.ingress_listen = Some(addr),
            None => self.emit(
                Diagnostic::new(
                    Code::InvalidValue,
                    listen.span,
                    "ingress.listen",
                    format!("`{text}` is not an address to listen on"),
                )
                .label("expected IP:PORT")
                .help("e.g. `127.0.0.1:8080`, `0.0.0.0:80`, or a port alone (8080)"),
            ),
        }
    }

    /// `ingress`'s limits on clients: durations above zero, `max_connections` a whole number
    /// of at least 1.
    fn ingress_limits(&mut self, fields: &[(Key, Node)]) {
        let mut limits = crate::model::IngressLimits::default();
        for (key, node) in fields {
            let path = format!("ingress.{}", key.text);
            let slot = match key.text.as_str() {
                "header_timeout" => &mut limits.header_timeout_ms,
                "idle_timeout" => &mut limits.idle_timeout_ms,
                "send_timeout" => &mut limits.send_timeout_ms,
                "max_connections" => {
                    match node.value {
                        Y::Number(n)
                            if n.fract() == 0.0 && (1.0..=f64::from(u32::MAX)).contains(&n) =>
                        {
                            limits.max_connections = Some(n as u32);
                        }
                        _ => self.wrong_type(node, &path, "a whole number of at least 1"),
                    }
                    continue;
                }
                _ => continue,
            };
            match self.duration(node, &path) {
                Some(0) => self.invalid(
                    node.span,
                    &path,
                    format!("`{}` must be longer than zero", key.text),
                    "a duration like `30s`; a zero limit would close every connection at once",
                ),
                Some(ms) => *slot = Some(ms),
                None => {}
            }
        }
        self.ingress_limits = limits;
    }

    /// `ingress.tls: { cert: PATH, key: PATH }`: both files are read (through the
    /// `FileSystem`) and must be PEM holding a certificate and a private key respectively.
    fn ingress_tls(&mut self, node: &Node, base: &Path) {
        let expected = "`{ cert: certs/shop.pem, key: certs/shop.key }`";
        let Some(fields) = self.map(node, "ingress.tls", expected) else {
            return;
        };
        self.check_keys(fields, &["cert", "key"], "ingress.tls", "`ingress.tls`");
        let mut files = Vec::new();
        for (name, kind) in [("cert", PemKind::Certificate), ("key", PemKind::PrivateKey)] {
            let key_path = format!("ingress.tls.{name}");
            let Some((_, value)) = fields.iter().find(|(k, _)| k.text == name) else {
                self.emit(
                    Diagnostic::new(
                        Code::MissingKey,
                        node.span,
                        &key_path,
                        format!("`ingress.tls` has no `{name}`"),
                    )
                    .label(format!("expected a `{name}:` key in this mapping"))
                    .help(format!("TLS needs both files: {expected}")),
                );
                continue;
            };
            let Some(text) = self.string(value, &key_path) else {
                continue;
            };
            let path = normalize(&base.join(&text));
            if let Err(why) = self.pem_file(&path, kind) {
                self.emit(
                    Diagnostic::new(
                        Code::InvalidValue,
                        value.span,
                        &key_path,
                        format!("`{text}` {why}"),
                    )
                    .label(kind.expected())
                    .help(kind.help()),
                );
                continue;
            }
            files.push((path, value.span));
        }
        if let [(cert, cert_span), (key, key_span)] = files.as_slice() {
            self.ingress_tls = Some(crate::model::IngressTls {
                cert: cert.clone(),
                key: key.clone(),
                cert_span: *cert_span,
                key_span: *key_span,
            });
        }
    }

    /// Why `path` cannot serve as a PEM file of `kind`, if it cannot.
    fn pem_file(&self, path: &Path, kind: PemKind) -> Result<(), String> {
        let shown = path.display();
        if self.fs.is_dir(path) {
            return Err(format!("names a directory ({shown}), not a file"));
        }
        let text = self.fs.read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("does not exist (looked for {shown})"),
            std::io::ErrorKind::PermissionDenied => {
                format!("cannot be read (permission denied on {shown})")
            }
            std::io::ErrorKind::InvalidData => {
                format!("is not PEM text ({shown} is binary; DER must be converted to PEM)")
            }
            _ => format!("cannot be read ({shown}: {e})"),
        })?;
        let labels = crate::pem::labels(&text).map_err(|why| format!("is not valid PEM: {why}"))?;
        let has = |f: fn(&str) -> bool| labels.iter().any(|l| f(l));
        let certificate = |l: &str| l == "CERTIFICATE";
        match kind {
            PemKind::Certificate if has(certificate) => Ok(()),
            PemKind::PrivateKey if has(crate::pem::is_private_key) => Ok(()),
            PemKind::Certificate if has(crate::pem::is_private_key) => {
                Err("holds a private key, not a certificate (are `cert` and `key` swapped?)".into())
            }
            PemKind::PrivateKey if has(certificate) => {
                Err("holds a certificate, not a private key (are `cert` and `key` swapped?)".into())
            }
            PemKind::PrivateKey if has(|l| l == "ENCRYPTED PRIVATE KEY") => {
                Err("holds an encrypted private key; the ingress needs it unencrypted".into())
            }
            _ if labels.is_empty() => Err("is not PEM: it has no `-----BEGIN` block".into()),
            _ => Err(format!(
                "holds no {} (found {})",
                kind.block(),
                labels
                    .iter()
                    .map(|l| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// `routes:`: a list of rules; each becomes a `route` resource named after its host and path
    /// (or its `name:`), so reordering the list changes nothing.
    fn routes(
        &mut self,
        lists: &[&Node],
        scope: ScopeId,
        seen: &mut IndexMap<(String, String), Span>,
    ) {
        for list in lists {
            let Y::Seq(items) = &list.value else {
                self.wrong_type(
                    list,
                    "routes",
                    "a list of routes: `- { host: shop.localhost, path: /api, service: api }`",
                );
                continue;
            };
            for (i, item) in items.iter().enumerate() {
                self.route(item, i, scope, seen);
            }
        }
    }

    /// A route's time limits must be longer than zero: a zero one would answer 408 or 504 at
    /// a request's first pause, or close a WebSocket at once.
    fn route_limits_above_zero(
        &mut self,
        entries: &[(Key, Node)],
        resource: &Resource,
        address: &str,
    ) {
        for (key, node) in entries {
            let key = key.text.as_str();
            let limit = matches!(
                key,
                "timeout" | "body_timeout" | "idle_timeout" | "tunnel_timeout"
            );
            let zero = resource.attrs.get(key).is_some_and(
                |v| matches!(&v.kind, crate::model::ValueKind::Literal(j) if j.as_u64() == Some(0)),
            );
            if limit && zero {
                self.invalid(
                    node.span,
                    &format!("{address}.{key}"),
                    format!("`{key}` must be longer than zero"),
                    "a duration like `30s`; a zero limit would fail every request at its first pause",
                );
            }
        }
    }

    fn route(
        &mut self,
        item: &Node,
        index: usize,
        scope: ScopeId,
        seen: &mut IndexMap<(String, String), Span>,
    ) {
        let scope_prefix = self.scopes[scope].prefix.clone();
        let path = format!("{scope_prefix}routes[{index}]");
        let Some(entries) = self.map(
            item,
            &path,
            "a route: `{ host: shop.localhost, path: /api, service: api }`",
        ) else {
            return;
        };
        let literal = |key: &str| {
            entries
                .iter()
                .find(|(k, _)| k.text == key)
                .and_then(|(_, v)| match &v.value {
                    Y::String { text, .. } => Some((text.clone(), v.span)),
                    _ => None,
                })
        };
        let host = literal("host");
        let prefix = literal("path").map_or_else(|| "/".to_owned(), |(p, _)| p);
        let name = literal("name").map(|(n, _)| n).unwrap_or_else(|| {
            // `*.shop.localhost` must not share `shop.localhost`'s name.
            let raw = format!(
                "{}{}",
                host.as_ref()
                    .map_or(String::new(), |(h, _)| match h.strip_prefix("*.") {
                        Some(rest) => format!("wildcard.{rest}"),
                        None => h.clone(),
                    }),
                if prefix == "/" { "" } else { prefix.as_str() }
            );
            let slug: String = raw
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '-'
                    }
                })
                .collect();
            let slug = slug.trim_matches('-').to_owned();
            if slug.is_empty() {
                format!("route-{index}")
            } else if slug.starts_with(|c: char| c.is_ascii_digit()) {
                format!("r-{slug}")
            } else {
                slug
            }
        });
        let address = format!("{scope_prefix}routes.{name}");
        let mut resource = Resource::new(address.clone(), scope, schema::ROUTE.kind, item.span);
        for (k, v) in entries {
            let key_path = format!("{address}.{}", k.text);
            match (k.text.as_str(), schema::ROUTE.attr(&k.text)) {
                ("name" | "description", _) => {}
                (_, Some(attr)) => {
                    let value = self.attribute(v, &key_path, attr.ty);
                    resource.attrs.insert(k.text.clone(), value);
                }
                (_, None) => self.unknown_key(
                    k,
                    &address,
                    schema::ROUTE
                        .attrs
                        .iter()
                        .map(|a| a.name)
                        .chain(["name", "description"]),
                    "a route",
                ),
            }
        }
        self.required_attrs(&schema::ROUTE, &resource, item.span, &address);
        self.route_limits_above_zero(entries, &resource, &address);
        if let Some((host, span)) = &host
            && let Err((why, fix)) = check_host(host)
        {
            let help = match fix {
                Some(fix) => format!("did you mean `{fix}`? A host is a name like `shop.localhost`, a wildcard like `*.shop.localhost`, or `*` for any host"),
                None => "use a name like `shop.localhost`, a wildcard like `*.shop.localhost`, or `*` for any host".to_owned(),
            };
            self.emit(
                Diagnostic::new(
                    Code::InvalidValue,
                    *span,
                    format!("{address}.host"),
                    format!("`{host}` is not a host pattern: {why}"),
                )
                .label("invalid host")
                .help(help),
            );
        }
        if let Some((p, span)) = literal("path")
            && (!p.starts_with('/') || p.contains(char::is_whitespace))
        {
            self.emit(
                Diagnostic::new(
                    Code::InvalidValue,
                    span,
                    format!("{address}.path"),
                    format!("`{p}` is not a path prefix"),
                )
                .label("expected a path starting with `/`")
                .help("e.g. `/`, `/api`"),
            );
        }
        if let Some((service, span)) = literal("service") {
            resource
                .depends_on
                .insert(format!("{scope_prefix}services.{service}"), span);
        }
        if let Some((host, span)) = host {
            let key = (
                host.to_ascii_lowercase(),
                prefix.trim_end_matches('/').to_owned(),
            );
            if let Some(first) = seen.get(&key) {
                let first = *first;
                self.emit(
                    Diagnostic::new(
                        Code::DuplicateName,
                        span,
                        address.clone(),
                        format!("two routes claim host `{}` and path `{prefix}`", key.0),
                    )
                    .label("claimed again here")
                    .related(first, "first claimed here")
                    .help("remove one, or give them different paths"),
                );
            } else {
                seen.insert(key, span);
            }
        }
        if let Some(first) = self.resources.get(&address) {
            let first = first.span;
            self.emit(
                Diagnostic::new(
                    Code::DuplicateName,
                    item.span,
                    address.clone(),
                    format!("two routes are named `{name}`"),
                )
                .label("named again here")
                .related(first, "first named here")
                .help("give one of them its own `name:`"),
            );
            return;
        }
        self.resources.insert(address, resource);
    }

    fn stack_name(&mut self, node: &Node) -> String {
        let Some(name) = self.string(node, "name") else {
            return String::new();
        };
        if !is_name(&name) {
            self.emit(
                Diagnostic::new(
                    Code::InvalidValue,
                    node.span,
                    "name",
                    format!("`{name}` is not a valid stack name"),
                )
                .help("use letters, digits, `-` and `_`, starting with a letter")
                .label("invalid name"),
            );
        }
        name
    }

    /// Reads `include:` files (recursively), returning their top nodes after checking their keys.
    fn includes(
        &mut self,
        entries: &[(Key, Node)],
        base: &Path,
        scope_path: &str,
    ) -> Vec<(PathBuf, Node)> {
        let mut out = Vec::new();
        let mut queue: Vec<(PathBuf, Span, String)> = Vec::new();
        self.include_list(entries, base, scope_path, &mut queue);
        let mut seen: Vec<PathBuf> = Vec::new();
        let mut budget = 256usize;
        while let Some((path, span, key_path)) = queue.pop() {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                break;
            }
            let path = normalize(&path);
            if seen.contains(&path) || self.sources.find(&path).is_some() {
                self.emit(
                    Diagnostic::new(
                        Code::DuplicateName,
                        span,
                        &key_path,
                        format!("{} is included more than once", path.display()),
                    )
                    .label("included again here"),
                );
                continue;
            }
            seen.push(path.clone());
            let Some((_, node)) = self.read(&path, Some((span, &key_path))) else {
                continue;
            };
            let Some(inc) = self.map(
                &node,
                "",
                "an included file: a mapping of sections such as `resources:`",
            ) else {
                continue;
            };
            self.check_keys(inc, INCLUDE_KEYS, "", "an included file");
            self.section_types(inc, "");
            let inc_base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            self.include_list(inc, &inc_base, scope_path, &mut queue);
            out.push((path, node));
        }
        out
    }

    fn include_list(
        &mut self,
        entries: &[(Key, Node)],
        base: &Path,
        scope_path: &str,
        queue: &mut Vec<(PathBuf, Span, String)>,
    ) {
        let Some((_, list)) = entries.iter().find(|(k, _)| k.text == "include") else {
            return;
        };
        let key_path = join(scope_path, "include");
        let items: Vec<&Node> = match &list.value {
            Y::Seq(items) => items.iter().collect(),
            Y::String { .. } => vec![list],
            _ => {
                self.wrong_type(list, &key_path, "a list of file paths");
                return;
            }
        };
        for (i, item) in items.into_iter().enumerate() {
            let item_path = format!("{key_path}[{i}]");
            if let Some(rel) = self.string(item, &item_path) {
                queue.push((base.join(rel), item.span, item_path));
            }
        }
    }

    fn gather<'n>(entries: &'n [(Key, Node)], out: &mut Sections<'n>) {
        for (key, node) in entries {
            let Y::Map(items) = &node.value else { continue };
            let target = match key.text.as_str() {
                "vars" => &mut out.vars,
                "secrets" => &mut out.secrets,
                "modules" => &mut out.modules,
                "resources" => &mut out.resources,
                "services" => &mut out.services,
                "outputs" => &mut out.outputs,
                "inputs" => &mut out.inputs,
                _ => continue,
            };
            target.extend(items.iter().map(|(k, v)| (k, v)));
        }
    }

    /// Checks that sections which must be mappings are mappings.
    fn section_types(&mut self, entries: &[(Key, Node)], scope_path: &str) {
        for (key, node) in entries {
            if matches!(
                key.text.as_str(),
                "vars" | "secrets" | "modules" | "resources" | "services" | "outputs" | "inputs"
            ) && !matches!(node.value, Y::Map(_) | Y::Null)
            {
                self.wrong_type(
                    node,
                    &join(scope_path, &key.text),
                    "a mapping of names to entries",
                );
            }
        }
    }

    fn root_sections(&mut self, sections: &Sections<'_>) {
        for (key, node) in self.unique(&sections.vars, "vars") {
            self.vars.insert(key.text.clone(), node.to_json());
        }
        for (key, node) in self.unique(&sections.secrets, "secrets") {
            if let Some(source) = self.secret(key, node) {
                self.secrets.insert(key.text.clone(), source);
            }
        }
    }

    fn secret(&mut self, key: &Key, node: &Node) -> Option<SecretSource> {
        let path = format!("secrets.{}", key.text);
        let entries = self.map(
            node,
            &path,
            "a mapping with `env:` (a variable name) or `file:` (a path)",
        )?;
        self.check_keys(entries, &["env", "file", "description"], &path, "a secret");
        let env = entries.iter().find(|(k, _)| k.text == "env");
        let file = entries.iter().find(|(k, _)| k.text == "file");
        match (env, file) {
            (Some((_, v)), None) => self
                .string(v, &format!("{path}.env"))
                .map(SecretSource::Env),
            (None, Some((_, v))) => self
                .string(v, &format!("{path}.file"))
                .map(SecretSource::File),
            _ => {
                self.emit(
                    Diagnostic::new(
                        Code::InvalidValue,
                        node.span,
                        &path,
                        "a secret needs exactly one of `env:` or `file:`",
                    )
                    .help("e.g. `db_url: { env: DATABASE_URL }`")
                    .label("here"),
                );
                None
            }
        }
    }

    /// Entries with unique, valid names; duplicates (across files too) are reported with both places.
    fn unique<'n>(
        &mut self,
        entries: &[(&'n Key, &'n Node)],
        section: &str,
    ) -> Vec<(&'n Key, &'n Node)> {
        let mut seen: IndexMap<&str, Span> = IndexMap::new();
        let mut out = Vec::new();
        for &(key, node) in entries {
            let path = format!("{section}.{}", key.text);
            if let Some(first) = seen.get(key.text.as_str()) {
                let first = *first;
                self.emit(
                    Diagnostic::new(
                        Code::DuplicateName,
                        key.span,
                        &path,
                        format!("`{}` is declared twice in `{section}`", key.text),
                    )
                    .related(first, "first declared here")
                    .help("rename one of them; names must be unique within a section")
                    .label("declared again here"),
                );
                continue;
            }
            if !is_name(&key.text) {
                self.emit(
                    Diagnostic::new(
                        Code::InvalidValue,
                        key.span,
                        &path,
                        format!("`{}` is not a valid name", key.text),
                    )
                    .help("use letters, digits, `-` and `_`, starting with a letter")
                    .label("invalid name"),
                );
            }
            seen.insert(&key.text, key.span);
            out.push((key, node));
        }
        out
    }

    fn scope_body(&mut self, scope: ScopeId, sections: &Sections<'_>, base: &Path) {
        let prefix = self.scopes[scope].prefix.clone();
        for (key, node) in self.unique(&sections.outputs, &format!("{prefix}outputs")) {
            let value = self.value(node, &format!("{prefix}outputs.{}", key.text));
            self.scopes[scope].outputs.insert(key.text.clone(), value);
        }
        for (key, node) in self.unique(&sections.resources, &format!("{prefix}resources")) {
            self.resource(scope, key, node, base, None);
        }
        for (key, node) in self.unique(&sections.services, &format!("{prefix}services")) {
            self.resource(scope, key, node, base, Some(&schema::SERVICE));
        }
        for (key, node) in self.unique(&sections.modules, &format!("{prefix}modules")) {
            self.module_call(scope, key, node, base);
        }
    }

    /// A resource under `resources:` (its `kind:` names the kind), or under a section whose kind
    /// is implied (`services:`).
    fn resource(
        &mut self,
        scope: ScopeId,
        key: &Key,
        node: &Node,
        base: &Path,
        implied: Option<&'static KindSchema>,
    ) {
        let section = if implied.is_some() {
            "services"
        } else {
            "resources"
        };
        let address = format!("{}{section}.{}", self.scopes[scope].prefix, key.text);
        let expected = match implied {
            Some(_) => "a service: a mapping with `run:` and its settings",
            None => "a resource: a mapping with `kind:` and its attributes",
        };
        let Some(entries) = self.map(node, &address, expected) else {
            return;
        };
        let kind = match (implied, entries.iter().find(|(k, _)| k.text == "kind")) {
            (Some(kind), _) => Some(kind),
            (None, None) => {
                let kinds: Vec<&str> = schema::KINDS.iter().map(|k| k.kind).collect();
                self.emit(
                    Diagnostic::new(
                        Code::MissingKey,
                        key.span,
                        format!("{address}.kind"),
                        "the resource has no `kind`",
                    )
                    .help(format!("add `kind:` with one of: {}", kinds.join(", ")))
                    .label("this resource needs `kind:`"),
                );
                None
            }
            (None, Some((_, k))) => self.kind(k, &format!("{address}.kind")),
        };
        let mut resource = Resource::new(
            address.clone(),
            scope,
            kind.map_or("", |k| k.kind),
            key.span,
        );
        for (k, v) in entries {
            let path = format!("{address}.{}", k.text);
            match k.text.as_str() {
                "kind" if implied.is_none() => {}
                "description" => {}
                "depends_on" => self.depends_on(v, &path, scope, &mut resource, section),
                "lifecycle" => resource.lifecycle = self.lifecycle(v, &path),
                "reconcile" => resource.reconcile = self.reconcile(v, &path),
                _ => {
                    let Some(kind) = kind else { continue };
                    match kind.attr(&k.text) {
                        Some(attr) => {
                            let value = self.attribute(v, &path, attr.ty);
                            resource.attrs.insert(k.text.clone(), value);
                        }
                        None => self.unknown_key(
                            k,
                            &address,
                            kind.attrs.iter().map(|a| a.name).chain(
                                schema::META_KEYS
                                    .iter()
                                    .copied()
                                    .filter(|k| implied.is_none() || *k != "kind"),
                            ),
                            &if implied.is_some() {
                                "a service".to_owned()
                            } else {
                                format!("a `{}` resource", kind.kind)
                            },
                        ),
                    }
                }
            }
        }
        if let Some(kind) = kind {
            if kind.kind == schema::SERVICE.kind {
                self.check_program(&resource, base);
                self.check_job(&resource);
                self.check_user(&resource);
                if !self.promoted_scopes.contains(&scope) {
                    self.release_digest(&mut resource, base);
                }
            }
            self.template_files(kind, &mut resource, base);
            self.required_attrs(kind, &resource, node.span, &address);
            self.lifecycle_attrs(kind, &resource, &address);
        }
        self.resources.insert(address, resource);
    }

    /// A service's code is part of its declared state: the digest of the tree its `path`
    /// names becomes its `release_id` attribute (a literal `path` only; one computed from an
    /// expression is released at apply time instead).
    fn release_digest(&mut self, resource: &mut Resource, base: &Path) {
        if let Some(source) = resource.attrs.get("release") {
            self.artifact_release(resource, source.clone());
            return;
        }
        // Without `path:` a service runs from the stack's own directory, which also holds
        // its data and kiln's outputs: no release is made of that.
        let rel = match resource.attrs.get("path").map(|v| &v.kind) {
            Some(ValueKind::Literal(serde_json::Value::String(rel))) => rel.as_str(),
            _ => return,
        };
        let span = resource.attrs.get("path").map_or(resource.span, |v| v.span);
        let dir = normalize(&base.join(rel));
        match self.fs.tree_digest(&dir) {
            None => {}
            Some(Ok(digest)) => {
                resource.rendered.insert(
                    "release_id".into(),
                    Value {
                        kind: ValueKind::Literal(serde_json::Value::String(digest)),
                        span,
                    },
                );
            }
            Some(Err(err)) => self.emit(
                Diagnostic::new(
                    Code::BadSource,
                    span,
                    format!("{}.path", resource.address),
                    format!(
                        "cannot read the service's code under {}: {err}",
                        dir.display()
                    ),
                )
                .label("the service's release is made from this directory")
                .help(
                    "`path:` names the directory the service runs from, relative to the stack file",
                ),
            ),
        }
    }

    /// `release: { pipeline, artifact }`: the newest successful run of that pipeline that
    /// uploaded that artifact gives the release (build once, deploy that).
    fn artifact_release(&mut self, resource: &mut Resource, source: Value) {
        let key_path = format!("{}.release", resource.address);
        if resource.attrs.contains_key("path") {
            self.emit(
                Diagnostic::new(
                    Code::InvalidValue,
                    source.span,
                    &key_path,
                    "a service runs either from `path:` or from a pipeline's `release:`, not both",
                )
                .label("the release comes from a pipeline here")
                .help("remove `path:` (the artifact's files are the service's directory) or `release:`"),
            );
            return;
        }
        let ValueKind::Literal(serde_json::Value::Object(fields)) = &source.kind else {
            return;
        };
        let field = |k: &str| fields.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        let (pipeline, artifact) = (field("pipeline"), field("artifact"));
        match self.fs.artifact_release(&self.stack_dir, pipeline, artifact) {
            None => {}
            Some(Ok(digest)) => {
                resource.rendered.insert(
                    "release_id".into(),
                    Value {
                        kind: ValueKind::Literal(serde_json::Value::String(digest)),
                        span: source.span,
                    },
                );
            }
            Some(Err(err)) => self.emit(
                Diagnostic::new(
                    Code::BadSource,
                    source.span,
                    &key_path,
                    format!("no release of artifact `{artifact}` from pipeline `{pipeline}`: {err}"),
                )
                .label("the service's release comes from here")
                .help(format!(
                    "run the pipeline first (`kiln ci run`): the newest successful run of `{pipeline}` that uploads `{artifact}` becomes the release"
                )),
            ),
        }
    }

    /// `user:` must name an account of this machine.
    fn check_user(&mut self, resource: &Resource) {
        let Some(value) = resource.attrs.get("user") else {
            return;
        };
        let ValueKind::Literal(serde_json::Value::String(name)) = &value.kind else {
            return;
        };
        if !self.fs.user_exists(name) {
            self.emit(
                Diagnostic::new(
                    Code::InvalidValue,
                    value.span,
                    format!("{}.user", resource.address),
                    format!("there is no user `{name}` on this machine"),
                )
                .label("unknown user")
                .help("create the account, or remove `user:` to run as kiln's own user"),
            );
        }
    }

    /// A job runs to completion, so it cannot be restarted whatever happens.
    fn check_job(&mut self, resource: &Resource) {
        let Some(job) = resource.attrs.get("job") else {
            return;
        };
        if !matches!(job.kind, ValueKind::Literal(serde_json::Value::Bool(true))) {
            return;
        }
        let restart = resource.attrs.get("restart").and_then(|v| match &v.kind {
            ValueKind::Literal(serde_json::Value::String(s)) => Some(s.as_str()),
            _ => None,
        });
        if !matches!(restart, Some("never" | "on-failure")) {
            let span = resource.attrs.get("restart").map_or(job.span, |v| v.span);
            self.emit(
                Diagnostic::new(
                    Code::InvalidValue,
                    span,
                    format!("{}.restart", resource.address),
                    "a job must not restart after it succeeds",
                )
                .label(if restart.is_some() {
                    "restarts always"
                } else {
                    "restart defaults to always"
                })
                .help("set `restart: on-failure` (retry until it succeeds) or `restart: never`"),
            );
        }
    }

    /// A service's program must exist before anything starts.
    fn check_program(&mut self, resource: &Resource, base: &Path) {
        let literal = |name: &str| match resource.attrs.get(name).map(|v| &v.kind) {
            Some(ValueKind::Literal(json)) => Some(json.clone()),
            _ => None,
        };
        if literal("shell") == Some(serde_json::Value::Bool(true)) {
            return;
        }
        let Some(run) = resource.attrs.get("run") else {
            return;
        };
        let program = match literal("run") {
            Some(serde_json::Value::String(line)) => crate::words::split_command(&line)
                .ok()
                .and_then(|w| w.into_iter().next()),
            Some(serde_json::Value::Array(items)) => {
                items.first().and_then(|v| v.as_str().map(str::to_owned))
            }
            _ => None,
        };
        let Some(program) = program else { return };
        let dir = [literal("workdir"), literal("path")]
            .into_iter()
            .flatten()
            .find_map(|v| v.as_str().map(|p| base.join(p)))
            .unwrap_or_else(|| base.to_path_buf());
        if !self.fs.program_exists(&program, &dir) {
            let where_ = if program.contains('/') {
                format!("in {}", dir.display())
            } else {
                "on PATH".to_owned()
            };
            self.emit(
                Diagnostic::new(
                    Code::InvalidValue,
                    run.span,
                    format!("{}.run", resource.address),
                    format!("`{program}` is not an executable {where_}"),
                )
                .label("cannot be run")
                .help("install it, fix its name, or give a path relative to the service's `path`"),
            );
        }
    }

    /// Reads and parses template files named by literal `template:` paths.
    fn template_files(&mut self, kind: &KindSchema, resource: &mut Resource, base: &Path) {
        for attr in kind.attrs.iter().filter(|a| a.ty == AttrType::TemplateFile) {
            let Some(value) = resource.attrs.get(attr.name) else {
                continue;
            };
            let ValueKind::Literal(serde_json::Value::String(rel)) = &value.kind else {
                continue;
            };
            let key_path = format!("{}.{}", resource.address, attr.name);
            let path = normalize(&base.join(rel));
            let text = match self.fs.read_to_string(&path) {
                Ok(text) => text,
                Err(err) => {
                    self.emit(
                        Diagnostic::new(
                            Code::BadSource,
                            value.span,
                            &key_path,
                            format!("cannot read template {}: {err}", path.display()),
                        )
                        .label("template named here")
                        .help("the path is relative to the file that declares the resource"),
                    );
                    continue;
                }
            };
            let file = self.sources.add(path, text.clone());
            let whole = Span::new(file, 0, text.len());
            let opts = kiln_expr::ParseOptions {
                named_values: NAMED_VALUES,
                extra_functions: &[],
            };
            let rendered = match kiln_expr::Template::parse(&text, &opts) {
                Ok(t) if t.is_literal() => ValueKind::Literal(serde_json::Value::String(text)),
                Ok(template) => ValueKind::Template {
                    template: Box::new(template),
                    text,
                },
                Err(err) => {
                    self.emit(
                        Diagnostic::new(
                            Code::BadExpression,
                            whole.sub(err.offset, err.len.max(1)),
                            &key_path,
                            format!("invalid expression in the template: {}", err.message),
                        )
                        .label("here")
                        .help("templates use the same `${{ }}` expressions as kiln.yaml"),
                    );
                    continue;
                }
            };
            resource.rendered.insert(
                "content".into(),
                Value {
                    kind: rendered,
                    span: whole,
                },
            );
        }
    }

    fn kind(&mut self, node: &Node, path: &str) -> Option<&'static KindSchema> {
        let name = self.string(node, path)?;
        let found = schema::KINDS.iter().find(|k| k.kind == name);
        if name == "service" {
            self.emit(
                Diagnostic::new(
                    Code::InvalidValue,
                    node.span,
                    path,
                    "services are declared under `services:`, not `resources:`",
                )
                .label("not a resource kind")
                .help("move this entry to the `services:` section and drop `kind:`"),
            );
            return None;
        }
        if found.is_none() {
            let kinds: Vec<&str> = schema::KINDS.iter().map(|k| k.kind).collect();
            let d = self.err(
                Code::InvalidValue,
                node.span,
                path,
                format!("unknown resource kind `{name}`"),
            );
            d.label = format!("expected one of: {}", kinds.join(", "));
            if let Some(best) = closest(&name, kinds.iter().copied()) {
                d.help = Some(format!("did you mean `{best}`?"));
            }
        }
        found
    }

    fn required_attrs(
        &mut self,
        kind: &KindSchema,
        resource: &Resource,
        span: Span,
        address: &str,
    ) {
        for attr in kind.attrs.iter().filter(|a| a.required) {
            if !resource.attrs.contains_key(attr.name) {
                self.emit(
                    Diagnostic::new(
                        Code::MissingKey,
                        resource.span,
                        format!("{address}.{}", attr.name),
                        format!("the `{}` resource has no `{}`", kind.kind, attr.name),
                    )
                    .help(format!(
                        "add `{}:` ({}): {}",
                        attr.name,
                        attr.ty.describe(),
                        attr.doc
                    ))
                    .label(format!("`{}` is required", attr.name)),
                );
            }
        }
        for group in kind.one_of {
            let given: Vec<&str> = group
                .iter()
                .copied()
                .filter(|a| resource.attrs.contains_key(*a))
                .collect();
            if given.len() != 1 {
                let names = group
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(" or ");
                let message = if given.is_empty() {
                    format!("the `{}` resource needs {names}", kind.kind)
                } else {
                    format!("the `{}` resource takes only one of {names}", kind.kind)
                };
                self.emit(
                    Diagnostic::new(
                        Code::MissingKey,
                        if given.is_empty() {
                            resource.span
                        } else {
                            span
                        },
                        address,
                        message,
                    )
                    .help(format!("give exactly one of {names}"))
                    .label("here"),
                );
            }
        }
    }

    fn lifecycle_attrs(&mut self, kind: &KindSchema, resource: &Resource, address: &str) {
        for name in &resource.lifecycle.ignore_changes {
            if kind.attr(name).is_none() {
                let names: Vec<&str> = kind.attrs.iter().map(|a| a.name).collect();
                let d = self.err(
                    Code::InvalidValue,
                    resource.span,
                    &format!("{address}.lifecycle.ignore_changes"),
                    format!(
                        "`ignore_changes` names `{name}`, which a `{}` resource does not have",
                        kind.kind
                    ),
                );
                d.label = format!("attributes: {}", names.join(", "));
                if let Some(best) = closest(name, names.iter().copied()) {
                    d.help = Some(format!("did you mean `{best}`?"));
                }
            }
        }
    }

    /// `depends_on:` names addresses; in `services:` a bare name means another service.
    fn depends_on(
        &mut self,
        node: &Node,
        path: &str,
        scope: ScopeId,
        resource: &mut Resource,
        section: &str,
    ) {
        let prefix = self.scopes[scope].prefix.clone();
        // Inside an environment only services are instantiated: other addresses are the root's.
        let environment = self.scopes[scope].environment.is_some();
        let address = |target: String| {
            if section == "services" && !target.contains('.') {
                format!("{prefix}services.{target}")
            } else if environment && !target.starts_with("services.") {
                target
            } else {
                format!("{prefix}{target}")
            }
        };
        match &node.value {
            Y::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(target) = self.string(item, &format!("{path}[{i}]")) {
                        resource.depends_on.insert(address(target), item.span);
                    }
                }
            }
            // Services may name a condition per dependency, as docker compose does.
            Y::Map(entries) if section == "services" => {
                for (key, value) in entries {
                    let condition = self.dependency_condition(value, &format!("{path}.{}", key.text));
                    let target = address(key.text.clone());
                    resource.depends_on.insert(target.clone(), key.span);
                    resource.conditions.insert(target, condition);
                }
            }
            _ => self.wrong_type(
                node,
                path,
                if section == "services" {
                    "a list of services, or a mapping of services to `{ condition: started | healthy | completed_successfully }`"
                } else {
                    "a list of addresses, like [resources.migrate]"
                },
            ),
        }
    }

    fn dependency_condition(&mut self, node: &Node, path: &str) -> Condition {
        let Some(entries) = self.map(
            node,
            path,
            "`{ condition: started | healthy | completed_successfully }`",
        ) else {
            return Condition::Healthy;
        };
        self.check_keys(entries, &["condition"], path, "a dependency");
        let Some((_, value)) = entries.iter().find(|(k, _)| k.text == "condition") else {
            return Condition::Healthy;
        };
        match self.string(value, &format!("{path}.condition")).as_deref() {
            Some("started") => Condition::Started,
            Some("healthy") | None => Condition::Healthy,
            Some("completed_successfully") => Condition::CompletedSuccessfully,
            Some(other) => {
                let words = ["started", "healthy", "completed_successfully"];
                let mut d = Diagnostic::new(
                    Code::InvalidValue,
                    value.span,
                    format!("{path}.condition"),
                    format!("unknown condition `{other}`"),
                )
                .label("expected started, healthy or completed_successfully");
                if let Some(best) = closest(other, words) {
                    d = d.help(format!("did you mean `{best}`?"));
                }
                self.emit(d);
                Condition::Healthy
            }
        }
    }

    fn lifecycle(&mut self, node: &Node, path: &str) -> Lifecycle {
        let mut out = Lifecycle::default();
        let Some(entries) = self.map(node, path, "a mapping of lifecycle rules") else {
            return out;
        };
        self.check_keys(entries, LIFECYCLE_KEYS, path, "`lifecycle`");
        for (k, v) in entries {
            let p = format!("{path}.{}", k.text);
            match k.text.as_str() {
                "create_before_destroy" => out.create_before_destroy = self.boolean(v, &p),
                "prevent_destroy" => out.prevent_destroy = self.boolean(v, &p),
                "ignore_changes" => match &v.value {
                    Y::Seq(items) => {
                        for (i, item) in items.iter().enumerate() {
                            if let Some(s) = self.string(item, &format!("{p}[{i}]")) {
                                out.ignore_changes.push(s);
                            }
                        }
                    }
                    _ => self.wrong_type(v, &p, "a list of attribute names"),
                },
                _ => {}
            }
        }
        out
    }

    fn reconcile(&mut self, node: &Node, path: &str) -> Reconcile {
        match self.string(node, path).as_deref() {
            Some("auto") => Reconcile::Auto,
            Some("report") | None => Reconcile::Report,
            Some(other) => {
                self.emit(
                    Diagnostic::new(
                        Code::InvalidValue,
                        node.span,
                        path,
                        format!("`reconcile` is `{other}`"),
                    )
                    .help("use `auto` (repair drift by itself) or `report` (only report it)")
                    .label("expected `auto` or `report`"),
                );
                Reconcile::Report
            }
        }
    }

    fn module_call(&mut self, parent: ScopeId, key: &Key, node: &Node, base: &Path) {
        let parent_prefix = self.scopes[parent].prefix.clone();
        let path = format!("{parent_prefix}modules.{}", key.text);
        let Some(entries) = self.map(
            node,
            &path,
            "a module call: a mapping with `source:` and `inputs:`",
        ) else {
            return;
        };
        self.check_keys(entries, MODULE_CALL_KEYS, &path, "a module call");
        let Some((_, source_node)) = entries.iter().find(|(k, _)| k.text == "source") else {
            self.emit(
                Diagnostic::new(
                    Code::MissingKey,
                    key.span,
                    format!("{path}.source"),
                    "the module has no `source`",
                )
                .help("add `source: ./modules/NAME` (a directory with a kiln.yaml)")
                .label("needs `source:`"),
            );
            return;
        };
        let Some(source) = self.string(source_node, &format!("{path}.source")) else {
            return;
        };
        let dir = normalize(&base.join(&source));
        let file = if self.fs.is_dir(&dir) {
            dir.join("kiln.yaml")
        } else {
            dir.clone()
        };
        if self.module_chain.contains(&file) || self.module_chain.len() >= MAX_MODULE_DEPTH {
            let chain: Vec<String> = self
                .module_chain
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            self.emit(
                Diagnostic::new(
                    Code::Cycle,
                    source_node.span,
                    format!("{path}.source"),
                    format!(
                        "module {} calls itself: {} → {}",
                        file.display(),
                        chain.join(" → "),
                        file.display()
                    ),
                )
                .help("modules may nest, but not in a loop")
                .label("called again here"),
            );
            return;
        }
        let Some((_, module_node)) =
            self.read(&file, Some((source_node.span, &format!("{path}.source"))))
        else {
            return;
        };
        let module_base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let Some(module_entries) = self.map(
            &module_node,
            "",
            "a module file: a mapping with `inputs:`, `resources:` and `outputs:`",
        ) else {
            return;
        };
        self.check_keys(module_entries, MODULE_KEYS, "", "a module file");
        self.section_types(module_entries, "");

        let scope = self.scopes.len();
        self.scopes
            .push(Scope::new(format!("{path}."), Some(parent)));
        self.input_types.push(IndexMap::new());
        self.scopes[parent].modules.insert(key.text.clone(), scope);

        let includes = self.includes(module_entries, &module_base, &path);
        let mut sections = Sections::default();
        Self::gather(module_entries, &mut sections);
        for (_, inc) in &includes {
            if let Y::Map(inc_entries) = &inc.value {
                Self::gather(inc_entries, &mut sections);
            }
        }
        let given = entries
            .iter()
            .find(|(k, _)| k.text == "inputs")
            .map(|(_, v)| v);
        self.module_inputs(scope, &sections, given, key.span, &path);
        self.module_chain.push(file);
        self.scope_body(scope, &sections, &module_base);
        self.module_chain.pop();
    }

    fn module_inputs(
        &mut self,
        scope: ScopeId,
        sections: &Sections<'_>,
        given: Option<&Node>,
        call_span: Span,
        path: &str,
    ) {
        let mut declared: IndexMap<String, (Option<Node>, String)> = IndexMap::new();
        for (key, node) in self.unique(&sections.inputs, "inputs") {
            let decl_path = format!("inputs.{}", key.text);
            let Some(entries) = self.map(
                node,
                &decl_path,
                "an input declaration: `{ type: string, default: ..., description: ... }`",
            ) else {
                continue;
            };
            self.check_keys(entries, INPUT_DECL_KEYS, &decl_path, "an input declaration");
            let ty = match entries.iter().find(|(k, _)| k.text == "type") {
                None => "any".to_owned(),
                Some((_, t)) => {
                    let t_name = self
                        .string(t, &format!("{decl_path}.type"))
                        .unwrap_or_else(|| "any".into());
                    if !INPUT_TYPES.contains(&t_name.as_str()) {
                        self.emit(
                            Diagnostic::new(
                                Code::InvalidValue,
                                t.span,
                                format!("{decl_path}.type"),
                                format!("unknown input type `{t_name}`"),
                            )
                            .label(format!("expected one of: {}", INPUT_TYPES.join(", "))),
                        );
                    }
                    t_name
                }
            };
            let default = entries
                .iter()
                .find(|(k, _)| k.text == "default")
                .map(|(_, v)| v.clone());
            declared.insert(key.text.clone(), (default, ty));
        }
        let mut values: IndexMap<String, Value> = IndexMap::new();
        if let Some(given) = given {
            let inputs_path = format!("{path}.inputs");
            if let Some(entries) =
                self.map(given, &inputs_path, "a mapping of input names to values")
            {
                for (k, v) in entries {
                    let p = format!("{inputs_path}.{}", k.text);
                    match declared.get(&k.text) {
                        None => {
                            let d = self.err(
                                Code::ModuleInput,
                                k.span,
                                &p,
                                format!("the module has no input `{}`", k.text),
                            );
                            d.label = "unknown input".into();
                            d.help = Some(
                                match closest(&k.text, declared.keys().map(String::as_str)) {
                                    Some(best) => format!("did you mean `{best}`?"),
                                    None => format!(
                                        "declared inputs: {}",
                                        declared.keys().cloned().collect::<Vec<_>>().join(", ")
                                    ),
                                },
                            );
                        }
                        Some((_, ty)) => {
                            let value = self.value(v, &p);
                            self.check_input_type(&value, v, ty, &p);
                            values.insert(k.text.clone(), value);
                        }
                    }
                }
            }
        }
        for (name, (default, ty)) in &declared {
            if values.contains_key(name) {
                continue;
            }
            match default {
                Some(d) => {
                    let value = self.value(d, &format!("inputs.{name}.default"));
                    values.insert(name.clone(), value);
                }
                None => {
                    self.emit(
                        Diagnostic::new(
                            Code::ModuleInput,
                            call_span,
                            format!("{path}.inputs.{name}"),
                            format!("the module's required input `{name}` is not given"),
                        )
                        .help(format!(
                            "add `{name}:` ({ty}) under `inputs:` of this module call"
                        ))
                        .label(format!("missing input `{name}`")),
                    );
                }
            }
        }
        self.input_types[scope] = declared.into_iter().map(|(k, (_, t))| (k, t)).collect();
        self.scopes[scope].inputs = values;
    }

    fn check_input_type(&mut self, value: &Value, node: &Node, ty: &str, path: &str) {
        let ValueKind::Literal(json) = &value.kind else {
            return;
        };
        let ok = match ty {
            "string" => json.is_string(),
            "number" => json.is_number(),
            "boolean" => json.is_boolean(),
            "list" => json.is_array(),
            "map" => json.is_object(),
            _ => true,
        };
        if !ok {
            self.emit(
                Diagnostic::new(
                    Code::ModuleInput,
                    node.span,
                    path,
                    format!("the input expects a {ty}, found {}", node.value.type_name()),
                )
                .help(format!("give a {ty} here"))
                .label(format!("expected a {ty}")),
            );
        }
    }

    /// A resource attribute: its value with expressions parsed, then its type checked when the
    /// value is known now.
    fn attribute(&mut self, node: &Node, path: &str, ty: AttrType) -> Value {
        let value = self.value(node, path);
        if let ValueKind::Template { template, .. } = &value.kind {
            let whole = template
                .parts()
                .iter()
                .filter(
                    |p| !matches!(p, kiln_expr::TemplatePart::Literal(t) if t.trim().is_empty()),
                )
                .count()
                == 1
                && template
                    .parts()
                    .iter()
                    .any(|p| matches!(p, kiln_expr::TemplatePart::Expr { .. }));
            if !whole && matches!(ty, AttrType::List | AttrType::StringMap) {
                self.emit(
                    Diagnostic::new(Code::WrongType, node.span, path, format!("expected {}, found a string", ty.describe()))
                        .label(format!("expected {}", ty.describe()))
                        .help("text around `${{ }}` always makes a string; use a YAML list or mapping, or one whole `${{ }}` expression"),
                );
            }
        }
        if let ValueKind::Literal(json) = &value.kind
            && let Some(normalised) = self.check_attr(node, json, path, ty)
        {
            return Value {
                kind: ValueKind::Literal(normalised),
                span: value.span,
            };
        }
        value
    }

    /// Checks a literal attribute value against its type; returns the normalised value
    /// (durations in milliseconds).
    fn check_attr(
        &mut self,
        node: &Node,
        json: &serde_json::Value,
        path: &str,
        ty: AttrType,
    ) -> Option<serde_json::Value> {
        use serde_json::Value as J;
        match (ty, json) {
            (AttrType::Any, _) => Some(json.clone()),
            (AttrType::String | AttrType::Path | AttrType::TemplateFile, J::String(_)) => {
                Some(json.clone())
            }
            (AttrType::String, J::Number(_) | J::Bool(_)) => Some(J::String(node_text(node, json))),
            (AttrType::FileMode, J::String(s)) => {
                if s.len() < 3 || s.len() > 4 || !s.chars().all(|c| ('0'..='7').contains(&c)) {
                    self.emit(
                        Diagnostic::new(
                            Code::InvalidValue,
                            node.span,
                            path,
                            format!("`{s}` is not an octal file mode"),
                        )
                        .help("write the mode as a quoted octal string, like \"0644\" or \"0755\"")
                        .label("expected 3 or 4 octal digits"),
                    );
                }
                Some(json.clone())
            }
            (AttrType::Duration, J::String(s)) => match units::parse_duration(s) {
                Ok(ms) => Some(J::from(ms)),
                Err(why) => {
                    self.bad_duration(node, path, &why);
                    None
                }
            },
            (AttrType::Command, J::String(s)) if !s.trim().is_empty() => Some(json.clone()),
            (AttrType::Command, J::Array(items))
                if !items.is_empty() && items.iter().all(J::is_string) =>
            {
                Some(json.clone())
            }
            (AttrType::List, J::Array(_)) => Some(json.clone()),
            (AttrType::Bool, J::Bool(_)) => Some(json.clone()),
            (AttrType::Int { min, max }, J::Number(n))
                if n.as_f64().is_some_and(|f| f.fract() == 0.0) =>
            {
                let v = n.as_f64().unwrap_or_default();
                self.range(node, path, v, min as f64, max as f64);
                Some(json.clone())
            }
            (AttrType::Number { min, max }, J::Number(n)) => {
                self.range(node, path, n.as_f64().unwrap_or_default(), min, max);
                Some(json.clone())
            }
            (AttrType::TrafficSteps, J::Array(_)) => match units::parse_traffic_steps(json) {
                Ok(steps) => Some(J::from(steps)),
                Err(why) => {
                    self.emit(
                        Diagnostic::new(
                            Code::InvalidValue,
                            node.span,
                            path,
                            format!("invalid canary steps: {why}"),
                        )
                        .help("give the canary's share at each step, like `steps: [10%, 50%]`")
                        .label("expected increasing percentages"),
                    );
                    None
                }
            },
            (AttrType::Size, J::Number(_)) => Some(json.clone()),
            (AttrType::Size, J::String(text)) => match units::parse_size(text) {
                Ok(bytes) => Some(J::from(bytes)),
                Err(why) => {
                    self.emit(
                        Diagnostic::new(
                            Code::BadUnit,
                            node.span,
                            path,
                            format!("invalid size: {why}"),
                        )
                        .help("write a number with a unit: `512Mi`, `1Gi`, `100M`")
                        .label("expected a size"),
                    );
                    None
                }
            },
            (AttrType::Enum(words), J::String(word)) => {
                if !words.contains(&word.as_str()) {
                    let mut d = Diagnostic::new(
                        Code::InvalidValue,
                        node.span,
                        path,
                        format!("`{word}` is not allowed here"),
                    )
                    .label(format!("expected one of: {}", words.join(", ")));
                    if let Some(best) = closest(word, words.iter().copied()) {
                        d = d.help(format!("did you mean `{best}`?"));
                    }
                    self.emit(d);
                }
                Some(json.clone())
            }
            (AttrType::Object(schema), J::Object(_)) => Some(self.check_object(node, schema, path)),
            (AttrType::StringMap, J::Object(m))
                if m.values().all(|v| !v.is_object() && !v.is_array()) =>
            {
                Some(J::Object(
                    m.iter()
                        .map(|(k, v)| (k.clone(), J::String(json_scalar_text(v))))
                        .collect(),
                ))
            }
            _ => {
                let found = if matches!(ty, AttrType::Command)
                    && json.as_str().is_some_and(|s| s.trim().is_empty())
                {
                    "an empty string".to_owned()
                } else {
                    node.value.type_name().to_owned()
                };
                let d = self.err(
                    Code::WrongType,
                    node.span,
                    path,
                    format!("expected {}, found {found}", ty.describe()),
                );
                d.label = format!("expected {}", ty.describe());
                if matches!(ty, AttrType::FileMode) && json.is_number() {
                    d.help = Some(
                        "quote the mode so YAML keeps the leading zero: mode: \"0644\"".into(),
                    );
                } else if matches!(ty, AttrType::Duration) && json.is_number() {
                    d.help = Some(format!("add a unit: `{}s`", node_text(node, json)));
                }
                None
            }
        }
    }

    fn bad_duration(&mut self, node: &Node, path: &str, why: &str) {
        self.emit(
            Diagnostic::new(
                Code::BadUnit,
                node.span,
                path,
                format!("invalid duration: {why}"),
            )
            .help("write a number with a unit: `500ms`, `30s`, `5m`, `1h`")
            .label("expected a duration"),
        );
    }

    fn range(&mut self, node: &Node, path: &str, value: f64, min: f64, max: f64) {
        if value < min || value > max {
            self.emit(
                Diagnostic::new(
                    Code::InvalidValue,
                    node.span,
                    path,
                    format!("{value} is out of range"),
                )
                .label(format!("expected {min} to {max}"))
                .help(format!("give a value between {min} and {max}")),
            );
        }
    }

    /// A nested mapping with known keys: each key checked against its type, unknown keys
    /// reported with the closest valid one, `one_of` enforced.
    fn check_object(
        &mut self,
        node: &Node,
        schema: &schema::ObjectSchema,
        path: &str,
    ) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        let Y::Map(entries) = &node.value else {
            return serde_json::Value::Object(out);
        };
        for (key, child) in entries {
            let child_path = format!("{path}.{}", key.text);
            match schema.fields.iter().find(|(name, _)| *name == key.text) {
                None => self.unknown_key(
                    key,
                    path,
                    schema.fields.iter().map(|(n, _)| *n),
                    schema.what.split(':').next().unwrap_or(schema.what),
                ),
                Some((_, ty)) => {
                    if let Some(v) = self.check_attr(child, &child.to_json(), &child_path, *ty) {
                        out.insert(key.text.clone(), v);
                    }
                }
            }
        }
        if !schema.one_of.is_empty() {
            let given: Vec<&str> = schema
                .one_of
                .iter()
                .copied()
                .filter(|k| entries.iter().any(|(e, _)| e.text == *k))
                .collect();
            if given.len() != 1 {
                let names: Vec<String> = schema.one_of.iter().map(|n| format!("`{n}`")).collect();
                self.emit(
                    Diagnostic::new(
                        Code::InvalidValue,
                        node.span,
                        path,
                        format!(
                            "{} needs exactly one of {}",
                            schema.what.split(':').next().unwrap_or("this"),
                            names.join(", ")
                        ),
                    )
                    .label(if given.is_empty() {
                        "none given".to_owned()
                    } else {
                        format!("{} given", given.join(" and "))
                    })
                    .help("e.g. `{ http: /healthz }`, `{ tcp: true }` or `{ exec: ./check.sh }`"),
                );
            }
        }
        serde_json::Value::Object(out)
    }

    /// Converts a node to a declared value, parsing every `${{ }}` it holds.
    fn value(&mut self, node: &Node, path: &str) -> Value {
        let kind = match &node.value {
            Y::String { text, .. } if text.contains("${{") => self.template(node, text, path),
            Y::Seq(items) => {
                let values: Vec<Value> = items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| self.value(n, &format!("{path}[{i}]")))
                    .collect();
                if values.iter().all(Value::is_literal) {
                    ValueKind::Literal(node.to_json())
                } else {
                    ValueKind::List(values)
                }
            }
            Y::Map(entries) => {
                let values: IndexMap<String, Value> = entries
                    .iter()
                    .map(|(k, n)| (k.text.clone(), self.value(n, &format!("{path}.{}", k.text))))
                    .collect();
                if values.values().all(Value::is_literal) {
                    ValueKind::Literal(node.to_json())
                } else {
                    ValueKind::Map(values)
                }
            }
            _ => ValueKind::Literal(node.to_json()),
        };
        Value {
            kind,
            span: node.span,
        }
    }

    fn template(&mut self, node: &Node, text: &str, path: &str) -> ValueKind {
        let opts = kiln_expr::ParseOptions {
            named_values: NAMED_VALUES,
            extra_functions: &[],
        };
        match kiln_expr::Template::parse(text, &opts) {
            Ok(template) => ValueKind::Template {
                template: Box::new(template),
                text: text.to_owned(),
            },
            Err(err) => {
                let span = text_span(&self.sources, node.span, text, err.offset, err.len.max(1));
                self.emit(Diagnostic::new(Code::BadExpression, span, path, format!("invalid expression: {}", err.message))
                    .help("expressions are written `${{ vars.name }}`; they may read vars, secrets, env, inputs, resources and modules").label("here"));
                ValueKind::Literal(serde_json::Value::String(text.to_owned()))
            }
        }
    }

    // ---- small typed readers ----

    fn map<'n>(&mut self, node: &'n Node, path: &str, expected: &str) -> Option<&'n [(Key, Node)]> {
        match &node.value {
            Y::Map(entries) => Some(entries),
            Y::Null => Some(&[]),
            _ => {
                self.wrong_type(node, path, expected);
                None
            }
        }
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Y::String { text, .. } => Some(text.clone()),
            _ => {
                self.wrong_type(node, path, "a string");
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, path: &str) -> bool {
        match &node.value {
            Y::Bool(b) => *b,
            _ => {
                let d = self.err(
                    Code::WrongType,
                    node.span,
                    path,
                    format!("expected true or false, found {}", node.value.type_name()),
                );
                d.label = "expected a boolean".into();
                if let Y::String { text, .. } = &node.value
                    && matches!(
                        text.to_lowercase().as_str(),
                        "yes" | "no" | "on" | "off" | "y" | "n"
                    )
                {
                    d.help = Some(format!(
                        "YAML 1.2 reads `{text}` as a string; write `true` or `false`"
                    ));
                }
                false
            }
        }
    }

    fn wrong_type(&mut self, node: &Node, path: &str, expected: &str) {
        self.emit(
            Diagnostic::new(
                Code::WrongType,
                node.span,
                path,
                format!("expected {expected}, found {}", node.value.type_name()),
            )
            .label(format!(
                "expected {}",
                expected.split(':').next().unwrap_or(expected)
            )),
        );
    }

    fn check_keys(&mut self, entries: &[(Key, Node)], allowed: &[&str], path: &str, what: &str) {
        for (key, _) in entries {
            if !allowed.contains(&key.text.as_str()) {
                self.unknown_key(key, path, allowed.iter().copied(), what);
            }
        }
    }

    fn unknown_key<'a>(
        &mut self,
        key: &Key,
        path: &str,
        allowed: impl Iterator<Item = &'a str> + Clone,
        what: &str,
    ) {
        let d = self.err(
            Code::UnknownKey,
            key.span,
            &join(path, &key.text),
            format!("unknown key `{}` in {what}", key.text),
        );
        d.label = "unknown key".into();
        d.help = Some(match closest(&key.text, allowed.clone()) {
            Some(best) => format!("did you mean `{best}`?"),
            None => format!("valid keys: {}", allowed.collect::<Vec<_>>().join(", ")),
        });
    }
}

/// Maps a byte range of a scalar's processed text back to the source when the source spells the
/// text the same way (plain or simply quoted); otherwise points at the whole scalar.
pub(crate) fn text_span(
    sources: &SourceMap,
    span: Span,
    text: &str,
    offset: usize,
    len: usize,
) -> Span {
    let source = &sources.file(span.file).text;
    let raw = source.get(span.start..span.end).unwrap_or("");
    if raw == text {
        return span.sub(offset, len);
    }
    if raw.len() == text.len() + 2 && raw.get(1..raw.len() - 1) == Some(text) {
        return span.sub(offset + 1, len);
    }
    span
}

fn node_text(node: &Node, json: &serde_json::Value) -> String {
    let _ = node;
    json_scalar_text(json)
}

fn json_scalar_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A host pattern: DNS labels, optionally starting with `*.`, or `*` alone.
/// Which PEM file `ingress.tls` names.
#[derive(Clone, Copy)]
enum PemKind {
    Certificate,
    PrivateKey,
}

impl PemKind {
    fn block(self) -> &'static str {
        match self {
            PemKind::Certificate => "`CERTIFICATE` block",
            PemKind::PrivateKey => "private key block",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            PemKind::Certificate => "expected a PEM certificate file",
            PemKind::PrivateKey => "expected a PEM private key file",
        }
    }

    fn help(self) -> &'static str {
        match self {
            PemKind::Certificate => {
                "give the path (relative to the stack file) of a PEM file that starts with `-----BEGIN CERTIFICATE-----`, the server's certificate first, then its chain; for a DER file: `openssl x509 -inform der -in cert.der -out cert.pem`"
            }
            PemKind::PrivateKey => {
                "give the path (relative to the stack file) of an unencrypted PEM key: `-----BEGIN PRIVATE KEY-----` (or `RSA`/`EC PRIVATE KEY`); to convert or decrypt one: `openssl pkey -in key.enc -out key.pem`"
            }
        }
    }
}

/// Why `host` is not a route host pattern, and the likely intended one when there is one.
fn check_host(host: &str) -> Result<(), (String, Option<String>)> {
    if host == "*" {
        return Ok(());
    }
    let fail = |why: &str, fix: Option<String>| Err((why.to_owned(), fix));
    if host.chars().any(char::is_whitespace) {
        return fail(
            "it contains whitespace",
            Some(host.split_whitespace().collect::<Vec<_>>().join(".")),
        );
    }
    if host.contains("://") || host.contains('/') || host.contains(':') {
        return fail(
            "a host holds no scheme, port or path (the path goes in `path:`)",
            None,
        );
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.is_empty() {
        return fail("a wildcard needs a domain after `*.`", None);
    }
    if name.len() > 253 {
        return fail("it is longer than 253 characters", None);
    }
    // The pattern with each label rewritten, keeping a leading `*.`.
    let rebuilt = |f: &dyn Fn(&str) -> Option<String>| {
        let labels: Vec<String> = name.split('.').filter_map(f).collect();
        let wildcard = if host.starts_with("*.") { "*." } else { "" };
        Some(format!("{wildcard}{}", labels.join(".")))
    };
    for label in name.split('.') {
        if label.is_empty() {
            return fail(
                "it has an empty label (a leading, trailing or doubled `.`)",
                rebuilt(&|l| (!l.is_empty()).then(|| l.to_owned())),
            );
        }
        if label.contains('*') {
            // `*foo.com` most likely meant `*.foo.com`.
            let fix = label
                .strip_prefix('*')
                .filter(|rest| !rest.contains('*') && host.starts_with(label))
                .map(|rest| format!("*.{rest}{}", &host[label.len()..]));
            return fail("`*` must be a whole label, and only the first one", fix);
        }
        if label.len() > 63 {
            return fail("a label is longer than 63 characters", None);
        }
        if label.starts_with('-') || label.ends_with('-') {
            return fail(
                "a label starts or ends with `-`",
                rebuilt(&|l| Some(l.trim_matches('-').to_owned())),
            );
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return fail("labels hold only letters, digits and inner hyphens", None);
        }
    }
    Ok(())
}

/// Names of resources, modules, vars and secrets: a letter, then letters, digits, `-`, `_`.
pub fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.len() <= 64
}

#[cfg(test)]
mod tests {
    use super::check_host;

    #[test]
    fn host_patterns_are_checked_with_a_likely_fix() {
        for ok in [
            "*",
            "shop.localhost",
            "*.shop.localhost",
            "a-b.c",
            "localhost",
        ] {
            assert!(check_host(ok).is_ok(), "{ok}");
        }
        let fix = |host: &str| check_host(host).unwrap_err().1;
        assert_eq!(fix("*foo.com").as_deref(), Some("*.foo.com"));
        assert_eq!(fix("a..b").as_deref(), Some("a.b"));
        assert_eq!(fix("*.a..b.").as_deref(), Some("*.a.b"));
        assert_eq!(fix("shop localhost").as_deref(), Some("shop.localhost"));
        assert_eq!(
            fix("*.-shop-.localhost").as_deref(),
            Some("*.shop.localhost")
        );
        assert_eq!(fix("*."), None);
        assert_eq!(fix("shop.*.localhost"), None);
        assert_eq!(fix("http://shop.localhost"), None);
        assert!(check_host("sh_op.localhost").is_err());
        assert!(check_host(&"a".repeat(64)).is_err());
    }
}
