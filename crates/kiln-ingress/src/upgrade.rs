//! WebSocket pass-through: the client's upgrade request is forwarded with its
//! `Connection: upgrade` / `Upgrade: websocket` pair restored; when the upstream answers 101,
//! the client gets a 101 too and a task copies bytes both ways between the two upgraded
//! connections until either side closes, or until no byte went either way for the route's
//! tunnel timeout (HAProxy's `timeout tunnel`; noticed within twice that): a tunnel left
//! open by a client that went away without closing would otherwise hold both connections
//! and the task for good.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header;
use hyper::http::request::Parts;
use hyper::upgrade::OnUpgrade;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::body::ProxyBody;
use crate::headers;
use crate::metrics::SetMetrics;
use crate::proxy::empty_response;

/// Takes the client connection's pending upgrade when the request asks for a WebSocket.
pub(crate) fn take_client_upgrade(parts: &mut Parts) -> Option<OnUpgrade> {
    if headers::is_websocket_upgrade(&parts.headers) {
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    }
}

/// Answers the client's upgrade with the upstream's 101 and splices the two connections,
/// closing them after `idle` without a byte either way (counted in `metrics`).
pub(crate) fn tunnel(
    mut upstream: Response<Incoming>,
    client: OnUpgrade,
    idle: Duration,
    metrics: Arc<SetMetrics>,
) -> Response<ProxyBody> {
    let upstream_upgrade = hyper::upgrade::on(&mut upstream);
    let mut response = empty_response(StatusCode::SWITCHING_PROTOCOLS);
    for (name, value) in upstream.headers() {
        // Keep the handshake's answer (Sec-WebSocket-Accept, -Protocol, -Extensions); the
        // connection-level pair is set below, hop-by-hop ones stay behind.
        if name != header::CONNECTION
            && name != header::UPGRADE
            && name != header::TRANSFER_ENCODING
        {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    headers::restore_websocket_upgrade(response.headers_mut());
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream_upgrade) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "websocket upgrade did not complete");
                return;
            }
        };
        let moved = Arc::new(AtomicU64::new(0));
        let mut client = Counted::new(TokioIo::new(client), &moved);
        let mut upstream = Counted::new(TokioIo::new(upstream), &moved);
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(error) = copied {
                    tracing::debug!(%error, "websocket tunnel closed with an error");
                }
            }
            () = silent_for(&moved, idle) => {
                metrics.add_client_timeout();
                tracing::info!(?idle, "websocket tunnel idle: closed");
            }
        }
    });
    response
}

/// Returns once a whole `period` passed without a read from either side.
async fn silent_for(moved: &AtomicU64, period: Duration) {
    let mut seen = moved.load(Ordering::Relaxed);
    // Bounded by the tunnel's life: each turn waits a whole period.
    loop {
        tokio::time::sleep(period).await;
        let now = moved.load(Ordering::Relaxed);
        if now == seen {
            return;
        }
        seen = now;
    }
}

/// One side of a tunnel, counting its reads in a counter both sides share.
struct Counted<T> {
    io: T,
    moved: Arc<AtomicU64>,
}

impl<T> Counted<T> {
    fn new(io: T, moved: &Arc<AtomicU64>) -> Self {
        Self {
            io,
            moved: moved.clone(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        if poll.is_ready() {
            this.moved.fetch_add(1, Ordering::Relaxed);
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
