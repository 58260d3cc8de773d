//! The control plane's view: atomic swaps under load, graceful shutdown, metrics and health;
//! the header read timeout (a client that never finishes its head is disconnected, a slow
//! response is not).

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
    join_threads(threads).await;
    assert!(TcpStream::connect(proxy).await.is_err());
}

/// Opens a keep-alive connection to `proxy` and reads one answer from it, so that it is
/// accepted and served; the connection stays open while the stream lives.
async fn open_connection(proxy: std::net::SocketAddr) -> TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0; 1024];
    while !answer.ends_with(b"ok") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert_ne!(n, 0, "closed early: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_serving_spreads_connections_evenly_over_its_threads() {
    let up = upstream("ok").await;
    let h = Ingress::new(IngressConfig::default());
    h.swap(table(vec![route("r", "*", "/", &[up.addr])]));
    assert!(h.serving_threads().is_empty());
    let (proxy, threads) = h
        .serve_per_core("127.0.0.1:0".parse().unwrap(), 3, None)
        .unwrap();
    // Opened at once, as a load generator does: the burst the threads used to race for.
    let mut opened = futures_join_all((0..9).map(|_| open_connection(proxy))).await;
    let open: Vec<usize> = h.serving_threads().iter().map(|t| t.open).collect();
    assert_eq!(open, [3, 3, 3]);
    // A closed connection counts out, so the next ones fill the emptiest thread first.
    drop(opened.drain(..3));
    assert!(
        eventually(Duration::from_secs(5), || {
            h.serving_threads().iter().map(|t| t.open).sum::<usize>() == 6
        })
        .await
    );
    let _more = futures_join_all((0..3).map(|_| open_connection(proxy))).await;
    let after = h.serving_threads();
    assert_eq!(after.iter().map(|t| t.open).collect::<Vec<_>>(), [3, 3, 3]);
    assert_eq!(after.iter().map(|t| t.accepted).sum::<u64>(), 12);
    let report = h.shutdown(Duration::from_secs(10)).await;
    assert!(report.drained, "{report:?}");
    join_threads(threads).await;
    assert!(h.serving_threads().iter().all(|t| t.open == 0));
    assert!(TcpStream::connect(proxy).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_serving_owns_its_port_alone() {
    let h = Ingress::new(IngressConfig::default());
    let (proxy, threads) = h
        .serve_per_core("127.0.0.1:0".parse().unwrap(), 2, None)
        .unwrap();
    // A second ingress (or any process) on the same address fails instead of silently
    // taking a share of the connections.
    let second = Ingress::new(IngressConfig::default());
    let error = second.serve_per_core(proxy, 2, None).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
    assert!(TcpListener::bind(proxy).await.is_err());
    assert!(h.shutdown(Duration::from_secs(5)).await.drained);
    join_threads(threads).await;
    // Once shut down, the port is free again: a restart binds it.
    let again = Ingress::new(IngressConfig::default());
    let (rebound, threads) = again.serve_per_core(proxy, 2, None).unwrap();
    assert_eq!(rebound, proxy);
    assert!(again.shutdown(Duration::from_secs(5)).await.drained);
    join_threads(threads).await;
}

/// Until every serving thread has returned.
async fn join_threads(threads: Vec<std::thread::JoinHandle<()>>) {
    tokio::task::spawn_blocking(move || {
        for thread in threads {
            thread.join().unwrap();
        }
    })
    .await
    .unwrap();
}

/// Awaits every future at once (each on its own task), in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

/// A proxy with `header_read_timeout` in front of `upstream`.
async fn proxy_with_header_timeout(
    timeout: Duration,
    upstream: std::net::SocketAddr,
) -> std::net::SocketAddr {
    let handle = Ingress::new(IngressConfig {
        header_read_timeout: timeout,
        ..IngressConfig::default()
    });
    handle.swap(table(vec![route("r", "*", "/", &[upstream])]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { handle.serve(listener).await });
    addr
}

#[tokio::test]
async fn a_client_that_does_not_finish_its_request_head_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = upstream("up").await;
    let proxy = proxy_with_header_timeout(Duration::from_millis(300), up.addr).await;
    let mut slow = TcpStream::connect(proxy).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: h\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buf))
        .await
        .expect("the proxy closed the connection within the deadline");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed without an answer: {read:?}"
    );
    assert_eq!(up.hits(), 0);
    // A client that sends its head in time is served as before.
    assert_eq!(
        get(&client(), proxy, "h", "/").await.status,
        hyper::StatusCode::OK
    );
}

#[tokio::test]
async fn a_request_in_flight_longer_than_the_header_read_timeout_is_not_cut() {
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<()>();
    let release = Arc::new(Notify::new());
    let gate = release.clone();
    let slow = serve_fn(move |_request| {
        let (arrived_tx, gate) = (arrived_tx.clone(), gate.clone());
        async move {
            let _ = arrived_tx.send(());
            gate.notified().await;
            hyper::Response::new(http_body_util::Full::new(hyper::body::Bytes::from("late")))
        }
    })
    .await;
    let timeout = Duration::from_millis(200);
    let proxy = proxy_with_header_timeout(timeout, slow).await;
    let c = client();
    let answer = tokio::spawn(async move {
        let first = get(&c, proxy, "h", "/").await;
        // Straight after, on the same kept-alive connection.
        let second = get(&c, proxy, "h", "/").await;
        (first, second)
    });
    tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .expect("the request reached the upstream");
    // What is under test is time passing with a request in flight: several timeout periods,
    // in which the connection's timer fires and must find the request still in flight.
    tokio::time::sleep(timeout * 4).await;
    release.notify_one();
    tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .expect("the second request reached the upstream");
    release.notify_one();
    let (first, second) = answer.await.unwrap();
    assert_eq!(first.status, hyper::StatusCode::OK);
    assert_eq!(first.body, "late");
    assert_eq!(second.body, "late");
}
