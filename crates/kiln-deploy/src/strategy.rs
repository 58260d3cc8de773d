//! How a service moves from one release to the next: the `deploy:` block, typed.

use std::time::Duration;

/// A service's deploy settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployConfig {
    pub strategy: Strategy,
    /// The longest a new instance may take to become ready (and stay ready for
    /// `min_healthy_time`) before the deploy fails.
    pub healthy_deadline: Duration,
    /// How long a new instance must stay ready, without restarting, before it counts.
    pub min_healthy_time: Duration,
    /// A failed deploy returns to the previous release by itself.
    pub auto_rollback: bool,
    /// The longest the requests in flight on a retired instance may take before it is stopped.
    pub drain_timeout: Duration,
}

impl Default for DeployConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::Rolling {
                max_surge: 1,
                max_unavailable: 0,
            },
            healthy_deadline: Duration::from_secs(60),
            min_healthy_time: Duration::ZERO,
            auto_rollback: true,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// The three strategies.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Replace instances a few at a time; old and new serve side by side meanwhile.
    Rolling {
        /// Instances above the replica count allowed during the deploy.
        max_surge: u32,
        /// Instances below the replica count allowed during the deploy.
        max_unavailable: u32,
    },
    /// Start the whole new set, switch all traffic at once when it is ready, keep the old set
    /// (idle) for `keep_old` so a rollback is an instant switch back.
    BlueGreen { keep_old: Duration },
    /// Send a growing share of traffic to the new release, comparing it with the old one at
    /// every step; promote at the end or roll back at the first failed analysis.
    Canary(Canary),
}

impl Strategy {
    /// `rolling`, `blue-green` or `canary`.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Rolling { .. } => "rolling",
            Strategy::BlueGreen { .. } => "blue-green",
            Strategy::Canary(_) => "canary",
        }
    }
}

/// The canary's steps and its analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    /// Traffic percentages for the new release, increasing, each in 1..=99 (100 is the
    /// promotion that follows the last step).
    pub steps: Vec<u32>,
    /// How long each step runs before its analysis.
    pub pause: Duration,
    /// The canary fails when its error ratio (5xx share) exceeds the stable side's by more
    /// than this (0.01: one percentage point).
    pub max_error_increase: f64,
    /// The canary fails when its p99 latency exceeds the stable side's times this...
    pub max_latency_ratio: f64,
    /// ...and by more than this: a fresh process (cold caches, a JIT warming up) is a few
    /// milliseconds slower at first, which is not a regression.
    pub latency_slack: Duration,
    /// Fewer canary requests than this in a step make its traffic analysis inconclusive
    /// (recorded as such; health still counts).
    pub min_requests: u64,
}

impl Default for Canary {
    fn default() -> Self {
        Self {
            steps: vec![10, 50],
            pause: Duration::from_secs(30),
            max_error_increase: 0.01,
            max_latency_ratio: 1.5,
            latency_slack: Duration::from_millis(50),
            min_requests: 20,
        }
    }
}
