//! Scraping: every ready instance of a service that declares `metrics: { path, interval }` is
//! fetched over HTTP on its loopback port at that interval, and its Prometheus text or
//! OpenMetrics samples are recorded with `job`, `service`, `instance` and `release` labels,
//! plus `up`, `scrape_duration_seconds` and `scrape_samples_scraped` like Prometheus records.
//!
//! Each target has its own task, and each scrape is bounded: a timeout (at most the interval),
//! a body size limit and a sample limit. A target that hangs, answers garbage or floods only
//! fails its own scrape (`up` 0, a note in the log, `lastError` in `/api/v1/targets`); the
//! store and the other targets never wait on it. Series that disappear (from a scrape, or with
//! their target) get Prometheus's staleness marker, so queries stop seeing them at once.
//!
//! Each target's task owns a [`TargetCache`] (kiln-metrics): the raw text of each series it
//! showed, mapped to the stored series, so a steady scrape builds no label sets at all.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use kiln_metrics::exposition::{Family, Format, MetricType};
use kiln_metrics::query::STALE_NAN_BITS;
use kiln_metrics::scrape::{IngestError, TargetCache};
use kiln_metrics::{Labels, Store};
use kiln_supervisor::{Event as SupervisorEvent, InstanceState, InstanceStatus, SupervisorHandle};
use tokio::sync::{broadcast, oneshot};

use crate::ops::{self, Event};

/// Scrape interval when `metrics:` gives none (Prometheus's default is 1m; kiln's docs say 15s).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// Scrape timeout when none is given (Prometheus's default); never longer than the interval.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Samples one scrape may return before it is rejected whole (like Prometheus's `sample_limit`).
pub const DEFAULT_SAMPLE_LIMIT: usize = 50_000;
/// Largest response body accepted.
pub const MAX_BODY_BYTES: usize = 32 << 20;
/// Prometheus's Accept header: OpenMetrics preferred, the text format accepted.
const ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The service name of a supervisor name: `api@3f2a1c9e` (a versioned release) is `api`.
pub fn service_of(supervisor_name: &str) -> &str {
    supervisor_name
        .split_once('@')
        .map_or(supervisor_name, |(service, _)| service)
}

/// A service's `metrics:` attribute, evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeConfig {
    /// The HTTP path (`/metrics`).
    pub path: String,
    /// Time between scrapes.
    pub interval: Duration,
    /// How long one scrape may take (at most `interval`).
    pub timeout: Duration,
    /// Most samples one scrape may return.
    pub sample_limit: usize,
}

impl ScrapeConfig {
    /// From a recorded `metrics` attribute (durations are normalised to milliseconds).
    pub fn from_attribute(value: &serde_json::Value) -> Option<ScrapeConfig> {
        let object = value.as_object()?;
        let ms = |key: &str| {
            object
                .get(key)
                .and_then(serde_json::Value::as_u64)
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis)
        };
        let interval = ms("interval").unwrap_or(DEFAULT_INTERVAL);
        let path = object
            .get("path")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("/metrics");
        Some(ScrapeConfig {
            path: if path.starts_with('/') {
                path.to_owned()
            } else {
                format!("/{path}")
            },
            interval,
            timeout: ms("timeout").unwrap_or(DEFAULT_TIMEOUT).min(interval),
            sample_limit: object
                .get("sample_limit")
                .and_then(serde_json::Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(DEFAULT_SAMPLE_LIMIT),
        })
    }
}

/// One instance to scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The instance's loopback port.
    pub port: u16,
    /// How to scrape it.
    pub config: ScrapeConfig,
    /// The service (before any `@version`).
    pub service: String,
    /// The instance number.
    pub instance: String,
    /// The release the instance runs (may be empty).
    pub release: String,
}

impl Target {
    /// The URL scraped.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, self.config.path)
    }

    /// The labels kiln adds to every sample of this target, in name order.
    pub fn labels(&self) -> Vec<(&'static str, &str)> {
        let mut out = vec![
            ("instance", self.instance.as_str()),
            ("job", self.service.as_str()),
        ];
        if !self.release.is_empty() {
            out.push(("release", self.release.as_str()));
        }
        out.push(("service", self.service.as_str()));
        out
    }

    /// An empty series cache for this target.
    pub fn cache(&self) -> TargetCache {
        TargetCache::new(self.labels())
    }

    fn series(&self, name: &str) -> Labels {
        Labels::new(
            self.labels()
                .into_iter()
                .chain([(kiln_metrics::METRIC_NAME, name)]),
        )
    }
}

/// The targets: ready instances (with a port) of services that declare `metrics`, keyed by
/// instance id. `declared` is keyed by supervisor name without any `@version`.
pub fn targets(
    declared: &BTreeMap<String, ScrapeConfig>,
    instances: &[InstanceStatus],
) -> BTreeMap<String, Target> {
    instances
        .iter()
        .filter(|i| i.state == InstanceState::Ready)
        .filter_map(|i| {
            let service = service_of(&i.id.service);
            let config = declared.get(service)?;
            Some((
                i.id.to_string(),
                Target {
                    port: i.port?,
                    config: config.clone(),
                    service: service.to_owned(),
                    instance: i.id.instance.to_string(),
                    release: i.release.clone(),
                },
            ))
        })
        .collect()
}

impl From<IngestError> for ScrapeError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::NotUtf8(message) => ScrapeError::Malformed {
                line: 0,
                message: format!("not UTF-8: {message}"),
            },
            IngestError::Malformed(e) => ScrapeError::Malformed {
                line: e.line,
                message: e.message,
            },
            IngestError::SampleLimit { got, limit } => ScrapeError::SampleLimit { got, limit },
        }
    }
}

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// No connection.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The whole scrape took longer than its timeout.
    #[error("no complete answer within {} ms (the scrape timeout)", .0.as_millis())]
    Timeout(Duration),
    /// A status other than 200.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The body could not be read or was too large.
    #[error("reading the body: {0}")]
    Body(String),
    /// The exposition does not parse.
    #[error("malformed exposition, line {line}: {message}")]
    Malformed {
        /// 1-based line (0: the whole body).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Too many samples.
    #[error("{got} samples exceed the sample limit of {limit}")]
    SampleLimit {
        /// Samples in the answer.
        got: usize,
        /// The limit.
        limit: usize,
    },
}

/// The last scrape of a target, for `/api/v1/targets`.
#[derive(Debug, Clone)]
pub struct Health {
    /// The target.
    pub target: Target,
    /// When it was last scraped (ms since the epoch; 0: not yet).
    pub last_scrape_ms: i64,
    /// How long it took.
    pub last_duration: Duration,
    /// Why it failed, if it did.
    pub last_error: Option<String>,
}

/// Totals over every target, for kiln's own metrics.
#[derive(Debug, Default)]
pub struct ScrapeStats {
    /// Scrapes attempted.
    pub scrapes: AtomicU64,
    /// Scrapes that failed.
    pub failures: AtomicU64,
    /// Samples recorded from scrapes.
    pub samples: AtomicU64,
}

/// A metric family's metadata as `/api/v1/metadata` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// `counter`, `gauge`, `histogram`, ...
    pub kind: &'static str,
    /// The HELP text.
    pub help: String,
    /// The UNIT (OpenMetrics).
    pub unit: String,
}

/// Shared by the scraper, the collector and the API.
#[derive(Debug, Default)]
pub struct Scrapes {
    /// Per instance id, the last scrape.
    pub health: Mutex<BTreeMap<String, Health>>,
    /// Totals.
    pub stats: ScrapeStats,
    /// Per family name, the last metadata seen (kept in memory, like Prometheus).
    pub metadata: Mutex<BTreeMap<String, Metadata>>,
}

/// Families kept in [`Scrapes::metadata`] at most, so a target inventing names cannot grow it
/// without bound.
const MAX_METADATA: usize = 100_000;

impl Scrapes {
    /// Records the families of an exposition.
    pub fn note_families(&self, families: &[Family]) {
        let Ok(mut all) = self.metadata.lock() else {
            return;
        };
        for f in families {
            if all.len() >= MAX_METADATA && !all.contains_key(&f.name) {
                continue;
            }
            all.insert(
                f.name.clone(),
                Metadata {
                    kind: type_name(f.kind),
                    help: f.help.clone().unwrap_or_default(),
                    unit: f.unit.clone().unwrap_or_default(),
                },
            );
        }
    }

    /// A copy of every target's health.
    pub fn health(&self) -> Vec<Health> {
        self.health
            .lock()
            .map(|h| h.values().cloned().collect())
            .unwrap_or_default()
    }
}

fn type_name(kind: MetricType) -> &'static str {
    match kind {
        MetricType::Counter => "counter",
        MetricType::Gauge => "gauge",
        MetricType::Histogram => "histogram",
        MetricType::GaugeHistogram => "gaugehistogram",
        MetricType::Summary => "summary",
        MetricType::Info => "info",
        MetricType::StateSet => "stateset",
        MetricType::Unknown => "unknown",
    }
}

type Announce = Arc<dyn Fn(&Event) + Send + Sync>;

/// Whether instance `id` is still ready on `port`, in the supervisor's word. A scrape that
/// failed because its instance is going away (stopping, restarting, replaced by a deploy) is
/// not a failure of the target: it is dropped, not recorded as `up` 0.
pub type StillServing =
    Arc<dyn Fn(String, u16) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// Events handled in one go at most before the targets are rechecked: a burst (a deploy
/// replacing many instances) costs one recheck, and a flood cannot hold the recheck back.
const EVENT_BATCH: usize = 256;

/// Keeps one scraping task per target. The targets are rechecked (from the recorded services
/// and the supervisor's instances) at once on every instance event of the supervisor, so a
/// stopped or replaced instance is no longer scraped and a new one is scraped from its first
/// interval; and every `refresh` as a backstop (a service recorded or changed, a lagged or
/// closed event stream).
pub async fn run(
    store: Arc<Store>,
    supervisor: SupervisorHandle,
    dir: PathBuf,
    scrapes: Arc<Scrapes>,
    announce: Announce,
    refresh: Duration,
) {
    // Subscribed before the first recheck: no change between the two goes unseen.
    let mut events = Some(supervisor.subscribe());
    let mut tick = tokio::time::interval(refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let still_serving: StillServing = {
        let supervisor = supervisor.clone();
        Arc::new(move |id: String, port: u16| {
            let supervisor = supervisor.clone();
            Box::pin(async move {
                supervisor.status().await.iter().any(|i| {
                    i.state == InstanceState::Ready
                        && i.port == Some(port)
                        && i.id.to_string() == id
                })
            })
        })
    };
    let mut running: HashMap<String, (Target, oneshot::Sender<()>)> = HashMap::new();
    // Failures and recoveries go to the event log too (kiln events, the dashboard).
    let events_log = ops::open_store(&dir)
        .ok()
        .map(kiln_state::StateHandle::spawn);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = next_change(&mut events) => {
                if !changed {
                    // The supervisor is gone: the periodic recheck is all there is.
                    events = None;
                }
            }
        }
        let dir = dir.clone();
        let Ok(declared) = tokio::task::spawn_blocking(move || declared(&dir)).await else {
            continue;
        };
        let wanted = targets(&declared, &supervisor.status().await);
        // A task that ended by itself (its instance went away under a scrape) is restarted
        // if its target is still wanted.
        running.retain(|id, (target, stop)| wanted.get(id) == Some(target) && !stop.is_closed());
        if let Ok(mut health) = scrapes.health.lock() {
            health.retain(|id, _| wanted.contains_key(id));
        }
        for (id, target) in wanted {
            if running.contains_key(&id) {
                continue;
            }
            let (stop, stopped) = oneshot::channel();
            tokio::spawn(scrape_loop(
                id.clone(),
                target.clone(),
                store.clone(),
                scrapes.clone(),
                Reporter {
                    announce: announce.clone(),
                    events: events_log.clone(),
                    still_serving: still_serving.clone(),
                },
                stopped,
            ));
            running.insert(id, (target, stop));
        }
    }
}

/// Waits for the supervisor's next instance event, then takes every event already queued
/// (up to [`EVENT_BATCH`]). False when the stream is closed (or there is none); a lagged
/// stream counts as a change, since events were missed.
async fn next_change(events: &mut Option<broadcast::Receiver<SupervisorEvent>>) -> bool {
    let Some(receiver) = events else {
        return std::future::pending().await;
    };
    if matches!(
        receiver.recv().await,
        Err(broadcast::error::RecvError::Closed)
    ) {
        return false;
    }
    for _ in 0..EVENT_BATCH {
        match receiver.try_recv() {
            Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(broadcast::error::TryRecvError::Empty) => break,
            Err(broadcast::error::TryRecvError::Closed) => return false,
        }
    }
    true
}

/// Where a target's failures and recoveries are told: the log (and a foreground terminal),
/// and the event log.
#[derive(Clone)]
struct Reporter {
    announce: Announce,
    events: Option<kiln_state::StateHandle>,
    still_serving: StillServing,
}

impl Reporter {
    async fn report(&self, target: &Target, kind: &str, message: String, error: Option<&str>) {
        (self.announce)(&Event::Note {
            message: message.clone(),
        });
        let Some(events) = &self.events else {
            return;
        };
        let event = kiln_state::NewEvent {
            kind: kind.to_owned(),
            address: Some(format!("services.{}", target.service)),
            serial: None,
            message,
            data: serde_json::json!({
                "url": target.url(),
                "instance": target.instance,
                "error": error,
            }),
        };
        let _ = events.call(move |s| s.append_event(&event)).await;
    }
}

/// Scrape configs of the recorded services, by supervisor name.
fn declared(dir: &Path) -> BTreeMap<String, ScrapeConfig> {
    let Ok(store) = ops::open_store(dir) else {
        return BTreeMap::new();
    };
    let Ok(records) = store.resources() else {
        return BTreeMap::new();
    };
    records
        .iter()
        .filter(|r| r.kind == "service")
        .filter_map(|r| {
            let config = ScrapeConfig::from_attribute(r.attributes.get("metrics")?)?;
            Some((kiln_providers::supervisor_name(&r.address), config))
        })
        .collect()
}

/// How long a target waits for its first scrape: until the next time the wall clock, counted
/// in intervals, reaches the target's own phase, a hash of its id. Stable, so a restarted
/// control plane keeps each target's phase (Prometheus's scrape offsets work the same way).
fn first_scrape_delay(id: &str, interval: Duration, now_ms: i64) -> Duration {
    let interval_ms = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    // FNV-1a: a hash fixed across builds and runs.
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let phase = hash % interval_ms;
    let now_in_interval = now_ms.unsigned_abs() % interval_ms;
    Duration::from_millis((phase + interval_ms - now_in_interval) % interval_ms)
}

/// Scrapes one target until `stop` fires (or its sender is dropped), or a scrape fails
/// because its instance is no longer ready on its port; then marks its series stale.
async fn scrape_loop(
    id: String,
    target: Target,
    store: Arc<Store>,
    scrapes: Arc<Scrapes>,
    reporter: Reporter,
    mut stop: oneshot::Receiver<()>,
) {
    // Each target at its own phase of the interval, as Prometheus spreads them: targets found
    // together (a service's replicas) would otherwise all scrape, and ingest, at once.
    let delay = first_scrape_delay(&id, target.config.interval, crate::metrics::now_ms());
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + delay, target.config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cache = target.cache();
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        // Boxed: the connection, request and body of one scrape live for that scrape only,
        // not in every idle target's loop.
        let (report, kept) = Box::pin(turn(
            &id, &target, &store, &scrapes, &reporter, cache, &mut stop,
        ))
        .await;
        cache = kept;
        let Some(report) = report else {
            break;
        };
        let stats = &scrapes.stats;
        stats.scrapes.fetch_add(1, Ordering::Relaxed);
        match &report.error {
            None => {
                stats
                    .samples
                    .fetch_add(report.samples as u64, Ordering::Relaxed);
                if last_error.is_some() {
                    let message = format!("{id}: metrics scrape of {} recovered", target.url());
                    // Boxed like the scrape: a report's state is not the idle loop's.
                    Box::pin(reporter.report(&target, "scrape.recovered", message, None)).await;
                }
            }
            Some(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                if last_error.as_deref() != Some(e) {
                    let message = format!("{id}: metrics scrape of {} failed: {e}", target.url());
                    // Boxed like the scrape: a report's state is not the idle loop's.
                    Box::pin(reporter.report(&target, "scrape.failed", message, Some(e))).await;
                }
            }
        }
        last_error.clone_from(&report.error);
        if let Ok(mut health) = scrapes.health.lock() {
            health.insert(
                id.clone(),
                Health {
                    target: target.clone(),
                    last_scrape_ms: report.t,
                    last_duration: report.duration,
                    last_error: report.error,
                },
            );
        }
    }
    let t = crate::metrics::now_ms();
    let stale = f64::from_bits(STALE_NAN_BITS);
    let batch: Vec<(Labels, i64, f64)> = REPORT_SERIES
        .iter()
        .map(|name| (target.series(name), t, stale))
        .collect();
    let _ = tokio::task::spawn_blocking(move || {
        cache.end_all(&store, t);
        store.append_batch(&batch)
    })
    .await;
}

/// One scrape of a target's loop, unless `stop` fires while it fetches or the fetch fails
/// because the instance is no longer ready on its port (then `None`: the loop ends and
/// nothing of this scrape is recorded). Returns the cache for the next scrape.
async fn turn(
    id: &str,
    target: &Target,
    store: &Arc<Store>,
    scrapes: &Arc<Scrapes>,
    reporter: &Reporter,
    cache: TargetCache,
    stop: &mut oneshot::Receiver<()>,
) -> (Option<Report>, TargetCache) {
    let t = crate::metrics::now_ms();
    let started = Instant::now();
    // The instance may go away under the scrape: then the stop wins.
    let fetched = tokio::select! {
        biased;
        _ = stop => return (None, cache),
        fetched = fetch_timed(target) => fetched,
    };
    // A failure because the instance is stopping (its port closed before the supervisor's
    // event came) is not the target's. The recheck that follows the event ends this target,
    // or starts it again if the instance is back on the same port.
    if fetched.is_err() && !(reporter.still_serving)(id.to_owned(), target.port).await {
        return (None, cache);
    }
    let (report, cache) = record(target, store, scrapes, cache, t, started, fetched).await;
    (Some(report), cache)
}

/// Series kiln writes about each scrape.
const REPORT_SERIES: [&str; 3] = ["up", "scrape_duration_seconds", "scrape_samples_scraped"];

/// What one scrape did.
#[derive(Debug, Clone)]
pub struct Report {
    /// When it started (ms since the epoch).
    pub t: i64,
    /// How long it took.
    pub duration: Duration,
    /// Samples it returned (0 when it failed).
    pub samples: usize,
    /// Why it failed.
    pub error: Option<String>,
}

/// Scrapes `target` once and records the samples and the report series. `cache` knows the
/// series of the last scrape; those missing now are marked stale (all of them when the scrape
/// fails). Returns the cache for the next scrape.
pub async fn scrape_once(
    target: &Target,
    store: &Arc<Store>,
    scrapes: &Arc<Scrapes>,
    cache: TargetCache,
) -> (Report, TargetCache) {
    let t = crate::metrics::now_ms();
    let started = Instant::now();
    let fetched = fetch_timed(target).await;
    record(target, store, scrapes, cache, t, started, fetched).await
}

/// Fetches `target`'s exposition within its scrape timeout.
async fn fetch_timed(target: &Target) -> Result<(Bytes, Format), ScrapeError> {
    match tokio::time::timeout(target.config.timeout, fetch(target)).await {
        Ok(result) => result,
        Err(_) => Err(ScrapeError::Timeout(target.config.timeout)),
    }
}

/// Records what a scrape started at `t` (`started` on the monotonic clock) fetched: its
/// samples, or the end of every series the target had; and the report series.
async fn record(
    target: &Target,
    store: &Arc<Store>,
    scrapes: &Arc<Scrapes>,
    mut cache: TargetCache,
    t: i64,
    started: Instant,
    fetched: Result<(Bytes, Format), ScrapeError>,
) -> (Report, TargetCache) {
    let ingested = match fetched {
        Ok((body, format)) => {
            let (store, sample_limit) = (store.clone(), target.config.sample_limit);
            let scrapes = scrapes.clone();
            let ingest = tokio::task::spawn_blocking(move || {
                let result = cache.ingest(&store, &body, format, t, sample_limit);
                if let Ok(ingested) = &result {
                    scrapes.note_families(&ingested.families);
                }
                (result.map(|i| i.samples).map_err(ScrapeError::from), cache)
            });
            match ingest.await {
                Ok(done) => done,
                // The task panicked and took the cache with it: start again from nothing.
                Err(e) => (Err(ScrapeError::Body(e.to_string())), target.cache()),
            }
        }
        Err(e) => (Err(e), cache),
    };
    let (result, mut cache) = ingested;
    let duration = started.elapsed();
    let samples = *result.as_ref().unwrap_or(&0);
    let batch = vec![
        (
            target.series("up"),
            t,
            if result.is_ok() { 1.0 } else { 0.0 },
        ),
        (
            target.series("scrape_duration_seconds"),
            t,
            duration.as_secs_f64(),
        ),
        (target.series("scrape_samples_scraped"), t, samples as f64),
    ];
    let failed = result.is_err();
    let store = store.clone();
    let recorded = tokio::task::spawn_blocking(move || {
        if failed {
            // Like Prometheus: a failed scrape ends every series the target had.
            cache.end_all(&store, t);
        }
        store.append_batch(&batch);
        cache
    })
    .await;
    let report = Report {
        t,
        duration,
        samples,
        error: result.err().map(|e| e.to_string()),
    };
    (report, recorded.unwrap_or_else(|_| target.cache()))
}

/// Aborts a spawned connection task when the scrape is done or cancelled by its timeout.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn fetch(target: &Target) -> Result<(Bytes, Format), ScrapeError> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", target.port))
        .await
        .map_err(|e| ScrapeError::Connect(e.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ScrapeError::Connect(e.to_string()))?;
    let _connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let request = hyper::Request::builder()
        .uri(&target.config.path)
        .header("host", format!("127.0.0.1:{}", target.port))
        .header("accept", ACCEPT)
        .header("user-agent", concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .header(
            "x-prometheus-scrape-timeout-seconds",
            target.config.timeout.as_secs_f64().to_string(),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| ScrapeError::Connect(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ScrapeError::Body(e.to_string()))?;
    if response.status() != hyper::StatusCode::OK {
        return Err(ScrapeError::Status(response.status().as_u16()));
    }
    let format = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map_or(Format::Prometheus, Format::from_content_type);
    let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| ScrapeError::Body(e.to_string()))?
        .to_bytes();
    Ok((body, format))
}

#[cfg(test)]
mod tests;
