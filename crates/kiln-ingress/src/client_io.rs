//! The client connection's stream with a send timeout: a write (or flush) to a client that
//! reads nothing for the send timeout fails, which ends the connection (nginx's
//! `send_timeout`, HAProxy's `timeout client`). Without it a client that stops reading holds
//! its connection, the upstream connection its response comes from and their tasks for as
//! long as it likes: the proxy stops reading the upstream when the client stops reading.
//!
//! The silence is measured as a response body's is ([`Silence`]): a timer made the first time
//! a write waits and moved (not re-made) afterwards; a write that goes through costs a branch
//! and a relaxed add.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};

use crate::body::Silence;

/// What the connection's owner reads of its stream.
#[derive(Debug, Default)]
pub(crate) struct IoWatch {
    /// The send timeout fired.
    timed_out: AtomicBool,
    /// Writes that went through so far: unchanged over a period means nothing was sent in it.
    writes: AtomicU64,
    /// Request body frames read from the client so far: an upload is activity even after its
    /// response went out (an upstream may answer first). Counted per frame, not per read, so
    /// a head trickled in byte by byte (slowloris) is still quiet.
    body_frames: AtomicU64,
}

impl IoWatch {
    pub(crate) fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed)
    }

    pub(crate) fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    pub(crate) fn body_frames(&self) -> u64 {
        self.body_frames.load(Ordering::Relaxed)
    }

    /// A frame of a request body came from the client.
    pub(crate) fn read_body_frame(&self) {
        self.body_frames.fetch_add(1, Ordering::Relaxed);
    }
}

/// `IO` with a send timeout, watched through an [`IoWatch`].
pub(crate) struct ClientIo<IO> {
    io: IO,
    send_timeout: Duration,
    /// How long the current write has waited on the client.
    silence: Silence,
    watch: Arc<IoWatch>,
}

impl<IO> ClientIo<IO> {
    pub(crate) fn new(io: IO, send_timeout: Duration, watch: Arc<IoWatch>) -> Self {
        Self {
            io,
            send_timeout,
            silence: Silence::default(),
            watch,
        }
    }

    /// A write made progress: the next wait starts anew.
    fn progressed<T>(&mut self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        self.silence.broken();
        poll
    }

    /// Counts a write that went through.
    fn wrote(&self, poll: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = poll
            && *n > 0
        {
            self.watch.writes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A write is waiting on the client: fails once it waited for the send timeout.
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        ready!(self.silence.poll_over(self.send_timeout, cx));
        self.watch.timed_out.store(true, Ordering::Relaxed);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {:?}", self.send_timeout),
        )))
    }

    fn guard<T>(&mut self, poll: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Pending => self.waiting(cx),
            done => self.progressed(done),
        }
    }
}

impl<IO: Read + Unpin> Read for ClientIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: Write + Unpin> Write for ClientIo<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(&poll);
        this.guard(poll, cx)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_flush(cx);
        this.guard(poll, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_shutdown(cx);
        this.guard(poll, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(&poll);
        this.guard(poll, cx)
    }
}
