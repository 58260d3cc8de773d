//! Metrics through the real control plane: services that declare `metrics:` are scraped (one
//! good, one answering malformed text, one that never answers), and the Prometheus API on TCP
//! (`kiln up --api-listen`) answers with a token only — to an HTTP client, to `promtool query`,
//! and with kiln's own /metrics passing `promtool check metrics`.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Down, Scratch, wait_until};

/// `MODE` picks the /metrics answer: good (a counter of scrapes), bad (malformed), hang.
const SERVER: &str = r#"
const http = require('http');
let scrapes = 0;
const server = http.createServer((req, res) => {
  if (req.url !== '/metrics') { res.end('ok'); return; }
  const mode = process.env.MODE;
  if (mode === 'hang') { return; }
  if (mode === 'bad') { res.end('good_line 1\nbroken{x="1" 2\n'); return; }
  scrapes++;
  res.setHeader('content-type', 'application/openmetrics-text; version=1.0.0; charset=utf-8');
  res.end('# TYPE app_scrapes counter\n# HELP app_scrapes Times /metrics was read.\napp_scrapes_total ' + scrapes + '\n# TYPE app_temperature gauge\n# UNIT app_temperature celsius\napp_temperature{room="a"} 21.5\n# EOF\n');
});
server.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
"#;

const STACK: &str = r#"
name: scraped
services:
  api:
    run: node server.js
    env: { MODE: good }
    health: { readiness: { http: /, interval: 100ms, timeout: 1s } }
    metrics: { path: /metrics, interval: 500ms }
  bad:
    run: node server.js
    env: { MODE: bad }
    health: { readiness: { http: /, interval: 100ms, timeout: 1s } }
    metrics: { path: /metrics, interval: 500ms }
  hang:
    run: node server.js
    env: { MODE: hang }
    health: { readiness: { http: /, interval: 100ms, timeout: 1s } }
    metrics: { interval: 500ms, timeout: 300ms }
"#;

/// A GET with an optional `Authorization` header; returns the status and the body.
fn get(addr: &str, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // Chunked bodies: keep the JSON or text between the chunk size lines.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (code, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    for _ in 0..10_000 {
        let Some((size, rest)) = body.split_once("\r\n") else {
            break;
        };
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `scrape.failed` events of `address`.
fn failed_scrapes(s: &Scratch, address: &str) -> Vec<serde_json::Value> {
    let events = s.json(&["events", "--address", address, "--json"]);
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "scrape.failed")
        .cloned()
        .collect()
}

#[test]
fn scraped_services_and_the_token_protected_prometheus_api() {
    let s = Scratch::new(STACK);
    std::fs::write(s.file("server.js"), SERVER).unwrap();
    s.ok(&["up", "-d", "--api-listen", "127.0.0.1:0"]);
    let _down = Down(&s);
    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    let addr = status["api"].as_str().unwrap().to_owned();
    let token_file = s.file(".kiln/api-token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let bearer = format!("Bearer {token}");
    let api = |path: &str| {
        let (code, body) = get(&addr, path, Some(&bearer));
        let json: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {code} {e}: {body}"));
        (code, json)
    };
    let instant = |q: &str| -> Vec<serde_json::Value> {
        let (_, json) = api(&format!("/api/v1/query?query={}", encode(q)));
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };

    // No token, a wrong one: 401.
    assert_eq!(get(&addr, "/api/v1/query?query=up", None).0, 401);
    assert_eq!(
        get(&addr, "/api/v1/query?query=up", Some("Bearer nope")).0,
        401
    );
    assert_eq!(get(&addr, "/metrics", Some("Basic a2lsbjpub3Bl")).0, 401);

    // Every target is scraped: the good one is up with its samples; the malformed one and the
    // hanging one are down, and the hanging one stalls nobody.
    let value = |r: &serde_json::Value| r["value"][1].as_str().unwrap().parse::<f64>().unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || {
            let up = instant("up");
            up.len() == 3
                && instant("app_scrapes_total{service=\"api\"}")
                    .first()
                    .is_some_and(|r| value(r) >= 3.0)
        }),
        "{:?}",
        instant("up")
    );
    for r in instant("up") {
        let service = r["metric"]["service"].as_str().unwrap().to_owned();
        let want = if service == "api" { 1.0 } else { 0.0 };
        assert_eq!(value(&r), want, "up for {service}");
        assert_eq!(r["metric"]["job"], service.as_str());
        assert_eq!(r["metric"]["instance"], "0");
    }
    assert!(
        instant("good_line").is_empty(),
        "nothing of a malformed answer is kept"
    );
    let (_, targets) = api("/api/v1/targets");
    let targets = targets["data"]["activeTargets"].as_array().unwrap().clone();
    let error_of = |service: &str| {
        targets
            .iter()
            .find(|t| t["labels"]["service"] == service)
            .map(|t| t["lastError"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert!(
        error_of("bad").starts_with("malformed exposition, line 2:"),
        "{targets:?}"
    );
    assert_eq!(
        error_of("hang"),
        "no complete answer within 300 ms (the scrape timeout)"
    );
    assert_eq!(error_of("api"), "");
    // The failures are events too, once each (not once per scrape).
    let failed = failed_scrapes(&s, "services.bad");
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert!(
        failed[0]["data"]["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed exposition"),
        "{failed:#?}"
    );
    let log = std::fs::read_to_string(s.file(".kiln/logs/kiln.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("bad@") && l.contains("/0: metrics scrape of http://127.0.0.1:")),
        "{log}"
    );

    // Requests through a service's own stable address are measured like the ingress's.
    let ports: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.file(".kiln/service-ports.json")).unwrap())
            .unwrap();
    let vip = format!("127.0.0.1:{}", ports["api"].as_u64().unwrap());
    for _ in 0..3 {
        assert_eq!(get(&vip, "/", None), (200, "ok".to_owned()));
    }
    let through_vip = "sum(http_requests_total{route=\"services.api\",code_class=\"2xx\"})";
    assert!(
        wait_until(Duration::from_secs(10), || {
            instant(through_vip)
                .first()
                .is_some_and(|r| value(r) >= 3.0)
        }),
        "{:?}",
        instant("http_requests_total")
    );

    // The rest of the API: series, labels, metadata, buildinfo, errors.
    let (code, series) = api(&format!("/api/v1/series?match[]={}", encode("up")));
    assert_eq!(code, 200);
    assert_eq!(series["data"].as_array().unwrap().len(), 3);
    let (code, none) = api("/api/v1/series");
    assert_eq!((code, none["errorType"].as_str()), (400, Some("bad_data")));
    let (_, values) = api(&format!(
        "/api/v1/label/service/values?match[]={}",
        encode("app_temperature")
    ));
    assert_eq!(values["data"], serde_json::json!(["api"]));
    let (_, meta) = api("/api/v1/metadata?metric=app_temperature");
    assert_eq!(
        meta["data"]["app_temperature"][0],
        serde_json::json!({ "type": "gauge", "help": "", "unit": "celsius" })
    );
    let (code, info) = api("/api/v1/status/buildinfo");
    assert_eq!((code, info["status"].as_str()), (200, Some("success")));
    let (code, bad) = api(&format!("/api/v1/query?query={}", encode("sum(")));
    assert_eq!((code, bad["errorType"].as_str()), (400, Some("bad_data")));

    // kiln's own metrics, on TCP like the rest.
    let (code, own) = get(&addr, "/metrics", Some(&bearer));
    assert_eq!(code, 200);
    assert!(
        own.contains("kiln_applies_total{result=\"success\"} 1"),
        "{own}"
    );
    assert!(own.contains("kiln_scrape_targets 3"), "{own}");

    // promtool, when installed (CI installs it): check metrics finds nothing, and query
    // answers (promtool 2.42 has no bearer option; the token goes in the URL as basic auth).
    if Command::new("promtool").arg("--version").output().is_err() {
        eprintln!("promtool not installed; skipping its checks");
        return;
    }
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(own.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("promtool")
        .args([
            "query",
            "instant",
            &format!("http://kiln:{token}@{addr}"),
            "sum by (service) (up)",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("{service=\"api\"} => 1 @["), "{text}");
    assert!(text.contains("{service=\"hang\"} => 0 @["), "{text}");
    let out = Command::new("promtool")
        .args(["query", "instant", &format!("http://{addr}"), "up"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "no token, no answer");
}

/// Logs each process's start, each scrape it answers and its SIGTERM, with the port and the
/// time (ms), to `$SCRAPE_LOG` (services run from their release's snapshot; the log is the
/// test's).
const LOGGING_SERVER: &str = r#"
const http = require('http');
const fs = require('fs');
const port = process.env.PORT;
const log = (what) => fs.appendFileSync(process.env.SCRAPE_LOG, what + ' ' + port + ' ' + Date.now() + '\n');
log('start');
let scrapes = 0;
const server = http.createServer((req, res) => {
  if (req.url !== '/metrics') { res.end('ok'); return; }
  scrapes++;
  log('scrape');
  res.end('# TYPE app_scrapes counter\napp_scrapes_total ' + scrapes + '\n');
});
server.listen(Number(port), '127.0.0.1');
process.on('SIGTERM', () => { log('stop'); server.close(() => process.exit(0)); });
"#;

/// The readiness probe tolerates a loaded machine (this test is about scraping, not probes).
const FOLLOWED: &str = r#"
name: followed
services:
  api:
    path: app
    run: node server.js
    env: { SCRAPE_LOG: "SCRAPE_LOG_PATH" }
    health: { readiness: { http: /healthz, interval: 100ms, timeout: 5s, failure_threshold: 3 } }
    deploy: { strategy: rolling, max_surge: 1, max_unavailable: 0, healthy_deadline: 30s }
    metrics: { path: /metrics, interval: 500ms }
"#;

/// `(what, port, ms)` lines of the logging server.
fn scrape_log(s: &Scratch) -> Vec<(String, u16, i64)> {
    std::fs::read_to_string(s.file("scrapes.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut words = l.split(' ');
            Some((
                words.next()?.to_owned(),
                words.next()?.parse().ok()?,
                words.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// Issue 4: the scraper followed the instances only at each metrics refresh (2 s), so after a
/// deploy or a restart it kept scraping the stopped instance's port (`up` 0, a spurious
/// `scrape.failed`) and scraped the new one only from the next refresh. It follows the
/// supervisor's events now.
#[test]
fn scraping_follows_deploys_and_restarts_at_once() {
    let s = Scratch::new("");
    let log = s.file("scrapes.log");
    let stack = FOLLOWED.replace("SCRAPE_LOG_PATH", log.to_str().unwrap());
    std::fs::write(s.file("kiln.yaml"), stack).unwrap();
    std::fs::create_dir_all(s.file("app")).unwrap();
    std::fs::write(s.file("app/server.js"), LOGGING_SERVER).unwrap();
    std::fs::write(s.file("app/version"), "0").unwrap();
    s.ok(&["up", "-d"]);
    let _down = Down(&s);
    let scraped_since = |from: usize| {
        scrape_log(&s)
            .iter()
            .skip(from)
            .filter(|(what, _, _)| what == "scrape")
            .count()
    };
    assert!(wait_until(Duration::from_secs(30), || scraped_since(0) >= 2));

    // Deploys (new instances on new ports, the old ones stopped) and restarts (the same port).
    let first_deploy = scrape_log(&s).len();
    for round in 1..=3 {
        std::fs::write(s.file("app/version"), round.to_string()).unwrap();
        for command in ["deploy", "restart"] {
            s.ok(&[command, "api"]);
            let from = scrape_log(&s).len();
            assert!(
                wait_until(Duration::from_secs(30), || scraped_since(from) >= 2),
                "after {command} {round}: {:?}",
                scrape_log(&s)
            );
        }
    }

    // No scrape of a stopped instance failed: no event, and `up` was never 0.
    let failed = failed_scrapes(&s, "services.api");
    assert!(failed.is_empty(), "{failed:#?}");
    let downs = s.json(&[
        "query",
        "min_over_time(up{service=\"api\"}[10m]) == 0",
        "--json",
    ]);
    assert_eq!(downs["data"]["result"], serde_json::json!([]), "{downs:#}");
    // Only the last release's `up` is still seen: the old ones were marked stale when they
    // stopped.
    let up = s.json(&["query", "up{service=\"api\"}", "--json"]);
    assert_eq!(
        up["data"]["result"].as_array().map(Vec::len),
        Some(1),
        "{up:#}"
    );

    // Each process a deploy or a restart started was scraped soon after it started:
    // readiness (100 ms probes) and its first scrape (at most one 500 ms interval), not a
    // whole 2 s refresh later. (Not the first one: `up` records the service after starting
    // it, so its target is found by the periodic recheck.)
    let log = scrape_log(&s);
    let mut slow = Vec::new();
    for (i, (what, port, started)) in log.iter().enumerate().skip(first_deploy) {
        if what != "start" {
            continue;
        }
        let first = log[i..]
            .iter()
            .find(|(w, p, _)| w == "scrape" && p == port)
            .map(|(_, _, t)| t - started);
        if first.is_none_or(|ms| ms > 1500) {
            slow.push((port, first));
        }
    }
    assert!(
        slow.is_empty(),
        "first scrape (ms after start): {slow:?}\n{log:?}"
    );
}
