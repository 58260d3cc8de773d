//! The alert evaluator's memory across restarts: what it last wrote to the state store (each
//! alert instance's lifecycle, the notification log per receiver and group, when it last
//! evaluated), so that after an evaluation only what changed is written, and on start what
//! was written is given back to the evaluator and the dispatcher. A firing alert then stays
//! firing without a second `alert.firing` event or notification, a pending one keeps the
//! elapsed part of its `for` (see `kiln_alerts::AlertState::restored`), and the dispatcher
//! repeats nothing before its repeat interval. While nothing changes, only the evaluation
//! time is written, at most every [`HEARTBEAT_MS`] (and when the control plane stops), so a
//! restart after a crash counts up to that much of the time before it as downtime.

use std::collections::{BTreeMap, BTreeSet};

use kiln_alerts::{AlertState, Dispatcher, Evaluator, GroupLog, SavedAlert};
use kiln_state::{AlertInstanceRecord, NotificationLogRecord, StateError, Store};

/// How often the evaluation time is written while nothing else changes.
pub(super) const HEARTBEAT_MS: i64 = 60_000;

type Key = (String, String);

/// What the state store holds, as last written.
#[derive(Debug, Default)]
pub(super) struct Memory {
    instances: BTreeMap<Key, AlertInstanceRecord>,
    log: BTreeMap<Key, NotificationLogRecord>,
    written_at: Option<i64>,
}

/// What was taken back on start.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Restored {
    /// Alerts given back to the evaluator.
    pub alerts: usize,
    /// Of those, the firing ones.
    pub firing: usize,
    /// How long the evaluator had been down (ms), when it had run before.
    pub downtime_ms: Option<i64>,
}

/// The writes one evaluation calls for.
pub(super) struct Changes {
    instances: Vec<AlertInstanceRecord>,
    gone_instances: Vec<Key>,
    log: Vec<NotificationLogRecord>,
    gone_log: Vec<Key>,
    evaluated_at: i64,
}

impl Changes {
    /// Writes them, in the store's thread.
    pub(super) fn write(&self, store: &mut Store) -> Result<(), StateError> {
        if !self.instances.is_empty() || !self.gone_instances.is_empty() {
            store.save_alert_instances(&self.instances, &self.gone_instances)?;
        }
        if !self.log.is_empty() || !self.gone_log.is_empty() {
            store.save_notification_log(&self.log, &self.gone_log)?;
        }
        store.set_alerts_evaluated_at(self.evaluated_at)
    }
}

/// Everything written before, read in the store's thread.
pub(super) struct Loaded {
    instances: Vec<AlertInstanceRecord>,
    log: Vec<NotificationLogRecord>,
    evaluated_at: Option<i64>,
}

impl Loaded {
    /// Reads it.
    pub(super) fn read(store: &mut Store) -> Result<Loaded, StateError> {
        Ok(Loaded {
            instances: store.alert_instances()?,
            log: store.notification_log()?,
            evaluated_at: store.alerts_evaluated_at()?,
        })
    }
}

impl Memory {
    /// Gives what was written back to a freshly configured evaluator and dispatcher, at `now`.
    pub(super) fn restore(
        &mut self,
        loaded: Loaded,
        evaluator: &mut Evaluator,
        dispatcher: &mut Dispatcher,
        now: i64,
    ) -> Restored {
        let downtime_ms = loaded.evaluated_at.map(|at| now.saturating_sub(at));
        let saved: Vec<SavedAlert> = loaded.instances.iter().filter_map(to_saved).collect();
        let alerts = evaluator.restore(saved, downtime_ms.unwrap_or(0));
        let firing = evaluator
            .alerts()
            .filter(|a| a.phase == kiln_alerts::Phase::Firing)
            .count();
        dispatcher.restore(loaded.log.iter().map(group_log).collect(), now);
        self.instances = loaded
            .instances
            .into_iter()
            .map(|r| ((r.rule.clone(), r.fingerprint.clone()), r))
            .collect();
        self.log = loaded
            .log
            .into_iter()
            .map(|r| ((r.receiver.clone(), r.group_key.clone()), r))
            .collect();
        self.written_at = loaded.evaluated_at;
        Restored {
            alerts,
            firing,
            downtime_ms,
        }
    }

    /// What to write after an evaluation at `now`: the alerts and log entries that changed or
    /// went away, and the evaluation time when anything changed or the last write is
    /// [`HEARTBEAT_MS`] old. `None` when there is nothing to write.
    pub(super) fn changes(
        &self,
        evaluator: &Evaluator,
        dispatcher: &Dispatcher,
        now: i64,
    ) -> Option<Changes> {
        let instances: BTreeMap<Key, AlertInstanceRecord> = evaluator
            .saved()
            .into_iter()
            .map(|s| ((s.rule.clone(), s.fingerprint.clone()), to_record(s)))
            .collect();
        let log: BTreeMap<Key, NotificationLogRecord> = dispatcher
            .log()
            .iter()
            .map(|g| ((g.receiver.clone(), g.group_key.clone()), log_record(g)))
            .collect();
        // A value alone changes every evaluation; it is written with the next change of state.
        let instance_changed = |old: &AlertInstanceRecord, new: &AlertInstanceRecord| {
            AlertInstanceRecord {
                value: new.value,
                ..old.clone()
            } != *new
        };
        let changes = Changes {
            instances: changed(&self.instances, &instances, instance_changed),
            gone_instances: gone(&self.instances, &instances),
            log: changed(&self.log, &log, |old, new| old != new),
            gone_log: gone(&self.log, &log),
            evaluated_at: now,
        };
        let nothing_changed = changes.instances.is_empty()
            && changes.gone_instances.is_empty()
            && changes.log.is_empty()
            && changes.gone_log.is_empty();
        let heartbeat_due = self
            .written_at
            .is_none_or(|at| now.saturating_sub(at) >= HEARTBEAT_MS);
        (!nothing_changed || heartbeat_due).then_some(changes)
    }

    /// Notes that `changes` were written.
    pub(super) fn written(&mut self, changes: Changes) {
        for key in changes.gone_instances {
            self.instances.remove(&key);
        }
        for r in changes.instances {
            self.instances
                .insert((r.rule.clone(), r.fingerprint.clone()), r);
        }
        for key in changes.gone_log {
            self.log.remove(&key);
        }
        for r in changes.log {
            self.log
                .insert((r.receiver.clone(), r.group_key.clone()), r);
        }
        self.written_at = Some(changes.evaluated_at);
    }
}

fn changed<T: Clone>(
    old: &BTreeMap<Key, T>,
    new: &BTreeMap<Key, T>,
    differs: impl Fn(&T, &T) -> bool,
) -> Vec<T> {
    new.iter()
        .filter(|(k, v)| old.get(*k).is_none_or(|o| differs(o, v)))
        .map(|(_, v)| v.clone())
        .collect()
}

fn gone<T>(old: &BTreeMap<Key, T>, new: &BTreeMap<Key, T>) -> Vec<Key> {
    old.keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect()
}

fn to_record(s: SavedAlert) -> AlertInstanceRecord {
    let (active_since, fired_at, keep_firing_since, resolved_at) = match s.state {
        AlertState::Inactive => (0, None, None, None),
        AlertState::Pending { active_since } => (active_since, None, None, None),
        AlertState::Firing {
            active_since,
            fired_at,
            keep_firing_since,
        } => (active_since, Some(fired_at), keep_firing_since, None),
        AlertState::Resolved {
            fired_at,
            resolved_at,
        } => (fired_at, Some(fired_at), None, Some(resolved_at)),
    };
    AlertInstanceRecord {
        rule: s.rule,
        fingerprint: s.fingerprint,
        name: s.name,
        labels: s.labels,
        annotations: s.annotations,
        state: s.state.phase().as_str().to_owned(),
        active_since,
        fired_at,
        keep_firing_since,
        resolved_at,
        value: s.value,
    }
}

/// A record read back; one whose state is not a known one (or lacks its times) is left out.
fn to_saved(r: &AlertInstanceRecord) -> Option<SavedAlert> {
    let state = match (r.state.as_str(), r.fired_at, r.resolved_at) {
        ("pending", _, _) => AlertState::Pending {
            active_since: r.active_since,
        },
        ("firing", Some(fired_at), _) => AlertState::Firing {
            active_since: r.active_since,
            fired_at,
            keep_firing_since: r.keep_firing_since,
        },
        ("resolved", Some(fired_at), Some(resolved_at)) => AlertState::Resolved {
            fired_at,
            resolved_at,
        },
        _ => return None,
    };
    Some(SavedAlert {
        rule: r.rule.clone(),
        name: r.name.clone(),
        fingerprint: r.fingerprint.clone(),
        labels: r.labels.clone(),
        annotations: r.annotations.clone(),
        value: r.value,
        state,
    })
}

fn log_record(g: &GroupLog) -> NotificationLogRecord {
    NotificationLogRecord {
        receiver: g.receiver.clone(),
        group_key: g.group_key.clone(),
        group_labels: g.labels.clone(),
        status: g.status().as_str().to_owned(),
        notified_at: g.notified_at,
        firing: g.firing.iter().cloned().collect(),
        resolved_sent: g.resolved_sent.iter().cloned().collect(),
    }
}

fn group_log(r: &NotificationLogRecord) -> GroupLog {
    GroupLog {
        receiver: r.receiver.clone(),
        group_key: r.group_key.clone(),
        labels: r.group_labels.clone(),
        firing: r.firing.iter().cloned().collect::<BTreeSet<_>>(),
        notified_at: r.notified_at,
        resolved_sent: r.resolved_sent.iter().cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_alerts::{Querier, Rule, Sample};
    use kiln_spec::alerting::NotifyPolicy;

    struct Present(bool);

    impl Querier for Present {
        fn query(&self, _expr: &str, _at_ms: i64) -> Result<Vec<Sample>, String> {
            Ok(if self.0 {
                vec![Sample {
                    labels: [("route".to_owned(), "a".to_owned())].into(),
                    value: 1.0,
                }]
            } else {
                Vec::new()
            })
        }
    }

    fn rule() -> Rule {
        Rule {
            name: "errors".into(),
            group: "kiln".into(),
            expr: "errors > 0".into(),
            for_ms: 0,
            keep_firing_for_ms: 0,
            labels: Default::default(),
            annotations: Default::default(),
            runbook: None,
        }
    }

    fn dispatcher() -> Dispatcher {
        let policy = NotifyPolicy {
            group_wait_ms: 0,
            group_interval_ms: 1_000,
            repeat_interval_ms: 3_600_000,
            ..NotifyPolicy::default()
        };
        Dispatcher::new(policy, vec!["ops".into()], String::new())
    }

    /// Runs the evaluator and dispatcher as the actor does and writes to `store`.
    fn tick(
        memory: &mut Memory,
        ev: &mut Evaluator,
        d: &mut Dispatcher,
        store: &mut Store,
        present: bool,
        now: i64,
    ) -> (usize, usize) {
        let transitions = ev.evaluate(&Present(present), now).transitions.len();
        let alerts = ev
            .alerts()
            .flat_map(|a| kiln_alerts::NotifyAlert::of(a, String::new()))
            .collect();
        d.update(alerts, now);
        let sent = d.flush(now).len();
        if let Some(changes) = memory.changes(ev, d, now) {
            assert!(changes.write(store).is_ok());
            memory.written(changes);
        }
        (transitions, sent)
    }

    #[test]
    fn a_restart_neither_refires_nor_renotifies_and_writes_only_changes() -> Result<(), StateError>
    {
        let mut store = Store::open_in_memory()?;
        let (mut memory, mut ev, mut d) = (
            Memory::default(),
            Evaluator::new(vec![rule()]),
            dispatcher(),
        );
        assert_eq!(
            tick(&mut memory, &mut ev, &mut d, &mut store, true, 1_000),
            (1, 1)
        );
        assert_eq!(store.alert_instances()?.len(), 1);
        assert!(memory.changes(&ev, &d, 2_000).is_none(), "nothing changed");
        assert!(
            memory.changes(&ev, &d, 1_000 + HEARTBEAT_MS).is_some(),
            "heartbeat"
        );
        // Restart 30 s later.
        let (mut memory, mut ev, mut d) = (
            Memory::default(),
            Evaluator::new(vec![rule()]),
            dispatcher(),
        );
        let restored = memory.restore(Loaded::read(&mut store)?, &mut ev, &mut d, 31_000);
        assert_eq!(
            restored,
            Restored {
                alerts: 1,
                firing: 1,
                downtime_ms: Some(30_000)
            }
        );
        assert_eq!(
            tick(&mut memory, &mut ev, &mut d, &mut store, true, 31_000),
            (0, 0)
        );
        // Gone: one resolution, once.
        assert_eq!(
            tick(&mut memory, &mut ev, &mut d, &mut store, false, 36_000),
            (1, 1)
        );
        assert_eq!(store.alert_instances()?[0].state, "resolved");
        let (mut memory, mut ev, mut d) = (
            Memory::default(),
            Evaluator::new(vec![rule()]),
            dispatcher(),
        );
        memory.restore(Loaded::read(&mut store)?, &mut ev, &mut d, 40_000);
        assert_eq!(
            tick(&mut memory, &mut ev, &mut d, &mut store, false, 40_000),
            (0, 0)
        );
        Ok(())
    }
}
