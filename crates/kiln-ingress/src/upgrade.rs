//! WebSocket pass-through: the client's upgrade request is forwarded with its
//! `Connection: upgrade` / `Upgrade: websocket` pair restored; when the upstream answers 101,
//! the client gets a 101 too and a task copies bytes both ways between the two upgraded
//! connections until either side closes.

use hyper::body::Incoming;
use hyper::header;
use hyper::http::request::Parts;
use hyper::upgrade::OnUpgrade;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::body::ProxyBody;
use crate::headers;
use crate::proxy::empty_response;

/// Takes the client connection's pending upgrade when the request asks for a WebSocket.
pub(crate) fn take_client_upgrade(parts: &mut Parts) -> Option<OnUpgrade> {
    if headers::is_websocket_upgrade(&parts.headers) {
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    }
}

/// Answers the client's upgrade with the upstream's 101 and splices the two connections.
pub(crate) fn tunnel(mut upstream: Response<Incoming>, client: OnUpgrade) -> Response<ProxyBody> {
    let upstream_upgrade = hyper::upgrade::on(&mut upstream);
    let mut response = empty_response(StatusCode::SWITCHING_PROTOCOLS);
    for (name, value) in upstream.headers() {
        // Keep the handshake's answer (Sec-WebSocket-Accept, -Protocol, -Extensions); the
        // connection-level pair is set below, hop-by-hop ones stay behind.
        if name != header::CONNECTION
            && name != header::UPGRADE
            && name != header::TRANSFER_ENCODING
        {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    headers::restore_websocket_upgrade(response.headers_mut());
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream_upgrade) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "websocket upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(%error, "websocket tunnel closed with an error");
        }
    });
    response
}
