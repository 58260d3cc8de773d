//! Rule evaluation: each rule's expression is queried at `now` through a [`Querier`]; each
//! element of the result is an alert (its labels plus the rule's, plus `alertname`), whose
//! state steps through its lifecycle. Alerts that resolved stay listed for
//! [`RESOLVED_RETENTION_MS`] so that their resolution can be notified, as Prometheus keeps them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::lifecycle::{AlertState, Phase};
use crate::rule::Rule;
use crate::template::render;
use crate::{LabelSet, fingerprint};

/// How long a resolved alert stays listed (Prometheus's `resolvedRetention`).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60_000;

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Its labels (`__name__` included when it has one).
    pub labels: LabelSet,
    /// Its value.
    pub value: f64,
}

/// Where rule expressions are evaluated. A scalar result is one sample with no labels.
pub trait Querier {
    /// The instant vector `expr` gives at `at_ms`, or why it could not be computed.
    fn query(&self, expr: &str, at_ms: i64) -> Result<Vec<Sample>, String>;
}

/// An alert the evaluator tracks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// The rule's name (`alertname`).
    pub name: String,
    /// All its labels.
    pub labels: LabelSet,
    /// Its rendered annotations.
    pub annotations: LabelSet,
    /// The latest value of its element.
    pub value: f64,
    /// Its identity.
    pub fingerprint: String,
    /// Its state's name.
    pub phase: Phase,
    /// When it entered that state (ms).
    pub since: i64,
    /// When it first became active (ms): Alertmanager's `startsAt`.
    pub active_at: i64,
    /// When it resolved (ms), once it has.
    pub resolved_at: Option<i64>,
    /// The runbook named by its rule.
    pub runbook: Option<String>,
    #[serde(skip)]
    state: AlertState,
}

/// An alert as kept across restarts of the evaluator.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedAlert {
    /// Its rule's [`Rule::identity`].
    pub rule: String,
    /// `alertname`.
    pub name: String,
    /// Its identity.
    pub fingerprint: String,
    /// All its labels.
    pub labels: LabelSet,
    /// Its rendered annotations.
    pub annotations: LabelSet,
    /// Its latest value.
    pub value: f64,
    /// Where it is in its lifecycle.
    pub state: AlertState,
}

/// A change of an alert's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// `alertname`.
    pub name: String,
    /// Its identity.
    pub fingerprint: String,
    /// Its labels.
    pub labels: LabelSet,
    /// The state it left.
    pub from: Phase,
    /// The state it entered.
    pub to: Phase,
    /// When (ms).
    pub at: i64,
    /// Its value then.
    pub value: f64,
}

/// What one evaluation did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalReport {
    /// State changes, in rule order.
    pub transitions: Vec<Transition>,
    /// Rules whose query failed: (alert name, why). Their alerts keep their state.
    pub errors: Vec<(String, String)>,
}

/// Owns every rule's alerts.
#[derive(Debug, Default)]
pub struct Evaluator {
    rules: Vec<Rule>,
    /// Per rule, its alerts by fingerprint.
    alerts: Vec<BTreeMap<String, Alert>>,
}

impl Evaluator {
    /// An evaluator for these rules, with no alerts yet.
    pub fn new(rules: Vec<Rule>) -> Evaluator {
        let alerts = vec![BTreeMap::new(); rules.len()];
        Evaluator { rules, alerts }
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Replaces the rules; a rule that did not change keeps its alerts.
    pub fn set_rules(&mut self, rules: Vec<Rule>) {
        let mut old: Vec<(Rule, BTreeMap<String, Alert>)> = std::mem::take(&mut self.rules)
            .into_iter()
            .zip(std::mem::take(&mut self.alerts))
            .collect();
        self.alerts = rules
            .iter()
            .map(|rule| match old.iter().position(|(r, _)| r == rule) {
                Some(i) => old.swap_remove(i).1,
                None => BTreeMap::new(),
            })
            .collect();
        self.rules = rules;
    }

    /// Every pending, firing and recently resolved alert, by rule then fingerprint.
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.iter().flat_map(BTreeMap::values)
    }

    /// Every alert, as it would be saved.
    pub fn saved(&self) -> Vec<SavedAlert> {
        self.rules
            .iter()
            .zip(&self.alerts)
            .flat_map(|(rule, alerts)| {
                let identity = rule.identity();
                alerts.values().map(move |a| SavedAlert {
                    rule: identity.clone(),
                    name: a.name.clone(),
                    fingerprint: a.fingerprint.clone(),
                    labels: a.labels.clone(),
                    annotations: a.annotations.clone(),
                    value: a.value,
                    state: a.state,
                })
            })
            .collect()
    }

    /// Takes back alerts saved by an evaluator that stopped `downtime_ms` ago (see
    /// [`AlertState::restored`] for what the downtime does to their clocks), without
    /// transitions: a firing alert is not fired again. Alerts of rules that no longer exist
    /// (by [`Rule::identity`]) are dropped, as [`Evaluator::set_rules`] drops them. Returns
    /// how many were taken back.
    pub fn restore(&mut self, saved: Vec<SavedAlert>, downtime_ms: i64) -> usize {
        let identities: Vec<String> = self.rules.iter().map(Rule::identity).collect();
        let mut restored = 0;
        for s in saved {
            let Some(i) = identities.iter().position(|id| *id == s.rule) else {
                continue;
            };
            let state = s.state.restored(downtime_ms);
            let (since, active_at, resolved_at) = match state {
                AlertState::Inactive => continue,
                AlertState::Pending { active_since } => (active_since, active_since, None),
                AlertState::Firing {
                    active_since,
                    fired_at,
                    ..
                } => (fired_at, active_since, None),
                AlertState::Resolved {
                    fired_at,
                    resolved_at,
                } => (resolved_at, fired_at, Some(resolved_at)),
            };
            self.alerts[i].insert(
                s.fingerprint.clone(),
                Alert {
                    name: s.name,
                    labels: s.labels,
                    annotations: s.annotations,
                    value: s.value,
                    fingerprint: s.fingerprint,
                    phase: state.phase(),
                    since,
                    active_at,
                    resolved_at,
                    runbook: self.rules[i].runbook.clone(),
                    state,
                },
            );
            restored += 1;
        }
        restored
    }

    /// Evaluates every rule at `now`.
    pub fn evaluate(&mut self, querier: &dyn Querier, now: i64) -> EvalReport {
        let mut report = EvalReport::default();
        for (rule, alerts) in self.rules.iter().zip(self.alerts.iter_mut()) {
            match querier.query(&rule.expr, now) {
                Ok(samples) => step_rule(rule, alerts, &samples, now, &mut report.transitions),
                Err(why) => report.errors.push((rule.name.clone(), why)),
            }
        }
        report
    }
}

fn step_rule(
    rule: &Rule,
    alerts: &mut BTreeMap<String, Alert>,
    samples: &[Sample],
    now: i64,
    transitions: &mut Vec<Transition>,
) {
    let mut present: BTreeMap<String, (LabelSet, LabelSet, f64)> = BTreeMap::new();
    for sample in samples {
        let mut labels = sample.labels.clone();
        labels.remove("__name__");
        for (name, template) in &rule.labels {
            labels.insert(name.clone(), render(template, &sample.labels, sample.value));
        }
        labels.insert("alertname".into(), rule.name.clone());
        let annotations = rule
            .annotations
            .iter()
            .map(|(k, t)| (k.clone(), render(t, &sample.labels, sample.value)))
            .collect();
        present
            .entry(fingerprint(&labels))
            .or_insert((labels, annotations, sample.value));
    }
    let mut step = |alert: &mut Alert, is_present: bool| {
        let before = alert.state;
        alert.state = before.step(is_present, now, rule.for_ms, rule.keep_firing_for_ms);
        if before.phase() != alert.state.phase() {
            alert.phase = alert.state.phase();
            alert.since = now;
            if let AlertState::Pending { active_since } | AlertState::Firing { active_since, .. } =
                alert.state
            {
                alert.active_at = active_since;
            }
            alert.resolved_at = match alert.state {
                AlertState::Resolved { resolved_at, .. } => Some(resolved_at),
                _ => None,
            };
            transitions.push(Transition {
                name: rule.name.clone(),
                fingerprint: alert.fingerprint.clone(),
                labels: alert.labels.clone(),
                from: before.phase(),
                to: alert.phase,
                at: now,
                value: alert.value,
            });
        }
    };
    for (fp, alert) in alerts.iter_mut() {
        if !present.contains_key(fp) {
            step(alert, false);
        }
    }
    for (fp, (labels, annotations, value)) in present {
        let alert = alerts.entry(fp.clone()).or_insert_with(|| Alert {
            name: rule.name.clone(),
            labels,
            annotations: LabelSet::new(),
            value,
            fingerprint: fp,
            phase: Phase::Inactive,
            since: now,
            active_at: now,
            resolved_at: None,
            runbook: rule.runbook.clone(),
            state: AlertState::Inactive,
        });
        alert.value = value;
        alert.annotations = annotations;
        step(alert, true);
    }
    alerts.retain(|_, a| match a.state {
        AlertState::Inactive => false,
        AlertState::Resolved { resolved_at, .. } => now - resolved_at <= RESOLVED_RETENTION_MS,
        _ => true,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Answers each query with the samples set for it.
    #[derive(Default)]
    struct Fake {
        answers: RefCell<BTreeMap<String, Result<Vec<Sample>, String>>>,
    }

    impl Fake {
        fn set(&self, expr: &str, samples: &[(&[(&str, &str)], f64)]) {
            let samples = samples
                .iter()
                .map(|(labels, value)| Sample {
                    labels: labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    value: *value,
                })
                .collect();
            self.answers.borrow_mut().insert(expr.into(), Ok(samples));
        }
    }

    impl Querier for Fake {
        fn query(&self, expr: &str, _at_ms: i64) -> Result<Vec<Sample>, String> {
            self.answers
                .borrow()
                .get(expr)
                .cloned()
                .unwrap_or_else(|| Ok(Vec::new()))
        }
    }

    fn rule(for_ms: u64, keep_ms: u64) -> Rule {
        Rule {
            name: "errors".into(),
            group: "kiln".into(),
            expr: "errors > 0".into(),
            for_ms,
            keep_firing_for_ms: keep_ms,
            labels: [("severity".to_owned(), "page".to_owned())].into(),
            annotations: [(
                "summary".to_owned(),
                "{{ $labels.route }} fails at {{ $value }}/s".to_owned(),
            )]
            .into(),
            runbook: None,
        }
    }

    #[test]
    fn alerts_per_series_with_rule_labels_and_rendered_annotations() {
        let fake = Fake::default();
        let mut ev = Evaluator::new(vec![rule(10_000, 0)]);
        fake.set(
            "errors > 0",
            &[
                (&[("__name__", "errors"), ("route", "a")], 2.0),
                (&[("__name__", "errors"), ("route", "b")], 0.5),
            ],
        );
        let report = ev.evaluate(&fake, 0);
        assert_eq!(report.transitions.len(), 2);
        assert!(report.transitions.iter().all(|t| t.to == Phase::Pending));
        let a = ev.alerts().next().unwrap_or_else(|| panic!("no alert"));
        assert_eq!(
            a.labels,
            [
                ("alertname", "errors"),
                ("route", "a"),
                ("severity", "page")
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect::<LabelSet>()
        );
        assert_eq!(a.annotations["summary"], "a fails at 2/s");
        // `b` goes away before `for`: it ends without firing; `a` fires.
        fake.set(
            "errors > 0",
            &[(&[("__name__", "errors"), ("route", "a")], 3.0)],
        );
        let report = ev.evaluate(&fake, 10_000);
        let moves: Vec<(Phase, Phase)> =
            report.transitions.iter().map(|t| (t.from, t.to)).collect();
        assert_eq!(
            moves,
            [
                (Phase::Pending, Phase::Inactive),
                (Phase::Pending, Phase::Firing)
            ]
        );
        assert_eq!(ev.alerts().count(), 1);
        fake.set("errors > 0", &[]);
        let report = ev.evaluate(&fake, 15_000);
        assert_eq!(report.transitions[0].to, Phase::Resolved);
        let resolved = ev.alerts().next().unwrap_or_else(|| panic!("kept"));
        assert_eq!(
            (resolved.active_at, resolved.resolved_at),
            (0, Some(15_000))
        );
        ev.evaluate(&fake, 15_000 + RESOLVED_RETENTION_MS + 1);
        assert_eq!(ev.alerts().count(), 0, "dropped after the retention");
    }

    #[test]
    fn restored_alerts_keep_firing_without_a_transition_and_resolve_normally() {
        let fake = Fake::default();
        let mut ev = Evaluator::new(vec![rule(10_000, 0)]);
        fake.set(
            "errors > 0",
            &[(&[("route", "a")], 1.0), (&[("route", "b")], 1.0)],
        );
        ev.evaluate(&fake, 0);
        fake.set("errors > 0", &[(&[("route", "a")], 1.0)]);
        ev.evaluate(&fake, 10_000);
        fake.set(
            "errors > 0",
            &[(&[("route", "a")], 1.0), (&[("route", "b")], 1.0)],
        );
        ev.evaluate(&fake, 14_000);
        ev.evaluate(&fake, 20_000);
        let saved = ev.saved();
        assert_eq!(
            saved.iter().map(|s| s.state.phase()).collect::<Vec<_>>(),
            [Phase::Firing, Phase::Pending]
        );
        // Back after 60 s down, with a rule that changed beside it.
        let mut other = rule(0, 0);
        other.name = "other".into();
        other.expr = "other > 0".into();
        let mut back = Evaluator::new(vec![other.clone(), rule(10_000, 0)]);
        assert_eq!(back.restore(saved.clone(), 60_000), 2);
        let report = back.evaluate(&fake, 80_000);
        assert!(
            report.transitions.is_empty(),
            "a still fires, and b has had 6 s of its 10 s: {:?}",
            report.transitions
        );
        let report = back.evaluate(&fake, 84_000);
        assert_eq!(
            report
                .transitions
                .iter()
                .map(|t| (t.labels["route"].as_str(), t.to))
                .collect::<Vec<_>>(),
            [("b", Phase::Firing)]
        );
        fake.set("errors > 0", &[]);
        let report = back.evaluate(&fake, 85_000);
        assert_eq!(report.transitions.len(), 2);
        assert!(report.transitions.iter().all(|t| t.to == Phase::Resolved));
        // A rule whose expression changed does not take the old alerts.
        let mut changed = rule(10_000, 0);
        changed.expr = "errors > 1".into();
        assert_eq!(Evaluator::new(vec![changed]).restore(saved, 0), 0);
    }

    #[test]
    fn a_failed_query_keeps_the_state_and_unchanged_rules_keep_their_alerts() {
        let fake = Fake::default();
        let mut ev = Evaluator::new(vec![rule(0, 0)]);
        fake.set("errors > 0", &[(&[("route", "a")], 1.0)]);
        ev.evaluate(&fake, 0);
        fake.answers
            .borrow_mut()
            .insert("errors > 0".into(), Err("store closed".into()));
        let report = ev.evaluate(&fake, 1_000);
        assert_eq!(
            report.errors,
            [("errors".to_owned(), "store closed".to_owned())]
        );
        assert_eq!(ev.alerts().next().map(|a| a.phase), Some(Phase::Firing));
        ev.set_rules(vec![rule(0, 0)]);
        assert_eq!(ev.alerts().count(), 1);
        ev.set_rules(vec![rule(5, 0)]);
        assert_eq!(ev.alerts().count(), 0, "a changed rule starts over");
    }
}
