//! Any bytes from a client, on one connection to a proxy with a real upstream on loopback, must
//! get an HTTP answer or a closed connection, never a panic (libfuzzer's panic hook aborts, so
//! a panic inside a spawned connection task is caught too) and never a hang past the bound.
#![no_main]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kiln_ingress::{
    BackendSet, Endpoint, HostMatch, Ingress, IngressConfig, IngressHandle, Route, RouteTable,
    Scheme,
};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

struct World {
    rt: Runtime,
    ingress: IngressHandle,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let ingress = rt.block_on(async {
            let upstream = upstream().await;
            let set = |name: &str| BackendSet {
                name: name.into(),
                weight: 1,
                endpoints: vec![Endpoint::new(format!("{name}-0"), upstream)],
            };
            let mut api = Route::new(
                "api",
                HostMatch::parse("*.shop.localhost"),
                "/api",
                vec![set("stable"), set("canary")],
            );
            api.strip_prefix = true;
            api.max_body_bytes = Some(64);
            api.sticky_cookie = Some("kiln-set".into());
            api.request_headers = vec![("x-env".into(), "fuzz".into())];
            let any = Route::new("any", HostMatch::Any, "/", vec![set("stable")]);
            let table = RouteTable::new(vec![api, any]).expect("table");
            let ingress = Ingress::new(IngressConfig {
                header_read_timeout: Duration::from_millis(500),
                ..IngressConfig::default()
            });
            ingress.swap(table);
            ingress
        });
        World { rt, ingress }
    })
}

/// Reads the whole request body, then answers with its length.
async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let len = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes().len())
                        .unwrap_or(0);
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(
                        len.to_string(),
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

fuzz_target!(|data: &[u8]| {
    let world = world();
    world.rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let ingress = world.ingress.clone();
        let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
        let serving = tokio::spawn(async move {
            ingress
                .serve_connection(TokioIo::new(server), peer, Scheme::Http)
                .await;
        });
        let exchange = async {
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
            let mut out = Vec::new();
            let _ = client.read_to_end(&mut out).await;
            out
        };
        if let Ok(out) = tokio::time::timeout(Duration::from_secs(2), exchange).await {
            let h2 = data.starts_with(b"PRI * HTTP/2.0");
            assert!(
                out.is_empty() || h2 || out.starts_with(b"HTTP/1."),
                "not an HTTP/1 answer: {:?}",
                String::from_utf8_lossy(&out[..out.len().min(200)])
            );
        }
        serving.abort();
    });
});
