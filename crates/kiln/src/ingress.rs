//! The control plane's ingress: one actor owns the routes declared by the stack and rebuilds the
//! proxy's route table whenever a route or a service instance changes (an instance serves only
//! while it is ready), then swaps it in atomically; requests in flight finish where they started.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kiln_engine::provider::{ProviderError, ProviderFuture};
use kiln_ingress::{
    BackendSet, Endpoint, HostMatch, Ingress, IngressConfig, IngressHandle, Route, RouteTable,
};
use kiln_providers::{RouteSink, RouteSpec};
use kiln_supervisor::{InstanceState, SupervisorHandle};
use tokio::sync::{mpsc, oneshot};

use crate::ops::Failure;

#[derive(Debug)]
enum Msg {
    Set(RouteSpec, oneshot::Sender<Result<(), String>>),
    Remove(String, oneshot::Sender<()>),
}

/// The ingress as the route provider sees it.
#[derive(Clone, Debug)]
pub struct Routes {
    messages: mpsc::Sender<Msg>,
    served: Arc<RwLock<BTreeSet<String>>>,
    address: SocketAddr,
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
/// route actor.
pub async fn start(
    listen: SocketAddr,
    tls: Option<&kiln_spec::IngressTls>,
    supervisor: SupervisorHandle,
) -> Result<Running, Failure> {
    // Checked before binding, so a bad key pair never leaves a port half-open.
    let tls = tls
        .map(crate::tls::settings)
        .transpose()
        .map_err(|d| Failure::Invalid(format!("the ingress cannot serve TLS: {}", d.message)))?;
    let handle = Ingress::new(IngressConfig::default());
    // One serving thread per core, each with its own runtime, listener and upstream pools: a
    // request never changes threads (see `serve_per_core`). The threads end after shutdown.
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let (address, _threads) = handle
        .serve_per_core(listen, threads, tls)
        .map_err(|e| Failure::State(format!("the ingress cannot listen on {listen}: {e}")))?;
    let (messages, inbox) = mpsc::channel(64);
    let served = Arc::new(RwLock::new(BTreeSet::new()));
    tokio::spawn(run(inbox, handle.clone(), supervisor, served.clone()));
    Ok(Running {
        address,
        handle,
        routes: Routes {
            messages,
            served,
            address,
        },
    })
}

async fn run(
    mut inbox: mpsc::Receiver<Msg>,
    ingress: IngressHandle,
    supervisor: SupervisorHandle,
    served: Arc<RwLock<BTreeSet<String>>>,
) {
    let mut events = supervisor.subscribe();
    let mut routes: BTreeMap<String, RouteSpec> = BTreeMap::new();
    loop {
        tokio::select! {
            message = inbox.recv() => match message {
                None => return,
                Some(Msg::Set(spec, reply)) => {
                    let mut next = routes.clone();
                    next.insert(spec.address.clone(), spec);
                    match table(&next, &supervisor).await {
                        Ok(t) => {
                            ingress.swap(t);
                            routes = next;
                            let _ = reply.send(Ok(()));
                        }
                        Err(why) => {
                            let _ = reply.send(Err(why));
                        }
                    }
                }
                Some(Msg::Remove(address, reply)) => {
                    routes.remove(&address);
                    if let Ok(t) = table(&routes, &supervisor).await {
                        ingress.swap(t);
                    }
                    let _ = reply.send(());
                }
            },
            event = events.recv() => {
                if matches!(event, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    return;
                }
                // Any instance change may change who serves: rebuild (a lagged stream too).
                if let Ok(t) = table(&routes, &supervisor).await {
                    ingress.swap(t);
                }
            }
        }
        if let Ok(mut set) = served.write() {
            *set = routes.keys().cloned().collect();
        }
    }
}

/// The proxy's table: each route's endpoints are its service's ready instances.
async fn table(
    routes: &BTreeMap<String, RouteSpec>,
    supervisor: &SupervisorHandle,
) -> Result<RouteTable, String> {
    let instances = supervisor.status().await;
    let mut out = Vec::with_capacity(routes.len());
    for spec in routes.values() {
        let endpoints: Vec<Endpoint> = instances
            .iter()
            .filter(|i| i.id.service == spec.service && i.state == InstanceState::Ready)
            .filter_map(|i| {
                i.port
                    .map(|p| Endpoint::new(i.id.to_string(), SocketAddr::from(([127, 0, 0, 1], p))))
            })
            .collect();
        let set = BackendSet {
            name: "stable".into(),
            weight: 1,
            endpoints,
        };
        let mut route = Route::new(
            spec.address.clone(),
            HostMatch::parse(&spec.host),
            spec.path.clone(),
            vec![set],
        );
        route.strip_prefix = spec.strip_prefix;
        if let Some(ms) = spec.timeout_ms {
            route.timeouts.request = Duration::from_millis(ms);
        }
        route.max_body_bytes = spec.max_body;
        route.request_headers = spec.request_headers.clone();
        route.response_headers = spec.response_headers.clone();
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

impl RouteSink for Routes {
    fn set(&self, route: RouteSpec) -> ProviderFuture<'_, String> {
        Box::pin(async move {
            let host = if route.host.contains('*') {
                "localhost".to_owned()
            } else {
                route.host.clone()
            };
            let url = format!("http://{host}:{}{}", self.address.port(), route.path);
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
        self.served.read().is_ok_and(|s| s.contains(address))
    }
}
