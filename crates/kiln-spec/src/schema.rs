//! What each resource kind accepts: attribute names, types, which are required, which force a
//! replacement and which are sensitive. The planner reads the same table, so a kind's schema is
//! written once.

/// The type an attribute's value must have after evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttrType {
    /// Any string.
    String,
    /// A path relative to the stack file's directory.
    Path,
    /// A path to a template file whose text is rendered with `${{ }}` into another attribute.
    TemplateFile,
    /// A file mode in octal, written as a string (`"0644"`).
    FileMode,
    /// A duration (`30s`); normalised to milliseconds.
    Duration,
    /// A command: a string run by `sh -c`, or a list of strings run without a shell.
    Command,
    /// A list of anything.
    List,
    /// A mapping of strings to strings.
    StringMap,
    /// Any value.
    Any,
    /// A whole number in a range.
    Int {
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// A number in a range.
    Number {
        /// Smallest allowed.
        min: f64,
        /// Largest allowed.
        max: f64,
    },
    /// A size (`256Mi`); normalised to bytes.
    Size,
    /// Canary traffic steps (`[10%, 50%]`): increasing whole percentages between 0 and 100;
    /// normalised to numbers.
    TrafficSteps,
    /// `true` or `false`.
    Bool,
    /// One of a few words.
    Enum(&'static [&'static str]),
    /// A mapping with known keys (strict), each of its own type.
    Object(&'static ObjectSchema),
}

/// The keys of a nested mapping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObjectSchema {
    /// What the mapping is, for messages ("a probe").
    pub what: &'static str,
    /// Its keys.
    pub fields: &'static [(&'static str, AttrType)],
    /// Keys of which exactly one must be given (empty: no such rule).
    pub one_of: &'static [&'static str],
}

impl AttrType {
    /// How an "expected …" message names the type.
    pub fn describe(self) -> &'static str {
        match self {
            AttrType::String => "a string",
            AttrType::Path | AttrType::TemplateFile => "a path (a string)",
            AttrType::FileMode => "an octal file mode as a quoted string, like \"0644\"",
            AttrType::Duration => "a duration, like `30s` or `5m`",
            AttrType::Command => "a command: a string (run with sh -c) or a list of strings (argv)",
            AttrType::List => "a list",
            AttrType::StringMap => "a mapping of names to strings",
            AttrType::Any => "any value",
            AttrType::Int { .. } => "a whole number",
            AttrType::Number { .. } => "a number",
            AttrType::Size => "a size, like `256Mi` or `1G`",
            AttrType::TrafficSteps => "increasing percentages of traffic, like `[10%, 50%]`",
            AttrType::Bool => "true or false",
            AttrType::Enum(_) => "one of the listed words",
            AttrType::Object(o) => o.what,
        }
    }
}

/// One attribute of a kind.
#[derive(Debug, Clone, Copy)]
pub struct AttrSchema {
    /// The key in the stack file.
    pub name: &'static str,
    /// Its type.
    pub ty: AttrType,
    /// Must be given.
    pub required: bool,
    /// A change replaces the resource instead of updating it in place.
    pub force_new: bool,
    /// What the attribute is for, shown in help text.
    pub doc: &'static str,
}

/// Everything about one kind.
#[derive(Debug, Clone, Copy)]
pub struct KindSchema {
    /// The `kind:` value.
    pub kind: &'static str,
    /// Its attributes.
    pub attrs: &'static [AttrSchema],
    /// Groups of attributes of which exactly one must be given.
    pub one_of: &'static [&'static [&'static str]],
    /// When set, changes can only be made in place if this attribute is given (an `exec`
    /// without an `update` command is replaced on any change).
    pub in_place_requires: Option<&'static str>,
}

impl KindSchema {
    /// The schema of one attribute.
    pub fn attr(&self, name: &str) -> Option<&AttrSchema> {
        self.attrs.iter().find(|a| a.name == name)
    }
}

const fn attr(name: &'static str, ty: AttrType, doc: &'static str) -> AttrSchema {
    AttrSchema {
        name,
        ty,
        required: false,
        force_new: false,
        doc,
    }
}

const fn required(mut a: AttrSchema) -> AttrSchema {
    a.required = true;
    a
}

const fn force_new(mut a: AttrSchema) -> AttrSchema {
    a.force_new = true;
    a
}

/// `file`: a file on disk, written atomically; drift when edited or deleted outside kiln.
pub const FILE: KindSchema = KindSchema {
    kind: "file",
    attrs: &[
        required(force_new(attr(
            "path",
            AttrType::Path,
            "where the file is written",
        ))),
        attr("content", AttrType::String, "the file's text"),
        attr(
            "template",
            AttrType::TemplateFile,
            "a file whose text, with ${{ }} rendered, becomes the content",
        ),
        attr(
            "mode",
            AttrType::FileMode,
            "permission bits, default \"0644\"",
        ),
    ],
    one_of: &[&["content", "template"]],
    in_place_requires: None,
};

/// `exec`: commands run on create, update and destroy; outputs read from JSON on stdout.
pub const EXEC: KindSchema = KindSchema {
    kind: "exec",
    attrs: &[
        required(force_new(attr(
            "create",
            AttrType::Command,
            "run when the resource is created",
        ))),
        attr(
            "update",
            AttrType::Command,
            "run when `input` or `env` change; without it they replace",
        ),
        attr(
            "destroy",
            AttrType::Command,
            "run when the resource is destroyed",
        ),
        force_new(attr(
            "triggers",
            AttrType::List,
            "values whose change re-runs create",
        )),
        attr(
            "input",
            AttrType::Any,
            "a value passed to the commands as KILN_INPUT (JSON)",
        ),
        attr(
            "env",
            AttrType::StringMap,
            "environment variables for the commands",
        ),
        attr(
            "workdir",
            AttrType::Path,
            "working directory, default the stack's directory",
        ),
        attr(
            "timeout",
            AttrType::Duration,
            "how long a command may run, default 10m",
        ),
    ],
    one_of: &[],
    in_place_requires: Some("update"),
};

const PROBE_FIELDS: &[(&str, AttrType)] = &[
    ("http", AttrType::String),
    ("status", AttrType::Int { min: 100, max: 599 }),
    ("tcp", AttrType::Bool),
    ("exec", AttrType::Command),
    ("interval", AttrType::Duration),
    ("timeout", AttrType::Duration),
    ("success_threshold", AttrType::Int { min: 1, max: 100 }),
    ("failure_threshold", AttrType::Int { min: 1, max: 100 }),
    ("initial_delay", AttrType::Duration),
];

/// One probe: exactly one of `http` (a path), `tcp: true` or `exec` (a command).
pub const PROBE: ObjectSchema = ObjectSchema {
    what: "a probe: { http: /healthz | tcp: true | exec: CMD, interval, timeout, success_threshold, failure_threshold, initial_delay }",
    fields: PROBE_FIELDS,
    one_of: &["http", "tcp", "exec"],
};

/// `health:` either is a probe (used for readiness and liveness) or names each probe.
pub const HEALTH: ObjectSchema = ObjectSchema {
    what: "health checks: a probe, or { startup, readiness, liveness } probes",
    fields: &[
        ("startup", AttrType::Object(&PROBE)),
        ("readiness", AttrType::Object(&PROBE)),
        ("liveness", AttrType::Object(&PROBE)),
        ("http", AttrType::String),
        ("status", AttrType::Int { min: 100, max: 599 }),
        ("tcp", AttrType::Bool),
        ("exec", AttrType::Command),
        ("interval", AttrType::Duration),
        ("timeout", AttrType::Duration),
        ("success_threshold", AttrType::Int { min: 1, max: 100 }),
        ("failure_threshold", AttrType::Int { min: 1, max: 100 }),
        ("initial_delay", AttrType::Duration),
    ],
    one_of: &[],
};

/// `resources:` of a service.
pub const LIMITS: ObjectSchema = ObjectSchema {
    what: "resource limits: { memory: 256Mi, cpu: 0.5, pids: 100 }",
    fields: &[
        ("memory", AttrType::Size),
        (
            "cpu",
            AttrType::Number {
                min: 0.01,
                max: 1024.0,
            },
        ),
        (
            "pids",
            AttrType::Int {
                min: 1,
                max: 1_000_000,
            },
        ),
    ],
    one_of: &[],
};

/// `stop:` of a service.
pub const STOP: ObjectSchema = ObjectSchema {
    what: "how to stop: { signal: SIGTERM, grace: 10s }",
    fields: &[
        (
            "signal",
            AttrType::Enum(&[
                "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGKILL",
            ]),
        ),
        ("grace", AttrType::Duration),
    ],
    one_of: &[],
};

/// `backoff:` of a service.
pub const BACKOFF: ObjectSchema = ObjectSchema {
    what: "restart backoff: { initial: 200ms, max: 30s, reset_after: 60s }",
    fields: &[
        ("initial", AttrType::Duration),
        ("max", AttrType::Duration),
        ("reset_after", AttrType::Duration),
    ],
    one_of: &[],
};

/// `release:` of a service: an artifact a pipeline uploaded.
pub const RELEASE_SOURCE: ObjectSchema = ObjectSchema {
    what: "a pipeline artifact: { pipeline: ci, artifact: api }",
    fields: &[
        ("pipeline", AttrType::String),
        ("artifact", AttrType::String),
    ],
    one_of: &[],
};

/// The canary analysis of a `deploy:` block.
pub const ANALYSIS: ObjectSchema = ObjectSchema {
    what: "a canary analysis: { max_error_increase: 0.01, max_latency_ratio: 1.5, latency_slack: 50ms, min_requests: 20 }",
    fields: &[
        (
            "max_error_increase",
            AttrType::Number { min: 0.0, max: 1.0 },
        ),
        (
            "max_latency_ratio",
            AttrType::Number {
                min: 1.0,
                max: 1000.0,
            },
        ),
        ("latency_slack", AttrType::Duration),
        (
            "min_requests",
            AttrType::Int {
                min: 0,
                max: 1_000_000_000,
            },
        ),
    ],
    one_of: &[],
};

/// `metrics:` of a service: where the control plane scrapes each ready instance.
pub const SCRAPE: ObjectSchema = ObjectSchema {
    what: "a scrape config: { path: /metrics, interval: 15s }",
    fields: &[
        ("path", AttrType::String),
        ("interval", AttrType::Duration),
        ("timeout", AttrType::Duration),
        (
            "sample_limit",
            AttrType::Int {
                min: 1,
                max: 10_000_000,
            },
        ),
    ],
    one_of: &[],
};

/// `deploy:` of a service: how a new release replaces the running one.
pub const DEPLOY: ObjectSchema = ObjectSchema {
    what: "a deploy strategy: { strategy: rolling | blue-green | canary, max_surge, max_unavailable, min_healthy_time, healthy_deadline, keep_old, steps, pause, analysis, auto_rollback, drain_timeout }",
    fields: &[
        (
            "strategy",
            AttrType::Enum(&["rolling", "blue-green", "canary"]),
        ),
        ("max_surge", AttrType::Int { min: 0, max: 1000 }),
        ("max_unavailable", AttrType::Int { min: 0, max: 1000 }),
        ("min_healthy_time", AttrType::Duration),
        ("healthy_deadline", AttrType::Duration),
        ("keep_old", AttrType::Duration),
        ("steps", AttrType::TrafficSteps),
        ("pause", AttrType::Duration),
        ("analysis", AttrType::Object(&ANALYSIS)),
        ("auto_rollback", AttrType::Bool),
        ("drain_timeout", AttrType::Duration),
    ],
    one_of: &[],
};

/// `service`: a supervised process with replicas, health checks and restarts (the `services:`
/// section; the kind is implied).
pub const SERVICE: KindSchema = KindSchema {
    kind: "service",
    attrs: &[
        required(attr(
            "run",
            AttrType::Command,
            "the command: argv words (no shell unless `shell: true`) or a list",
        )),
        attr("shell", AttrType::Bool, "run `run` with sh -c"),
        attr(
            "path",
            AttrType::Path,
            "the directory the service runs from (its release), default the stack's",
        ),
        attr(
            "workdir",
            AttrType::Path,
            "working directory, default `path`",
        ),
        attr(
            "env",
            AttrType::StringMap,
            "environment variables (kiln adds PORT, KILN_SERVICE, KILN_INSTANCE, KILN_RELEASE)",
        ),
        attr(
            "env_file",
            AttrType::Path,
            "a file of NAME=value lines added to the environment",
        ),
        attr(
            "replicas",
            AttrType::Int { min: 0, max: 1000 },
            "how many instances, default 1",
        ),
        attr(
            "health",
            AttrType::Object(&HEALTH),
            "startup, readiness and liveness probes",
        ),
        attr(
            "restart",
            AttrType::Enum(&["always", "on-failure", "never"]),
            "when to restart an instance that exits, default always",
        ),
        attr("backoff", AttrType::Object(&BACKOFF), "restart backoff"),
        attr(
            "stop",
            AttrType::Object(&STOP),
            "stop signal and grace period",
        ),
        attr(
            "resources",
            AttrType::Object(&LIMITS),
            "memory, cpu and pids limits",
        ),
        attr(
            "ready_timeout",
            AttrType::Duration,
            "how long an apply waits for readiness (a job for completion), default 60s",
        ),
        attr(
            "job",
            AttrType::Bool,
            "a one-shot job: apply waits until every instance exited with status 0",
        ),
        attr(
            "user",
            AttrType::String,
            "run as this user (and its groups); kiln must run as root",
        ),
        attr(
            "release",
            AttrType::Object(&RELEASE_SOURCE),
            "run the newest release a pipeline built (`{ pipeline: ci, artifact: api }`) instead of `path`",
        ),
        attr(
            "deploy",
            AttrType::Object(&DEPLOY),
            "how a new release replaces the running one: rolling (default), blue-green or canary",
        ),
        attr(
            "metrics",
            AttrType::Object(&SCRAPE),
            "scrape each ready instance's Prometheus metrics: { path: /metrics, interval: 15s }",
        ),
    ],
    one_of: &[],
    in_place_requires: None,
};

/// `route`: an ingress rule sending a host and path prefix to a service (the `routes:` list).
pub const ROUTE: KindSchema = KindSchema {
    kind: "route",
    attrs: &[
        required(attr(
            "host",
            AttrType::String,
            "the host: `shop.localhost`, `*.shop.localhost` or `*` for any",
        )),
        attr(
            "path",
            AttrType::String,
            "the path prefix, default `/` (the longest match wins)",
        ),
        required(attr(
            "service",
            AttrType::String,
            "the service that serves it",
        )),
        attr(
            "strip_prefix",
            AttrType::Bool,
            "remove the prefix before forwarding",
        ),
        attr(
            "timeout",
            AttrType::Duration,
            "time to the upstream's response headers, default 30s",
        ),
        attr(
            "body_timeout",
            AttrType::Duration,
            "longest silence between two reads of the request body, default 60s (408)",
        ),
        attr(
            "idle_timeout",
            AttrType::Duration,
            "longest silence of the upstream while streaming a response body, default 60s",
        ),
        attr(
            "tunnel_timeout",
            AttrType::Duration,
            "longest silence both ways on a WebSocket before it is closed, default 1h",
        ),
        attr(
            "max_body",
            AttrType::Size,
            "largest request body (413 above it)",
        ),
        attr(
            "request_headers",
            AttrType::StringMap,
            "headers set on the way to the service",
        ),
        attr(
            "response_headers",
            AttrType::StringMap,
            "headers set on the way back",
        ),
    ],
    one_of: &[],
    in_place_requires: None,
};

/// Every kind that may appear under `resources:`.
pub const KINDS: &[KindSchema] = &[FILE, EXEC];

/// Every kind, including those with their own sections.
pub const ALL_KINDS: &[KindSchema] = &[FILE, EXEC, SERVICE, ROUTE];

/// The schema of a kind by name.
pub fn kind(name: &str) -> Option<&'static KindSchema> {
    ALL_KINDS.iter().find(|k| k.kind == name)
}

/// Keys every resource accepts besides its kind's attributes.
pub const META_KEYS: &[&str] = &[
    "kind",
    "depends_on",
    "lifecycle",
    "reconcile",
    "description",
];
