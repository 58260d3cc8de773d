//! Malformed and oversized requests as raw bytes on a real socket: each gets the 4xx hyper or
//! the proxy owes it (400, 413, 414, 431), the upstream never sees a request framed differently
//! from what the proxy read (no smuggling), and the proxy keeps serving afterwards.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Every request the upstream saw: its path, declared length and the body it actually read.
type Seen = Arc<Mutex<Vec<(String, Option<String>, usize)>>>;

async fn recording_upstream() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let addr = serve_fn(move |req: Request<Incoming>| {
        let log = log.clone();
        async move {
            let path = req.uri().to_string();
            let declared = req
                .headers()
                .get("content-length")
                .map(|v| v.to_str().unwrap_or("?").to_owned());
            let body = req.into_body().collect().await.map(|b| b.to_bytes().len());
            let len = body.unwrap_or(usize::MAX);
            log.lock().unwrap().push((path, declared, len));
            Response::new(Full::new(Bytes::from(format!("read {len}"))))
        }
    })
    .await;
    (addr, seen)
}

/// Sends `bytes`, half-closes, and returns the status (0 when the proxy just closed).
async fn raw(proxy: SocketAddr, bytes: &[u8]) -> (u16, String) {
    exchange(proxy, bytes, true).await
}

/// Like [`raw`]; without `half_close` the request must make the proxy close the connection
/// (hyper, like nginx, treats a client's EOF as the request being abandoned).
async fn exchange(proxy: SocketAddr, bytes: &[u8], half_close: bool) -> (u16, String) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    // The proxy may answer and close before reading everything (a 431 after the limit).
    let _ = stream.write_all(bytes).await;
    if half_close {
        let _ = stream.shutdown().await;
    }
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "no answer to {:?}", preview(bytes));
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

fn preview(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned()
}

async fn still_serving(proxy: SocketAddr) {
    let answer = get(&client(), proxy, "shop.localhost", "/alive").await;
    assert_eq!(answer.status, 200);
}

fn request(head: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = head.replace('\n', "\r\n").into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

#[tokio::test]
async fn malformed_requests_get_the_right_4xx_and_the_proxy_keeps_serving() {
    let (up, seen) = recording_upstream().await;
    let mut r = route("r", "*", "/", &[up]);
    r.max_body_bytes = Some(1024);
    let (_h, proxy) = proxy(vec![r]).await;
    let huge_value = "v".repeat(512 * 1024);
    let many_headers: String = (0..150).map(|i| format!("x-h{i}: 1\n")).collect();
    let long_path = format!("/{}", "a".repeat(70_000));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("garbage", b"\x00\x01\x02 hello\r\n\r\n".to_vec(), 400),
        (
            "bad method token",
            request("G(T / HTTP/1.1\nHost: h\n\n", b""),
            400,
        ),
        ("no version", request("GET /\nHost: h\n\n", b""), 400),
        (
            "bad version",
            request("GET / HTTP/7.1\nHost: h\n\n", b""),
            400,
        ),
        (
            "space in the target",
            request("GET /a b HTTP/1.1\nHost: h\n\n", b""),
            400,
        ),
        (
            "header without colon",
            request("GET / HTTP/1.1\nHost h\n\n", b""),
            400,
        ),
        (
            "obsolete line folding",
            request("GET / HTTP/1.1\nHost: h\nX-A: 1\n  2\n\n", b""),
            400,
        ),
        (
            "NUL in a header value",
            b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "huge header",
            request(
                &format!("GET / HTTP/1.1\nHost: h\nX-Big: {huge_value}\n\n"),
                b"",
            ),
            431,
        ),
        (
            "too many headers",
            request(&format!("GET / HTTP/1.1\nHost: h\n{many_headers}\n"), b""),
            431,
        ),
        (
            "URI too long",
            request(&format!("GET {long_path} HTTP/1.1\nHost: h\n\n"), b""),
            414,
        ),
        (
            "non-numeric Content-Length",
            request("POST / HTTP/1.1\nHost: h\nContent-Length: abc\n\n", b"abc"),
            400,
        ),
        (
            "negative Content-Length",
            request("POST / HTTP/1.1\nHost: h\nContent-Length: -1\n\n", b""),
            400,
        ),
        (
            "signed Content-Length",
            request("POST / HTTP/1.1\nHost: h\nContent-Length: +3\n\n", b"abc"),
            400,
        ),
        (
            "overflowing Content-Length",
            request(
                "POST / HTTP/1.1\nHost: h\nContent-Length: 99999999999999999999999\n\n",
                b"",
            ),
            400,
        ),
        (
            "conflicting Content-Lengths",
            request(
                "POST / HTTP/1.1\nHost: h\nContent-Length: 3\nContent-Length: 4\n\n",
                b"abcd",
            ),
            400,
        ),
        (
            "Content-Length list",
            request(
                "POST / HTTP/1.1\nHost: h\nContent-Length: 3, 4\n\n",
                b"abcd",
            ),
            400,
        ),
        (
            "Transfer-Encoding not ending in chunked",
            request(
                "POST / HTTP/1.1\nHost: h\nTransfer-Encoding: chunked, gzip\n\n",
                b"3\r\nabc\r\n0\r\n\r\n",
            ),
            400,
        ),
        (
            "unknown Transfer-Encoding",
            request(
                "POST / HTTP/1.1\nHost: h\nTransfer-Encoding: xchunked\n\n",
                b"",
            ),
            400,
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            request(
                "POST / HTTP/1.0\nHost: h\nTransfer-Encoding: chunked\n\n",
                b"0\r\n\r\n",
            ),
            400,
        ),
        (
            "declared body over the route's limit",
            request(
                "POST / HTTP/1.1\nHost: h\nContent-Length: 5000\n\n",
                &[b'x'; 5000],
            ),
            413,
        ),
        (
            "chunked body over the route's limit",
            request(
                "POST / HTTP/1.1\nHost: h\nTransfer-Encoding: chunked\n\n",
                format!("{:x}\r\n{}\r\n0\r\n\r\n", 4096, "y".repeat(4096)).as_bytes(),
            ),
            413,
        ),
        (
            "bad chunk size",
            request(
                "POST / HTTP/1.1\nHost: h\nTransfer-Encoding: chunked\n\n",
                b"zz\r\nabc\r\n0\r\n\r\n",
            ),
            400,
        ),
    ];
    let mut wrong = Vec::new();
    for (name, bytes, expected) in &cases {
        let (status, text) = raw(proxy, bytes).await;
        if status != *expected {
            wrong.push(format!(
                "{name}: expected {expected}, got {status}: {:?}",
                preview(text.as_bytes())
            ));
        }
        still_serving(proxy).await;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Nothing malformed reached the upstream: it saw only the liveness checks.
    let seen = seen.lock().unwrap();
    assert!(seen.iter().all(|(path, _, _)| path == "/alive"), "{seen:?}");
}

#[tokio::test]
async fn content_length_beside_chunked_cannot_smuggle_a_request() {
    let (up, seen) = recording_upstream().await;
    let (_h, proxy) = proxy(vec![route("r", "*", "/", &[up])]).await;
    // The chunked body holds a whole second request; a proxy that framed by Content-Length
    // (0) would pass it on as a request of its own.
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
    for head in [
        "POST /first HTTP/1.1\nHost: h\nContent-Length: 0\nTransfer-Encoding: chunked\n\n",
        "POST /first HTTP/1.1\nHost: h\nTransfer-Encoding: chunked\nContent-Length: 0\n\n",
    ] {
        let body = format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len());
        // Content-Length beside Transfer-Encoding makes hyper close after answering.
        let (status, text) = exchange(proxy, &request(head, body.as_bytes()), false).await;
        assert_eq!(status, 200, "{text}");
        assert!(
            text.ends_with(&format!("read {}", smuggled.len())),
            "{text}"
        );
    }
    still_serving(proxy).await;
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().all(|(path, _, _)| path != "/smuggled"),
        "{seen:?}"
    );
    for (path, declared, len) in seen.iter() {
        if let Some(declared) = declared {
            assert_eq!(
                declared,
                &len.to_string(),
                "{path}: framed differently upstream"
            );
        }
    }
}

fn framing() -> impl Strategy<Value = Vec<u8>> {
    let length = prop_oneof![
        (0usize..40).prop_map(|n| n.to_string()),
        Just("abc".to_owned()),
        Just("-1".to_owned()),
        Just(" 7 ".to_owned()),
        Just("0x10".to_owned()),
        Just("3, 3".to_owned()),
        Just("18446744073709551616".to_owned()),
    ];
    let encoding = prop_oneof![
        Just("chunked"),
        Just("Chunked"),
        Just("gzip"),
        Just("gzip, chunked"),
        Just("chunked, gzip"),
        Just("identity"),
        Just(" chunked"),
    ];
    let header = prop_oneof![
        length.prop_map(|v| format!("Content-Length: {v}")),
        encoding.prop_map(|v| format!("Transfer-Encoding: {v}")),
    ];
    let body = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..48),
        "[0-9a-f]{1,3}\r\n[a-z]{0,20}\r\n0\r\n\r\n".prop_map(String::into_bytes),
    ];
    let version = prop_oneof![Just("HTTP/1.1"), Just("HTTP/1.0")];
    (version, proptest::collection::vec(header, 0..4), body).prop_map(|(version, headers, body)| {
        let mut bytes = format!("POST /p HTTP/{}\r\nHost: h\r\n", &version[5..]).into_bytes();
        for h in headers {
            bytes.extend_from_slice(h.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"Connection: close\r\n\r\n");
        bytes.extend_from_slice(&body);
        bytes
    })
}

/// Random Content-Length / Transfer-Encoding mixtures and bodies that may not match them:
/// the answer is a 200 (the upstream read exactly what it was told), a 400 or a 413 (never a
/// 502: a broken client body is not the upstream's fault), or a closed connection when the
/// body ended early; never a hang, and the proxy serves on.
#[test]
fn framing_header_mixtures_are_answered_or_refused_consistently() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (h, proxy, seen) = rt.block_on(async {
        let (up, seen) = recording_upstream().await;
        let mut r = route("r", "*", "/", &[up]);
        r.max_body_bytes = Some(30);
        let (h, proxy) = proxy(vec![r]).await;
        (h, proxy, seen)
    });
    let mut runner = TestRunner::new(Config {
        cases: 128,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&framing(), |bytes| {
            let (status, text) = rt.block_on(raw(proxy, &bytes));
            prop_assert!(
                matches!(status, 0 | 200 | 400 | 413),
                "status {status} for {:?}: {text:?}",
                preview(&bytes)
            );
            Ok(())
        })
        .unwrap();
    rt.block_on(still_serving(proxy));
    for (path, declared, len) in seen.lock().unwrap().iter() {
        if let (Some(declared), true) = (declared, *len != usize::MAX) {
            assert_eq!(
                declared,
                &len.to_string(),
                "{path}: framed differently upstream"
            );
        }
    }
    drop(h);
}
