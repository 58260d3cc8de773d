//! Routes through the control plane's ingress: requests reach ready instances only, survive an
//! instance being killed, and unknown hosts get 404; with `ingress.tls`, HTTPS with the stack's
//! certificate.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Scratch, wait_until};

const SERVER: &str = r#"
const http = require('http');
const server = http.createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ path: req.url, instance: process.env.KILN_INSTANCE, host: req.headers['x-forwarded-host'] }));
});
server.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
"#;

const STACK: &str = r#"
name: routed
ingress: { listen: "127.0.0.1:0" }
services:
  api:
    run: node server.js
    replicas: 2
    health: { readiness: { http: /, interval: 100ms, timeout: 5s } }
    backoff: { initial: 20ms, max: 200ms }
routes:
  - { host: shop.localhost, path: /api, service: api, strip_prefix: true }
"#;

fn get(addr: &str, host: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // A peer that is not HTTP (the TLS listener) may close before the write ends: then there
    // is simply no answer.
    let sent = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    if sent.is_err() {
        return (0, String::new());
    }
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned())
}

#[test]
fn the_ingress_routes_to_ready_instances_and_survives_a_kill() {
    let s = Scratch::new(STACK);
    std::fs::write(s.file("server.js"), SERVER).unwrap();
    s.ok(&["up", "-d", "--interval", "5"]);
    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    let addr = status["ingress"].as_str().unwrap().to_owned();
    let stop = Stop(&s);

    let (code, body) = get(&addr, "shop.localhost", "/api/products?x=1");
    assert_eq!(code, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        reply["path"], "/products?x=1",
        "strip_prefix keeps the query"
    );
    assert_eq!(reply["host"], "shop.localhost");
    assert_eq!(get(&addr, "other.localhost", "/api").0, 404);

    // The route's URL is an output other resources can read.
    let state: serde_json::Value =
        serde_json::from_str(&s.ok(&["state", "show", "routes.shop-localhost-api", "--json"]))
            .unwrap();
    assert!(
        state["outputs"]["url"]
            .as_str()
            .unwrap()
            .starts_with("http://shop.localhost:")
    );

    // Kill one instance while requests flow: none fails (retries, then readiness takes it out).
    let ps: serde_json::Value = serde_json::from_slice(&s.run(&["ps", "--json"]).stdout).unwrap();
    let victim = ps.as_array().unwrap()[0]["pid"].as_i64().unwrap() as i32;
    let mut failures = 0;
    for i in 0..200 {
        if i == 20 {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(victim),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        }
        let (code, body) = get(&addr, "shop.localhost", "/api/");
        if code != 200 {
            eprintln!("request {i}: {code} {body}");
            failures += 1;
        }
    }
    assert_eq!(failures, 0);
    // The collector records the ingress's request counts: PromQL over them answers.
    assert!(
        wait_until(Duration::from_secs(15), || {
            let out = s.run(&[
                "query",
                "sum(http_requests_total{route=\"routes.shop-localhost-api\"})",
                "--json",
            ]);
            let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            answer["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|n| n >= 201.0)
        }),
        "{}",
        s.ok(&["query", "http_requests_total"])
    );
    let ready = s.ok(&["query", "sum(kiln_instance_ready)"]);
    assert!(
        ready.trim().ends_with(" 2") || ready.trim().ends_with(" 1"),
        "{ready}"
    );
    assert!(wait_until(Duration::from_secs(10), || {
        let ps: serde_json::Value =
            serde_json::from_slice(&s.run(&["ps", "--json"]).stdout).unwrap_or_default();
        ps.as_array()
            .is_some_and(|l| l.iter().all(|i| i["state"] == "ready"))
    }));
    drop(stop);
}

struct Stop<'a>(&'a Scratch);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["down"]);
    }
}

const TLS_STACK: &str = r#"
name: secure
ingress:
  listen: "127.0.0.1:0"
  tls: { cert: certs/shop.pem, key: certs/shop.key }
services:
  api:
    run: node server.js
    health: { readiness: { http: /, interval: 100ms, timeout: 5s } }
routes:
  - { host: shop.localhost, service: api }
"#;

/// One HTTPS request with rustls, trusting only `cert`; returns the ALPN protocol and the reply.
fn get_tls(addr: &str, cert: &rcgen::Certificate, alpn: &[u8]) -> (Vec<u8>, String) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let name = rustls::pki_types::ServerName::try_from("shop.localhost").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET /tls HTTP/1.1\r\nHost: shop.localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = Vec::new();
    let _ = tls.read_to_end(&mut text);
    let alpn = tls.conn.alpn_protocol().unwrap_or_default().to_vec();
    (alpn, String::from_utf8_lossy(&text).into_owned())
}

#[test]
fn the_ingress_terminates_tls_with_the_stacks_certificate() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["shop.localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let s = Scratch::new(TLS_STACK);
    std::fs::write(s.file("server.js"), SERVER).unwrap();
    std::fs::create_dir_all(s.file("certs")).unwrap();
    std::fs::write(s.file("certs/shop.pem"), cert.pem()).unwrap();
    std::fs::write(s.file("certs/shop.key"), key.serialize_pem()).unwrap();
    s.ok(&["validate"]);
    s.ok(&["up", "-d", "--interval", "5"]);
    let stop = Stop(&s);
    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    let addr = status["ingress"].as_str().unwrap().to_owned();

    let (alpn, reply) = get_tls(&addr, &cert, b"http/1.1");
    assert_eq!(alpn, b"http/1.1");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains(r#""path":"/tls""#), "{reply}");
    // Plain HTTP on the TLS port gets no HTTP answer.
    assert_eq!(get(&addr, "shop.localhost", "/").0, 0);
    // The route's URL says so.
    let routes: Vec<String> = s
        .ok(&["state", "list"])
        .lines()
        .filter(|l| l.starts_with("routes."))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    let state: serde_json::Value =
        serde_json::from_str(&s.ok(&["state", "show", &routes[0], "--json"])).unwrap();
    let url = state["outputs"]["url"].as_str().unwrap();
    assert!(url.starts_with("https://shop.localhost:"), "{url}");
    drop(stop);
}
