//! kiln-api: the web dashboard. It owns the dashboard's assets (HTML, CSS and vanilla
//! JavaScript, embedded in the binary: no CDN, no Node.js build step) and an axum [`Router`]
//! serving them and a read-only JSON API over the [`DashboardData`] trait, which the `kiln`
//! binary implements over its engines.
//!
//! **Architecture invariant:** this crate depends on nothing of kiln. Everything crosses the
//! trait as this crate's own view types ([`view`]), so the engines stay free to change
//! their insides. What the dashboard computes itself (uptime over a window, per-route request
//! rate and error ratio, the PromQL of each chart) is pure and tested here with a fake source.
//!
//! [`Router`]: axum::Router

mod assets;
pub mod charts;
pub mod markdown;
mod router;
pub mod uptime;
pub mod view;

pub use router::{DashboardData, DataError, router};
