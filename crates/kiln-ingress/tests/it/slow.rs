//! Slow, silent and abusive clients (issue 4): none holds a connection, an upstream connection
//! or a task without limit. Every limit is configured short here and each test waits on the
//! socket or the answer under a deadline, never a sleep.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kiln_ingress::{IngressConfig, IngressHandle, Route, Timeouts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::support::*;

/// Long enough for any of these tests to see its limit applied on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(10);
/// The short limit under test.
const SHORT: Duration = Duration::from_millis(200);

/// Reads until the peer closes (or resets); everything read. Fails past [`DEADLINE`].
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the connection was not closed in time");
    out
}

/// Sends `request` on a new connection and reads until the proxy closes it.
async fn send_until_closed(proxy: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut client = TcpStream::connect(proxy).await.unwrap();
    client.write_all(request).await.unwrap();
    read_until_closed(&mut client).await
}

fn assert_answered(all: &[u8], status_line: &str) {
    assert!(
        all.starts_with(status_line.as_bytes()),
        "{:?}",
        String::from_utf8_lossy(all)
    );
}

/// An ingress with `config` in front of an upstream that answers 200.
async fn proxy_to_upstream(config: IngressConfig) -> (IngressHandle, SocketAddr) {
    let up = upstream("a").await;
    proxy_with(config, vec![route("r", "*", "/", &[up.addr])]).await
}

fn client_timeouts(h: &IngressHandle) -> u64 {
    h.metrics().get("r", "stable").unwrap().client_timeouts
}

/// Reads until a whole response head arrived.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        while !out.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before a response head");
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("no response head in time");
    String::from_utf8_lossy(&out).into_owned()
}

/// A raw upstream taking one connection: it reads the request head, answers with `answer`
/// (if any) without reading the body, then reads until the proxy closes the connection,
/// which it reports.
async fn raw_upstream(answer: Option<&'static [u8]>) -> (SocketAddr, oneshot::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        if let Some(answer) = answer {
            let _ = stream.write_all(answer).await;
        }
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = closed_tx.send(());
    });
    (addr, closed)
}

async fn upstream_closed(closed: oneshot::Receiver<()>) {
    tokio::time::timeout(DEADLINE, closed)
        .await
        .expect("the upstream connection was not released in time")
        .unwrap();
}

fn short_route(addr: SocketAddr, timeouts: Timeouts) -> Route {
    let mut r = route("r", "*", "/", &[addr]);
    r.timeouts = timeouts;
    r
}

/// The session-10 finding: headers announcing a body, then (almost) nothing. Before the body
/// timeout the request waited for the upstream's request timeout and got 504, blaming the
/// upstream; with the upstream's timeout long, it waited forever.
#[tokio::test]
async fn a_stalled_request_body_gets_408_and_releases_the_upstream_connection() {
    let (addr, closed) = raw_upstream(None).await;
    let timeouts = Timeouts {
        body: SHORT,
        request: Duration::from_secs(3600),
        ..Timeouts::default()
    };
    let (h, proxy) = proxy_with(IngressConfig::default(), vec![short_route(addr, timeouts)]).await;
    let mut client = TcpStream::connect(proxy).await.unwrap();
    client
        .write_all(b"POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 1000000\r\n\r\nab")
        .await
        .unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    upstream_closed(closed).await;
    let metrics = h.metrics();
    let set = metrics.get("r", "stable").unwrap();
    assert_eq!(set.client_timeouts, 1, "counted as a client timeout");
    assert_eq!(set.requests_by_class[3], 1, "counted as a 4xx");
}

/// The upstream answered before reading the body; the client stalls the rest of it. The
/// response went out, so no 408: the upstream connection (busy writing the body) is closed.
#[tokio::test]
async fn a_stalled_body_after_an_early_answer_closes_both_connections() {
    let (addr, closed) =
        raw_upstream(Some(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")).await;
    let timeouts = Timeouts {
        body: SHORT,
        ..Timeouts::default()
    };
    let (h, proxy) = proxy_with(IngressConfig::default(), vec![short_route(addr, timeouts)]).await;
    let all = send_until_closed(
        proxy,
        b"POST / HTTP/1.1\r\nHost: shop\r\nContent-Length: 1000000\r\n\r\nab",
    )
    .await;
    assert_answered(&all, "HTTP/1.1 200");
    upstream_closed(closed).await;
    assert_eq!(client_timeouts(&h), 1);
}

/// The upstream's request timeout is its time to answer: a slow but steady upload longer
/// than it is not the upstream's fault (before: 504 and a failure against the endpoint).
#[tokio::test]
async fn the_request_timeout_counts_from_the_end_of_a_slow_upload() {
    let up = upstream("a").await;
    let timeouts = Timeouts {
        request: Duration::from_millis(300),
        body: Duration::from_secs(5),
        ..Timeouts::default()
    };
    let (_h, proxy) = proxy_with(
        IngressConfig::default(),
        vec![short_route(up.addr, timeouts)],
    )
    .await;
    let mut client = TcpStream::connect(proxy).await.unwrap();
    client
        .write_all(b"POST / HTTP/1.1\r\nHost: shop\r\nContent-Length: 4\r\n\r\n")
        .await
        .unwrap();
    // The client is slow on purpose: four bytes over about 800 ms.
    for byte in [b"a", b"b", b"c", b"d"] {
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.write_all(byte).await.unwrap();
    }
    let head = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("echo-body-len: 4"), "{head}");
}

/// The header read timeout also bounds the wait for the next request on a kept-alive
/// HTTP/1.1 connection, and a head that never ends (slowloris).
#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_header_read_timeout() {
    let (h, proxy) = proxy_to_upstream(IngressConfig {
        header_read_timeout: SHORT,
        ..IngressConfig::default()
    })
    .await;
    let all = send_until_closed(proxy, b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n").await;
    assert_answered(&all, "HTTP/1.1 200");
    assert_eq!(h.metrics().connections_closed.header_timeout, 1);
    // And one that never finishes its head (slowloris) gets the same.
    assert!(
        send_until_closed(proxy, b"GET / HTTP/1.1\r\nHost: sh")
            .await
            .is_empty()
    );
    assert_eq!(h.metrics().connections_closed.header_timeout, 2);
}

/// A response body the upstream streams with pauses longer than the header read timeout
/// keeps its connection: the pauses are the route's idle timeout's business.
#[tokio::test]
async fn a_response_streaming_with_pauses_is_not_cut_by_the_header_read_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n";
        let _ = stream.write_all(head).await;
        // The upstream pauses on purpose, for four header read timeouts.
        tokio::time::sleep(SHORT * 4).await;
        let _ = stream.write_all(b"1\r\nb\r\n0\r\n\r\n").await;
        let _ = stream.read(&mut buf).await;
    });
    let config = IngressConfig {
        header_read_timeout: SHORT,
        ..IngressConfig::default()
    };
    let (_h, proxy) = proxy_with(config, vec![route("r", "*", "/", &[addr])]).await;
    let all = send_until_closed(proxy, b"GET /events HTTP/1.1\r\nHost: shop\r\n\r\n").await;
    assert_answered(&all, "HTTP/1.1 200");
    let text = String::from_utf8_lossy(&all);
    assert!(text.ends_with("1\r\nb\r\n0\r\n\r\n"), "cut short: {text:?}");
}

/// An upstream that answers first and reads the upload after it (a quick "accepted"): the
/// client's upload, steady but longer than the header read timeout, goes through to the end.
/// Before, the connection counted as quiet once the answer was out and was cut.
#[tokio::test]
async fn an_upload_still_going_after_an_early_answer_is_not_cut_by_the_header_read_timeout() {
    const BODY: usize = 8;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (got_tx, got) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        };
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\naccepted")
            .await;
        let mut body = seen.len() - head_end;
        while body < BODY {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body += n,
            }
        }
        let _ = got_tx.send(body);
    });
    let config = IngressConfig {
        header_read_timeout: SHORT,
        ..IngressConfig::default()
    };
    let timeouts = Timeouts {
        body: Duration::from_secs(5),
        ..Timeouts::default()
    };
    let (h, proxy) = proxy_with(config, vec![short_route(addr, timeouts)]).await;
    let mut client = TcpStream::connect(proxy).await.unwrap();
    client
        .write_all(b"POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 8\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The client is slow on purpose: one byte every half header read timeout, four timeouts
    // in all.
    for _ in 0..BODY {
        tokio::time::sleep(SHORT / 2).await;
        client
            .write_all(b"x")
            .await
            .expect("the proxy cut the upload");
    }
    let got = tokio::time::timeout(DEADLINE, got)
        .await
        .expect("the upstream did not get the whole body in time")
        .unwrap();
    assert_eq!(got, BODY, "the upload was cut");
    assert_eq!(h.metrics().connections_closed.header_timeout, 0);
}

/// An h2c connection that opens no stream is closed after the header read timeout, even
/// when its client ignores the GOAWAY (it answers no ping here).
#[tokio::test]
async fn an_h2c_connection_that_opens_no_stream_is_closed() {
    let (h, proxy) = proxy_to_upstream(IngressConfig {
        header_read_timeout: SHORT,
        ..IngressConfig::default()
    })
    .await;
    // The preface and an empty SETTINGS frame, then silence.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    let all = send_until_closed(proxy, preface).await;
    // A GOAWAY frame (type 7) came before the close.
    assert!(all.windows(4).any(|w| w[3] == 7 && w[0] == 0), "{all:?}");
    assert_eq!(h.metrics().connections_closed.header_timeout, 1);
}

/// HTTP/2 has no header read timeout between requests: an h2c connection idle after its
/// requests is closed (GOAWAY) after the idle timeout.
#[tokio::test]
async fn an_idle_h2c_connection_is_closed() {
    let (h, proxy) = proxy_to_upstream(IngressConfig {
        idle_timeout: SHORT,
        header_read_timeout: Duration::from_secs(3600),
        ..IngressConfig::default()
    })
    .await;
    let io = TokioIo::new(TcpStream::connect(proxy).await.unwrap());
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    let driving = tokio::spawn(conn);
    let request = Request::get("http://shop/")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    tokio::time::timeout(DEADLINE, driving)
        .await
        .expect("the connection was not closed in time")
        .unwrap()
        .unwrap();
    assert_eq!(h.metrics().connections_closed.idle, 1);
}

/// A request body that never yields a frame.
struct Silent;

impl Body for Silent {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Pending
    }
}

/// An h2c stream opened with a body that never comes: 408 on that stream, the upstream
/// connection released.
#[tokio::test]
async fn an_h2c_stream_whose_body_never_comes_gets_408() {
    let (addr, closed) = raw_upstream(None).await;
    let timeouts = Timeouts {
        body: SHORT,
        ..Timeouts::default()
    };
    let (_h, proxy) = proxy_with(IngressConfig::default(), vec![short_route(addr, timeouts)]).await;
    let io = TokioIo::new(TcpStream::connect(proxy).await.unwrap());
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::post("http://shop/upload").body(Silent).unwrap();
    let response = tokio::time::timeout(DEADLINE, sender.send_request(request))
        .await
        .expect("no answer in time")
        .unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    upstream_closed(closed).await;
}

/// A client that never reads its response: the proxy's writes stall, the send timeout ends
/// the connection, and the upstream connection streaming the response is released.
#[tokio::test]
async fn a_client_that_never_reads_loses_its_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
            .await;
        let block = vec![b'x'; 64 * 1024];
        // Bounded by the announced length; ends when the proxy lets go.
        for _ in 0..(1_000_000_000 / block.len()) {
            if stream.write_all(&block).await.is_err() {
                break;
            }
        }
        let _ = closed_tx.send(());
    });
    let config = IngressConfig {
        send_timeout: SHORT,
        ..IngressConfig::default()
    };
    let (h, proxy) = proxy_with(config, vec![route("r", "*", "/", &[addr])]).await;
    let mut client = TcpStream::connect(proxy).await.unwrap();
    client
        .write_all(b"GET /big HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    upstream_closed(closed).await;
    assert!(
        eventually(DEADLINE, || h.metrics().connections_closed.send_timeout
            == 1)
        .await,
        "{:?}",
        h.metrics().connections_closed
    );
}

/// A WebSocket tunnel silent both ways is closed after the route's tunnel timeout.
#[tokio::test]
async fn an_idle_websocket_tunnel_is_closed() {
    let (addr, closed) = raw_upstream(Some(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    ))
    .await;
    let timeouts = Timeouts {
        tunnel: SHORT,
        ..Timeouts::default()
    };
    let (h, proxy) = proxy_with(IngressConfig::default(), vec![short_route(addr, timeouts)]).await;
    let all = send_until_closed(
        proxy,
        b"GET /ws HTTP/1.1\r\nHost: shop\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert_answered(&all, "HTTP/1.1 101");
    upstream_closed(closed).await;
    assert_eq!(client_timeouts(&h), 1);
}

/// Past `max_connections`, a new connection is closed at once; once one closes, a new one
/// is served again.
#[tokio::test]
async fn connections_over_the_limit_are_closed_at_once() {
    let up = upstream("a").await;
    let config = IngressConfig {
        max_connections: 2,
        ..IngressConfig::default()
    };
    let (h, proxy) = proxy_with(config, vec![route("r", "*", "/", &[up.addr])]).await;
    let request = b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(request).await.unwrap();
        assert!(read_head(&mut c).await.starts_with("HTTP/1.1 200"));
        open.push(c);
    }
    let mut third = TcpStream::connect(proxy).await.unwrap();
    let _ = third.write_all(request).await;
    assert!(read_until_closed(&mut third).await.is_empty(), "no answer");
    assert_eq!(h.metrics().connections_closed.over_limit, 1);
    drop(open.pop());
    // The proxy notices the close on its own time: try again, a bounded number of times.
    let mut served = false;
    for _ in 0..200 {
        let mut c = TcpStream::connect(proxy).await.unwrap();
        let _ = c.write_all(request).await;
        let mut buf = [0u8; 12];
        if tokio::time::timeout(DEADLINE, c.read_exact(&mut buf))
            .await
            .is_ok_and(|r| r.is_ok())
        {
            assert_eq!(&buf, b"HTTP/1.1 200");
            served = true;
            break;
        }
    }
    assert!(served, "a connection was served once one closed");
}
