//! Scrapes of real HTTP targets on loopback: good answers in both formats, malformed text, a
//! target that hangs, one over the sample limit, and series that disappear.

use std::sync::Arc;
use std::time::Duration;

use kiln_metrics::query::{Engine, Value, is_stale};
use kiln_metrics::{Labels, Matcher, Options, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// What a test target answers.
#[derive(Clone)]
enum Answer {
    Body(&'static str, String),
    Hang,
}

/// Serves `answer` (it can change between scrapes) on 127.0.0.1, port 0.
async fn serve(answer: Arc<Mutex<Answer>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut hung = Vec::new();
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let answer = answer.lock().unwrap().clone();
            match answer {
                Answer::Hang => hung.push(socket),
                Answer::Body(content_type, body) => {
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                }
            }
        }
    });
    port
}

fn target(port: u16, timeout: Duration, sample_limit: usize) -> Target {
    Target {
        port,
        config: ScrapeConfig {
            path: "/metrics".into(),
            interval: Duration::from_secs(15),
            timeout,
            sample_limit,
        },
        service: "api".into(),
        instance: "0".into(),
        release: "r1".into(),
    }
}

/// Waits (bounded) until the millisecond clock moves on, so a second scrape's samples and
/// staleness markers are newer than the first's.
fn next_ms() {
    let first = crate::metrics::now_ms();
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while crate::metrics::now_ms() <= first && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
}

fn scrapes() -> Arc<Scrapes> {
    Arc::new(Scrapes::default())
}

fn store() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
    (dir, store)
}

fn instant(store: &Store, query: &str) -> Vec<(Labels, f64)> {
    match Engine::new(store).query(query, now_ms_for_tests()).unwrap() {
        Value::Vector(v) => v.into_iter().map(|s| (s.labels, s.v)).collect(),
        other => panic!("{other:?}"),
    }
}

fn now_ms_for_tests() -> i64 {
    crate::metrics::now_ms() + 1
}

const TEXT: &str = "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\nhttp_requests_total{code=\"200\",instance=\"mine\"} 7\nhttp_requests_total{code=\"500\"} 1\n";

#[tokio::test]
async fn a_good_target_is_recorded_with_target_labels_and_up() {
    let (_dir, store) = store();
    let port = serve(Arc::new(Mutex::new(Answer::Body(
        "text/plain; version=0.0.4",
        TEXT.into(),
    ))))
    .await;
    let t = target(port, Duration::from_secs(5), 100);
    let (report, seen) = scrape_once(&t, &store, &scrapes(), t.cache()).await;
    assert_eq!(report.error, None);
    assert_eq!(report.samples, 2);
    assert_eq!(seen.live_series(), 2);
    let got = instant(&store, "http_requests_total{code=\"200\"}");
    let labels = &got[0].0;
    assert_eq!(labels.get("service"), Some("api"));
    assert_eq!(labels.get("job"), Some("api"));
    assert_eq!(labels.get("instance"), Some("0"));
    assert_eq!(labels.get("release"), Some("r1"));
    assert_eq!(
        labels.get("exported_instance"),
        Some("mine"),
        "a clashing label is kept as exported_*"
    );
    assert_eq!(got[0].1, 7.0);
    assert_eq!(instant(&store, "up{service=\"api\"}")[0].1, 1.0);
    assert_eq!(instant(&store, "scrape_samples_scraped")[0].1, 2.0);
    assert_eq!(instant(&store, "scrape_duration_seconds").len(), 1);
}

#[tokio::test]
async fn openmetrics_answers_are_parsed_as_openmetrics() {
    let (_dir, store) = store();
    let body = "# TYPE jobs counter\njobs_total 3 1700000000.5\n# EOF\n";
    let port = serve(Arc::new(Mutex::new(Answer::Body(
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        body.into(),
    ))))
    .await;
    let t = target(port, Duration::from_secs(5), 100);
    let (report, _) = scrape_once(&t, &store, &scrapes(), t.cache()).await;
    assert_eq!(report.error, None);
    // OpenMetrics timestamps are seconds: the sample lands at 1700000000500 ms.
    let series = store
        .select(
            &[Matcher::new(
                kiln_metrics::METRIC_NAME,
                kiln_metrics::MatchOp::Eq,
                "jobs_total",
            )],
            0,
            i64::MAX,
        )
        .unwrap();
    assert_eq!(series[0].samples[0].t, 1_700_000_000_500);
}

#[tokio::test]
async fn malformed_text_is_a_clear_error_recorded_as_up_zero_and_ends_the_old_series() {
    let (_dir, store) = store();
    let answer = Arc::new(Mutex::new(Answer::Body("text/plain", TEXT.into())));
    let port = serve(answer.clone()).await;
    let t = target(port, Duration::from_secs(5), 100);
    let (_, seen) = scrape_once(&t, &store, &scrapes(), t.cache()).await;
    next_millisecond();
    *answer.lock().unwrap() =
        Answer::Body("text/plain", "ok_metric 1\nbroken{label=\"x\" 2\n".into());
    next_ms();
    let (report, seen) = scrape_once(&t, &store, &scrapes(), seen).await;
    let error = report.error.unwrap();
    assert!(
        error.starts_with("malformed exposition, line 2:"),
        "{error}"
    );
    assert_eq!(seen.live_series(), 0);
    assert_eq!(instant(&store, "up")[0].1, 0.0);
    assert!(
        instant(&store, "http_requests_total").is_empty(),
        "a failed scrape marks the target's series stale"
    );
    assert!(
        instant(&store, "ok_metric").is_empty(),
        "nothing of a bad answer is kept"
    );
}

#[tokio::test]
async fn a_hanging_target_times_out_without_holding_up_another() {
    let (_dir, store) = store();
    let hanging = serve(Arc::new(Mutex::new(Answer::Hang))).await;
    let good = serve(Arc::new(Mutex::new(Answer::Body(
        "text/plain",
        TEXT.into(),
    ))))
    .await;
    let mut slow = target(hanging, Duration::from_millis(300), 100);
    slow.service = "slow".into();
    let fast = target(good, Duration::from_secs(5), 100);
    let store2 = store.clone();
    let hung =
        tokio::spawn(async move { scrape_once(&slow, &store2, &scrapes(), slow.cache()).await });
    // The good target is scraped (and readable) while the other one hangs.
    let (report, _) = scrape_once(&fast, &store, &scrapes(), fast.cache()).await;
    assert_eq!(report.error, None);
    assert_eq!(instant(&store, "up{service=\"api\"}")[0].1, 1.0);
    let (report, _) = hung.await.unwrap();
    assert_eq!(
        report.error.as_deref(),
        Some("no complete answer within 300 ms (the scrape timeout)")
    );
    assert_eq!(instant(&store, "up{service=\"slow\"}")[0].1, 0.0);
}

#[tokio::test]
async fn an_answer_over_the_sample_limit_is_rejected_whole() {
    let (_dir, store) = store();
    let body: String = (0..50).map(|i| format!("m{{i=\"{i}\"}} 1\n")).collect();
    let port = serve(Arc::new(Mutex::new(Answer::Body("text/plain", body)))).await;
    let t = target(port, Duration::from_secs(5), 10);
    let (report, _) = scrape_once(&t, &store, &scrapes(), t.cache()).await;
    assert_eq!(
        report.error.as_deref(),
        Some("50 samples exceed the sample limit of 10")
    );
    assert!(instant(&store, "m").is_empty());
    assert_eq!(instant(&store, "up")[0].1, 0.0);
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let (_dir, store) = store();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = target(port, Duration::from_secs(5), 10);
    let (report, _) = scrape_once(&t, &store, &scrapes(), t.cache()).await;
    assert!(report.error.unwrap().starts_with("cannot connect:"));
}

#[tokio::test]
async fn a_series_gone_from_the_answer_gets_a_staleness_marker() {
    let (_dir, store) = store();
    let answer = Arc::new(Mutex::new(Answer::Body("text/plain", "a 1\nb 2\n".into())));
    let port = serve(answer.clone()).await;
    let t = target(port, Duration::from_secs(5), 100);
    let (_, seen) = scrape_once(&t, &store, &scrapes(), t.cache()).await;
    next_millisecond();
    *answer.lock().unwrap() = Answer::Body("text/plain", "a 3\n".into());
    next_ms();
    let (report, seen) = scrape_once(&t, &store, &scrapes(), seen).await;
    assert_eq!(report.samples, 1);
    assert_eq!(seen.live_series(), 1);
    let b = store
        .select(
            &[Matcher::new(
                kiln_metrics::METRIC_NAME,
                kiln_metrics::MatchOp::Eq,
                "b",
            )],
            0,
            i64::MAX,
        )
        .unwrap();
    assert!(is_stale(b[0].samples.last().unwrap().v));
    assert!(instant(&store, "b").is_empty());
    assert_eq!(instant(&store, "a")[0].1, 3.0);
}

#[test]
fn versioned_supervisor_names_map_to_their_service() {
    assert_eq!(service_of("api@3f2a1c9e"), "api");
    assert_eq!(service_of("api"), "api");
    assert_eq!(
        service_of("modules-db-services-pg@1"),
        "modules-db-services-pg"
    );
}

#[test]
fn only_ready_instances_of_declaring_services_are_targets() {
    let config = ScrapeConfig::from_attribute(&serde_json::json!({ "interval": 5000 })).unwrap();
    assert_eq!(config.path, "/metrics");
    assert_eq!(config.interval, Duration::from_secs(5));
    assert_eq!(
        config.timeout,
        Duration::from_secs(5),
        "never longer than the interval"
    );
    let declared = BTreeMap::from([("api".to_owned(), config)]);
    let instance =
        |service: &str, n: u32, state: InstanceState, port: Option<u16>| InstanceStatus {
            id: kiln_supervisor::InstanceId {
                service: service.into(),
                instance: n,
            },
            pid: Some(1),
            start_ticks: None,
            port,
            state,
            health: String::new(),
            restarts: 0,
            uptime: None,
            cpu_seconds: None,
            rss_bytes: None,
            release: "3f2a1c9e".into(),
            limits_in_force: kiln_supervisor::LimitsInForce::None,
            adopted: false,
        };
    let got = targets(
        &declared,
        &[
            instance("api@3f2a1c9e", 0, InstanceState::Ready, Some(4000)),
            instance("api@3f2a1c9e", 1, InstanceState::Starting, Some(4001)),
            instance("web", 0, InstanceState::Ready, Some(4002)),
        ],
    );
    assert_eq!(got.len(), 1);
    let t = &got["api@3f2a1c9e/0"];
    assert_eq!(
        (t.port, t.service.as_str(), t.release.as_str()),
        (4000, "api", "3f2a1c9e")
    );
    assert_eq!(t.url(), "http://127.0.0.1:4000/metrics");
}

/// Samples are stamped in milliseconds: a second scrape must land in a later one than the
/// first, or its staleness markers would share the first samples' timestamps. A bounded spin
/// on the clock, not a sleep.
fn next_millisecond() {
    let first = std::time::SystemTime::now();
    while std::time::SystemTime::now()
        .duration_since(first)
        .unwrap_or_default()
        < Duration::from_millis(2)
    {
        std::hint::spin_loop();
    }
}

/// A target's loop lives as long as the target, mostly asleep between scrapes: what one scrape
/// needs (the connection, the request, the body) is allocated for that scrape only, so the
/// loop of each of a hundred targets stays small.
#[test]
fn an_idle_scrape_loop_is_small() {
    let (_d, store) = store();
    let (_stop_tx, stop) = oneshot::channel();
    let reporter = Reporter {
        announce: Arc::new(|_: &Event| {}),
        events: None,
        still_serving: Arc::new(|_, _| Box::pin(async { true })),
    };
    let looping = scrape_loop(
        "api/0".into(),
        target(1, Duration::from_secs(1), 10),
        store,
        scrapes(),
        reporter,
        stop,
    );
    let size = std::mem::size_of_val(&looping);
    assert!(size <= 1024, "a scrape loop takes {size} bytes");
}

/// A service's replicas, found at the same moment, scrape at phases spread over the interval,
/// not all at once; each target's phase is the same whenever it starts.
#[test]
fn targets_found_together_scrape_at_phases_spread_over_the_interval() {
    let interval = Duration::from_secs(15);
    let now_ms = 1_700_000_000_123;
    let ids: Vec<String> = (0..100).map(|i| format!("web-{i}")).collect();
    let delays: Vec<Duration> = ids
        .iter()
        .map(|id| first_scrape_delay(id, interval, now_ms))
        .collect();
    assert!(delays.iter().all(|d| *d < interval));
    // The phases fill the interval: each of its fifteen seconds holds some, none holds a third.
    let mut per_second = [0usize; 15];
    for d in &delays {
        per_second[d.as_secs() as usize] += 1;
    }
    assert!(
        per_second.iter().all(|n| (1..34).contains(n)),
        "{per_second:?}"
    );
    // The phase belongs to the target: started a moment later, it waits that much less.
    for (id, d) in ids.iter().zip(&delays) {
        let later = first_scrape_delay(id, interval, now_ms + 4_000);
        assert_eq!(
            (later.as_millis() + 4_000) % 15_000,
            d.as_millis() % 15_000,
            "{id}"
        );
    }
    // Any interval works, down to a millisecond.
    assert_eq!(
        first_scrape_delay("web-0", Duration::from_millis(1), now_ms),
        Duration::ZERO
    );
}

/// A reporter that sends each announcement down a channel and asks `serving` whether the
/// instance is still ready.
fn reporter(
    serving: Arc<std::sync::atomic::AtomicBool>,
) -> (Reporter, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let reporter = Reporter {
        announce: Arc::new(move |e: &Event| {
            if let Event::Note { message } = e {
                let _ = tx.send(message.clone());
            }
        }),
        events: None,
        still_serving: Arc::new(move |_, _| {
            let serving = serving.load(Ordering::SeqCst);
            Box::pin(async move { serving })
        }),
    };
    (reporter, rx)
}

/// `t`'s scrape loop, as "api/0", on its own task.
fn spawn_loop(
    t: Target,
    store: &Arc<Store>,
    scrapes: &Arc<Scrapes>,
    reporter: Reporter,
    stop: oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(scrape_loop(
        "api/0".into(),
        t,
        store.clone(),
        scrapes.clone(),
        reporter,
        stop,
    ))
}

async fn next_note(notes: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), notes.recv())
        .await
        .expect("a note within 10 s")
        .expect("the loop still announces")
}

/// Issue 4: a scrape that fails because its instance is going away (its port closed before
/// the supervisor's event came) is no failure of the target: nothing is recorded, no note,
/// and the loop ends, marking its series stale. A failure while it is still ready counts.
#[tokio::test]
async fn a_failed_scrape_of_an_instance_going_away_is_dropped_and_ends_the_target() {
    let (_dir, store) = store();
    let answer = Arc::new(Mutex::new(Answer::Hang));
    let port = serve(answer.clone()).await;
    let mut t = target(port, Duration::from_millis(100), 100);
    t.config.interval = Duration::from_millis(100);
    let serving = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (reporter, mut notes) = reporter(serving.clone());
    let scrapes = scrapes();
    let (_stop, stop) = oneshot::channel();
    let looping = spawn_loop(t, &store, &scrapes, reporter, stop);
    // Ready and not answering: a failure. Then a good answer: recovered.
    assert!(next_note(&mut notes).await.contains("failed"));
    *answer.lock().unwrap() = Answer::Body("text/plain", TEXT.into());
    assert!(next_note(&mut notes).await.contains("recovered"));
    // Going away, and not answering: the loop ends by itself, saying nothing.
    serving.store(false, Ordering::SeqCst);
    *answer.lock().unwrap() = Answer::Hang;
    tokio::time::timeout(Duration::from_secs(10), looping)
        .await
        .expect("the loop ends within 10 s")
        .unwrap();
    assert_eq!(notes.try_recv().ok(), None);
    assert!(instant(&store, "up").is_empty(), "up is stale");
    assert!(instant(&store, "http_requests_total").is_empty());
}

/// A stop while a scrape hangs ends the loop at once: the scrape is abandoned, not waited
/// for until its timeout and recorded as a failure of a target that is gone.
#[tokio::test]
async fn a_stop_abandons_a_scrape_in_flight() {
    let (_dir, store) = store();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (accepted_tx, accepted) = oneshot::channel();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let _ = accepted_tx.send(());
        // Holds the connection open, never answering.
        std::future::pending::<()>().await;
        drop(socket);
    });
    let mut t = target(port, Duration::from_secs(600), 100);
    t.config.interval = Duration::from_millis(20);
    let (reporter, mut notes) = reporter(Arc::new(std::sync::atomic::AtomicBool::new(true)));
    let scrapes = scrapes();
    let (stop_tx, stop) = oneshot::channel();
    let looping = spawn_loop(t, &store, &scrapes, reporter, stop);
    tokio::time::timeout(Duration::from_secs(10), accepted)
        .await
        .expect("a scrape within 10 s")
        .unwrap();
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), looping)
        .await
        .expect("the loop ends within 10 s, not at the 600 s scrape timeout")
        .unwrap();
    assert_eq!(notes.try_recv().ok(), None);
    assert_eq!(scrapes.stats.scrapes.load(Ordering::Relaxed), 0);
    assert!(scrapes.health().is_empty());
}
