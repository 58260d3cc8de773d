//! Host and path routing, prefix stripping, and the proxy's own error answers.

use std::time::Duration;

use http_body_util::Full;
use hyper::StatusCode;
use hyper::body::Bytes;

use crate::support::*;

#[tokio::test]
async fn exact_host_beats_wildcard_beats_any_and_longest_prefix_wins() {
    let exact = upstream("exact").await;
    let wild = upstream("wild").await;
    let any = upstream("any").await;
    let api = upstream("api").await;
    let (_h, proxy) = proxy(vec![
        route("any", "*", "/", &[any.addr]),
        route("wild", "*.shop.localhost", "/", &[wild.addr]),
        route("exact", "shop.localhost", "/", &[exact.addr]),
        route("api", "*", "/api", &[api.addr]),
    ])
    .await;
    let c = client();
    for (host, path, want) in [
        ("shop.localhost", "/", "exact"),
        ("SHOP.localhost:8080", "/x", "exact"),
        ("a.shop.localhost", "/", "wild"),
        ("a.b.shop.localhost", "/", "wild"),
        ("other.localhost", "/", "any"),
        ("shop.localhost", "/api/orders", "api"),
        ("shop.localhost", "/apix", "exact"),
    ] {
        let answer = get(&c, proxy, host, path).await;
        assert_eq!(answer.body, want, "{host}{path}");
    }
}

#[tokio::test]
async fn strip_prefix_rewrites_the_path_and_keeps_the_query() {
    let up = upstream("api").await;
    let mut stripped = route("api", "*", "/api", &[up.addr]);
    stripped.strip_prefix = true;
    let kept = route("keep", "*", "/keep", &[up.addr]);
    let (_h, proxy) = proxy(vec![stripped, kept]).await;
    let c = client();
    let answer = get(&c, proxy, "h", "/api/orders?id=7").await;
    assert_eq!(answer.headers["echo-path"], "/orders?id=7");
    let answer = get(&c, proxy, "h", "/api").await;
    assert_eq!(answer.headers["echo-path"], "/");
    let answer = get(&c, proxy, "h", "/keep/x").await;
    assert_eq!(answer.headers["echo-path"], "/keep/x");
}

#[tokio::test]
async fn no_route_is_404_naming_host_and_path() {
    let up = upstream("api").await;
    let (h, proxy) = proxy(vec![route("api", "shop.localhost", "/api", &[up.addr])]).await;
    let answer = get(&client(), proxy, "nope.localhost", "/api/x").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.body.trim(), "no route for nope.localhost/api/x");
    assert_eq!(h.metrics().unmatched_requests, 1);
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn no_available_endpoint_is_503() {
    let up = upstream("api").await;
    let empty = kiln_ingress::Route::new("empty", kiln_ingress::HostMatch::Any, "/empty", vec![]);
    let (h, proxy) = proxy(vec![route("api", "*", "/", &[up.addr]), empty]).await;
    let c = client();
    assert_eq!(
        get(&c, proxy, "h", "/empty").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let id = h.endpoint_health()[0].id.clone();
    h.set_endpoint_ready(&id, false);
    assert_eq!(
        get(&c, proxy, "h", "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    h.set_endpoint_ready(&id, true);
    assert_eq!(get(&c, proxy, "h", "/").await.status, StatusCode::OK);
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let addr = serve_fn(|_req| std::future::pending()).await;
    let mut r = route("slow", "*", "/", &[addr]);
    r.timeouts.request = Duration::from_millis(200);
    let (h, proxy) = proxy(vec![r]).await;
    let answer = get(&client(), proxy, "h", "/").await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        h.metrics().get("slow", "stable").unwrap().requests_by_class[4],
        1
    );
}

#[tokio::test]
async fn oversized_bodies_are_413_by_length_and_while_streaming() {
    let up = upstream("api").await;
    let mut r = route("api", "*", "/", &[up.addr]);
    r.max_body_bytes = Some(10);
    let (_h, proxy) = proxy(vec![r]).await;
    let c = client();
    let big = request("POST", proxy, "h", "/")
        .body(Full::new(Bytes::from(vec![b'x'; 100])))
        .unwrap();
    assert_eq!(send(&c, big).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(up.hits(), 0, "declared too large: never forwarded");
    let small = request("POST", proxy, "h", "/")
        .body(Full::new(Bytes::from_static(b"12345")))
        .unwrap();
    assert_eq!(send(&c, small).await.headers["echo-body-len"], "5");

    // Chunked: the size is only known while streaming.
    let raw = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
               8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n";
    let answer = raw_exchange(proxy, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

/// Writes raw bytes and reads the whole answer (the request should say `Connection: close`).
pub async fn raw_exchange(proxy: std::net::SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "no answer to {:?}",
        String::from_utf8_lossy(bytes)
    );
    String::from_utf8_lossy(&out).into_owned()
}
