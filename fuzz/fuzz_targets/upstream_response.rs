//! Any bytes from an upstream, as the answer to a proxied GET or HEAD (our own HTTP/1.1
//! exchange, `h1.rs`), must give the client an HTTP answer (the relayed response, or a 502) or a
//! closed connection, never a panic and never a hang past the bound. The first byte chooses the
//! method; the rest is what the upstream writes before it closes the connection.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

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
    /// What the upstream writes for the next request.
    answer: Arc<Mutex<Vec<u8>>>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let answer = Arc::new(Mutex::new(Vec::new()));
        let ingress = rt.block_on(async {
            let upstream = upstream(answer.clone()).await;
            let mut route = Route::new(
                "any",
                HostMatch::Any,
                "/",
                vec![BackendSet {
                    name: "stable".into(),
                    weight: 1,
                    endpoints: vec![Endpoint::new("stable-0", upstream)],
                }],
            );
            route.retry.attempts = 0;
            route.outlier.consecutive_failures = u32::MAX;
            route.timeouts.request = Duration::from_millis(500);
            route.timeouts.idle = Duration::from_millis(500);
            let ingress = Ingress::new(IngressConfig::default());
            ingress.swap(RouteTable::new(vec![route]).expect("table"));
            ingress
        });
        World {
            rt,
            ingress,
            answer,
        }
    })
}

/// Reads a request head, writes the current answer, and closes.
async fn upstream(answer: Arc<Mutex<Vec<u8>>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let answer = answer.lock().map(|a| a.clone()).unwrap_or_default();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                // Bounded by the client's head, which the proxy caps.
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(&answer).await;
            });
        }
    });
    addr
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let world = world();
    if let Ok(mut answer) = world.answer.lock() {
        *answer = rest.to_vec();
    }
    let method = if first & 1 == 0 { "GET" } else { "HEAD" };
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
            let head = format!("{method} / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let _ = client.write_all(head.as_bytes()).await;
            let mut out = Vec::new();
            let _ = client.read_to_end(&mut out).await;
            out
        };
        let out = tokio::time::timeout(Duration::from_secs(3), exchange)
            .await
            .expect("the proxy answered or closed within the bound");
        assert!(
            out.is_empty() || out.starts_with(b"HTTP/1."),
            "not an HTTP/1 answer: {:?}",
            String::from_utf8_lossy(&out[..out.len().min(200)])
        );
        serving.abort();
    });
});
