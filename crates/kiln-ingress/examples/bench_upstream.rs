//! A minimal upstream for load tests: answers every request with 200 and a fixed body.
//!
//! `cargo run --release -p kiln-ingress --example bench_upstream -- 127.0.0.1:9001 [BODY_BYTES]`

use std::convert::Infallible;
use std::error::Error;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let size: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(13);
    let body = Bytes::from(vec![b'x'; size]);
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("bench_upstream on {addr}, {size}-byte bodies");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
