//! The supervisor actor: the one task that owns every service and instance. Handles send it
//! [`Request`]s; instance tasks and timers send it [`Internal`] messages. After every message
//! it reconciles each service towards its desired shape (level-triggered: create missing
//! replicas, stop surplus ones, replace outdated ones one at a time) and answers the waiters
//! whose condition now holds. No lock is held anywhere and nothing here awaits except the
//! receive at the top of the loop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::backoff::CRASH_LOOP_RESTARTS;
use crate::event::Orphan;
use crate::event::{Event, InstanceId, InstanceStatus, ProbeKind, SupervisorError};
use crate::instance::{AfterExit, AfterStop, Instance, Internal, Phase, Shared, after_exit};
use crate::logs::Stream;
use crate::pidfile::{self, PidRecord};
use crate::probe::ProbeEvent;
use crate::procfs;
use crate::spec::{RestartMode, RestartPolicy, ServiceSpec};

type Reply = oneshot::Sender<Result<(), SupervisorError>>;

/// What a handle asks of the actor.
#[derive(Debug)]
pub(crate) enum Request {
    Apply {
        spec: Box<ServiceSpec>,
        reply: Reply,
    },
    WaitReady {
        service: String,
        reply: Reply,
    },
    Diagnose {
        service: String,
        reply: oneshot::Sender<String>,
    },
    Remove {
        service: String,
        reply: Reply,
    },
    Restart {
        service: String,
        /// Only this instance, or every one.
        only: Option<u32>,
        reply: Reply,
    },
    Scale {
        service: String,
        replicas: u32,
        reply: Reply,
    },
    Status {
        reply: oneshot::Sender<Vec<InstanceStatus>>,
    },
    Orphans {
        reply: oneshot::Sender<Vec<Orphan>>,
    },
    Spec {
        service: String,
        reply: oneshot::Sender<Option<ServiceSpec>>,
    },
    Shutdown {
        deadline: Duration,
        reply: oneshot::Sender<()>,
    },
    /// Stop the actor and its tasks but leave every process running, as a crash would.
    Abandon {
        reply: oneshot::Sender<()>,
    },
}

/// A service's desired shape.
#[derive(Debug)]
struct Service {
    spec: Arc<ServiceSpec>,
    hash: String,
    replicas: u32,
    removing: bool,
}

/// A pending answer to a handle, sent once its condition holds.
#[derive(Debug)]
enum Waiter {
    Converged {
        service: String,
        hash: String,
        reply: Reply,
    },
    Ready {
        service: String,
        reply: Reply,
    },
    Removed {
        service: String,
        reply: Reply,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

#[derive(Debug)]
pub(crate) struct Actor {
    shared: Shared,
    services: BTreeMap<String, Service>,
    instances: BTreeMap<InstanceId, Instance>,
    /// Live processes from a previous control plane, waiting for their service's next apply.
    orphans: BTreeMap<InstanceId, PidRecord>,
    waiters: Vec<Waiter>,
    shutting_down: bool,
}

impl Actor {
    /// Creates the actor and sorts the pidfiles a previous control plane left: live processes
    /// become adoption candidates, leftovers of dead ones are killed and forgotten.
    pub(crate) fn new(shared: Shared) -> Self {
        let mut orphans = BTreeMap::new();
        for record in pidfile::scan(&shared.run_dir) {
            if record.is_alive() {
                orphans.insert(record.id(), record);
            } else {
                pidfile::kill_leftovers(&record);
                pidfile::remove(&shared.run_dir, &record.id());
            }
        }
        Self {
            shared,
            services: BTreeMap::new(),
            instances: BTreeMap::new(),
            orphans,
            waiters: Vec::new(),
            shutting_down: false,
        }
    }

    pub(crate) async fn run(
        mut self,
        mut requests: UnboundedReceiver<Request>,
        mut internal: UnboundedReceiver<Internal>,
    ) {
        loop {
            tokio::select! {
                // Instance news first, so requests see the freshest state.
                biased;
                Some(message) = internal.recv() => self.on_internal(message),
                request = requests.recv() => match request {
                    Some(Request::Abandon { reply }) => {
                        // Dropping the instances aborts their tasks; processes keep running.
                        self.instances.clear();
                        let _ = reply.send(());
                        return;
                    }
                    Some(request) => self.on_request(request),
                    // Every handle is gone: detach like a crash; the next start adopts.
                    None => return,
                },
            }
            let names: Vec<String> = self.services.keys().cloned().collect();
            for name in names {
                self.reconcile(&name);
            }
            self.answer_waiters();
            if self.shutting_down && self.instances.is_empty() {
                self.finish_shutdown();
                return;
            }
        }
    }

    fn on_request(&mut self, request: Request) {
        match request {
            Request::Apply { spec, reply } => self.apply(*spec, reply),
            Request::WaitReady { service, reply } => {
                self.waiters.push(Waiter::Ready { service, reply });
            }
            Request::Diagnose { service, reply } => {
                let _ = reply.send(self.diagnose(&service));
            }
            Request::Remove { service, reply } => self.remove(service, reply),
            Request::Restart {
                service,
                only,
                reply,
            } => self.restart(service, only, reply),
            Request::Scale {
                service,
                replicas,
                reply,
            } => self.scale(service, replicas, reply),
            Request::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Request::Orphans { reply } => {
                let _ = reply.send(self.orphans());
            }
            Request::Spec { service, reply } => {
                let spec = self.services.get(&service).map(|s| (*s.spec).clone());
                let _ = reply.send(spec);
            }
            Request::Shutdown { deadline, reply } => self.shutdown(deadline, reply),
            Request::Abandon { .. } => {}
        }
    }

    fn apply(&mut self, spec: ServiceSpec, reply: Reply) {
        if self.shutting_down {
            let _ = reply.send(Err(SupervisorError::ShutDown));
            return;
        }
        if let Err(reason) = spec.validate() {
            let service = spec.name.clone();
            let _ = reply.send(Err(SupervisorError::InvalidSpec { service, reason }));
            return;
        }
        let name = spec.name.clone();
        let hash = spec.spec_hash();
        let service = Service {
            replicas: spec.replicas,
            spec: Arc::new(spec),
            hash: hash.clone(),
            removing: false,
        };
        self.services.insert(name.clone(), service);
        self.adopt_orphans(&name);
        self.waiters.push(Waiter::Converged {
            service: name,
            hash,
            reply,
        });
    }

    /// Takes over this service's orphans. One whose spec hash differs is adopted too, then
    /// replaced by the normal rolling path — so it gets a graceful stop, not a bare SIGKILL.
    fn adopt_orphans(&mut self, name: &str) {
        let ids: Vec<InstanceId> = self
            .orphans
            .keys()
            .filter(|id| id.service == name)
            .cloned()
            .collect();
        let Some(service) = self.services.get(name) else {
            return;
        };
        for id in ids {
            let Some(record) = self.orphans.remove(&id) else {
                continue;
            };
            if !record.is_alive() || self.instances.contains_key(&id) {
                pidfile::kill_leftovers(&record);
                continue;
            }
            let Ok(mut instance) = Instance::new(&self.shared, id.clone(), record.port) else {
                pidfile::kill_leftovers(&record);
                continue;
            };
            instance.adopt(&self.shared, &record);
            if record.spec_hash == service.hash {
                instance.start_probes(&self.shared, &service.spec);
            }
            self.shared.emit(Event::Adopted {
                id: id.clone(),
                pid: record.pid,
                port: record.port,
            });
            self.instances.insert(id, instance);
        }
    }

    /// The live processes of a previous control plane not adopted yet.
    fn orphans(&self) -> Vec<Orphan> {
        self.orphans
            .values()
            .filter(|record| record.is_alive())
            .map(|record| Orphan {
                id: record.id(),
                pid: record.pid,
                start_ticks: record.start_ticks,
                port: record.port,
                spec_hash: record.spec_hash.clone(),
            })
            .collect()
    }

    fn remove(&mut self, service: String, reply: Reply) {
        let ids: Vec<InstanceId> = self
            .orphans
            .keys()
            .filter(|id| id.service == service)
            .cloned()
            .collect();
        for id in ids {
            if let Some(record) = self.orphans.remove(&id) {
                self.kill_orphan(&record);
            }
        }
        match self.services.get_mut(&service) {
            Some(svc) => {
                svc.removing = true;
                self.waiters.push(Waiter::Removed { service, reply });
            }
            None => {
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn restart(&mut self, service: String, only: Option<u32>, reply: Reply) {
        let Some(svc) = self.services.get(&service) else {
            let _ = reply.send(Err(SupervisorError::UnknownService(service)));
            return;
        };
        let hash = svc.hash.clone();
        for instance in self
            .instances
            .values_mut()
            .filter(|i| i.id.service == service && only.is_none_or(|n| i.id.instance == n))
        {
            instance.outdated = true;
        }
        self.waiters.push(Waiter::Converged {
            service,
            hash,
            reply,
        });
    }

    fn scale(&mut self, service: String, replicas: u32, reply: Reply) {
        let Some(svc) = self.services.get_mut(&service) else {
            let _ = reply.send(Err(SupervisorError::UnknownService(service)));
            return;
        };
        svc.replicas = replicas;
        let hash = svc.hash.clone();
        self.waiters.push(Waiter::Converged {
            service,
            hash,
            reply,
        });
    }

    fn shutdown(&mut self, deadline: Duration, reply: oneshot::Sender<()>) {
        self.shutting_down = true;
        self.waiters.push(Waiter::Shutdown { reply });
        for record in self.orphans.values() {
            if record.is_alive() {
                crate::process::signal_group(record.pgid, Signal::SIGTERM);
            }
        }
        self.shared.after(deadline, Internal::ShutdownDue);
    }

    fn finish_shutdown(&mut self) {
        let orphans = std::mem::take(&mut self.orphans);
        for record in orphans.values() {
            self.kill_orphan(record);
        }
        for waiter in std::mem::take(&mut self.waiters) {
            match waiter {
                Waiter::Shutdown { reply } => {
                    let _ = reply.send(());
                }
                Waiter::Converged { reply, .. }
                | Waiter::Ready { reply, .. }
                | Waiter::Removed { reply, .. } => {
                    let _ = reply.send(Err(SupervisorError::ShutDown));
                }
            }
        }
    }

    fn kill_orphan(&self, record: &PidRecord) {
        if pidfile::kill_leftovers(record) {
            self.shared.emit(Event::OrphanKilled {
                id: record.id(),
                pid: record.pid,
            });
        }
        pidfile::remove(&self.shared.run_dir, &record.id());
    }

    fn on_internal(&mut self, message: Internal) {
        match message {
            Internal::Exited {
                id,
                generation,
                exit,
            } => self.on_exit(&id, generation, exit),
            Internal::Probe {
                id,
                generation,
                event,
            } => self.on_probe(&id, generation, event),
            Internal::KillDue { id, generation } => {
                if let Some(instance) = self.current(&id, generation)
                    && matches!(instance.phase, Phase::Stopping { .. })
                {
                    instance
                        .log
                        .write(Stream::Supervisor, "grace period over; sending SIGKILL");
                    instance.kill();
                }
            }
            Internal::RestartDue { id, generation } => {
                if self
                    .current(&id, generation)
                    .is_some_and(|i| matches!(i.phase, Phase::Backoff { .. }))
                {
                    self.launch(&id);
                }
            }
            Internal::ShutdownDue => {
                for instance in self.instances.values() {
                    instance.kill();
                }
            }
        }
    }

    /// The instance `id` if `generation` is its current one (older messages are stale).
    fn current(&mut self, id: &InstanceId, generation: u64) -> Option<&mut Instance> {
        self.instances
            .get_mut(id)
            .filter(|i| i.generation == generation)
    }

    fn on_exit(&mut self, id: &InstanceId, generation: u64, exit: crate::ExitReason) {
        let Some(spec) = self.services.get(&id.service).map(|s| s.spec.clone()) else {
            // Services are only dropped once all their instances are gone.
            self.forget(id);
            return;
        };
        let shared = &self.shared;
        let Some(instance) = self
            .instances
            .get_mut(id)
            .filter(|i| i.generation == generation)
        else {
            return;
        };
        let exit = instance.classify_exit(exit);
        let Some(proc) = instance.proc.take() else {
            return;
        };
        let uptime = proc.started_at.elapsed();
        let last_log_lines = instance.log.last_lines();
        instance
            .log
            .write(Stream::Supervisor, &format!("exited: {exit}"));
        instance.tasks = Default::default();
        instance.ready = false;
        if let Some(cgroup) = &proc.cgroup {
            cgroup.remove();
        }
        pidfile::remove(&shared.run_dir, id);
        shared.emit(Event::Exited {
            id: id.clone(),
            pid: proc.pid,
            exit: exit.clone(),
            last_log_lines,
        });
        match after_exit(&instance.phase, spec.restart.mode, &exit) {
            AfterExit::Forget => self.forget(id),
            AfterExit::Relaunch => self.launch(id),
            AfterExit::Backoff => schedule_restart(shared, instance, &spec.restart, uptime),
            AfterExit::Rest(phase) => instance.phase = phase,
        }
    }

    fn forget(&mut self, id: &InstanceId) {
        if self.instances.remove(id).is_some() {
            pidfile::remove(&self.shared.run_dir, id);
            self.shared.emit(Event::Stopped { id: id.clone() });
        }
    }

    fn on_probe(&mut self, id: &InstanceId, generation: u64, event: ProbeEvent) {
        let spec = self.services.get(&id.service).map(|s| s.spec.clone());
        let shared = &self.shared;
        let Some(instance) = self
            .instances
            .get_mut(id)
            .filter(|i| i.generation == generation)
        else {
            return;
        };
        match event {
            ProbeEvent::Passing {
                kind: ProbeKind::Startup,
            } => {
                if instance.phase == Phase::Starting {
                    instance.phase = Phase::Running;
                }
            }
            ProbeEvent::Passing { .. } => {
                if instance.phase == Phase::Running && !instance.ready {
                    instance.ready = true;
                    instance.failing = None;
                    shared.emit(Event::Ready { id: id.clone() });
                }
            }
            ProbeEvent::Failing {
                kind,
                reason,
                recent,
            } => {
                instance.failing = Some((kind, reason.clone(), recent));
                let note = format!("{kind} probe failing: {reason}");
                instance.log.write(Stream::Supervisor, &note);
                shared.emit(Event::Unhealthy {
                    id: id.clone(),
                    probe: kind,
                    reason,
                });
                if kind == ProbeKind::Readiness {
                    // Not ready means "send no traffic", never "kill".
                    instance.ready = false;
                } else if let Some(spec) = spec
                    && matches!(instance.phase, Phase::Running | Phase::Starting)
                {
                    instance.begin_stop(shared, &spec, AfterStop::Backoff);
                }
            }
        }
    }

    /// Starts (or restarts) instance `id` with its service's current spec.
    fn launch(&mut self, id: &InstanceId) {
        let Some(spec) = self.services.get(&id.service).map(|s| s.spec.clone()) else {
            self.forget(id);
            return;
        };
        self.move_off_a_taken_port(id);
        let shared = &self.shared;
        let Some(instance) = self.instances.get_mut(id) else {
            return;
        };
        match instance.launch(shared, &spec) {
            Ok(()) => {
                let pid = instance.proc.as_ref().map_or(0, |p| p.pid);
                shared.emit(Event::Started {
                    id: id.clone(),
                    pid,
                    port: instance.port,
                });
            }
            Err(_) if spec.restart.mode == RestartMode::Never => instance.phase = Phase::Failed,
            Err(_) => schedule_restart(shared, instance, &spec.restart, Duration::ZERO),
        }
    }

    /// An instance keeps its port across restarts, but the port was only free when it was
    /// chosen: another process may have bound it since (or taken it as the local end of an
    /// outgoing connection). Restarting on it would crash-loop forever, so a taken port is
    /// swapped for a free one before the next launch.
    fn move_off_a_taken_port(&mut self, id: &InstanceId) {
        let Some(port) = self.instances.get(id).map(|i| i.port) else {
            return;
        };
        if crate::process::port_is_free(port) {
            return;
        }
        let mut taken: Vec<u16> = self.instances.values().map(|i| i.port).collect();
        taken.extend(self.orphans.values().map(|r| r.port));
        let Ok(fresh) = crate::process::free_port(&taken) else {
            return;
        };
        if let Some(instance) = self.instances.get_mut(id) {
            instance.log.write(
                Stream::Supervisor,
                &format!("port {port} is taken by another process; moving to port {fresh}"),
            );
            instance.port = fresh;
        }
    }

    /// Moves service `name` one step towards its desired shape.
    fn reconcile(&mut self, name: &str) {
        let Some(service) = self.services.get(name) else {
            return;
        };
        let desired = if service.removing || self.shutting_down {
            0
        } else {
            service.replicas
        };
        let (hash, spec) = (service.hash.clone(), service.spec.clone());
        let ids: Vec<InstanceId> = self
            .instances
            .keys()
            .filter(|id| id.service == name)
            .cloned()
            .collect();
        for id in ids.iter().filter(|id| id.instance >= desired) {
            self.stop_for_good(id, &spec);
        }
        for index in 0..desired {
            self.ensure_instance(name, index);
        }
        self.roll_one(name, desired, &hash, &spec);
        let gone = !self.instances.keys().any(|id| id.service == name);
        if gone && self.services.get(name).is_some_and(|s| s.removing) {
            self.services.remove(name);
        }
    }

    /// Stops a surplus instance and forgets it once it has exited.
    fn stop_for_good(&mut self, id: &InstanceId, spec: &ServiceSpec) {
        let shared = &self.shared;
        let Some(instance) = self.instances.get_mut(id) else {
            return;
        };
        match &mut instance.phase {
            Phase::Stopping { then } => *then = AfterStop::Remove,
            _ if instance.proc.is_some() => instance.begin_stop(shared, spec, AfterStop::Remove),
            // Nothing running (backoff, stopped, failed): gone at once.
            _ => {
                self.forget(id);
            }
        }
    }

    fn ensure_instance(&mut self, name: &str, index: u32) {
        let id = InstanceId {
            service: name.to_owned(),
            instance: index,
        };
        if self.instances.contains_key(&id) {
            return;
        }
        let mut taken: Vec<u16> = self.instances.values().map(|i| i.port).collect();
        taken.extend(self.orphans.values().map(|r| r.port));
        let created = crate::process::free_port(&taken)
            .and_then(|port| Instance::new(&self.shared, id.clone(), port));
        match created {
            Ok(instance) => {
                self.instances.insert(id.clone(), instance);
                self.launch(&id);
            }
            Err(e) => {
                // Leave it missing; the next reconcile retries, and the apply waiter reports.
                self.shared.emit(Event::Unhealthy {
                    id,
                    probe: ProbeKind::Startup,
                    reason: format!("cannot prepare the instance: {e}"),
                });
            }
        }
    }

    /// Rolling replacement: at most one instance of the service is being replaced at a time.
    fn roll_one(&mut self, name: &str, desired: u32, hash: &str, spec: &Arc<ServiceSpec>) {
        let in_scope = |i: &&Instance| i.id.service == name && i.id.instance < desired;
        let busy = self.instances.values().filter(in_scope).any(|i| {
            matches!(
                i.phase,
                Phase::Stopping {
                    then: AfterStop::Replace
                }
            )
        });
        if busy {
            return;
        }
        let next = self
            .instances
            .values()
            .filter(in_scope)
            .find(|i| (i.hash != hash || i.outdated) && !matches!(i.phase, Phase::Stopping { .. }))
            .map(|i| (i.id.clone(), i.proc.is_some()));
        match next {
            Some((id, true)) => {
                if let Some(instance) = self.instances.get_mut(&id) {
                    instance
                        .log
                        .write(Stream::Supervisor, "replacing with the new spec");
                    instance.begin_stop(&self.shared, spec, AfterStop::Replace);
                }
            }
            Some((id, false)) => self.launch(&id),
            None => {}
        }
    }

    fn answer_waiters(&mut self) {
        for waiter in std::mem::take(&mut self.waiters) {
            let (outcome, reply) = match waiter {
                Waiter::Converged {
                    service,
                    hash,
                    reply,
                } => match self.converged(&service, &hash) {
                    Some(outcome) => (outcome, reply),
                    None => {
                        self.keep(Waiter::Converged {
                            service,
                            hash,
                            reply,
                        });
                        continue;
                    }
                },
                Waiter::Ready { service, reply } => match self.ready(&service) {
                    Some(outcome) => (outcome, reply),
                    None => {
                        self.keep(Waiter::Ready { service, reply });
                        continue;
                    }
                },
                Waiter::Removed { service, reply } => {
                    if self.services.contains_key(&service) {
                        self.keep(Waiter::Removed { service, reply });
                        continue;
                    }
                    (Ok(()), reply)
                }
                Waiter::Shutdown { reply } => {
                    self.waiters.push(Waiter::Shutdown { reply });
                    continue;
                }
            };
            let _ = reply.send(outcome);
        }
    }

    /// Keeps a waiter unless its caller gave up (e.g. `wait_ready` timed out).
    fn keep(&mut self, waiter: Waiter) {
        let closed = match &waiter {
            Waiter::Converged { reply, .. }
            | Waiter::Ready { reply, .. }
            | Waiter::Removed { reply, .. } => reply.is_closed(),
            Waiter::Shutdown { reply } => reply.is_closed(),
        };
        if !closed {
            self.waiters.push(waiter);
        }
    }

    /// Whether every replica runs (or has started) the spec with `hash`: `None` while not yet.
    fn converged(&self, service: &str, hash: &str) -> Option<Result<(), SupervisorError>> {
        let Some(svc) = self
            .services
            .get(service)
            .filter(|s| s.hash == hash && !s.removing)
        else {
            return Some(Err(SupervisorError::Superseded));
        };
        let mut done = true;
        for index in 0..svc.replicas {
            let id = InstanceId {
                service: service.to_owned(),
                instance: index,
            };
            match self.instances.get(&id) {
                Some(i) if i.hash == hash && !i.outdated && i.launched => {}
                Some(i) if i.hash == hash && !i.launched => {
                    if let Some(reason) = &i.last_spawn_error {
                        let reason = reason.clone();
                        return Some(Err(SupervisorError::Spawn { id, reason }));
                    }
                    done = false;
                }
                _ => done = false,
            }
        }
        let surplus = self
            .instances
            .keys()
            .any(|id| id.service == service && id.instance >= svc.replicas);
        (done && !surplus).then_some(Ok(()))
    }

    /// Whether every replica of the current spec is ready: `None` while not yet.
    fn ready(&self, service: &str) -> Option<Result<(), SupervisorError>> {
        let Some(svc) = self.services.get(service) else {
            return Some(Err(SupervisorError::UnknownService(service.to_owned())));
        };
        let all_ready = (0..svc.replicas).all(|index| {
            let id = InstanceId {
                service: service.to_owned(),
                instance: index,
            };
            self.instances.get(&id).is_some_and(|i| {
                i.hash == svc.hash && !i.outdated && i.ready && i.phase == Phase::Running
            })
        });
        all_ready.then_some(Ok(()))
    }

    /// Why `service` is not ready, instance by instance.
    fn diagnose(&self, service: &str) -> String {
        let Some(svc) = self.services.get(service) else {
            return "the service is not (or no longer) applied".to_owned();
        };
        let mut parts = Vec::new();
        for index in 0..svc.replicas {
            let id = InstanceId {
                service: service.to_owned(),
                instance: index,
            };
            let Some(instance) = self.instances.get(&id) else {
                parts.push(format!("{id}: not created"));
                continue;
            };
            if instance.ready && instance.hash == svc.hash {
                continue;
            }
            let mut text = format!("{id}: {:?}", instance.state());
            if let Some((kind, reason, recent)) = &instance.failing {
                text.push_str(&format!(
                    "; {kind} probe: {reason}; recent results: {}",
                    recent.join(" | ")
                ));
            }
            if let Some(error) = &instance.last_spawn_error {
                text.push_str(&format!("; cannot start: {error}"));
            }
            let lines = instance.log.last_lines();
            let tail = &lines[lines.len().saturating_sub(5)..];
            text.push_str(&format!("; last log lines: {}", tail.join(" / ")));
            parts.push(text);
        }
        parts.join("\n")
    }

    fn status(&self) -> Vec<InstanceStatus> {
        let groups = procfs::scan_groups();
        self.instances
            .values()
            .map(|i| {
                let usage = i
                    .proc
                    .as_ref()
                    .map(|p| procfs::group_usage_in(&groups, p.pid, p.start_ticks));
                let health = match (&i.failing, i.ready) {
                    (_, true) => "ready".to_owned(),
                    (Some((kind, reason, _)), false) => format!("{kind} failing: {reason}"),
                    (None, false) => "not ready".to_owned(),
                };
                InstanceStatus {
                    id: i.id.clone(),
                    pid: i.proc.as_ref().map(|p| p.pid),
                    start_ticks: i.proc.as_ref().map(|p| p.start_ticks),
                    port: Some(i.port),
                    state: i.state(),
                    health,
                    restarts: i.restarts,
                    uptime: i.proc.as_ref().map(|p| p.started_at.elapsed()),
                    cpu_seconds: usage.map(|u| u.0),
                    rss_bytes: usage.map(|u| u.1),
                    release: i.release.clone(),
                    limits_in_force: i.in_force,
                    adopted: i.adopted,
                }
            })
            .collect()
    }
}

/// Puts an exited instance into backoff and arms its restart timer; reports a crash loop once
/// restarts keep coming without a stable run in between.
fn schedule_restart(
    shared: &Shared,
    instance: &mut Instance,
    policy: &RestartPolicy,
    uptime: Duration,
) {
    let (attempt, delay) = instance.backoff.next(policy, uptime);
    instance.restarts += 1;
    let now = Instant::now();
    let window = policy.reset_after;
    instance
        .restart_times
        .retain(|t| now.duration_since(*t) < window);
    instance.restart_times.push(now);
    let restarts_in_window = u32::try_from(instance.restart_times.len()).unwrap_or(u32::MAX);
    instance.phase = Phase::Backoff {
        until: SystemTime::now() + delay,
        restarts_in_window,
    };
    let id = instance.id.clone();
    shared.emit(Event::Restarting {
        id: id.clone(),
        attempt,
        delay,
    });
    if instance.backoff.consecutive() >= CRASH_LOOP_RESTARTS {
        instance.log.write(
            Stream::Supervisor,
            &format!(
                "crash loop: {restarts_in_window} restarts in {window:?}; next try in {delay:?}"
            ),
        );
        shared.emit(Event::CrashLooping {
            id: id.clone(),
            restarts_in_window,
            window,
            next_try_in: delay,
        });
    }
    shared.after(
        delay,
        Internal::RestartDue {
            id,
            generation: instance.generation,
        },
    );
}
