//! Per-core serving: one OS thread per core, each with its own single-threaded runtime and its
//! own upstream pool, so a request never changes threads (nginx's model).
//!
//! One listening socket, accepted from by the first thread, which hands each connection to the
//! thread with the fewest open connections (ties in turn). Two alternatives were rejected:
//!
//! - Every thread accepting from the shared socket: they race, and the thread that wakes first
//!   takes the whole burst. Measured with `wrk -c128`: 119 and 10, then 129 and 0 connections
//!   per thread, so one core proxied while the other idled.
//! - One `SO_REUSEPORT` socket per thread (nginx's `reuseport`): Linux lets any other socket of
//!   the same effective user join the group, so a second kiln, or any process of that user,
//!   started on the same address would bind without an error and silently take a share of the
//!   connections; and the kernel spreads connections by a hash of their addresses, not by
//!   load. With one socket, a second bind fails with "address in use".
//!
//! A connection is handed over once, when accepted, as a `std` socket the receiving thread
//! registers with its own runtime; its requests then stay on that thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::pool;
use crate::server::{Admitted, IngressHandle};
use crate::tls::TlsSettings;

/// One serving thread's connections, as [`IngressHandle::serving_threads`] reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServingThread {
    /// Connections open now (including ones handed over but not yet started).
    pub open: usize,
    /// Connections handed to this thread since it started.
    pub accepted: u64,
}

/// The counters behind a [`ServingThread`], shared by the accepting thread (which counts a
/// connection in when it hands it over) and the serving one (whose connection counts out).
#[derive(Debug, Default)]
pub(crate) struct ThreadLoad {
    open: AtomicUsize,
    accepted: AtomicU64,
}

impl ThreadLoad {
    pub(crate) fn snapshot(&self) -> ServingThread {
        ServingThread {
            open: self.open.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
        }
    }
}

/// One open connection of a thread, from hand-over until it closes (dropped with it).
#[derive(Debug)]
pub(crate) struct LoadGuard(Arc<ThreadLoad>);

impl LoadGuard {
    fn new(load: &Arc<ThreadLoad>) -> Self {
        load.open.fetch_add(1, Ordering::Relaxed);
        load.accepted.fetch_add(1, Ordering::Relaxed);
        Self(load.clone())
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An accepted connection on its way to its serving thread.
#[derive(Debug)]
struct Handoff {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    load: LoadGuard,
    admitted: Admitted,
}

/// The accepting thread's side: each thread's load and inbox.
#[derive(Debug)]
struct Dispatcher {
    loads: Vec<Arc<ThreadLoad>>,
    inboxes: Vec<mpsc::UnboundedSender<Handoff>>,
    /// Where the search for the least-loaded thread starts, so ties go round robin.
    next: usize,
}

impl Dispatcher {
    /// The thread with the fewest open connections; among equals, the first from `next` on.
    /// A burst accepted before any of its connections started still spreads evenly, since a
    /// connection counts against its thread from the moment it is handed over.
    fn pick(&mut self) -> usize {
        let threads = self.loads.len();
        let mut best = self.next % threads;
        let mut best_open = usize::MAX;
        for offset in 0..threads {
            let index = (self.next + offset) % threads;
            let open = self.loads[index].open.load(Ordering::Relaxed);
            if open < best_open {
                best = index;
                best_open = open;
            }
        }
        self.next = (best + 1) % threads;
        best
    }

    fn dispatch(&mut self, stream: TcpStream, peer: SocketAddr, admitted: Admitted) {
        let target = self.pick();
        let load = LoadGuard::new(&self.loads[target]);
        // Leaves this thread's reactor; the serving thread registers it with its own.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, %peer, "cannot hand over a connection");
                return;
            }
        };
        // Only fails when that thread is gone (shutting down): the connection is then closed.
        let _ = self.inboxes[target].send(Handoff {
            stream,
            peer,
            load,
            admitted,
        });
    }
}

impl IngressHandle {
    /// Serves on `threads` OS threads, each with its own single-threaded runtime and its own
    /// upstream connection pool: nginx's model, where a request never changes threads. The
    /// first thread accepts from the one listener on `listen` and hands each connection to
    /// the least-loaded thread (see the module doc for why not `SO_REUSEPORT`). Returns the
    /// bound address; each thread returns once shutdown has drained (or closed) the
    /// connections.
    pub fn serve_per_core(
        &self,
        listen: SocketAddr,
        threads: usize,
        tls: Option<TlsSettings>,
    ) -> std::io::Result<(SocketAddr, Vec<std::thread::JoinHandle<()>>)> {
        let listener = bind(listen)?;
        let address = listener.local_addr()?;
        let threads = threads.max(1);
        // Every runtime first, so a failure leaves no thread serving.
        let runtimes = (0..threads)
            .map(|_| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        // Registered with the accepting thread's runtime here, so that an error is returned.
        let listener = {
            let _entered = runtimes[0].enter();
            TcpListener::from_std(listener)?
        };
        let loads: Vec<Arc<ThreadLoad>> = (0..threads).map(|_| Arc::default()).collect();
        let (inboxes, receivers): (Vec<_>, Vec<_>) =
            (0..threads).map(|_| mpsc::unbounded_channel()).unzip();
        let dispatcher = Dispatcher {
            loads: loads.clone(),
            inboxes,
            next: 0,
        };
        let mut accepting = Some((listener, dispatcher));
        self.register_serving_threads(&loads);
        let tls = tls.map(|tls| tls.acceptor());
        let mut joins = Vec::new();
        // The accepting thread last: should spawning another fail, the dispatcher is dropped
        // here, which ends the threads already started.
        for (index, (inbox, runtime)) in receivers.into_iter().zip(runtimes).enumerate().rev() {
            let acceptor = if index == 0 { accepting.take() } else { None };
            let handle = self.clone();
            let tls = tls.clone();
            let join = std::thread::Builder::new()
                .name(format!("kiln-ingress-{index}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        if let Some((listener, mut dispatcher)) = acceptor {
                            let accepting = handle.clone();
                            tokio::spawn(async move {
                                accepting
                                    .accept_loop(listener, |stream, peer, admitted| {
                                        dispatcher.dispatch(stream, peer, admitted);
                                    })
                                    .await;
                            });
                        }
                        serve_handoffs(&handle, inbox, tls).await;
                        handle.wait_for_drain().await;
                    });
                    // The pool goes before the runtime whose tasks drive its connections.
                    pool::clear_thread();
                })?;
            joins.push(join);
        }
        joins.reverse();
        Ok((address, joins))
    }
}

/// The listening socket, bound before any runtime exists.
fn bind(listen: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(listen),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    // As tokio does: a restart may bind while old connections sit in TIME_WAIT. (On Linux
    // this does not let two listeners share the port; `SO_REUSEPORT` would.)
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&listen.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Serves the connections handed to this thread until the accepting thread stops (draining).
async fn serve_handoffs(
    handle: &IngressHandle,
    mut inbox: mpsc::UnboundedReceiver<Handoff>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    while let Some(Handoff {
        stream,
        peer,
        load,
        admitted,
    }) = inbox.recv().await
    {
        match TcpStream::from_std(stream) {
            Ok(stream) => {
                handle.spawn_connection(stream, peer, tls.as_ref(), (admitted, Some(load)));
            }
            Err(error) => tracing::debug!(%error, %peer, "cannot register a connection"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatcher(open: &[usize]) -> Dispatcher {
        let loads = open
            .iter()
            .map(|&n| {
                Arc::new(ThreadLoad {
                    open: AtomicUsize::new(n),
                    accepted: AtomicU64::new(0),
                })
            })
            .collect();
        Dispatcher {
            loads,
            inboxes: Vec::new(),
            next: 0,
        }
    }

    /// Counts a connection in, as a hand-over does; it stays open while `open` holds it.
    fn hand_over(d: &mut Dispatcher, open: &mut Vec<LoadGuard>) -> usize {
        let target = d.pick();
        open.push(LoadGuard::new(&d.loads[target]));
        target
    }

    #[test]
    fn picks_the_thread_with_fewest_open_connections() {
        let mut d = dispatcher(&[5, 2, 7]);
        assert_eq!(d.pick(), 1);
        assert_eq!(
            d.pick(),
            1,
            "still the least loaded: nothing was handed over"
        );
    }

    #[test]
    fn ties_go_round_robin() {
        let mut d = dispatcher(&[3, 3, 3]);
        assert_eq!([d.pick(), d.pick(), d.pick(), d.pick()], [0, 1, 2, 0]);
    }

    #[test]
    fn a_burst_spreads_evenly_and_fills_the_emptiest_thread_first() {
        let mut guards = Vec::new();
        let mut d = dispatcher(&[0, 0]);
        let picks: Vec<usize> = (0..128).map(|_| hand_over(&mut d, &mut guards)).collect();
        assert_eq!(picks.iter().filter(|&&t| t == 0).count(), 64);
        let mut d = dispatcher(&[4, 0, 1]);
        let first: Vec<usize> = (0..5).map(|_| hand_over(&mut d, &mut guards)).collect();
        assert_eq!(first, [1, 2, 1, 2, 1]);
        let open: Vec<usize> = d.loads.iter().map(|l| l.snapshot().open).collect();
        assert_eq!(open, [4, 3, 3]);
        guards.clear();
        let open: Vec<usize> = d.loads.iter().map(|l| l.snapshot().open).collect();
        assert_eq!(open, [4, 0, 1], "closed connections count out");
    }

    #[test]
    fn a_closed_connection_counts_out_but_stays_accepted() {
        let load = Arc::new(ThreadLoad::default());
        let guard = LoadGuard::new(&load);
        assert_eq!(
            load.snapshot(),
            ServingThread {
                open: 1,
                accepted: 1
            }
        );
        drop(guard);
        assert_eq!(
            load.snapshot(),
            ServingThread {
                open: 0,
                accepted: 1
            }
        );
    }
}
