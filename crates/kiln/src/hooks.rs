//! The ways a push reaches the control plane besides polling:
//!
//! - `POST /hooks/github` on `kiln up --hooks-listen ADDR`: GitHub push webhooks, verified with
//!   `source.webhook.secret` (the checks themselves are pure, in `kiln_delivery::webhook`);
//! - the `post-receive` hook kiln installs in a local bare repository it follows, which runs
//!   `kiln notify-push`: that command sends each pushed ref to `POST /v1/push` on the control
//!   plane's socket.

use std::net::SocketAddr;
use std::path::Path;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kiln_delivery::webhook::{self, Delivery, PayloadError};
use tokio::sync::watch;

use crate::delivery::DeliveryHandle;
use crate::ops::Failure;

/// GitHub caps payloads at 25 MB; a push payload kiln uses is far smaller.
const BODY_LIMIT: usize = 1024 * 1024;
/// A push whose head commit is older than this is refused as a replay. Generous, because the
/// head commit's time is when it was made, not when it was pushed.
const MAX_AGE_SECONDS: u64 = 7 * 24 * 3600;
/// Marks the hook kiln wrote, so it may rewrite its own and never a user's.
const HOOK_MARKER: &str = "# installed by kiln: notifies the control plane of pushes";

#[derive(Clone)]
struct Hooks {
    secret: std::sync::Arc<Vec<u8>>,
    delivery: DeliveryHandle,
}

/// Binds the webhook listener.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Failure> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::State(format!("cannot listen for webhooks on {addr}: {e}")))
}

/// Serves `POST /hooks/github` until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    secret: String,
    delivery: DeliveryHandle,
    mut stop: watch::Receiver<bool>,
) {
    let router = Router::new()
        .route("/hooks/github", post(github))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(Hooks {
            secret: std::sync::Arc::new(secret.into_bytes()),
            delivery,
        });
    let _ = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
}

fn reply(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "message": message.into() })),
    )
        .into_response()
}

async fn github(State(hooks): State<Hooks>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // The signature first: nothing about an unsigned delivery is worth answering.
    if let Err(why) = webhook::verify_signature(&hooks.secret, &body, header("x-hub-signature-256"))
    {
        return reply(StatusCode::UNAUTHORIZED, why.to_string());
    }
    match header("x-github-event") {
        Some("ping") => return reply(StatusCode::OK, "pong"),
        Some("push") => {}
        other => {
            return reply(
                StatusCode::ACCEPTED,
                format!("ignored: event {} is not a push", other.unwrap_or("(none)")),
            );
        }
    }
    let push = match webhook::parse_push(&body, jiff::Timestamp::now(), MAX_AGE_SECONDS) {
        Ok(Delivery::Push(push)) => push,
        Ok(Delivery::Deleted) => return reply(StatusCode::ACCEPTED, "ignored: branch deleted"),
        Err(e @ PayloadError::Stale { .. }) => {
            return reply(StatusCode::BAD_REQUEST, e.to_string());
        }
        Err(e) => return reply(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let delivery = header("x-github-delivery").map(str::to_owned);
    match hooks.delivery.webhook(delivery, push).await {
        Some(true) => reply(StatusCode::ACCEPTED, "queued"),
        Some(false) => reply(StatusCode::OK, "duplicate delivery: already received"),
        None => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "the control plane is shutting down",
        ),
    }
}

/// What installing the `post-receive` hook did.
#[derive(Debug, PartialEq, Eq)]
pub enum HookInstall {
    /// Not a bare repository: nothing to install (polling follows it).
    NotBare,
    /// Written (or rewritten: it was kiln's).
    Installed(std::path::PathBuf),
    /// Already there as it should be.
    Unchanged(std::path::PathBuf),
    /// The user has a hook of their own there; it was left alone.
    UserHook(std::path::PathBuf, String),
}

/// Installs `hooks/post-receive` in the bare repository `repo`, running `kiln notify-push`
/// for the stack in `dir`. Idempotent; a hook kiln did not write is never overwritten.
pub fn install_post_receive(repo: &Path, dir: &Path, exe: &Path) -> Result<HookInstall, String> {
    let bare = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "--is-bare-repository"])
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !bare.status.success() || String::from_utf8_lossy(&bare.stdout).trim() != "true" {
        return Ok(HookInstall::NotBare);
    }
    let dir = std::fs::canonicalize(dir).map_err(|e| e.to_string())?;
    let line = format!(
        "exec {} -C {} notify-push",
        shell_quote(&exe.display().to_string()),
        shell_quote(&dir.display().to_string())
    );
    let script = format!("#!/bin/sh\n{HOOK_MARKER}\n{line}\n");
    let path = repo.join("hooks").join("post-receive");
    match std::fs::read_to_string(&path) {
        Ok(existing) if existing == script => return Ok(HookInstall::Unchanged(path)),
        Ok(existing) if !existing.contains(HOOK_MARKER) => {
            return Ok(HookInstall::UserHook(path, line.replacen("exec ", "", 1)));
        }
        _ => {}
    }
    std::fs::create_dir_all(repo.join("hooks")).map_err(|e| e.to_string())?;
    std::fs::write(&path, script).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mode: std::fs::Permissions = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&path, mode)
        .map_err(|e| format!("cannot make {} executable: {e}", path.display()))?;
    Ok(HookInstall::Installed(path))
}

/// `'it'\''s'`: safe inside `sh`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// `kiln notify-push`: reads `post-receive`'s lines (`<old> <new> <ref>`) from stdin and sends
/// each to the control plane. A push must never fail because kiln is down, so this only warns.
pub async fn notify_push(dir: &Path) -> Result<(), Failure> {
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
        .map_err(|e| Failure::State(format!("cannot read the pushed refs: {e}")))?;
    let paths = crate::daemon::Paths::new(dir);
    for line in input.lines() {
        let mut parts = line.split_whitespace();
        let (Some(before), Some(after), Some(git_ref)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if after.bytes().all(|b| b == b'0') {
            continue;
        }
        let push = kiln_delivery::Push {
            git_ref: git_ref.to_owned(),
            before: (!before.bytes().all(|b| b == b'0')).then(|| before.to_owned()),
            after: after.to_owned(),
            changed: None,
            source: "hook".into(),
        };
        let Some(stream) = crate::client::connect(&paths.socket).await else {
            eprintln!(
                "kiln: the control plane for {} is not running; it will see this push when it starts",
                dir.display()
            );
            return Ok(());
        };
        let body = serde_json::to_value(&push).unwrap_or_default();
        match crate::client::request_json(stream, "POST", "/v1/push", Some(body)).await {
            Ok((202, _)) => eprintln!(
                "kiln: {git_ref} → {} handed to the control plane",
                after.get(..12).unwrap_or(after)
            ),
            Ok((status, answer)) => {
                eprintln!("kiln: the control plane answered {status}: {answer}")
            }
            Err(failure) => eprintln!("kiln: {}", failure.message()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_is_installed_once_and_a_users_hook_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let repo = tmp.path().join("app.git");
        let init = std::process::Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(&repo)
            .status();
        assert!(init.is_ok_and(|s| s.success()));
        let exe = Path::new("/usr/local/bin/kiln");
        let installed = install_post_receive(&repo, tmp.path(), exe);
        let hook = repo.join("hooks/post-receive");
        assert_eq!(installed, Ok(HookInstall::Installed(hook.clone())));
        let script = std::fs::read_to_string(&hook).unwrap_or_default();
        assert!(script.contains("'/usr/local/bin/kiln' -C '"), "{script}");
        assert!(script.ends_with("' notify-push\n"), "{script}");
        assert_eq!(
            install_post_receive(&repo, tmp.path(), exe),
            Ok(HookInstall::Unchanged(hook.clone()))
        );
        // kiln's own hook, from another binary path: rewritten.
        let moved = install_post_receive(&repo, tmp.path(), Path::new("/opt/kiln"));
        assert_eq!(moved, Ok(HookInstall::Installed(hook.clone())));
        let mine = "#!/bin/sh\nmail -s pushed team@example.invalid\n";
        std::fs::write(&hook, mine).unwrap_or_else(|e| panic!("{e}"));
        let left = install_post_receive(&repo, tmp.path(), exe);
        assert!(
            matches!(&left, Ok(HookInstall::UserHook(path, line)) if *path == hook && line.ends_with("notify-push")),
            "{left:?}"
        );
        assert_eq!(std::fs::read_to_string(&hook).unwrap_or_default(), mine);
        // Not a bare repository: nothing to install.
        assert_eq!(
            install_post_receive(tmp.path(), tmp.path(), exe),
            Ok(HookInstall::NotBare)
        );
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
    }
}
