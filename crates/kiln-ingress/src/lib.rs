//! kiln-ingress: kiln's built-in HTTP reverse proxy.
//!
//! It routes requests by host (exact, wildcard, any) and longest path prefix to a route's
//! backend sets (one per release: "stable", "canary"), splits traffic between the sets by weight
//! (optionally pinned by a sticky cookie), balances over a set's endpoints (round robin or least
//! requests with two random choices), ejects endpoints that keep failing (passive health, never
//! the last one of a set), retries connect failures and idempotent 502/503/504 on another
//! endpoint within a retry budget, and records per route and set metrics.
//!
//! The control plane drives it through an [`IngressHandle`]: [`IngressHandle::swap`] replaces
//! the whole [`RouteTable`] atomically (requests in flight finish on the table they started
//! with), [`IngressHandle::set_endpoint_ready`] gates endpoints on active health,
//! [`IngressHandle::shutdown`] drains under a deadline.
//!
//! **Architecture invariants.** This crate depends on no other kiln crate (checked by
//! `tests/it/tidy.rs`). The request path takes no lock held across an await: the table is read
//! through `arc-swap` and kept as an `Arc` for the request's life; endpoint and metric state are
//! atomics. Locks (`std::sync::Mutex`) guard only the registries touched by swaps, snapshots
//! and the rare ejection decision. No input from a client or an upstream may panic the proxy.
//!
//! Module map: `config` (the declared table) → `table` (compiled, matched) → `proxy` (one
//! request) with `balance`, `health`, `budget`, `headers`, `body`, `upgrade`, `maintenance`
//! (a route's maintenance page), `pool` (upstream
//! HTTP/1.1 connections, kept per serving thread without locks); `metrics` (atomic
//! counters, snapshots, Prometheus text); `server` (accept loops, connections, their limits,
//! shutdown) with `client_io` (the client stream's send timeout), `tls` (rustls termination with the user's certificate) and `per_core` (a thread and runtime
//! per core, one listener whose connections go to the least-loaded thread).

mod balance;
mod body;
mod budget;
mod client_io;
mod config;
mod error;
mod h1;
mod headers;
mod health;
mod maintenance;
mod metrics;
mod per_core;
mod pool;
mod proxy;
mod rand;
mod server;
mod table;
mod tls;
mod upgrade;

pub use config::{
    BackendSet, Balance, Endpoint, HostMatch, Maintenance, OutlierPolicy, RetryPolicy, Route,
    RouteTable, Timeouts,
};
pub use error::TableError;
pub use health::{EndpointHealth, EndpointState};
pub use maintenance::{MAX_DERIVED_RETRY_AFTER, OPEN_ENDED_RETRY_AFTER};
pub use metrics::{
    ConnectionsClosed, HistogramSnapshot, LATENCY_BOUNDS, MetricsSnapshot, SetMetricsSnapshot,
    render_prometheus,
};
pub use per_core::ServingThread;
pub use server::{Ingress, IngressConfig, IngressHandle, Scheme, ShutdownReport};
pub use tls::{TlsError, TlsSettings};
