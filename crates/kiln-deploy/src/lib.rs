//! kiln-deploy: releases and deploys.
//!
//! - [`release`]: a release is an immutable, content-addressed snapshot of a service's code
//!   (`sha256:` of a manifest of its files), copied under `.kiln/releases/<hex>/`.
//! - [`Deployer`]: moves a service from the version it runs to a new one by a [`Strategy`]
//!   (rolling, blue-green, canary), gated on readiness, with automatic rollback. Each version
//!   runs as its own supervisor set (`service@version`); a [`Traffic`] implementation (the
//!   control plane's ingress) decides which sets serve.
//! - [`kept`]: the blue-green sets kept idle for an instant switch back, recorded through the
//!   [`KeptStore`] trait so that they survive a restart of the control plane.
//!
//! **Architecture invariant.** This crate depends on the supervisor's public API and nothing
//! else of kiln: not the ingress (it sees traffic through the [`Traffic`] trait), not the state
//! store (callers record the [`DeployReport`]; kept sets go through [`KeptStore`]), not the spec.

mod deployer;
pub mod kept;
pub mod release;
mod strategy;
mod traffic;

pub use deployer::{DeployReport, DeployRequest, DeployResult, Deployer, KeptRestore, set_name};
pub use kept::{KeptSet, KeptStore};
pub use strategy::{Canary, DeployConfig, Strategy};
pub use traffic::{NoTraffic, SetStats, Split, Traffic, TrafficFuture};
