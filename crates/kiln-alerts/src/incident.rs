//! Incidents as values: what happened to a service from the first paging alert until someone
//! (or the quiet period) declares it over. An incident's [`IncidentState`] moves by one step
//! function, [`IncidentState::step`]:
//!
//! ```text
//! open ──ack──▶ acknowledged ──all alerts resolved──▶ mitigated ──resolve / quiet──▶ resolved
//!   │                                                  ▲   │
//!   └──────────────all alerts resolved─────────────────┘   └─ an alert fires again: reopened
//! ```
//!
//! Reopening: a paging alert that fires while the incident is mitigated puts it back to open
//! (acknowledged, when someone had acknowledged it) and forgets the mitigation, so time to
//! mitigate measures the mitigation that held. A resolved incident never reopens: the next
//! paging alert for its service opens a new one. Resolving by hand is allowed from any state
//! but resolved; notes are allowed in every state (a post-incident note is still a note).
//!
//! Milestones: **detected** (the first alert fired), **acknowledged**, **mitigated** (every
//! alert resolved, or by hand) and **resolved**, each with its time and actor. Time to
//! acknowledge, to mitigate and to restore (resolve) are measured from detection. The
//! post-incident report ([`report`]) is Markdown made from the incident alone.
//!
//! Times are ms since the epoch; nothing here reads a clock.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Where an incident is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum IncidentState {
    /// Alerts are firing and nobody has said they are on it.
    Open,
    /// Someone is on it; alerts are still firing.
    Acknowledged,
    /// Every alert resolved; waiting to be declared over.
    Mitigated {
        /// Whether someone had acknowledged it (a reopen goes back to acknowledged).
        acknowledged: bool,
    },
    /// Over.
    Resolved,
}

/// What moves an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A paging alert of its service fired (or fires again).
    AlertFired,
    /// The last firing alert of the incident resolved.
    AllAlertsResolved,
    /// Someone acknowledged it.
    Acknowledge,
    /// Someone declared it mitigated.
    Mitigate,
    /// Someone declared it over, or it stayed mitigated for the quiet period.
    Resolve,
}

/// Why a signal does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IncidentError {
    /// The incident is over.
    #[error("incident {0} is resolved")]
    Resolved(i64),
    /// Acknowledged twice.
    #[error("incident {0} is already acknowledged")]
    AlreadyAcknowledged(i64),
    /// Mitigated twice.
    #[error("incident {0} is already mitigated")]
    AlreadyMitigated(i64),
}

/// Whether a step reopened the incident, besides its new state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The state after the signal.
    pub state: IncidentState,
    /// A mitigated incident went back to open or acknowledged.
    pub reopened: bool,
}

impl IncidentState {
    /// `open`, `acknowledged`, `mitigated`, `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Acknowledged => "acknowledged",
            IncidentState::Mitigated { .. } => "mitigated",
            IncidentState::Resolved => "resolved",
        }
    }

    /// Parses [`IncidentState::as_str`] (a mitigated state read back this way lost whether it
    /// was acknowledged; [`Incident`] keeps that in its milestones).
    pub fn parse(text: &str, acknowledged: bool) -> Option<IncidentState> {
        match text {
            "open" => Some(IncidentState::Open),
            "acknowledged" => Some(IncidentState::Acknowledged),
            "mitigated" => Some(IncidentState::Mitigated { acknowledged }),
            "resolved" => Some(IncidentState::Resolved),
            _ => None,
        }
    }

    /// Whether the incident is still open in the broad sense (not resolved).
    pub fn is_open(self) -> bool {
        self != IncidentState::Resolved
    }

    /// The state after `signal`; `id` only names the incident in errors.
    pub fn step(self, signal: Signal, id: i64) -> Result<Step, IncidentError> {
        use IncidentState::{Acknowledged, Mitigated, Open, Resolved};
        let to = |state| {
            Ok(Step {
                state,
                reopened: false,
            })
        };
        match (self, signal) {
            (Resolved, _) => Err(IncidentError::Resolved(id)),
            (Open, Signal::AlertFired) => to(Open),
            (Acknowledged, Signal::AlertFired) => to(Acknowledged),
            (Mitigated { acknowledged }, Signal::AlertFired) => Ok(Step {
                state: if acknowledged { Acknowledged } else { Open },
                reopened: true,
            }),
            (Open, Signal::Acknowledge) => to(Acknowledged),
            (
                Mitigated {
                    acknowledged: false,
                },
                Signal::Acknowledge,
            ) => to(Mitigated { acknowledged: true }),
            (Acknowledged | Mitigated { acknowledged: true }, Signal::Acknowledge) => {
                Err(IncidentError::AlreadyAcknowledged(id))
            }
            (Open, Signal::AllAlertsResolved | Signal::Mitigate) => to(Mitigated {
                acknowledged: false,
            }),
            (Acknowledged, Signal::AllAlertsResolved | Signal::Mitigate) => {
                to(Mitigated { acknowledged: true })
            }
            (Mitigated { .. }, Signal::Mitigate) => Err(IncidentError::AlreadyMitigated(id)),
            // Already mitigated by hand; the alerts catching up change nothing.
            (state @ Mitigated { .. }, Signal::AllAlertsResolved) => to(state),
            (Open | Acknowledged | Mitigated { .. }, Signal::Resolve) => to(Resolved),
        }
    }
}

/// A moment that counts, and who made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Milestone {
    /// ms since the epoch.
    pub at: i64,
    /// `kiln` or `user@host`.
    pub actor: String,
}

/// The four milestones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Milestones {
    /// The first alert fired.
    pub detected: Milestone,
    /// Someone said they are on it.
    pub acknowledged: Option<Milestone>,
    /// Every alert resolved (or someone said so).
    pub mitigated: Option<Milestone>,
    /// Declared over.
    pub resolved: Option<Milestone>,
}

impl Milestones {
    /// Time to acknowledge (ms from detection).
    pub fn time_to_acknowledge(&self) -> Option<i64> {
        self.since_detected(self.acknowledged.as_ref())
    }

    /// Time to mitigate (ms from detection).
    pub fn time_to_mitigate(&self) -> Option<i64> {
        self.since_detected(self.mitigated.as_ref())
    }

    /// Time to restore: until it was resolved (ms from detection).
    pub fn time_to_restore(&self) -> Option<i64> {
        self.since_detected(self.resolved.as_ref())
    }

    fn since_detected(&self, m: Option<&Milestone>) -> Option<i64> {
        m.map(|m| m.at.saturating_sub(self.detected.at).max(0))
    }
}

/// What a timeline entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// An alert fired.
    AlertFired,
    /// An alert resolved.
    AlertResolved,
    /// A runbook started, ran a step or finished.
    Runbook,
    /// A deploy of the service.
    Deploy,
    /// A rollback of the service.
    Rollback,
    /// A maintenance page went up on, or came off, one of the service's routes.
    Maintenance,
    /// Someone acknowledged.
    Acknowledged,
    /// A note.
    Note,
    /// Mitigated.
    Mitigated,
    /// A mitigated incident's alert fired again.
    Reopened,
    /// Declared over.
    Resolved,
}

impl EntryKind {
    /// The kind as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::AlertFired => "alert_fired",
            EntryKind::AlertResolved => "alert_resolved",
            EntryKind::Runbook => "runbook",
            EntryKind::Deploy => "deploy",
            EntryKind::Rollback => "rollback",
            EntryKind::Maintenance => "maintenance",
            EntryKind::Acknowledged => "acknowledged",
            EntryKind::Note => "note",
            EntryKind::Mitigated => "mitigated",
            EntryKind::Reopened => "reopened",
            EntryKind::Resolved => "resolved",
        }
    }

    /// Parses [`EntryKind::as_str`].
    pub fn parse(text: &str) -> Option<EntryKind> {
        [
            EntryKind::AlertFired,
            EntryKind::AlertResolved,
            EntryKind::Runbook,
            EntryKind::Deploy,
            EntryKind::Rollback,
            EntryKind::Maintenance,
            EntryKind::Acknowledged,
            EntryKind::Note,
            EntryKind::Mitigated,
            EntryKind::Reopened,
            EntryKind::Resolved,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// ms since the epoch.
    pub at: i64,
    /// `kiln` or `user@host`.
    pub actor: String,
    /// What it records.
    pub kind: EntryKind,
    /// What happened, in words.
    pub text: String,
}

/// An alert that took part in the incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentAlert {
    /// The alert's name.
    pub name: String,
    /// When it (last) fired.
    pub fired_at: i64,
    /// When it resolved; `None` while it fires.
    pub resolved_at: Option<i64>,
    /// How many times it fired during the incident.
    pub firings: u32,
}

/// An incident of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Its number (given by the state store).
    pub id: i64,
    /// The service's name (the alerts' `service` label).
    pub service: String,
    /// A one-line title: the alert that opened it.
    pub title: String,
    /// Where it is.
    pub state: IncidentState,
    /// The milestones.
    pub milestones: Milestones,
    /// Its alerts by fingerprint.
    pub alerts: BTreeMap<String, IncidentAlert>,
    /// Everything that happened, in order.
    pub timeline: Vec<TimelineEntry>,
}

/// The actor of automatic changes.
pub const KILN: &str = "kiln";

impl Incident {
    /// An incident opened by a paging alert firing at `at` (its number is set once stored).
    pub fn open(service: &str, fingerprint: &str, alert: &str, at: i64, text: &str) -> Incident {
        let mut incident = Incident {
            id: 0,
            service: service.to_owned(),
            title: format!("{alert} on {service}"),
            state: IncidentState::Open,
            milestones: Milestones {
                detected: Milestone {
                    at,
                    actor: KILN.into(),
                },
                acknowledged: None,
                mitigated: None,
                resolved: None,
            },
            alerts: BTreeMap::new(),
            timeline: Vec::new(),
        };
        // A fresh incident is open, so this cannot be refused.
        let _ = incident.alert_fired(fingerprint, alert, at, text);
        incident
    }

    /// Whether it is not resolved.
    pub fn is_open(&self) -> bool {
        self.state.is_open()
    }

    /// Every alert of the incident has resolved.
    pub fn all_alerts_resolved(&self) -> bool {
        self.alerts.values().all(|a| a.resolved_at.is_some())
    }

    /// A paging alert of the service fired (again).
    pub fn alert_fired(
        &mut self,
        fingerprint: &str,
        name: &str,
        at: i64,
        text: &str,
    ) -> Result<(), IncidentError> {
        let step = self.state.step(Signal::AlertFired, self.id)?;
        let alert = self
            .alerts
            .entry(fingerprint.to_owned())
            .or_insert_with(|| IncidentAlert {
                name: name.to_owned(),
                fired_at: at,
                resolved_at: None,
                firings: 0,
            });
        alert.fired_at = at;
        alert.resolved_at = None;
        alert.firings += 1;
        self.push(at, KILN, EntryKind::AlertFired, text);
        if step.reopened {
            self.milestones.mitigated = None;
            self.push(
                at,
                KILN,
                EntryKind::Reopened,
                &format!("reopened: {name} fired again"),
            );
        }
        self.state = step.state;
        Ok(())
    }

    /// An alert resolved; when it was the last one firing, the incident is mitigated.
    /// Alerts that are not part of the incident are ignored (returns `false`).
    pub fn alert_resolved(&mut self, fingerprint: &str, at: i64, text: &str) -> bool {
        if !self.is_open() {
            return false;
        }
        let Some(alert) = self.alerts.get_mut(fingerprint) else {
            return false;
        };
        if alert.resolved_at.is_some() {
            return false;
        }
        alert.resolved_at = Some(at);
        self.push(at, KILN, EntryKind::AlertResolved, text);
        if self.all_alerts_resolved() {
            // Open or acknowledged (a mitigated one would not have a firing alert, except
            // when mitigated by hand, which the step keeps).
            if let Ok(step) = self.state.step(Signal::AllAlertsResolved, self.id) {
                if step.state != self.state {
                    self.mark_mitigated(at, KILN, "every alert resolved");
                }
                self.state = step.state;
            }
        }
        true
    }

    /// Someone is on it.
    pub fn acknowledge(&mut self, at: i64, actor: &str) -> Result<(), IncidentError> {
        self.state = self.state.step(Signal::Acknowledge, self.id)?.state;
        self.milestones.acknowledged = Some(Milestone {
            at,
            actor: actor.to_owned(),
        });
        self.push(at, actor, EntryKind::Acknowledged, "acknowledged");
        Ok(())
    }

    /// Someone says it is mitigated although alerts may still fire.
    pub fn mitigate(&mut self, at: i64, actor: &str, why: &str) -> Result<(), IncidentError> {
        self.state = self.state.step(Signal::Mitigate, self.id)?.state;
        self.mark_mitigated(at, actor, why);
        Ok(())
    }

    /// Declared over, by someone or by the quiet period; `note` is kept in the timeline.
    pub fn resolve(
        &mut self,
        at: i64,
        actor: &str,
        note: Option<&str>,
    ) -> Result<(), IncidentError> {
        self.state = self.state.step(Signal::Resolve, self.id)?.state;
        if self.milestones.mitigated.is_none() {
            // Declared over: the service is restored at the latest now.
            self.milestones.mitigated = Some(Milestone {
                at,
                actor: actor.to_owned(),
            });
        }
        self.milestones.resolved = Some(Milestone {
            at,
            actor: actor.to_owned(),
        });
        let text = match note {
            Some(note) if !note.trim().is_empty() => format!("resolved: {note}"),
            _ => "resolved".to_owned(),
        };
        self.push(at, actor, EntryKind::Resolved, &text);
        Ok(())
    }

    /// Resolves a mitigated incident once it has stayed quiet for `quiet_ms`; returns whether
    /// it did.
    pub fn resolve_if_quiet(&mut self, now: i64, quiet_ms: u64) -> bool {
        let Some(mitigated) = &self.milestones.mitigated else {
            return false;
        };
        let quiet = i64::try_from(quiet_ms).unwrap_or(i64::MAX);
        if !matches!(self.state, IncidentState::Mitigated { .. })
            || now.saturating_sub(mitigated.at) < quiet
        {
            return false;
        }
        self.resolve(now, KILN, Some(&format!("quiet for {}", duration(quiet))))
            .is_ok()
    }

    /// A note, in any state.
    pub fn note(&mut self, at: i64, actor: &str, text: &str) {
        self.push(at, actor, EntryKind::Note, text);
    }

    /// Something that happened to the service meanwhile (a deploy, a runbook step): kept only
    /// while the incident is open.
    pub fn record(&mut self, at: i64, actor: &str, kind: EntryKind, text: &str) -> bool {
        if !self.is_open() {
            return false;
        }
        self.push(at, actor, kind, text);
        true
    }

    fn mark_mitigated(&mut self, at: i64, actor: &str, why: &str) {
        self.milestones.mitigated = Some(Milestone {
            at,
            actor: actor.to_owned(),
        });
        self.push(
            at,
            actor,
            EntryKind::Mitigated,
            &format!("mitigated: {why}"),
        );
    }

    /// Appends an entry, keeping the timeline in time order (entries from the event log may
    /// arrive after an entry made later by someone's command).
    fn push(&mut self, at: i64, actor: &str, kind: EntryKind, text: &str) {
        let position = self.timeline.partition_point(|e| e.at <= at);
        self.timeline.insert(
            position,
            TimelineEntry {
                at,
                actor: actor.to_owned(),
                kind,
                text: text.to_owned(),
            },
        );
    }
}

/// A duration in ms as people read it: `45s`, `12m 5s`, `3h 20m`, `2d 4h`.
pub fn duration(ms: i64) -> String {
    let seconds = ms.max(0) / 1_000;
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds % 86_400 / 3_600,
        seconds % 3_600 / 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// The post-incident report, as Markdown: summary, impact (duration and alerts), milestones
/// with the durations between them, and the full timeline.
pub fn report(incident: &Incident) -> String {
    let time = |ms: i64| crate::rfc3339(ms);
    let m = &incident.milestones;
    let mut out = String::new();
    let _ = writeln!(out, "# Incident {}: {}\n", incident.id, incident.title);
    let _ = writeln!(out, "## Summary\n");
    let _ = writeln!(out, "- Service: `{}`", incident.service);
    let _ = writeln!(out, "- State: {}", incident.state.as_str());
    let _ = writeln!(
        out,
        "- Detected: {} by {}",
        time(m.detected.at),
        m.detected.actor
    );
    let notes: Vec<&TimelineEntry> = incident
        .timeline
        .iter()
        .filter(|e| e.kind == EntryKind::Note)
        .collect();
    let _ = writeln!(out, "- Notes: {}", notes.len());
    let _ = writeln!(out, "\n## Impact\n");
    let impact = match (&m.mitigated, &m.resolved) {
        (Some(end), _) => format!(
            "{} (from detection to mitigation)",
            duration(end.at - m.detected.at)
        ),
        (None, Some(end)) => format!("{} (until resolution)", duration(end.at - m.detected.at)),
        (None, None) => "ongoing".to_owned(),
    };
    let _ = writeln!(out, "- Duration: {impact}");
    let _ = writeln!(out, "- Alerts:\n");
    let _ = writeln!(out, "| alert | fingerprint | fired | resolved | firings |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for (fingerprint, a) in &incident.alerts {
        let _ = writeln!(
            out,
            "| {} | `{fingerprint}` | {} | {} | {} |",
            a.name,
            time(a.fired_at),
            a.resolved_at.map_or_else(|| "firing".to_owned(), time),
            a.firings
        );
    }
    let _ = writeln!(out, "\n## Milestones\n");
    let _ = writeln!(out, "| milestone | time | actor | since detection |");
    let _ = writeln!(out, "|---|---|---|---|");
    let rows = [
        ("detected", Some(&m.detected), Some(0)),
        (
            "acknowledged",
            m.acknowledged.as_ref(),
            m.time_to_acknowledge(),
        ),
        ("mitigated", m.mitigated.as_ref(), m.time_to_mitigate()),
        ("resolved", m.resolved.as_ref(), m.time_to_restore()),
    ];
    for (name, milestone, since) in rows {
        match milestone {
            Some(ms) => {
                let _ = writeln!(
                    out,
                    "| {name} | {} | {} | {} |",
                    time(ms.at),
                    ms.actor,
                    since.map_or_else(|| "-".to_owned(), duration)
                );
            }
            None => {
                let _ = writeln!(out, "| {name} | - | - | - |");
            }
        }
    }
    let figure = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), duration);
    let _ = writeln!(
        out,
        "\nTime to acknowledge: {}. Time to mitigate: {}. Time to restore: {}.",
        figure(m.time_to_acknowledge()),
        figure(m.time_to_mitigate()),
        figure(m.time_to_restore())
    );
    let _ = writeln!(out, "\n## Timeline\n");
    let _ = writeln!(out, "| time | actor | kind | what |");
    let _ = writeln!(out, "|---|---|---|---|");
    for e in &incident.timeline {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            time(e.at),
            e.actor,
            e.kind.as_str(),
            e.text.replace('|', "\\|").replace('\n', " ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: i64 = 1_795_000_000_000;

    fn scripted() -> Incident {
        let mut i = Incident::open(
            "api",
            "aaaa",
            "api-errors",
            T0,
            "api-errors fired (value 4.2)",
        );
        i.id = 7;
        i.record(
            T0 + 10_000,
            KILN,
            EntryKind::Runbook,
            "runbook restart-api: step restart",
        );
        assert_eq!(
            i.alert_fired("bbbb", "api-slo-page", T0 + 20_000, "api-slo-page fired"),
            Ok(())
        );
        assert_eq!(i.acknowledge(T0 + 90_000, "ann@laptop"), Ok(()));
        i.note(
            T0 + 100_000,
            "ann@laptop",
            "errors since the 12:00 deploy | rolling back",
        );
        i.record(
            T0 + 120_000,
            "ann@laptop",
            EntryKind::Rollback,
            "rollback of services.api",
        );
        assert!(i.alert_resolved("aaaa", T0 + 150_000, "api-errors resolved"));
        assert_eq!(i.state, IncidentState::Acknowledged);
        assert!(i.alert_resolved("bbbb", T0 + 180_000, "api-slo-page resolved"));
        assert_eq!(i.state, IncidentState::Mitigated { acknowledged: true });
        assert_eq!(
            i.resolve(T0 + 600_000, "ann@laptop", Some("rolled back; bad release")),
            Ok(())
        );
        i
    }

    #[test]
    fn a_scripted_incident_has_exact_milestones() {
        let i = scripted();
        assert_eq!(i.state, IncidentState::Resolved);
        assert_eq!(i.milestones.time_to_acknowledge(), Some(90_000));
        assert_eq!(i.milestones.time_to_mitigate(), Some(180_000));
        assert_eq!(i.milestones.time_to_restore(), Some(600_000));
        assert_eq!(
            i.milestones.resolved.as_ref().map(|m| m.actor.as_str()),
            Some("ann@laptop")
        );
        assert_eq!(
            i.milestones.mitigated.as_ref().map(|m| m.actor.as_str()),
            Some(KILN)
        );
        // Resolved is final.
        assert_eq!(
            i.clone().acknowledge(T0, "bob"),
            Err(IncidentError::Resolved(7))
        );
        assert!(
            !i.clone()
                .record(T0 + 700_000, KILN, EntryKind::Deploy, "late")
        );
    }

    #[test]
    fn the_post_incident_report() {
        insta::assert_snapshot!(report(&scripted()));
    }

    #[test]
    fn an_alert_firing_again_reopens_a_mitigated_incident() {
        let mut i = Incident::open("api", "aaaa", "api-errors", T0, "fired");
        assert!(i.alert_resolved("aaaa", T0 + 1_000, "resolved"));
        assert_eq!(
            i.state,
            IncidentState::Mitigated {
                acknowledged: false
            }
        );
        assert!(i.milestones.mitigated.is_some());
        assert_eq!(
            i.alert_fired("aaaa", "api-errors", T0 + 2_000, "fired again"),
            Ok(())
        );
        assert_eq!(i.state, IncidentState::Open);
        assert_eq!(i.milestones.mitigated, None, "the mitigation did not hold");
        assert_eq!(i.alerts["aaaa"].firings, 2);
        assert!(i.timeline.iter().any(|e| e.kind == EntryKind::Reopened));
        assert!(
            !i.resolve_if_quiet(T0 + 1_000_000, 1_000),
            "alerts fire: not quiet"
        );
        assert!(i.alert_resolved("aaaa", T0 + 3_000, "resolved"));
        assert!(!i.resolve_if_quiet(T0 + 3_999, 1_000));
        assert!(i.resolve_if_quiet(T0 + 4_000, 1_000));
        assert_eq!(i.milestones.time_to_mitigate(), Some(3_000));
        assert_eq!(
            i.milestones.resolved.as_ref().map(|m| m.actor.as_str()),
            Some(KILN)
        );
    }

    #[test]
    fn entries_keep_time_order_and_kinds_round_trip() {
        let mut i = Incident::open("api", "a", "x", T0, "fired");
        i.note(T0 + 5, "ann", "later");
        i.note(T0 + 2, "bob", "earlier, recorded late");
        let times: Vec<i64> = i.timeline.iter().map(|e| e.at).collect();
        assert_eq!(times, [T0, T0 + 2, T0 + 5]);
        for e in &i.timeline {
            assert_eq!(EntryKind::parse(e.kind.as_str()), Some(e.kind));
        }
        assert_eq!(EntryKind::parse("nope"), None);
        for s in ["open", "acknowledged", "mitigated", "resolved"] {
            assert_eq!(
                IncidentState::parse(s, true).map(IncidentState::as_str),
                Some(s)
            );
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Fire(u8),
        ResolveAlert(u8),
        Ack,
        Mitigate,
        Resolve,
        Note,
        Quiet(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3).prop_map(Op::Fire),
            (0u8..3).prop_map(Op::ResolveAlert),
            Just(Op::Ack),
            Just(Op::Mitigate),
            Just(Op::Resolve),
            Just(Op::Note),
            (0u16..100).prop_map(Op::Quiet),
        ]
    }

    proptest! {
        /// Whatever happens, in any order: milestones never precede detection, a resolved
        /// incident never changes again, mitigated means no alert fires (unless declared by
        /// hand), every acknowledgement and resolution is in the timeline, and the timeline
        /// stays in time order.
        #[test]
        fn the_state_machine_keeps_its_invariants(ops in proptest::collection::vec(op(), 0..40)) {
            let mut i = Incident::open("api", "f0", "alert0", T0, "fired");
            let mut now = T0;
            let mut hand_mitigated = false;
            for op in ops {
                now += 1_000;
                let before = i.clone();
                match op {
                    Op::Fire(n) => {
                        let r = i.alert_fired(&format!("f{n}"), &format!("alert{n}"), now, "fired");
                        prop_assert_eq!(r.is_err(), !before.is_open());
                        if r.is_ok() { hand_mitigated = false; }
                    }
                    Op::ResolveAlert(n) => { i.alert_resolved(&format!("f{n}"), now, "resolved"); }
                    Op::Ack => {
                        let r = i.acknowledge(now, "ann");
                        prop_assert_eq!(r.is_ok(), matches!(before.state,
                            IncidentState::Open | IncidentState::Mitigated { acknowledged: false }));
                    }
                    Op::Mitigate => {
                        if i.mitigate(now, "ann", "by hand").is_ok() { hand_mitigated = true; }
                    }
                    Op::Resolve => {
                        let r = i.resolve(now, "ann", None);
                        prop_assert_eq!(r.is_ok(), before.is_open());
                    }
                    Op::Note => i.note(now, "ann", "note"),
                    Op::Quiet(ms) => { i.resolve_if_quiet(now, u64::from(ms) * 100); }
                }
                if !before.is_open() {
                    let mut expected = before.clone();
                    if matches!(op, Op::Note) { expected.note(now, "ann", "note"); }
                    prop_assert_eq!(&i, &expected);
                }
                let m = &i.milestones;
                for later in [&m.acknowledged, &m.mitigated, &m.resolved].into_iter().flatten() {
                    prop_assert!(later.at >= m.detected.at);
                }
                match i.state {
                    IncidentState::Open | IncidentState::Acknowledged => {
                        prop_assert!(m.mitigated.is_none());
                        prop_assert!(!i.all_alerts_resolved());
                    }
                    IncidentState::Mitigated { acknowledged } => {
                        prop_assert!(m.mitigated.is_some());
                        prop_assert_eq!(acknowledged, m.acknowledged.is_some());
                        prop_assert!(hand_mitigated || i.all_alerts_resolved());
                    }
                    IncidentState::Resolved => {
                        prop_assert!(m.resolved.is_some() && m.mitigated.is_some());
                    }
                }
                if i.state == IncidentState::Open { prop_assert!(m.acknowledged.is_none()); }
                if i.state == IncidentState::Acknowledged { prop_assert!(m.acknowledged.is_some()); }
                prop_assert!(i.timeline.windows(2).all(|w| w[0].at <= w[1].at));
                let count = |k| i.timeline.iter().filter(|e| e.kind == k).count();
                prop_assert_eq!(count(EntryKind::Acknowledged), usize::from(m.acknowledged.is_some()));
                prop_assert_eq!(count(EntryKind::Resolved), usize::from(m.resolved.is_some()));
            }
        }
    }
}
