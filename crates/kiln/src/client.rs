//! The command line's side of the control plane's API: HTTP/1.1 over the Unix socket.

use std::path::Path;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::ops::Failure;

/// The socket of a running control plane, if one answers. A socket that accepts connections
/// while the process in `kiln.pid` beside it is gone is not trusted: after a SIGKILL, a child
/// caught between fork and exec can hold the listening socket open for a moment, and nothing
/// would ever answer on it.
pub async fn connect(socket: &Path) -> Option<UnixStream> {
    let pidfile = socket.with_file_name("kiln.pid");
    let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    if !crate::ops::process_alive(pid) || is_zombie(pid) {
        return None;
    }
    UnixStream::connect(socket).await.ok()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(") ")
            .next()
            .is_some_and(|rest| rest.starts_with('Z'))
    })
}

/// Sends a request and calls `on_line` for every line of the response body as it arrives.
/// Returns the status code.
pub async fn request_lines(
    stream: UnixStream,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
    mut on_line: impl FnMut(&str),
) -> Result<u16, Failure> {
    let io = TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(api_error)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "kiln")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .map_err(api_error)?;
    let response = sender.send_request(request).await.map_err(api_error)?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(api_error)?;
        if let Some(chunk) = frame.data_ref() {
            pending.extend_from_slice(chunk);
            while let Some(newline) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=newline).collect();
                on_line(String::from_utf8_lossy(&line).trim_end());
            }
        }
    }
    if !pending.is_empty() {
        on_line(String::from_utf8_lossy(&pending).trim_end());
    }
    Ok(status)
}

/// Sends a request and returns the whole JSON response.
pub async fn request_json(
    stream: UnixStream,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, serde_json::Value), Failure> {
    let mut text = String::new();
    let status = request_lines(stream, method, path, body, |line| {
        text.push_str(line);
        text.push('\n');
    })
    .await?;
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Ok((status, json))
}

fn api_error(e: impl std::fmt::Display) -> Failure {
    Failure::State(format!("the control plane's API failed: {e}"))
}
