//! One instance: its lifecycle phase, its process (spawned or adopted), and the tasks that
//! watch it — the exit waiter (or /proc poller for adopted processes), the two log capture
//! tasks and the probe task. Those tasks own nothing shared; they report to the actor through
//! [`Internal`] messages tagged with the instance's generation, so a message from a previous
//! run of the instance is recognised and ignored.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::event::{ExitReason, InstanceId, InstanceState, LimitsInForce, ProbeKind};
use crate::limits::{self, Enforcer};
use crate::logs::{self, LogSink, Rotation, Stream};
use crate::pidfile::{self, PidRecord};
use crate::probe::{self, ProbeEvent};
use crate::process::{self, Launch};
use crate::procfs;
use crate::spec::{RestartMode, ServiceSpec};

/// How often an adopted process (not our child, so no exit notification) is checked.
const ADOPTED_POLL: Duration = Duration::from_millis(100);

/// How long the exit waiter lets the log capture drain after the process group died.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// Messages from instance tasks and timers to the actor.
#[derive(Debug)]
pub(crate) enum Internal {
    Exited {
        id: InstanceId,
        generation: u64,
        exit: ExitReason,
    },
    Probe {
        id: InstanceId,
        generation: u64,
        event: ProbeEvent,
    },
    /// The stop grace period of this generation is over.
    KillDue { id: InstanceId, generation: u64 },
    /// The backoff delay of this generation is over.
    RestartDue { id: InstanceId, generation: u64 },
    /// The shutdown deadline passed.
    ShutdownDue,
}

/// Where an instance is; left by the actor's single step function on each message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Phase {
    /// Spawned; the startup probe has not passed yet.
    Starting,
    /// Past startup; readiness is tracked separately in `ready`.
    Running,
    /// Signalled; SIGKILL follows at the grace deadline; `then` says what happens on exit.
    Stopping { then: AfterStop },
    /// Waiting to be restarted.
    Backoff {
        until: SystemTime,
        restarts_in_window: u32,
    },
    /// Exited and not to be restarted (policy), or stopped on request.
    Stopped,
    /// Exited with a failure under `RestartMode::Never`.
    Failed,
}

/// What to do once a stopping instance has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterStop {
    /// Start again at once with the service's current spec (rolling update, restart).
    Replace,
    /// Start again after a backoff delay (failed liveness or startup probe).
    Backoff,
    /// Forget the instance (scale down, remove, shutdown).
    Remove,
}

/// What an instance does once its process has exited.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AfterExit {
    /// Drop the instance (it was being removed).
    Forget,
    /// Start again now with the current spec (it was being replaced).
    Relaunch,
    /// Start again after the backoff delay.
    Backoff,
    /// Stay down in this phase.
    Rest(Phase),
}

/// The exit step of the lifecycle: the one place that decides what an exit leads to, from the
/// phase the instance was in, the restart mode and how the process ended.
pub(crate) fn after_exit(phase: &Phase, mode: RestartMode, exit: &ExitReason) -> AfterExit {
    match phase {
        Phase::Stopping {
            then: AfterStop::Remove,
        } => AfterExit::Forget,
        Phase::Stopping {
            then: AfterStop::Replace,
        } => AfterExit::Relaunch,
        Phase::Stopping {
            then: AfterStop::Backoff,
        } => AfterExit::Backoff,
        Phase::Starting | Phase::Running => match (mode, exit.is_failure()) {
            (RestartMode::Always, _) | (RestartMode::OnFailure, true) => AfterExit::Backoff,
            (RestartMode::OnFailure, false) | (RestartMode::Never, false) => {
                AfterExit::Rest(Phase::Stopped)
            }
            (RestartMode::Never, true) => AfterExit::Rest(Phase::Failed),
        },
        // These phases have no process, so no exit arrives in them; nothing changes.
        Phase::Backoff { .. } | Phase::Stopped | Phase::Failed => AfterExit::Rest(phase.clone()),
    }
}

/// A live process of an instance.
#[derive(Debug)]
pub(crate) struct Proc {
    pub pid: u32,
    pub start_ticks: u64,
    pub started_at: Instant,
    pub cgroup: Option<limits::Cgroup>,
    /// The cgroup's `oom_kill` count at spawn, to attribute a later SIGKILL.
    pub oom_base: Option<u64>,
}

/// Aborts the instance's tasks when the instance (or the whole actor) goes away.
#[derive(Debug, Default)]
pub(crate) struct Tasks(Vec<AbortHandle>);

impl Tasks {
    fn add<T>(&mut self, handle: &JoinHandle<T>) {
        self.0.push(handle.abort_handle());
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Everything instance code needs from the actor, borrowed apart from the instance maps.
#[derive(Debug)]
pub(crate) struct Shared {
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub rotation: Rotation,
    pub enforcer: Enforcer,
    pub events: tokio::sync::broadcast::Sender<crate::Event>,
    pub internal: UnboundedSender<Internal>,
}

impl Shared {
    pub(crate) fn emit(&self, event: crate::Event) {
        // No subscriber is not an error: events are for whoever listens.
        let _ = self.events.send(event);
    }

    /// Sends `message` to the actor after `delay`.
    pub(crate) fn after(&self, delay: Duration, message: Internal) {
        let internal = self.internal.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = internal.send(message);
        });
    }
}

/// One replica of a service.
#[derive(Debug)]
pub(crate) struct Instance {
    pub id: InstanceId,
    pub port: u16,
    /// Hash of the spec this instance was last launched with (or adopted under).
    pub hash: String,
    pub release: String,
    /// Set by `restart`: replace even though the hash matches.
    pub outdated: bool,
    /// At least one launch with `hash` succeeded (or the instance was adopted).
    pub launched: bool,
    pub last_spawn_error: Option<String>,
    pub generation: u64,
    pub phase: Phase,
    pub proc: Option<Proc>,
    pub ready: bool,
    /// The last failing probe: which, why, and its recent results.
    pub failing: Option<(ProbeKind, String, Vec<String>)>,
    pub restarts: u32,
    pub restart_times: Vec<Instant>,
    pub backoff: Backoff,
    pub log: LogSink,
    pub adopted: bool,
    pub in_force: LimitsInForce,
    pub tasks: Tasks,
}

impl Instance {
    pub(crate) fn new(shared: &Shared, id: InstanceId, port: u16) -> std::io::Result<Self> {
        let log = LogSink::open(
            logs::log_path(&shared.state_dir, &id.service, id.instance),
            shared.rotation,
        )?;
        let seed = seed_for(&id, port);
        Ok(Self {
            id,
            port,
            hash: String::new(),
            release: String::new(),
            outdated: false,
            launched: false,
            last_spawn_error: None,
            generation: 0,
            phase: Phase::Stopped,
            proc: None,
            ready: false,
            failing: None,
            restarts: 0,
            restart_times: Vec::new(),
            backoff: Backoff::new(seed),
            log,
            adopted: false,
            in_force: LimitsInForce::None,
            tasks: Tasks::default(),
        })
    }

    fn backoff_seed(&self) -> u64 {
        seed_for(&self.id, self.port) ^ self.generation
    }

    /// The state shown in status.
    pub(crate) fn state(&self) -> InstanceState {
        match &self.phase {
            Phase::Starting => InstanceState::Starting,
            Phase::Running if self.ready => InstanceState::Ready,
            Phase::Running if self.failing.is_some() => InstanceState::Unhealthy,
            Phase::Running => InstanceState::Running,
            Phase::Stopping { .. } => InstanceState::Stopping,
            Phase::Backoff {
                until,
                restarts_in_window,
            } => InstanceState::Backoff {
                until: *until,
                restarts_in_window: *restarts_in_window,
            },
            Phase::Stopped => InstanceState::Stopped,
            Phase::Failed => InstanceState::Failed,
        }
    }

    /// Starts a new process with `spec`. On failure the instance is left without a process and
    /// the error is returned for the caller to schedule a retry.
    pub(crate) fn launch(
        &mut self,
        shared: &Shared,
        spec: &Arc<ServiceSpec>,
    ) -> Result<(), String> {
        self.generation += 1;
        self.tasks = Tasks::default();
        let hash = spec.spec_hash();
        if hash != self.hash {
            // `launched` is about this spec; a new spec has not been started yet.
            self.launched = false;
            self.backoff = Backoff::new(self.backoff_seed());
        }
        self.hash = hash;
        self.release = spec.release.clone();
        self.outdated = false;
        self.ready = false;
        self.failing = None;
        self.adopted = false;
        match self.spawn(shared, spec) {
            Ok(()) => {
                self.launched = true;
                self.last_spawn_error = None;
                Ok(())
            }
            Err(e) => {
                let reason = e.to_string();
                self.log
                    .write(Stream::Supervisor, &format!("cannot start: {reason}"));
                self.last_spawn_error = Some(reason.clone());
                Err(reason)
            }
        }
    }

    fn spawn(&mut self, shared: &Shared, spec: &Arc<ServiceSpec>) -> std::io::Result<()> {
        let (stdout, stderr) = process::fifo_paths(&shared.run_dir, &self.id);
        logs::make_fifo(&stdout)?;
        logs::make_fifo(&stderr)?;
        // Readers first: a FIFO's buffered output is discarded once nobody has it open, so an
        // instance that writes and exits at once would otherwise lose its last words.
        let readers = (logs::open_reader(&stdout)?, logs::open_reader(&stderr)?);
        let prepared = limits::prepare(&shared.enforcer, &self.id, &spec.limits);
        let launch = Launch {
            id: &self.id,
            argv: spec.command.argv(),
            workdir: &spec.workdir,
            env: &spec.env,
            release: &spec.release,
            port: self.port,
            prelude: &prepared.prelude,
            stdout: &stdout,
            stderr: &stderr,
        };
        // Before the spawn: a process that hits its limit at once can be killed before a count
        // read after the spawn, which would then hold its own kill.
        let oom_base = prepared.cgroup.as_ref().and_then(limits::Cgroup::oom_kills);
        let child = process::spawn(&launch)?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("the child exited before its pid was read"))?;
        let start_ticks = procfs::stat(pid).map_or(0, |s| s.start_ticks);
        self.in_force = prepared.in_force;
        self.proc = Some(Proc {
            pid,
            start_ticks,
            started_at: Instant::now(),
            oom_base,
            cgroup: prepared.cgroup.clone(),
        });
        let captures = self.start_capture(readers);
        let waiter = tokio::spawn(wait_child(
            child,
            pid,
            captures,
            shared.internal.clone(),
            self.id.clone(),
            self.generation,
        ));
        self.tasks.add(&waiter);
        self.start_probes(shared, spec);
        self.write_pidfile(shared);
        Ok(())
    }

    fn start_capture(
        &mut self,
        (stdout, stderr): (
            tokio::net::unix::pipe::Receiver,
            tokio::net::unix::pipe::Receiver,
        ),
    ) -> Vec<JoinHandle<()>> {
        let out = tokio::spawn(logs::capture(stdout, Stream::Stdout, self.log.clone()));
        let err = tokio::spawn(logs::capture(stderr, Stream::Stderr, self.log.clone()));
        self.tasks.add(&out);
        self.tasks.add(&err);
        vec![out, err]
    }

    /// Starts the probe task for the current generation.
    pub(crate) fn start_probes(&mut self, shared: &Shared, spec: &ServiceSpec) {
        let mut env: Vec<(String, String)> = spec.env.clone().into_iter().collect();
        env.extend(process::instance_env(&self.id, self.port, &spec.release));
        let target = probe::Target {
            port: self.port,
            workdir: spec.workdir.clone(),
            env,
        };
        let internal = shared.internal.clone();
        let (id, generation) = (self.id.clone(), self.generation);
        let report = move |event| {
            let _ = internal.send(Internal::Probe {
                id: id.clone(),
                generation,
                event,
            });
        };
        let task = tokio::spawn(probe::run(spec.probes.clone(), target, report));
        self.tasks.add(&task);
        self.phase = if spec.probes.startup.is_some() {
            Phase::Starting
        } else {
            Phase::Running
        };
    }

    fn write_pidfile(&self, shared: &Shared) {
        let Some(proc) = &self.proc else { return };
        let record = PidRecord {
            service: self.id.service.clone(),
            instance: self.id.instance,
            pid: proc.pid,
            pgid: proc.pid,
            port: self.port,
            start_ticks: proc.start_ticks,
            spec_hash: self.hash.clone(),
            release: self.release.clone(),
            cgroup: proc.cgroup.as_ref().map(|c| c.memory.clone()),
            other_cgroups: proc
                .cgroup
                .as_ref()
                .map(|c| c.others.clone())
                .unwrap_or_default(),
        };
        if let Err(e) = pidfile::write(&shared.run_dir, &record) {
            // Without a pidfile a crashed control plane cannot adopt this instance; say so.
            self.log
                .write(Stream::Supervisor, &format!("cannot write pidfile: {e}"));
        }
    }

    /// Takes over a process a previous control plane left running: resumes log capture from
    /// its FIFOs and watches /proc for its exit (it is not our child).
    pub(crate) fn adopt(&mut self, shared: &Shared, record: &PidRecord) {
        self.generation += 1;
        self.tasks = Tasks::default();
        self.hash = record.spec_hash.clone();
        self.release = record.release.clone();
        self.launched = true;
        self.adopted = true;
        self.phase = Phase::Running;
        let age = procfs::age(record.start_ticks).unwrap_or_default();
        self.proc = Some(Proc {
            pid: record.pid,
            start_ticks: record.start_ticks,
            started_at: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
            oom_base: record.cgroup().as_ref().and_then(limits::Cgroup::oom_kills),
            cgroup: record.cgroup(),
        });
        self.in_force = record.cgroup().map_or(LimitsInForce::None, |c| c.version());
        let (stdout, stderr) = process::fifo_paths(&shared.run_dir, &self.id);
        let note = match (logs::open_reader(&stdout), logs::open_reader(&stderr)) {
            (Ok(out), Ok(err)) => {
                self.start_capture((out, err));
                format!(
                    "adopted pid {} after a control-plane restart; output capture resumed",
                    record.pid
                )
            }
            _ => format!(
                "adopted pid {}; its output FIFOs are gone, so output is lost",
                record.pid
            ),
        };
        self.log.write(Stream::Supervisor, &note);
        let poller = tokio::spawn(watch_adopted(
            record.clone(),
            shared.internal.clone(),
            self.generation,
        ));
        self.tasks.add(&poller);
    }

    /// Sends the stop signal to the process group and arms the SIGKILL timer. An instance with
    /// no process has nothing to stop; the caller handles that.
    pub(crate) fn begin_stop(&mut self, shared: &Shared, spec: &ServiceSpec, then: AfterStop) {
        let Some(proc) = &self.proc else { return };
        self.ready = false;
        self.phase = Phase::Stopping { then };
        process::signal_group(proc.pid, process::to_signal(spec.stop.signal));
        // A stopped (SIGSTOP) process would never see the signal; wake it up.
        process::signal_group(proc.pid, Signal::SIGCONT);
        shared.after(
            spec.stop.grace,
            Internal::KillDue {
                id: self.id.clone(),
                generation: self.generation,
            },
        );
    }

    /// SIGKILLs the process group now.
    pub(crate) fn kill(&self) {
        if let Some(proc) = &self.proc {
            process::signal_group(proc.pid, Signal::SIGKILL);
        }
    }

    /// Refines a SIGKILL (or a shell's 137) into an OOM kill when the instance's cgroup counted one.
    pub(crate) fn classify_exit(&self, exit: ExitReason) -> ExitReason {
        let Some(proc) = &self.proc else { return exit };
        let oom = match (&proc.cgroup, proc.oom_base) {
            (Some(cgroup), base) => cgroup.oom_kills() > base.or(Some(0)),
            _ => false,
        };
        // A shell in front of the killed process (a `shell: true` pipeline) reports the
        // kill as its own exit status, 128 + SIGKILL.
        let killed =
            exit == ExitReason::Signal("SIGKILL".to_owned()) || exit == ExitReason::Code(137);
        if oom && killed {
            ExitReason::OomKilled
        } else {
            exit
        }
    }
}

/// Seeds jitter per instance so replicas crashing together spread out.
fn seed_for(id: &InstanceId, port: u16) -> u64 {
    (u64::from(port) << 32) ^ u64::from(id.instance) ^ u64::from(std::process::id())
}

/// Waits for our child to exit, kills whatever is left of its group (a grandchild must die with
/// the instance), lets the log capture drain, and reports.
async fn wait_child(
    mut child: tokio::process::Child,
    pgid: u32,
    captures: Vec<JoinHandle<()>>,
    internal: UnboundedSender<Internal>,
    id: InstanceId,
    generation: u64,
) {
    let exit = match child.wait().await {
        Ok(status) => process::exit_reason(status),
        Err(_) => ExitReason::Unknown,
    };
    process::signal_group(pgid, Signal::SIGKILL);
    for capture in captures {
        // A process that escaped the group may keep the FIFO open; don't wait for it forever.
        let _ = tokio::time::timeout(DRAIN_GRACE, capture).await;
    }
    let _ = internal.send(Internal::Exited {
        id,
        generation,
        exit,
    });
}

/// Polls /proc until the adopted process is gone, then kills the rest of its group.
async fn watch_adopted(record: PidRecord, internal: UnboundedSender<Internal>, generation: u64) {
    while record.is_alive() {
        tokio::time::sleep(ADOPTED_POLL).await;
    }
    pidfile::kill_leftovers(&record);
    let _ = internal.send(Internal::Exited {
        id: record.id(),
        generation,
        exit: ExitReason::Unknown,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_lead_where_the_phase_and_policy_say() {
        use AfterExit::{Backoff, Forget, Relaunch, Rest};
        use RestartMode::{Always, Never, OnFailure};
        let crash = ExitReason::Code(1);
        let clean = ExitReason::Code(0);
        let killed = ExitReason::Signal("SIGKILL".into());
        let stopping = |then| Phase::Stopping { then };
        let cases = [
            (stopping(AfterStop::Remove), Always, &crash, Forget),
            (stopping(AfterStop::Replace), Never, &killed, Relaunch),
            (stopping(AfterStop::Backoff), Never, &killed, Backoff),
            (Phase::Running, Always, &clean, Backoff),
            (Phase::Starting, OnFailure, &crash, Backoff),
            (Phase::Running, OnFailure, &clean, Rest(Phase::Stopped)),
            (Phase::Running, Never, &killed, Rest(Phase::Failed)),
            (Phase::Running, Never, &clean, Rest(Phase::Stopped)),
            (Phase::Stopped, Always, &crash, Rest(Phase::Stopped)),
        ];
        for (phase, mode, exit, want) in cases {
            assert_eq!(
                after_exit(&phase, mode, exit),
                want,
                "{phase:?} {mode:?} {exit}"
            );
        }
    }
}
