//! The ingress itself: shared state, the handle the control plane holds, the accept loop and
//! per-connection tasks (HTTP/1.1 and h2c on one port), and graceful shutdown.
//!
//! Lifecycle: `Serving` → (`shutdown`) `Draining`: listeners stop accepting, every connection
//! is asked to finish its in-flight requests and close → (deadline passed) `Closed`:
//! connections still open are dropped. `shutdown` returns when no connection is left.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::rt::{Read, Write};
use hyper::service::service_fn;
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio_rustls::TlsAcceptor;

use crate::body::{BoxError, Busy, ProxyBody};
use crate::client_io::{ClientIo, IoWatch};
use crate::config::RouteTable;
use crate::headers;
use crate::health::{Clock, EndpointHealth, EndpointRuntime};
use crate::metrics::{CloseReason, MetricsRegistry, MetricsSnapshot, SetMetrics};
use crate::per_core::{LoadGuard, ServingThread, ThreadLoad};
use crate::pool::PoolSettings;
use crate::proxy;
use crate::table::{CompiledTable, Resolver};
use crate::tls::TlsSettings;

/// Settings for the whole ingress (per-route settings live in [`crate::Route`]).
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// How long an idle pooled upstream connection is kept (closed within twice this).
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per upstream endpoint.
    pub pool_max_idle_per_host: usize,
    /// Time a client gets to send its first request's head, and on HTTP/1.1 the next one
    /// (slowloris guard and keep-alive timeout; nginx's `client_header_timeout`): a connection
    /// quiet this long (no request started or in progress, nothing written to the
    /// client) is closed without an answer, noticed within half the shorter of this and
    /// `idle_timeout` past it. One asked to close that stays quiet another such half (a head
    /// that never ends) is dropped.
    pub header_read_timeout: Duration,
    /// The same between requests on an HTTP/2 connection (nginx's `keepalive_timeout`): it is
    /// closed with a GOAWAY, and dropped if it stays quiet after it (a client that does not
    /// answer the GOAWAY's ping).
    pub idle_timeout: Duration,
    /// A client that reads nothing of what is written to it for this long loses its connection
    /// (nginx's `send_timeout`).
    pub send_timeout: Duration,
    /// Client connections open at once; one accepted beyond this is closed at once (counted
    /// in [`crate::ConnectionsClosed::over_limit`]), before any byte of it is read.
    pub max_connections: usize,
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 128,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// The scheme clients used to reach us, reported upstream as X-Forwarded-Proto.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// What [`IngressHandle::shutdown`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// True when every connection finished before the deadline.
    pub drained: bool,
    /// Connections still open at the deadline, which were then closed.
    pub forced: usize,
}

/// Builds ingresses.
#[derive(Debug)]
pub struct Ingress;

impl Ingress {
    /// A new ingress with an empty route table (everything 404s until the first swap).
    #[expect(
        clippy::new_ret_no_self,
        reason = "an ingress is only ever used through its cloneable handle"
    )]
    pub fn new(config: IngressConfig) -> IngressHandle {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // The header read timeout is the connection's own timer (`Quiet`), not hyper's, which
        // made and removed a timer for every request.
        builder.http1().header_read_timeout(None);
        builder.http2().timer(TokioTimer::new());
        let (phase, _) = watch::channel(Phase::Serving);
        IngressHandle {
            shared: Arc::new(Shared {
                table: ArcSwap::from_pointee(CompiledTable::default()),
                clock: Clock::new(),
                registry: MetricsRegistry::default(),
                endpoints: Mutex::new(HashMap::new()),
                builder,
                phase,
                connections: AtomicUsize::new(0),
                open: AtomicUsize::new(0),
                all_closed: Notify::new(),
                serving_threads: Mutex::new(Vec::new()),
                config,
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    Draining,
    Closed,
}

/// A registered endpoint: its state, and whether a table has named it yet (endpoints marked
/// ready or not before their first table are kept across swaps until one does).
#[derive(Debug)]
struct Registered {
    runtime: Arc<EndpointRuntime>,
    in_table: bool,
}

struct Shared {
    table: ArcSwap<CompiledTable>,
    clock: Clock,
    registry: MetricsRegistry,
    endpoints: Mutex<HashMap<String, Registered>>,
    builder: auto::Builder<TokioExecutor>,
    phase: watch::Sender<Phase>,
    connections: AtomicUsize,
    /// Connections accepted and not yet closed (counted from the accept, TLS handshake
    /// included), against [`IngressConfig::max_connections`].
    open: AtomicUsize,
    all_closed: Notify,
    serving_threads: Mutex<Vec<Arc<ThreadLoad>>>,
    config: IngressConfig,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("connections", &self.connections.load(Ordering::Relaxed))
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The control plane's handle; cheap to clone, all clones drive the same ingress.
#[derive(Debug, Clone)]
pub struct IngressHandle {
    shared: Arc<Shared>,
}

impl IngressHandle {
    /// Replaces the route table atomically. Requests already in flight finish against the
    /// table (and endpoints) they started with; new requests see only the new one.
    pub fn swap(&self, table: RouteTable) {
        let compiled = CompiledTable::compile(table.routes(), &*self.shared);
        self.shared.table.store(Arc::new(compiled));
        self.forget_endpoints_not_in(&table);
    }

    /// Current metrics for every route and set seen since the ingress started.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.registry.snapshot()
    }

    /// The health of every endpoint in the current table, in table order, each id once.
    pub fn endpoint_health(&self) -> Vec<EndpointHealth> {
        let table = self.shared.table.load_full();
        let now = self.shared.clock.now_ms();
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for route in &table.routes {
            for set in &route.sets {
                for ep in &set.endpoints {
                    if seen.insert(ep.id.as_str()) {
                        out.push(EndpointHealth {
                            id: ep.id.clone(),
                            state: ep.runtime.state(now),
                            in_flight: ep.runtime.in_flight(),
                            ejections: ep.runtime.ejections(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Gates an endpoint on the control plane's active health checks. Works before the
    /// endpoint's first table too, so a new release can be added to the table not ready.
    pub fn set_endpoint_ready(&self, id: &str, ready: bool) {
        self.shared.endpoint(id).set_ready(ready);
    }

    /// Accepts connections until [`IngressHandle::shutdown`]; the listener is dropped (new
    /// connections refused) as soon as draining starts.
    pub async fn serve(&self, listener: TcpListener) {
        self.accept_loop(listener, |stream, peer, admitted| {
            self.spawn_connection(stream, peer, None, (admitted, None));
        })
        .await;
    }

    /// Like [`IngressHandle::serve`], terminating TLS first (ALPN `h2`, `http/1.1`). A client
    /// that does not finish its handshake within the header read timeout is dropped.
    pub async fn serve_tls(&self, listener: TcpListener, tls: TlsSettings) {
        let acceptor = tls.acceptor();
        self.accept_loop(listener, |stream, peer, admitted| {
            self.spawn_connection(stream, peer, Some(&acceptor), (admitted, None));
        })
        .await;
    }

    /// Serves an accepted connection on a task of the current runtime, after a TLS handshake
    /// when `tls` is given; `load` counts it as open (and against its serving thread) until it
    /// closes.
    pub(crate) fn spawn_connection(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<&TlsAcceptor>,
        load: (Admitted, Option<LoadGuard>),
    ) {
        let handle = self.clone();
        let Some(acceptor) = tls.cloned() else {
            tokio::spawn(async move {
                let _load = load;
                handle
                    .serve_connection(TokioIo::new(stream), peer, Scheme::Http)
                    .await;
            });
            return;
        };
        let deadline = self.shared.config.header_read_timeout;
        tokio::spawn(async move {
            let _load = load;
            match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    handle
                        .serve_connection(TokioIo::new(tls), peer, Scheme::Https)
                        .await;
                }
                Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }

    /// The connections of each thread started by [`IngressHandle::serve_per_core`], in thread
    /// order (empty when the ingress is not served per core).
    pub fn serving_threads(&self) -> Vec<ServingThread> {
        self.shared
            .serving_threads
            .lock()
            .map(|loads| loads.iter().map(|load| load.snapshot()).collect())
            .unwrap_or_default()
    }

    /// Remembers the per-core threads' loads for [`IngressHandle::serving_threads`].
    pub(crate) fn register_serving_threads(&self, loads: &[Arc<ThreadLoad>]) {
        if let Ok(mut registered) = self.shared.serving_threads.lock() {
            registered.extend(loads.iter().cloned());
        }
    }

    /// Until every connection is gone or shutdown gave up on them.
    pub(crate) async fn wait_for_drain(&self) {
        let mut phase = self.shared.phase.subscribe();
        loop {
            let notified = self.shared.all_closed.notified();
            if self.shared.connections.load(Ordering::Acquire) == 0
                || *phase.borrow_and_update() == Phase::Closed
            {
                return;
            }
            tokio::select! {
                _ = notified => {}
                changed = phase.changed() => if changed.is_err() { return; },
            }
        }
    }

    /// Hands every accepted connection to `on_accept` until draining starts, then drops the
    /// listener. A connection accepted while `max_connections` are open is closed at once:
    /// refusing it costs nothing further, where one left in the listen queue would wait
    /// unanswered (HAProxy's `maxconn` behaviour) and hold the client in doubt.
    pub(crate) async fn accept_loop(
        &self,
        listener: TcpListener,
        mut on_accept: impl FnMut(TcpStream, SocketAddr, Admitted),
    ) {
        let mut phase = self.shared.phase.subscribe();
        loop {
            if *phase.borrow_and_update() != Phase::Serving {
                return;
            }
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Some(admitted) = Admitted::new(&self.shared) else {
                            self.shared.registry.add_closed(CloseReason::OverLimit);
                            tracing::debug!(%peer, limit = self.shared.config.max_connections, "connection over the limit closed");
                            continue;
                        };
                        // Small responses go out at once instead of waiting for Nagle.
                        let _ = stream.set_nodelay(true);
                        on_accept(stream, peer, admitted);
                    }
                    Err(error) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
                _ = phase.changed() => {}
            }
        }
    }

    /// Serves one already-accepted connection (HTTP/1.1 or h2c, detected from its preface).
    /// The seam for TLS: wrap the stream, then call this with [`Scheme::Https`].
    pub async fn serve_connection<IO>(&self, io: IO, peer: SocketAddr, scheme: Scheme)
    where
        IO: Read + Write + Unpin + Send + 'static,
    {
        let _tracked = ConnectionGuard::new(&self.shared);
        let watch = Arc::new(IoWatch::default());
        let state = Arc::new(ConnState {
            shared: self.shared.clone(),
            client_ip: headers::client_ip(peer.ip()),
            scheme,
            started: AtomicU64::new(0),
            in_progress: Arc::new(AtomicUsize::new(0)),
            h2: AtomicBool::new(false),
            watch: watch.clone(),
        });
        let service = {
            let state = state.clone();
            service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move {
                    if req.version() == Version::HTTP_2 {
                        state.h2.store(true, Ordering::Relaxed);
                    }
                    state.started.fetch_add(1, Ordering::Relaxed);
                    let busy = Busy::start(&state.in_progress);
                    let mut response = state
                        .shared
                        .handle(req, &state.client_ip, state.scheme, &state.watch)
                        .await;
                    // A relayed body keeps the request in progress until it ends (a silent
                    // stream is bounded by the route's idle timeout, not the connection's).
                    response.body_mut().hold(busy);
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let io = ClientIo::new(io, self.shared.config.send_timeout, watch.clone());
        let conn = self
            .shared
            .builder
            .serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        let mut phase = self.shared.phase.subscribe();
        // A second view of the phase, only to ask cheaply whether it moved (see `next_event`).
        let mut phase_moved = self.shared.phase.subscribe();
        let mut draining = false;
        // One timer for the connection's life, moved forward each tick.
        let limits = QuietLimits::new(&self.shared.config);
        let mut tick = Box::pin(tokio::time::sleep(limits.tick));
        let mut quiet = Quiet::default();
        loop {
            let current = *phase.borrow_and_update();
            phase_moved.mark_unchanged();
            if current == Phase::Closed {
                return;
            }
            if current == Phase::Draining && !draining {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            let event =
                next_event(conn.as_mut(), phase.changed(), &phase_moved, tick.as_mut()).await;
            match event {
                ConnEvent::Done(result) => {
                    if let Err(error) = result {
                        self.note_error(&error, &watch, peer);
                    }
                    return;
                }
                ConnEvent::Phase(Err(_)) => {
                    // The ingress is gone; finish this connection undisturbed.
                    let _ = conn.as_mut().await;
                    return;
                }
                ConnEvent::Phase(Ok(())) => {}
                ConnEvent::Tick => {
                    match quiet.tick(&state, &limits) {
                        QuietVerdict::Carry => {}
                        QuietVerdict::Close(reason) => {
                            tracing::debug!(%peer, ?reason, "quiet connection closed");
                            self.shared.registry.add_closed(reason);
                            if draining {
                                // Already closing and quiet since: drop it.
                                return;
                            }
                            draining = true;
                            conn.as_mut().graceful_shutdown();
                        }
                        QuietVerdict::Drop => {
                            // Asked to close a tick ago and quiet since (a head never
                            // finished, an HTTP/2 client ignoring the GOAWAY's ping).
                            tracing::debug!(%peer, "quiet connection dropped");
                            return;
                        }
                    }
                    tick.as_mut()
                        .reset(tokio::time::Instant::now() + limits.tick);
                }
            }
        }
    }

    /// Counts why a connection ended with an error, when the ingress ended it.
    fn note_error(&self, error: &BoxError, watch: &IoWatch, peer: SocketAddr) {
        if watch.timed_out() {
            self.shared.registry.add_closed(CloseReason::SendTimeout);
            tracing::info!(%peer, timeout = ?self.shared.config.send_timeout, "client read nothing: connection closed");
        } else {
            tracing::debug!(%error, %peer, "connection ended with an error");
        }
    }

    /// Stops accepting, lets in-flight requests finish until `deadline`, then closes what is
    /// left. Safe to call more than once.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        self.shared.phase.send_if_modified(|p| {
            let changed = *p == Phase::Serving;
            if changed {
                *p = Phase::Draining;
            }
            changed
        });
        let drained = tokio::time::timeout(deadline, self.wait_for_connections())
            .await
            .is_ok();
        if drained {
            return ShutdownReport { drained, forced: 0 };
        }
        let forced = self.shared.connections.load(Ordering::Acquire);
        self.shared.phase.send_replace(Phase::Closed);
        // Closed connections drop at their next poll; wait for that, briefly.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.wait_for_connections()).await;
        ShutdownReport { drained, forced }
    }

    async fn wait_for_connections(&self) {
        loop {
            let notified = self.shared.all_closed.notified();
            if self.shared.connections.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    fn forget_endpoints_not_in(&self, table: &RouteTable) {
        let named: std::collections::HashSet<&str> = table
            .routes()
            .iter()
            .flat_map(|r| &r.backends)
            .flat_map(|s| &s.endpoints)
            .map(|e| e.id.as_str())
            .collect();
        if let Ok(mut endpoints) = self.shared.endpoints.lock() {
            endpoints.retain(|id, reg| {
                let keep = named.contains(id.as_str());
                reg.in_table |= keep;
                keep || !reg.in_table
            });
        }
    }
}

impl Shared {
    async fn handle(
        &self,
        req: Request<Incoming>,
        client_ip: &HeaderValue,
        scheme: Scheme,
        watch: &Arc<IoWatch>,
    ) -> Response<ProxyBody> {
        let ctx = proxy::Context {
            table: self.table.load_full(),
            clock: &self.clock,
            registry: &self.registry,
            pool: PoolSettings {
                idle_timeout: self.config.pool_idle_timeout,
                max_idle_per_host: self.config.pool_max_idle_per_host,
            },
            client_ip,
            scheme: scheme.as_str(),
            watch: Some(watch),
        };
        proxy::handle(ctx, req).await
    }
}

impl Resolver for Shared {
    fn endpoint(&self, id: &str) -> Arc<EndpointRuntime> {
        let Ok(mut endpoints) = self.endpoints.lock() else {
            return Arc::new(EndpointRuntime::new(true));
        };
        endpoints
            .entry(id.to_owned())
            .or_insert_with(|| Registered {
                runtime: Arc::new(EndpointRuntime::new(true)),
                in_table: false,
            })
            .runtime
            .clone()
    }

    fn series(&self, route: &str, set: &str) -> Arc<SetMetrics> {
        self.registry.series(route, set)
    }
}

/// One client connection's state, shared by its requests.
struct ConnState {
    shared: Arc<Shared>,
    /// The client's address as X-Forwarded-For shows it, rendered once per connection.
    client_ip: HeaderValue,
    scheme: Scheme,
    /// Requests started so far: unchanged across an idle period means none started in it.
    started: AtomicU64,
    /// Requests in progress: from their start until their response head is ready, or until
    /// the end of a relayed response body.
    in_progress: Arc<AtomicUsize>,
    /// An HTTP/2 request came: the idle timeout applies between requests, not the header one.
    h2: AtomicBool,
    /// What the connection wrote to the client and read of request bodies.
    watch: Arc<IoWatch>,
}

/// The limits a connection's timer checks, and how often it ticks.
struct QuietLimits {
    header: Duration,
    idle: Duration,
    tick: Duration,
}

impl QuietLimits {
    fn new(config: &IngressConfig) -> Self {
        // A limit is noticed within half of the shorter one past it.
        let tick =
            (config.header_read_timeout.min(config.idle_timeout) / 2).max(Duration::from_millis(1));
        Self {
            header: config.header_read_timeout,
            idle: config.idle_timeout,
            tick,
        }
    }
}

/// How long a connection has been quiet: no request started, none in progress, nothing
/// written to the client, no request body read from it. Measured at the ticks of the connection's one timer,
/// in place of hyper's header read timer, which was made and removed for every request.
#[derive(Debug, Default)]
struct Quiet {
    /// Requests started, writes done and request body frames read at the last tick.
    seen: (u64, u64, u64),
    quiet_for: Duration,
    closing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuietVerdict {
    /// Active, or not quiet for long enough yet.
    Carry,
    /// Quiet past its limit: close gracefully, counted for this reason.
    Close(CloseReason),
    /// Quiet for a whole tick after being asked to close.
    Drop,
}

impl Quiet {
    fn tick(&mut self, state: &ConnState, limits: &QuietLimits) -> QuietVerdict {
        let watch = &state.watch;
        let now = (
            state.started.load(Ordering::Relaxed),
            watch.writes(),
            watch.body_frames(),
        );
        let quiet = now == self.seen && state.in_progress.load(Ordering::Relaxed) == 0;
        self.seen = now;
        if !quiet {
            self.quiet_for = Duration::ZERO;
            return QuietVerdict::Carry;
        }
        if self.closing {
            return QuietVerdict::Drop;
        }
        self.quiet_for += limits.tick;
        // Until a request came, and between HTTP/1.1 requests, the next head is awaited.
        let (limit, reason) = if state.h2.load(Ordering::Relaxed) {
            (limits.idle, CloseReason::Idle)
        } else {
            (limits.header, CloseReason::HeaderTimeout)
        };
        if self.quiet_for < limit {
            return QuietVerdict::Carry;
        }
        self.closing = true;
        QuietVerdict::Close(reason)
    }
}

/// A connection accepted under `max_connections`, counted open until dropped.
#[derive(Debug)]
pub(crate) struct Admitted(Arc<Shared>);

impl Admitted {
    /// `None` when `max_connections` are open already.
    fn new(shared: &Arc<Shared>) -> Option<Self> {
        let max = shared.config.max_connections;
        shared
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()?;
        Some(Self(shared.clone()))
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a live connection; the last one out wakes `shutdown`.
struct ConnectionGuard(Arc<Shared>);

impl ConnectionGuard {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.connections.fetch_add(1, Ordering::AcqRel);
        Self(shared.clone())
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.0.connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

/// What woke a connection's loop.
enum ConnEvent<T> {
    /// The connection ended (its result).
    Done(T),
    /// The phase changed (`Err`: the ingress is gone).
    Phase(Result<(), watch::error::RecvError>),
    /// The connection's timer fired.
    Tick,
}

/// Waits for the connection to end, the phase to change or the timer to fire, whichever comes
/// first. Nearly every wake-up is the connection's I/O, so only the connection is polled then:
/// the phase's future is polled when `phase_moved` (a receiver that is never read) says the
/// phase changed, and the timer when it has fired. Both are polled, and so registered with
/// the waker, on the first poll and whenever the waker changes, so neither wake-up is lost.
/// Polling all three on every wake-up, as `select!` does, cost ≈650 instructions per request
/// (2 %; `benches/ingress_instructions.sh`, two wake-ups per request on a kept-alive
/// connection).
async fn next_event<C: Future>(
    mut conn: std::pin::Pin<&mut C>,
    changed: impl Future<Output = Result<(), watch::error::RecvError>>,
    phase_moved: &watch::Receiver<Phase>,
    mut tick: std::pin::Pin<&mut tokio::time::Sleep>,
) -> ConnEvent<C::Output> {
    let mut changed = std::pin::pin!(changed);
    let mut registered: Option<std::task::Waker> = None;
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(ConnEvent::Done(result));
        }
        let fresh = !registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()));
        if fresh {
            registered = Some(cx.waker().clone());
        }
        if (fresh || phase_moved.has_changed().unwrap_or(true))
            && let Poll::Ready(result) = changed.as_mut().poll(cx)
        {
            return Poll::Ready(ConnEvent::Phase(result));
        }
        if (fresh || tick.is_elapsed()) && tick.as_mut().poll(cx).is_ready() {
            return Poll::Ready(ConnEvent::Tick);
        }
        Poll::Pending
    })
    .await
}
