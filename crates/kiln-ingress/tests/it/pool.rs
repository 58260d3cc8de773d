//! The upstream connection pool, seen from the upstream's side of real sockets: connections
//! are reused (after requests with bodies too), one the upstream closed is not (and the request
//! still goes through, POST included), one whose response was cut short is not, nor one still
//! writing a request body the upstream answered early, idle ones are closed after the idle
//! timeout, and no more than the per-host limit stay open.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper::body::{Bytes, Frame};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kiln_ingress::IngressConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::support::*;

/// Connections an upstream accepted, and how many of them it has seen closed.
#[derive(Default)]
struct Connections {
    accepted: AtomicUsize,
    closed: AtomicUsize,
}

impl Connections {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
    fn open(&self) -> usize {
        self.accepted() - self.closed()
    }
}

/// A response body that sends one chunk and then never ends.
struct Unending {
    sent: bool,
}

impl hyper::body::Body for Unending {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent {
            return Poll::Pending;
        }
        self.sent = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"first")))))
    }
}

/// A keep-alive hyper upstream that counts its connections. `GET /slow` sends one chunk of
/// its body and never finishes it; `GET /gate` answers once `gate` gives a permit; `/len`
/// answers with the length of the body it read; anything else gets `ok` once its body was read.
async fn counting_upstream(gate: Arc<Semaphore>) -> (SocketAddr, Arc<Connections>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(Connections::default());
    let tracked = conns.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tracked.accepted.fetch_add(1, Ordering::SeqCst);
            let (tracked, gate) = (tracked.clone(), gate.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let gate = gate.clone();
                    async move {
                        let body = match req.uri().path() {
                            "/slow" => Unending { sent: false }.boxed(),
                            "/gate" => {
                                gate.acquire().await.unwrap().forget();
                                Full::new(Bytes::from("ok")).boxed()
                            }
                            "/len" => {
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                Full::new(Bytes::from(body.len().to_string())).boxed()
                            }
                            _ => {
                                // Reads the request body before answering, as most do.
                                let _ = req.into_body().collect().await;
                                Full::new(Bytes::from("ok")).boxed()
                            }
                        };
                        Ok::<_, Infallible>(hyper::Response::new(body))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                tracked.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, conns)
}

/// An upstream speaking just enough HTTP/1.1 by hand to answer one request per connection
/// and then close it *without* announcing `Connection: close`, as a server whose keep-alive
/// timeout just ran out does. Each answer is the length of the body it read.
async fn closing_upstream() -> (SocketAddr, Arc<Connections>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(Connections::default());
    let tracked = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tracked.accepted.fetch_add(1, Ordering::SeqCst);
            if let Some(len) = read_request(&mut stream).await {
                let len = len.to_string();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{len}",
                    len.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
            drop(stream);
            tracked.closed.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, conns)
}

/// Reads one request; returns its body's length (`None`: the connection closed first).
async fn read_request(stream: &mut TcpStream) -> Option<usize> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    for _ in 0..1000 {
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let declared: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < end + 4 + declared {
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            assert!(n > 0, "request body cut short");
            buf.extend_from_slice(&chunk[..n]);
        }
        return Some(declared);
    }
    panic!("no request head in 1000 reads");
}

async fn proxy_with(config: IngressConfig, addr: SocketAddr) -> SocketAddr {
    proxy_routing(config, route("r", "*", "/", &[addr])).await
}

async fn proxy_routing(config: IngressConfig, route: kiln_ingress::Route) -> SocketAddr {
    let handle = kiln_ingress::Ingress::new(config);
    handle.swap(table(vec![route]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    tokio::spawn(async move { handle.serve(listener).await });
    proxy
}

#[tokio::test]
async fn one_upstream_connection_carries_sequential_requests() {
    let (addr, conns) = counting_upstream(Arc::new(Semaphore::new(0))).await;
    let proxy = proxy_with(IngressConfig::default(), addr).await;
    let c = client();
    for _ in 0..20 {
        assert_eq!(get(&c, proxy, "h", "/").await.status, StatusCode::OK);
    }
    assert_eq!(
        conns.accepted(),
        1,
        "every request after the first reused the connection"
    );
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_not_reused_and_posts_still_go_through() {
    let (addr, conns) = closing_upstream().await;
    let proxy = proxy_with(IngressConfig::default(), addr).await;
    let c = client();
    for i in 1..=10 {
        let post = request("POST", proxy, "h", "/")
            .body(Full::new(Bytes::from("payload")))
            .unwrap();
        let answer = send(&c, post).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "request {i}: {}",
            answer.body
        );
        assert_eq!(
            answer.body, "7",
            "request {i} reached the upstream with its body"
        );
        // The upstream has closed the connection before the next request is sent: the
        // pooled connection is dead whether or not the proxy has noticed yet.
        assert!(eventually(Duration::from_secs(5), || conns.closed() == i).await);
    }
    assert_eq!(
        conns.accepted(),
        10,
        "a closed connection never carried a request"
    );
}

#[tokio::test]
async fn a_response_cut_short_does_not_return_its_connection_to_the_pool() {
    let (addr, conns) = counting_upstream(Arc::new(Semaphore::new(0))).await;
    let proxy = proxy_with(IngressConfig::default(), addr).await;
    let slow = client();
    let response = get_slow(&slow, proxy).await;
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    drop(slow);
    // The connection still owes most of `/slow`'s body: a request sent on it would wait
    // forever. Sequential requests after it get a fresh connection, then share that one.
    let c = client();
    for _ in 0..3 {
        assert_eq!(get(&c, proxy, "h", "/").await.status, StatusCode::OK);
    }
    assert_eq!(conns.accepted(), 2);
    assert!(
        eventually(Duration::from_secs(5), || conns.open() == 1).await,
        "the cut-short connection was closed"
    );
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let (addr, conns) = counting_upstream(Arc::new(Semaphore::new(0))).await;
    let config = IngressConfig {
        pool_idle_timeout: Duration::from_millis(100),
        ..IngressConfig::default()
    };
    let proxy = proxy_with(config, addr).await;
    assert_eq!(get(&client(), proxy, "h", "/").await.status, StatusCode::OK);
    assert_eq!(conns.accepted(), 1);
    assert!(
        eventually(Duration::from_secs(5), || conns.open() == 0).await,
        "the idle connection was closed"
    );
    // The pool noticed: the next request connects again instead of failing.
    assert_eq!(get(&client(), proxy, "h", "/").await.status, StatusCode::OK);
    assert_eq!(conns.accepted(), 2);
}

#[tokio::test]
async fn no_more_idle_connections_than_the_per_host_limit_stay_open() {
    let gate = Arc::new(Semaphore::new(0));
    let (addr, conns) = counting_upstream(gate.clone()).await;
    let config = IngressConfig {
        pool_max_idle_per_host: 1,
        ..IngressConfig::default()
    };
    let proxy = proxy_with(config, addr).await;
    let mut waiting = Vec::new();
    for _ in 0..4 {
        waiting.push(tokio::spawn(async move {
            get(&client(), proxy, "h", "/gate").await.status
        }));
    }
    assert!(
        eventually(Duration::from_secs(5), || conns.accepted() == 4).await,
        "four requests in flight at once need four connections"
    );
    gate.add_permits(4);
    for w in waiting {
        assert_eq!(w.await.unwrap(), StatusCode::OK);
    }
    assert!(
        eventually(Duration::from_secs(5), || conns.open() == 1).await,
        "only one idle connection kept, {} open",
        conns.open()
    );
}

#[tokio::test]
async fn a_connection_that_finished_writing_a_request_body_is_reused() {
    let (addr, conns) = counting_upstream(Arc::new(Semaphore::new(0))).await;
    let proxy = proxy_with(IngressConfig::default(), addr).await;
    let c = client();
    for i in 0..5 {
        let post = request("POST", proxy, "h", "/")
            .body(Full::new(Bytes::from(format!("payload {i}"))))
            .unwrap();
        assert_eq!(send(&c, post).await.status, StatusCode::OK);
    }
    assert_eq!(
        conns.accepted(),
        1,
        "every POST after the first reused the connection"
    );
}

/// A small request body that came with its head goes up with the head on the same kind of
/// connection as a request without one: mixed GETs and POSTs share one upstream connection
/// (before, each POST turned the idle connection into one of hyper's client, and the next GET
/// found none of its own and connected anew).
#[tokio::test]
async fn gets_and_small_posts_share_one_upstream_connection() {
    let (addr, conns) = counting_upstream(Arc::new(Semaphore::new(0))).await;
    let proxy = proxy_with(IngressConfig::default(), addr).await;
    let mut client = TcpStream::connect(proxy).await.unwrap();
    for i in 0..10 {
        let body = format!("payload {i}");
        let post = format!(
            "POST /len HTTP/1.1\r\nhost: h\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        client.write_all(post.as_bytes()).await.unwrap();
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            read_until(&mut client, b"\r\n\r\n9"),
        )
        .await
        .expect("the POST was answered");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: h\r\n\r\n")
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), read_until(&mut client, b"ok"))
            .await
            .expect("the GET was answered");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert_eq!(
        conns.accepted(),
        1,
        "every request after the first reused the connection"
    );
}

/// A client that waits for `100 Continue` before its body: the body is not at hand, so it
/// streams (the proxy's `100 Continue` comes when the body is first asked for).
#[tokio::test]
async fn a_client_waiting_for_100_continue_gets_it_and_its_body_goes_up() {
    let (addr, _conns) = counting_upstream(Arc::new(Semaphore::new(0))).await;
    let proxy = proxy_with(IngressConfig::default(), addr).await;
    let mut client = TcpStream::connect(proxy).await.unwrap();
    client
        .write_all(
            b"POST /len HTTP/1.1\r\nhost: h\r\nexpect: 100-continue\r\ncontent-length: 7\r\n\r\n",
        )
        .await
        .unwrap();
    let interim = tokio::time::timeout(
        Duration::from_secs(10),
        read_until(&mut client, b"\r\n\r\n"),
    )
    .await
    .expect("100 Continue came");
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    client.write_all(b"payload").await.unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        read_until(&mut client, b"\r\n\r\n7"),
    )
    .await
    .expect("the POST was answered with its body's length");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// An upstream may answer (a 413, a 401) before it read the request body and then drain it,
/// while the proxy's connection to it is still streaming that body from a client that may be
/// slow or stalled.
/// Until the body ends that connection can carry nothing else: back in the pool, it would
/// hold the next request for as long as the client takes.
#[tokio::test]
async fn a_connection_still_writing_a_request_body_is_not_pooled() {
    // Answers at once, then reads the body (a server that drops it unread closes the
    // connection instead, which the pool notices).
    let early = serve_fn(|request: hyper::Request<hyper::body::Incoming>| async {
        tokio::spawn(async move {
            let _ = request.into_body().collect().await;
        });
        hyper::Response::new(Full::new(Bytes::from_static(b"early")))
    })
    .await;
    let proxy = proxy_with(IngressConfig::default(), early).await;
    // Declares 1000 bytes of body, sends 7, and stalls with its connection open.
    let mut stalled = TcpStream::connect(proxy).await.unwrap();
    stalled
        .write_all(b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 1000\r\n\r\npartial")
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), read_until(&mut stalled, b"early"))
        .await
        .expect("the early answer is relayed while the body is still open");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let second = tokio::time::timeout(Duration::from_secs(5), get(&client(), proxy, "h", "/"))
        .await
        .expect("the next request is not held behind the stalled body");
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.body, "early");
    drop(stalled);
}

/// Reads until what was read ends with `end` (at most 100 reads); returns it as text.
async fn read_until(stream: &mut TcpStream, end: &[u8]) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    for _ in 0..100 {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        if buf.ends_with(end) {
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn a_response_body_silent_for_the_idle_timeout_is_cut_and_its_connection_closed() {
    let (addr, conns) = counting_upstream(Arc::new(Semaphore::new(0))).await;
    let mut r = route("r", "*", "/", &[addr]);
    r.timeouts.idle = Duration::from_millis(300);
    let proxy = proxy_routing(IngressConfig::default(), r).await;
    let mut body = get_slow(&client(), proxy).await.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the first chunk arrives")
        .expect("a frame")
        .expect("not an error");
    assert_eq!(first.into_data().unwrap(), "first");
    let cut = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the silent body is cut within the deadline");
    assert!(
        !matches!(cut, Some(Ok(_))),
        "no more data after the silence"
    );
    assert!(
        eventually(Duration::from_secs(5), || conns.open() == 0).await,
        "the upstream connection it came on was closed"
    );
}

/// `GET /slow` through `proxy`: the response, once its head arrived.
async fn get_slow(
    client: &TestClient,
    proxy: SocketAddr,
) -> hyper::Response<hyper::body::Incoming> {
    tokio::time::timeout(
        Duration::from_secs(10),
        client.request(
            request("GET", proxy, "h", "/slow")
                .body(Full::default())
                .unwrap(),
        ),
    )
    .await
    .expect("headers arrive")
    .expect("request sent")
}
