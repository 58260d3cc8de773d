//! Maintenance pages on routes with the real binary: two routes in front of one service, the
//! second under constant load. A runbook puts the first in maintenance: it answers 503 with
//! `Retry-After`, `Cache-Control: no-store` and the escaped message (HTML, or plain text for
//! a client that does not take HTML), counted in the route's metrics, while the second keeps
//! answering 200 with not one failure. The page survives `kiln down` / `kiln up -d`; `off`
//! serves the route again; a 2 s page ends by itself; a page whose end passed while kiln was
//! down is gone after the restart, with its `maintenance.ended`; `kiln maintenance on|off|list`
//! do the same by hand.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Down, Load, Scratch, wait_until};

const SERVER: &str = r#"
const http = require('http');
const server = http.createServer((req, res) => res.end('served'));
server.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
"#;

const STACK: &str = r#"
name: maintained
ingress: { listen: "127.0.0.1:0" }
services:
  web:
    run: node server.js
    health: { readiness: { http: /, interval: 100ms, timeout: 5s, failure_threshold: 3 } }
routes:
  - { name: shop, host: shop.localhost, service: web }
  - { name: api, host: api.localhost, service: web }
runbooks:
  pause:
    params:
      route: { type: string, default: shop }
      long: { type: duration, default: 10m }
    steps:
      - action: maintenance
        with: { route: "${{ params.route }}", for: "${{ params.long }}", message: "Back <soon> & \"then\"" }
  resume:
    steps:
      - { action: maintenance, with: { route: shop, off: true } }
  blink:
    steps:
      - { action: maintenance, with: { route: shop, for: 2s, status: 502, retry_after: 5s } }
"#;

/// One response: status, lowercase header lines, body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn fetch(addr: &str, host: &str, accept: Option<&str>) -> Answer {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {host}\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.get(9..12))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn ingress(s: &Scratch) -> String {
    let status = s.json(&["status", "--json"]);
    status["ingress"].as_str().unwrap().to_owned()
}

fn up(s: &Scratch) -> String {
    s.ok(&["up", "-d", "--interval", "30"]);
    let addr = ingress(s);
    assert!(
        wait_until(Duration::from_secs(20), || fetch(
            &addr,
            "api.localhost",
            None
        )
        .status
            == 200),
        "{}",
        s.ok(&["ps"])
    );
    addr
}

fn runbook(s: &Scratch, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["runbook", "run"];
    all.extend(args);
    all.push("--json");
    let out = s.run(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let audit: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{audit:#}");
    audit
}

fn events(s: &Scratch, kind: &str) -> Vec<serde_json::Value> {
    let all = s.json(&["events", "--json", "--limit", "100000"]);
    all.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

#[test]
fn a_route_in_maintenance_answers_its_page_while_the_other_keeps_serving() {
    let s = Scratch::new(STACK);
    std::fs::write(s.file("server.js"), SERVER).unwrap();
    let mut addr = up(&s);
    let down = Down(&s);
    assert_eq!(fetch(&addr, "shop.localhost", None).status, 200);
    let load = Load::start(&addr, "api.localhost", "/", 2);

    // The runbook puts the shop in maintenance; the route takes the page at once.
    let audit = runbook(&s, &["pause", "--param", "route=shop"]);
    let said = audit["steps"][0]["output"].as_str().unwrap();
    assert!(
        said.contains("route routes.shop in maintenance until") && said.contains("answers 503"),
        "{audit:#}"
    );
    let page = fetch(&addr, "shop.localhost", Some("text/html,*/*;q=0.8"));
    assert_eq!(page.status, 503);
    let retry: u64 = page.header("retry-after").unwrap().parse().unwrap();
    assert!((590..=600).contains(&retry), "Retry-After {retry}");
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        page.body
            .contains("<p>Back &lt;soon&gt; &amp; &quot;then&quot;</p>"),
        "{}",
        page.body
    );
    let plain = fetch(&addr, "shop.localhost", Some("application/json"));
    assert_eq!(plain.status, 503);
    assert_eq!(plain.body, "Back <soon> & \"then\"\n");

    // Listed, shown by `kiln status`, counted by the route's metrics.
    let list = s.json(&["maintenance", "list", "--json"]);
    assert_eq!(list[0]["route"], "routes.shop", "{list:#}");
    assert_eq!(list[0]["service"], "web");
    assert!(
        list[0]["actor"]
            .as_str()
            .unwrap()
            .starts_with("runbook pause (run "),
        "{list:#}"
    );
    let status = s.ok(&["status"]);
    assert!(
        status.contains("maintenance: routes.shop answers 503"),
        "{status}"
    );
    assert!(
        wait_until(Duration::from_secs(20), || s
            .ok(&[
                "query",
                r#"http_requests_total{route="routes.shop",code_class="5xx"} > 0"#
            ])
            .contains("routes.shop")),
        "the route's metrics count its maintenance answers"
    );

    // The other route served throughout without one failure.
    let tally = load.finish();
    tally.assert_none_failed();
    assert!(tally.ok > 50, "{tally:?}");

    // A restart of kiln keeps the page.
    s.ok(&["down"]);
    addr = up(&s);
    assert_eq!(fetch(&addr, "shop.localhost", None).status, 503);
    assert_eq!(fetch(&addr, "api.localhost", None).status, 200);

    // `off` serves the route again.
    runbook(&s, &["resume"]);
    assert_eq!(fetch(&addr, "shop.localhost", None).status, 200);
    assert_eq!(events(&s, "maintenance.started").len(), 1);
    let ended = events(&s, "maintenance.ended");
    assert_eq!(ended.len(), 1, "{ended:#?}");
    assert!(
        ended[0]["data"]["actor"]
            .as_str()
            .unwrap()
            .starts_with("runbook resume")
    );

    // A 2 s page (502, its own Retry-After) ends by itself.
    runbook(&s, &["blink"]);
    let blink = fetch(&addr, "shop.localhost", None);
    assert_eq!(blink.status, 502);
    assert_eq!(blink.header("retry-after"), Some("5"));
    assert!(
        wait_until(Duration::from_secs(10), || fetch(
            &addr,
            "shop.localhost",
            None
        )
        .status
            == 200),
        "the 2 s page did not end"
    );
    assert!(
        wait_until(Duration::from_secs(5), || events(&s, "maintenance.ended")
            .iter()
            .any(|e| e["message"]
                .as_str()
                .unwrap()
                .contains("its time was up"))),
        "no maintenance.ended for the expired page"
    );
    assert_eq!(
        s.json(&["maintenance", "list", "--json"]),
        serde_json::json!([])
    );
    drop(down);
}

#[test]
fn maintenance_by_hand_and_a_page_that_ends_while_kiln_is_down() {
    let s = Scratch::new(STACK);
    std::fs::write(s.file("server.js"), SERVER).unwrap();
    let mut addr = up(&s);
    let down = Down(&s);

    let refused = s.run(&["maintenance", "on", "shoop", "--for", "10m"]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("no route named `shoop` (routes: api, shop)"),
        "{said}"
    );

    let on = s.ok(&["maintenance", "on", "shop", "--message", "Moving house"]);
    assert!(
        on.contains("route routes.shop in maintenance until turned off"),
        "{on}"
    );
    let page = fetch(&addr, "shop.localhost", Some("text/plain"));
    assert_eq!(page.status, 503);
    assert_eq!(page.header("retry-after"), Some("60"));
    assert_eq!(page.body, "Moving house\n");
    let list = s.ok(&["maintenance", "list"]);
    assert!(list.starts_with("ROUTE"), "{list}");
    assert!(
        list.contains("routes.shop") && list.contains("until turned off"),
        "{list}"
    );
    s.ok(&["maintenance", "off", "shop"]);
    assert_eq!(fetch(&addr, "shop.localhost", None).status, 200);

    // A page whose end passes while kiln is down is gone after the restart, with one
    // `maintenance.ended` saying so.
    s.ok(&["maintenance", "on", "shop", "--for", "10s"]);
    let ends_at = s.json(&["maintenance", "list", "--json"])[0]["ends_at_ms"]
        .as_i64()
        .unwrap();
    s.ok(&["down"]);
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };
    assert!(
        now_ms() < u128::try_from(ends_at).unwrap(),
        "kiln took more than 10 s to stop: the page ended before it did"
    );
    assert!(wait_until(Duration::from_secs(20), || {
        now_ms() > u128::try_from(ends_at).unwrap()
    }));
    addr = up(&s);
    assert_eq!(fetch(&addr, "shop.localhost", None).status, 200);
    let while_down: Vec<_> = events(&s, "maintenance.ended")
        .into_iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .contains("while kiln was down")
        })
        .collect();
    assert_eq!(while_down.len(), 1, "{while_down:#?}");
    assert_eq!(
        s.ok(&["maintenance", "list"]),
        "no route is in maintenance\n"
    );
    drop(down);
}
