//! Retries: connect failures go to another endpoint, idempotent 502/503/504 are retried,
//! POST is not, and the budget stops a retry storm.

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
