//! Upstream HTTP/1.1 connections, pooled per thread.
//!
//! Each serving thread keeps its own idle connections per upstream address in a thread-local
//! (behind a lock only another thread's check-in takes): a request checks one out (most
//! recently used first), sends on it, and the response body checks it back in, into the pool
//! of the thread that made it, once it was read to the end ([`Pooled::check_in`]) *and* the
//! request body was written to its end. An upstream may answer before it read the
//! request body (an early 413 or 401, or a server that replies and then drains), and hyper
//! hands that response over while it is still streaming the body from the client, which may
//! be slow or stalled: until the body ends, the connection can carry nothing else. Such a
//! connection is not checked in; it finishes the body and then closes. A connection whose
//! response body was not read to the end, that broke, or that carried an upgrade is never
//! checked in either; dropping its [`SendRequest`] closes it (once any request body it is
//! writing ended). Each connection is driven by its own task on the runtime that opened it
//! (on a per-core thread: that thread), which also closes it after it sat idle for the idle
//! timeout.
//!
//! Why a flag the request body sets when it is dropped ([`BodyFlags::released`]) rather than
//! hyper's `SendRequest::is_ready`: in hyper 1.x, `is_ready` is true only once the
//! connection's task polled for the next request and found none, which it does only after the
//! request body ended *and* the response was read. So it is false for a connection writing a
//! body, but also for an idle one whose task has not run since its response ended: on a
//! multi-threaded runtime the response's reader can see the end of the body before that task
//! runs again. Skipping (or refusing to check in) a connection that is not ready would close
//! good ones; the flag is set exactly when hyper lets go of the body, whatever the runtime.
//!
//! Guarantees: a request that could not be written because its pooled connection turned out
//! closed (the upstream closed it while idle) is sent again on another connection to the same
//! address, whatever its method, since nothing reached the upstream; a failed connect hands the
//! request back untouched so the caller can try another endpoint. At most
//! `max_idle_per_host` idle connections are kept per address and thread.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::body::{BodyFlags, UpstreamBody, UpstreamIncoming};
use crate::config::Timeouts;
use crate::h1::{self, H1Error};

/// Pool limits, from [`crate::IngressConfig`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSettings {
    /// An idle connection is closed after this long unused (at most twice this: the driver
    /// checks once per period).
    pub(crate) idle_timeout: Duration,
    pub(crate) max_idle_per_host: usize,
}

/// Checkouts of pooled connections that turned out closed before one request gets a fresh
/// connection; bounds the loop in [`send`] should other tasks keep checking in dead ones.
const STALE_CHECKOUTS: usize = 8;

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connect to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("HTTP/1.1 handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("no response from {addr} within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error(transparent)]
    Request(hyper::Error),
    #[error("exchange with {addr} failed: {source}")]
    Exchange { addr: SocketAddr, source: H1Error },
}

/// A failed send: the error, and the request when none of it reached the upstream.
#[derive(Debug)]
pub(crate) struct SendFailure {
    pub(crate) error: UpstreamError,
    pub(crate) unsent: Option<Request<UpstreamBody>>,
    /// The headers of a request our own exchange may have sent, given back for a retry
    /// (hyper's client keeps the ones it sent).
    pub(crate) sent_headers: Option<HeaderMap>,
}

impl SendFailure {
    /// No connection could be made: nothing was sent.
    pub(crate) fn is_connect(&self) -> bool {
        matches!(
            self.error,
            UpstreamError::Connect { .. }
                | UpstreamError::ConnectTimeout { .. }
                | UpstreamError::Handshake { .. }
        )
    }

    /// The request timeout passed before the response's head arrived.
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self.error, UpstreamError::Timeout { .. })
    }
}

/// One upstream connection, checked out by a request.
#[derive(Debug)]
pub(crate) struct Pooled {
    addr: SocketAddr,
    sender: SendRequest<UpstreamBody>,
    idle: Arc<IdleWatch>,
    max_idle: usize,
    /// The flags of the request body this connection was last given (`None`: a bodiless
    /// request); the connection is busy until that body is released.
    request_body: Option<Arc<BodyFlags>>,
    /// The request timeout's timer, kept with the connection and moved to each request's
    /// deadline: moving a timer that is still registered to a later instant is one atomic
    /// operation, where a timer per request is registered and removed under the time
    /// driver's lock (and its handle cloned and dropped).
    timer: Pin<Box<Sleep>>,
    /// The pool of the thread that made it (weak: the pool holds its idle connections); none
    /// when made while the thread's locals were being destroyed (it is then not pooled).
    home: Option<Weak<HyperIdle>>,
}

/// What a connection's driver task needs to know to close it when idle.
#[derive(Debug, Default)]
struct IdleWatch {
    /// True while the connection sits in the pool.
    idle: AtomicBool,
    /// Checkouts so far: unchanged across a whole idle period means unused for that period.
    uses: AtomicU64,
}

/// A thread's idle hyper connections by address. Behind a lock because a request's task may
/// end on another thread than the one that made its connection (on a multi-threaded runtime),
/// and the connection goes back to the pool it came from (see [`check_in_own`] for why).
type HyperIdle = Mutex<HashMap<SocketAddr, Vec<Pooled>, BuildHasherDefault<AddrHasher>>>;

thread_local! {
    static IDLE: Arc<HyperIdle> = Arc::default();
}

fn lock_hyper(
    idle: &HyperIdle,
) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Vec<Pooled>, BuildHasherDefault<AddrHasher>>> {
    // Nothing is left half-changed under the lock by a panic: a poisoned lock is still usable.
    idle.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Hashes the pool's keys: a multiply-rotate over the few words of a `SocketAddr`, where the
/// standard SipHash cost ≈480 instructions per request (a check-out and a check-in; callgrind,
/// `benches/ingress_instructions.sh`). SipHash resists keys chosen to collide; these keys are
/// upstream addresses from the route table, which no client chooses.
#[derive(Debug, Default)]
struct AddrHasher(u64);

impl AddrHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

/// Sends `request` to `addr` on a pooled connection or a new one, within `timeouts.connect`
/// for a new connection and `timeouts.request` until the response's head (counted from the
/// end of the request body when the client is still sending it when that time is up);
/// returns the response and the connection, which the response body checks back in when
/// read to the end.
pub(crate) async fn send(
    addr: SocketAddr,
    timeouts: Timeouts,
    settings: PoolSettings,
    request: Request<UpstreamBody>,
) -> Result<Sent, SendFailure> {
    if takes_own_exchange(&request) {
        let (response, headers) = send_own(addr, timeouts, settings, request).await?;
        return Ok(Sent {
            response: response.map(UpstreamIncoming::Own),
            connection: None,
            headers: Some(headers),
        });
    }
    let (response, conn) = Box::pin(send_hyper(addr, timeouts, settings, request)).await?;
    Ok(Sent {
        response: response.map(UpstreamIncoming::Hyper),
        connection: Some(conn),
        headers: None,
    })
}

/// What [`send`] got back.
#[derive(Debug)]
pub(crate) struct Sent {
    pub(crate) response: Response<UpstreamIncoming>,
    /// hyper's connection, back to the pool once the body was read (`None` for our own
    /// exchange, whose body holds its connection).
    pub(crate) connection: Option<Pooled>,
    /// The request's headers, given back by our own exchange, which only read them (hyper's
    /// client keeps the ones it sent): a retry sends them again, else they are recycled
    /// ([`h1::recycle_headers`]).
    pub(crate) headers: Option<HeaderMap>,
}

/// Whether [`send`] takes `request` through our own exchange (`h1.rs`): the common case, a
/// request without a body (or with one read whole, [`UpstreamBody::whole`]) or an upgrade. The
/// rest goes through hyper's client.
pub(crate) fn takes_own_exchange(request: &Request<UpstreamBody>) -> bool {
    request.body().flags().is_none() && !request.headers().contains_key(hyper::header::UPGRADE)
}

/// [`send`] through hyper's client.
async fn send_hyper(
    addr: SocketAddr,
    timeouts: Timeouts,
    settings: PoolSettings,
    mut request: Request<UpstreamBody>,
) -> Result<(Response<Incoming>, Pooled), SendFailure> {
    let deadline = Instant::now() + timeouts.request;
    let timed_out = |unsent| SendFailure {
        error: UpstreamError::Timeout {
            addr,
            timeout: timeouts.request,
        },
        unsent,
        sent_headers: None,
    };
    let mut stale = 0;
    loop {
        let pooled = if stale < STALE_CHECKOUTS {
            check_out(addr)
        } else {
            None
        };
        // An idle connection of our own exchange serves as well: hyper takes over its socket
        // (so a request with a body after bodiless ones finds a connection ready).
        let own = if pooled.is_none() && stale < STALE_CHECKOUTS {
            check_out_own(addr)
        } else {
            None
        };
        let (mut conn, fresh) = match (pooled, own) {
            (Some(conn), _) => (conn, false),
            (None, Some(own)) => match handshake(addr, own.into_stream(), deadline, settings).await
            {
                Ok(conn) => (conn, false),
                Err(error) => {
                    return Err(SendFailure {
                        error,
                        unsent: Some(request),
                        sent_headers: None,
                    });
                }
            },
            // Boxed: connecting is rare, and its state would otherwise make every request's
            // future (moved around by hyper) larger.
            (None, None) => match Box::pin(connect(addr, timeouts, deadline, settings)).await {
                Ok(conn) => (conn, true),
                Err(error) => {
                    return Err(SendFailure {
                        error,
                        unsent: Some(request),
                        sent_headers: None,
                    });
                }
            },
        };
        conn.max_idle = settings.max_idle_per_host;
        conn.timer.as_mut().reset(deadline);
        if !fresh {
            let ready = tokio::select! {
                biased;
                ready = conn.sender.ready() => ready.is_ok(),
                () = conn.timer.as_mut() => return Err(timed_out(Some(request))),
            };
            if !ready {
                // Closed while it sat idle; dropping it is all there is to do.
                stale += 1;
                continue;
            }
        }
        let request_body = request.body().flags().cloned();
        // Dropped at the deadline, the request future closes the connection with it.
        let mut sending = std::pin::pin!(conn.sender.try_send_request(request));
        // The request timeout is the upstream's time to answer: while the client is still
        // sending the body (guarded by the body timeout), it counts from the body's end.
        let sent = loop {
            tokio::select! {
                biased;
                sent = &mut sending => break sent,
                () = conn.timer.as_mut() => {
                    let Some(body) = &request_body else {
                        return Err(timed_out(None));
                    };
                    let now = Instant::now();
                    let next = body
                        .released_at()
                        .map_or(now + timeouts.request, |at| Instant::from_std(at) + timeouts.request);
                    if next <= now {
                        return Err(timed_out(None));
                    }
                    conn.timer.as_mut().reset(next);
                }
            }
        };
        match sent {
            Ok(response) => {
                conn.request_body = request_body;
                return Ok((response, conn));
            }
            Err(mut failure) => match failure.take_message() {
                Some(unsent) if !fresh => {
                    tracing::debug!(%addr, "pooled upstream connection closed before the request was written");
                    request = unsent;
                    stale += 1;
                }
                unsent => {
                    return Err(SendFailure {
                        error: UpstreamError::Request(failure.into_error()),
                        unsent,
                        sent_headers: None,
                    });
                }
            },
        }
    }
}

impl Pooled {
    /// Returns the connection to the pool of the thread that made it: call only once its
    /// response was read to the end. A closed connection, one still writing its request body,
    /// one over the per-address limit, or one whose thread is gone, is dropped.
    pub(crate) fn check_in(mut self) {
        if self.sender.is_closed() {
            return;
        }
        if let Some(body) = self.request_body.take()
            && !body.released()
        {
            tracing::debug!(addr = %self.addr, "upstream answered before the request body ended; connection not reused");
            return;
        }
        // `try_with`: a body dropped while the thread's locals are being destroyed just
        // closes its connection.
        let _ = IDLE.try_with(|local| {
            let foreign;
            let (shared, here) = match &self.home {
                // Compared without upgrading the weak reference (no atomic operation).
                Some(home) if std::ptr::eq(home.as_ptr(), Arc::as_ptr(local)) => (local, true),
                Some(home) => match home.upgrade() {
                    Some(home) => {
                        foreign = home;
                        (&foreign, false)
                    }
                    None => return,
                },
                None => return,
            };
            // The limit counts our own idle connections to the address too (this thread's:
            // another's are out of reach, and only hyper's count).
            let own = if here { own_idle_to(self.addr) } else { 0 };
            let mut idle = lock_hyper(shared);
            if idle.len() >= SWEEP_ABOVE_ADDRESSES && !idle.contains_key(&self.addr) {
                // Addresses of instances long gone keep only closed connections: drop them.
                idle.retain(|_, list| {
                    list.retain(|conn| !conn.sender.is_closed());
                    !list.is_empty()
                });
            }
            let list = idle.entry(self.addr).or_default();
            if list.len() + own >= self.max_idle {
                // Full, maybe of connections closed while they sat there: make room.
                list.retain(|conn| !conn.sender.is_closed());
            }
            if list.len() + own < self.max_idle {
                self.idle.idle.store(true, Ordering::Release);
                list.push(self);
            }
        });
    }
}

/// Past this many upstream addresses, returning a connection for a new one first sweeps out
/// the addresses whose idle connections have all closed.
const SWEEP_ABOVE_ADDRESSES: usize = 64;

fn check_out(addr: SocketAddr) -> Option<Pooled> {
    IDLE.try_with(|idle| {
        let mut idle = lock_hyper(idle);
        let list = idle.get_mut(&addr)?;
        let mut found = None;
        while let Some(conn) = list.pop() {
            if !conn.sender.is_closed() {
                conn.idle.idle.store(false, Ordering::Release);
                conn.idle.uses.fetch_add(1, Ordering::Relaxed);
                found = Some(conn);
                break;
            }
        }
        // Instances come and go with deploys: an address with nothing idle is forgotten, so
        // the map holds only addresses with connections to offer.
        if list.is_empty() {
            idle.remove(&addr);
        }
        found
    })
    .ok()
    .flatten()
}

/// Closes every idle connection of this thread (before its runtime goes away).
pub(crate) fn clear_thread() {
    let _ = IDLE.try_with(|idle| lock_hyper(idle).clear());
    let _ = OWN_IDLE.try_with(|shared| lock(shared).lists.clear());
}

/// Connects within `timeouts.connect`, or until `deadline` (the request's) when that comes
/// first, which is then the request's timeout.
async fn connect(
    addr: SocketAddr,
    timeouts: Timeouts,
    deadline: Instant,
    settings: PoolSettings,
) -> Result<Pooled, UpstreamError> {
    let stream = connect_stream(addr, timeouts, deadline).await?;
    handshake(addr, stream, deadline, settings).await
}

/// A new connection to `addr` within `timeouts.connect`, or until `deadline` (the request's)
/// when that comes first, which is then the request's timeout; Nagle off.
async fn connect_stream(
    addr: SocketAddr,
    timeouts: Timeouts,
    deadline: Instant,
) -> Result<TcpStream, UpstreamError> {
    let connect_limit = Instant::now() + timeouts.connect;
    let limit = connect_limit.min(deadline);
    let stream = match tokio::time::timeout_at(limit, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(UpstreamError::Connect { addr, source }),
        Err(_) if limit < connect_limit => {
            return Err(UpstreamError::Timeout {
                addr,
                timeout: timeouts.request,
            });
        }
        Err(_) => {
            return Err(UpstreamError::ConnectTimeout {
                addr,
                timeout: timeouts.connect,
            });
        }
    };
    // Small requests go out at once instead of waiting for Nagle.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Starts hyper's client on a connected `stream`, driven by a task of its own.
async fn handshake(
    addr: SocketAddr,
    stream: TcpStream,
    deadline: Instant,
    settings: PoolSettings,
) -> Result<Pooled, UpstreamError> {
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| UpstreamError::Handshake { addr, source })?;
    let idle = Arc::new(IdleWatch::default());
    tokio::spawn(drive(connection, idle.clone(), settings.idle_timeout, addr));
    Ok(Pooled {
        addr,
        sender,
        idle,
        max_idle: settings.max_idle_per_host,
        request_body: None,
        timer: Box::pin(tokio::time::sleep_until(deadline)),
        home: IDLE.try_with(Arc::downgrade).ok(),
    })
}

/// Drives one connection until it ends, or closes it once idle for a whole period.
async fn drive(
    connection: http1::Connection<TokioIo<TcpStream>, UpstreamBody>,
    idle: Arc<IdleWatch>,
    idle_timeout: Duration,
    addr: SocketAddr,
) {
    let connection = connection.with_upgrades();
    tokio::select! {
        biased;
        result = connection => {
            if let Err(error) = result {
                tracing::debug!(%addr, %error, "upstream connection ended with an error");
            }
        }
        () = idle_expiry(&idle, idle_timeout) => {
            tracing::debug!(%addr, "idle upstream connection closed");
        }
    }
}

/// Returns once the connection sat in the pool unused for a whole `idle_timeout` period.
async fn idle_expiry(idle: &IdleWatch, idle_timeout: Duration) {
    let mut seen = idle.uses.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(idle_timeout).await;
        let uses = idle.uses.load(Ordering::Relaxed);
        if uses == seen && idle.idle.load(Ordering::Acquire) {
            return;
        }
        seen = uses;
    }
}

/// Our own connections (`h1.rs`) sitting idle, per address, on one thread; shared with the
/// thread's sweeper task, which closes those idle past the timeout (no task per connection).
#[derive(Debug, Default)]
struct OwnIdle {
    lists: HashMap<SocketAddr, Vec<h1::Conn>, BuildHasherDefault<AddrHasher>>,
    /// A sweeper task is running for this thread's lists.
    sweeping: bool,
    /// Sweeps so far: a connection checked in at generation `g` is closed by the first sweep
    /// that finds the generation past `g`, i.e. after one to two idle timeouts unused (no clock
    /// read per check-in or check-out).
    generation: u64,
}

type SharedOwnIdle = Arc<Mutex<OwnIdle>>;

/// A thread's pool of our own idle connections, as a connection remembers where it was made:
/// weak, since the pool holds its idle connections (a strong one would keep a pool and its
/// sockets alive after its thread ended).
#[derive(Debug, Clone)]
pub(crate) struct OwnIdleHome(Weak<Mutex<OwnIdle>>);

thread_local! {
    static OWN_IDLE: SharedOwnIdle = Arc::default();
}

fn lock(idle: &Mutex<OwnIdle>) -> std::sync::MutexGuard<'_, OwnIdle> {
    // Nothing is left half-changed under the lock by a panic: a poisoned lock is still usable.
    idle.lock().unwrap_or_else(PoisonError::into_inner)
}

/// [`send`] through our own exchange: a pooled connection that still looks open (checked
/// without a system call unless its socket reported something) or a new one; the head written
/// in one write, the response head read within the request timeout. A request that could not
/// be written on a pooled connection goes out again on another one, since nothing reached the
/// upstream.
async fn send_own(
    addr: SocketAddr,
    timeouts: Timeouts,
    settings: PoolSettings,
    request: Request<UpstreamBody>,
) -> Result<(Response<h1::ResponseBody>, HeaderMap), SendFailure> {
    let deadline = Instant::now() + timeouts.request;
    let mut stale = 0;
    loop {
        let pooled = if stale < STALE_CHECKOUTS {
            check_out_own(addr)
        } else {
            None
        };
        let (mut conn, fresh) = match pooled {
            Some(conn) => (conn, false),
            None => match Box::pin(connect_own(addr, timeouts, deadline)).await {
                Ok(conn) => (conn, true),
                Err(error) => {
                    return Err(SendFailure {
                        error,
                        unsent: Some(request),
                        sent_headers: None,
                    });
                }
            },
        };
        match conn.exchange(&request, deadline).await {
            Ok(head) => {
                let body = h1::ResponseBody::new(
                    conn,
                    &head,
                    settings.max_idle_per_host,
                    settings.idle_timeout,
                );
                let mut response = Response::new(body);
                *response.status_mut() = head.status;
                *response.version_mut() = head.version;
                *response.headers_mut() = head.headers;
                return Ok((response, request.into_parts().0.headers));
            }
            Err(h1::ExchangeError::Write(error)) if !fresh => {
                tracing::debug!(%addr, %error, "pooled upstream connection closed before the request was written");
                stale += 1;
            }
            Err(h1::ExchangeError::Write(error)) => {
                return Err(SendFailure {
                    error: UpstreamError::Exchange {
                        addr,
                        source: H1Error::Io(error),
                    },
                    unsent: None,
                    sent_headers: Some(request.into_parts().0.headers),
                });
            }
            Err(h1::ExchangeError::Timeout) => {
                return Err(SendFailure {
                    error: UpstreamError::Timeout {
                        addr,
                        timeout: timeouts.request,
                    },
                    unsent: None,
                    sent_headers: Some(request.into_parts().0.headers),
                });
            }
            Err(h1::ExchangeError::Read(source)) => {
                return Err(SendFailure {
                    error: UpstreamError::Exchange { addr, source },
                    unsent: None,
                    sent_headers: Some(request.into_parts().0.headers),
                });
            }
        }
    }
}

/// A new connection of our own exchange (see [`connect_stream`]).
async fn connect_own(
    addr: SocketAddr,
    timeouts: Timeouts,
    deadline: Instant,
) -> Result<h1::Conn, UpstreamError> {
    let stream = connect_stream(addr, timeouts, deadline).await?;
    // Made for this thread's pool (none while the thread's locals are being destroyed: the
    // connection is then used once).
    let home = OWN_IDLE
        .try_with(|shared| OwnIdleHome(Arc::downgrade(shared)))
        .ok();
    Ok(h1::Conn::new(addr, stream, deadline, home))
}

/// How many of our own connections to `addr` sit idle in this thread's pool.
fn own_idle_to(addr: SocketAddr) -> usize {
    OWN_IDLE
        .try_with(|shared| lock(shared).lists.get(&addr).map_or(0, Vec::len))
        .unwrap_or(0)
}

/// An idle connection to `addr` of this thread that is still open; those found closed on the
/// way are dropped.
fn check_out_own(addr: SocketAddr) -> Option<h1::Conn> {
    OWN_IDLE
        .try_with(|shared| {
            let mut idle = lock(shared);
            let list = idle.lists.get_mut(&addr)?;
            let mut found = None;
            while let Some(mut conn) = list.pop() {
                if conn.idle_and_open() {
                    found = Some(conn);
                    break;
                }
            }
            // An emptied list stays, for the check-in that usually follows (removing it freed
            // the list and the check-in allocated it again: ≈150 instructions per request);
            // the sweeper, or a check-in for a new address past `SWEEP_ABOVE_ADDRESSES`,
            // removes the address once its list is still empty then.
            found
        })
        .ok()
        .flatten()
}

/// Returns one of our own connections to the pool of the thread that made it: called by its
/// response body, once read to its end on a connection both sides keep open. Over `max_idle`
/// for its address, or outside a runtime (no sweeper could close it), it is closed instead.
///
/// Why that thread's pool and not the current one's: on a multi-threaded runtime a request's
/// task can end on another worker than the one it started on (and does, every time the
/// connection's I/O wakes it on the worker holding the driver). Checked in where it ended,
/// the connection left its thread's pool empty, so the next request started there made a new
/// one, while the other thread's list filled to the limit and closed the rest: 0.16 new
/// upstream connections per request at 128 client connections (`benches/ingress_syscalls.py`).
/// Served per core, both are this thread's pool.
pub(crate) fn check_in_own(mut conn: h1::Conn, max_idle: usize, idle_timeout: Duration) {
    let _ = OWN_IDLE.try_with(|local| {
        let foreign;
        let (shared, here) = match &conn.home {
            // Compared without upgrading the weak reference (no atomic operation).
            Some(OwnIdleHome(home)) if std::ptr::eq(home.as_ptr(), Arc::as_ptr(local)) => {
                (local, true)
            }
            Some(OwnIdleHome(home)) => match home.upgrade() {
                Some(home) => {
                    foreign = home;
                    (&foreign, false)
                }
                // Its thread is gone: closed.
                None => return,
            },
            None => return,
        };
        // The limit counts hyper's idle connections to the address too (this thread's: on
        // another, they are out of reach, and only ours count).
        let hypers = if here {
            IDLE.try_with(|idle| lock_hyper(idle).get(&conn.addr).map_or(0, Vec::len))
                .unwrap_or(0)
        } else {
            0
        };
        let mut idle = lock(shared);
        if !idle.sweeping {
            // The runtime is asked only when a sweeper must start (asking cloned its handle
            // for every check-in); outside one, no sweeper could close the connection.
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            idle.sweeping = true;
            runtime.spawn(sweep_own(shared.clone(), idle_timeout));
        }
        conn.idle_since = idle.generation;
        if idle.lists.len() >= SWEEP_ABOVE_ADDRESSES && !idle.lists.contains_key(&conn.addr) {
            // Addresses of instances long gone keep only connections the upstream closed.
            idle.lists.retain(|_, list| {
                list.retain_mut(h1::Conn::idle_and_open);
                !list.is_empty()
            });
        }
        let list = idle.lists.entry(conn.addr).or_default();
        if list.len() + hypers >= max_idle {
            return;
        }
        list.push(conn);
    });
}

/// Closes the thread's own idle connections once past `idle_timeout` (each at most twice
/// that after it was checked in); ends when none are left, and is started again by the next
/// check-in.
async fn sweep_own(shared: SharedOwnIdle, idle_timeout: Duration) {
    loop {
        tokio::time::sleep(idle_timeout).await;
        let mut idle = lock(&shared);
        let generation = idle.generation;
        idle.generation += 1;
        idle.lists.retain(|addr, list| {
            let before = list.len();
            list.retain(|c| c.idle_since >= generation);
            if list.len() < before {
                tracing::debug!(%addr, closed = before - list.len(), "idle upstream connections closed");
            }
            !list.is_empty()
        });
        if idle.lists.is_empty() {
            idle.sweeping = false;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::AtomicUsize;

    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    use super::*;
    use crate::metrics::SetMetrics;

    const SETTINGS: PoolSettings = PoolSettings {
        idle_timeout: Duration::from_secs(90),
        max_idle_per_host: 8,
    };

    /// A keep-alive upstream answering each request with the length of its body; counts the
    /// connections it accepted.
    async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = service_fn(|req: Request<Incoming>| async move {
                        let len = req.into_body().collect().await.unwrap().to_bytes().len();
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(len.to_string()))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    /// A POST of `payload` whose body is a real `Incoming`, as the proxy forwards it: made
    /// by sending it through a loopback hyper server that hands the request over.
    async fn post(payload: &'static str) -> Request<UpstreamBody> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let tx = std::sync::Mutex::new(Some(tx));
            let service = service_fn(move |req: Request<Incoming>| {
                if let Some(tx) = tx.lock().unwrap().take() {
                    let _ = tx.send(req);
                }
                async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        let request = Request::post("/")
            .header("host", "upstream")
            .body(Full::new(Bytes::from(payload)))
            .unwrap();
        tokio::spawn(async move { sender.send_request(request).await });
        let (parts, body) = rx.await.unwrap().into_parts();
        let body = UpstreamBody::new(
            body,
            None,
            Duration::from_secs(60),
            Arc::new(BodyFlags::default()),
            Arc::new(SetMetrics::default()),
        );
        Request::from_parts(parts, body)
    }

    fn get() -> Request<UpstreamBody> {
        Request::get("/")
            .header("host", "upstream")
            .body(UpstreamBody::empty())
            .unwrap()
    }

    async fn read_to_end<B: hyper::body::Body<Error: std::fmt::Debug>>(
        response: Response<B>,
    ) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn a_hyper_connection_read_to_the_end_is_reused() {
        let (addr, accepted) = upstream().await;
        for _ in 0..3 {
            let (response, conn) = send_hyper(addr, Timeouts::default(), SETTINGS, get())
                .await
                .unwrap();
            assert_eq!(read_to_end(response).await, "0");
            conn.check_in();
            assert_eq!(idle_count(addr), 1);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// A bodiless request takes our own exchange, whose body checks its connection in when
    /// read to the end and dropped.
    #[tokio::test]
    async fn an_own_connection_read_to_the_end_is_reused() {
        let (addr, accepted) = upstream().await;
        for _ in 0..3 {
            let Sent {
                response,
                connection: conn,
                ..
            } = send(addr, Timeouts::default(), SETTINGS, get())
                .await
                .unwrap();
            assert!(conn.is_none(), "not hyper's client");
            assert!(matches!(response.body(), UpstreamIncoming::Own(_)));
            assert_eq!(read_to_end(response).await, "0");
            assert_eq!(own_idle_count(addr), 1);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// On a multi-threaded runtime a request's task can end on another worker than the one
    /// it started on. Its connection goes back to the pool of the thread that made it, where
    /// the next request started there finds it: checked in on the other thread's, that thread
    /// made a new connection for every such request, and the other's list filled to the idle
    /// limit and closed the rest (`benches/ingress_syscalls.py`: 0.16 connects per request at
    /// 128 connections).
    #[test]
    fn an_own_connection_ended_on_another_thread_returns_to_the_thread_that_made_it() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (addr, accepted) = runtime.block_on(upstream());
        for _ in 0..3 {
            let Sent { response, .. } = runtime
                .block_on(send(addr, Timeouts::default(), SETTINGS, get()))
                .unwrap();
            // Read to its end and dropped on another thread, as when its task moved.
            let handle = runtime.handle().clone();
            let body = std::thread::spawn(move || handle.block_on(read_to_end(response)))
                .join()
                .unwrap();
            assert_eq!(body, "0");
            assert_eq!(own_idle_count(addr), 1, "back in this thread's pool");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// As [`an_own_connection_ended_on_another_thread_returns_to_the_thread_that_made_it`],
    /// for hyper's connections (requests with a body).
    #[test]
    fn a_hyper_connection_checked_in_on_another_thread_returns_to_the_thread_that_made_it() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (addr, accepted) = runtime.block_on(upstream());
        for _ in 0..3 {
            let (response, conn) = runtime
                .block_on(send_hyper(addr, Timeouts::default(), SETTINGS, get()))
                .unwrap();
            // Read to its end and checked in on another thread, as when its task moved.
            let handle = runtime.handle().clone();
            let body = std::thread::spawn(move || {
                handle.block_on(async move {
                    let body = read_to_end(response).await;
                    conn.check_in();
                    body
                })
            })
            .join()
            .unwrap();
            assert_eq!(body, "0");
            assert_eq!(idle_count(addr), 1, "back in this thread's pool");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// An idle connection does not keep its thread's pool alive: once the thread and its
    /// runtime are gone, so are the pool and the connections in it.
    #[test]
    fn a_pool_ends_with_its_thread() {
        let (pool, accepted) = std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (addr, accepted) = upstream().await;
                let Sent { response, .. } = send(addr, Timeouts::default(), SETTINGS, get())
                    .await
                    .unwrap();
                assert_eq!(read_to_end(response).await, "0");
                assert_eq!(own_idle_count(addr), 1);
                (OWN_IDLE.with(Arc::downgrade), accepted)
            })
        })
        .join()
        .unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert!(
            pool.upgrade().is_none(),
            "the pool was dropped with its thread"
        );
    }

    /// A check-out that empties an address's list leaves the list for the check-in that
    /// follows; the sweeper removes it if it is still empty then, and ends with nothing left.
    #[tokio::test]
    async fn an_emptied_own_list_is_kept_then_swept() {
        let (addr, _) = upstream().await;
        let settings = PoolSettings {
            idle_timeout: Duration::from_millis(20),
            max_idle_per_host: 8,
        };
        let Sent { response, .. } = send(addr, Timeouts::default(), settings, get())
            .await
            .unwrap();
        assert_eq!(read_to_end(response).await, "0");
        assert_eq!(own_idle_count(addr), 1);
        let conn = check_out_own(addr);
        assert!(conn.is_some(), "the connection was pooled");
        let kept = OWN_IDLE.with(|shared| lock(shared).lists.contains_key(&addr));
        assert!(kept, "the emptied list is kept for the next check-in");
        let swept = || {
            OWN_IDLE.with(|shared| {
                let idle = lock(shared);
                idle.lists.is_empty() && !idle.sweeping
            })
        };
        // Bounded in time; the sweeper runs every 20 ms.
        let start = tokio::time::Instant::now();
        while !swept() && start.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(swept(), "the sweeper removed the empty list and ended");
        drop(conn);
    }

    /// An own connection the upstream closed while it sat idle is noticed at check-out; the
    /// request goes out on a new connection.
    #[tokio::test]
    async fn an_own_connection_closed_while_idle_is_not_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (closed_tx, mut closed) = tokio::sync::mpsc::channel::<()>(4);
        tokio::spawn(async move {
            // Each connection answers one request, keep-alive, then closes.
            while let Ok((mut stream, _)) = listener.accept().await {
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = stream.read(&mut buf).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                    }
                    stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .unwrap();
                    drop(stream);
                    let _ = closed_tx.send(()).await;
                });
            }
        });
        let Sent { response, .. } = send(addr, Timeouts::default(), SETTINGS, get())
            .await
            .unwrap();
        assert_eq!(read_to_end(response).await, "ok");
        assert_eq!(own_idle_count(addr), 1);
        closed.recv().await.unwrap();
        // The FIN reaches our socket's readiness once the runtime polls its driver.
        let mut noticed = false;
        for _ in 0..1000 {
            tokio::task::yield_now().await;
            noticed = OWN_IDLE.with(|shared| {
                lock(shared)
                    .lists
                    .get_mut(&addr)
                    .is_some_and(|list| !list[0].idle_and_open())
            });
            if noticed {
                break;
            }
        }
        assert!(noticed, "the closed connection was noticed");
        let Sent { response, .. } = send(addr, Timeouts::default(), SETTINGS, get())
            .await
            .unwrap();
        assert_eq!(read_to_end(response).await, "ok");
    }

    #[tokio::test]
    async fn a_failed_connect_hands_the_request_back() {
        let dead = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let failure = send(dead, Timeouts::default(), SETTINGS, post("payload").await)
            .await
            .unwrap_err();
        assert!(failure.is_connect(), "{:?}", failure.error);
        let unsent = failure.unsent.expect("the request comes back");
        assert_eq!(
            read_body(unsent.into_body()).await,
            "payload",
            "with its body unread"
        );
    }

    async fn read_body(body: UpstreamBody) -> String {
        let bytes = body.collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The race a pool cannot avoid: the upstream closes an idle connection just as a request
    /// is handed to it. The connection ends before writing the request, which hyper hands
    /// back; the pool must send it on a new connection, whatever its method.
    #[tokio::test]
    async fn a_request_queued_on_a_connection_that_then_closed_goes_out_on_a_new_one() {
        let (addr, accepted) = upstream().await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        // A driver we can freeze (stop polling the connection while it lives on) and then
        // end, closing the connection with the queued request still unwritten.
        let (freeze_tx, freeze) = oneshot::channel::<()>();
        let (end_tx, end) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = &mut connection => return,
                _ = freeze => {}
            }
            let _ = end.await;
        });
        let conn = Pooled {
            addr,
            sender,
            idle: Arc::new(IdleWatch::default()),
            max_idle: 8,
            request_body: None,
            timer: Box::pin(tokio::time::sleep(Duration::from_secs(90))),
            home: IDLE.with(|idle| Some(Arc::downgrade(idle))),
        };
        conn.check_in();
        let mut ready = false;
        for _ in 0..100 {
            ready = IDLE.with(|idle| lock_hyper(idle)[&addr][0].sender.is_ready());
            if ready {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(ready, "the connection became idle and ready");
        freeze_tx.send(()).unwrap();
        let sending = tokio::spawn(send(
            addr,
            Timeouts::default(),
            SETTINGS,
            post("payload").await,
        ));
        for _ in 0..100 {
            if idle_count(addr) == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            idle_count(addr),
            0,
            "the request took the pooled connection"
        );
        end_tx.send(()).unwrap();
        let Sent { response, .. } = sending.await.unwrap().unwrap();
        assert_eq!(read_to_end(response).await, "7", "the body went out whole");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    fn own_idle_count(addr: SocketAddr) -> usize {
        own_idle_to(addr)
    }

    /// `max_idle_per_host` bounds the idle connections to an address of both kinds together:
    /// one of hyper's idle leaves no room for one of ours, and the other way round.
    #[tokio::test]
    async fn the_idle_limit_counts_both_kinds_of_connection() {
        let one = PoolSettings {
            max_idle_per_host: 1,
            ..SETTINGS
        };
        let (addr, _) = upstream().await;
        let (response, conn) = send_hyper(addr, Timeouts::default(), one, get())
            .await
            .unwrap();
        assert_eq!(read_to_end(response).await, "0");
        conn.check_in();
        assert_eq!(idle_count(addr), 1);
        let Sent {
            response,
            connection: conn,
            ..
        } = send(addr, Timeouts::default(), one, get()).await.unwrap();
        assert!(conn.is_none(), "not hyper's client");
        assert_eq!(read_to_end(response).await, "0");
        assert_eq!(
            own_idle_count(addr),
            0,
            "hyper's idle connection fills the limit"
        );

        // A hyper connection in use while one of ours goes idle: checked in, it is closed.
        let (addr, _) = upstream().await;
        let (response, conn) = send_hyper(addr, Timeouts::default(), one, get())
            .await
            .unwrap();
        assert_eq!(read_to_end(response).await, "0");
        let Sent { response, .. } = send(addr, Timeouts::default(), one, get()).await.unwrap();
        assert_eq!(read_to_end(response).await, "0");
        assert_eq!(own_idle_count(addr), 1);
        conn.check_in();
        assert_eq!(idle_count(addr), 0, "our idle connection fills the limit");
    }

    fn idle_count(addr: SocketAddr) -> usize {
        IDLE.with(|idle| lock_hyper(idle).get(&addr).map_or(0, Vec::len))
    }
}
