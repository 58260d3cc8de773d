//! The life of a run as an enum with one step function: which step runs, which attempt, what
//! failed and was let through (`on_failure: continue`), and how it ended. The executor feeds
//! it each attempt's outcome; nothing else moves a run.

use kiln_spec::runbooks::{OnFailure, StepDecl};
use serde::Serialize;

/// Where a run is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Attempt `attempt` (from 1) of step `index` is to run.
    Step {
        /// The step.
        index: usize,
        /// The attempt.
        attempt: u32,
        /// Earlier steps that failed with `on_failure: continue`.
        failed: Vec<usize>,
    },
    /// Every step ran; those in `failed` failed and were let through.
    Finished {
        /// Steps that failed with `on_failure: continue`.
        failed: Vec<usize>,
    },
    /// Step `index` failed after its retries and stopped the run.
    Aborted {
        /// The step.
        index: usize,
        /// Its last error.
        error: String,
        /// The runbook its `on_failure:` names, to run before the run ends.
        fallback: Option<String>,
    },
}

impl Phase {
    /// A run of `steps` before its first attempt.
    pub fn start(steps: &[StepDecl]) -> Phase {
        Phase::first_from(0, steps.len(), Vec::new())
    }

    fn first_from(index: usize, len: usize, failed: Vec<usize>) -> Phase {
        if index < len {
            Phase::Step {
                index,
                attempt: 1,
                failed,
            }
        } else {
            Phase::Finished { failed }
        }
    }

    /// The phase after the current attempt ended with `outcome`. A finished or aborted run
    /// stays as it is.
    pub fn next(self, steps: &[StepDecl], outcome: Result<(), String>) -> Phase {
        let Phase::Step {
            index,
            attempt,
            mut failed,
        } = self
        else {
            return self;
        };
        let Some(step) = steps.get(index) else {
            return Phase::Finished { failed };
        };
        match outcome {
            Ok(()) => Phase::first_from(index + 1, steps.len(), failed),
            Err(_) if attempt <= step.retries => Phase::Step {
                index,
                attempt: attempt + 1,
                failed,
            },
            Err(error) => match &step.on_failure {
                OnFailure::Continue => {
                    failed.push(index);
                    Phase::first_from(index + 1, steps.len(), failed)
                }
                OnFailure::Abort => Phase::Aborted {
                    index,
                    error,
                    fallback: None,
                },
                OnFailure::Runbook(name) => Phase::Aborted {
                    index,
                    error,
                    fallback: Some(name.clone()),
                },
            },
        }
    }

    /// Whether the run is over.
    pub fn is_over(&self) -> bool {
        !matches!(self, Phase::Step { .. })
    }

    /// `succeeded`, `failed` (a step let through failed) or `aborted`, once over; `running`
    /// before.
    pub fn status(&self) -> &'static str {
        match self {
            Phase::Step { .. } => "running",
            Phase::Finished { failed } if failed.is_empty() => "succeeded",
            Phase::Finished { .. } => "failed",
            Phase::Aborted { .. } => "aborted",
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kiln_spec::runbooks::Action;
    use proptest::prelude::*;

    pub(crate) fn step(retries: u32, on_failure: OnFailure) -> StepDecl {
        StepDecl {
            name: "s".into(),
            action: Action::Restart {
                service: "api".into(),
            },
            timeout_ms: 1_000,
            retries,
            on_failure,
        }
    }

    #[test]
    fn a_failing_step_is_retried_then_aborts_or_continues() {
        let steps = vec![
            step(1, OnFailure::Continue),
            step(0, OnFailure::Runbook("page".into())),
        ];
        let err = || Err("boom".to_owned());
        let p = Phase::start(&steps).next(&steps, err());
        assert_eq!(
            p,
            Phase::Step {
                index: 0,
                attempt: 2,
                failed: vec![]
            }
        );
        let p = p.next(&steps, err());
        assert_eq!(
            p,
            Phase::Step {
                index: 1,
                attempt: 1,
                failed: vec![0]
            }
        );
        let p = p.next(&steps, err());
        assert_eq!(
            p,
            Phase::Aborted {
                index: 1,
                error: "boom".into(),
                fallback: Some("page".into())
            }
        );
        assert_eq!(p.status(), "aborted");
        assert_eq!(Phase::start(&[]).status(), "succeeded");
    }

    fn on_failure() -> impl Strategy<Value = OnFailure> {
        prop_oneof![
            Just(OnFailure::Abort),
            Just(OnFailure::Continue),
            Just(OnFailure::Runbook("fallback".into())),
        ]
    }

    proptest! {
        /// Whatever the outcomes, a run ends within the sum of its steps' attempts, never
        /// attempts a step more than `retries + 1` times, and ends as its policies say.
        #[test]
        fn runs_end_within_their_attempts_and_as_their_policies_say(
            policies in prop::collection::vec((0u32..4, on_failure()), 0..8),
            outcomes in prop::collection::vec(any::<bool>(), 0..64),
        ) {
            let steps: Vec<StepDecl> = policies.iter().map(|(r, f)| step(*r, f.clone())).collect();
            let budget: u32 = steps.iter().map(|s| s.retries + 1).sum();
            let mut phase = Phase::start(&steps);
            let mut moves = 0u32;
            let mut outcomes = outcomes.into_iter().chain(std::iter::repeat(false));
            let mut last_error_step = None;
            while !phase.is_over() {
                prop_assert!(moves < budget, "more moves than attempts allowed");
                let Phase::Step { index, attempt, .. } = &phase else { break };
                prop_assert!(*attempt <= steps[*index].retries + 1);
                let ok = outcomes.next().unwrap_or(false);
                last_error_step = (!ok).then_some(*index);
                phase = phase.next(&steps, if ok { Ok(()) } else { Err("x".into()) });
                moves += 1;
            }
            match &phase {
                Phase::Finished { failed } => {
                    for i in failed {
                        prop_assert_eq!(&steps[*i].on_failure, &OnFailure::Continue);
                    }
                }
                Phase::Aborted { index, fallback, .. } => {
                    prop_assert_eq!(Some(*index), last_error_step);
                    prop_assert_ne!(&steps[*index].on_failure, &OnFailure::Continue);
                    prop_assert_eq!(fallback.is_some(), matches!(steps[*index].on_failure, OnFailure::Runbook(_)));
                }
                Phase::Step { .. } => prop_assert!(false, "the loop ends only when the run is over"),
            }
            // An ended run stays ended.
            prop_assert_eq!(phase.clone().next(&steps, Ok(())), phase);
        }
    }
}
