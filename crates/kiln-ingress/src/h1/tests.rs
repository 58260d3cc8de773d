//! Tests of the upstream HTTP/1.1 exchange's pure parts: response heads, framing, the chunked
//! decoder, with responses split at arbitrary read boundaries (proptest), and malformed input
//! refused without a panic.

use proptest::prelude::*;

use super::*;

/// What one response gave: its status, headers, body, whether the body ended by its framing
/// (`None` when it needs the close), and the bytes left after it.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    ended: bool,
    keep_alive: bool,
    rest: Vec<u8>,
}

/// Feeds `pieces` one after another, as reads would, then an end of stream when `eof`.
fn feed(method: &Method, pieces: &[&[u8]], eof: bool) -> Result<Parsed, H1Error> {
    let mut buf = BytesMut::new();
    let mut pieces = pieces.iter();
    // Bounded by the pieces: each pass consumes one or parses a head.
    let head = loop {
        if let Some(h) = parse_head(&mut buf, method)? {
            if h.status.is_informational() {
                continue;
            }
            break h;
        }
        match pieces.next() {
            Some(piece) => buf.extend_from_slice(piece),
            None => return Err(H1Error::ClosedBeforeHead),
        }
    };
    let mut decoder = head.decoder.clone();
    let mut body = Vec::new();
    let ended = loop {
        match decoder.decode(&mut buf)? {
            Decoded::Data(data) => body.extend_from_slice(&data),
            Decoded::End => break true,
            Decoded::NeedMore => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None if eof => {
                    decoder.at_eof()?;
                    break false;
                }
                None => break false,
            },
        }
    };
    let mut rest = buf.to_vec();
    for piece in pieces {
        rest.extend_from_slice(piece);
    }
    Ok(Parsed {
        status: head.status.as_u16(),
        headers: head
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
            .collect(),
        body,
        ended,
        keep_alive: head.keep_alive,
        rest,
    })
}

fn whole(method: &Method, bytes: &[u8]) -> Result<Parsed, H1Error> {
    feed(method, &[bytes], true)
}

#[test]
fn a_content_length_body_ends_at_its_length_and_leaves_what_follows() {
    let p = whole(
        &Method::GET,
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhelloEXTRA",
    )
    .unwrap();
    assert_eq!(p.status, 200);
    assert_eq!(p.body, b"hello");
    assert!(p.ended && p.keep_alive);
    assert_eq!(p.rest, b"EXTRA");
    assert!(p.headers.contains(&("x-a".into(), "b".into())));
}

#[test]
fn a_chunked_body_is_decoded_with_extensions_and_trailers() {
    let p = whole(
        &Method::GET,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
    )
    .unwrap();
    assert_eq!(p.body, b"hello world");
    assert!(p.ended && p.keep_alive);
    assert!(p.rest.is_empty());
}

#[test]
fn a_length_beside_chunked_is_dropped_and_the_coding_wins() {
    let p = whole(
        &Method::GET,
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(p.body, b"abc");
    assert!(!p.headers.iter().any(|(n, _)| n == "content-length"));
}

#[test]
fn without_length_or_chunked_the_body_ends_at_the_close_and_the_connection_is_not_kept() {
    let p = whole(&Method::GET, b"HTTP/1.1 200 OK\r\n\r\nuntil the end").unwrap();
    assert_eq!(p.body, b"until the end");
    assert!(!p.ended && !p.keep_alive);
    let p = whole(
        &Method::GET,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz",
    )
    .unwrap();
    assert_eq!(p.body, b"zz");
    assert!(!p.keep_alive);
}

#[test]
fn head_1xx_204_and_304_have_no_body_whatever_they_declare() {
    let p = whole(
        &Method::HEAD,
        b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n",
    )
    .unwrap();
    assert!(p.body.is_empty() && p.ended && p.keep_alive);
    for status in ["204 No Content", "304 Not Modified"] {
        let bytes = format!("HTTP/1.1 {status}\r\nContent-Length: 5\r\n\r\nNEXT");
        let p = whole(&Method::GET, bytes.as_bytes()).unwrap();
        assert!(p.body.is_empty() && p.ended, "{status}");
        assert_eq!(p.rest, b"NEXT");
    }
    // An informational head before the final one is skipped.
    let p = whole(
        &Method::GET,
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    .unwrap();
    assert_eq!((p.status, p.body.as_slice()), (200, &b"ok"[..]));
}

#[test]
fn keep_alive_follows_the_version_and_connection_tokens() {
    let cases: [(&[u8], bool); 4] = [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true),
        (
            b"HTTP/1.1 200 OK\r\nConnection: x, Close\r\nContent-Length: 0\r\n\r\n",
            false,
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
        (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            true,
        ),
    ];
    for (bytes, keep) in cases {
        let p = whole(&Method::GET, bytes).unwrap();
        assert_eq!(p.keep_alive, keep, "{}", String::from_utf8_lossy(bytes));
    }
}

#[test]
fn malformed_responses_are_errors() {
    let cases: &[&[u8]] = &[
        b"garbage\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n;\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
        // Cut short: by its length, inside a chunk, before the head ended.
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Le",
    ];
    for bytes in cases {
        assert!(
            whole(&Method::GET, bytes).is_err(),
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn a_head_over_the_limit_is_refused_before_it_ends() {
    let mut bytes = b"HTTP/1.1 200 OK\r\n".to_vec();
    while bytes.len() <= MAX_HEAD_BYTES {
        bytes.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
    }
    assert!(matches!(
        whole(&Method::GET, &bytes),
        Err(H1Error::HeadTooLarge)
    ));
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
    let bytes = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
    assert!(matches!(
        whole(&Method::GET, bytes.as_bytes()),
        Err(H1Error::HeadTooLarge)
    ));
}

#[test]
fn the_request_head_is_written_as_http_1_1_with_its_headers() {
    let request = Request::get("/a?b=c")
        .header("host", "up")
        .header("x-r", "1")
        .body(UpstreamBody::empty())
        .unwrap();
    let mut out = Vec::new();
    encode_request(&request, &mut out);
    assert_eq!(out, b"GET /a?b=c HTTP/1.1\r\nhost: up\r\nx-r: 1\r\n\r\n");
}

/// A response's body in chunks of the given sizes (each 1..), with optional extensions and
/// trailers.
fn chunked(body: &[u8], sizes: &[usize], ext: bool, trailer: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        out.extend_from_slice(format!("{n:X}").as_bytes());
        if ext {
            out.extend_from_slice(b" ;a=b");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n");
    if trailer {
        out.extend_from_slice(b"x-t: 1\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// `bytes` cut at the given points (sorted, deduplicated, clamped).
fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut pieces = Vec::new();
    let mut at = 0;
    for p in points {
        pieces.push(&bytes[at..p]);
        at = p;
    }
    pieces.push(&bytes[at..]);
    pieces
}

#[derive(Debug, Clone)]
enum Framing {
    Length,
    Chunked {
        sizes: Vec<usize>,
        ext: bool,
        trailer: bool,
    },
    Close,
}

fn framing_strategy() -> impl Strategy<Value = Framing> {
    prop_oneof![
        Just(Framing::Length),
        (
            prop::collection::vec(1usize..40, 1..5),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(sizes, ext, trailer)| Framing::Chunked {
                sizes,
                ext,
                trailer
            }),
        Just(Framing::Close),
    ]
}

proptest! {
    /// However a response is split into reads, the same head and body come out, and a body
    /// framed by length or chunks ends exactly where it should, leaving the next bytes.
    #[test]
    fn a_response_split_at_any_read_boundary_parses_the_same(
        body in prop::collection::vec(any::<u8>(), 0..200),
        framing in framing_strategy(),
        cuts in prop::collection::vec(0usize..1000, 0..8),
        informational in any::<bool>(),
    ) {
        let mut bytes = Vec::new();
        if informational {
            bytes.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        bytes.extend_from_slice(b"HTTP/1.1 201 Created\r\nx-a: 1\r\n");
        let framed = match &framing {
            Framing::Length => format!("content-length: {}\r\n\r\n", body.len()).into_bytes().into_iter().chain(body.iter().copied()).collect(),
            Framing::Chunked { sizes, ext, trailer } => {
                let mut v = b"transfer-encoding: chunked\r\n\r\n".to_vec();
                v.extend(chunked(&body, sizes, *ext, *trailer));
                v
            }
            Framing::Close => {
                let mut v = b"\r\n".to_vec();
                v.extend_from_slice(&body);
                v
            }
        };
        bytes.extend(framed);
        let close = matches!(framing, Framing::Close);
        if !close {
            bytes.extend_from_slice(b"NEXT");
        }
        let pieces = split(&bytes, &cuts);
        let p = feed(&Method::GET, &pieces, true).unwrap();
        prop_assert_eq!(p.status, 201);
        prop_assert_eq!(&p.body, &body);
        prop_assert_eq!(p.ended, !close);
        prop_assert_eq!(p.keep_alive, !close);
        if !close {
            prop_assert_eq!(p.rest.as_slice(), &b"NEXT"[..]);
        }
    }

    /// Any bytes at all, split anywhere: an answer or an error, never a panic, and a body never
    /// longer than the bytes given.
    #[test]
    fn arbitrary_bytes_never_panic(
        prefix in prop_oneof![
            Just(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec()),
            Just(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n".to_vec()),
            Just(Vec::new()),
        ],
        tail in prop::collection::vec(any::<u8>(), 0..300),
        cuts in prop::collection::vec(0usize..400, 0..6),
        eof in any::<bool>(),
    ) {
        let mut bytes = prefix;
        bytes.extend(tail);
        let pieces = split(&bytes, &cuts);
        if let Ok(p) = feed(&Method::GET, &pieces, eof) {
            prop_assert!(p.body.len() <= bytes.len());
        }
    }
}

#[test]
fn a_recycled_header_map_holds_only_the_next_heads_headers() {
    let mut sent = HeaderMap::new();
    sent.insert("x-request-only", HeaderValue::from_static("1"));
    sent.insert(header::HOST, HeaderValue::from_static("example.test"));
    recycle_headers(sent);
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: b\r\n\r\n"[..]);
    let Some(head) = parse_head(&mut buf, &Method::GET).ok().flatten() else {
        panic!("the head did not parse");
    };
    let names: Vec<&str> = head.headers.keys().map(HeaderName::as_str).collect();
    assert_eq!(names, ["content-length", "x-a"]);
    // The spare was taken: a second head gets a map of its own.
    assert!(SPARE_HEADERS.with(std::cell::Cell::take).is_none());
}

#[test]
fn a_header_map_grown_large_is_not_kept() {
    let mut sent = HeaderMap::new();
    for i in 0..MAX_SPARE_HEADERS + 1 {
        sent.insert(
            HeaderName::try_from(format!("x-{i}")).unwrap_or(header::ACCEPT),
            HeaderValue::from_static("v"),
        );
    }
    recycle_headers(sent);
    assert!(SPARE_HEADERS.with(std::cell::Cell::take).is_none());
    recycle_headers(HeaderMap::with_capacity(4));
    assert!(SPARE_HEADERS.with(std::cell::Cell::take).is_some());
}
