//! The guards, as pure functions of a ledger of runs and the time: whether a new run may
//! start. In order: a run with the same idempotency key already happened (an alert's firing
//! is delivered once more, e.g. after a reload) → duplicate; a run on the same target is in
//! flight → locked (one runbook at a time per target); the runbook ran `max_runs` times on
//! this target within `per` → rate limited (the caller escalates instead of looping); the
//! runbook touched `max_targets` other targets within `per` → blast radius. Dry runs are
//! never recorded, so they neither count nor lock.

use kiln_spec::runbooks::Guards;
use serde::Serialize;

/// A run asking to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The runbook.
    pub runbook: String,
    /// What it acts on (see [`crate::target_of`]).
    pub target: String,
    /// For runs started by an alert: runbook, target, the alert's fingerprint and when this
    /// firing began, so one firing starts one run and a new firing is a new occurrence.
    pub key: Option<String>,
}

/// What the guards decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Admission {
    /// It may start.
    Admit,
    /// The same occurrence already has a run.
    Duplicate {
        /// That run.
        run_id: String,
    },
    /// Another run holds the target.
    Locked {
        /// That run.
        run_id: String,
    },
    /// Too many runs on this target lately: escalate to a human.
    RateLimited {
        /// Runs within the window.
        runs: u32,
        /// The window (ms).
        per_ms: u64,
    },
    /// Too many targets lately.
    BlastRadius {
        /// Targets within the window.
        targets: u32,
        /// The window (ms).
        per_ms: u64,
    },
}

impl Admission {
    /// Why a refused run was refused, in words.
    pub fn reason(&self) -> String {
        match self {
            Admission::Admit => "admitted".into(),
            Admission::Duplicate { run_id } => {
                format!("this occurrence already has run {run_id}")
            }
            Admission::Locked { run_id } => format!("run {run_id} holds the target"),
            Admission::RateLimited { runs, per_ms } => format!(
                "{runs} runs on this target within {}: the guard stops here and escalates",
                human(*per_ms)
            ),
            Admission::BlastRadius { targets, per_ms } => format!(
                "already acted on {targets} targets within {}: the blast-radius guard stops here",
                human(*per_ms)
            ),
        }
    }
}

/// A duration in its largest whole unit: `1h`, `30m`, `45s`, `1500ms`.
pub use kiln_spec::units::format_duration as human;

/// One recorded run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its id.
    pub run_id: String,
    /// The runbook.
    pub runbook: String,
    /// Its target.
    pub target: String,
    /// Its idempotency key.
    pub key: Option<String>,
    /// When it started (ms).
    pub started_at: i64,
    /// Whether it is still in flight.
    pub active: bool,
}

/// The runs the guards remember.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    entries: Vec<Entry>,
}

impl Ledger {
    /// A ledger holding `entries` (e.g. the recent runs read back from the state store).
    pub fn new(entries: Vec<Entry>) -> Ledger {
        Ledger { entries }
    }

    /// What the guards say about `request` at `now`.
    pub fn admit(&self, guards: &Guards, request: &Request, now: i64) -> Admission {
        if let Some(key) = &request.key
            && let Some(e) = self.entries.iter().find(|e| e.key.as_ref() == Some(key))
        {
            return Admission::Duplicate {
                run_id: e.run_id.clone(),
            };
        }
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| e.active && e.target == request.target)
        {
            return Admission::Locked {
                run_id: e.run_id.clone(),
            };
        }
        let window_start = now.saturating_sub(i64::try_from(guards.per_ms).unwrap_or(i64::MAX));
        let recent = || {
            self.entries
                .iter()
                .filter(move |e| e.runbook == request.runbook && e.started_at > window_start)
        };
        let runs = recent().filter(|e| e.target == request.target).count();
        if runs >= guards.max_runs as usize {
            return Admission::RateLimited {
                runs: u32::try_from(runs).unwrap_or(u32::MAX),
                per_ms: guards.per_ms,
            };
        }
        let mut targets: Vec<&str> = recent().map(|e| e.target.as_str()).collect();
        targets.sort_unstable();
        targets.dedup();
        if !targets.contains(&request.target.as_str())
            && targets.len() >= guards.max_targets as usize
        {
            return Admission::BlastRadius {
                targets: u32::try_from(targets.len()).unwrap_or(u32::MAX),
                per_ms: guards.per_ms,
            };
        }
        Admission::Admit
    }

    /// Records an admitted run.
    pub fn started(&mut self, request: &Request, run_id: &str, now: i64) {
        self.entries.push(Entry {
            run_id: run_id.to_owned(),
            runbook: request.runbook.clone(),
            target: request.target.clone(),
            key: request.key.clone(),
            started_at: now,
            active: true,
        });
    }

    /// Releases a run's lock.
    pub fn finished(&mut self, run_id: &str) {
        for e in &mut self.entries {
            if e.run_id == run_id {
                e.active = false;
            }
        }
    }

    /// Forgets finished runs that started before `now - keep_ms` (the longest window in use).
    pub fn prune(&mut self, now: i64, keep_ms: u64) {
        let horizon = now.saturating_sub(i64::try_from(keep_ms).unwrap_or(i64::MAX));
        self.entries.retain(|e| e.active || e.started_at > horizon);
    }

    /// The runs remembered.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn guards(max_runs: u32, per_ms: u64, max_targets: u32) -> Guards {
        Guards {
            max_runs,
            per_ms,
            escalate: None,
            max_targets,
        }
    }

    fn request(target: &str, key: Option<&str>) -> Request {
        Request {
            runbook: "restart".into(),
            target: target.into(),
            key: key.map(str::to_owned),
        }
    }

    #[test]
    fn the_third_run_within_the_window_is_rate_limited_and_a_later_one_admitted() {
        let g = guards(2, 3_600_000, 5);
        let mut ledger = Ledger::default();
        for (i, at) in [0, 1_000].into_iter().enumerate() {
            let r = request("api", Some(&format!("k{i}")));
            assert_eq!(ledger.admit(&g, &r, at), Admission::Admit);
            ledger.started(&r, &format!("run{i}"), at);
            ledger.finished(&format!("run{i}"));
        }
        let third = request("api", Some("k2"));
        assert_eq!(
            ledger.admit(&g, &third, 2_000),
            Admission::RateLimited {
                runs: 2,
                per_ms: 3_600_000
            }
        );
        assert_eq!(ledger.admit(&g, &third, 3_601_001), Admission::Admit);
    }

    #[test]
    fn locks_duplicates_and_blast_radius() {
        let g = guards(5, 60_000, 2);
        let mut ledger = Ledger::default();
        let first = request("api", Some("alert-1"));
        ledger.started(&first, "r1", 0);
        assert_eq!(
            ledger.admit(&g, &request("api", None), 1),
            Admission::Locked {
                run_id: "r1".into()
            }
        );
        ledger.finished("r1");
        assert_eq!(
            ledger.admit(&g, &first, 2),
            Admission::Duplicate {
                run_id: "r1".into()
            }
        );
        ledger.started(&request("web", None), "r2", 3);
        ledger.finished("r2");
        assert_eq!(
            ledger.admit(&g, &request("db", None), 4),
            Admission::BlastRadius {
                targets: 2,
                per_ms: 60_000
            }
        );
        // A target already touched is within the radius.
        assert_eq!(ledger.admit(&g, &request("web", None), 4), Admission::Admit);
        ledger.prune(120_000, 60_000);
        assert!(ledger.entries().is_empty());
    }

    proptest! {
        /// Whatever arrives when, the ledger never admits more than `max_runs` runs of a
        /// target within any window of `per`, never two at once on a target, and never more
        /// than `max_targets` targets within a window.
        #[test]
        fn admitted_runs_respect_every_guard(
            max_runs in 1u32..4,
            max_targets in 1u32..4,
            arrivals in prop::collection::vec((0u8..4, 0i64..5_000, any::<bool>()), 1..60),
        ) {
            let per_ms = 10_000u64;
            let g = guards(max_runs, per_ms, max_targets);
            let mut ledger = Ledger::default();
            let mut now = 0i64;
            let mut admitted: Vec<(String, i64)> = Vec::new();
            let mut active: Option<String> = None;
            for (i, (target, gap, finish_first)) in arrivals.into_iter().enumerate() {
                now += gap;
                if finish_first && let Some(run) = active.take() {
                    ledger.finished(&run);
                }
                let r = request(&format!("t{target}"), None);
                if ledger.admit(&g, &r, now) == Admission::Admit {
                    prop_assert!(
                        !ledger.entries().iter().any(|e| e.active && e.target == r.target),
                        "admitted while the target was locked"
                    );
                    let id = format!("r{i}");
                    ledger.started(&r, &id, now);
                    if let Some(previous) = active.replace(id) {
                        ledger.finished(&previous);
                    }
                    admitted.push((r.target.clone(), now));
                }
                let in_window: Vec<&(String, i64)> = admitted
                    .iter()
                    .filter(|(_, at)| *at > now - per_ms as i64)
                    .collect();
                let mut targets: Vec<&str> = in_window.iter().map(|(t, _)| t.as_str()).collect();
                targets.sort_unstable();
                targets.dedup();
                prop_assert!(targets.len() <= max_targets as usize);
                for t in &targets {
                    let runs = in_window.iter().filter(|(x, _)| x == t).count();
                    prop_assert!(runs <= max_runs as usize);
                }
            }
        }
    }
}
