//! Passive health: failing endpoints are ejected, come back after their cool-down, and the
//! last endpoint of a set is never ejected.

use std::time::{Duration, Instant};

use hyper::StatusCode;
use kiln_ingress::{EndpointState, OutlierPolicy};

use crate::support::*;

fn outlier(ms: u64) -> OutlierPolicy {
    OutlierPolicy {
        consecutive_failures: 3,
        base_ejection: Duration::from_millis(ms),
        max_ejection: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn failing_endpoint_is_ejected_then_returns_after_cool_down() {
    let bad = upstream_with_status("bad", StatusCode::INTERNAL_SERVER_ERROR).await;
    let good = upstream("good").await;
    let mut r = route("r", "*", "/", &[bad.addr, good.addr]);
    r.outlier = outlier(400);
    r.retry.attempts = 0;
    let (h, proxy) = proxy(vec![r]).await;
    let c = client();
    for _ in 0..6 {
        get(&c, proxy, "h", "/").await;
    }
    assert_eq!(bad.hits(), 3, "ejected after three failures in a row");
    let health = h.endpoint_health();
    assert!(
        matches!(health[0].state, EndpointState::Ejected { .. }),
        "{health:?}"
    );
    assert_eq!(health[0].ejections, 1);
    assert_eq!(h.metrics().get("r", "stable").unwrap().ejections, 1);
    for _ in 0..10 {
        assert_eq!(get(&c, proxy, "h", "/").await.body, "good");
    }
    // The cool-down is time itself: poll (bounded) until it is over.
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.endpoint_health()[0].state != EndpointState::Available {
        assert!(Instant::now() < deadline, "never returned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = bad.hits();
    for _ in 0..4 {
        get(&c, proxy, "h", "/").await;
    }
    assert!(bad.hits() > before, "back in rotation");
}

#[tokio::test]
async fn the_last_endpoint_of_a_set_is_never_ejected() {
    let bad = upstream_with_status("bad", StatusCode::INTERNAL_SERVER_ERROR).await;
    let mut r = route("r", "*", "/", &[bad.addr]);
    r.outlier = outlier(10_000);
    let (h, proxy) = proxy(vec![r]).await;
    let c = client();
    for _ in 0..20 {
        assert_eq!(get(&c, proxy, "h", "/").await.status, 500);
    }
    assert_eq!(h.endpoint_health()[0].state, EndpointState::Available);
    assert_eq!(bad.hits(), 20);
}
