//! The control plane's view: atomic swaps under load, graceful shutdown, metrics and health.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kiln_ingress::{Ingress, IngressConfig, render_prometheus};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_tables_under_load_loses_no_request() {
    let blue = [upstream("blue").await, upstream("blue").await];
    let green = [upstream("green").await, upstream("green").await];
    let blue_table = || table(vec![route("web", "*", "/", &[blue[0].addr, blue[1].addr])]);
    let green_table = || {
        table(vec![route(
            "web",
            "*",
            "/",
            &[green[0].addr, green[1].addr],
        )])
    };
    let (h, proxy) = proxy(vec![]).await;
    h.swap(blue_table());
    let done = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let done = done.clone();
        workers.push(tokio::spawn(async move {
            let c = client();
            let (mut ok, mut bodies) = (0, std::collections::HashSet::new());
            while !done.load(Ordering::Relaxed) || ok < 50 {
                let answer = get(&c, proxy, "h", "/").await;
                assert_eq!(answer.status, 200, "{}", answer.body);
                bodies.insert(answer.body);
                ok += 1;
                assert!(ok < 10_000, "bounded");
            }
            (ok, bodies)
        }));
    }
    for i in 0..100 {
        h.swap(if i % 2 == 0 {
            green_table()
        } else {
            blue_table()
        });
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    done.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut seen = std::collections::HashSet::new();
    for w in workers {
        let (ok, bodies) = w.await.unwrap();
        total += ok;
        seen.extend(bodies);
    }
    assert!(total >= 200);
    assert_eq!(seen.len(), 2, "both tables served: {seen:?}");
    let m = h.metrics();
    let web = m.get("web", "stable").unwrap();
    assert_eq!(
        web.requests_by_class[1], total as u64,
        "counters survive swaps"
    );
    assert_eq!(web.requests_by_class[4], 0);
}

#[tokio::test]
async fn shutdown_stops_accepting_and_drains_an_in_flight_request() {
    let release = Arc::new(Notify::new());
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let gate = release.clone();
    let slow = serve_fn(move |_req| {
        let (gate, arrived_tx) = (gate.clone(), arrived_tx.clone());
        async move {
            let _ = arrived_tx.send(());
            gate.notified().await;
            hyper::Response::new(http_body_util::Full::new(hyper::body::Bytes::from("done")))
        }
    })
    .await;
    let h = Ingress::new(IngressConfig::default());
    h.swap(table(vec![route("r", "*", "/", &[slow])]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    let serving = h.clone();
    let server = tokio::spawn(async move { serving.serve(listener).await });
    let c = client();
    let in_flight = tokio::spawn(async move { get(&c, proxy, "h", "/").await });
    arrived.recv().await.unwrap();
    let stopping = h.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown(Duration::from_secs(10)).await });
    // The accept loop ends and drops the listener: new connections are refused.
    server.await.unwrap();
    assert!(TcpStream::connect(proxy).await.is_err());
    assert!(!shutdown.is_finished(), "still draining the slow request");
    release.notify_waiters();
    let answer = in_flight.await.unwrap();
    assert_eq!(
        (answer.status.as_u16(), answer.body.as_str()),
        (200, "done")
    );
    let report = shutdown.await.unwrap();
    assert!(report.drained, "{report:?}");
}

#[tokio::test]
async fn shutdown_forces_connections_past_the_deadline() {
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let slow = serve_fn(move |_req| {
        let _ = arrived_tx.send(());
        std::future::pending()
    })
    .await;
    let (h, proxy) = proxy(vec![route("r", "*", "/", &[slow])]).await;
    let c = client();
    let in_flight = tokio::spawn(async move {
        c.request(
            request("GET", proxy, "h", "/")
                .body(Default::default())
                .unwrap(),
        )
        .await
    });
    arrived.recv().await.unwrap();
    let report = h.shutdown(Duration::from_millis(100)).await;
    assert_eq!((report.drained, report.forced), (false, 1));
    assert!(
        in_flight.await.unwrap().is_err(),
        "the client sees its connection closed"
    );
}

#[tokio::test]
async fn metrics_count_by_class_and_render_as_prometheus_text() {
    let up = upstream("api").await;
    let (h, proxy) = proxy(vec![route("api", "*", "/api", &[up.addr])]).await;
    let c = client();
    for _ in 0..3 {
        get(&c, proxy, "h", "/api").await;
    }
    get(&c, proxy, "h", "/nothing").await;
    let m = h.metrics();
    let api = m.get("api", "stable").unwrap();
    assert_eq!(api.requests_by_class, [0, 3, 0, 0, 0]);
    assert_eq!(api.latency.count(), 3);
    assert!(api.latency.p99().is_some());
    assert_eq!(api.bytes_out, 9);
    assert_eq!(api.in_flight, 0);
    let text = render_prometheus(&m);
    assert!(
        text.contains("http_requests_total{route=\"api\",set=\"stable\",code_class=\"2xx\"} 3"),
        "{text}"
    );
    assert!(text.contains("http_request_duration_seconds_count{route=\"api\",set=\"stable\"} 3"));
    assert!(text.contains("http_unmatched_requests_total 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_serving_proxies_on_every_thread_and_drains_on_shutdown() {
    let release = Arc::new(Notify::new());
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let gate = release.clone();
    let up = serve_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (gate, arrived_tx) = (gate.clone(), arrived_tx.clone());
        async move {
            if req.uri().path() == "/slow" {
                let _ = arrived_tx.send(());
                gate.notified().await;
            }
            hyper::Response::new(http_body_util::Full::new(hyper::body::Bytes::from("ok")))
        }
    })
    .await;
    let h = Ingress::new(IngressConfig::default());
    h.swap(table(vec![route("r", "*", "/", &[up])]));
    let (proxy, threads) = h
        .serve_per_core("127.0.0.1:0".parse().unwrap(), 2, None)
        .unwrap();
    assert_ne!(proxy.port(), 0);
    // Many connections, so both threads accept some; each request uses its thread's pool.
    let mut requests = Vec::new();
    for _ in 0..20 {
        requests.push(tokio::spawn(async move {
            let c = client();
            (
                get(&c, proxy, "h", "/a").await.body,
                get(&c, proxy, "h", "/b").await.body,
            )
        }));
    }
    for request in requests {
        assert_eq!(request.await.unwrap(), ("ok".into(), "ok".into()));
    }
    let c = client();
    let in_flight = tokio::spawn(async move { get(&c, proxy, "h", "/slow").await });
    arrived.recv().await.unwrap();
    let stopping = h.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown(Duration::from_secs(10)).await });
    // A stored permit: the upstream may not be waiting yet.
    release.notify_one();
    assert_eq!(in_flight.await.unwrap().body, "ok");
    assert!(shutdown.await.unwrap().drained);
    // Every serving thread ends once its connections are gone.
    tokio::task::spawn_blocking(move || {
        for thread in threads {
            thread.join().unwrap();
        }
    })
    .await
    .unwrap();
    assert!(TcpStream::connect(proxy).await.is_err());
}
