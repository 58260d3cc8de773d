//! The proxy's own upstream HTTP/1.1 exchange (bodiless requests) against a scripted raw
//! upstream: every response framing is relayed whole (length, chunked, until close, none for
//! HEAD and 204), connections are reused only after a response that ended by its framing, and
//! malformed or cut-short responses give the client a 502 (or a cut response once the head
//! was relayed) while the proxy keeps serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

/// What the raw upstream writes for a path (the request line's target), and whether it closes
/// the connection after.
fn script(path: &str) -> (Vec<u8>, bool) {
    let r = |s: &str| s.as_bytes().to_vec();
    match path {
        "/length" => (
            r("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"),
            false,
        ),
        "/chunked" => (
            r(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\nx-t: 1\r\n\r\n",
            ),
            false,
        ),
        "/close" => (r("HTTP/1.1 200 OK\r\n\r\nuntil the close"), true),
        "/empty" => (r("HTTP/1.1 204 No Content\r\n\r\n"), false),
        "/head" => (r("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"), false),
        "/continue" => (
            r("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
            false,
        ),
        "/garbage" => (r("NOT HTTP AT ALL\r\n\r\n"), true),
        "/two-lengths" => (
            r("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc"),
            true,
        ),
        "/nothing" => (Vec::new(), true),
        "/upgrade" => (
            r("HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n"),
            true,
        ),
        "/huge-head" => {
            let mut v = r("HTTP/1.1 200 OK\r\n");
            for i in 0..3000 {
                v.extend_from_slice(
                    format!("x-filler-{i}: 0123456789012345678901234\r\n").as_bytes(),
                );
            }
            v.extend_from_slice(b"content-length: 0\r\n\r\n");
            (v, true)
        }
        "/short" => (
            r("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this"),
            true,
        ),
        "/bad-chunk" => (
            r("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n"),
            true,
        ),
        _ => (
            r("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
            false,
        ),
    }
}

/// A raw upstream playing [`script`]; counts the connections it accepted.
async fn scripted_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = vec![0u8; 8192];
                // One request per pass; bounded by the client's requests on this connection.
                loop {
                    let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&seen[..end]).into_owned();
                    seen.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let (bytes, close) = script(&path);
                    if stream.write_all(&bytes).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

async fn proxy_to(up: SocketAddr) -> SocketAddr {
    let mut r = route("r", "*", "/", &[up]);
    // Each answer as it came: no retry hiding a 502, no ejection turning one into a 503.
    r.retry.attempts = 0;
    r.outlier.consecutive_failures = 1_000;
    proxy(vec![r]).await.1
}

#[tokio::test]
async fn every_response_framing_is_relayed_whole() {
    let (up, accepted) = scripted_upstream().await;
    let proxy = proxy_to(up).await;
    let c = client();
    for (path, body) in [
        ("/length", "hello"),
        ("/chunked", "abcdefg"),
        ("/empty", ""),
        ("/continue", "ok"),
        ("/length", "hello"),
    ] {
        let answer = get(&c, proxy, "h", path).await;
        assert!(answer.status.is_success(), "{path}: {}", answer.status);
        assert_eq!(answer.body, body, "{path}");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one upstream connection carried every response that ended by its framing"
    );
    let head = send(
        &c,
        request("HEAD", proxy, "h", "/head")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.body, "");
    let answer = get(&c, proxy, "h", "/close").await;
    assert_eq!(answer.body, "until the close");
    // The close-delimited body ended the connection: the next request connects again.
    let before = accepted.load(Ordering::SeqCst);
    assert_eq!(get(&c, proxy, "h", "/length").await.body, "hello");
    assert_eq!(accepted.load(Ordering::SeqCst), before + 1);
}

#[tokio::test]
async fn malformed_upstream_responses_get_502_and_the_proxy_keeps_serving() {
    let (up, _) = scripted_upstream().await;
    let proxy = proxy_to(up).await;
    let c = client();
    let mut wrong = Vec::new();
    for path in [
        "/garbage",
        "/two-lengths",
        "/nothing",
        "/upgrade",
        "/huge-head",
    ] {
        let answer = get(&c, proxy, "h", path).await;
        if answer.status != StatusCode::BAD_GATEWAY {
            wrong.push(format!("{path}: {}", answer.status));
        }
        assert_eq!(get(&c, proxy, "h", "/length").await.body, "hello");
    }
    assert!(wrong.is_empty(), "{wrong:?}");
}

#[tokio::test]
async fn a_body_cut_short_or_badly_chunked_cuts_the_client_response() {
    let (up, accepted) = scripted_upstream().await;
    let proxy = proxy_to(up).await;
    for path in ["/short", "/bad-chunk"] {
        // A client of its own per request: the cut closes the client's connection too.
        let sent = client()
            .request(
                request("GET", proxy, "h", path)
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
        // The body fails in the same read as the head arrives: the proxy may drop the
        // connection before its head was written; either way the client sees no whole answer.
        let Ok(response) = sent else {
            continue;
        };
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{path}: the head was relayed"
        );
        let body = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            response.into_body().collect(),
        )
        .await
        .expect("the body ends");
        assert!(body.is_err(), "{path}: the client sees the body cut");
    }
    // Neither connection went back to the pool.
    let before = accepted.load(Ordering::SeqCst);
    assert_eq!(get(&client(), proxy, "h", "/length").await.body, "hello");
    assert_eq!(accepted.load(Ordering::SeqCst), before + 1);
}
