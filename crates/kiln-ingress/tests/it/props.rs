//! Property test: arbitrary request lines, hosts and headers sent as raw bytes never crash
//! the proxy; each gets an HTTP answer (a 4xx/5xx from hyper or us, or the proxied 200).

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// Header names that would change framing or connection handling (and so make the request
/// wait for a body that never comes) are left out; everything else is fair game.
fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,24}",
        "[ -~]{1,12}",
        Just("x-forwarded-for".to_owned()),
        Just("x-request-id".to_owned()),
        Just("cookie".to_owned()),
        Just("host".to_owned()),
    ]
    .prop_filter("framing headers", |n| {
        let n = n.to_ascii_lowercase();
        ![
            "content-length",
            "transfer-encoding",
            "connection",
            "upgrade",
            "expect",
        ]
        .iter()
        .any(|f| n.contains(f))
    })
}

fn request_bytes() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        Just("GET"),
        Just("HEAD"),
        Just("POST"),
        Just("DELETE"),
        Just("G@T"),
        Just("OPTIONS")
    ];
    let path = prop_oneof![
        "/[ -~]{0,40}",
        "[ -~]{0,20}",
        Just("*".to_owned()),
        "/(%[0-9A-Fa-f]{2}|[a-z/]){0,30}"
    ];
    let host = prop_oneof![
        "[a-z0-9.-]{0,30}",
        "[ -~]{0,30}",
        Just("[::1]:80".to_owned())
    ];
    let value =
        proptest::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')], 0..40);
    let headers = proptest::collection::vec((header_name(), value), 0..8);
    (method, path, host, headers).prop_map(|(method, path, host, headers)| {
        let mut bytes = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
        for (name, value) in headers {
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(b": ");
            bytes.extend_from_slice(&value);
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"Connection: close\r\n\r\n");
        bytes
    })
}

#[test]
fn arbitrary_requests_never_crash_the_proxy() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (h, proxy) = rt.block_on(async {
        let up = upstream("ok").await;
        proxy(vec![route("r", "*", "/", &[up.addr])]).await
    });
    let mut runner = TestRunner::new(Config {
        cases: 128,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&request_bytes(), |bytes| {
            let answer = rt.block_on(async {
                let mut stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
                stream.write_all(&bytes).await.unwrap();
                let mut out = Vec::new();
                let read =
                    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
                        .await;
                prop_assert!(read.is_ok(), "no answer");
                Ok(String::from_utf8_lossy(&out).into_owned())
            })?;
            let status: u16 = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            prop_assert!(answer.starts_with("HTTP/1.1 "), "not HTTP: {answer:?}");
            prop_assert!(
                status == 200 || (400..600).contains(&status),
                "status {status}: {answer:?}"
            );
            Ok(())
        })
        .unwrap();
    // Still serving afterwards.
    rt.block_on(async {
        assert_eq!(get(&client(), proxy, "h", "/").await.body, "ok");
    });
    drop(h);
}
