//! TLS termination on a real listener: a certificate made in the test, HTTP/1.1 and HTTP/2
//! chosen by ALPN, X-Forwarded-Proto `https`, and a client that fails its handshake does not
//! stop the listener.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kiln_ingress::{Ingress, IngressConfig, IngressHandle, TlsSettings};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::support::*;

struct Served {
    _handle: IngressHandle,
    addr: SocketAddr,
    cert: CertificateDer<'static>,
}

/// A self-signed certificate for `shop.localhost`, and an ingress routing it to `upstream`.
fn certified_ingress(
    upstream: SocketAddr,
) -> (IngressHandle, TlsSettings, CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["shop.localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let settings =
        TlsSettings::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    let handle = Ingress::new(IngressConfig::default());
    handle.swap(table(vec![route("r", "shop.localhost", "/", &[upstream])]));
    (handle, settings, cert.der().clone())
}

async fn tls_proxy(upstream: SocketAddr) -> Served {
    let (handle, settings, cert) = certified_ingress(upstream);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = handle.clone();
    tokio::spawn(async move { serving.serve_tls(listener, settings).await });
    Served {
        _handle: handle,
        addr,
        cert,
    }
}

async fn connect(served: &Served, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(served.cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(served.addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("shop.localhost").unwrap(), tcp)
        .await
        .unwrap()
}

fn get_request() -> Request<Full<Bytes>> {
    Request::builder()
        .uri("https://shop.localhost/tls?x=1")
        .header("host", "shop.localhost")
        .body(Full::default())
        .unwrap()
}

/// One GET over HTTP/1.1 on `stream`; the sender keeps the connection open.
async fn get_over_http1(
    stream: TlsStream<TcpStream>,
) -> (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    hyper::Response<hyper::body::Incoming>,
) {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(get_request()).await.unwrap();
    (sender, response)
}

#[tokio::test]
async fn http1_over_tls_is_proxied_with_https_forwarded() {
    let up = upstream("api").await;
    let served = tls_proxy(up.addr).await;
    let stream = connect(&served, &[b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (_sender, response) = get_over_http1(stream).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_11);
    assert_eq!(response.headers()["echo-x-forwarded-proto"], "https");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"api");
}

#[tokio::test]
async fn alpn_h2_serves_http2() {
    let up = upstream("api").await;
    let served = tls_proxy(up.addr).await;
    let stream = connect(&served, &[b"h2", b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let response = sender.send_request(get_request()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(response.headers()["echo-x-forwarded-proto"], "https");
        assert_eq!(response.headers()["echo-path"], "/tls?x=1");
    }
}

#[tokio::test]
async fn a_failed_handshake_does_not_stop_the_listener() {
    let up = upstream("api").await;
    let served = tls_proxy(up.addr).await;
    // Plain HTTP to a TLS port, then a client that hangs up mid-handshake.
    let mut plain = TcpStream::connect(served.addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: shop.localhost\r\n\r\n")
        .await
        .unwrap();
    drop(plain);
    let mut half = TcpStream::connect(served.addr).await.unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x00]).await.unwrap();
    drop(half);
    let stream = connect(&served, &[b"http/1.1"]).await;
    let (_sender, response) = get_over_http1(stream).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_serving_terminates_tls_on_every_thread() {
    let up = upstream("api").await;
    let (handle, settings, cert) = certified_ingress(up.addr);
    let (addr, threads) = handle
        .serve_per_core("127.0.0.1:0".parse().unwrap(), 2, Some(settings))
        .unwrap();
    let served = Served {
        _handle: handle.clone(),
        addr,
        cert,
    };
    let mut senders = Vec::new();
    for _ in 0..2 {
        let stream = connect(&served, &[b"http/1.1"]).await;
        let (sender, response) = get_over_http1(stream).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["echo-x-forwarded-proto"], "https");
        senders.push(sender);
    }
    let accepted: Vec<u64> = handle
        .serving_threads()
        .iter()
        .map(|t| t.accepted)
        .collect();
    assert_eq!(accepted, [1, 1]);
    assert!(
        handle
            .shutdown(std::time::Duration::from_secs(10))
            .await
            .drained
    );
    tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| t.join().unwrap()))
        .await
        .unwrap();
}
