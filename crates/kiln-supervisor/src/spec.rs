//! What a service should look like: the plain, kiln-independent description the supervisor
//! runs. Callers (the service provider) translate their own model into these types.
//!
//! Every type here is plain data with defaults chosen to be safe for a small team's services;
//! the spec hash (see [`ServiceSpec::spec_hash`]) decides whether a running instance — our own
//! or one adopted after a control-plane crash — still matches what is wanted. A spec read
//! back from its JSON has the same hash, so a spec can be stored and used to adopt later.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A service: one command run as `replicas` identical instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Unique among the supervisor's services; used in file names, so kept to a safe alphabet
    /// (checked by [`ServiceSpec::validate`]).
    pub name: String,
    pub command: Command,
    pub workdir: PathBuf,
    /// Added to (and overriding) the supervisor's own environment.
    pub env: BTreeMap<String, String>,
    pub replicas: u32,
    /// Opaque release id, passed to the instance as `KILN_RELEASE`.
    pub release: String,
    pub probes: Probes,
    pub restart: RestartPolicy,
    pub stop: StopPolicy,
    pub limits: Limits,
}

impl ServiceSpec {
    /// A spec with default probes, policies and limits: one replica of `command` in `workdir`.
    pub fn new(name: impl Into<String>, command: Command, workdir: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            command,
            workdir: workdir.into(),
            env: BTreeMap::new(),
            replicas: 1,
            release: String::new(),
            probes: Probes::default(),
            restart: RestartPolicy::default(),
            stop: StopPolicy::default(),
            limits: Limits::default(),
        }
    }

    /// A stable digest of everything that shapes a running instance except the replica count
    /// (scaling must not restart the instances that stay).
    pub fn spec_hash(&self) -> String {
        let mut shape = self.clone();
        shape.replicas = 0;
        // Serialising plain data with derived impls cannot fail; an empty string would only make
        // every spec "different", which restarts instead of wrongly adopting.
        let bytes = serde_json::to_vec(&shape).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }

    /// Reports the first problem that would make the spec unrunnable or unsafe as a file name.
    pub fn validate(&self) -> Result<(), String> {
        let safe = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
        let part_ok = |p: &str| !p.is_empty() && p.chars().all(safe) && !p.starts_with('.');
        let valid = match self.name.split_once('@') {
            Some((service, set)) => part_ok(service) && part_ok(set),
            None => part_ok(&self.name),
        };
        if !valid {
            return Err(format!(
                "service name `{}` must be non-empty and use only letters, digits, `-`, `_`, `.` (and one `@` before a set name)",
                self.name
            ));
        }
        if let Command::Argv(argv) = &self.command
            && argv.is_empty()
        {
            return Err("the command's argv is empty".to_owned());
        }
        // Written so that NaN is refused too.
        if self.restart.backoff_multiplier.is_nan() || self.restart.backoff_multiplier < 1.0 {
            return Err("restart.backoff_multiplier must be at least 1".to_owned());
        }
        if !(0.0..1.0).contains(&self.restart.jitter) {
            return Err("restart.jitter must be in [0, 1)".to_owned());
        }
        Ok(())
    }
}

/// How to start a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Run directly, without a shell; never empty.
    Argv(Vec<String>),
    /// Run with `sh -c`.
    Shell(String),
}

impl Command {
    /// The argv that runs this command.
    pub(crate) fn argv(&self) -> Vec<String> {
        match self {
            Self::Argv(argv) => argv.clone(),
            Self::Shell(script) => vec!["sh".to_owned(), "-c".to_owned(), script.clone()],
        }
    }
}

/// The three Kubernetes-style probes. Startup gates the other two until it first passes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Probes {
    pub startup: Option<Probe>,
    pub readiness: Option<Probe>,
    pub liveness: Option<Probe>,
}

/// One repeated health check with thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub check: Check,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes needed to count as passing.
    pub success_threshold: u32,
    /// Consecutive failures needed to count as failing.
    pub failure_threshold: u32,
    pub initial_delay: Duration,
}

impl Probe {
    /// A probe with Kubernetes-like defaults (1 s interval and timeout, 1 success, 3 failures).
    pub fn new(check: Check) -> Self {
        Self {
            check,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 3,
            initial_delay: Duration::ZERO,
        }
    }
}

/// What a probe checks, always against the instance's own `PORT` on 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Check {
    /// `GET path`; passes on `expected_status`, or any 2xx/3xx when none is given.
    Http {
        path: String,
        expected_status: Option<u16>,
    },
    /// A TCP connect succeeds.
    Tcp,
    /// The command exits 0 (it gets the instance's environment, including `PORT`).
    Exec { command: Command },
}

impl Check {
    /// A short name for messages: `http /healthz`, `tcp`, `exec`.
    pub fn describe(&self) -> String {
        match self {
            Self::Http { path, .. } => format!("http {path}"),
            Self::Tcp => "tcp".to_owned(),
            Self::Exec { .. } => "exec".to_owned(),
        }
    }
}

/// When an exited instance is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartMode {
    Always,
    OnFailure,
    Never,
}

/// Restart policy: exponential backoff with jitter, capped, reset after a stable run. There is
/// no give-up: a crash loop keeps retrying at the cap and is shown as such.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub mode: RestartMode,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub backoff_multiplier: f64,
    /// Each delay is scaled by a random factor in `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
    /// An instance that stayed up this long is considered stable; its next crash starts the
    /// backoff over.
    pub reset_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            mode: RestartMode::Always,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            backoff_multiplier: 2.0,
            jitter: 0.2,
            reset_after: Duration::from_secs(60),
        }
    }
}

/// How an instance is stopped: `signal` to its process group, then SIGKILL after `grace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopPolicy {
    /// A signal number; SIGTERM by default.
    pub signal: i32,
    pub grace: Duration,
}

impl Default for StopPolicy {
    fn default() -> Self {
        Self {
            signal: nix::sys::signal::Signal::SIGTERM as i32,
            grace: Duration::from_secs(10),
        }
    }
}

/// Resource limits; how (and whether) each is enforced is reported per instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    /// In cores (0.5 = half a core).
    pub cpu: Option<f64>,
    pub pids: Option<u64>,
}

impl Limits {
    pub(crate) fn is_empty(&self) -> bool {
        self.memory_bytes.is_none() && self.cpu.is_none() && self.pids.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_keeps_the_hash_and_other_changes_alter_it() {
        let spec = ServiceSpec::new("api", Command::Shell("sleep 1".into()), "/tmp");
        let mut scaled = spec.clone();
        scaled.replicas = 5;
        assert_eq!(spec.spec_hash(), scaled.spec_hash());
        let mut changed = spec.clone();
        changed.release = "r2".into();
        assert_ne!(spec.spec_hash(), changed.spec_hash());
    }

    #[test]
    fn names_that_would_escape_the_state_dir_are_refused() {
        for bad in ["", "../x", "a/b", ".hidden", "sp ace"] {
            let spec = ServiceSpec::new(bad, Command::Shell("true".into()), "/tmp");
            assert!(spec.validate().is_err(), "{bad:?} accepted");
        }
        let spec = ServiceSpec::new("api-v2_x.y", Command::Shell("true".into()), "/tmp");
        assert!(spec.validate().is_ok());
    }

    proptest::proptest! {
        /// A stored spec adopts what the original started: its JSON reads back to the same
        /// spec and the same hash, floats and sub-second durations included.
        #[test]
        fn a_spec_read_back_from_json_keeps_its_hash(
            multiplier in 1.0f64..10.0,
            jitter in 0.0f64..1.0,
            cpu in proptest::option::of(0.0f64..64.0),
            nanos in 0u32..1_000_000_000,
            env in proptest::collection::btree_map("[A-Z_]{1,8}", "\\PC{0,12}", 0..4),
            shell in proptest::bool::ANY,
        ) {
            let command = if shell {
                Command::Shell("exec node server.js".into())
            } else {
                Command::Argv(vec!["node".into(), "server.js".into()])
            };
            let mut spec = ServiceSpec::new("api@1a2b3c4d", command, "/srv/releases/ab");
            spec.env = env;
            spec.restart.backoff_multiplier = multiplier;
            spec.restart.jitter = jitter;
            spec.limits.cpu = cpu;
            spec.stop.grace = Duration::new(3, nanos);
            let mut probe = Probe::new(Check::Http { path: "/healthz".into(), expected_status: Some(204) });
            probe.timeout = Duration::new(0, nanos);
            spec.probes.readiness = Some(probe.clone());
            spec.probes.liveness = Some(Probe::new(Check::Exec { command: Command::Shell("true".into()) }));
            spec.probes.startup = Some(Probe { check: Check::Tcp, ..probe });
            let json = serde_json::to_string(&spec).unwrap();
            let back: ServiceSpec = serde_json::from_str(&json).unwrap();
            proptest::prop_assert_eq!(&back, &spec);
            proptest::prop_assert_eq!(back.spec_hash(), spec.spec_hash());
        }
    }
}
