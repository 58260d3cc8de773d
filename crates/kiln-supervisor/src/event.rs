//! What the supervisor tells the world: lifecycle events (broadcast as they happen), instance
//! status snapshots, and errors of handle operations.

use std::time::{Duration, SystemTime};

/// Identifies one instance: the service and the replica index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId {
    pub service: String,
    pub instance: u32,
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.service, self.instance)
    }
}

/// Which probe an event or error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Startup,
    Readiness,
    Liveness,
}

impl std::fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Startup => "startup",
            Self::Readiness => "readiness",
            Self::Liveness => "liveness",
        })
    }
}

/// How an instance's process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    Code(i32),
    /// The signal's name, e.g. `SIGKILL`.
    Signal(String),
    /// Killed by the kernel's OOM killer inside the instance's memory limit.
    OomKilled,
    /// An adopted process: its exit status went to its new parent, not to us.
    Unknown,
}

impl ExitReason {
    /// Whether this exit counts as a failure for [`crate::RestartMode::OnFailure`].
    pub fn is_failure(&self) -> bool {
        !matches!(self, Self::Code(0))
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exit code {code}"),
            Self::Signal(name) => write!(f, "signal {name}"),
            Self::OomKilled => f.write_str("killed by the OOM killer"),
            Self::Unknown => f.write_str("exited (status unknown: adopted process)"),
        }
    }
}

/// Something that happened to an instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Started {
        id: InstanceId,
        pid: u32,
        port: u16,
    },
    /// A process left running by a previous control plane was taken over.
    Adopted {
        id: InstanceId,
        pid: u32,
        port: u16,
    },
    Ready {
        id: InstanceId,
    },
    Unhealthy {
        id: InstanceId,
        probe: ProbeKind,
        reason: String,
    },
    Exited {
        id: InstanceId,
        pid: u32,
        exit: ExitReason,
        last_log_lines: Vec<String>,
    },
    Restarting {
        id: InstanceId,
        /// 1 for the first restart after a stable run.
        attempt: u32,
        delay: Duration,
    },
    /// The instance keeps crashing; it is still being restarted at the backoff cap.
    CrashLooping {
        id: InstanceId,
        restarts_in_window: u32,
        window: Duration,
        next_try_in: Duration,
    },
    Stopped {
        id: InstanceId,
    },
    /// An orphan from a previous control plane whose spec no longer matches was killed.
    OrphanKilled {
        id: InstanceId,
        pid: u32,
    },
}

/// Where an instance is in its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    Starting,
    Running,
    Ready,
    Unhealthy,
    Backoff {
        until: SystemTime,
        restarts_in_window: u32,
    },
    Stopping,
    Stopped,
    Failed,
}

/// Which mechanism enforces an instance's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitsInForce {
    CgroupV2,
    /// Memory, and cpu and pids where their hierarchies are writable, through cgroup v1.
    CgroupV1,
    /// Memory via RLIMIT_DATA, pids via RLIMIT_NPROC (per user, and not for root); CPU is not
    /// enforced.
    Rlimit,
    None,
}

impl std::fmt::Display for LimitsInForce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CgroupV2 => "cgroup v2",
            Self::CgroupV1 => "cgroup v1",
            Self::Rlimit => "rlimit",
            Self::None => "none",
        })
    }
}

/// A snapshot of one instance for `kiln status`.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceStatus {
    pub id: InstanceId,
    pub pid: Option<u32>,
    /// When the process started (clock ticks since boot): with the pid, its identity.
    pub start_ticks: Option<u64>,
    pub port: Option<u16>,
    pub state: InstanceState,
    /// The last probe verdict in words (`ready`, `readiness failing: ...`, `no probes`).
    pub health: String,
    pub restarts: u32,
    pub uptime: Option<Duration>,
    /// CPU time and resident memory of the instance's whole process group (from /proc).
    pub cpu_seconds: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub release: String,
    pub limits_in_force: LimitsInForce,
    pub adopted: bool,
}

/// A live instance a previous control plane left, waiting for its set's next apply to be
/// adopted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub id: InstanceId,
    pub pid: u32,
    /// With the pid, the process's identity: a reused pid has another start time.
    pub start_ticks: u64,
    pub port: u16,
    /// The hash of the spec it was started from.
    pub spec_hash: String,
}

/// Why a handle operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("invalid spec for service `{service}`: {reason}")]
    InvalidSpec { service: String, reason: String },
    #[error("no service named `{0}`")]
    UnknownService(String),
    #[error("cannot start {id}: {reason}")]
    Spawn { id: InstanceId, reason: String },
    #[error("{service} not ready after {} ms: {details}", timeout.as_millis())]
    NotReady {
        service: String,
        timeout: Duration,
        /// Per unready instance: its state, the failing probe and its last results, and its
        /// last log lines.
        details: String,
    },
    #[error("the service was removed or replaced while waiting")]
    Superseded,
    #[error("cannot prepare the state directory {path}: {source}")]
    StateDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the supervisor must be started inside a tokio runtime")]
    NoRuntime,
    #[error("the supervisor has shut down")]
    ShutDown,
}
