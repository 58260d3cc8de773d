//! Body wrappers on both legs of a proxied request.
//!
//! [`UpstreamBody`] carries the client's request body to the upstream: it counts bytes, cuts
//! the stream when it passes the route's limit (→ 413), and — when the upstream connection
//! could not be made — hands the untouched body back through a [`Reclaim`] slot so the retry
//! can send it. [`ProxyBody`] carries responses to the client: either our own short text or
//! the upstream's body with byte counting, an idle timeout and the in-flight guards.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

use crate::health::InFlight;
use crate::metrics::{InFlightRequest, SetMetrics};

pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// Shared between a request's attempts: the body slot and what went wrong reading it.
#[derive(Debug, Default)]
pub(crate) struct Reclaim {
    slot: Mutex<Option<Incoming>>,
    over_limit: AtomicBool,
    client_failed: AtomicBool,
}

impl Reclaim {
    /// The body back, if the last attempt dropped it without reading any of it.
    pub(crate) fn take(&self) -> Option<Incoming> {
        self.slot.lock().ok()?.take()
    }

    pub(crate) fn over_limit(&self) -> bool {
        self.over_limit.load(Ordering::Relaxed)
    }

    /// The client's body broke (bad chunk framing, a connection cut mid-body): the failed
    /// attempt is the client's fault, not the upstream's.
    pub(crate) fn client_failed(&self) -> bool {
        self.client_failed.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub(crate) struct UpstreamBody {
    inner: Option<Incoming>,
    polled: bool,
    seen: u64,
    limit: Option<u64>,
    reclaim: Option<Arc<Reclaim>>,
    metrics: Option<Arc<SetMetrics>>,
}

impl UpstreamBody {
    pub(crate) fn empty() -> Self {
        Self {
            inner: None,
            polled: false,
            seen: 0,
            limit: None,
            reclaim: None,
            metrics: None,
        }
    }

    pub(crate) fn new(
        inner: Incoming,
        limit: Option<u64>,
        reclaim: Arc<Reclaim>,
        metrics: Arc<SetMetrics>,
    ) -> Self {
        Self {
            inner: Some(inner),
            polled: false,
            seen: 0,
            limit,
            reclaim: Some(reclaim),
            metrics: Some(metrics),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("request body over the route's limit")]
struct OverLimit;

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        this.polled = true;
        let frame = match ready!(Pin::new(inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                if let Some(reclaim) = &this.reclaim {
                    reclaim.client_failed.store(true, Ordering::Relaxed);
                }
                return Poll::Ready(Some(Err(e.into())));
            }
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            let n = data.len() as u64;
            this.seen += n;
            if let Some(metrics) = &this.metrics {
                metrics.add_bytes_in(n);
            }
            if this.limit.is_some_and(|limit| this.seen > limit) {
                if let Some(reclaim) = &this.reclaim {
                    reclaim.over_limit.store(true, Ordering::Relaxed);
                }
                return Poll::Ready(Some(Err(Box::new(OverLimit))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if self.polled {
            return;
        }
        if let (Some(inner), Some(reclaim)) = (self.inner.take(), &self.reclaim)
            && let Ok(mut slot) = reclaim.slot.lock()
        {
            *slot = Some(inner);
        }
    }
}

/// A response body to the client.
#[derive(Debug)]
pub(crate) enum ProxyBody {
    /// A response the proxy wrote itself (errors, 404).
    Local(Full<Bytes>),
    /// An upstream's response, relayed.
    Upstream(Box<Relay>),
}

/// The relayed upstream body with its accounting.
#[derive(Debug)]
pub(crate) struct Relay {
    inner: Incoming,
    idle: Duration,
    last_progress: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    metrics: Arc<SetMetrics>,
    _request: InFlightRequest,
    _endpoint: Option<InFlight>,
}

impl ProxyBody {
    pub(crate) fn text(text: String) -> Self {
        ProxyBody::Local(Full::new(Bytes::from(text)))
    }

    pub(crate) fn empty() -> Self {
        ProxyBody::Local(Full::new(Bytes::new()))
    }

    pub(crate) fn relay(
        inner: Incoming,
        idle: Duration,
        metrics: Arc<SetMetrics>,
        request: InFlightRequest,
        endpoint: Option<InFlight>,
    ) -> Self {
        ProxyBody::Upstream(Box::new(Relay {
            inner,
            idle,
            last_progress: Instant::now(),
            timer: None,
            metrics,
            _request: request,
            _endpoint: endpoint,
        }))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("upstream response body idle for longer than {0:?}")]
struct IdleTimeout(Duration);

impl Relay {
    /// Called when the upstream has nothing ready: arms (lazily) or checks the idle timer.
    /// The timer is created only for bodies that actually wait, and re-armed from the last
    /// progress instead of being reset on every frame.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<BoxError> {
        loop {
            let deadline = self.last_progress + self.idle;
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
            if timer.deadline() != deadline.into() {
                timer.as_mut().reset(deadline.into());
            }
            ready!(timer.as_mut().poll(cx));
            if Instant::now() >= deadline {
                return Poll::Ready(Box::new(IdleTimeout(self.idle)));
            }
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Local(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            ProxyBody::Upstream(relay) => match Pin::new(&mut relay.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        relay.metrics.add_bytes_out(data.len() as u64);
                    }
                    relay.last_progress = Instant::now();
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => relay.poll_idle(cx).map(|e| Some(Err(e))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Local(full) => full.is_end_stream(),
            ProxyBody::Upstream(relay) => relay.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Local(full) => full.size_hint(),
            ProxyBody::Upstream(relay) => relay.inner.size_hint(),
        }
    }
}
