//! Body wrappers on both legs of a proxied request.
//!
//! [`UpstreamBody`] carries the client's request body to the upstream: it counts bytes and cuts
//! the stream when it passes the route's limit (→ 413) or when the client stays silent past the
//! route's body timeout (→ 408, nginx's `client_body_timeout`), noting in [`BodyFlags`] whether
//! the limit, the client or its silence broke the attempt, and when the upstream connection let go of it (the
//! pool's condition for reusing that connection). [`ProxyBody`] carries responses to the client:
//! either our own short text or the upstream's body with byte counting, an idle timeout, the
//! in-flight guards, and the upstream connection, checked back into the pool when the body
//! was read to the end.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http_body_util::Full;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

use crate::client_io::IoWatch;
use crate::h1;
use crate::health::InFlight;
use crate::metrics::{InFlightRequest, SetMetrics};
use crate::pool::Pooled;

pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// What went wrong reading a request body, shared between the body (sent away with the
/// request) and the request's attempts.
#[derive(Debug, Default)]
pub(crate) struct BodyFlags {
    over_limit: AtomicBool,
    client_failed: AtomicBool,
    timed_out: AtomicBool,
    released: AtomicBool,
    /// When the body was released, in nanoseconds after [`epoch`] (0: not yet).
    released_at: AtomicU64,
}

impl BodyFlags {
    pub(crate) fn over_limit(&self) -> bool {
        self.over_limit.load(Ordering::Relaxed)
    }

    /// The client's body broke (bad chunk framing, a connection cut mid-body): the failed
    /// attempt is the client's fault, not the upstream's.
    pub(crate) fn client_failed(&self) -> bool {
        self.client_failed.load(Ordering::Relaxed)
    }

    /// The client sent nothing of its body for longer than the route's body timeout.
    pub(crate) fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed)
    }

    /// The body was dropped: hyper's connection wrote it to its end (or gave up on it after an
    /// error) and no longer waits on the client for it. Until then the connection is busy even
    /// if its response already ended (an upstream may answer before reading the body).
    pub(crate) fn released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    /// When the body was released (see [`BodyFlags::released`]), if it was.
    pub(crate) fn released_at(&self) -> Option<Instant> {
        match self.released_at.load(Ordering::Acquire) {
            0 => None,
            nanos => Some(epoch() + Duration::from_nanos(nanos)),
        }
    }
}

/// A fixed instant early in the process, so an instant fits in an atomic as an offset.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[derive(Debug)]
pub(crate) struct UpstreamBody {
    source: Source,
    seen: u64,
    limit: Option<u64>,
    flags: Option<Arc<BodyFlags>>,
    metrics: Option<Arc<SetMetrics>>,
    /// The silence allowed between two reads of the client's body.
    timeout: Duration,
    /// The client's silence, measured only while the body waits (as [`Relay`] does).
    silence: Silence,
    /// The client connection's activity, told of every frame read.
    watch: Option<Arc<IoWatch>>,
}

impl UpstreamBody {
    pub(crate) fn empty() -> Self {
        Self {
            source: Source::Done,
            seen: 0,
            limit: None,
            flags: None,
            metrics: None,
            timeout: Duration::MAX,
            silence: Silence::default(),
            watch: None,
        }
    }

    pub(crate) fn new(
        inner: Incoming,
        limit: Option<u64>,
        timeout: Duration,
        flags: Arc<BodyFlags>,
        metrics: Arc<SetMetrics>,
    ) -> Self {
        Self {
            source: Source::Client(inner),
            seen: 0,
            limit,
            flags: Some(flags),
            metrics: Some(metrics),
            timeout,
            silence: Silence::default(),
            watch: None,
        }
    }

    /// Tells the client connection's `watch` of every frame read.
    pub(crate) fn watched_by(mut self, watch: Option<&Arc<IoWatch>>) -> Self {
        self.watch = watch.cloned();
        self
    }

    /// A body read whole before it is sent ([`UpstreamBody::take_at_hand`]): nothing is left to
    /// wait for, so it needs no flags, and a retry can send it again.
    pub(crate) fn whole(bytes: Bytes) -> Self {
        let mut body = Self::empty();
        body.source = Source::Whole(bytes);
        body
    }

    /// The flags of a body still streaming from the client (`None` for
    /// [`UpstreamBody::empty`] and [`UpstreamBody::whole`]).
    pub(crate) fn flags(&self) -> Option<&Arc<BodyFlags>> {
        self.flags.as_ref()
    }

    /// The whole body, when it was read before sending ([`UpstreamBody::whole`]).
    pub(crate) fn whole_bytes(&self) -> Option<&Bytes> {
        match &self.source {
            Source::Whole(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// Reads the body if all of it is already at hand: in hyper's read buffer, having come
    /// with the head (a small body usually does), or in the socket's. The body is polled
    /// without waiting on the client: hyper hands over what it has buffered once the request's
    /// task yields to the connection's loop (both run in one task), so each wait is a yield
    /// and lasts only while bytes keep coming. A body still on its way (a slow upload, a
    /// client waiting for `100 Continue`) streams, as before, with what was read sent first;
    /// so an upstream may still answer before the body ends. Call it only for a body whose
    /// length is declared (no trailers) and at most [`MAX_AT_HAND`].
    pub(crate) async fn take_at_hand(mut self) -> AtHand {
        let mut read = BytesMut::new();
        let mut first: Option<Bytes> = None;
        let mut progressed = true;
        // Bounded in count; each yield follows a pass that read something.
        for _ in 0..MAX_AT_HAND_PASSES {
            let polled = std::future::poll_fn(|cx| Poll::Ready(self.poll_next(cx, false))).await;
            match polled {
                Poll::Ready(Some(Ok(frame))) => {
                    progressed = true;
                    let Ok(data) = frame.into_data() else {
                        // Trailers: a body with a declared length has none.
                        continue;
                    };
                    match first.take() {
                        None if read.is_empty() => first = Some(data),
                        taken => {
                            if let Some(bytes) = taken {
                                read.extend_from_slice(&bytes);
                            }
                            read.extend_from_slice(&data);
                        }
                    }
                }
                Poll::Ready(Some(Err(_))) => return AtHand::Failed,
                Poll::Ready(None) => {
                    let bytes = first.unwrap_or_else(|| read.freeze());
                    return AtHand::Whole(bytes);
                }
                Poll::Pending if progressed => {
                    progressed = false;
                    tokio::task::yield_now().await;
                }
                Poll::Pending => break,
            }
        }
        let bytes = first.unwrap_or_else(|| read.freeze());
        if !bytes.is_empty() {
            self.source = match std::mem::replace(&mut self.source, Source::Done) {
                Source::Client(inner) => Source::AheadOfClient(Box::new((bytes, inner))),
                other => other,
            };
        }
        AtHand::Streaming(self)
    }

    /// The next frame; with `wait` false, `Pending` starts no silence (nothing waits yet).
    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        wait: bool,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let inner = match &mut self.source {
            Source::Client(inner) => inner,
            Source::Done => return Poll::Ready(None),
            Source::Whole(bytes) => {
                let bytes = std::mem::take(bytes);
                self.source = Source::Done;
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            Source::AheadOfClient(_) => {
                let ahead = match std::mem::replace(&mut self.source, Source::Done) {
                    Source::AheadOfClient(pair) => {
                        let (bytes, inner) = *pair;
                        self.source = Source::Client(inner);
                        bytes
                    }
                    other => {
                        self.source = other;
                        Bytes::new()
                    }
                };
                return Poll::Ready(Some(Ok(Frame::data(ahead))));
            }
        };
        let frame = match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => {
                if let Some(flags) = &self.flags {
                    flags.client_failed.store(true, Ordering::Relaxed);
                }
                return Poll::Ready(Some(Err(e.into())));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending if !wait => return Poll::Pending,
            Poll::Pending => {
                ready!(self.silence.poll_over(self.timeout, cx));
                if let Some(flags) = &self.flags {
                    flags.timed_out.store(true, Ordering::Relaxed);
                }
                if let Some(metrics) = &self.metrics {
                    metrics.add_client_timeout();
                }
                return Poll::Ready(Some(Err(Box::new(BodyTimeout(self.timeout)))));
            }
        };
        self.silence.broken();
        if let Some(watch) = &self.watch {
            watch.read_body_frame();
        }
        if let Some(data) = frame.data_ref() {
            let n = data.len() as u64;
            self.seen += n;
            if let Some(metrics) = &self.metrics {
                metrics.add_bytes_in(n);
            }
            if self.limit.is_some_and(|limit| self.seen > limit) {
                if let Some(flags) = &self.flags {
                    flags.over_limit.store(true, Ordering::Relaxed);
                }
                return Poll::Ready(Some(Err(Box::new(OverLimit))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }
}

/// Where an [`UpstreamBody`]'s bytes come from.
#[derive(Debug)]
enum Source {
    /// Nothing (left) to send.
    Done,
    /// The client's body, read as it comes.
    Client(Incoming),
    /// Bytes read ahead (counted and checked then), then the rest of the client's body. Boxed:
    /// rare, and the body is moved with every request.
    AheadOfClient(Box<(Bytes, Incoming)>),
    /// The whole body, read before sending.
    Whole(Bytes),
}

/// The longest body [`UpstreamBody::take_at_hand`] reads whole (nginx buffers 16 KiB of a
/// request body in memory by default; hyper reads up to 8 KiB with the head at first).
pub(crate) const MAX_AT_HAND: u64 = 64 * 1024;
/// Passes of [`UpstreamBody::take_at_hand`] at most: frames plus yields.
const MAX_AT_HAND_PASSES: usize = 256;

/// What [`UpstreamBody::take_at_hand`] found.
#[derive(Debug)]
pub(crate) enum AtHand {
    /// The whole body, read.
    Whole(Bytes),
    /// Not all of it had come: the body, to stream (what was read goes first).
    Streaming(UpstreamBody),
    /// The client's body broke or passed the route's limit (see the body's flags).
    Failed,
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some(flags) = &self.flags {
            let nanos = u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX);
            flags.released_at.store(nanos.max(1), Ordering::Release);
            flags.released.store(true, Ordering::Release);
        }
    }
}

/// How long a stream has had nothing to give: started when it first waits after a frame,
/// checked by a timer made only for streams that wait, and moved (not re-made) when a later
/// silence starts.
#[derive(Debug, Default)]
pub(crate) struct Silence {
    /// When the stream last had nothing to give after a frame (`None`: it gave one since).
    since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Silence {
    /// A frame came: the next wait starts a new silence.
    pub(crate) fn broken(&mut self) {
        self.since = None;
    }

    /// Called when the stream has nothing ready: ready once the silence lasted `limit`.
    pub(crate) fn poll_over(&mut self, limit: Duration, cx: &mut Context<'_>) -> Poll<()> {
        let since = *self.since.get_or_insert_with(Instant::now);
        let Some(deadline) = since.checked_add(limit) else {
            return Poll::Pending;
        };
        loop {
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
            if timer.deadline() != deadline.into() {
                timer.as_mut().reset(deadline.into());
            }
            ready!(timer.as_mut().poll(cx));
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("request body idle for longer than {0:?}")]
struct BodyTimeout(Duration);

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
        self.get_mut().poll_next(cx, true)
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Done => true,
            Source::Client(inner) => inner.is_end_stream(),
            Source::Whole(_) | Source::AheadOfClient(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        let (ahead, rest) = match &self.source {
            Source::Done => return SizeHint::with_exact(0),
            Source::Whole(bytes) => return SizeHint::with_exact(bytes.len() as u64),
            Source::Client(inner) => (0, inner.size_hint()),
            Source::AheadOfClient(pair) => (pair.0.len() as u64, pair.1.size_hint()),
        };
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + ahead);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + ahead);
        }
        hint
    }
}

/// An upstream's response body: read by hyper's client, or by our own exchange (`h1.rs`),
/// which checks its connection back in itself.
#[derive(Debug)]
pub(crate) enum UpstreamIncoming {
    Hyper(Incoming),
    Own(h1::ResponseBody),
}

impl Body for UpstreamIncoming {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamIncoming::Hyper(inner) => Pin::new(inner).poll_frame(cx).map_err(Into::into),
            UpstreamIncoming::Own(inner) => Pin::new(inner).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamIncoming::Hyper(inner) => inner.is_end_stream(),
            UpstreamIncoming::Own(inner) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamIncoming::Hyper(inner) => inner.size_hint(),
            UpstreamIncoming::Own(inner) => inner.size_hint(),
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
    inner: UpstreamIncoming,
    /// The hyper connection it is read from, back to the pool once the body ended (our own
    /// exchange's body holds its connection itself).
    connection: Option<Pooled>,
    finished: bool,
    idle: Duration,
    /// The upstream's silence, which the idle timeout measures.
    silence: Silence,
    metrics: Arc<SetMetrics>,
    _request: InFlightRequest,
    _endpoint: Option<InFlight>,
    /// Keeps the request in progress on its client connection until the body ends.
    _busy: Option<Busy>,
}

/// Counts a request as in progress on its client connection until dropped.
#[derive(Debug)]
pub(crate) struct Busy(Arc<AtomicUsize>);

impl Busy {
    pub(crate) fn start(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Cut short (the client left, an error, the idle timeout), the connection still has
        // response bytes in flight and cannot carry another request: it closes with this.
        if let Some(connection) = self.connection.take()
            && (self.finished || self.inner.is_end_stream())
        {
            connection.check_in();
        }
    }
}

impl ProxyBody {
    pub(crate) fn text(text: String) -> Self {
        ProxyBody::Local(Full::new(Bytes::from(text)))
    }

    pub(crate) fn bytes(bytes: Bytes) -> Self {
        ProxyBody::Local(Full::new(bytes))
    }

    pub(crate) fn empty() -> Self {
        ProxyBody::Local(Full::new(Bytes::new()))
    }

    /// Keeps `busy` until a relayed body ends; a local body drops it at once.
    pub(crate) fn hold(&mut self, busy: Busy) {
        if let ProxyBody::Upstream(relay) = self {
            relay._busy = Some(busy);
        }
    }

    pub(crate) fn relay(
        inner: UpstreamIncoming,
        connection: Option<Pooled>,
        idle: Duration,
        metrics: Arc<SetMetrics>,
        request: InFlightRequest,
        endpoint: Option<InFlight>,
    ) -> Self {
        ProxyBody::Upstream(Box::new(Relay {
            inner,
            connection,
            finished: false,
            idle,
            silence: Silence::default(),
            metrics,
            _request: request,
            _endpoint: endpoint,
            _busy: None,
        }))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("upstream response body idle for longer than {0:?}")]
struct IdleTimeout(Duration);

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
                    relay.silence.broken();
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    relay.connection = None;
                    Poll::Ready(Some(Err(e)))
                }
                Poll::Ready(None) => {
                    relay.finished = true;
                    Poll::Ready(None)
                }
                Poll::Pending => relay.silence.poll_over(relay.idle, cx).map(|()| {
                    relay.connection = None;
                    Some(Err(Box::new(IdleTimeout(relay.idle)) as BoxError))
                }),
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
