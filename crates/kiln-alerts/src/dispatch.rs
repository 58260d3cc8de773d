//! Grouping and timing of notifications, after Alertmanager: alerts are grouped by the values
//! of `group_by`; a new group waits `group_wait` for company, then is looked at every
//! `group_interval`. A group is notified when it has a firing alert not in its last
//! notification or a newly resolved one; an unchanged firing group is notified again after
//! `repeat_interval`. Whatever is not new is not sent again (de-duplication). Muted alerts
//! (silenced, inhibited) are left out by the caller before [`Dispatcher::update`]. What was
//! sent is kept per receiver and group, as Alertmanager's notification log keeps it: a
//! receiver added later is told of what already fires, and the others are not told again.

use std::collections::{BTreeMap, BTreeSet};

use kiln_spec::alerting::NotifyPolicy;

use crate::LabelSet;
use crate::payload::{NotifyAlert, NotifyStatus, group_payload};

/// A notification to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The receiver's name.
    pub receiver: String,
    /// The group's key.
    pub group_key: String,
    /// `firing` when any alert of the group fires.
    pub status: NotifyStatus,
    /// Alertmanager's version 4 body.
    pub payload: serde_json::Value,
}

/// What a group last notified to one receiver, as kept across restarts (Alertmanager's
/// notification log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLog {
    /// The receiver it was sent to.
    pub receiver: String,
    /// The group's key.
    pub group_key: String,
    /// The group's labels.
    pub labels: LabelSet,
    /// The firing alerts of its last notification.
    pub firing: BTreeSet<String>,
    /// When that was sent (ms).
    pub notified_at: i64,
    /// The resolved alerts whose resolution has been sent.
    pub resolved_sent: BTreeSet<String>,
}

impl GroupLog {
    /// `firing` when the last notification had a firing alert.
    pub fn status(&self) -> NotifyStatus {
        if self.firing.is_empty() {
            NotifyStatus::Resolved
        } else {
            NotifyStatus::Firing
        }
    }
}

#[derive(Debug)]
struct Group {
    labels: LabelSet,
    alerts: BTreeMap<String, NotifyAlert>,
    next_flush: i64,
    /// Per receiver: the firing alerts of its last notification, and when it was sent.
    last: BTreeMap<String, (BTreeSet<String>, i64)>,
    /// Resolved alerts already notified.
    resolved_sent: BTreeSet<String>,
}

/// Owns the groups.
#[derive(Debug)]
pub struct Dispatcher {
    policy: NotifyPolicy,
    receivers: Vec<String>,
    external_url: String,
    groups: BTreeMap<String, Group>,
}

impl Dispatcher {
    /// A dispatcher sending to `receivers`.
    pub fn new(policy: NotifyPolicy, receivers: Vec<String>, external_url: String) -> Dispatcher {
        Dispatcher {
            policy,
            receivers,
            external_url,
            groups: BTreeMap::new(),
        }
    }

    /// The receivers every group is sent to.
    pub fn receivers(&self) -> &[String] {
        &self.receivers
    }

    /// Sends to `receivers` under `policy` from now on, keeping what was sent: a receiver
    /// that stays is not told again what it was told, a new one is told what fires at the
    /// next flush, and a removed one is forgotten.
    pub fn reconfigure(&mut self, policy: NotifyPolicy, receivers: Vec<String>) {
        for group in self.groups.values_mut() {
            group
                .last
                .retain(|receiver, _| receivers.contains(receiver));
        }
        self.policy = policy;
        self.receivers = receivers;
    }

    /// What each group last sent to each receiver.
    pub fn log(&self) -> Vec<GroupLog> {
        self.groups
            .iter()
            .flat_map(|(key, g)| {
                g.last.iter().map(|(receiver, (firing, at))| GroupLog {
                    receiver: receiver.clone(),
                    group_key: key.clone(),
                    labels: g.labels.clone(),
                    firing: firing.clone(),
                    notified_at: *at,
                    resolved_sent: g.resolved_sent.clone(),
                })
            })
            .collect()
    }

    /// Takes back the log of an earlier dispatcher, so that what it sent is not sent again:
    /// a group still firing the same alerts waits for its repeat interval from the logged
    /// time, and a logged resolution is not repeated. Entries of receivers no longer sent to
    /// are dropped; a receiver without an entry is told at the next flush. Restored groups
    /// are looked at on the next flush (their `group_wait` was served before).
    pub fn restore(&mut self, logs: Vec<GroupLog>, now: i64) {
        for log in logs {
            if !self.receivers.contains(&log.receiver) {
                continue;
            }
            let group = self.groups.entry(log.group_key).or_insert_with(|| Group {
                labels: log.labels,
                alerts: BTreeMap::new(),
                next_flush: now,
                last: BTreeMap::new(),
                resolved_sent: BTreeSet::new(),
            });
            group
                .last
                .insert(log.receiver, (log.firing, log.notified_at));
            group.resolved_sent.extend(log.resolved_sent);
        }
    }

    /// Replaces the alerts to notify about: every firing or resolved alert that is not muted.
    pub fn update(&mut self, alerts: Vec<NotifyAlert>, now: i64) {
        let mut incoming: BTreeMap<String, (LabelSet, Vec<NotifyAlert>)> = BTreeMap::new();
        for alert in alerts {
            let labels: LabelSet = self
                .policy
                .group_by
                .iter()
                .filter_map(|l| alert.labels.get(l).map(|v| (l.clone(), v.clone())))
                .collect();
            let key = format!("{{}}:{}", label_set_string(&labels));
            incoming
                .entry(key)
                .or_insert_with(|| (labels, Vec::new()))
                .1
                .push(alert);
        }
        for group in self.groups.values_mut() {
            group.alerts.clear();
        }
        let group_wait = ms(self.policy.group_wait_ms);
        for (key, (labels, alerts)) in incoming {
            let group = self.groups.entry(key).or_insert_with(|| Group {
                labels,
                alerts: BTreeMap::new(),
                next_flush: now + group_wait,
                last: BTreeMap::new(),
                resolved_sent: BTreeSet::new(),
            });
            for alert in alerts {
                match alert.status {
                    NotifyStatus::Firing => {
                        group.resolved_sent.remove(&alert.fingerprint);
                    }
                    NotifyStatus::Resolved if group.resolved_sent.contains(&alert.fingerprint) => {
                        continue;
                    }
                    NotifyStatus::Resolved => {}
                }
                group.alerts.insert(alert.fingerprint.clone(), alert);
            }
        }
        // A group with nothing left is forgotten once its repeat interval has passed, so that
        // an alert muted for a while is not notified again as new when it comes back.
        let repeat = ms(self.policy.repeat_interval_ms);
        self.groups.retain(|_, g| {
            !g.alerts.is_empty() || g.last.values().any(|(_, at)| now - at < repeat)
        });
    }

    /// When the next group is due, if any.
    pub fn next_flush(&self) -> Option<i64> {
        self.groups.values().map(|g| g.next_flush).min()
    }

    /// The notifications due at `now`.
    pub fn flush(&mut self, now: i64) -> Vec<Notification> {
        let mut out = Vec::new();
        let interval = ms(self.policy.group_interval_ms);
        let repeat = ms(self.policy.repeat_interval_ms);
        for (key, group) in &mut self.groups {
            if group.next_flush > now {
                continue;
            }
            group.next_flush = now + interval;
            let firing: BTreeSet<String> = group
                .alerts
                .values()
                .filter(|a| a.status == NotifyStatus::Firing)
                .map(|a| a.fingerprint.clone())
                .collect();
            let resolved: Vec<String> = group
                .alerts
                .values()
                .filter(|a| a.status == NotifyStatus::Resolved)
                .map(|a| a.fingerprint.clone())
                .collect();
            if firing.is_empty() && resolved.is_empty() {
                continue;
            }
            let due = |last: Option<&(BTreeSet<String>, i64)>| match last {
                None => true,
                Some((last_firing, at)) => {
                    !firing.is_subset(last_firing)
                        || !resolved.is_empty()
                        || (!firing.is_empty() && now - at >= repeat)
                }
            };
            let alerts: Vec<NotifyAlert> = group.alerts.values().cloned().collect();
            for receiver in &self.receivers {
                if !due(group.last.get(receiver)) {
                    continue;
                }
                let payload =
                    group_payload(receiver, key, &group.labels, &alerts, &self.external_url);
                out.push(Notification {
                    receiver: receiver.clone(),
                    group_key: key.clone(),
                    status: if firing.is_empty() {
                        NotifyStatus::Resolved
                    } else {
                        NotifyStatus::Firing
                    },
                    payload,
                });
                group.last.insert(receiver.clone(), (firing.clone(), now));
            }
            for fp in resolved {
                group.alerts.remove(&fp);
                group.resolved_sent.insert(fp);
            }
        }
        out
    }
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `{alertname="errors", route="a"}`, as Alertmanager prints a label set.
fn label_set_string(labels: &LabelSet) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> NotifyPolicy {
        NotifyPolicy {
            receivers: vec![],
            group_by: vec!["alertname".into()],
            group_wait_ms: 1_000,
            group_interval_ms: 5_000,
            repeat_interval_ms: 60_000,
            evaluation_interval_ms: 1_000,
            ..NotifyPolicy::default()
        }
    }

    fn alert(name: &str, route: &str, status: NotifyStatus) -> NotifyAlert {
        let labels: LabelSet = [("alertname", name), ("route", route)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        NotifyAlert {
            status,
            fingerprint: crate::fingerprint(&labels),
            labels,
            annotations: LabelSet::new(),
            starts_at: 0,
            ends_at: None,
            generator_url: String::new(),
        }
    }

    fn statuses(n: &[Notification]) -> Vec<(String, &str, usize)> {
        n.iter()
            .map(|n| {
                (
                    n.group_key.clone(),
                    n.status.as_str(),
                    n.payload["alerts"].as_array().map_or(0, Vec::len),
                )
            })
            .collect()
    }

    #[test]
    fn group_wait_then_changes_only_then_repeat() {
        use NotifyStatus::*;
        let mut d = Dispatcher::new(policy(), vec!["ops".into()], String::new());
        d.update(vec![alert("errors", "a", Firing)], 0);
        assert!(d.flush(999).is_empty(), "group_wait");
        d.update(
            vec![alert("errors", "a", Firing), alert("errors", "b", Firing)],
            500,
        );
        let n = d.flush(1_000);
        assert_eq!(
            statuses(&n),
            [("{}:{alertname=\"errors\"}".to_owned(), "firing", 2)]
        );
        assert_eq!(n[0].payload["groupLabels"]["alertname"], "errors");
        // Nothing new: no notification at the next interval.
        assert!(d.flush(6_000).is_empty());
        // b resolves: notified at the next interval, with a still firing.
        d.update(
            vec![alert("errors", "a", Firing), alert("errors", "b", Resolved)],
            7_000,
        );
        assert!(d.flush(7_000).is_empty(), "waits for group_interval");
        assert_eq!(statuses(&d.flush(11_000)).len(), 1);
        // The resolution is not sent twice.
        d.update(
            vec![alert("errors", "a", Firing), alert("errors", "b", Resolved)],
            12_000,
        );
        assert!(d.flush(16_000).is_empty());
        // Unchanged and still firing: repeated after repeat_interval.
        assert!(d.flush(61_000).is_empty());
        assert_eq!(statuses(&d.flush(71_000)).len(), 1);
    }

    #[test]
    fn muted_alerts_are_not_renotified_and_resolutions_are() {
        use NotifyStatus::*;
        let mut d = Dispatcher::new(policy(), vec!["ops".into(), "chat".into()], String::new());
        d.update(vec![alert("errors", "a", Firing)], 0);
        assert_eq!(d.flush(1_000).len(), 2, "one per receiver");
        // Silenced: the caller leaves it out. Nothing is sent, not even at the repeat.
        d.update(vec![], 2_000);
        assert!(d.flush(61_000).is_empty());
        assert!(d.flush(200_000).is_empty());
        // Back, unsilenced, within the repeat interval of the last notification: not new.
        let mut d = Dispatcher::new(policy(), vec!["ops".into()], String::new());
        d.update(vec![alert("errors", "a", Firing)], 0);
        d.flush(1_000);
        d.update(vec![], 2_000);
        d.update(vec![alert("errors", "a", Firing)], 3_000);
        assert!(d.flush(6_000).is_empty());
        d.update(vec![alert("errors", "a", Resolved)], 7_000);
        let n = d.flush(11_000);
        assert_eq!(statuses(&n)[0].1, "resolved");
        assert_eq!(n[0].payload["status"], "resolved");
    }

    #[test]
    fn a_restored_log_neither_repeats_a_firing_group_early_nor_a_resolution() {
        use NotifyStatus::*;
        let mut d = Dispatcher::new(policy(), vec!["ops".into()], String::new());
        d.update(
            vec![
                alert("errors", "a", Firing),
                alert("latency", "b", Resolved),
            ],
            0,
        );
        assert_eq!(d.flush(1_000).len(), 2);
        let log = d.log();
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].status(), Firing);
        assert_eq!(log[1].status(), Resolved);
        let mut back = Dispatcher::new(policy(), vec!["ops".into()], String::new());
        back.restore(log, 30_000);
        back.update(
            vec![
                alert("errors", "a", Firing),
                alert("latency", "b", Resolved),
            ],
            30_000,
        );
        assert!(back.flush(30_000).is_empty(), "nothing new since the log");
        assert!(back.flush(55_000).is_empty());
        assert_eq!(
            statuses(&back.flush(61_000)),
            [("{}:{alertname=\"errors\"}".to_owned(), "firing", 1)],
            "repeated one repeat interval after the logged notification"
        );
        back.update(vec![alert("errors", "a", Resolved)], 62_000);
        assert_eq!(statuses(&back.flush(66_000))[0].1, "resolved");
    }

    /// Alertmanager's notification log is per receiver: a receiver added while a group fires
    /// (at a reload, or while kiln was down) is told at the next flush; the receiver already
    /// told is not told again before its repeat interval.
    #[test]
    fn a_receiver_added_later_is_told_of_what_already_fires() {
        use NotifyStatus::*;
        let receivers = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
        let mut d = Dispatcher::new(policy(), receivers(&["ops"]), String::new());
        d.update(vec![alert("errors", "a", Firing)], 0);
        assert_eq!(d.flush(1_000).len(), 1);
        d.reconfigure(policy(), receivers(&["ops", "pager"]));
        d.update(vec![alert("errors", "a", Firing)], 2_000);
        let told: Vec<String> = d.flush(6_000).into_iter().map(|n| n.receiver).collect();
        assert_eq!(told, ["pager"]);
        assert!(d.flush(11_000).is_empty(), "both have been told");

        // The same across a restart: the log of `ops` alone is restored.
        let ops_only: Vec<GroupLog> = d
            .log()
            .into_iter()
            .filter(|g| g.receiver == "ops")
            .collect();
        let mut back = Dispatcher::new(policy(), receivers(&["ops", "pager"]), String::new());
        back.restore(ops_only, 20_000);
        back.update(vec![alert("errors", "a", Firing)], 20_000);
        let told: Vec<String> = back.flush(20_000).into_iter().map(|n| n.receiver).collect();
        assert_eq!(told, ["pager"]);
        // A receiver removed is forgotten: added back, it is told again.
        back.reconfigure(policy(), receivers(&["ops"]));
        back.reconfigure(policy(), receivers(&["ops", "pager"]));
        back.update(vec![alert("errors", "a", Firing)], 21_000);
        let told: Vec<String> = back.flush(25_000).into_iter().map(|n| n.receiver).collect();
        assert_eq!(told, ["pager"]);
    }

    #[test]
    fn groups_split_by_group_by() {
        use NotifyStatus::*;
        let mut d = Dispatcher::new(
            NotifyPolicy {
                group_by: vec!["route".into()],
                ..policy()
            },
            vec!["ops".into()],
            String::new(),
        );
        d.update(
            vec![
                alert("errors", "a", Firing),
                alert("latency", "a", Firing),
                alert("errors", "b", Firing),
            ],
            0,
        );
        let n = d.flush(1_000);
        assert_eq!(
            statuses(&n),
            [
                ("{}:{route=\"a\"}".to_owned(), "firing", 2),
                ("{}:{route=\"b\"}".to_owned(), "firing", 1)
            ]
        );
        assert_eq!(d.next_flush(), Some(6_000));
    }
}
