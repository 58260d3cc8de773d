//! One alert's lifecycle, as Prometheus runs it: an element of a rule's result becomes
//! **pending**; once it has been present for `for`, it is **firing**; when it is gone it is
//! **resolved**, unless it was firing and `keep_firing_for` has not passed since it went
//! away. A pending alert whose element goes away simply ends (it never fired, so nobody is
//! told). [`AlertState::step`] is the one way to move between states.

use serde::Serialize;

/// Where an alert is in its lifecycle. Times are ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AlertState {
    /// Not present (or never seen).
    Inactive,
    /// Present since `active_since`, not yet for `for`.
    Pending {
        /// The first evaluation it was present at.
        active_since: i64,
    },
    /// Firing.
    Firing {
        /// The first evaluation it was present at.
        active_since: i64,
        /// When it started firing.
        fired_at: i64,
        /// The first evaluation it was absent at while `keep_firing_for` holds it.
        keep_firing_since: Option<i64>,
    },
    /// Was firing, stopped at `resolved_at`.
    Resolved {
        /// When it started firing.
        fired_at: i64,
        /// When it stopped.
        resolved_at: i64,
    },
}

/// The name of a state, for the CLI, events and payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// [`AlertState::Inactive`]
    Inactive,
    /// [`AlertState::Pending`]
    Pending,
    /// [`AlertState::Firing`]
    Firing,
    /// [`AlertState::Resolved`]
    Resolved,
}

impl Phase {
    /// The name as shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Inactive => "inactive",
            Phase::Pending => "pending",
            Phase::Firing => "firing",
            Phase::Resolved => "resolved",
        }
    }
}

impl AlertState {
    /// The state's name.
    pub fn phase(&self) -> Phase {
        match self {
            AlertState::Inactive => Phase::Inactive,
            AlertState::Pending { .. } => Phase::Pending,
            AlertState::Firing { .. } => Phase::Firing,
            AlertState::Resolved { .. } => Phase::Resolved,
        }
    }

    /// The state restored after the evaluator was down for `downtime_ms`, by Prometheus's
    /// restore rule without its grace period: time spent down does not count towards `for` or
    /// `keep_firing_for`, time spent before does. A pending alert keeps the part of `for` that
    /// had elapsed (its active time moves forward by the downtime); a firing alert keeps
    /// firing with its times as they were (it is not fired, so not announced, again), and a
    /// `keep_firing_for` clock that had started keeps what had elapsed the same way.
    pub fn restored(self, downtime_ms: i64) -> AlertState {
        let downtime = downtime_ms.max(0);
        match self {
            AlertState::Pending { active_since } => AlertState::Pending {
                active_since: active_since.saturating_add(downtime),
            },
            AlertState::Firing {
                active_since,
                fired_at,
                keep_firing_since,
            } => AlertState::Firing {
                active_since,
                fired_at,
                keep_firing_since: keep_firing_since.map(|s| s.saturating_add(downtime)),
            },
            AlertState::Inactive | AlertState::Resolved { .. } => self,
        }
    }

    /// The state after an evaluation at `now` in which the alert's element was `present` or not.
    pub fn step(self, present: bool, now: i64, for_ms: u64, keep_firing_for_ms: u64) -> AlertState {
        let held = |since: i64, span: u64| {
            now.saturating_sub(since) >= i64::try_from(span).unwrap_or(i64::MAX)
        };
        match (self, present) {
            (AlertState::Inactive | AlertState::Resolved { .. }, true) => {
                AlertState::Pending { active_since: now }.step(
                    true,
                    now,
                    for_ms,
                    keep_firing_for_ms,
                )
            }
            (AlertState::Pending { active_since }, true) => {
                if held(active_since, for_ms) {
                    AlertState::Firing {
                        active_since,
                        fired_at: now,
                        keep_firing_since: None,
                    }
                } else {
                    self
                }
            }
            (
                AlertState::Firing {
                    active_since,
                    fired_at,
                    ..
                },
                true,
            ) => AlertState::Firing {
                active_since,
                fired_at,
                keep_firing_since: None,
            },
            (AlertState::Inactive | AlertState::Resolved { .. }, false) => self,
            (AlertState::Pending { .. }, false) => AlertState::Inactive,
            (
                AlertState::Firing {
                    active_since,
                    fired_at,
                    keep_firing_since,
                },
                false,
            ) => {
                let since = keep_firing_since.unwrap_or(now);
                if keep_firing_for_ms > 0 && !held(since, keep_firing_for_ms) {
                    AlertState::Firing {
                        active_since,
                        fired_at,
                        keep_firing_since: Some(since),
                    }
                } else {
                    AlertState::Resolved {
                        fired_at,
                        resolved_at: now,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn for_and_keep_firing_for() {
        let s = AlertState::Inactive.step(true, 0, 10, 20);
        assert_eq!(s, AlertState::Pending { active_since: 0 });
        let s = s.step(true, 5, 10, 20);
        assert_eq!(s.phase(), Phase::Pending);
        let s = s.step(true, 10, 10, 20);
        assert_eq!(
            s,
            AlertState::Firing {
                active_since: 0,
                fired_at: 10,
                keep_firing_since: None
            }
        );
        let s = s.step(false, 15, 10, 20);
        assert_eq!(s.phase(), Phase::Firing);
        let s = s.step(false, 34, 10, 20);
        assert_eq!(s.phase(), Phase::Firing);
        let s = s.step(false, 35, 10, 20);
        assert_eq!(
            s,
            AlertState::Resolved {
                fired_at: 10,
                resolved_at: 35
            }
        );
        // Present again: a new pending alert, not a return to firing.
        assert_eq!(
            s.step(true, 40, 10, 20),
            AlertState::Pending { active_since: 40 }
        );
    }

    #[test]
    fn without_for_it_fires_at_once_and_pending_alerts_just_end() {
        assert_eq!(
            AlertState::Inactive.step(true, 7, 0, 0).phase(),
            Phase::Firing
        );
        let pending = AlertState::Inactive.step(true, 0, 100, 0);
        assert_eq!(pending.step(false, 1, 100, 0), AlertState::Inactive);
    }

    #[test]
    fn a_restored_pending_alert_keeps_the_elapsed_part_of_for_and_firing_stays_firing() {
        // Pending for 6 s of a 10 s `for`, then down for 60 s: 4 s more of presence fire it.
        let pending = AlertState::Pending { active_since: 0 }.restored(60_000);
        assert_eq!(
            pending,
            AlertState::Pending {
                active_since: 60_000
            }
        );
        let back_at = 6_000 + 60_000;
        assert_eq!(
            pending.step(true, back_at, 10_000, 0).phase(),
            Phase::Pending
        );
        assert_eq!(
            pending.step(true, back_at + 4_000, 10_000, 0).phase(),
            Phase::Firing
        );
        let firing = AlertState::Firing {
            active_since: 0,
            fired_at: 10_000,
            keep_firing_since: Some(20_000),
        };
        assert_eq!(
            firing.restored(5_000),
            AlertState::Firing {
                active_since: 0,
                fired_at: 10_000,
                keep_firing_since: Some(25_000)
            }
        );
        let resolved = AlertState::Resolved {
            fired_at: 1,
            resolved_at: 2,
        };
        assert_eq!(resolved.restored(5_000), resolved);
        assert_eq!(
            AlertState::Pending { active_since: 7 }.restored(-3),
            AlertState::Pending { active_since: 7 },
            "a clock that went back is no downtime"
        );
    }

    /// A random run: (time step in ms, present?) pairs, with random `for` and `keep_firing_for`.
    fn runs() -> impl Strategy<Value = (u64, u64, Vec<(u16, bool)>)> {
        (
            0u64..50,
            0u64..50,
            proptest::collection::vec((1u16..20, any::<bool>()), 1..80),
        )
    }

    proptest! {
        #[test]
        fn lifecycle_invariants((for_ms, keep_ms, evals) in runs()) {
            let mut state = AlertState::Inactive;
            let mut now: i64 = 0;
            // When the current unbroken stretch of presence began, and when the latest
            // stretch of absence began.
            let mut present_since: Option<i64> = None;
            let mut absent_since: Option<i64> = None;
            for (dt, present) in evals {
                now += i64::from(dt);
                if present {
                    present_since.get_or_insert(now);
                    absent_since = None;
                } else {
                    present_since = None;
                    absent_since.get_or_insert(now);
                }
                let before = state;
                state = state.step(present, now, for_ms, keep_ms);
                match (before.phase(), state.phase()) {
                    // Never firing before `for` has elapsed over unbroken presence.
                    (Phase::Inactive | Phase::Pending | Phase::Resolved, Phase::Firing) => {
                        prop_assert!(present);
                        let since = present_since.unwrap_or(now);
                        prop_assert!(now - since >= for_ms as i64, "fired after {} < for {}", now - since, for_ms);
                    }
                    // Resolved only from firing, once absent for keep_firing_for.
                    (from, Phase::Resolved) if from != Phase::Resolved => {
                        prop_assert_eq!(from, Phase::Firing);
                        prop_assert!(!present);
                        let since = absent_since.unwrap_or(now);
                        prop_assert!(now - since >= keep_ms as i64);
                    }
                    // A firing alert keeps firing while present or within keep_firing_for.
                    (Phase::Firing, Phase::Firing) => {
                        let since = absent_since.unwrap_or(now);
                        prop_assert!(present || now - since < keep_ms as i64);
                    }
                    (Phase::Pending, Phase::Inactive) => prop_assert!(!present),
                    (Phase::Firing, Phase::Inactive | Phase::Pending) => {
                        prop_assert!(false, "firing must resolve, not vanish");
                    }
                    _ => {}
                }
                // Pending means present and not yet for `for`.
                if let AlertState::Pending { active_since } = state {
                    prop_assert!(present);
                    prop_assert_eq!(Some(active_since), present_since);
                    prop_assert!(now - active_since < for_ms as i64);
                }
                // Present for at least `for` means firing.
                if let Some(since) = present_since
                    && now - since >= for_ms as i64
                {
                    prop_assert_eq!(state.phase(), Phase::Firing);
                }
            }
        }
    }
}
