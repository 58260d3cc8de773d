//! End to end: GitHub's documented run-time behaviour where kiln once differed (issue 5), each
//! a small workflow in a temporary git repository, run on the host.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test helpers may panic: that is how tests fail.

mod common;

use std::sync::Arc;

use common::{Ran, repo, run_in};
use kiln_pipelines::{MemoryStore, RunOptions, Status, load, run};
use tempfile::TempDir;

const WF: &str = ".github/workflows/ci.yml";

/// Runs `yaml` as the repository's only workflow, with `tweak` applied to the options.
async fn run_with(yaml: &str, tweak: impl FnOnce(&mut RunOptions)) -> Ran {
    let repo = repo(&[(WF, yaml)]);
    let state = TempDir::new().unwrap();
    run_in(repo.path(), state.path(), WF, tweak).await
}

/// `shell` and `working-directory` written as expressions that fail to evaluate fail the step
/// with the evaluation error (the runner evaluates them as the step's inputs); kiln once ran the
/// step with the raw text instead. `continue-on-error` still applies.
#[tokio::test]
async fn shell_and_working_directory_that_fail_to_evaluate_fail_the_step() {
    let ran = run_with(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - id: sh
        shell: ${{ fromJSON('{') }}
        run: echo ran-with-raw-shell
        continue-on-error: true
      - id: wd
        working-directory: ${{ fromJSON('[') }}
        run: echo ran-in-raw-directory
        continue-on-error: true
      - run: echo "sh=${{ steps.sh.outcome }}/${{ steps.sh.conclusion }} wd=${{ steps.wd.outcome }}"
  b:
    runs-on: ubuntu-latest
    defaults:
      run:
        working-directory: ${{ fromJSON('nope') }}
    steps:
      - run: echo never
"#,
        |_| {},
    )
    .await;
    let a = ran.logs("a");
    assert!(!a.iter().any(|l| l.starts_with("ran-")), "{a:?}");
    assert!(a.iter().any(|l| l.starts_with("##[error]shell: ")), "{a:?}");
    assert!(
        a.iter()
            .any(|l| l.starts_with("##[error]working-directory: ")),
        "{a:?}"
    );
    assert!(
        a.contains(&"sh=failure/success wd=failure".to_owned()),
        "{a:?}"
    );
    assert_eq!(ran.job("a").status, Status::Success);
    let b = ran.logs("b");
    assert!(!b.contains(&"never".to_owned()), "{b:?}");
    assert_eq!(ran.job("b").status, Status::Failure);
    assert_eq!(ran.result.status, Status::Failure);
}

/// A job whose `timeout-minutes` expires is cancelled, as GitHub cancels it and the runner
/// handles any job cancellation: the running step is cancelled, only the steps whose `if`
/// holds on a cancelled job run (`always()`, `cancelled()`; not `failure()`, not the default
/// `success()`), `job.status` is `cancelled`, the job concludes `cancelled`, a job that needs it
/// sees `needs.J.result == 'cancelled'` and runs only if its `if` allows it, and the run
/// concludes `cancelled`. kiln once reported the job as failed and ran `failure()` steps.
#[tokio::test]
async fn a_job_past_its_timeout_is_cancelled() {
    let ran = run_with(
        r#"
on: push
jobs:
  slow:
    runs-on: ubuntu-latest
    timeout-minutes: 1
    steps:
      - run: sleep 100
      - run: echo next
      - if: failure()
        run: echo on-failure
      - if: cancelled()
        run: echo "on-cancelled ${{ job.status }}"
      - if: always()
        run: echo "always ${{ job.status }}"
  after:
    needs: slow
    runs-on: ubuntu-latest
    steps: [ { run: echo after } ]
  report:
    needs: slow
    if: always()
    runs-on: ubuntu-latest
    steps: [ { run: "echo report ${{ needs.slow.result }}" } ]
"#,
        |o| {
            o.kill_grace = std::time::Duration::from_millis(100);
            o.minute = std::time::Duration::from_millis(600);
        },
    )
    .await;
    let slow = ran.logs("slow");
    assert!(
        slow.iter()
            .any(|l| l.starts_with("##[error]The job has exceeded the maximum execution time")),
        "{slow:?}"
    );
    assert!(
        slow.contains(&"##[error]The operation was canceled.".to_owned()),
        "{slow:?}"
    );
    assert!(!slow.contains(&"next".to_owned()), "{slow:?}");
    assert!(!slow.contains(&"on-failure".to_owned()), "{slow:?}");
    assert!(
        slow.contains(&"on-cancelled cancelled".to_owned()),
        "{slow:?}"
    );
    assert!(slow.contains(&"always cancelled".to_owned()), "{slow:?}");
    let record = ran.job("slow");
    assert_eq!(record.status, Status::Cancelled);
    assert_eq!(record.steps[0].conclusion, Status::Cancelled);
    assert_eq!(ran.job("after").status, Status::Skipped);
    assert_eq!(ran.logs("report"), ["report cancelled"]);
    assert_eq!(ran.result.status, Status::Cancelled);
}

const WITH_SERVICES: &str = r#"
on: push
jobs:
  lint:
    runs-on: ubuntu-latest
    steps: [ { run: echo lint } ]
  db:
    runs-on: ubuntu-latest
    services:
      postgres: { image: postgres }
    steps: [ { run: echo db } ]
  after:
    needs: db
    runs-on: ubuntu-latest
    steps: [ { run: echo after } ]
"#;

/// A job with `services` (or a literal `container`) no longer stops the whole workflow: a run
/// of jobs that need neither (nor through `needs`) goes ahead, and a run that includes such a
/// job is refused before anything runs, naming the job, the key and `file:line:col`. kiln once
/// refused to load the workflow at all.
#[tokio::test]
async fn services_refuse_only_the_runs_that_include_them() {
    let repo = repo(&[(WF, WITH_SERVICES)]);
    let mut set = load(repo.path(), WF).unwrap_or_else(|e| panic!("{e}"));
    let refusal = set.refusal().expect("the whole workflow is refused");
    assert!(
        refusal.contains(
            "ci.yml:9:5: error: job `db`: `services` is not supported without a container engine"
        ),
        "{refusal}"
    );
    // Nothing runs: no job, no event, no directory.
    let state = TempDir::new().unwrap();
    let opts = RunOptions::new(repo.path(), "HEAD", state.path());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let store = Arc::new(MemoryStore::default());
    let err = run(set.clone(), opts, tx, store.clone())
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("job `db`: `services`"), "{err}");
    assert!(rx.try_recv().is_err());
    assert!(store.jobs().is_empty());
    assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 0);
    // `after` needs `db`: refused too; `lint` alone runs.
    set.root.jobs.retain(|id, _| id == "after" || id == "db");
    assert!(set.refusal().is_some());
    set.root.jobs.retain(|id, _| id == "lint");
    assert_eq!(set.refusal(), None);
    let state = TempDir::new().unwrap();
    let opts = RunOptions::new(repo.path(), "HEAD", state.path());
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let result = run(set, opts, tx, Arc::new(MemoryStore::default()))
        .await
        .unwrap();
    assert_eq!(result.status, Status::Success);
}

/// The ids GitHub gives (`GITHUB_ACTOR_ID`, `GITHUB_REPOSITORY_ID`, `GITHUB_REPOSITORY_OWNER_ID`
/// and their `github` properties) come from the event's payload (`sender`, `repository`) when
/// it has them, '' otherwise; a `GITHUB_TOKEN` secret is also `github.token`, as on GitHub,
/// masked, and not in the steps' environment unless the workflow puts it there.
#[tokio::test]
async fn ids_come_from_the_payload_and_the_token_from_the_secret() {
    let yaml = r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: echo "$GITHUB_ACTOR/$GITHUB_ACTOR_ID $GITHUB_REPOSITORY_ID $GITHUB_REPOSITORY_OWNER_ID token=${GITHUB_TOKEN-unset}"
      - run: echo "${{ github.actor_id }} ${{ github.repository_id }} ${{ github.repository_owner_id }} ${{ github.token == secrets.GITHUB_TOKEN }} ${{ github.token }}"
"#;
    let ran = run_with(yaml, |o| {
        o.event = serde_json::json!({
            "ref": "refs/heads/main",
            "sender": { "login": "octocat", "id": 583231 },
            "repository": { "id": 1296269, "owner": { "login": "octo-org", "id": 9919 } },
        });
        o.secrets.insert("GITHUB_TOKEN".into(), "ghs_local".into());
    })
    .await;
    assert_eq!(
        ran.logs("a"),
        [
            "octocat/583231 1296269 9919 token=unset",
            "583231 1296269 9919 true ***"
        ]
    );
    let ran = run_with(yaml, |_| {}).await;
    assert_eq!(ran.logs("a"), ["kiln/   token=unset", "   true "]);
}

/// `github.repositoryUrl`: the repository's git URL in GitHub's form
/// (`git://<host>/<owner>/<repo>.git`), on kiln's host as `github.server_url` is.
#[tokio::test]
async fn repository_url_is_the_git_form_of_the_repository() {
    let ran = run_with(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo \"${{ github.repositoryUrl }}\"\n",
        |_| {},
    )
    .await;
    assert_eq!(ran.logs("a"), ["git://localhost/local/repo.git"]);
}

/// `github.run_number` / `GITHUB_RUN_NUMBER` number the runs of one workflow (kiln ci asks the
/// state store for it); kiln once gave the run id, unique over every workflow's runs.
#[tokio::test]
async fn run_number_is_the_workflows_own_count_not_the_run_id() {
    let ran = run_with(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo \"$GITHUB_RUN_ID ${{ github.run_id }} $GITHUB_RUN_NUMBER ${{ github.run_number }} ${{ github.run_attempt }}\"\n",
        |o| {
            o.run_id = 12;
            o.run_number = 3;
        },
    )
    .await;
    assert_eq!(ran.logs("a"), ["12 12 3 3 1"]);
}

/// Behaviours checked against GitHub's documentation that kiln already followed, kept so they
/// stay: a matrix (and its `include`) from `fromJSON` of a job output, object and array values
/// in it (`matrix.cfg.os`), a matrix job's outputs combined over its legs, a skipped step's
/// empty outputs, a step's `env` reading the job's `env` (not its own keys), `job.status`
/// in the `if` of a step after a failure, and a bad dynamic matrix failing only its job (now
/// recorded).
#[tokio::test]
async fn dynamic_matrices_outputs_and_env_as_github_documents_them() {
    let ran = run_with(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    outputs:
      m: ${{ steps.s.outputs.m }}
      inc: '[{"os":"z","extra":"e"}]'
      bad: 'not json'
    steps:
      - id: s
        run: echo 'm={"os":["x","y"],"cfg":[{"os":"linux","v":[1,2]}]}' >> "$GITHUB_OUTPUT"
  b:
    needs: a
    runs-on: ubuntu-latest
    strategy:
      matrix: ${{ fromJSON(needs.a.outputs.m) }}
    outputs:
      out_x: ${{ steps.o.outputs.out_x }}
      out_y: ${{ steps.o.outputs.out_y }}
    steps:
      - id: o
        run: echo "out_${{ matrix.os }}=${{ matrix.os }}-${{ matrix.cfg.os }}-${{ matrix.cfg.v[1] }}" >> "$GITHUB_OUTPUT"
  c:
    needs: a
    runs-on: ubuntu-latest
    strategy:
      matrix:
        os: [p]
        include: ${{ fromJSON(needs.a.outputs.inc) }}
    steps:
      - run: echo "c ${{ matrix.os }} ${{ matrix.extra }}"
  bad:
    needs: a
    runs-on: ubuntu-latest
    strategy:
      matrix: ${{ fromJSON(needs.a.outputs.bad) }}
    steps: [ { run: echo never } ]
  d:
    needs: [b, bad]
    if: always()
    runs-on: ubuntu-latest
    env:
      C: job
    steps:
      - id: skipped
        if: false
        run: echo "o=1" >> "$GITHUB_OUTPUT"
      - run: echo "${{ needs.b.outputs.out_x }} ${{ needs.b.outputs.out_y }} ${{ needs.bad.result }} [${{ steps.skipped.outputs.o }}] ${{ steps.skipped.outcome }} $C $D [$E]"
        env:
          C: step
          D: ${{ env.C }}-d
          E: ${{ env.D }}
      - run: exit 1
      - if: job.status == 'failure'
        run: echo without-status-function
      - if: always() && job.status == 'failure'
        run: echo with-always
"#,
        |_| {},
    )
    .await;
    let mut c = ran.logs("c (p)");
    c.extend(ran.logs("c (z, e)"));
    assert_eq!(c, ["c p ", "c z e"]);
    assert_eq!(
        ran.logs("d"),
        [
            "x-linux-2 y-linux-2 failure [] skipped step job-d []",
            "##[error]Process completed with exit code 1.",
            "with-always"
        ]
    );
    // A job whose matrix does not evaluate is recorded as failed, with the error: kiln once
    // only printed it, and `kiln ci show` had no such job.
    let bad = ran.job("bad");
    assert_eq!(bad.status, Status::Failure);
    assert!(
        bad.annotations[0].message.contains("fromJson"),
        "{:?}",
        bad.annotations
    );
}

/// `timeout-minutes` as the runner reads it (`WorkflowTemplateConverter.ConvertToStepTimeout`,
/// `(Int32)numberToken.Value`, then `StepsRunner` arms a timer only `if (timeoutMinutes > 0)`):
/// a fraction is cut to whole minutes, so `0.005` sets no timeout and the step finishes (kiln
/// once stopped it after 0.3 s); a step's timeout whose expression gives a string is two
/// errors and the step runs without one; a job's is an error of the job, which fails.
#[tokio::test]
async fn timeout_minutes_are_whole_minutes_and_numbers() {
    let ran = run_with(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: sleep 1; echo finished
        timeout-minutes: 0.005
      - run: echo ran
        timeout-minutes: ${{ github.event_name }}
  b:
    runs-on: ubuntu-latest
    timeout-minutes: ${{ github.event_name }}
    steps: [ { run: echo never } ]
"#,
        |_| {},
    )
    .await;
    let a = ran.logs("a");
    assert_eq!(
        a[..2],
        [
            "finished",
            "##[error]An error occurred when attempting to determine the step timeout.",
        ],
        "{a:?}"
    );
    assert!(
        a[2].starts_with("##[error]The template is not valid. ")
            && a[2].ends_with(": Unexpected value 'push'")
            && a[3] == "ran",
        "{a:?}"
    );
    assert_eq!(ran.job("a").status, Status::Success);
    assert_eq!(ran.job("b").status, Status::Failure);
    let b = ran.logs("b");
    assert!(
        b.iter().any(
            |l| l.contains("Error when evaluating 'timeout-minutes' for job 'b'.")
                && l.ends_with("Unexpected value 'push'")
        ),
        "{b:?}"
    );
    assert!(!b.iter().any(|l| l == "never"), "{b:?}");
}

// Ten small workflows for behaviours real workflows lean on (session 15), each checked against
// GitHub's documentation: "Contexts" (job, steps, needs, runner, env), "Expressions" (status
// check functions, hashFiles), "Workflow commands" (environment files) and "Workflow syntax"
// (defaults.run, env, shell).

/// Runs a workflow in a repository holding `files` too.
async fn run_files(files: &[(&str, &str)]) -> Ran {
    let repo = repo(files);
    let state = TempDir::new().unwrap();
    run_in(repo.path(), state.path(), WF, |_| {}).await
}

/// "Contexts", `job.status`: success, failure or cancelled, as the job stands when the step is
/// evaluated; a step whose failure `continue-on-error` lets pass leaves it `success`. A step
/// `if:` without a status function gets an implicit `success() &&`, so `job.status ==
/// 'failure'` alone never runs after a failure.
#[tokio::test]
async fn job_status_in_step_conditions() {
    let ran = run_with(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - continue-on-error: true
        run: exit 1
      - run: echo "after allowed failure ${{ job.status }}"
      - run: exit 3
      - if: always()
        run: echo "always ${{ job.status }}"
      - if: job.status == 'failure'
        run: echo "implicit success() makes this unreachable"
      - if: failure() && job.status == 'failure'
        run: echo "failure() ${{ job.status }}"
"#,
        |_| {},
    )
    .await;
    assert_eq!(
        ran.logs("a"),
        [
            "##[error]Process completed with exit code 1.",
            "after allowed failure success",
            "##[error]Process completed with exit code 3.",
            "always failure",
            "failure() failure"
        ]
    );
    assert_eq!(ran.result.status, Status::Failure);
}

/// "Contexts", `steps.<id>.outcome` and `conclusion`: with `continue-on-error` a failed step's
/// outcome is `failure` and its conclusion `success`; a skipped step's are both `skipped`, and a
/// failed step without it is `failure` twice.
#[tokio::test]
async fn step_outcome_and_conclusion_with_continue_on_error() {
    let ran = run_with(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - id: allowed
        continue-on-error: true
        run: exit 1
      - id: skipped
        if: false
        run: echo never
      - id: failed
        run: exit 2
      - if: always()
        run: >-
          echo "${{ steps.allowed.outcome }}/${{ steps.allowed.conclusion }}
          ${{ steps.skipped.outcome }}/${{ steps.skipped.conclusion }}
          ${{ steps.failed.outcome }}/${{ steps.failed.conclusion }}"
"#,
        |_| {},
    )
    .await;
    assert_eq!(
        ran.logs("a"),
        [
            "##[error]Process completed with exit code 1.",
            "##[error]Process completed with exit code 2.",
            "failure/success skipped/skipped failure/failure"
        ]
    );
}

/// "Contexts", `needs.<job_id>.result`: `success`, `failure`, `cancelled` or `skipped`. A job
/// whose need was skipped is skipped too unless its `if:` has a status function; with
/// `always()` it runs and sees `skipped`.
#[tokio::test]
async fn needs_result_of_a_skipped_job() {
    let ran = run_with(
        r#"
on: push
jobs:
  off:
    if: false
    runs-on: ubuntu-latest
    steps:
      - run: echo never
  plain:
    needs: off
    runs-on: ubuntu-latest
    steps:
      - run: echo "plain ran"
  always:
    needs: off
    if: always()
    runs-on: ubuntu-latest
    steps:
      - run: echo "off was ${{ needs.off.result }}"
"#,
        |_| {},
    )
    .await;
    assert_eq!(ran.logs("always"), ["off was skipped"]);
    assert!(ran.logs("plain").is_empty());
    assert_eq!(ran.job("plain").status, Status::Skipped);
    assert_eq!(ran.job("off").status, Status::Skipped);
    assert_eq!(ran.result.status, Status::Success);
}

/// "Expressions", status check functions in a job's `if:`: a job with a failed need is
/// skipped, unless its `if:` says `always()` or `failure()`; `success()` there looks at the
/// needs, so it is false; the run fails.
#[tokio::test]
async fn always_and_failure_in_a_job_with_a_failed_need() {
    let ran = run_with(
        r#"
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: exit 1
  always:
    needs: build
    if: always()
    runs-on: ubuntu-latest
    steps:
      - run: echo "build ${{ needs.build.result }} ${{ job.status }}"
  on-failure:
    needs: build
    if: failure()
    runs-on: ubuntu-latest
    steps:
      - run: echo "cleanup"
  on-success:
    needs: build
    if: success()
    runs-on: ubuntu-latest
    steps:
      - run: echo never
  plain:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - run: echo never
"#,
        |_| {},
    )
    .await;
    assert_eq!(ran.logs("always"), ["build failure success"]);
    assert_eq!(ran.logs("on-failure"), ["cleanup"]);
    assert_eq!(ran.job("on-success").status, Status::Skipped);
    assert_eq!(ran.job("plain").status, Status::Skipped);
    assert_eq!(ran.result.status, Status::Failure);
}

/// "Expressions", `hashFiles(path, ...)`: several patterns, `!` excluding what earlier ones
/// matched, the SHA-256 of the matched files' SHA-256s (as the runner's hashFiles computes it);
/// an empty string when nothing matches.
#[tokio::test]
async fn hash_files_with_several_patterns_and_negations() {
    let ran = run_files(&[
        (
            WF,
            r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: |
          echo "${{ hashFiles('**/*.txt', '!b.txt', 'src/*.log') == hashFiles('a.txt', 'src/c.log') }}"
          echo "${{ hashFiles('**/*.txt') != hashFiles('a.txt') }}"
          echo "${{ hashFiles('**/*.txt', '!**/*.txt') == '' }}"
          echo "${{ hashFiles('nothing/**') == '' }}"
          expected=$(python3 -c 'import hashlib; h = hashlib.sha256(); [h.update(hashlib.sha256(open(f, "rb").read()).digest()) for f in ["a.txt"]]; print(h.hexdigest())')
          [ "$expected" = "${{ hashFiles('a.txt') }}" ] && echo "digest as documented"
"#,
        ),
        ("a.txt", "a\n"),
        ("b.txt", "b\n"),
        ("src/c.log", "c\n"),
    ])
    .await;
    assert_eq!(
        ran.logs("a")[1..],
        ["true", "true", "true", "true", "digest as documented"]
    );
}

/// "Workflow commands", multiline strings in `GITHUB_ENV`: `NAME<<DELIMITER`, the lines, the
/// delimiter; `=` and empty lines inside are kept, and the variable reaches later steps (not
/// the one that wrote it) and `env.NAME`.
#[tokio::test]
async fn github_env_multiline_values() {
    let ran = run_with(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: |
          { echo 'NOTES<<END_OF_NOTES'; echo 'a=1'; echo; echo 'c'; echo 'END_OF_NOTES'; } >> "$GITHUB_ENV"
          echo "ONE=x=y" >> "$GITHUB_ENV"
          echo "same step: '${NOTES:-}'"
      - run: |
          echo "${NOTES//$'\n'/|}"
          echo "$ONE"
      - run: echo "${{ env.NOTES == format('a=1{0}{0}c', fromJSON('"\n"')) }}"
"#,
        |_| {},
    )
    .await;
    assert_eq!(ran.logs("a"), ["same step: ''", "a=1||c", "x=y", "true"]);
}

/// "Workflow syntax", `defaults.run.working-directory`: the workflow's applies to every job's
/// `run` steps, a job's replaces it, a step's `working-directory` replaces both; `uses` steps
/// are not affected.
#[tokio::test]
async fn working_directory_defaults_at_workflow_job_and_step() {
    let ran = run_files(&[
        (
            WF,
            r#"
on: push
defaults:
  run: { working-directory: w }
jobs:
  workflow-level:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: basename "$PWD"
      - working-directory: s
        run: basename "$PWD"
  job-level:
    runs-on: ubuntu-latest
    defaults:
      run: { working-directory: j }
    steps:
      - uses: actions/checkout@v4
      - run: basename "$PWD"
      - working-directory: ./s
        run: basename "$PWD"
"#,
        ),
        ("w/.keep", ""),
        ("j/.keep", ""),
        ("s/.keep", ""),
    ])
    .await;
    assert_eq!(ran.logs("workflow-level")[1..], ["w", "s"]);
    assert_eq!(ran.logs("job-level")[1..], ["j", "s"]);
}

/// "Workflow syntax", `shell: pwsh`: on a host without PowerShell the step fails with an error
/// naming the missing program (the runner's `File not found: 'pwsh'`), the job goes on to
/// `always()` steps, nothing else runs; on a host with it, the script runs in it.
#[tokio::test]
async fn shell_pwsh_runs_in_powershell_or_is_a_clear_error_without_it() {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join("pwsh").is_file()));
    let ran = run_with(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - shell: pwsh
        run: Write-Output "hello"
      - run: echo never
      - if: always()
        run: echo "after"
"#,
        |_| {},
    )
    .await;
    let logs = ran.logs("a");
    if on_path {
        assert_eq!(logs, ["hello", "never", "after"]);
        assert_eq!(ran.job("a").steps[0].outcome, Status::Success);
        return;
    }
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert!(
        logs[0].starts_with("##[error]") && logs[0].contains("pwsh"),
        "{logs:?}"
    );
    assert_eq!(logs[1], "after");
    assert_eq!(ran.job("a").steps[0].outcome, Status::Failure);
}

/// "Workflow syntax", `env`: a step's variable wins over the job's, which wins over the
/// workflow's; the `env` context in the step's expressions sees the same.
#[tokio::test]
async fn env_precedence_workflow_job_step() {
    let ran = run_with(
        r#"
on: push
env: { X: workflow, Y: workflow, Z: workflow }
jobs:
  a:
    runs-on: ubuntu-latest
    env: { X: job, Y: job }
    steps:
      - env: { X: step }
        run: |
          echo "$X $Y $Z"
          echo "${{ env.X }} ${{ env.Y }} ${{ env.Z }}"
      - run: echo "$X $Y $Z"
"#,
        |_| {},
    )
    .await;
    assert_eq!(
        ran.logs("a"),
        ["step job workflow", "step job workflow", "job job workflow"]
    );
}

/// "Contexts", `runner`: `runner.os` is `Linux` here, `runner.arch` `X64` or `ARM64`,
/// `runner.temp` is `RUNNER_TEMP`, an existing directory, emptied at the start of each job.
#[tokio::test]
async fn runner_os_arch_and_temp() {
    let ran = run_with(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: |
          echo "${{ runner.os }} $RUNNER_OS"
          case "${{ runner.arch }}" in X64|ARM64|X86|ARM) echo "arch ok";; esac
          [ "${{ runner.temp }}" = "$RUNNER_TEMP" ] && [ -d "$RUNNER_TEMP" ] && echo "temp ok"
          touch "$RUNNER_TEMP/left-behind"
  b:
    needs: a
    runs-on: ubuntu-latest
    steps:
      - run: '[ -e "${{ runner.temp }}/left-behind" ] && echo kept || echo emptied'
"#,
        |_| {},
    )
    .await;
    assert_eq!(ran.logs("a"), ["Linux Linux", "arch ok", "temp ok"]);
    // The runner's own files (step scripts, file commands) live there too, on GitHub as here.
    assert_eq!(ran.logs("b"), ["emptied"]);
}

/// actions/cache's README, "Outputs": on a miss `cache-hit` is "an empty string" (its
/// `restoreImpl` sets it only once an entry was restored), so the common
/// `if: ${{ !steps.c.outputs.cache-hit }}` runs the install and `== 'false'` does not; a
/// restore key's entry gives `false`, the key's own `true`. `cache-primary-key` and
/// `cache-matched-key` are outputs of `actions/cache/restore` only. kiln once set `false` on a
/// miss, which skipped that install, and gave `actions/cache` the key outputs.
#[tokio::test]
async fn cache_hit_is_empty_on_a_miss() {
    let yaml = r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - id: c
        uses: actions/cache@v4
        with:
          path: deps
          key: deps-${{ github.run_id }}
          restore-keys: deps-
      - id: r
        uses: actions/cache/restore@v4
        with:
          path: deps
          key: deps-${{ github.run_id }}
          restore-keys: deps-
      - run: echo "c=[${{ steps.c.outputs.cache-hit }}] r=[${{ steps.r.outputs.cache-hit }}]"
      - run: echo "keys c=${{ toJSON(steps.c.outputs) }}"
      - run: echo "keys r=[${{ steps.r.outputs.cache-primary-key }}] [${{ steps.r.outputs.cache-matched-key }}]"
      - if: ${{ !steps.c.outputs.cache-hit }}
        run: mkdir -p deps && echo built > deps/f && echo installed
      - if: steps.c.outputs.cache-hit == 'false'
        run: echo partial
"#;
    let repo = repo(&[(WF, yaml)]);
    let state = TempDir::new().unwrap();
    let first = run_in(repo.path(), state.path(), WF, |o| o.run_id = 1).await;
    let logs = first.logs("a");
    assert!(logs.contains(&"c=[] r=[]".to_owned()), "{logs:?}");
    assert!(logs.contains(&"keys c={}".to_owned()), "{logs:?}");
    assert!(logs.contains(&"keys r=[deps-1] []".to_owned()), "{logs:?}");
    assert!(logs.contains(&"installed".to_owned()), "{logs:?}");
    assert!(!logs.contains(&"partial".to_owned()), "{logs:?}");

    // Run 2 misses its own key but restores run 1's entry through the prefix.
    let second = run_in(repo.path(), state.path(), WF, |o| o.run_id = 2).await;
    let logs = second.logs("a");
    assert!(logs.contains(&"c=[false] r=[false]".to_owned()), "{logs:?}");
    assert!(
        logs.contains(&"keys r=[deps-2] [deps-1]".to_owned()),
        "{logs:?}"
    );
    assert!(logs.contains(&"partial".to_owned()), "{logs:?}");
    assert!(!logs.contains(&"installed".to_owned()), "{logs:?}");
}

/// actions/checkout's outputs (its `action.yml`): `commit`, the SHA checked out
/// (`git-source-provider.ts`), and `ref`, its settings' ref (`main.ts`): the event's ref
/// without a `ref:` input, the input as written, '' for a commit SHA. kiln once set neither,
/// so `steps.co.outputs.commit` was empty.
#[tokio::test]
async fn checkout_outputs_ref_and_commit() {
    let ran = run_with(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - id: plain
        uses: actions/checkout@v4
      - id: named
        uses: actions/checkout@v4
        with: { ref: main, path: named }
      - id: sha
        uses: actions/checkout@v4
        with: { ref: '${{ github.sha }}', path: sha }
      - run: |
          echo "plain ${{ steps.plain.outputs.ref }} ${{ steps.plain.outputs.commit == github.sha }}"
          echo "named ${{ steps.named.outputs.ref }} ${{ steps.named.outputs.commit == github.sha }}"
          echo "sha [${{ steps.sha.outputs.ref }}] ${{ steps.sha.outputs.commit == github.sha }}"
"#,
        |_| {},
    )
    .await;
    let logs = ran.logs("a");
    assert!(
        logs.contains(&"plain refs/heads/main true".to_owned()),
        "{logs:?}"
    );
    assert!(logs.contains(&"named main true".to_owned()), "{logs:?}");
    assert!(logs.contains(&"sha [] true".to_owned()), "{logs:?}");
}

/// actions/upload-artifact v4: hidden files and directories (named `.…`) are left out unless
/// `include-hidden-files: true` (its README, "Uploading hidden files", since v4.4), and a
/// second upload of a name replaces the first with `overwrite: true` (it fails without).
/// kiln once uploaded `.env` by default and refused the overwrite.
#[tokio::test]
async fn upload_artifact_leaves_hidden_files_out_and_overwrites_on_request() {
    let ran = run_with(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: mkdir -p dist/.cache && echo a > dist/a.txt && echo s > dist/.env && echo c > dist/.cache/c
      - uses: actions/upload-artifact@v4
        with: { name: plain, path: dist/ }
      - uses: actions/upload-artifact@v4
        with: { name: hidden, path: dist/, include-hidden-files: true }
      - uses: actions/upload-artifact@v4
        with: { name: dotfile, path: dist/.env, if-no-files-found: ignore }
      - uses: actions/upload-artifact@v4
        with: { name: plain, path: dist/.env, overwrite: true, include-hidden-files: true }
      - id: again
        uses: actions/upload-artifact@v4
        with: { name: plain, path: dist/a.txt }
        continue-on-error: true
      - run: echo "again=${{ steps.again.outcome }}"
  b:
    needs: a
    runs-on: ubuntu-latest
    steps:
      - uses: actions/download-artifact@v4
      - run: find . -type f | sort
"#,
        |_| {},
    )
    .await;
    assert!(
        ran.logs("a").contains(&"again=failure".to_owned()),
        "{:?}",
        ran.logs("a")
    );
    assert_eq!(
        ran.logs("b")[1..],
        [
            "./hidden/.cache/c",
            "./hidden/.env",
            "./hidden/a.txt",
            "./plain/.env"
        ],
        "{:?}",
        ran.logs("b")
    );
}

/// setup-node's `cache:` without `cache-dependency-path` looks for its lock files
/// (`package-lock.json`, `npm-shrinkwrap.json`, `yarn.lock` for npm) in the workspace's own
/// directory only (`findLockFile` reads the root's entries), so a lock file only in a
/// subdirectory is "Dependencies lock file is not found"; `cache-dependency-path` reaches it.
/// kiln once searched `**/` and went on.
#[tokio::test]
async fn setup_node_cache_looks_for_the_lock_file_at_the_root_only() {
    let files = [
        (
            WF,
            r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - id: root
        uses: actions/setup-node@v4
        with: { cache: npm }
        continue-on-error: true
      - id: path
        uses: actions/setup-node@v4
        with: { cache: npm, cache-dependency-path: web/package-lock.json }
      - run: echo "root=${{ steps.root.outcome }} path=${{ steps.path.outcome }}"
"#,
        ),
        ("web/package-lock.json", "{}"),
    ];
    let repo = repo(&files);
    let state = TempDir::new().unwrap();
    let ran = run_in(repo.path(), state.path(), WF, |_| {}).await;
    let logs = ran.logs("a");
    assert!(
        logs.iter().any(
            |l| l.starts_with("##[error]Dependencies lock file is not found in ")
                && l.ends_with(
                    "Supported file patterns: package-lock.json,npm-shrinkwrap.json,yarn.lock"
                )
        ),
        "{logs:?}"
    );
    assert!(
        logs.contains(&"root=failure path=success".to_owned()),
        "{logs:?}"
    );
}

/// setup-python's `python-version` is a multi-line input (its README, "Using multiple Python
/// versions"): each line is a version to set up. On one host python every line must be
/// satisfied, and a miss names that line. kiln once read the list as one version.
#[tokio::test]
async fn setup_python_reads_one_version_a_line() {
    let ran = run_with(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - id: both
        uses: actions/setup-python@v5
        with:
          python-version: |
            3.x
            3
      - id: old
        uses: actions/setup-python@v5
        with:
          python-version: |
            3.x
            2.6
        continue-on-error: true
      - run: echo "both=${{ steps.both.outcome }} old=${{ steps.old.outcome }}"
"#,
        |_| {},
    )
    .await;
    let logs = ran.logs("a");
    assert!(
        logs.contains(&"both=success old=failure".to_owned()),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.starts_with("##[error]python-version `2.6` is not satisfied")),
        "{logs:?}"
    );
}

/// setup-python sets up the version asked for from the runner's tool cache
/// (`$RUNNER_TOOL_CACHE/Python/<version>/x64`), whichever python is first on PATH: a matrix
/// over python versions (pypa/pip's tests, `python-version: ${{ matrix.python }}`) gets each
/// leg its own. kiln once used only the host's python and failed every other version, even
/// installed ones (pyenv's, a tool cache's). Here a step fills the run's tool cache.
#[tokio::test]
async fn setup_python_takes_a_version_the_host_python_is_not_from_the_tool_cache() {
    let ran = run_with(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: |
          bin="$RUNNER_TOOL_CACHE/Python/3.99.1/x64/bin"
          mkdir -p "$bin"
          printf '#!/bin/sh\n[ "$1" = --version ] && exec echo Python 3.99.1\nexec python3 "$@"\n' > "$bin/python"
          chmod +x "$bin/python"
      - id: sp
        uses: actions/setup-python@v5
        with:
          python-version: '3.99'
      - run: |
          echo "version=${{ steps.sp.outputs.python-version }} $(python --version)"
          [ "${{ steps.sp.outputs.python-path }}" = "$RUNNER_TOOL_CACHE/Python/3.99.1/x64/bin/python" ] && echo path-ok
      - id: missing
        uses: actions/setup-python@v5
        with:
          python-version: '3.98'
        continue-on-error: true
"#,
        |_| {},
    )
    .await;
    let logs = ran.logs("a");
    assert!(
        logs.contains(&"version=3.99.1 Python 3.99.1".to_owned()),
        "{logs:?}"
    );
    assert!(logs.contains(&"path-ok".to_owned()), "{logs:?}");
    assert!(
        logs.iter()
            .any(|l| l.starts_with("##[error]python-version `3.98` is not satisfied")),
        "{logs:?}"
    );
}

/// `strategy.matrix.exclude`: "an excluded configuration only has to be a partial match",
/// and that holds inside an object vector's items. microsoft/TypeScript's CI (Apache-2.0)
/// lists its configurations as objects, marks those to leave out of merge queues with
/// `skip: ${{ github.event_name == 'merge_group' }}`, and excludes `config: {skip: true}`.
/// kiln compared whole objects, so nothing was excluded and every configuration ran.
#[tokio::test]
async fn exclude_matches_part_of_an_object_in_the_matrix() {
    let ran = run_with(
        r#"
on: push
jobs:
  test:
    name: test ${{ matrix.config.v }}
    strategy:
      matrix:
        config:
          - v: main
          - v: on-push-only
            skip: ${{ github.event_name != 'push' }}
          - v: not-on-push
            skip: ${{ github.event_name == 'push' }}
        exclude:
          - config:
              skip: true
    runs-on: ubuntu-latest
    steps:
      - run: echo "ran ${{ matrix.config.v }}"
"#,
        |_| {},
    )
    .await;
    assert_eq!(ran.result.status, Status::Success);
    assert_eq!(ran.logs("test main"), ["ran main"]);
    assert_eq!(ran.logs("test on-push-only"), ["ran on-push-only"]);
    assert!(ran.logs("test not-on-push").is_empty());
    let names: Vec<String> = ran.store.jobs().into_iter().map(|(_, j)| j.name).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// Workflow syntax, `jobs.<job_id>.steps[*].run` and `name`: string keys. A key with no value
/// (nothing, or only a comment, after the colon: fmtlib/fmt's doc workflow disabled its build
/// step as `run: # ...`) is YAML null, which GitHub's template reader converts to '' wherever a
/// string is allowed: the step runs an empty script and succeeds. kiln once refused the file
/// ("must be a string, found null").
#[tokio::test]
async fn a_null_run_or_name_is_an_empty_string() {
    let ran = run_with(
        r#"
on: push
jobs:
  a:
    name:
    runs-on: ubuntu-latest
    steps:
      - id: empty
        name:
        run: # disabled for now
      - run: echo "empty=${{ steps.empty.outcome }}"
"#,
        |_| {},
    )
    .await;
    assert_eq!(ran.result.status, Status::Success);
    let logs = ran.logs("a");
    assert!(logs.contains(&"empty=success".to_owned()), "{logs:?}");
}

/// Expressions, `if`: an empty condition (`if: ''`, blanks, or `if:` with no value, which
/// GitHub reads as '') is the default `success()`, as GitHub's converter makes it: the job and
/// the step run, and a failure before still skips them. kiln once skipped them (and refused a
/// null `if` as "must be a string").
#[tokio::test]
async fn an_empty_if_is_success() {
    let ran = run_with(
        r#"
on: push
jobs:
  a:
    if: ""
    runs-on: ubuntu-latest
    steps:
      - if: " "
        run: echo blank-ran
      - if:
        run: echo null-ran
  b:
    needs: a
    if:
    runs-on: ubuntu-latest
    steps:
      - run: "false"
      - if: ""
        run: echo after-failure-ran
"#,
        |_| {},
    )
    .await;
    let a = ran.logs("a");
    for line in ["blank-ran", "null-ran"] {
        assert!(a.contains(&line.to_owned()), "{line}: {a:?}");
    }
    assert_eq!(ran.job("a").status, Status::Success);
    assert_eq!(ran.job("b").status, Status::Failure);
    assert!(!ran.logs("b").contains(&"after-failure-ran".to_owned()));
}
