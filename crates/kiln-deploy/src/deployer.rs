//! The deploy engine: moves a service to a new version by its strategy, over the supervisor
//! (which runs each version as its own set of instances, `service@version`) and the traffic
//! interface (which decides which sets serve). One deploy per service at a time.
//!
//! Invariants every strategy keeps:
//! - traffic only ever moves to instances that passed their readiness probe (and stayed
//!   ready for `min_healthy_time`);
//! - an instance leaves rotation and its requests in flight finish before it is stopped;
//! - a failed deploy never leaves traffic on the new version: with `auto_rollback` the old
//!   version is restored to its full size and the new one removed;
//! - a set kept idle after a blue-green switch is recorded (see [`crate::kept`]) while it is
//!   kept and forgotten when it is retired, so a restarted control plane takes back exactly
//!   the processes kept, out of traffic, until the original deadline.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use kiln_supervisor::{InstanceState, InstanceStatus, ServiceSpec, SupervisorHandle, service_of};

use crate::kept::{KeptInstance, KeptSet, KeptStore, Verdict};

use crate::strategy::{Canary, DeployConfig, Strategy};
use crate::traffic::{SetStats, Split, Traffic};

/// What to deploy.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// The service (a supervisor name without `@`).
    pub service: String,
    /// The version to run; its name is replaced by the set's (`service@version`).
    pub spec: ServiceSpec,
    pub config: DeployConfig,
}

/// How a deploy ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployResult {
    Succeeded,
    /// It failed and the new version was left as it was (`auto_rollback: false`).
    Failed {
        reason: String,
    },
    /// It failed and the previous version was restored.
    RolledBack {
        reason: String,
    },
}

impl DeployResult {
    /// `succeeded`, `failed` or `rolled-back`.
    pub fn name(&self) -> &'static str {
        match self {
            DeployResult::Succeeded => "succeeded",
            DeployResult::Failed { .. } => "failed",
            DeployResult::RolledBack { .. } => "rolled-back",
        }
    }
}

/// The account of one deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployReport {
    /// The strategy used: `initial` (nothing ran before), `in-place` (same version, e.g. a
    /// replica change), `switch-back` (instant return to a kept blue-green set), or the
    /// configured one.
    pub strategy: String,
    /// The new version's set.
    pub set: String,
    /// The sets that served before.
    pub previous: Vec<String>,
    /// What happened, in order, for the record and the error message.
    pub steps: Vec<String>,
    pub result: DeployResult,
    pub duration: Duration,
}

/// Per-service memory of the deployer: sets kept idle after a blue-green switch.
#[derive(Debug, Default)]
struct Kept {
    sets: Vec<String>,
    /// Bumped by every deploy, so a retirement timer of an older deploy does nothing.
    generation: u64,
    /// Sets that were kept but did not survive a restart of the control plane, with why: a
    /// deploy back to one says it cannot switch back instantly.
    lost: BTreeMap<String, String>,
}

/// What became of a kept set recorded by a previous control plane (see
/// [`Deployer::restore_kept`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeptRestore {
    /// Adopted, idle, until its original deadline.
    Kept {
        service: String,
        set: String,
        pids: Vec<u32>,
        remaining: Duration,
    },
    /// Its deadline passed meanwhile; stopped.
    Expired { service: String, set: String },
    /// Not every instance survived as it was; what was left is stopped.
    Lost {
        service: String,
        set: String,
        reason: String,
    },
    /// The set it was kept beside no longer serves (the service changed or is gone); stopped.
    Superseded { service: String, set: String },
    /// The records could not be read or written.
    Unrecorded { reason: String },
}

/// Deploys services; cheap to share (`Arc`).
#[derive(Debug)]
pub struct Deployer {
    supervisor: SupervisorHandle,
    traffic: Arc<dyn Traffic>,
    locks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    kept: Mutex<BTreeMap<String, Kept>>,
    /// Where kept sets are recorded to survive a restart (none: they live in memory only).
    store: Option<Arc<dyn KeptStore>>,
}

/// The set name of a version: `service@` and eight hex digits of its spec's hash.
pub fn set_name(service: &str, spec: &ServiceSpec) -> String {
    let mut shape = spec.clone();
    shape.name = service.to_owned();
    let hash = shape.spec_hash();
    format!("{service}@{}", &hash[..8.min(hash.len())])
}

type Failure = String;

/// A service's sets and their instances.
type Sets = BTreeMap<String, Vec<InstanceStatus>>;

impl Deployer {
    pub fn new(supervisor: SupervisorHandle, traffic: Arc<dyn Traffic>) -> Arc<Deployer> {
        Self::build(supervisor, traffic, None)
    }

    /// A deployer that records the sets it keeps in `store`, so that
    /// [`Deployer::restore_kept`] can take them back after a restart.
    pub fn with_store(
        supervisor: SupervisorHandle,
        traffic: Arc<dyn Traffic>,
        store: Arc<dyn KeptStore>,
    ) -> Arc<Deployer> {
        Self::build(supervisor, traffic, Some(store))
    }

    fn build(
        supervisor: SupervisorHandle,
        traffic: Arc<dyn Traffic>,
        store: Option<Arc<dyn KeptStore>>,
    ) -> Arc<Deployer> {
        Arc::new(Deployer {
            supervisor,
            traffic,
            locks: Mutex::new(BTreeMap::new()),
            kept: Mutex::new(BTreeMap::new()),
            store,
        })
    }

    pub fn supervisor(&self) -> &SupervisorHandle {
        &self.supervisor
    }

    pub fn traffic(&self) -> &dyn Traffic {
        self.traffic.as_ref()
    }

    fn lock_for(&self, service: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(service.to_owned()).or_default().clone()
    }

    /// Every set of `service` that has instances, with them (sorted by index).
    pub async fn sets(&self, service: &str) -> BTreeMap<String, Vec<InstanceStatus>> {
        let mut sets: BTreeMap<String, Vec<InstanceStatus>> = BTreeMap::new();
        for instance in self.supervisor.status().await {
            if service_of(&instance.id.service) == service && instance.id.service != service {
                sets.entry(instance.id.service.clone())
                    .or_default()
                    .push(instance);
            }
        }
        for instances in sets.values_mut() {
            instances.sort_by_key(|i| i.id.instance);
        }
        sets
    }

    /// Stops every set of `service` and forgets it.
    pub async fn remove(&self, service: &str) -> Result<(), kiln_supervisor::SupervisorError> {
        let lock = self.lock_for(service);
        let _held = lock.lock().await;
        let had_kept = self.kept_mut(service, |k| {
            k.generation += 1;
            !std::mem::take(&mut k.sets).is_empty()
        });
        if had_kept {
            // Not recording it only leaves a record that the next start finds superseded.
            let _ = self.record_kept(service, Vec::new()).await;
        }
        let names: Vec<String> = self.sets(service).await.into_keys().collect();
        let removals = names.iter().map(|n| self.supervisor.remove(n));
        for outcome in futures_util::future::join_all(removals).await {
            match outcome {
                Ok(()) | Err(kiln_supervisor::SupervisorError::UnknownService(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.traffic.split(service, Split::All).await;
        self.traffic.unexpose(service).await;
        Ok(())
    }

    fn kept_mut<R>(&self, service: &str, f: impl FnOnce(&mut Kept) -> R) -> R {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        f(kept.entry(service.to_owned()).or_default())
    }

    /// The sets of `service` kept idle for an instant switch back (they serve no traffic).
    pub fn kept_sets(&self, service: &str) -> Vec<String> {
        self.kept_mut(service, |k| k.sets.clone())
    }

    /// Records what is kept for `service` (nothing, when `sets` is empty).
    async fn record_kept(&self, service: &str, sets: Vec<KeptSet>) -> Result<(), String> {
        match &self.store {
            Some(store) => store.save(service, sets).await,
            None => Ok(()),
        }
    }

    /// Stops `sets` of `service` once `delay` has passed, unless a deploy came in between.
    fn retire_later(self: &Arc<Self>, service: String, generation: u64, delay: Duration) {
        let deployer = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let lock = deployer.lock_for(&service);
            let _held = lock.lock().await;
            let retired = deployer.kept_mut(&service, |k| {
                if k.generation == generation {
                    std::mem::take(&mut k.sets)
                } else {
                    Vec::new()
                }
            });
            if retired.is_empty() {
                return;
            }
            for name in &retired {
                let _ = deployer.supervisor.remove(name).await;
            }
            deployer.traffic.split(&service, Split::All).await;
            let _ = deployer.record_kept(&service, Vec::new()).await;
        });
    }

    /// Takes back the sets a previous control plane kept idle (call once the first apply has
    /// adopted what serves). A set whose every instance is still the very process kept is
    /// adopted out of traffic and stopped at its original deadline; one that expired, lost an
    /// instance, or whose serving set no longer serves is stopped. Every record is settled:
    /// rewritten for what was kept, removed otherwise.
    pub async fn restore_kept(self: &Arc<Self>, now: SystemTime) -> Vec<KeptRestore> {
        let Some(store) = &self.store else {
            return Vec::new();
        };
        let records = match store.load().await {
            Ok(records) => records,
            Err(reason) => return vec![KeptRestore::Unrecorded { reason }],
        };
        let mut by_service: BTreeMap<String, Vec<KeptSet>> = BTreeMap::new();
        for record in records {
            by_service
                .entry(record.service.clone())
                .or_default()
                .push(record);
        }
        let orphans = self.supervisor.orphans().await;
        let mut outcomes = Vec::new();
        for (service, records) in by_service {
            let lock = self.lock_for(&service);
            let _held = lock.lock().await;
            let sets = self.sets(&service).await;
            let mut kept: Vec<KeptSet> = Vec::new();
            for record in records {
                let set = record.set.clone();
                let serving = sets
                    .get(&record.serving)
                    .is_some_and(|instances| !instances.is_empty());
                let outcome = match crate::kept::judge(&record, &orphans, now) {
                    Verdict::Adopt { .. } if serving => {
                        kept.push(record);
                        continue;
                    }
                    Verdict::Adopt { .. } => KeptRestore::Superseded {
                        service: service.clone(),
                        set: set.clone(),
                    },
                    Verdict::Expired => KeptRestore::Expired {
                        service: service.clone(),
                        set: set.clone(),
                    },
                    Verdict::Lost { reason } => {
                        self.kept_mut(&service, |k| k.lost.insert(set.clone(), reason.clone()));
                        KeptRestore::Lost {
                            service: service.clone(),
                            set: set.clone(),
                            reason,
                        }
                    }
                };
                // Stops the survivors (orphans are killed by a removal of their set).
                let _ = self.supervisor.remove(&set).await;
                outcomes.push(outcome);
            }
            outcomes.extend(self.adopt_kept(&service, &kept).await);
            if let Err(reason) = self.record_kept(&service, kept).await {
                outcomes.push(KeptRestore::Unrecorded { reason });
            }
        }
        outcomes
    }

    /// Adopts kept sets out of traffic: the split is set before the apply that adopts them.
    async fn adopt_kept(self: &Arc<Self>, service: &str, kept: &[KeptSet]) -> Vec<KeptRestore> {
        let Some(first) = kept.first() else {
            return Vec::new();
        };
        let mut weights = vec![(first.serving.clone(), 1)];
        weights.extend(kept.iter().map(|k| (k.set.clone(), 0)));
        self.traffic
            .split(
                service,
                Split::Weighted {
                    sets: weights,
                    sticky: false,
                },
            )
            .await;
        let remaining = |expires_at_ms: u64| {
            Duration::from_millis(
                expires_at_ms.saturating_sub(crate::kept::epoch_ms(SystemTime::now())),
            )
        };
        let mut outcomes = Vec::new();
        let mut names = Vec::new();
        for record in kept {
            match self.supervisor.apply(record.spec.clone()).await {
                Ok(()) => {
                    names.push(record.set.clone());
                    outcomes.push(KeptRestore::Kept {
                        service: service.to_owned(),
                        set: record.set.clone(),
                        pids: record.instances.iter().map(|i| i.pid).collect(),
                        remaining: remaining(record.expires_at_ms),
                    });
                }
                Err(e) => {
                    let _ = self.supervisor.remove(&record.set).await;
                    outcomes.push(KeptRestore::Lost {
                        service: service.to_owned(),
                        set: record.set.clone(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        let generation = self.kept_mut(service, |k| {
            k.generation += 1;
            k.sets = names;
            k.generation
        });
        // The original deadline, not a fresh `keep_old` from now.
        let deadline = kept.iter().map(|k| k.expires_at_ms).max().unwrap_or(0);
        self.retire_later(service.to_owned(), generation, remaining(deadline));
        outcomes
    }

    /// Stops every kept set now and forgets it, records included (a graceful shutdown stops
    /// every process, so nothing is left to switch back to).
    pub async fn release_kept(&self) {
        let services: Vec<String> = {
            let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            kept.iter()
                .filter(|(_, k)| !k.sets.is_empty())
                .map(|(service, _)| service.clone())
                .collect()
        };
        for service in services {
            let lock = self.lock_for(&service);
            let _held = lock.lock().await;
            let sets = self.kept_mut(&service, |k| {
                k.generation += 1;
                std::mem::take(&mut k.sets)
            });
            for set in &sets {
                let _ = self.supervisor.remove(set).await;
            }
            let _ = self.record_kept(&service, Vec::new()).await;
        }
    }

    /// Runs one deploy to completion (or rollback); never leaves the lock held.
    pub async fn deploy(self: &Arc<Self>, request: DeployRequest) -> DeployReport {
        let lock = self.lock_for(&request.service);
        let _held = lock.lock().await;
        let started = Instant::now();
        let mut run = Run {
            deployer: self,
            service: request.service.clone(),
            set: set_name(&request.service, &request.spec),
            config: request.config.clone(),
            steps: Vec::new(),
        };
        let mut spec = request.spec;
        spec.name = run.set.clone();
        let (strategy, previous, result) = run.execute(spec).await;
        DeployReport {
            strategy,
            set: run.set,
            previous,
            steps: run.steps,
            result,
            duration: started.elapsed(),
        }
    }
}

/// One deploy in progress.
struct Run<'a> {
    deployer: &'a Arc<Deployer>,
    service: String,
    set: String,
    config: DeployConfig,
    steps: Vec<String>,
}

impl Run<'_> {
    fn step(&mut self, text: impl Into<String>) {
        self.steps.push(text.into());
    }

    fn supervisor(&self) -> &SupervisorHandle {
        &self.deployer.supervisor
    }

    fn traffic(&self) -> &dyn Traffic {
        self.deployer.traffic.as_ref()
    }

    /// Splits the service's traffic over these sets by weight.
    async fn weigh(&self, sets: Vec<(String, u32)>, sticky: bool) {
        self.traffic()
            .split(&self.service, Split::Weighted { sets, sticky })
            .await;
    }

    async fn execute(&mut self, spec: ServiceSpec) -> (String, Vec<String>, DeployResult) {
        let n = spec.replicas;
        let (kept, lost) = self.deployer.kept_mut(&self.service, |k| {
            k.generation += 1;
            (std::mem::take(&mut k.sets), std::mem::take(&mut k.lost))
        });
        if !kept.is_empty()
            && let Err(e) = self.deployer.record_kept(&self.service, Vec::new()).await
        {
            self.step(format!("could not record that no set is kept: {e}"));
        }
        if let Some(reason) = lost.get(&self.set) {
            self.step(format!(
                "no instant switch back: {} was kept idle for it but did not survive the restart of kiln ({reason}); deploying it again",
                self.set
            ));
        }
        let mut sets = self.deployer.sets(&self.service).await;
        let previous: Vec<String> = sets.keys().filter(|s| **s != self.set).cloned().collect();

        // Back to a set kept idle by a blue-green deploy: an instant switch. One taken back
        // after a restart of kiln may still be passing its first probes: wait for them.
        let whole = |sets: &Sets| sets.get(&self.set).is_some_and(|i| i.len() as u32 == n);
        if kept.contains(&self.set)
            && whole(&sets)
            && !sets.get(&self.set).is_some_and(|i| i.iter().all(ready))
            && self
                .supervisor()
                .wait_ready(&self.set, self.config.healthy_deadline)
                .await
                .is_ok()
        {
            sets = self.deployer.sets(&self.service).await;
        }
        if kept.contains(&self.set)
            && whole(&sets)
            && sets.get(&self.set).is_some_and(|i| i.iter().all(ready))
        {
            let result = self.switch_back(&sets).await;
            return ("switch-back".into(), previous, result);
        }
        // Sets kept idle for a rollback that is not this one: retire them first.
        let current = self.set.clone();
        for name in kept.iter().filter(|s| **s != current) {
            if sets.remove(name).is_some() {
                self.step(format!("retired idle set {name}"));
                let _ = self.supervisor().remove(name).await;
            }
        }
        self.traffic().split(&self.service, Split::All).await;
        let old: Vec<(String, u32)> = sets
            .iter()
            .filter(|(name, _)| **name != self.set)
            .map(|(name, instances)| (name.clone(), instances.len() as u32))
            .filter(|(_, count)| *count > 0)
            .collect();
        let existing = sets.get(&self.set).map_or(0, |i| i.len() as u32);

        if old.is_empty() {
            let label = if existing > 0 { "in-place" } else { "initial" };
            let result = self.in_place(spec).await;
            return (label.into(), previous, result);
        }
        let strategy = self.config.strategy.clone();
        let result = match &strategy {
            Strategy::Rolling {
                max_surge,
                max_unavailable,
            } => {
                self.rolling(spec, existing, old, *max_surge, *max_unavailable)
                    .await
            }
            Strategy::BlueGreen { keep_old } => self.blue_green(spec, old, *keep_old).await,
            Strategy::Canary(canary) => self.canary(spec, existing, old, canary).await,
        };
        (strategy.name().into(), previous, result)
    }

    /// No other version runs: start (or resize) this one and wait until it is healthy.
    async fn in_place(&mut self, spec: ServiceSpec) -> DeployResult {
        let n = spec.replicas;
        if let Err(e) = self.supervisor().apply(spec).await {
            return DeployResult::Failed {
                reason: e.to_string(),
            };
        }
        self.step(format!("started {} with {n} instance(s)", self.set));
        if n == 0 {
            return DeployResult::Succeeded;
        }
        match self.healthy(&self.set.clone()).await {
            Ok(()) => DeployResult::Succeeded,
            Err(reason) => DeployResult::Failed { reason },
        }
    }

    /// Waits until every instance of `set` is ready, then that it stays so for
    /// `min_healthy_time` without a restart.
    async fn healthy(&mut self, set: &str) -> Result<(), Failure> {
        self.supervisor()
            .wait_ready(set, self.config.healthy_deadline)
            .await
            .map_err(|e| e.to_string())?;
        if self.config.min_healthy_time.is_zero() {
            return Ok(());
        }
        let before = self.deployer.sets(&self.service).await;
        tokio::time::sleep(self.config.min_healthy_time).await;
        let after = self.deployer.sets(&self.service).await;
        let (Some(before), Some(after)) = (before.get(set), after.get(set)) else {
            return Err(format!("{set} disappeared while proving itself healthy"));
        };
        for instance in after {
            let restarts_before = before
                .iter()
                .find(|b| b.id == instance.id)
                .map_or(0, |b| b.restarts);
            if !ready(instance) || instance.restarts != restarts_before {
                return Err(format!(
                    "{} did not stay healthy for {} ms (state {:?}, {}, restarts {})",
                    instance.id,
                    self.config.min_healthy_time.as_millis(),
                    instance.state,
                    instance.health,
                    instance.restarts
                ));
            }
        }
        Ok(())
    }

    /// Takes the highest-numbered instance of the largest old set out of rotation, waits for
    /// its requests to finish, and stops it.
    async fn retire_one(&mut self, old: &mut [(String, u32)]) -> Result<(), Failure> {
        let Some((name, count)) = old
            .iter_mut()
            .filter(|(_, c)| *c > 0)
            .max_by_key(|(_, c)| *c)
        else {
            return Ok(());
        };
        let id = format!("{name}/{}", *count - 1);
        self.deployer
            .traffic
            .drain(vec![id.clone()], self.config.drain_timeout)
            .await;
        *count -= 1;
        let (name, count) = (name.clone(), *count);
        self.supervisor()
            .scale(&name, count)
            .await
            .map_err(|e| format!("cannot stop {id}: {e}"))?;
        self.step(format!("drained and stopped {id}"));
        Ok(())
    }

    async fn rolling(
        &mut self,
        mut spec: ServiceSpec,
        existing: u32,
        mut old: Vec<(String, u32)>,
        max_surge: u32,
        max_unavailable: u32,
    ) -> DeployResult {
        let n = spec.replicas;
        let original = old.clone();
        let (surge, unavailable) = if max_surge == 0 && max_unavailable == 0 {
            (1, 0)
        } else {
            (max_surge, max_unavailable)
        };
        spec.replicas = existing.min(n);
        let mut new_count = spec.replicas;
        if let Err(e) = self.supervisor().apply(spec).await {
            return self.fail(e.to_string(), &original).await;
        }
        let total_old: u32 = old.iter().map(|(_, c)| c).sum();
        // Each pass adds or removes at least one instance, so this bound is never reached by
        // a deploy that progresses.
        for _ in 0..(2 * (n + total_old) + 4) {
            let old_total: u32 = old.iter().map(|(_, c)| c).sum();
            if new_count >= n && old_total == 0 {
                break;
            }
            let mut progressed = false;
            let target = n.min((n + surge).saturating_sub(old_total));
            if target > new_count {
                if let Err(e) = self.supervisor().scale(&self.set, target).await {
                    return self.fail(e.to_string(), &original).await;
                }
                self.step(format!("scaled {} to {target}", self.set));
                new_count = target;
                progressed = true;
                let set = self.set.clone();
                if let Err(reason) = self.healthy(&set).await {
                    return self.fail(reason, &original).await;
                }
            }
            let keep = n.saturating_sub(unavailable);
            let removable = (old_total + new_count).saturating_sub(keep).min(old_total);
            for _ in 0..removable {
                if let Err(reason) = self.retire_one(&mut old).await {
                    return self.fail(reason, &original).await;
                }
                progressed = true;
            }
            if !progressed {
                return self
                    .fail(
                        "the rolling update cannot progress with these max_surge and max_unavailable"
                            .into(),
                        &original,
                    )
                    .await;
            }
        }
        for (name, _) in &original {
            let _ = self.supervisor().remove(name).await;
        }
        self.step("removed the previous version's sets");
        DeployResult::Succeeded
    }

    async fn blue_green(
        &mut self,
        spec: ServiceSpec,
        old: Vec<(String, u32)>,
        keep_old: Duration,
    ) -> DeployResult {
        // The new set must not get traffic before the switch.
        self.weigh(old.clone(), false).await;
        let n = spec.replicas;
        if let Err(e) = self.supervisor().apply(spec).await {
            return self.fail(e.to_string(), &old).await;
        }
        self.step(format!("started {} with {n} instance(s), idle", self.set));
        let set = self.set.clone();
        if let Err(reason) = self.healthy(&set).await {
            return self.fail(reason, &old).await;
        }
        self.cut_over(&old, keep_old, "switched all traffic to")
            .await;
        DeployResult::Succeeded
    }

    /// Sends all traffic to the new set at once, drains the old sets, then removes them (or
    /// keeps them idle for `keep_old`, for an instant switch back).
    async fn cut_over(&mut self, old: &[(String, u32)], keep_old: Duration, what: &str) {
        let mut weights = vec![(self.set.clone(), 1)];
        weights.extend(old.iter().map(|(name, _)| (name.clone(), 0)));
        self.weigh(weights, false).await;
        self.step(format!("{what} {}", self.set));
        self.drain_sets(old).await;
        if keep_old.is_zero() {
            for (name, _) in old {
                let _ = self.supervisor().remove(name).await;
            }
            self.traffic().split(&self.service, Split::All).await;
            self.step("removed the previous version's sets");
        } else {
            self.keep(old.iter().map(|(name, _)| name.clone()).collect(), keep_old)
                .await;
        }
    }

    /// Keeps idle sets for a while so that a rollback is an instant switch, then retires them.
    /// They are recorded (spec, instances, deadline) so that a restarted control plane takes
    /// them back.
    async fn keep(&mut self, sets: Vec<String>, keep_old: Duration) {
        self.step(format!(
            "keeping {} idle for {} s for an instant rollback",
            sets.join(", "),
            keep_old.as_secs()
        ));
        let expires_at_ms = crate::kept::epoch_ms(SystemTime::now() + keep_old);
        let running = self.deployer.sets(&self.service).await;
        let mut records = Vec::new();
        for set in &sets {
            let Some(spec) = self.supervisor().spec(set).await else {
                continue;
            };
            let instances = running.get(set).map_or_else(Vec::new, |instances| {
                instances
                    .iter()
                    .filter_map(|i| {
                        Some(KeptInstance {
                            instance: i.id.instance,
                            pid: i.pid?,
                            start_ticks: i.start_ticks?,
                            port: i.port?,
                        })
                    })
                    .collect()
            });
            records.push(KeptSet {
                service: self.service.clone(),
                set: set.clone(),
                serving: self.set.clone(),
                spec,
                instances,
                expires_at_ms,
            });
        }
        let generation = self.deployer.kept_mut(&self.service, |k| {
            k.sets = sets;
            k.generation
        });
        if let Err(e) = self.deployer.record_kept(&self.service, records).await {
            self.step(format!(
                "could not record the kept set, so a restart of kiln stops it: {e}"
            ));
        }
        self.deployer
            .retire_later(self.service.clone(), generation, keep_old);
    }

    async fn switch_back(&mut self, sets: &Sets) -> DeployResult {
        let others: Vec<(String, u32)> = sets
            .iter()
            .filter(|(name, _)| **name != self.set)
            .map(|(name, i)| (name.clone(), i.len() as u32))
            .collect();
        let keep_old = match self.config.strategy {
            Strategy::BlueGreen { keep_old } => keep_old,
            _ => Duration::ZERO,
        };
        self.cut_over(
            &others,
            keep_old,
            "switched all traffic back to the idle set",
        )
        .await;
        DeployResult::Succeeded
    }

    async fn drain_sets(&mut self, sets: &[(String, u32)]) {
        let ids: Vec<String> = sets
            .iter()
            .flat_map(|(name, count)| (0..*count).map(move |i| format!("{name}/{i}")))
            .collect();
        if !ids.is_empty() {
            self.traffic().drain(ids, self.config.drain_timeout).await;
            self.step(format!(
                "drained {}",
                sets.iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }

    async fn canary(
        &mut self,
        mut spec: ServiceSpec,
        existing: u32,
        old: Vec<(String, u32)>,
        canary: &Canary,
    ) -> DeployResult {
        let n = spec.replicas;
        let routed = self.traffic().routed(&self.service);
        // The canary gets its share from its first step, never before: unpinned, a ready
        // instance of it would join the stable side (and a broken one be ejected there, which
        // would then hide it from its own step's analysis).
        self.weigh(old.clone(), true).await;
        spec.replicas = existing.min(n);
        let mut new_count = spec.replicas;
        if let Err(e) = self.supervisor().apply(spec).await {
            return self.fail(e.to_string(), &old).await;
        }
        let old_total: u32 = old.iter().map(|(_, c)| c).sum::<u32>().max(1);
        for &percent in &canary.steps {
            let want = (n * percent).div_ceil(100).clamp(1, n.max(1));
            if want > new_count {
                if let Err(e) = self.supervisor().scale(&self.set, want).await {
                    return self.fail(e.to_string(), &old).await;
                }
                new_count = want;
                let set = self.set.clone();
                if let Err(reason) = self.healthy(&set).await {
                    return self.fail(reason, &old).await;
                }
            }
            let mut weights: Vec<(String, u32)> = old
                .iter()
                .map(|(name, count)| (name.clone(), (100 - percent) * count / old_total))
                .collect();
            weights.push((self.set.clone(), percent));
            self.weigh(weights, true).await;
            let before = self.deployer.sets(&self.service).await;
            let step_stats = self.traffic().stats(&self.service).await;
            // The first third of the pause is a warm-up (a new process is slow at first: cold
            // caches, a JIT): its latency is left out of the comparison, its errors are not.
            let warmup = canary.pause / 3;
            tokio::time::sleep(warmup).await;
            let warm_stats = self.traffic().stats(&self.service).await;
            tokio::time::sleep(canary.pause.saturating_sub(warmup)).await;
            let mut after_stats = self.traffic().stats(&self.service).await;
            // Too few canary requests to judge: keep watching, up to four more pauses, rather
            // than decide on a handful (a slow or quiet service). An ejection is already a
            // verdict: an ejected canary gets no more requests to count.
            for _ in 0..EXTRA_PAUSES {
                let seen = set_delta(&after_stats, &step_stats, &self.set);
                if !routed || seen.requests >= canary.min_requests || seen.ejections > 0 {
                    break;
                }
                tokio::time::sleep(canary.pause).await;
                after_stats = self.traffic().stats(&self.service).await;
            }
            let after = self.deployer.sets(&self.service).await;
            let verdict = self.analyse(
                canary,
                routed,
                &old,
                StepStats {
                    start: &step_stats,
                    warm: &warm_stats,
                    end: &after_stats,
                },
                (&before, &after),
            );
            match verdict {
                Ok(text) => self.step(format!("{percent}% to {}: {text}", self.set)),
                Err(reason) => {
                    let reason = format!("canary analysis at {percent}%: {reason}");
                    return self.fail(reason, &old).await;
                }
            }
        }
        // Promote.
        if new_count < n {
            if let Err(e) = self.supervisor().scale(&self.set, n).await {
                return self.fail(e.to_string(), &old).await;
            }
            let set = self.set.clone();
            if let Err(reason) = self.healthy(&set).await {
                return self.fail(reason, &old).await;
            }
        }
        self.cut_over(&old, Duration::ZERO, "promoted to all traffic:")
            .await;
        DeployResult::Succeeded
    }

    /// Judges one canary step: health first, then traffic against the stable side.
    fn analyse(
        &self,
        canary: &Canary,
        routed: bool,
        old: &[(String, u32)],
        stats: StepStats<'_>,
        sets: (&Sets, &Sets),
    ) -> Result<String, Failure> {
        let (before, after) = sets;
        for instance in after.get(&self.set).map(Vec::as_slice).unwrap_or_default() {
            let restarts_before = before
                .get(&self.set)
                .and_then(|i| i.iter().find(|b| b.id == instance.id))
                .map_or(0, |b| b.restarts);
            if instance.restarts > restarts_before {
                return Err(format!(
                    "{} restarted during the pause ({} restart(s))",
                    instance.id,
                    instance.restarts - restarts_before
                ));
            }
            if !ready(instance) {
                return Err(format!("{} is not ready: {}", instance.id, instance.health));
            }
        }
        if !routed {
            return Ok("healthy (no route: health only)".into());
        }
        judge_traffic(canary, &self.set, old, &stats)
    }

    /// A failed deploy: back to the old sets at their original size (with `auto_rollback`),
    /// or left where it stopped.
    async fn fail(&mut self, reason: String, original: &[(String, u32)]) -> DeployResult {
        self.step(format!("failed: {reason}"));
        if !self.config.auto_rollback {
            // Traffic stays on the old version whatever the strategy did so far.
            if !original.is_empty() {
                let mut weights: Vec<(String, u32)> = original.to_vec();
                weights.push((self.set.clone(), 0));
                if !matches!(self.config.strategy, Strategy::Rolling { .. }) {
                    self.weigh(weights, false).await;
                }
            }
            return DeployResult::Failed { reason };
        }
        for (name, count) in original {
            if let Err(e) = self.supervisor().scale(name, *count).await {
                self.step(format!("cannot restore {name}: {e}"));
            }
        }
        let mut weights: Vec<(String, u32)> = original.to_vec();
        weights.push((self.set.clone(), 0));
        self.weigh(weights, false).await;
        let current: Vec<(String, u32)> = self
            .deployer
            .sets(&self.service)
            .await
            .get(&self.set)
            .map(|i| vec![(self.set.clone(), i.len() as u32)])
            .unwrap_or_default();
        self.drain_sets(&current).await;
        let _ = self.supervisor().remove(&self.set).await;
        self.traffic().split(&self.service, Split::All).await;
        for (name, _) in original {
            if let Err(e) = self
                .supervisor()
                .wait_ready(name, self.config.healthy_deadline)
                .await
            {
                self.step(format!("the restored {name} is not healthy: {e}"));
            }
        }
        self.step(format!(
            "rolled back to {}",
            original
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        DeployResult::RolledBack { reason }
    }
}

/// How many more pauses a canary step waits for `min_requests` before judging on health only.
const EXTRA_PAUSES: u32 = 4;

/// The traffic half of a canary step's verdict: the canary set against the previous version's.
/// Errors and ejections count over the whole step; latency only after the warm-up.
fn judge_traffic(
    canary: &Canary,
    set: &str,
    old: &[(String, u32)],
    stats: &StepStats<'_>,
) -> Result<String, Failure> {
    let new = set_delta(stats.end, stats.start, set);
    let stable = old_sets_delta(stats.end, stats.start, old);
    let new_warm = set_delta(stats.end, stats.warm, set);
    let stable_warm = old_sets_delta(stats.end, stats.warm, old);
    if new.ejections > 0 {
        return Err(format!(
            "the ingress ejected a canary endpoint {} time(s) after consecutive failures \
             (error ratio {:.2}% over {} requests vs {:.2}% on the stable version)",
            new.ejections,
            new.error_ratio() * 100.0,
            new.requests,
            stable.error_ratio() * 100.0
        ));
    }
    if new.requests < canary.min_requests {
        return Ok(format!(
            "healthy; traffic analysis inconclusive ({} canary request(s), {} needed; {} on the stable version)",
            new.requests, canary.min_requests, stable.requests
        ));
    }
    let (new_errors, stable_errors) = (new.error_ratio(), stable.error_ratio());
    if new_errors > stable_errors + canary.max_error_increase {
        return Err(format!(
            "error ratio {:.2}% over {} requests vs {:.2}% on the stable version (allowed: +{:.2} points)",
            new_errors * 100.0,
            new.requests,
            stable_errors * 100.0,
            canary.max_error_increase * 100.0
        ));
    }
    let (new_p99, stable_p99) = (new_warm.quantile(0.99), stable_warm.quantile(0.99));
    if let (Some(n99), Some(s99)) = (new_p99, stable_p99)
        && n99 > s99 * canary.max_latency_ratio
        && n99 - s99 > canary.latency_slack.as_secs_f64()
    {
        return Err(format!(
            "p99 latency {:.1} ms vs {:.1} ms on the stable version (allowed: ×{} and +{} ms)",
            n99 * 1000.0,
            s99 * 1000.0,
            canary.max_latency_ratio,
            canary.latency_slack.as_millis()
        ));
    }
    Ok(format!(
        "error ratio {:.2}% vs {:.2}%, p99 {} vs {} over {} requests",
        new_errors * 100.0,
        stable_errors * 100.0,
        ms(new_p99),
        ms(stable_p99),
        new.requests
    ))
}

/// Ingress statistics at three moments of a canary step.
struct StepStats<'a> {
    /// When the step's weights took effect.
    start: &'a BTreeMap<String, SetStats>,
    /// After the warm-up.
    warm: &'a BTreeMap<String, SetStats>,
    end: &'a BTreeMap<String, SetStats>,
}

/// What one set did between two snapshots.
fn set_delta(
    after: &BTreeMap<String, SetStats>,
    before: &BTreeMap<String, SetStats>,
    set: &str,
) -> SetStats {
    let now = after.get(set).cloned().unwrap_or_default();
    let then = before.get(set).cloned().unwrap_or_default();
    now.since(&then)
}

/// What the previous version's sets did together between two snapshots.
fn old_sets_delta(
    after: &BTreeMap<String, SetStats>,
    before: &BTreeMap<String, SetStats>,
    old: &[(String, u32)],
) -> SetStats {
    let mut stable = SetStats::default();
    for (name, _) in old {
        let d = set_delta(after, before, name);
        stable.requests += d.requests;
        stable.errors += d.errors;
        stable.ejections += d.ejections;
        if stable.latency.is_empty() {
            stable.latency = d.latency;
        } else {
            for (slot, (_, count)) in stable.latency.iter_mut().zip(d.latency) {
                slot.1 += count;
            }
        }
    }
    stable
}

fn ready(instance: &InstanceStatus) -> bool {
    instance.state == InstanceState::Ready
}

fn ms(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "-".into(), |s| format!("{:.1} ms", s * 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A set's cumulative stats: `fast` requests under 10 ms, `slow` ones under 1 s.
    fn stats(fast: u64, slow: u64, errors: u64, ejections: u64) -> SetStats {
        SetStats {
            requests: fast + slow,
            errors,
            ejections,
            latency: vec![(0.01, fast), (1.0, slow), (f64::INFINITY, 0)],
        }
    }

    fn at(canary: SetStats, stable: SetStats) -> BTreeMap<String, SetStats> {
        BTreeMap::from([
            ("app@new".to_owned(), canary),
            ("app@old".to_owned(), stable),
        ])
    }

    fn judge(
        start: &BTreeMap<String, SetStats>,
        warm: &BTreeMap<String, SetStats>,
        end: &BTreeMap<String, SetStats>,
    ) -> Result<String, Failure> {
        let canary = Canary {
            min_requests: 5,
            ..Canary::default()
        };
        let old = [("app@old".to_owned(), 2)];
        judge_traffic(&canary, "app@new", &old, &StepStats { start, warm, end })
    }

    #[test]
    fn a_canary_ejected_during_the_warm_up_fails_though_it_then_got_no_requests() {
        let start = at(stats(0, 0, 0, 0), stats(100, 0, 0, 0));
        // Five 503s in the warm-up, then the ingress took it out of rotation.
        let warm = at(stats(5, 0, 5, 1), stats(150, 0, 0, 0));
        let end = at(stats(5, 0, 5, 1), stats(400, 0, 0, 0));
        let verdict = judge(&start, &warm, &end).unwrap_err();
        assert!(verdict.contains("ejected"), "{verdict}");
        assert!(verdict.contains("error ratio 100.00%"), "{verdict}");
    }

    #[test]
    fn warm_up_errors_count_but_warm_up_latency_does_not() {
        let start = at(stats(0, 0, 0, 0), stats(0, 0, 0, 0));
        // Slow and failing in the warm-up only: errors judge the whole step.
        let warm = at(stats(0, 10, 4, 0), stats(40, 0, 0, 0));
        let end = at(stats(30, 10, 4, 0), stats(200, 0, 0, 0));
        let verdict = judge(&start, &warm, &end).unwrap_err();
        assert!(
            verdict.starts_with("error ratio 10.00% over 40"),
            "{verdict}"
        );
        // Slow in the warm-up, fine after: healthy.
        let warm = at(stats(0, 10, 0, 0), stats(40, 0, 0, 0));
        let end = at(stats(30, 10, 0, 0), stats(200, 0, 0, 0));
        let verdict = judge(&start, &warm, &end).unwrap();
        assert!(verdict.contains("over 40 requests"), "{verdict}");
    }

    #[test]
    fn slow_after_the_warm_up_fails_and_too_few_requests_is_inconclusive() {
        let start = at(stats(0, 0, 0, 0), stats(0, 0, 0, 0));
        let warm = at(stats(0, 0, 0, 0), stats(50, 0, 0, 0));
        let end = at(stats(0, 30, 0, 0), stats(300, 0, 0, 0));
        let verdict = judge(&start, &warm, &end).unwrap_err();
        assert!(verdict.starts_with("p99 latency"), "{verdict}");
        let end = at(stats(4, 0, 0, 0), stats(300, 0, 0, 0));
        let verdict = judge(&start, &warm, &end).unwrap();
        assert!(
            verdict.contains("inconclusive (4 canary request(s), 5 needed; 300 on the stable"),
            "{verdict}"
        );
    }
}
