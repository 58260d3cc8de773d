//! A standalone kiln ingress for load tests against nginx and HAProxy: one catch-all route,
//! round robin over the upstreams given on the command line. Ctrl-C prints the metrics in
//! Prometheus text and drains.
//!
//! `cargo run --release -p kiln-ingress --example proxy -- 127.0.0.1:8080 127.0.0.1:9001 [more upstreams]`

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use kiln_ingress::{
    BackendSet, Endpoint, HostMatch, Ingress, IngressConfig, Route, RouteTable, render_prometheus,
};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let upstreams: Vec<SocketAddr> = args.map(|a| a.parse()).collect::<Result<_, _>>()?;
    if upstreams.is_empty() {
        return Err("usage: proxy LISTEN_ADDR UPSTREAM_ADDR...".into());
    }
    let endpoints = upstreams
        .iter()
        .enumerate()
        .map(|(i, addr)| Endpoint::new(format!("up-{i}"), *addr))
        .collect();
    let set = BackendSet {
        name: "stable".into(),
        weight: 1,
        endpoints,
    };
    let route = Route::new("bench", HostMatch::Any, "/", vec![set]);
    let table = RouteTable::new(vec![route]).map_err(|errors| format!("{errors:?}"))?;
    let ingress = Ingress::new(IngressConfig::default());
    ingress.swap(table);
    let listener = TcpListener::bind(&listen).await?;
    eprintln!("kiln ingress on {listen} → {upstreams:?}");
    let serving = ingress.clone();
    let server = tokio::spawn(async move { serving.serve(listener).await });
    tokio::signal::ctrl_c().await?;
    print!("{}", render_prometheus(&ingress.metrics()));
    let report = ingress.shutdown(Duration::from_secs(5)).await;
    eprintln!("shutdown: {report:?}");
    server.await?;
    Ok(())
}
