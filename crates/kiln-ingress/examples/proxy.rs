//! A standalone kiln ingress for load tests against nginx and HAProxy: one catch-all route,
//! round robin over the upstreams given on the command line. Ctrl-C prints the metrics in
//! Prometheus text and the connections each serving thread accepted, and drains.
//!
//! `cargo run --release -p kiln-ingress --example proxy -- 127.0.0.1:8080 127.0.0.1:9001 [more upstreams]`
//!
//! `KILN_INGRESS_THREADS=N` serves with [`kiln_ingress::IngressHandle::serve_per_core`] on N
//! threads; unset, one multi-threaded tokio runtime serves (as tests and embedders do).

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use kiln_ingress::{
    BackendSet, Endpoint, HostMatch, Ingress, IngressConfig, IngressHandle, Route, RouteTable,
    render_prometheus,
};
use tokio::net::TcpListener;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned())
        .parse()?;
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
    let threads: Option<usize> = std::env::var("KILN_INGRESS_THREADS")
        .ok()
        .map(|n| n.parse())
        .transpose()?;
    eprintln!("kiln ingress on {listen} → {upstreams:?} ({threads:?} threads)");
    let mut servers = Vec::new();
    match threads {
        None => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let listener = runtime.block_on(TcpListener::bind(listen))?;
            let serving = ingress.clone();
            servers.push(std::thread::spawn(move || {
                runtime.block_on(async move { serving.serve(listener).await });
            }));
        }
        Some(n) => servers = ingress.serve_per_core(listen, n, None)?.1,
    }
    wait_for_ctrl_c(&ingress)?;
    for server in servers {
        let _ = server.join();
    }
    Ok(())
}

fn wait_for_ctrl_c(ingress: &IngressHandle) -> Result<(), Box<dyn Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        tokio::signal::ctrl_c().await?;
        print!("{}", render_prometheus(&ingress.metrics()));
        for (index, thread) in ingress.serving_threads().iter().enumerate() {
            eprintln!("serving thread {index}: {} connections", thread.accepted);
        }
        let report = ingress.shutdown(Duration::from_secs(5)).await;
        eprintln!("shutdown: {report:?}");
        Ok::<_, std::io::Error>(())
    })?;
    Ok(())
}
