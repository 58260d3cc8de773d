//! The dashboard in a real browser: the example shop runs under load through the ingress,
//! and headless Chromium renders the dashboard's pages (overview, a service's charts, the
//! pipeline runs, the event log) from `kiln up --dash-listen`. The rendered DOM must list the
//! services and hold drawn chart lines; screenshots are kept under
//! `target/test-artifacts/` for a person to look at. Then a stack whose route fails: its
//! paging alert opens an incident and runs its runbook; the dashboard's JSON shows the
//! incident's timeline and the alert beside its runbook's documentation (Markdown rendered,
//! raw HTML escaped) and runs, and Chromium renders the alerts, incidents and incident pages.
//!
//! Skipped, with a message, when `chromium` is not installed (Debian: `apt-get install
//! chromium`), unless `CI=true`, where a missing browser fails the test.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Down, FAILING_SERVER, Load, Scratch, assert_contains_all, example_shop, strings_of, wait_until,
};

/// How long one Chromium run may take before it is killed.
const BROWSER_DEADLINE: Duration = Duration::from_secs(60);

/// Chromium, or none (with a message) when it is missing outside CI; in CI a missing browser
/// fails the test.
fn chromium_or_skip() -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is not installed; CI must install it (apt-get install chromium)"
        );
        eprintln!("SKIPPED: chromium is not installed (apt-get install chromium)");
    }
    found
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// `target/test-artifacts/`: under `CARGO_TARGET_DIR` when set, else beside the test binary's
/// `target/<profile>/deps/`.
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            exe.ancestors().nth(3).unwrap().to_path_buf()
        });
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs headless Chromium with `args` on `url`, in its own process group, killed (with its
/// helpers) when it outlives [`BROWSER_DEADLINE`]; returns its stdout.
fn browse(browser: &Path, profile: &Path, args: &[&str], url: &str) -> String {
    let mut command = Command::new(browser);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BROWSER_DEADLINE {
            let group = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            panic!("chromium on {url} ran longer than {BROWSER_DEADLINE:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Helpers left behind by a browser that exited go with its group.
    let group = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    assert!(status.success(), "chromium on {url} failed: {status}");
    reader.join().unwrap()
}

/// The rendered DOM of `url`.
fn dom(browser: &Path, profile: &Path, url: &str) -> String {
    browse(browser, profile, &["--dump-dom"], url)
}

/// Saves a screenshot of `url` as `name` among the test artifacts.
fn screenshot(browser: &Path, profile: &Path, url: &str, name: &str) -> PathBuf {
    let path = artifacts_dir().join(name);
    let _ = std::fs::remove_file(&path);
    browse(
        browser,
        profile,
        &[
            &format!("--screenshot={}", path.display()),
            "--window-size=1280,900",
        ],
        url,
    );
    let png = std::fs::read(&path).unwrap_or_default();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "no screenshot of {url} at {}",
        path.display()
    );
    path
}

/// A GET on loopback; the status and the body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (code, body)
}

/// The `data-points` counts of the chart lines inside the element with `id`.
fn drawn_points(dom: &str, id: &str) -> Vec<usize> {
    let Some(start) = dom.find(&format!("id=\"{id}\"")) else {
        return Vec::new();
    };
    let card = &dom[start..];
    let card = &card[..card.find("</article>").unwrap_or(card.len())];
    card.match_indices("data-points=\"")
        .filter_map(|(at, marker)| {
            let rest = &card[at + marker.len()..];
            rest[..rest.find('"')?].parse().ok()
        })
        .collect()
}

#[test]
fn the_dashboard_renders_services_charts_runs_and_events_in_a_browser() {
    let Some(browser) = chromium_or_skip() else {
        return;
    };
    let s = example_shop();
    s.ok(&[
        "up",
        "-d",
        "--interval",
        "2",
        "--dash-listen",
        "127.0.0.1:0",
    ]);
    let _down = Down(&s);
    let ready = || {
        serde_json::from_slice::<serde_json::Value>(&s.run(&["ps", "--json"]).stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|l| l.len() == 4 && l.iter().all(|i| i["state"] == "ready"))
    };
    assert!(
        wait_until(Duration::from_secs(30), ready),
        "the shop did not come up"
    );
    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    let ingress = status["ingress"].as_str().unwrap().to_owned();
    let dash = status["dash"].as_str().unwrap().to_owned();
    assert!(dash.starts_with("127.0.0.1:"), "{status}");
    let url = format!("http://{dash}/");
    assert_eq!(s.ok(&["dash"]).trim(), url);
    assert!(s.ok(&["status"]).contains(&format!("dashboard: {url}")));

    // Traffic on both routes until the store holds request rates for them.
    let api_load = Load::start(&ingress, "shop.localhost", "/api/products", 2);
    let web_load = Load::start(&ingress, "shop.localhost", "/", 1);
    let query = "/api/query?query=sum%20by%20(route)%20(rate(http_requests_total%5B1m%5D))";
    let has_rates = || {
        let (code, body) = get(&dash, query);
        code == 200
            && serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| {
                v["series"].as_array().is_some_and(|s| {
                    // The ingress's two routes (the services' own addresses count too).
                    let routes: Vec<_> = s
                        .iter()
                        .filter(|x| {
                            x["labels"]["route"]
                                .as_str()
                                .is_some_and(|r| r.starts_with("routes."))
                        })
                        .collect();
                    routes.len() == 2
                        && routes
                            .iter()
                            .all(|x| x["points"][0][1].as_f64().is_some_and(|r| r > 0.0))
                })
            })
    };
    assert!(
        wait_until(Duration::from_secs(30), has_rates),
        "no request rates in the store: {:?}",
        get(&dash, query)
    );

    let profile = tempfile::tempdir().unwrap();
    let overview = dom(&browser, profile.path(), &url);
    for service in ["api", "web", "worker"] {
        assert!(
            overview.contains(&format!("data-service=\"{service}\"")),
            "the overview does not list {service}:\n{overview}"
        );
    }
    assert!(overview.contains("2/2 ready"), "{overview}");
    assert!(overview.contains("Uptime 24h"), "{overview}");

    let service_url = format!("{url}#/service/api?range=900");
    let page = dom(&browser, profile.path(), &service_url);
    for chart in ["requests", "errors", "latency", "cpu", "memory", "restarts"] {
        assert!(
            page.contains(&format!("id=\"chart-{chart}\"")),
            "no {chart} chart:\n{page}"
        );
    }
    for chart in ["chart-requests", "chart-latency", "chart-memory"] {
        let points = drawn_points(&page, chart);
        assert!(
            points.iter().any(|n| *n > 0),
            "{chart} drew no data ({points:?}):\n{page}"
        );
    }

    let runs = dom(&browser, profile.path(), &format!("{url}#/runs"));
    assert!(runs.contains("<h1>Pipeline runs</h1>"), "{runs}");
    let events = dom(&browser, profile.path(), &format!("{url}#/events"));
    assert!(events.contains("data-kind=\"instance.ready\""), "{events}");
    let deploys = dom(
        &browser,
        profile.path(),
        &format!("{url}#/events?kind=deploy"),
    );
    assert!(
        deploys.contains("data-kind=\"deploy.succeeded\""),
        "{deploys}"
    );
    assert!(!deploys.contains("data-kind=\"instance."), "{deploys}");

    // Delivery: `up` deployed the shop's three services, so DORA has changes to measure.
    // api's one change in a day: daily, `elite`.
    let (code, body) = get(&dash, "/api/dora?since=1d&service=api");
    assert_eq!(code, 200, "{body}");
    let dora: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dora["changes"], 1, "{dora}");
    assert_eq!(dora["bucket"], "day", "{dora}");
    assert_eq!(dora["metrics"][0]["level"], "elite", "{dora}");
    let (code, body) = get(&dash, "/api/dora?since=lately");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("`lately` must start with a number"), "{body}");
    let delivery_url = format!("{url}#/delivery?since=30d");
    let delivery = dom(&browser, profile.path(), &delivery_url);
    for metric in [
        "deployment_frequency",
        "lead_time",
        "change_failure_rate",
        "recovery_time",
    ] {
        assert!(
            delivery.contains(&format!("data-metric=\"{metric}\"")),
            "no {metric} tile:\n{delivery}"
        );
    }
    // Three changes over 30 days: 0.10/day, less than weekly: a `medium` deployment frequency.
    assert!(
        delivery.contains("data-metric=\"deployment_frequency\" data-level=\"medium\""),
        "{delivery}"
    );
    assert!(delivery.contains("0.10/day"), "{delivery}");
    assert!(delivery.contains("all services"), "{delivery}");
    let points = drawn_points(&delivery, "dora-deployment_frequency");
    assert!(
        points.iter().any(|n| *n > 0),
        "no trend drawn ({points:?}):\n{delivery}"
    );

    let shots = [
        screenshot(&browser, profile.path(), &url, "dashboard-overview.png"),
        screenshot(
            &browser,
            profile.path(),
            &service_url,
            "dashboard-service.png",
        ),
        screenshot(
            &browser,
            profile.path(),
            &delivery_url,
            "dashboard-delivery.png",
        ),
    ];
    eprintln!("screenshots: {shots:?}");

    let api_tally = api_load.finish();
    let web_tally = web_load.finish();
    assert!(api_tally.ok > 0 && web_tally.ok > 0);
}

const INCIDENT_STACK: &str = r#"
name: paged
ingress: { listen: "127.0.0.1:0" }
services:
  api:
    run: node server.js
    health: { readiness: { http: /health, interval: 100ms, timeout: 5s } }
routes:
  - { name: api, host: api.localhost, service: api }
notify:
  evaluation_interval: 1s
  incidents: { auto_resolve_after: 1h }
alerts:
  - name: api-down
    expr: 'sum by (route) (rate(http_requests_total{route="routes.api",code_class="5xx"}[10s])) > 1'
    for: 1s
    severity: page
    labels: { service: api }
    annotations: { summary: "the api fails" }
    runbook: triage-api
runbooks:
  triage-api:
    description: |
      # Triage the api

      The api answers **500**. Then:

      1. read `kiln logs api`
      2. look at [the deploys](/#/events?kind=deploy)

      <script>document.title = 'owned'</script>
    steps:
      - { name: look, run: "echo looked", timeout: 5s }
"#;

/// The JSON at `path` of the dashboard at `dash`, once it answers 200.
fn dash_json(dash: &str, path: &str) -> serde_json::Value {
    let (code, body) = get(dash, path);
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn incidents_and_alerts_with_their_runbook_are_in_the_dashboard() {
    let s = Scratch::new(INCIDENT_STACK);
    std::fs::write(s.file("server.js"), FAILING_SERVER).unwrap();
    s.ok(&[
        "up",
        "-d",
        "--interval",
        "5",
        "--dash-listen",
        "127.0.0.1:0",
    ]);
    let _down = Down(&s);
    let status = s.json(&["status", "--json"]);
    let ingress = status["ingress"].as_str().unwrap().to_owned();
    let dash = status["dash"].as_str().unwrap().to_owned();
    assert_eq!(
        dash_json(&dash, "/api/incidents"),
        serde_json::json!({ "open": [], "recent": [] })
    );

    // The api fails under load: its paging alert opens an incident and runs the runbook.
    let load = Load::start(&ingress, "api.localhost", "/", 2);
    std::fs::write(s.file("fail"), "").unwrap();
    let opened = || {
        dash_json(&dash, "/api/incidents")["open"]
            .as_array()
            .is_some_and(|open| !open.is_empty())
    };
    assert!(
        wait_until(Duration::from_secs(40), opened),
        "no incident in the dashboard: {:#}",
        dash_json(&dash, "/api/alerts")
    );
    let list = dash_json(&dash, "/api/incidents");
    let summary = &list["open"][0];
    assert_eq!(summary["service"], "api");
    assert_eq!(summary["title"], "api-down on api");
    assert_eq!(summary["state"], "open");
    assert_eq!(summary["severity"], "page");
    let id = summary["id"].as_i64().unwrap();
    s.ok(&["incident", "ack", &id.to_string()]);
    s.ok(&[
        "incident",
        "note",
        &id.to_string(),
        "checking the last deploy",
    ]);

    let detail = dash_json(&dash, &format!("/api/incidents/{id}"));
    assert_eq!(detail["state"], "acknowledged");
    assert!(detail["time_to_acknowledge_ms"].as_i64().unwrap() >= 0);
    // In this order, whatever else (a deploy) the timeline holds.
    let kinds = strings_of(&detail["timeline"], "kind");
    let mut wanted = ["alert_fired", "acknowledged", "note"]
        .into_iter()
        .peekable();
    for kind in &kinds {
        wanted.next_if(|w| w == kind);
    }
    assert_eq!(wanted.next(), None, "{detail:#}");
    let note = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "note")
        .unwrap();
    assert_eq!(note["text"], "checking the last deploy");
    assert!(note["actor"].as_str().unwrap().contains('@'), "{note}");
    assert_eq!(
        strings_of(&detail["milestones"], "name"),
        ["detected", "acknowledged", "mitigated", "resolved"]
    );
    assert_eq!(detail["milestones"][0]["actor"], "kiln");
    assert_eq!(detail["alerts"][0]["name"], "api-down");
    assert_eq!(get(&dash, "/api/incidents/999").0, 404);

    // The firing alert, beside its runbook's documentation and the run it started.
    let ran = || {
        dash_json(&dash, "/api/alerts")["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| {
                a["name"] == "api-down"
                    && a["state"] == "firing"
                    && a["runbook_doc"]["runs"]
                        .as_array()
                        .is_some_and(|r| !r.is_empty())
            })
    };
    assert!(
        wait_until(Duration::from_secs(30), ran),
        "the alert's runbook did not run: {:#}",
        dash_json(&dash, "/api/alerts")
    );
    let alerts = dash_json(&dash, "/api/alerts");
    let alert = &alerts["alerts"][0];
    assert_eq!(alert["annotations"]["summary"], "the api fails");
    let doc = &alert["runbook_doc"];
    assert_eq!(doc["name"], "triage-api");
    let html = doc["doc_html"].as_str().unwrap();
    assert_contains_all(
        html,
        &[
            "<h1>Triage the api</h1>",
            "<strong>500</strong>",
            "<code>kiln logs api</code>",
            "<a href=\"/#/events?kind=deploy\">the deploys</a>",
            "&lt;script&gt;",
        ],
    );
    assert!(!html.contains("<script"), "{html}");
    assert_eq!(doc["runs"][0]["trigger"], "alert");
    assert_eq!(doc["runs"][0]["triggered_by"], "alerts.api-down");

    if let Some(browser) = chromium_or_skip() {
        let profile = tempfile::tempdir().unwrap();
        let url = format!("http://{dash}/");
        let incidents = dom(&browser, profile.path(), &format!("{url}#/incidents"));
        assert_contains_all(
            &incidents,
            &[&format!("data-incident=\"{id}\""), "api-down on api"],
        );
        let page = dom(&browser, profile.path(), &format!("{url}#/incidents/{id}"));
        assert_contains_all(
            &page,
            &[
                "data-kind=\"alert_fired\"",
                "data-kind=\"note\"",
                "checking the last deploy",
                "data-milestone=\"acknowledged\"",
            ],
        );
        let alerts = dom(&browser, profile.path(), &format!("{url}#/alerts"));
        assert_contains_all(
            &alerts,
            &[
                "data-alert=\"api-down\"",
                "data-runbook=\"triage-api\"",
                "<h1>Triage the api</h1>",
                "&lt;script&gt;document.title",
            ],
        );
        assert!(!alerts.contains("<title>owned"), "{alerts}");
        let shots = [
            screenshot(
                &browser,
                profile.path(),
                &format!("{url}#/alerts"),
                "dashboard-alerts.png",
            ),
            screenshot(
                &browser,
                profile.path(),
                &format!("{url}#/incidents/{id}"),
                "dashboard-incident.png",
            ),
        ];
        eprintln!("screenshots: {shots:?}");
    }
    let tally = load.finish();
    assert!(tally.failed > 0, "{tally:?}");
}
