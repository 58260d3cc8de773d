//! Our own upstream HTTP/1.1 exchange for the common case: a request without a body, or with a
//! small one that came whole with its head (`body::UpstreamBody::take_at_hand`), and without an
//! upgrade, written with one write, its response head parsed with `httparse` and its
//! body streamed by its framing, all driven inside the request's own future (no connection
//! task, no channel: hyper's client did ≈12,000 instructions per request whichever task polled
//! it, docs/benchmarks.md, session 10). Requests with a body still streaming, WebSocket upgrades
//! and anything else stay on hyper's client (`pool.rs`).
//!
//! This file holds the pure parts (the request head's encoding, the response head's parsing and
//! framing, the body decoder over a buffer) and the connection and response body that use them.
//! The framing follows RFC 9112 §6.3 for a response: none for HEAD, 1xx, 204 and 304;
//! `Transfer-Encoding` ending in `chunked` is decoded (a `Content-Length` beside it is dropped),
//! any other `Transfer-Encoding` reads until the connection closes; otherwise `Content-Length`
//! (every value equal, or the response is refused); otherwise until the connection closes. A
//! connection is reused only when its response ended by its framing, nothing followed it, and
//! neither side asked to close it.
//!
//! Errors: a malformed or oversized head, a bad chunk, a body cut short all become
//! [`H1Error`]; the proxy answers 502 (before the head) or cuts the client's response (after).

use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::body::UpstreamBody;
use crate::pool::OwnIdleHome;

/// The most headers a response head may carry (hyper's client allows 100).
const MAX_HEADERS: usize = 100;
/// The longest response head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Informational (1xx) heads skipped before the final one, at most.
const MAX_INFORMATIONAL: usize = 8;
/// The longest chunk-size line (digits and extensions) and trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;
/// Bytes asked of one read: the head and small bodies in one `recvfrom`.
const READ_SIZE: usize = 8 * 1024;
/// At most this much asked of one read for a long body.
const MAX_READ_SIZE: usize = 64 * 1024;

/// What went wrong in an exchange.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H1Error {
    #[error("upstream I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("upstream closed the connection before the response head")]
    ClosedBeforeHead,
    #[error("upstream closed the connection in the middle of the response body")]
    ClosedInBody,
    #[error("malformed upstream response head: {0}")]
    Head(httparse::Error),
    #[error("upstream response head over {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("upstream response with an invalid header")]
    BadHeader,
    #[error("upstream response with conflicting or invalid Content-Length")]
    BadLength,
    #[error("upstream response switched protocols on a request that asked for no upgrade")]
    UnexpectedUpgrade,
    #[error("too many informational responses from the upstream")]
    TooManyInformational,
    #[error("malformed chunked upstream body")]
    Chunk,
}

/// Writes `request`'s head (method, origin-form target, headers, blank line) into `out`. The
/// headers are written as they are: the proxy already stripped the hop-by-hop ones, a
/// bodiless request needs no framing header (hyper's client writes none either), and a whole
/// body's `Content-Length` was set to its length.
pub(crate) fn encode_request(request: &Request<UpstreamBody>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(request.method().as_str().as_bytes());
    out.push(b' ');
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A parsed final response head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) decoder: Decoder,
    /// Neither side asked to close: the connection may carry another request once the body
    /// ended by its framing.
    pub(crate) keep_alive: bool,
}

/// Parses one response head from the front of `buf`, consuming it; `Ok(None)` when more bytes
/// are needed. Informational heads (1xx other than 101) are returned too: the caller skips them.
pub(crate) fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, H1Error> {
    // Uninitialised slots: zeroing 100 of them cost ≈3,000 instructions per response.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    // Header names and values are shared with the head's bytes, not copied: their offsets
    // into `buf` are taken before the head is split off.
    // This thread's list from the last head (kept, not freed: one allocation fewer per
    // response), or a new one.
    let mut spans = SPANS.try_with(std::cell::Cell::take).unwrap_or_default();
    spans.clear();
    let (len, code, minor) = {
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut slots,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                return Err(H1Error::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(H1Error::HeadTooLarge),
            Err(error) => return Err(H1Error::Head(error)),
        };
        let base = buf.as_ptr() as usize;
        spans.extend(response.headers.iter().map(|h| {
            (
                h.name.as_ptr() as usize - base,
                h.name.len(),
                h.value.as_ptr() as usize - base,
                h.value.len(),
            )
        }));
        (
            len,
            response.code.unwrap_or(0),
            response.version.unwrap_or(1),
        )
    };
    if len > MAX_HEAD_BYTES {
        return Err(H1Error::HeadTooLarge);
    }
    let status = StatusCode::from_u16(code).map_err(|_| H1Error::Head(httparse::Error::Status))?;
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut headers = spare_headers(spans.len());
    let head_bytes = buf.split_to(len).freeze();
    for &(name_at, name_len, value_at, value_len) in &spans {
        let name = HeaderName::from_bytes(&head_bytes[name_at..name_at + name_len])
            .map_err(|_| H1Error::BadHeader)?;
        let value =
            HeaderValue::from_maybe_shared(head_bytes.slice(value_at..value_at + value_len))
                .map_err(|_| H1Error::BadHeader)?;
        headers.append(name, value);
    }
    // `try_with`: a list given back while the thread's locals are destroyed is just dropped.
    let _ = SPANS.try_with(|kept| kept.set(spans));
    let keep_alive = keep_alive(version, &headers);
    let decoder = framing(method, status, &mut headers)?;
    Ok(Some(Head {
        status,
        version,
        headers,
        keep_alive: keep_alive && !matches!(decoder, Decoder::Close),
        decoder,
    }))
}

/// Header maps with room for more entries than this are not kept for reuse.
const MAX_SPARE_HEADERS: usize = 64;

thread_local! {
    /// A cleared header map kept for the next response head parsed on this thread: the map of
    /// a request our exchange sent (see [`recycle_headers`]). The response's map goes on to
    /// hyper's server connection, which clears it after writing it and parses the client's
    /// next request into it, so one map per request cycles through instead of a new one per
    /// response that then grew twice (the response's X-Request-Id, the next request's
    /// forwarded headers): ≈2,000 instructions per request (docs/benchmarks.md, session 17).
    static SPARE_HEADERS: std::cell::Cell<Option<HeaderMap>> = const { std::cell::Cell::new(None) };
}

thread_local! {
    /// The offsets of a response head's headers, between its parse and its header map
    /// (see [`parse_head`]).
    static SPANS: std::cell::Cell<Vec<(usize, usize, usize, usize)>> =
        const { std::cell::Cell::new(Vec::new()) };
}

/// A map for `len` headers: this thread's spare one when there is one.
fn spare_headers(len: usize) -> HeaderMap {
    match SPARE_HEADERS.try_with(std::cell::Cell::take).ok().flatten() {
        Some(mut map) => {
            map.reserve(len);
            map
        }
        None => HeaderMap::with_capacity(len),
    }
}

/// Keeps `map`, cleared, for the next response head parsed on this thread (a map grown past
/// [`MAX_SPARE_HEADERS`] is dropped instead, so an unusual request holds no memory after it).
pub(crate) fn recycle_headers(mut map: HeaderMap) {
    if map.capacity() > MAX_SPARE_HEADERS {
        return;
    }
    map.clear();
    // `try_with`: a map recycled while the thread's locals are destroyed is just dropped.
    let _ = SPARE_HEADERS.try_with(|spare| spare.set(Some(map)));
}

/// Whether the response lets the connection live on (HTTP/1.1 unless `Connection: close`;
/// HTTP/1.0 only with `Connection: keep-alive`).
fn keep_alive(version: Version, headers: &HeaderMap) -> bool {
    let has = |token: &str| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if version == Version::HTTP_10 {
        has("keep-alive")
    } else {
        !has("close")
    }
}

/// How the response's body is delimited (RFC 9112 §6.3).
fn framing(
    method: &Method,
    status: StatusCode,
    headers: &mut HeaderMap,
) -> Result<Decoder, H1Error> {
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Decoder::Length(0));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let chunked_last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        // A length beside a transfer coding is wrong or a smuggling attempt: the coding wins,
        // and the length must not reach the client.
        headers.remove(header::CONTENT_LENGTH);
        return Ok(if chunked_last {
            Decoder::Chunked(Chunked::default())
        } else {
            Decoder::Close
        });
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let text = value.to_str().map_err(|_| H1Error::BadLength)?;
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(H1Error::BadLength);
            }
            let n: u64 = part.parse().map_err(|_| H1Error::BadLength)?;
            if length.is_some_and(|seen| seen != n) {
                return Err(H1Error::BadLength);
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => Decoder::Length(n),
        None => Decoder::Close,
    })
}

/// A response body's framing, decoding it off the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decoder {
    /// This many bytes left.
    Length(u64),
    Chunked(Chunked),
    /// Everything until the upstream closes (the connection is then not reused).
    Close,
}

/// What [`Decoder::decode`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    Data(Bytes),
    /// The buffer holds no more of the body: read more.
    NeedMore,
    /// The body ended by its framing (bytes after it stay in the buffer).
    End,
}

/// Where a chunked decoder is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Chunked {
    state: ChunkState,
    /// The chunk size being read, or what is left of the chunk's data.
    size: u64,
    /// Bytes of the current size line or of the trailers so far (bounded).
    line: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    /// Reading the size's hex digits (at least one).
    #[default]
    Size,
    /// After the digits: optional whitespace and extensions until CR.
    Extension,
    /// The LF ending the size line.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line, until its LF.
    Trailer,
    /// The final LF.
    EndLf,
    Done,
}

impl Decoder {
    /// Decodes the next piece of body from the front of `buf`.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, H1Error> {
        match self {
            Decoder::Length(0) => Ok(Decoded::End),
            Decoder::Length(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= n as u64;
                Ok(Decoded::Data(buf.split_to(n).freeze()))
            }
            Decoder::Close => {
                if buf.is_empty() {
                    Ok(Decoded::NeedMore)
                } else {
                    Ok(Decoded::Data(buf.split().freeze()))
                }
            }
            Decoder::Chunked(chunked) => chunked.decode(buf),
        }
    }

    /// The upstream closed the connection: the end of a close-delimited body, an error for any
    /// other body not yet ended.
    pub(crate) fn at_eof(&self) -> Result<(), H1Error> {
        match self {
            Decoder::Close | Decoder::Length(0) => Ok(()),
            Decoder::Chunked(c) if c.state == ChunkState::Done => Ok(()),
            _ => Err(H1Error::ClosedInBody),
        }
    }

    /// Whether the body ended by its framing.
    pub(crate) fn is_end(&self) -> bool {
        match self {
            Decoder::Length(left) => *left == 0,
            Decoder::Chunked(c) => c.state == ChunkState::Done,
            Decoder::Close => false,
        }
    }

    /// How many body bytes are left to read, if known.
    fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(left) => Some(*left),
            _ => None,
        }
    }
}

impl Chunked {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, H1Error> {
        loop {
            if self.state == ChunkState::Done {
                return Ok(Decoded::End);
            }
            if self.state == ChunkState::Data {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = usize::try_from(self.size)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = ChunkState::DataCr;
                }
                return Ok(Decoded::Data(buf.split_to(n).freeze()));
            }
            let Some(&byte) = buf.first() else {
                return Ok(Decoded::NeedMore);
            };
            buf.advance(1);
            self.step(byte)?;
        }
    }

    /// One byte of the framing outside a chunk's data.
    fn step(&mut self, byte: u8) -> Result<(), H1Error> {
        use ChunkState as S;
        match self.state {
            S::Size | S::Extension => {
                self.line += 1;
                if self.line > MAX_CHUNK_LINE {
                    return Err(H1Error::Chunk);
                }
            }
            S::TrailerStart | S::Trailer => {
                self.line += 1;
                if self.line > MAX_TRAILERS {
                    return Err(H1Error::Chunk);
                }
            }
            _ => {}
        }
        self.state = match (self.state, byte) {
            (S::Size, b) if b.is_ascii_hexdigit() => {
                let digit = u64::from(hex(b));
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(digit))
                    .ok_or(H1Error::Chunk)?;
                S::Size
            }
            // At least one digit before anything else.
            (S::Size, _) if self.line == 1 => return Err(H1Error::Chunk),
            (S::Size | S::Extension, b'\r') => S::SizeLf,
            (S::Size | S::Extension, b'\n' | 0) => return Err(H1Error::Chunk),
            (S::Size | S::Extension, b' ' | b'\t' | b';') => S::Extension,
            (S::Size, _) => return Err(H1Error::Chunk),
            // Extension text is ignored (bounded by the line's length).
            (S::Extension, _) => S::Extension,
            (S::SizeLf, b'\n') => {
                self.line = 0;
                if self.size == 0 {
                    S::TrailerStart
                } else {
                    S::Data
                }
            }
            (S::DataCr, b'\r') => S::DataLf,
            (S::DataLf, b'\n') => {
                self.size = 0;
                S::Size
            }
            (S::TrailerStart, b'\r') => S::EndLf,
            (S::TrailerStart, b'\n') => return Err(H1Error::Chunk),
            (S::TrailerStart, _) => S::Trailer,
            (S::Trailer, b'\n') => S::TrailerStart,
            (S::Trailer, _) => S::Trailer,
            (S::EndLf, b'\n') => S::Done,
            _ => return Err(H1Error::Chunk),
        };
        Ok(())
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// One upstream connection of our own exchange.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) addr: SocketAddr,
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The request head being written (its allocation reused).
    head: Vec<u8>,
    /// The request timeout's timer, kept with the connection and moved to each request's
    /// deadline (as `pool::Pooled` does).
    pub(crate) timer: Pin<Box<Sleep>>,
    /// The pool's sweep generation when it was last checked in (for the idle timeout).
    pub(crate) idle_since: u64,
    /// The pool of the thread that made it, which it goes back to wherever its response
    /// ended (see `pool::check_in_own`); none when made while the thread's locals were being
    /// destroyed (it is then not pooled).
    pub(crate) home: Option<OwnIdleHome>,
}

impl Conn {
    pub(crate) fn new(
        addr: SocketAddr,
        stream: TcpStream,
        deadline: Instant,
        home: Option<OwnIdleHome>,
    ) -> Self {
        Self {
            addr,
            stream,
            buf: BytesMut::new(),
            head: Vec::new(),
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            idle_since: 0,
            home,
        }
    }

    /// The socket, for hyper's client to take over (call only on an idle connection, whose
    /// buffer is empty).
    pub(crate) fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Whether an idle connection still looks usable: nothing arrived on it since its last
    /// response (a close, a reset, or stray bytes all make it unusable). Costs no system call
    /// unless the socket was reported readable.
    pub(crate) fn idle_and_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Writes `request`'s head in one write and reads the final response head, within
    /// `deadline` (the request timeout's timer kept by the connection is moved there).
    pub(crate) async fn exchange(
        &mut self,
        request: &Request<UpstreamBody>,
        deadline: Instant,
    ) -> Result<Head, ExchangeError> {
        self.timer.as_mut().reset(deadline);
        let Conn {
            stream,
            buf,
            head,
            timer,
            ..
        } = self;
        encode_request(request, head);
        let body = request.body().whole_bytes();
        let exchange = async {
            match body {
                Some(body) => write_all_two(stream, head, body).await,
                None => stream.write_all(head).await,
            }
            .map_err(ExchangeError::Write)?;
            read_head(stream, buf, request.method())
                .await
                .map_err(ExchangeError::Read)
        };
        tokio::select! {
            biased;
            result = exchange => result,
            () = timer.as_mut() => Err(ExchangeError::Timeout),
        }
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<std::io::Result<usize>> {
        poll_fill(&mut self.stream, &mut self.buf, cx, want)
    }
}

/// Writes `head` and then `body` with as few writes as the socket takes (one, for a body
/// that fits its buffer), without copying them together.
async fn write_all_two(stream: &mut TcpStream, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    let mut slices = [IoSlice::new(head), IoSlice::new(body)];
    let mut left: &mut [IoSlice<'_>] = &mut slices;
    // Bounded: every pass writes at least one byte of a finite total, or fails.
    while !left.is_empty() {
        let n = stream.write_vectored(left).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut left, n);
    }
    Ok(())
}

/// Why [`Conn::exchange`] failed.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    /// Writing the request failed: on a pooled connection, nothing reached the upstream.
    Write(std::io::Error),
    Read(H1Error),
    /// No response head before the deadline.
    Timeout,
}

/// Reads until a final response head arrived (skipping informational ones).
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Head, H1Error> {
    let mut informational = 0;
    // Bounded: each pass parses a head or reads at least one byte, and heads are bounded.
    loop {
        if !buf.is_empty()
            && let Some(head) = parse_head(buf, method)?
        {
            if head.status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(H1Error::UnexpectedUpgrade);
            }
            if head.status.is_informational() {
                informational += 1;
                if informational > MAX_INFORMATIONAL {
                    return Err(H1Error::TooManyInformational);
                }
                continue;
            }
            return Ok(head);
        }
        let n = std::future::poll_fn(|cx| poll_fill(stream, buf, cx, READ_SIZE)).await?;
        if n == 0 {
            return Err(H1Error::ClosedBeforeHead);
        }
    }
}

/// Reads once into `buf` (up to `want` bytes); 0 at the end of the stream.
fn poll_fill(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
    want: usize,
) -> Poll<std::io::Result<usize>> {
    buf.reserve(want);
    // Into the spare capacity as it is (no zeroing); tokio's `poll_read` underneath clears the
    // socket's readiness after a short read, so the next wait costs no `recvfrom` that would
    // find nothing.
    tokio_util::io::poll_read_buf(Pin::new(stream), cx, buf)
}

/// A response body read off our own connection; the connection goes back to the pool when the
/// body ended by its framing and nothing followed it (see [`Drop`]).
#[derive(Debug)]
pub(crate) struct ResponseBody {
    conn: Option<Conn>,
    decoder: Decoder,
    keep_alive: bool,
    failed: bool,
    pub(crate) max_idle: usize,
    pub(crate) idle_timeout: Duration,
}

impl ResponseBody {
    pub(crate) fn new(conn: Conn, head: &Head, max_idle: usize, idle_timeout: Duration) -> Self {
        Self {
            conn: Some(conn),
            decoder: head.decoder.clone(),
            keep_alive: head.keep_alive,
            failed: false,
            max_idle,
            idle_timeout,
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && !self.failed
            && self.decoder.is_end()
            && conn.buf.is_empty()
        {
            crate::pool::check_in_own(conn, self.max_idle, self.idle_timeout);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        // Bounded: each pass either returns or reads at least one byte.
        loop {
            match this.decoder.decode(&mut conn.buf) {
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::NeedMore) => {}
                Err(error) => {
                    this.failed = true;
                    return Poll::Ready(Some(Err(error)));
                }
            }
            let want = this.decoder.remaining().map_or(READ_SIZE, |left| {
                usize::try_from(left)
                    .unwrap_or(MAX_READ_SIZE)
                    .clamp(READ_SIZE, MAX_READ_SIZE)
            });
            match ready!(conn.poll_fill(cx, want)) {
                Ok(0) => {
                    // The connection is done with either way.
                    this.keep_alive = false;
                    return match this.decoder.at_eof() {
                        Ok(()) => {
                            this.decoder = Decoder::Length(0);
                            Poll::Ready(None)
                        }
                        Err(error) => {
                            this.failed = true;
                            Poll::Ready(Some(Err(error)))
                        }
                    };
                }
                Ok(_) => {}
                Err(error) => {
                    this.failed = true;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_end()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(left) => SizeHint::with_exact(left),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
