//! Spreading requests: round robin, least requests, canary weights and the sticky cookie.

use std::sync::Arc;

use hyper::header;
use kiln_ingress::{Balance, HostMatch, Route};
use tokio::sync::{Notify, mpsc};

use crate::support::*;

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let ups = [
        upstream("a").await,
        upstream("b").await,
        upstream("c").await,
    ];
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let (_h, proxy) = proxy(vec![route("r", "*", "/", &addrs)]).await;
    let c = client();
    for _ in 0..30 {
        assert_eq!(get(&c, proxy, "h", "/").await.status, 200);
    }
    for up in &ups {
        assert_eq!(up.hits(), 10);
    }
}

#[tokio::test]
async fn least_requests_prefers_the_idle_endpoint() {
    // "slow" holds every request until released; "fast" answers at once.
    let release = Arc::new(Notify::new());
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let gate = release.clone();
    let slow = serve_fn(move |_req| {
        let (gate, arrived_tx) = (gate.clone(), arrived_tx.clone());
        async move {
            let _ = arrived_tx.send(());
            gate.notified().await;
            hyper::Response::new(http_body_util::Full::new(hyper::body::Bytes::from("slow")))
        }
    })
    .await;
    let fast = upstream("fast").await;
    let mut r = route("r", "*", "/", &[slow, fast.addr]);
    r.balance = Balance::LeastRequests;
    let (_h, proxy) = proxy(vec![r]).await;
    let c = client();
    // Until one request is parked on "slow" (both idle: either may be picked).
    let mut parked = None;
    for _ in 0..200 {
        let (c2, p) = (c.clone(), proxy);
        let mut task = tokio::spawn(async move { get(&c2, p, "h", "/").await });
        tokio::select! {
            _ = arrived.recv() => { parked = Some(task); break; }
            answer = &mut task => assert_eq!(answer.unwrap().body, "fast"),
        }
    }
    let parked = parked.expect("no request ever reached the slow endpoint");
    let before = fast.hits();
    for _ in 0..20 {
        assert_eq!(get(&c, proxy, "h", "/").await.body, "fast");
    }
    assert_eq!(fast.hits(), before + 20);
    release.notify_waiters();
    assert_eq!(parked.await.unwrap().body, "slow");
}

fn canary_route(stable: std::net::SocketAddr, canary: std::net::SocketAddr) -> Route {
    Route::new(
        "web",
        HostMatch::Any,
        "/",
        vec![set("stable", 90, &[stable]), set("canary", 10, &[canary])],
    )
}

#[tokio::test]
async fn canary_weights_split_traffic_and_metrics_compare_sets() {
    let stable = upstream("stable").await;
    let canary = upstream("canary").await;
    let (h, proxy) = proxy(vec![canary_route(stable.addr, canary.addr)]).await;
    let c = client();
    for _ in 0..1000 {
        assert_eq!(get(&c, proxy, "h", "/").await.status, 200);
    }
    // Binomial(1000, 0.1): sd ≈ 9.5, so ±45 is beyond 4.7 sd.
    assert!(
        (55..=145).contains(&canary.hits()),
        "canary got {}",
        canary.hits()
    );
    assert_eq!(stable.hits() + canary.hits(), 1000);
    let m = h.metrics();
    assert_eq!(
        m.get("web", "canary").unwrap().requests_by_class[1],
        canary.hits() as u64
    );
    assert_eq!(
        m.get("web", "stable").unwrap().requests_by_class[1],
        stable.hits() as u64
    );
}

#[tokio::test]
async fn sticky_cookie_pins_a_client_to_its_set() {
    let stable = upstream("stable").await;
    let canary = upstream("canary").await;
    let mut r = canary_route(stable.addr, canary.addr);
    r.backends[0].weight = 50;
    r.backends[1].weight = 50;
    r.sticky_cookie = Some("kiln_set".into());
    let (_h, proxy) = proxy(vec![r]).await;
    let c = client();
    let first = get(&c, proxy, "h", "/").await;
    let cookie = first.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        cookie,
        format!("kiln_set={}; Path=/; HttpOnly; SameSite=Lax", first.body)
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    for _ in 0..50 {
        let req = request("GET", proxy, "h", "/")
            .header(header::COOKIE, format!("other=1; {pair}"))
            .body(Default::default())
            .unwrap();
        let answer = send(&c, req).await;
        assert_eq!(answer.body, first.body);
        assert!(
            !answer.headers.contains_key(header::SET_COOKIE),
            "pinned: no new cookie"
        );
    }
    // A cookie naming an unknown set is replaced.
    let req = request("GET", proxy, "h", "/")
        .header(header::COOKIE, "kiln_set=gone")
        .body(Default::default())
        .unwrap();
    assert!(send(&c, req).await.headers.contains_key(header::SET_COOKIE));
}
