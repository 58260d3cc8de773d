//! Delivering notifications: an HTTP POST of the Alertmanager v4 JSON (`webhook:`) or of a
//! Slack `{"text": ...}` (`slack:`), or a program run with the JSON on its stdin (`command:`,
//! in the stack's directory). Each attempt is bounded; retries are `kiln_alerts`'s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use kiln_alerts::{Notification, TransportFuture};
use kiln_spec::alerting::{ReceiverDecl, ReceiverKind};
use tokio::io::AsyncWriteExt;

/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends over HTTP or through a command.
#[derive(Debug)]
pub struct Transport {
    dir: PathBuf,
}

impl Transport {
    /// Commands run in `dir`.
    pub fn new(dir: &Path) -> Transport {
        Transport {
            dir: dir.to_path_buf(),
        }
    }
}

impl kiln_alerts::Transport for Transport {
    fn send<'a>(
        &'a self,
        receiver: &'a ReceiverDecl,
        notification: &'a Notification,
    ) -> TransportFuture<'a> {
        Box::pin(async move {
            let attempt = async {
                match &receiver.kind {
                    ReceiverKind::Webhook { url } => post(url, &notification.payload).await,
                    ReceiverKind::Slack { url } => {
                        post(url, &kiln_alerts::slack_payload(&notification.payload)).await
                    }
                    ReceiverKind::Command { argv } => {
                        run(&self.dir, argv, &notification.payload).await
                    }
                }
            };
            tokio::time::timeout(ATTEMPT_TIMEOUT, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()))
                })
        })
    }
}

/// POSTs JSON to an `http://` URL; any 2xx is success.
async fn post(url: &str, body: &serde_json::Value) -> Result<(), String> {
    let status = request(url, "POST", Some(body)).await?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("{url}: HTTP {status}"))
    }
}

/// Sends one HTTP/1.1 request (with a JSON body when given) to an `http://` URL and returns
/// the status; runbooks' `http` steps use it too. Unbounded: callers put a timeout around it.
pub(crate) async fn request(
    url: &str,
    method: &str,
    body: Option<&serde_json::Value>,
) -> Result<u16, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let stream = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority)
        .header("user-agent", concat!("kiln/", env!("CARGO_PKG_VERSION")));
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let request = builder
        .body(Full::new(Bytes::from(
            body.map(ToString::to_string).unwrap_or_default(),
        )))
        .map_err(|e| format!("{url}: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Ok(status)
}

/// Runs the program with the payload on stdin; exit status 0 is success.
async fn run(dir: &Path, argv: &[String], payload: &serde_json::Value) -> Result<(), String> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| "empty command".to_owned())?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A program that does not read its input is fine.
        let _ = stdin.write_all(payload.to_string().as_bytes()).await;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!(
            "{program} exited with {}: {}",
            output.status,
            stderr.trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_alerts::Transport as _;

    fn notification() -> Notification {
        Notification {
            receiver: "r".into(),
            group_key: "{}:{}".into(),
            status: kiln_alerts::NotifyStatus::Firing,
            payload: serde_json::json!({ "version": "4", "alerts": [] }),
        }
    }

    #[tokio::test]
    async fn a_command_gets_the_payload_on_stdin() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let transport = Transport::new(dir.path());
        let receiver = ReceiverDecl {
            name: "script".into(),
            kind: ReceiverKind::Command {
                argv: vec!["sh".into(), "-c".into(), "cat > got.json".into()],
            },
        };
        transport.send(&receiver, &notification()).await?;
        let got =
            std::fs::read_to_string(dir.path().join("got.json")).map_err(|e| e.to_string())?;
        assert_eq!(got, r#"{"version":"4","alerts":[]}"#);
        let failing = ReceiverDecl {
            name: "bad".into(),
            kind: ReceiverKind::Command {
                argv: vec!["sh".into(), "-c".into(), "echo nope >&2; exit 3".into()],
            },
        };
        let err = transport.send(&failing, &notification()).await;
        assert!(err.as_ref().is_err_and(|e| e.contains("nope")), "{err:?}");
        Ok(())
    }

    #[tokio::test]
    async fn a_webhook_that_refuses_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0");
        let port = listener
            .as_ref()
            .map(|l| l.local_addr().map(|a| a.port()).unwrap_or(0))
            .unwrap_or(0);
        drop(listener);
        let err = post(
            &format!("http://127.0.0.1:{port}/hook"),
            &serde_json::json!({}),
        )
        .await;
        assert!(err.is_err());
        assert!(
            post("https://example.invalid/", &serde_json::json!({}))
                .await
                .is_err()
        );
    }
}
