//! The control plane's ingress: one actor owns the routes declared by the stack and rebuilds the
//! proxy's route table whenever a route or a service instance changes (an instance serves only
//! while it is ready), then swaps it in atomically; requests in flight finish where they started.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kiln_deploy::{SetStats, Split, Traffic, TrafficFuture};
use kiln_engine::provider::{ProviderError, ProviderFuture};
use kiln_ingress::{
    BackendSet, Endpoint, HostMatch, Ingress, IngressConfig, IngressHandle, LATENCY_BOUNDS,
    Maintenance, Route, RouteTable,
};
use kiln_providers::{RouteSink, RouteSpec};
use kiln_supervisor::{InstanceState, InstanceStatus, SupervisorHandle, service_of};
use tokio::sync::{mpsc, oneshot};

use crate::ops::Failure;

#[derive(Debug)]
enum Msg {
    Set(RouteSpec, oneshot::Sender<Result<(), String>>),
    Remove(String, oneshot::Sender<()>),
    /// Which sets serve a service (from the deploy engine).
    Split(String, Split, oneshot::Sender<()>),
    /// Instances to take out of rotation before they are stopped.
    Drain(Vec<String>, oneshot::Sender<()>),
    /// One instance of a service to take out of rotation (a runbook's `drain`), unless that
    /// leaves the service without a ready instance in rotation: its full id, or why not.
    Cordon {
        service: String,
        instance: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Back into rotation (a runbook's `undrain`, or a drained instance restarted): its id.
    Uncordon {
        service: String,
        instance: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// A maintenance page for a route (by address), or none: kept across table rebuilds, and
    /// for a route not declared yet (a page restored before the first apply).
    Maintenance(String, Option<Maintenance>, oneshot::Sender<()>),
    /// A stable address for a service (its own listener), created once.
    Expose(String, oneshot::Sender<Result<SocketAddr, String>>),
    Unexpose(String, oneshot::Sender<()>),
}

/// The ingress as the route provider sees it.
#[derive(Clone, Debug)]
pub struct Routes {
    messages: mpsc::Sender<Msg>,
    served: Arc<RwLock<Served>>,
    address: SocketAddr,
    /// `https` when the listener terminates TLS: the scheme of the URLs routes report.
    scheme: &'static str,
    ingress: IngressHandle,
}

/// Every proxy the actor feeds: the ingress's, and one per exposed service.
#[derive(Clone, Debug, Default)]
struct Proxies(Arc<RwLock<Vec<IngressHandle>>>);

impl Proxies {
    fn all(&self) -> Vec<IngressHandle> {
        self.0.read().map(|p| p.clone()).unwrap_or_default()
    }
}

/// What the actor publishes for lock-free reads: route addresses, and which route serves
/// which service.
#[derive(Debug, Default)]
struct Served {
    routes: BTreeSet<String>,
    /// Route address → service.
    services: BTreeMap<String, String>,
    /// Every proxy's handle, for draining.
    proxies: Proxies,
}

/// A running ingress: the proxy, its address, and the sink the route provider writes to.
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub address: SocketAddr,
    /// The proxy, for metrics and shutdown.
    pub handle: IngressHandle,
    /// What the route provider talks to.
    pub routes: Routes,
}

/// Binds the listener (terminating TLS when `tls` is given) and starts the proxy and the
/// route actor. Without `listen` (a stack without routes) only the actor runs: it still gives
/// services their stable addresses.
pub async fn start(
    listen: Option<SocketAddr>,
    tls: Option<&kiln_spec::IngressTls>,
    limits: kiln_spec::IngressLimits,
    supervisor: SupervisorHandle,
    kiln_dir: &std::path::Path,
) -> Result<Running, Failure> {
    // Checked before binding, so a bad key pair never leaves a port half-open.
    let scheme = if tls.is_some() { "https" } else { "http" };
    let tls = tls
        .map(crate::tls::settings)
        .transpose()
        .map_err(|d| Failure::Invalid(format!("the ingress cannot serve TLS: {}", d.message)))?;
    let handle = Ingress::new(ingress_config(limits));
    let address = match listen {
        Some(listen) => {
            // One serving thread per core, each with its own runtime and upstream pools, fed
            // connections from one listener by load: a request never changes threads (see
            // `serve_per_core`). The threads end after shutdown.
            let threads = std::thread::available_parallelism().map_or(1, usize::from);
            let (address, _threads) = handle.serve_per_core(listen, threads, tls).map_err(|e| {
                Failure::State(format!("the ingress cannot listen on {listen}: {e}"))
            })?;
            address
        }
        None => SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let (messages, inbox) = mpsc::channel(64);
    let served = Arc::new(RwLock::new(Served::default()));
    if let Ok(mut s) = served.write() {
        s.proxies = Proxies(Arc::new(RwLock::new(vec![handle.clone()])));
    }
    let vips = VipPorts::load(kiln_dir.join("service-ports.json"));
    tokio::spawn(run(inbox, handle.clone(), supervisor, served.clone(), vips));
    Ok(Running {
        address,
        handle: handle.clone(),
        routes: Routes {
            messages,
            served,
            address,
            scheme,
            ingress: handle,
        },
    })
}

/// The actor's state: declared routes, each service's split, instances being drained, and
/// the services' own listeners.
#[derive(Debug, Default)]
struct Desired {
    routes: BTreeMap<String, RouteSpec>,
    splits: BTreeMap<String, Split>,
    draining: BTreeSet<String>,
    vips: BTreeMap<String, Vip>,
    /// Route address → the page it answers with (owned by `maintenance.rs`, mirrored here).
    maintenance: BTreeMap<String, Maintenance>,
}

/// A service's stable address: a proxy of its own over all its ready instances, so that
/// `services.api.url` stays the same across deploys, restarts and scaling (like a
/// Kubernetes Service's cluster IP).
#[derive(Debug)]
struct Vip {
    address: SocketAddr,
    handle: IngressHandle,
}

/// The ports of the services' addresses, kept in a file so that they survive a restart of
/// the control plane (dependents read them from their environment).
#[derive(Debug)]
struct VipPorts {
    path: std::path::PathBuf,
    ports: BTreeMap<String, u16>,
}

impl VipPorts {
    fn load(path: std::path::PathBuf) -> VipPorts {
        let ports = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        VipPorts { path, ports }
    }

    fn save(&self) {
        if let Ok(text) = serde_json::to_string_pretty(&self.ports) {
            // Lost ports only mean new ones next time.
            let _ = crate::kiln_dir::write_private(&self.path, text.as_bytes());
        }
    }
}

/// Binds a service's address: its previous port when it is free, else a new one.
async fn expose(
    service: &str,
    ports: &mut VipPorts,
) -> Result<(SocketAddr, IngressHandle), String> {
    let previous = ports.ports.get(service).copied();
    let mut listener = None;
    if let Some(port) = previous {
        listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .ok();
    }
    let listener = match listener {
        Some(l) => l,
        None => tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| format!("cannot bind an address for {service}: {e}"))?,
    };
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let handle = Ingress::new(IngressConfig::default());
    let server = handle.clone();
    tokio::spawn(async move { server.serve(listener).await });
    ports.ports.insert(service.to_owned(), address.port());
    ports.save();
    Ok((address, handle))
}

/// The catch-all route of a service's own listener.
fn vip_route(service: &str) -> RouteSpec {
    RouteSpec {
        address: format!("services.{service}"),
        host: "*".into(),
        path: "/".into(),
        service: service.to_owned(),
        strip_prefix: false,
        timeout_ms: None,
        body_timeout_ms: None,
        idle_timeout_ms: None,
        tunnel_timeout_ms: None,
        max_body: None,
        request_headers: Vec::new(),
        response_headers: Vec::new(),
    }
}

async fn run(
    mut inbox: mpsc::Receiver<Msg>,
    ingress: IngressHandle,
    supervisor: SupervisorHandle,
    served: Arc<RwLock<Served>>,
    mut vip_ports: VipPorts,
) {
    let mut events = supervisor.subscribe();
    let mut desired = Desired::default();
    loop {
        tokio::select! {
            message = inbox.recv() => match message {
                None => return,
                Some(Msg::Set(spec, reply)) => {
                    let mut routes = desired.routes.clone();
                    routes.insert(spec.address.clone(), spec);
                    match table(&routes, &desired, &supervisor).await {
                        Ok(t) => {
                            ingress.swap(t);
                            desired.routes = routes;
                            let _ = reply.send(Ok(()));
                        }
                        Err(why) => {
                            let _ = reply.send(Err(why));
                        }
                    }
                }
                Some(Msg::Remove(address, reply)) => {
                    desired.routes.remove(&address);
                    rebuild(&mut desired, &ingress, &supervisor).await;
                    let _ = reply.send(());
                }
                Some(Msg::Split(service, split, reply)) => {
                    if split == Split::All {
                        desired.splits.remove(&service);
                    } else {
                        desired.splits.insert(service, split);
                    }
                    rebuild(&mut desired, &ingress, &supervisor).await;
                    let _ = reply.send(());
                }
                Some(Msg::Drain(ids, reply)) => {
                    take_out_of_rotation(&mut desired, &ingress, ids);
                    let _ = reply.send(());
                }
                Some(Msg::Cordon { service, instance, reply }) => {
                    let instances = supervisor.status().await;
                    let chosen = cordon_target(&service, &instance, &instances, &desired.draining);
                    if let Ok(id) = &chosen {
                        take_out_of_rotation(&mut desired, &ingress, vec![id.clone()]);
                    }
                    let _ = reply.send(chosen);
                }
                Some(Msg::Uncordon { service, instance, reply }) => {
                    let instances = supervisor.status().await;
                    let chosen = find_instance(&service, &instance, &instances);
                    if let Ok(id) = &chosen {
                        desired.draining.remove(id);
                        rebuild(&mut desired, &ingress, &supervisor).await;
                    }
                    let _ = reply.send(chosen);
                }
                Some(Msg::Maintenance(route, page, reply)) => {
                    match page {
                        Some(page) => desired.maintenance.insert(route, page),
                        None => desired.maintenance.remove(&route),
                    };
                    rebuild(&mut desired, &ingress, &supervisor).await;
                    let _ = reply.send(());
                }
                Some(Msg::Expose(service, reply)) => {
                    if let Some(vip) = desired.vips.get(&service) {
                        let _ = reply.send(Ok(vip.address));
                        continue;
                    }
                    match expose(&service, &mut vip_ports).await {
                        Ok((address, handle)) => {
                            desired.vips.insert(service, Vip { address, handle });
                            publish_proxies(&served, &ingress, &desired);
                            rebuild(&mut desired, &ingress, &supervisor).await;
                            let _ = reply.send(Ok(address));
                        }
                        Err(why) => {
                            let _ = reply.send(Err(why));
                        }
                    }
                }
                Some(Msg::Unexpose(service, reply)) => {
                    if let Some(vip) = desired.vips.remove(&service) {
                        vip.handle.shutdown(Duration::from_secs(5)).await;
                        vip_ports.ports.remove(&service);
                        vip_ports.save();
                        publish_proxies(&served, &ingress, &desired);
                    }
                    let _ = reply.send(());
                }
            },
            event = events.recv() => {
                if matches!(event, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    return;
                }
                // Any instance change may change who serves: rebuild (a lagged stream too).
                rebuild(&mut desired, &ingress, &supervisor).await;
            }
        }
        if let Ok(mut shared) = served.write() {
            shared.routes = desired.routes.keys().cloned().collect();
            shared.services = desired
                .routes
                .iter()
                .map(|(address, spec)| (address.clone(), spec.service.clone()))
                .collect();
        }
    }
}

/// Instances keep their place in every proxy's table (so their requests in flight stay
/// visible) but get no new requests.
fn take_out_of_rotation(desired: &mut Desired, ingress: &IngressHandle, ids: Vec<String>) {
    for proxy in std::iter::once(ingress).chain(desired.vips.values().map(|v| &v.handle)) {
        for id in &ids {
            proxy.set_endpoint_ready(id, false);
        }
    }
    desired.draining.extend(ids);
}

/// The instance of `service` that `instance` names (`1`, `api/1`, `api@1a2b3c4d/1`): its
/// full id. During a deploy two sets may have an instance with that number; then the set
/// must be named.
fn find_instance(
    service: &str,
    instance: &str,
    instances: &[InstanceStatus],
) -> Result<String, String> {
    let Some((prefix, index)) = kiln_spec::runbooks::parse_instance(instance) else {
        return Err(format!("`{instance}` does not name an instance"));
    };
    let of_service: Vec<&InstanceStatus> = instances
        .iter()
        .filter(|i| service_of(&i.id.service) == service)
        .collect();
    let matching: Vec<String> = of_service
        .iter()
        .filter(|i| {
            i.id.instance == index && prefix.is_none_or(|p| p == service || p == i.id.service)
        })
        .map(|i| i.id.to_string())
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.clone()),
        [] => {
            let known: Vec<String> = of_service.iter().map(|i| i.id.to_string()).collect();
            Err(if known.is_empty() {
                format!("no instance of {service} is running")
            } else {
                format!(
                    "{service} has no instance {instance} (its instances: {})",
                    known.join(", ")
                )
            })
        }
        many => Err(format!(
            "`{instance}` could be any of {} (a deploy of {service} is under way): name the set, e.g. `{}`",
            many.join(", "),
            many[0]
        )),
    }
}

/// [`find_instance`], refused unless it is ready and another ready instance of the service
/// stays in rotation (the blast-radius guard of a drain). Draining an instance already out
/// of rotation changes nothing and is allowed.
fn cordon_target(
    service: &str,
    instance: &str,
    instances: &[InstanceStatus],
    draining: &BTreeSet<String>,
) -> Result<String, String> {
    let id = find_instance(service, instance, instances)?;
    if draining.contains(&id) {
        return Ok(id);
    }
    let ready_in_rotation: Vec<String> = instances
        .iter()
        .filter(|i| service_of(&i.id.service) == service && i.state == InstanceState::Ready)
        .map(|i| i.id.to_string())
        .filter(|i| !draining.contains(i))
        .collect();
    if !ready_in_rotation.contains(&id) {
        return Err(format!("{id} is not ready: it has no traffic to drain"));
    }
    if ready_in_rotation.len() < 2 {
        return Err(format!(
            "refused: draining {id} would leave {service} with no ready instance in rotation \
             (blast-radius guard); scale {service} up or undrain another instance first"
        ));
    }
    Ok(id)
}

fn publish_proxies(served: &RwLock<Served>, ingress: &IngressHandle, desired: &Desired) {
    let mut all = vec![ingress.clone()];
    all.extend(desired.vips.values().map(|v| v.handle.clone()));
    if let Ok(s) = served.read()
        && let Ok(mut proxies) = s.proxies.0.write()
    {
        *proxies = all;
    }
}

/// Rebuilds and swaps the table. Every ready instance is marked ready in the proxy unless it
/// is being drained; a drained instance that is no longer ready is forgotten (a later one may
/// take its id, and must not inherit its mark).
async fn rebuild(desired: &mut Desired, ingress: &IngressHandle, supervisor: &SupervisorHandle) {
    let instances = supervisor.status().await;
    let present: BTreeSet<String> = instances
        .iter()
        .filter(|i| i.state == InstanceState::Ready)
        .map(|i| i.id.to_string())
        .collect();
    desired.draining.retain(|id| present.contains(id));
    let mark = |proxy: &IngressHandle| {
        for id in &present {
            proxy.set_endpoint_ready(id, !desired.draining.contains(id));
        }
    };
    if let Ok(t) = build(&desired.routes, desired, &instances) {
        ingress.swap(t);
        mark(ingress);
    }
    for (service, vip) in &desired.vips {
        let routes = BTreeMap::from([(service.clone(), vip_route(service))]);
        if let Ok(t) = build(&routes, desired, &instances) {
            vip.handle.swap(t);
            mark(&vip.handle);
        }
    }
}

/// The proxy's table from the current instances.
async fn table(
    routes: &BTreeMap<String, RouteSpec>,
    desired: &Desired,
    supervisor: &SupervisorHandle,
) -> Result<RouteTable, String> {
    let instances = supervisor.status().await;
    build(routes, desired, &instances)
}

/// Each route's endpoints are its service's ready instances: all of them evenly, or, while a
/// deploy splits the service, one weighted backend set per instance set.
fn build(
    routes: &BTreeMap<String, RouteSpec>,
    desired: &Desired,
    instances: &[InstanceStatus],
) -> Result<RouteTable, String> {
    let endpoints_of = |matches: &dyn Fn(&str) -> bool| -> Vec<Endpoint> {
        instances
            .iter()
            .filter(|i| matches(&i.id.service) && i.state == InstanceState::Ready)
            .filter_map(|i| {
                i.port
                    .map(|p| Endpoint::new(i.id.to_string(), SocketAddr::from(([127, 0, 0, 1], p))))
            })
            .collect()
    };
    let mut out = Vec::with_capacity(routes.len());
    for spec in routes.values() {
        let (sets, sticky) = match desired.splits.get(&spec.service) {
            Some(Split::Weighted { sets, sticky }) => (
                sets.iter()
                    .map(|(set, weight)| BackendSet {
                        name: set.clone(),
                        weight: *weight,
                        endpoints: endpoints_of(&|s| s == set),
                    })
                    .collect(),
                *sticky,
            ),
            _ => (
                vec![BackendSet {
                    name: STABLE.into(),
                    weight: 1,
                    endpoints: endpoints_of(&|s| service_of(s) == spec.service),
                }],
                false,
            ),
        };
        let mut route = Route::new(
            spec.address.clone(),
            HostMatch::parse(&spec.host),
            spec.path.clone(),
            sets,
        );
        if sticky {
            route.sticky_cookie = Some(format!("kiln-{}", spec.service));
        }
        route.strip_prefix = spec.strip_prefix;
        let timeouts = &mut route.timeouts;
        for (ms, slot) in [
            (spec.timeout_ms, &mut timeouts.request),
            (spec.body_timeout_ms, &mut timeouts.body),
            (spec.idle_timeout_ms, &mut timeouts.idle),
            (spec.tunnel_timeout_ms, &mut timeouts.tunnel),
        ] {
            if let Some(ms) = ms {
                *slot = Duration::from_millis(ms);
            }
        }
        route.max_body_bytes = spec.max_body;
        route.request_headers = spec.request_headers.clone();
        route.response_headers = spec.response_headers.clone();
        route.maintenance = desired.maintenance.get(&spec.address).cloned();
        out.push(route);
    }
    RouteTable::new(out).map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// The ingress's settings: `ingress:`'s limits on clients over the defaults.
fn ingress_config(limits: kiln_spec::IngressLimits) -> IngressConfig {
    let mut config = IngressConfig::default();
    for (ms, slot) in [
        (limits.header_timeout_ms, &mut config.header_read_timeout),
        (limits.idle_timeout_ms, &mut config.idle_timeout),
        (limits.send_timeout_ms, &mut config.send_timeout),
    ] {
        if let Some(ms) = ms {
            *slot = Duration::from_millis(ms);
        }
    }
    if let Some(max) = limits.max_connections {
        config.max_connections = usize::try_from(max).unwrap_or(usize::MAX);
    }
    config
}

/// The backend set's name when a service is not split.
const STABLE: &str = "stable";

impl Routes {
    /// The traffic of every proxy: the ingress's routes and the services' own addresses
    /// (route `services.<name>`), so service-to-service requests are measured too.
    pub fn traffic(&self) -> kiln_ingress::MetricsSnapshot {
        let proxies = self
            .served
            .read()
            .map(|s| s.proxies.all())
            .unwrap_or_default();
        let mut merged = kiln_ingress::MetricsSnapshot::default();
        for proxy in proxies {
            let snapshot = proxy.metrics();
            merged.sets.extend(snapshot.sets);
            merged.unmatched_requests += snapshot.unmatched_requests;
            merged.connections_closed.add(&snapshot.connections_closed);
        }
        merged
    }

    /// Takes one instance of `service` out of rotation (a runbook's `drain`); refused when
    /// it would leave the service no ready instance in rotation. Returns its full id.
    pub async fn cordon(&self, service: &str, instance: &str) -> Result<String, String> {
        let (service, instance) = (service.to_owned(), instance.to_owned());
        self.ask_result(|reply| Msg::Cordon {
            service,
            instance,
            reply,
        })
        .await
    }

    /// Puts a maintenance page on the route at `address`, or takes it off (`None`); the
    /// table is swapped before this returns.
    pub async fn set_maintenance(&self, address: &str, page: Option<Maintenance>) {
        let address = address.to_owned();
        self.ask(|reply| Msg::Maintenance(address, page, reply))
            .await;
    }

    /// The declared routes: address → service.
    pub fn served_routes(&self) -> BTreeMap<String, String> {
        self.served
            .read()
            .map(|s| s.services.clone())
            .unwrap_or_default()
    }

    /// Puts an instance back into rotation (it serves again if it is ready).
    pub async fn uncordon(&self, service: &str, instance: &str) -> Result<String, String> {
        let (service, instance) = (service.to_owned(), instance.to_owned());
        self.ask_result(|reply| Msg::Uncordon {
            service,
            instance,
            reply,
        })
        .await
    }

    /// Waits until no proxy has a request in flight to `ids`, at most `deadline`; returns
    /// how many were still in flight then (0: all finished).
    pub async fn wait_idle(&self, ids: &BTreeSet<String>, deadline: Duration) -> u64 {
        // Poll the lock-free endpoint counters: requests in flight finish on their own
        // time, and nothing signals their end.
        let until = tokio::time::Instant::now() + deadline;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let proxies = self
            .served
            .read()
            .map(|s| s.proxies.all())
            .unwrap_or_else(|_| vec![self.ingress.clone()]);
        let in_flight = || -> u64 {
            proxies
                .iter()
                .flat_map(|proxy| proxy.endpoint_health())
                .filter(|e| ids.contains(&e.id))
                .map(|e| e.in_flight)
                .sum()
        };
        loop {
            tick.tick().await;
            let busy = in_flight();
            if busy == 0 || tokio::time::Instant::now() >= until {
                return busy;
            }
        }
    }

    async fn ask_result<T>(
        &self,
        message: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Msg,
    ) -> Result<T, String> {
        let (reply, answer) = oneshot::channel();
        self.messages
            .send(message(reply))
            .await
            .map_err(|_| "the ingress stopped".to_owned())?;
        answer.await.map_err(|_| "the ingress stopped".to_owned())?
    }

    async fn ask(&self, message: impl FnOnce(oneshot::Sender<()>) -> Msg) {
        let (reply, answer) = oneshot::channel();
        if self.messages.send(message(reply)).await.is_ok() {
            let _ = answer.await;
        }
    }
}

impl Traffic for Routes {
    fn split(&self, service: &str, split: Split) -> TrafficFuture<'_, ()> {
        let service = service.to_owned();
        Box::pin(async move { self.ask(|reply| Msg::Split(service, split, reply)).await })
    }

    fn drain(&self, instances: Vec<String>, deadline: Duration) -> TrafficFuture<'_, ()> {
        Box::pin(async move {
            let ids: BTreeSet<String> = instances.iter().cloned().collect();
            self.ask(|reply| Msg::Drain(instances, reply)).await;
            self.wait_idle(&ids, deadline).await;
        })
    }

    fn stats(&self, service: &str) -> TrafficFuture<'_, BTreeMap<String, SetStats>> {
        let service = service.to_owned();
        Box::pin(async move {
            let mut routes: BTreeSet<String> = self.served.read().map_or_else(
                |_| BTreeSet::new(),
                |s| {
                    s.services
                        .iter()
                        .filter(|(_, svc)| **svc == service)
                        .map(|(address, _)| address.clone())
                        .collect()
                },
            );
            // Requests from other services through its own address count too.
            routes.insert(vip_route(&service).address);
            let mut out: BTreeMap<String, SetStats> = BTreeMap::new();
            for set in self.traffic().sets {
                if !routes.contains(&set.route) {
                    continue;
                }
                let entry = out.entry(set.set.clone()).or_default();
                entry.requests += set.requests();
                entry.errors += set.requests_by_class[4];
                entry.ejections += set.ejections;
                let bounds = LATENCY_BOUNDS.iter().copied().chain([f64::INFINITY]);
                if entry.latency.is_empty() {
                    entry.latency = bounds.map(|b| (b, 0)).collect();
                }
                for (slot, count) in entry.latency.iter_mut().zip(&set.latency.counts) {
                    slot.1 += count;
                }
            }
            out
        })
    }

    fn expose(&self, service: &str) -> TrafficFuture<'_, Result<SocketAddr, String>> {
        let service = service.to_owned();
        Box::pin(async move { self.ask_result(|reply| Msg::Expose(service, reply)).await })
    }

    fn unexpose(&self, service: &str) -> TrafficFuture<'_, ()> {
        let service = service.to_owned();
        Box::pin(async move { self.ask(|reply| Msg::Unexpose(service, reply)).await })
    }

    fn routed(&self, service: &str) -> bool {
        self.served
            .read()
            .is_ok_and(|s| s.services.values().any(|svc| svc == service))
    }
}

impl RouteSink for Routes {
    fn set(&self, route: RouteSpec) -> ProviderFuture<'_, String> {
        Box::pin(async move {
            let host = if route.host.contains('*') {
                "localhost".to_owned()
            } else {
                route.host.clone()
            };
            let url = format!(
                "{}://{host}:{}{}",
                self.scheme,
                self.address.port(),
                route.path
            );
            let (reply, answer) = oneshot::channel();
            let gone = || ProviderError::Failed {
                message: "the ingress stopped".into(),
            };
            self.messages
                .send(Msg::Set(route, reply))
                .await
                .map_err(|_| gone())?;
            match answer.await.map_err(|_| gone())? {
                Ok(()) => Ok(url),
                Err(why) => Err(ProviderError::Failed { message: why }),
            }
        })
    }

    fn remove(&self, address: &str) -> ProviderFuture<'_, ()> {
        let address = address.to_owned();
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            if self
                .messages
                .send(Msg::Remove(address, reply))
                .await
                .is_ok()
            {
                let _ = answer.await;
            }
            Ok(())
        })
    }

    fn contains(&self, address: &str) -> bool {
        self.served.read().is_ok_and(|s| s.routes.contains(address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(set: &str, n: u32, state: InstanceState) -> InstanceStatus {
        InstanceStatus {
            id: kiln_supervisor::InstanceId {
                service: set.into(),
                instance: n,
            },
            pid: Some(1),
            start_ticks: None,
            port: Some(4000),
            state,
            health: String::new(),
            restarts: 0,
            uptime: None,
            cpu_seconds: None,
            rss_bytes: None,
            release: String::new(),
            limits_in_force: kiln_supervisor::LimitsInForce::None,
            adopted: false,
        }
    }

    #[test]
    fn an_instance_is_found_by_number_service_or_set() {
        let all = [
            instance("api@aaaa", 0, InstanceState::Ready),
            instance("api@aaaa", 1, InstanceState::Ready),
            instance("web", 1, InstanceState::Ready),
        ];
        for given in ["1", "api/1", "api@aaaa/1"] {
            assert_eq!(find_instance("api", given, &all), Ok("api@aaaa/1".into()));
        }
        let missing = find_instance("api", "2", &all).unwrap_err();
        assert!(missing.contains("api@aaaa/0, api@aaaa/1"), "{missing}");
        assert!(find_instance("api", "web/1", &all).is_err());
        assert!(
            find_instance("db", "0", &all)
                .unwrap_err()
                .contains("no instance of db")
        );
        // Mid-deploy, two sets have an instance 0: the set must be named.
        let deploying = [
            instance("api@aaaa", 0, InstanceState::Ready),
            instance("api@bbbb", 0, InstanceState::Ready),
        ];
        assert!(
            find_instance("api", "0", &deploying)
                .unwrap_err()
                .contains("name the set")
        );
        assert_eq!(
            find_instance("api", "api@bbbb/0", &deploying),
            Ok("api@bbbb/0".into())
        );
    }

    #[test]
    fn a_drain_never_leaves_a_service_without_a_ready_instance_in_rotation() {
        let all = [
            instance("api@aaaa", 0, InstanceState::Ready),
            instance("api@aaaa", 1, InstanceState::Ready),
            instance("api@aaaa", 2, InstanceState::Starting),
        ];
        let none = BTreeSet::new();
        assert_eq!(
            cordon_target("api", "1", &all, &none),
            Ok("api@aaaa/1".into())
        );
        let one_out = BTreeSet::from(["api@aaaa/1".to_owned()]);
        let refused = cordon_target("api", "0", &all, &one_out).unwrap_err();
        assert!(
            refused.contains("no ready instance in rotation"),
            "{refused}"
        );
        // Already out: nothing changes, nothing to refuse.
        assert_eq!(
            cordon_target("api", "1", &all, &one_out),
            Ok("api@aaaa/1".into())
        );
        assert!(
            cordon_target("api", "2", &all, &none)
                .unwrap_err()
                .contains("not ready")
        );
        let single = [instance("api@aaaa", 0, InstanceState::Ready)];
        assert!(cordon_target("api", "0", &single, &none).is_err());
    }
}
