//! Retries: connect failures go to another endpoint, idempotent 502/503/504 are retried,
//! POST is not, a retried request carries the headers a first attempt does, and the budget
//! stops a retry storm.

use hyper::StatusCode;

use crate::support::*;

#[tokio::test]
async fn connect_failures_are_retried_with_zero_client_errors() {
    let dead = dead_addr().await;
    let live = upstream("live").await;
    let (h, proxy) = proxy(vec![route("r", "*", "/", &[dead, live.addr])]).await;
    let c = client();
    for i in 0..20 {
        let req = request(if i % 2 == 0 { "GET" } else { "POST" }, proxy, "h", "/")
            .body(http_body_util::Full::new(hyper::body::Bytes::from_static(
                b"payload",
            )))
            .unwrap();
        let answer = send(&c, req).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            answer.headers["echo-body-len"], "7",
            "the body survives the retry"
        );
    }
    assert_eq!(live.hits(), 20);
    assert!(h.metrics().get("r", "stable").unwrap().retries >= 1);
}

#[tokio::test]
async fn all_endpoints_unreachable_is_502() {
    let (_h, proxy) = proxy(vec![route(
        "r",
        "*",
        "/",
        &[dead_addr().await, dead_addr().await],
    )])
    .await;
    assert_eq!(
        get(&client(), proxy, "h", "/").await.status,
        StatusCode::BAD_GATEWAY
    );
}

#[tokio::test]
async fn idempotent_5xx_is_retried_but_post_is_not() {
    let failing = upstream_with_status("failing", StatusCode::SERVICE_UNAVAILABLE).await;
    let ok = upstream("ok").await;
    let mut r = route("r", "*", "/", &[failing.addr, ok.addr]);
    r.outlier.consecutive_failures = 1000;
    let (_h, proxy) = proxy(vec![r]).await;
    let c = client();
    for _ in 0..10 {
        assert_eq!(get(&c, proxy, "h", "/").await.status, StatusCode::OK);
    }
    let before = failing.hits();
    let mut failed_posts = 0;
    for _ in 0..10 {
        let post = request("POST", proxy, "h", "/")
            .body(Default::default())
            .unwrap();
        if send(&c, post).await.status == StatusCode::SERVICE_UNAVAILABLE {
            failed_posts += 1;
        }
    }
    assert_eq!(
        failed_posts,
        failing.hits() - before,
        "every POST that hit `failing` saw its 503"
    );
    assert_eq!(
        failed_posts, 5,
        "round robin sends every other POST to `failing`"
    );
}

/// A small body that came whole with its head is read before sending, so an idempotent
/// request with a body (a PUT) can be sent again to another endpoint after a 503, body and
/// all; a POST still is not.
#[tokio::test]
async fn an_idempotent_request_with_a_small_body_is_retried_with_its_body() {
    let failing = upstream_with_status("failing", StatusCode::SERVICE_UNAVAILABLE).await;
    let ok = upstream("ok").await;
    let mut r = route("r", "*", "/", &[failing.addr, ok.addr]);
    r.outlier.consecutive_failures = 1000;
    let (_h, proxy) = proxy(vec![r]).await;
    for i in 0..10 {
        let put = raw_exchange(
            proxy,
            b"PUT /item HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n\r\npayload",
        )
        .await;
        assert!(put.starts_with("HTTP/1.1 200"), "PUT {i}: {put}");
        assert!(put.contains("echo-body-len: 7"), "PUT {i}: {put}");
    }
    // Round robin sends a request to `failing` first at least every other time; each of
    // those was retried on `ok`, with its body.
    assert!(
        failing.hits() >= 5,
        "{} PUTs sent to `failing`",
        failing.hits()
    );
    let before = failing.hits();
    let mut failed_posts = 0;
    for _ in 0..10 {
        let post = raw_exchange(
            proxy,
            b"POST /item HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n\r\npayload",
        )
        .await;
        if post.starts_with("HTTP/1.1 503") {
            failed_posts += 1;
        }
    }
    assert_eq!(
        failed_posts,
        failing.hits() - before,
        "every POST sent to `failing` saw its 503: a POST is not retried"
    );
    assert!(failed_posts >= 5, "{failed_posts} POSTs sent to `failing`");
}

/// Sends `request` (head and body in one write) on a new connection; returns the response
/// head.
async fn raw_exchange(proxy: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    // Bounded: 100 reads, each with the test's deadline.
    for _ in 0..100 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("no answer in 10 s")
            .unwrap();
        got.extend_from_slice(&chunk[..n]);
        if n == 0 || got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn the_retry_budget_stops_a_retry_storm() {
    let a = upstream_with_status("a", StatusCode::SERVICE_UNAVAILABLE).await;
    let b = upstream_with_status("b", StatusCode::SERVICE_UNAVAILABLE).await;
    let mut r = route("r", "*", "/", &[a.addr, b.addr]);
    r.retry.attempts = 3;
    r.retry.budget_reserve = 5;
    r.outlier.consecutive_failures = 1000;
    let (h, proxy) = proxy(vec![r]).await;
    let c = client();
    for _ in 0..50 {
        assert_eq!(
            get(&c, proxy, "h", "/").await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    // Without a budget this would be 200 upstream requests.
    assert_eq!(a.hits() + b.hits(), 55);
    assert_eq!(h.metrics().get("r", "stable").unwrap().retries, 5);
}

/// The headers are built once per request and moved into an attempt: after a connect failure
/// they come back with the unsent request (a POST keeps no copy); after a 503, or an upstream
/// that hung up after reading the request, our own exchange gives back the headers it sent.
/// Either way the retry carries what a first attempt does.
#[tokio::test]
async fn a_retried_request_carries_the_same_headers() {
    let dead = dead_addr().await;
    let failing = upstream_with_status("failing", StatusCode::SERVICE_UNAVAILABLE).await;
    let hanging_up = hanging_up_upstream().await;
    let ok = upstream("ok").await;
    for (first, method) in [(dead, "POST"), (failing.addr, "GET"), (hanging_up, "GET")] {
        let mut r = route("r", "*", "/", &[first, ok.addr]);
        r.outlier.consecutive_failures = 1000;
        r.request_headers = vec![("x-env".into(), "prod".into())];
        let (h, proxy) = proxy(vec![r]).await;
        let c = client();
        // Round robin: each request starts on `first` (a retry moves the turn on once more)
        // and is retried on `ok`.
        for i in 0..4 {
            let body = if method == "POST" { "payload" } else { "" };
            let req = request(method, proxy, "h", "/")
                .header("x-client", "kept")
                .body(http_body_util::Full::new(hyper::body::Bytes::from_static(
                    body.as_bytes(),
                )))
                .unwrap();
            let answer = send(&c, req).await;
            assert_eq!(answer.status, StatusCode::OK, "{method} {i}");
            let echo = &answer.headers;
            assert_eq!(echo["echo-host"], "h", "{method} {i}");
            assert_eq!(echo["echo-x-client"], "kept", "{method} {i}");
            assert_eq!(echo["echo-x-env"], "prod", "{method} {i}");
            assert_eq!(echo["echo-x-forwarded-for"], "127.0.0.1", "{method} {i}");
            assert_eq!(echo["echo-x-forwarded-host"], "h", "{method} {i}");
            assert_eq!(echo["echo-x-forwarded-proto"], "http", "{method} {i}");
            assert_eq!(
                echo["echo-x-request-id"], echo["x-request-id"],
                "{method} {i}"
            );
            assert_eq!(
                echo["echo-body-len"],
                body.len().to_string(),
                "{method} {i}"
            );
        }
        let retries = h.metrics().get("r", "stable").unwrap().retries;
        assert!(retries >= 2, "{method}: only {retries} retries");
    }
}

/// An upstream that reads a request's head and closes the connection without answering (an
/// instance killed mid-request).
async fn hanging_up_upstream() -> std::net::SocketAddr {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut chunk = [0u8; 1024];
            // Bounded: a test request's head comes in far fewer reads.
            for _ in 0..64 {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&chunk[..n]),
                }
                if head.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    });
    addr
}
