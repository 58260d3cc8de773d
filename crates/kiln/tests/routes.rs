//! Routes through the control plane's ingress: requests reach ready instances only, survive an
//! instance being killed, and unknown hosts get 404.

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
    health: { readiness: { http: /, interval: 100ms, timeout: 1s } }
    backoff: { initial: 20ms, max: 200ms }
routes:
  - { host: shop.localhost, path: /api, service: api, strip_prefix: true }
"#;

fn get(addr: &str, host: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
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
