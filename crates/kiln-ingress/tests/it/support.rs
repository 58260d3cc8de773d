//! Test helpers: upstream servers, a proxy on an OS-chosen port, and request shortcuts.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kiln_ingress::{
    BackendSet, Endpoint, HostMatch, Ingress, IngressConfig, IngressHandle, Route, RouteTable,
};
use tokio::net::TcpListener;

pub type Reply = Response<Full<Bytes>>;

/// Serves `handler` on a fresh port (HTTP/1.1 with upgrades) for the rest of the test.
pub async fn serve_fn<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// An upstream counting its hits that answers `status` with its name as the body and echoes
/// what it received in `echo-*` headers (`echo-path` and one per request header).
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

pub async fn upstream(name: &'static str) -> Upstream {
    upstream_with_status(name, StatusCode::OK).await
}

pub async fn upstream_with_status(name: &'static str, status: StatusCode) -> Upstream {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let addr = serve_fn(move |req: Request<Incoming>| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut reply = Response::builder()
                .status(status)
                .header("x-upstream", name);
            reply = reply.header("echo-path", req.uri().to_string());
            for (k, v) in req.headers() {
                reply = reply.header(format!("echo-{k}"), v.clone());
            }
            // Read the whole body so body limits are exercised.
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().len())
                .unwrap_or(0);
            reply
                .header("echo-body-len", body.to_string())
                .body(Full::new(Bytes::from(name)))
                .unwrap()
        }
    })
    .await;
    Upstream { addr, hits }
}

/// A port nothing listens on (bound, then released).
pub async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

pub fn set(name: &str, weight: u32, addrs: &[SocketAddr]) -> BackendSet {
    BackendSet {
        name: name.into(),
        weight,
        endpoints: addrs
            .iter()
            .enumerate()
            .map(|(i, a)| Endpoint::new(format!("{name}-{i}-{}", a.port()), *a))
            .collect(),
    }
}

pub fn route(name: &str, host: &str, prefix: &str, addrs: &[SocketAddr]) -> Route {
    Route::new(
        name,
        HostMatch::parse(host),
        prefix,
        vec![set("stable", 1, addrs)],
    )
}

pub fn table(routes: Vec<Route>) -> RouteTable {
    RouteTable::new(routes).unwrap()
}

/// An ingress serving `routes` on a fresh port.
pub async fn proxy(routes: Vec<Route>) -> (IngressHandle, SocketAddr) {
    proxy_with(IngressConfig::default(), routes).await
}

/// An ingress with `config` serving `routes` on a fresh port.
pub async fn proxy_with(config: IngressConfig, routes: Vec<Route>) -> (IngressHandle, SocketAddr) {
    let handle = Ingress::new(config);
    handle.swap(table(routes));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = handle.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    (handle, addr)
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

pub async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> Answer {
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub fn request(
    method: &str,
    proxy: SocketAddr,
    host: &str,
    path: &str,
) -> hyper::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(format!("http://{proxy}{path}"))
        .header("host", host)
}

pub async fn get(client: &TestClient, proxy: SocketAddr, host: &str, path: &str) -> Answer {
    send(
        client,
        request("GET", proxy, host, path)
            .body(Full::default())
            .unwrap(),
    )
    .await
}

/// Polls `condition` until it holds or `deadline` passes; returns whether it held.
pub async fn eventually(deadline: Duration, condition: impl Fn() -> bool) -> bool {
    let start = tokio::time::Instant::now();
    while start.elapsed() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    condition()
}
