//! Behaviour of the `exec` provider, running real commands with `sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic

use std::path::Path;
use std::time::{Duration, Instant};

use kiln_engine::provider::{
    Applied, Attributes, Observation, Provider, ProviderContext, ProviderError, Recorded,
};
use kiln_providers::ExecProvider;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde_json::{Value, json};

const ADDRESS: &str = "resources.job";

fn context(root: &Path) -> ProviderContext {
    ProviderContext::new(root.to_path_buf(), "teststack".into())
}

fn attrs(value: Value) -> Attributes {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn recorded(attributes: &Attributes, applied: &Applied) -> Recorded {
    Recorded {
        address: ADDRESS.into(),
        kind: "exec".into(),
        attributes: attributes.clone(),
        outputs: applied.outputs.clone(),
        private: applied.private.clone(),
    }
}

async fn create(root: &Path, desired: Value) -> Result<Applied, ProviderError> {
    ExecProvider::new()
        .create(&context(root), "exec", ADDRESS, &attrs(desired))
        .await
}

fn outputs(applied: &Applied) -> Value {
    Value::Object(applied.outputs.clone())
}

fn message(error: &ProviderError) -> &str {
    match error {
        ProviderError::Failed { message } | ProviderError::Partial { message } => message,
        ProviderError::UnknownKind { .. } => panic!("unexpected {error:?}"),
    }
}

#[tokio::test]
async fn json_stdout_becomes_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let applied = create(
        dir.path(),
        json!({ "create": "echo '{\"id\": \"abc\", \"n\": 3}'" }),
    )
    .await
    .unwrap();
    assert_eq!(outputs(&applied), json!({ "id": "abc", "n": 3 }));
}

#[tokio::test]
async fn plain_stdout_becomes_the_stdout_output() {
    let dir = tempfile::tempdir().unwrap();
    let applied = create(dir.path(), json!({ "create": "echo '  hello '; echo" }))
        .await
        .unwrap();
    assert_eq!(outputs(&applied), json!({ "stdout": "hello" }));
}

#[tokio::test]
async fn shell_form_uses_a_shell_and_argv_form_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let shell = create(dir.path(), json!({ "create": "echo $((1 + 2))" }))
        .await
        .unwrap();
    assert_eq!(outputs(&shell), json!({ "stdout": "3" }));

    let argv = create(
        dir.path(),
        json!({ "create": ["printf", "%s", "$((1 + 2)); echo injected"] }),
    )
    .await
    .unwrap();
    assert_eq!(
        outputs(&argv),
        json!({ "stdout": "$((1 + 2)); echo injected" })
    );
}

#[tokio::test]
async fn env_input_address_and_stack_reach_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"printf '%s|%s|%s|%s|%s' "$GREETING" "$KILN_INPUT" "$KILN_ADDRESS" "$KILN_STACK" "${KILN_OUTPUTS-unset}""#;
    let applied = create(
        dir.path(),
        json!({
            "create": script,
            "env": { "GREETING": "hi there", "COUNT": 2 },
            "input": { "x": [1, 2] },
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        outputs(&applied),
        json!({ "stdout": "hi there|{\"x\":[1,2]}|resources.job|teststack|unset" })
    );

    let no_input = create(dir.path(), json!({ "create": "printf %s \"$KILN_INPUT\"" }))
        .await
        .unwrap();
    assert_eq!(outputs(&no_input), json!({ "stdout": "null" }));
}

#[tokio::test]
async fn workdir_is_relative_to_root_and_defaults_to_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let root = dir.path().canonicalize().unwrap();
    let in_sub = create(&root, json!({ "create": "pwd -P", "workdir": "sub" }))
        .await
        .unwrap();
    assert_eq!(
        outputs(&in_sub),
        json!({ "stdout": root.join("sub").to_string_lossy() })
    );
    let in_root = create(&root, json!({ "create": "pwd -P" })).await.unwrap();
    assert_eq!(
        outputs(&in_root),
        json!({ "stdout": root.to_string_lossy() })
    );
}

#[tokio::test]
async fn non_zero_exit_is_partial_with_the_stderr_tail() {
    let dir = tempfile::tempdir().unwrap();
    let script = "echo to-stdout; for i in $(seq 1 30); do echo line$i >&2; done; exit 3";
    let error = create(dir.path(), json!({ "create": script }))
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::Partial { .. }), "{error:?}");
    let text = message(&error);
    assert!(text.contains("exit code 3"), "{text}");
    assert!(text.contains("for i in"), "names the command: {text}");
    assert!(text.contains("stderr (last 20 lines)"), "{text}");
    assert!(text.lines().any(|l| l == "line11"), "{text}");
    assert!(text.lines().any(|l| l == "line30"), "{text}");
    assert!(!text.lines().any(|l| l == "line10"), "{text}");
    assert!(!text.lines().any(|l| l == "to-stdout"), "{text}");
}

#[tokio::test]
async fn stdout_is_quoted_when_stderr_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let error = create(dir.path(), json!({ "create": "echo oops; exit 1" }))
        .await
        .unwrap_err();
    let text = message(&error);
    assert!(text.contains("stdout (last 20 lines):\noops"), "{text}");
}

#[tokio::test]
async fn death_by_signal_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let error = create(dir.path(), json!({ "create": "kill -KILL $$" }))
        .await
        .unwrap_err();
    assert!(message(&error).contains("signal SIGKILL"), "{error}");
}

#[tokio::test]
async fn a_command_that_cannot_start_is_failed() {
    let dir = tempfile::tempdir().unwrap();
    let error = create(
        dir.path(),
        json!({ "create": ["/nonexistent/program", "x"] }),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, ProviderError::Failed { .. }), "{error:?}");
    assert!(message(&error).contains("/nonexistent/program"), "{error}");
}

/// Whether `pid` no longer runs: gone, or a zombie nobody has reaped yet (the container's
/// init may not reap orphans).
fn is_dead(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return true;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the parenthesised command name.
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
}

/// Polls until `pid` is dead, for at most three seconds.
fn wait_dead(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if is_dead(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    is_dead(pid)
}

/// Reads the pid a command wrote, polling briefly since the write races the kill.
fn read_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no pid written to {path:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn assert_timeout_kills_grandchild(script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let error = create(dir.path(), json!({ "create": script, "timeout": 300 }))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
    assert!(matches!(error, ProviderError::Partial { .. }), "{error:?}");
    assert!(
        message(&error).contains("timed out after 300 ms"),
        "{error}"
    );
    assert!(message(&error).contains("started"), "stderr tail: {error}");
    let pid = read_pid(&dir.path().join("grandchild.pid"));
    assert!(wait_dead(pid), "grandchild {pid} survived");
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    assert_timeout_kills_grandchild(
        "sleep 100 & echo $! > grandchild.pid; echo started >&2; sleep 100",
    )
    .await;
}

#[tokio::test]
async fn timeout_kills_a_grandchild_that_ignores_sigterm() {
    // The leader dies on SIGTERM at once; the grandchild only goes with the SIGKILL that
    // follows.
    assert_timeout_kills_grandchild(
        "(trap '' TERM; sleep 100) & echo $! > grandchild.pid; echo started >&2; sleep 100",
    )
    .await;
}

#[tokio::test]
async fn abandoning_a_run_kills_its_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let script = "sleep 100 & echo $! > grandchild.pid; sleep 100";
    let run =
        tokio::spawn(
            async move { create(&root, json!({ "create": script, "timeout": 60_000 })).await },
        );
    let pid_file = dir.path().join("grandchild.pid");
    let deadline = Instant::now() + Duration::from_secs(3);
    while std::fs::metadata(&pid_file).map_or(true, |m| m.len() == 0) {
        assert!(Instant::now() < deadline, "the command never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The engine cancels an apply by dropping the future; the commands must not outlive it.
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    let pid = read_pid(&pid_file);
    assert!(wait_dead(pid), "grandchild {pid} survived");
}

#[tokio::test]
async fn destroy_gets_the_recorded_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let provider = ExecProvider::new();
    let desired = attrs(json!({
        "create": "echo '{\"id\": \"42\"}'",
        "destroy": "printf '%s' \"$KILN_OUTPUTS\" > destroyed.json",
    }));
    let applied = provider
        .create(&ctx, "exec", ADDRESS, &desired)
        .await
        .unwrap();
    let mut rec = recorded(&desired, &applied);
    // The destroy command may have been sensitive: state then holds only its digest.
    rec.attributes.insert(
        "destroy".into(),
        json!(format!("sha256:{}", "a".repeat(64))),
    );
    provider.delete(&ctx, &rec).await.unwrap();
    let written = std::fs::read_to_string(dir.path().join("destroyed.json")).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&written).unwrap(),
        json!({ "id": "42" })
    );
}

#[tokio::test]
async fn delete_without_destroy_succeeds_and_failed_destroy_is_failed() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let provider = ExecProvider::new();
    let plain = attrs(json!({ "create": "true" }));
    let applied = provider
        .create(&ctx, "exec", ADDRESS, &plain)
        .await
        .unwrap();
    provider
        .delete(&ctx, &recorded(&plain, &applied))
        .await
        .unwrap();

    let failing = attrs(json!({ "create": "true", "destroy": "echo nope >&2; exit 2" }));
    let applied = provider
        .create(&ctx, "exec", ADDRESS, &failing)
        .await
        .unwrap();
    let error = provider
        .delete(&ctx, &recorded(&failing, &applied))
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::Failed { .. }), "{error:?}");
    assert!(message(&error).contains("nope"), "{error}");
}

#[tokio::test]
async fn update_command_gets_previous_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let provider = ExecProvider::new();
    let first = attrs(json!({
        "create": "echo '{\"v\": 1}'",
        "update": "printf '{\"v\": 2, \"was\": %s}' \"$KILN_OUTPUTS\"",
    }));
    let applied = provider
        .create(&ctx, "exec", ADDRESS, &first)
        .await
        .unwrap();
    let mut second = first.clone();
    second.insert("input".into(), json!("changed"));
    let updated = provider
        .update(&ctx, &recorded(&first, &applied), &second)
        .await
        .unwrap();
    assert_eq!(outputs(&updated), json!({ "v": 2, "was": { "v": 1 } }));
}

#[tokio::test]
async fn update_without_update_command_destroys_then_creates() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let provider = ExecProvider::new();
    let first = attrs(json!({
        "create": "echo create-$KILN_INPUT >> log; echo one",
        "destroy": "echo destroy-$KILN_INPUT >> log",
        "input": 1,
    }));
    let applied = provider
        .create(&ctx, "exec", ADDRESS, &first)
        .await
        .unwrap();
    let mut second = first.clone();
    second.insert("input".into(), json!(2));
    let updated = provider
        .update(&ctx, &recorded(&first, &applied), &second)
        .await
        .unwrap();
    assert_eq!(outputs(&updated), json!({ "stdout": "one" }));
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert_eq!(log, "create-1\ndestroy-1\ncreate-2\n");
}

#[tokio::test]
async fn observe_finds_no_drift() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let desired = attrs(json!({ "create": "true" }));
    let applied = ExecProvider::new()
        .create(&ctx, "exec", ADDRESS, &desired)
        .await
        .unwrap();
    let observation = ExecProvider::new()
        .observe(&ctx, &recorded(&desired, &applied))
        .await
        .unwrap();
    assert_eq!(observation, Observation::Present { drift: vec![] });
}

#[tokio::test]
async fn builtin_providers_cover_every_kind() {
    let kinds: Vec<&str> = kiln_providers::builtin_providers(None, None)
        .iter()
        .flat_map(|p| p.kinds().iter().copied())
        .collect();
    assert_eq!(kinds, ["file", "exec", "service", "route"]);
}
