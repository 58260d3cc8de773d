//! kiln-supervisor: runs service instances as supervised processes — a free loopback port and
//! environment per instance, its own process group, startup/readiness/liveness probes, restarts
//! with exponential backoff (a crash loop is a visible state, never a give-up), graceful stop,
//! captured and rotated logs, resource limits, and adoption of instances left running by a
//! control plane that was killed.
//!
//! It knows nothing of kiln's other crates: it takes plain [`ServiceSpec`]s and emits
//! [`Event`]s. One actor task owns all state (see `actor`); the [`SupervisorHandle`] talks to it.
//!
//! **Architecture invariants.** This crate depends on no other kiln crate (checked by
//! `tests/tidy.rs`). Only the actor task mutates supervisor state; instance tasks report over
//! channels and are aborted with their instance. A process the supervisor did not just spawn is
//! only ever signalled after its pid *and* start time match a pidfile. Dropping every handle
//! never stops a service: processes outlive the control plane and are adopted by the next one.
//!
//! Known limits: a process that leaves its process group (`setsid`) escapes group signals unless
//! a cgroup is in force; an adopted instance's exit status is unknown (it is not our child).
//!
//! Files under the state directory:
//! - `run/<service>-<instance>.json`: the pidfile (pid, pgid, port, start time, spec hash);
//! - `run/<service>-<instance>.stdout|.stderr`: the FIFOs the instance writes its output to;
//! - `logs/<service>/<instance>.log[.N]`: the captured, timestamped output.

mod actor;
mod backoff;
mod event;
mod instance;
mod limits;
mod logs;
mod pidfile;
mod probe;
mod process;
mod procfs;
mod spec;

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};

pub use event::{
    Event, ExitReason, InstanceId, InstanceState, InstanceStatus, LimitsInForce, Orphan, ProbeKind,
    SupervisorError,
};
pub use logs::{LogLine, Rotation, Stream, read_logs};
pub use pidfile::cleanup_orphans;
pub use spec::{
    Check, Command, Limits, Probe, Probes, RestartMode, RestartPolicy, ServiceSpec, StopPolicy,
};

use actor::{Actor, Request};
use instance::Shared;

/// The service a supervisor name belongs to. A deploy runs each version of a service as its own
/// set, named `service@version` (`api@3f2a1c9e`); every set of a service shares its
/// `KILN_SERVICE`, its routes and its metrics labels.
pub fn service_of(name: &str) -> &str {
    name.split_once('@').map_or(name, |(service, _)| service)
}

/// How many events a slow subscriber may fall behind before it misses some.
const EVENT_CAPACITY: usize = 1024;

/// Where the supervisor keeps its files, and how logs rotate.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub state_dir: PathBuf,
    pub log_rotation: Rotation,
}

impl SupervisorConfig {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            log_rotation: Rotation::default(),
        }
    }
}

/// Starts supervisors.
#[derive(Debug)]
pub struct Supervisor;

impl Supervisor {
    /// Starts the actor on the current tokio runtime. Pidfiles left in the state directory by a
    /// previous control plane are sorted at once: leftovers of dead instances are killed, live
    /// instances wait for their service's next [`SupervisorHandle::apply`] to be adopted (same
    /// spec) or replaced (different spec).
    pub fn start(
        config: SupervisorConfig,
    ) -> Result<(SupervisorHandle, broadcast::Receiver<Event>), SupervisorError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| SupervisorError::NoRuntime)?;
        let run_dir = pidfile::run_dir(&config.state_dir);
        for dir in [&run_dir, &config.state_dir.join("logs")] {
            std::fs::create_dir_all(dir).map_err(|source| SupervisorError::StateDir {
                path: dir.clone(),
                source,
            })?;
        }
        let (events, receiver) = broadcast::channel(EVENT_CAPACITY);
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let (requests_tx, requests_rx) = mpsc::unbounded_channel();
        let shared = Shared {
            state_dir: config.state_dir.clone(),
            run_dir,
            rotation: config.log_rotation,
            enforcer: limits::Enforcer::detect(),
            events: events.clone(),
            internal: internal_tx,
        };
        runtime.spawn(Actor::new(shared).run(requests_rx, internal_rx));
        let handle = SupervisorHandle {
            requests: requests_tx,
            events,
        };
        Ok((handle, receiver))
    }
}

/// Talks to a running supervisor. Cheap to clone. Dropping every handle detaches the actor
/// without stopping any process (use [`SupervisorHandle::shutdown`] to stop them).
#[derive(Debug, Clone)]
pub struct SupervisorHandle {
    requests: mpsc::UnboundedSender<Request>,
    events: broadcast::Sender<Event>,
}

impl SupervisorHandle {
    /// Another receiver of events, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Creates or updates a service. An update replaces outdated instances one at a time
    /// (stop, then start with the new spec); a replica-count change only adds or removes
    /// instances. Returns once every replica runs the new spec (started, not necessarily ready).
    pub async fn apply(&self, spec: ServiceSpec) -> Result<(), SupervisorError> {
        self.ask(|reply| Request::Apply {
            spec: Box::new(spec),
            reply,
        })
        .await?
    }

    /// Waits until every replica is ready (readiness probe passing, or running past startup if
    /// there is none). On timeout the error names each unready instance, its failing probe with
    /// recent results, and its last log lines.
    pub async fn wait_ready(
        &self,
        service: &str,
        timeout: Duration,
    ) -> Result<(), SupervisorError> {
        let service = service.to_owned();
        let waiting = self.ask(|reply| Request::WaitReady {
            service: service.clone(),
            reply,
        });
        match tokio::time::timeout(timeout, waiting).await {
            Ok(outcome) => outcome?,
            Err(_) => {
                let details = self
                    .ask(|reply| Request::Diagnose {
                        service: service.clone(),
                        reply,
                    })
                    .await?;
                Err(SupervisorError::NotReady {
                    service,
                    timeout,
                    details,
                })
            }
        }
    }

    /// Stops every instance of the service gracefully and forgets it.
    pub async fn remove(&self, service: &str) -> Result<(), SupervisorError> {
        let service = service.to_owned();
        self.ask(|reply| Request::Remove { service, reply }).await?
    }

    /// Restarts every instance, one at a time.
    pub async fn restart(&self, service: &str) -> Result<(), SupervisorError> {
        let service = service.to_owned();
        self.ask(|reply| Request::Restart {
            service,
            only: None,
            reply,
        })
        .await?
    }

    /// Restarts one instance; returns once its new process started (not necessarily ready).
    pub async fn restart_instance(
        &self,
        service: &str,
        instance: u32,
    ) -> Result<(), SupervisorError> {
        let service = service.to_owned();
        self.ask(|reply| Request::Restart {
            service,
            only: Some(instance),
            reply,
        })
        .await?
    }

    /// Changes the replica count; returns when added instances started and removed ones stopped.
    pub async fn scale(&self, service: &str, replicas: u32) -> Result<(), SupervisorError> {
        let service = service.to_owned();
        self.ask(|reply| Request::Scale {
            service,
            replicas,
            reply,
        })
        .await?
    }

    /// A snapshot of every instance.
    pub async fn status(&self) -> Vec<InstanceStatus> {
        self.ask(|reply| Request::Status { reply })
            .await
            .unwrap_or_default()
    }

    /// The live instances a previous control plane left that no apply has adopted yet (an
    /// apply of their set adopts them).
    pub async fn orphans(&self) -> Vec<Orphan> {
        self.ask(|reply| Request::Orphans { reply })
            .await
            .unwrap_or_default()
    }

    /// The spec a service (set) was last applied with.
    pub async fn spec(&self, service: &str) -> Option<ServiceSpec> {
        let service = service.to_owned();
        self.ask(|reply| Request::Spec { service, reply })
            .await
            .ok()
            .flatten()
    }

    /// Stops everything, each instance with its own grace period, and SIGKILLs whatever is
    /// still running at `deadline`. Instances left by a previous control plane and never
    /// re-applied are stopped too. The supervisor is gone afterwards.
    pub async fn shutdown(&self, deadline: Duration) {
        // An error means the actor is already gone, which is what was asked.
        let _ = self
            .ask(|reply| Request::Shutdown { deadline, reply })
            .await;
    }

    /// Stops the actor without touching any process, as a crash of the control plane would;
    /// the next [`Supervisor::start`] on the same state directory adopts them.
    pub async fn abandon(self) {
        let _ = self.ask(|reply| Request::Abandon { reply }).await;
    }

    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, SupervisorError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(request(reply))
            .map_err(|_| SupervisorError::ShutDown)?;
        answer.await.map_err(|_| SupervisorError::ShutDown)
    }
}
