//! The Prometheus API on TCP (`kiln up --api-listen 127.0.0.1:9090`), so `promtool query` and
//! Grafana's Prometheus data source can read kiln's metrics. Only loopback addresses are
//! accepted (the token travels in clear over plain HTTP), and every request must carry
//! `Authorization: Bearer <token>` with the token kept in `.kiln/api-token` (mode 0600,
//! created on first use and kept across restarts so a configured data source keeps working).
//! HTTP basic auth with the token as the password (any user name) is accepted too: clients
//! without bearer support, like Debian's promtool 2.42, can then put it in the URL
//! (`http://kiln:TOKEN@127.0.0.1:PORT`).

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ops::Failure;

/// The token file under `.kiln/`.
pub const TOKEN_FILE: &str = "api-token";

/// Binds `addr` (loopback only) and loads or creates the token.
pub async fn bind(
    addr: SocketAddr,
    kiln_dir: &Path,
) -> Result<(tokio::net::TcpListener, Arc<str>), Failure> {
    if !addr.ip().is_loopback() {
        return Err(Failure::Refused(format!(
            "--api-listen {addr}: only loopback addresses (127.0.0.1, ::1) are served; the token would cross the network in clear"
        )));
    }
    let token = token(kiln_dir)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::State(format!("cannot listen on {addr} for the API: {e}")))?;
    Ok((listener, token))
}

/// Reads `.kiln/api-token`, or writes a new random one (owner-only).
fn token(kiln_dir: &Path) -> Result<Arc<str>, Failure> {
    let path = kiln_dir.join(TOKEN_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let text = text.trim();
        if text.len() >= 32 {
            return Ok(Arc::from(text));
        }
    }
    let fail = |e: std::io::Error| Failure::State(format!("cannot write {}: {e}", path.display()));
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(fail)?;
    let token = hex::encode(bytes);
    std::fs::create_dir_all(kiln_dir).map_err(fail)?;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(fail)?;
    std::fs::rename(&tmp, &path).map_err(fail)?;
    Ok(Arc::from(token))
}

/// Equal in time independent of where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Standard base64 with padding (what HTTP basic auth uses).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        let produced = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&n.to_be_bytes()[1..=produced]);
    }
    Some(out)
}

async fn require_token(State(token): State<Arc<str>>, request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let given: Option<Vec<u8>> = if let Some(bearer) = header.strip_prefix("Bearer ") {
        Some(bearer.trim().as_bytes().to_vec())
    } else if let Some(basic) = header.strip_prefix("Basic ") {
        base64_decode(basic.trim()).and_then(|pair| {
            let colon = pair.iter().position(|b| *b == b':')?;
            Some(pair[colon + 1..].to_vec())
        })
    } else {
        None
    };
    match given {
        Some(given) if constant_time_eq(&given, token.as_bytes()) => next.run(request).await,
        _ => (
            axum::http::StatusCode::UNAUTHORIZED,
            [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({
                "status": "error",
                "errorType": "unauthorized",
                "error": "this API needs `Authorization: Bearer <token>` with the token in .kiln/api-token",
            })),
        )
            .into_response(),
    }
}

/// Serves `router` behind the token until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, token: Arc<str>, router: axum::Router) {
    let router = router.layer(axum::middleware::from_fn_with_state(token, require_token));
    let _ = axum::serve(listener, router).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_content_only() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn basic_auth_decodes() {
        assert_eq!(base64_decode("a2lsbjpzZWNyZXQ=").unwrap(), b"kiln:secret");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert!(base64_decode("a").is_none());
        assert!(base64_decode("a$==").is_none());
    }

    #[test]
    fn the_token_is_owner_only_and_kept_across_restarts() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let first = token(dir.path()).unwrap();
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(token(dir.path()).unwrap(), first);
    }
}
