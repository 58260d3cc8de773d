//! What crosses the proxy: forwarding headers, request ids, hop-by-hop stripping, configured
//! headers, WebSocket upgrades and h2c.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test]
async fn forwarding_headers_and_request_ids() {
    let up = upstream("api").await;
    let mut r = route("r", "*", "/", &[up.addr]);
    r.request_headers = vec![("x-env".into(), "prod".into())];
    r.response_headers = vec![("x-served-by".into(), "kiln".into())];
    let (_h, proxy) = proxy(vec![r]).await;
    let c = client();
    let req = request("GET", proxy, "shop.localhost", "/")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-request-id", "req-123")
        .header("x-env", "dev")
        .body(Full::default())
        .unwrap();
    let answer = send(&c, req).await;
    let h = &answer.headers;
    assert_eq!(h["echo-x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(
        h["echo-x-forwarded-proto"], "http",
        "set by this hop, not trusted"
    );
    assert_eq!(h["echo-x-forwarded-host"], "shop.localhost");
    assert_eq!(
        h["echo-host"], "shop.localhost",
        "the original Host is kept"
    );
    assert_eq!(h["echo-x-request-id"], "req-123");
    assert_eq!(h["x-request-id"], "req-123");
    assert_eq!(h["echo-x-env"], "prod");
    assert_eq!(h["x-served-by"], "kiln");

    let answer = get(&c, proxy, "shop.localhost", "/").await;
    let id = answer.headers["echo-x-request-id"].to_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    assert_eq!(answer.headers["x-request-id"], id);
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let addr = serve_fn(|req: Request<hyper::body::Incoming>| async move {
        let mut reply = Response::builder()
            .header("keep-alive", "timeout=5")
            .header("proxy-x", "1");
        for (k, _) in req.headers() {
            reply = reply.header(format!("echo-{k}"), "1");
        }
        reply.body(Full::new(Bytes::new())).unwrap()
    })
    .await;
    let (_h, proxy) = proxy(vec![route("r", "*", "/", &[addr])]).await;
    let req = request("GET", proxy, "h", "/")
        .header(header::CONNECTION, "x-secret")
        .header("x-secret", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic eA==")
        .header(header::TE, "trailers")
        .header("x-kept", "1")
        .body(Full::default())
        .unwrap();
    let answer = send(&client(), req).await;
    let h = &answer.headers;
    assert!(h.contains_key("echo-x-kept"));
    for gone in [
        "echo-x-secret",
        "echo-keep-alive",
        "echo-proxy-authorization",
        "echo-te",
        "echo-connection",
    ] {
        assert!(!h.contains_key(gone), "{gone} reached the upstream");
    }
    assert!(
        !h.contains_key("keep-alive") && !h.contains_key("proxy-x"),
        "{h:?}"
    );
}

/// An upstream that accepts WebSocket upgrades and echoes the raw bytes back.
async fn websocket_echo() -> std::net::SocketAddr {
    serve_fn(|mut req: Request<hyper::body::Incoming>| async move {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let mut io = TokioIo::new(upgrade.await.unwrap());
            let mut buf = [0u8; 64];
            loop {
                let n = io.read(&mut buf).await.unwrap_or(0);
                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            .body(Full::new(Bytes::new()))
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn websocket_upgrade_echoes_through_the_proxy() {
    let (_h, proxy) = proxy(vec![route("ws", "*", "/", &[websocket_echo().await])]).await;
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(Duration::from_secs(5), stream.read_u8())
            .await
            .unwrap()
            .unwrap();
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("upgrade: websocket") && head.contains("sec-websocket-accept"),
        "{head}"
    );
    for message in [&b"hello"[..], b"kiln ingress"] {
        stream.write_all(message).await.unwrap();
        let mut back = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, message);
    }
}

#[tokio::test]
async fn h2c_requests_are_proxied() {
    let up = upstream("api").await;
    let (_h, proxy) = proxy(vec![route("r", "shop.localhost", "/", &[up.addr])]).await;
    let io = TokioIo::new(TcpStream::connect(proxy).await.unwrap());
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = Request::builder()
            .uri("http://shop.localhost/h2?x=1")
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = sender.send_request(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        assert_eq!(response.headers()["echo-host"], "shop.localhost");
        assert_eq!(response.headers()["echo-path"], "/h2?x=1");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"api");
    }
}
