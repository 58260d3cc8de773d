//! GitHub's parallel steps, end to end (workflow syntax `jobs.<job_id>.steps[*].background`,
//! `wait`, `wait-all`, `cancel`, `parallel`; the runner's `BackgroundStepCoordinator`).
//!
//! Steps that must run at the same time prove it by waiting for each other's marker files,
//! each wait bounded (a shell loop with a deadline): run one after the other, they would fail.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test helpers may panic: that is how tests fail.

use std::time::{Duration, Instant};

use kiln_pipelines::{RunOptions, Status};
use tempfile::TempDir;

mod common;

use common::{Ran, repo, run_in};

const WF: &str = ".github/workflows/ci.yml";

async fn run_workflow(yaml: &str, tweak: impl FnOnce(&mut RunOptions)) -> Ran {
    let repo = repo(&[(WF, yaml)]);
    let state = TempDir::new().unwrap();
    run_in(repo.path(), state.path(), WF, tweak).await
}

/// Shell that waits (at most 10 s) for `$RUNNER_TEMP/<name>` to exist.
fn await_file(name: &str) -> String {
    format!(
        "for i in $(seq 1 1000); do [ -e \"$RUNNER_TEMP/{name}\" ] && break; sleep 0.01; done; [ -e \"$RUNNER_TEMP/{name}\" ]"
    )
}

/// Only the lines of `logs` that start with one of `prefixes`, in order.
fn lines_starting(logs: &[String], prefixes: &[&str]) -> Vec<String> {
    logs.iter()
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_background_step_runs_beside_the_next_steps_and_its_changes_arrive_at_its_wait() {
    let yaml = format!(
        r###"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    outputs:
      port: ${{{{ steps.server.outputs.port }}}}
    steps:
      - id: server
        name: server
        background: true
        run: |
          {}
          echo "port=8080" >> "$GITHUB_OUTPUT"
          echo "SERVER=up" >> "$GITHUB_ENV"
          echo "/opt/server/bin" >> "$GITHUB_PATH"
          echo "## server" >> "$GITHUB_STEP_SUMMARY"
      - run: |
          echo "before: '${{{{ steps.server.outputs.port }}}}' '${{{{ steps.server.outcome }}}}' '$SERVER'"
          touch "$RUNNER_TEMP/go"
      - wait: server
      - run: |
          echo "after: ${{{{ steps.server.outputs.port }}}} ${{{{ steps.server.outcome }}}} $SERVER"
          case ":$PATH:" in *:/opt/server/bin:*) echo "path: yes";; esac
"###,
        await_file("go")
    );
    let ran = run_workflow(&yaml, |_| {}).await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.logs("a"));
    let logs = ran.logs("a");
    assert_eq!(
        lines_starting(
            &logs,
            &["before", "after", "path", "Waiting", "Finished", "  "]
        ),
        [
            "before: '' '' ''",
            "Waiting for background step(s) to complete: server",
            "Finished waiting for background step(s).",
            "  server: Succeeded",
            "after: 8080 success up",
            "path: yes",
        ]
    );
    let job = ran.job("a");
    assert_eq!(job.outputs["port"], "8080");
    assert_eq!(job.summary, "## server\n");
    // In the order the steps started, as GitHub lists them.
    let names: Vec<&str> = job.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!([names[0], names[2]], ["server", "Wait"], "{names:?}");
}

#[tokio::test]
async fn a_failed_background_step_fails_the_job_at_its_wait_unless_it_may_fail() {
    let ran = run_workflow(
        r###"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - id: flaky
        background: true
        run: exit 3
      - id: soft
        background: true
        continue-on-error: true
        run: exit 4
      - run: echo "meanwhile ${{ job.status }}"
      - wait: soft
      - run: echo "soft ${{ steps.soft.outcome }} ${{ steps.soft.conclusion }} ${{ job.status }}"
      - wait: flaky
      - run: echo never
      - if: failure()
        run: echo "failed at the wait ${{ steps.flaky.outcome }}"
"###,
        |_| {},
    )
    .await;
    assert_eq!(ran.result.status, Status::Failure);
    let logs = ran.logs("a");
    assert_eq!(
        lines_starting(&logs, &["meanwhile", "soft", "never", "failed", "  "]),
        [
            "meanwhile success",
            "  Run exit 4: Succeeded",
            "soft failure success success",
            "  Run exit 3: Failed",
            "failed at the wait failure",
        ]
    );
}

#[tokio::test]
async fn wait_all_and_the_job_s_end_wait_for_every_background_step() {
    let ran = run_workflow(
        r###"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    outputs:
      late: ${{ steps.late.outputs.v }}
    steps:
      - { id: one, name: one, background: true, run: echo one }
      - { id: two, name: two, background: true, run: echo two }
      - wait-all:
      - wait-all: true
      - id: late
        background: true
        run: |
          echo "v=late" >> "$GITHUB_OUTPUT"
          exit 5
  b:
    runs-on: ubuntu-latest
    steps:
      - { background: true, run: echo b }
"###,
        |_| {},
    )
    .await;
    // The step never waited for is, before the job ends, and its failure is the job's.
    assert_eq!(ran.result.jobs["a"], Status::Failure);
    assert_eq!(ran.result.jobs["b"], Status::Success);
    let logs = ran.logs("a");
    assert_eq!(
        lines_starting(&logs, &["Waiting", "No ", "Finished", "  "]),
        [
            "Waiting for all background step(s) to complete: one, two",
            "Finished waiting for all background step(s).",
            "  one: Succeeded",
            "  two: Succeeded",
            "No background steps remaining to wait for.",
            "Finished waiting for all background step(s).",
        ]
    );
    assert_eq!(ran.job("a").outputs["late"], "late");
    assert_eq!(ran.logs("b"), ["b"]);
}

#[tokio::test]
async fn cancel_stops_a_background_step_gracefully_without_failing_the_job() {
    let yaml = format!(
        r###"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - id: monitor
        name: monitor
        background: true
        run: |
          trap 'echo "monitor stops"; exit 0' TERM
          touch "$RUNNER_TEMP/monitoring"
          while true; do sleep 0.05; done
      - run: {}
      - cancel: monitor
      - run: echo "after ${{{{ steps.monitor.outcome }}}} ${{{{ job.status }}}}"
"###,
        await_file("monitoring")
    );
    let started = Instant::now();
    let ran = run_workflow(&yaml, |_| {}).await;
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.logs("a"));
    let logs = ran.logs("a");
    assert_eq!(
        lines_starting(&logs, &["Cancelling", "Finished", "  ", "after", "monitor"]),
        [
            "Cancelling background step(s): monitor",
            "monitor stops",
            "Finished cancelling background step(s).",
            "  monitor: Canceled",
            "after cancelled success",
        ]
    );
}

#[tokio::test]
async fn a_parallel_group_runs_its_steps_at_once_then_waits_for_them() {
    let yaml = format!(
        r###"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - parallel:
          - id: a
            name: a
            run: |
              touch "$RUNNER_TEMP/a"
              {}
              echo "v=a saw b" >> "$GITHUB_OUTPUT"
          - id: b
            name: b
            run: |
              touch "$RUNNER_TEMP/b"
              {}
              echo "v=b saw a" >> "$GITHUB_OUTPUT"
          - if: false
            run: echo never
      - run: echo "${{{{ steps.a.outputs.v }}}} / ${{{{ steps.b.outputs.v }}}}"
"###,
        await_file("b"),
        await_file("a")
    );
    let ran = run_workflow(&yaml, |_| {}).await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.logs("a"));
    let logs = ran.logs("a");
    assert_eq!(
        lines_starting(&logs, &["Waiting", "Finished", "  ", "a saw", "never"]),
        [
            "Waiting for background step(s) to complete: a, b",
            "Finished waiting for background step(s).",
            "  a: Succeeded",
            "  b: Succeeded",
            "a saw b / b saw a",
        ]
    );
    let steps = ran.job("a").steps;
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names[..4],
        ["a", "b", "Run echo never", "Parallel group"],
        "{names:?}"
    );
    let group = steps.iter().find(|s| s.name == "Parallel group").unwrap();
    assert_eq!(group.conclusion, Status::Success);
    let skipped = steps.iter().find(|s| s.name == "Run echo never").unwrap();
    assert_eq!(skipped.outcome, Status::Skipped);
}

/// At most 10 background steps run at once: the eleventh starts when one of them ends.
#[tokio::test]
async fn no_more_than_ten_background_steps_run_at_once() {
    let mut steps = String::new();
    for i in 1..=11 {
        steps.push_str(&format!(
            "      - background: true\n        run: |\n          touch \"$RUNNER_TEMP/started-{i}\"\n          {}\n",
            await_file("release")
        ));
    }
    let yaml = format!(
        r###"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
{steps}      - run: |
          for i in $(seq 1 1000); do [ "$(ls "$RUNNER_TEMP" | grep -c '^started-')" -ge 10 ] && break; sleep 0.01; done
          echo "running: $(ls "$RUNNER_TEMP" | grep -c '^started-')"
          touch "$RUNNER_TEMP/release"
      - wait-all:
      - run: |
          echo "all: $(ls "$RUNNER_TEMP" | grep -c '^started-')"
"###
    );
    let ran = run_workflow(&yaml, |_| {}).await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.logs("a"));
    let logs = ran.logs("a");
    assert_eq!(
        lines_starting(&logs, &["running", "all"]),
        ["running: 10", "all: 11"]
    );
}

/// The job's `timeout-minutes` stops its background steps too, and the job is cancelled.
#[tokio::test]
async fn the_job_s_timeout_stops_its_background_steps() {
    let started = Instant::now();
    let ran = run_workflow(
        r###"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    timeout-minutes: 1
    steps:
      - { id: forever, background: true, run: sleep 100 }
      - wait: forever
      - if: always()
        run: echo "after ${{ steps.forever.outcome }}"
"###,
        |o| {
            o.kill_grace = Duration::from_millis(200);
            o.minute = Duration::from_millis(600);
        },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(ran.result.status, Status::Cancelled);
    let logs = ran.logs("a");
    assert!(
        logs.contains(
            &"##[error]The job has exceeded the maximum execution time of 1 minutes.".to_owned()
        ),
        "{logs:?}"
    );
    assert!(logs.contains(&"after cancelled".to_owned()), "{logs:?}");
}

/// A cancelled job (here by its matrix's fail-fast) cancels its background steps at once, as
/// the runner links their cancellation to the job's; its waiting step then ends.
#[tokio::test]
async fn a_cancelled_job_cancels_its_background_steps() {
    let started = Instant::now();
    let ran = run_workflow(
        r###"
on: push
jobs:
  t:
    runs-on: ubuntu-latest
    strategy:
      matrix: { kind: [fail, slow] }
    steps:
      - id: slow
        background: true
        run: |
          if [ "${{ matrix.kind }}" = fail ]; then exit 0; fi
          sleep 100
      - run: |
          if [ "${{ matrix.kind }}" = fail ]; then exit 1; fi
      - wait: slow
      - if: always()
        run: echo "slow ${{ steps.slow.outcome }}"
"###,
        |o| {
            o.max_parallel = 2;
            o.kill_grace = Duration::from_millis(200);
        },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(ran.job("t (fail)").status, Status::Failure);
    assert_eq!(ran.job("t (slow)").status, Status::Cancelled);
    let logs = ran.logs("t (slow)");
    assert!(logs.contains(&"slow cancelled".to_owned()), "{logs:?}");
}

/// A background step's own `timeout-minutes` fails it (in the coordinator's words), and its
/// failure reaches the job at its wait.
#[tokio::test]
async fn a_background_step_s_own_timeout_fails_it() {
    let ran = run_workflow(
        r###"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - id: slow
        name: slow
        background: true
        timeout-minutes: 1
        run: sleep 100
      - wait: slow
      - if: failure()
        run: echo "slow ${{ steps.slow.outcome }}"
"###,
        |o| {
            o.kill_grace = Duration::from_millis(200);
            o.minute = Duration::from_millis(300);
        },
    )
    .await;
    assert_eq!(ran.result.status, Status::Failure);
    let logs = ran.logs("a");
    assert_eq!(
        lines_starting(&logs, &["##[error]", "  ", "slow"]),
        [
            "##[error]The background step 'slow' has timed out after 1 minutes.",
            "  slow: Failed",
            "slow failure",
        ]
    );
}

/// A job's records list its steps in the order they started, whenever each background step
/// is waited for: here the first one is waited for last, after a group that started later.
#[tokio::test]
async fn records_list_steps_in_the_order_they_started() {
    let ran = run_workflow(
        r###"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - { id: first, name: first, background: true, run: "true" }
      - parallel:
          - { name: lint, run: "true" }
          - { name: unit, run: "true" }
      - { name: own, run: "true" }
      - { id: second, name: second, background: true, run: "true" }
      - { name: both, wait: [second, first] }
      - { name: last, run: "true" }
"###,
        |_| {},
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.logs("a"));
    let names: Vec<String> = ran.job("a").steps.into_iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "first",
            "lint",
            "unit",
            "Parallel group",
            "own",
            "second",
            "both",
            "last"
        ]
    );
}
