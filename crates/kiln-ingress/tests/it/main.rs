//! Integration tests of the ingress over real sockets on 127.0.0.1: upstreams are small hyper
//! servers spawned per test, the client is hyper's. One test binary keeps linking cheap.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic

mod support;

mod balancing;
mod health;
mod lifecycle;
mod malformed;
mod pool;
mod props;
mod protocol;
mod retries;
mod routing;
mod slow;
mod tidy;
mod tls;
mod upstream_h1;
