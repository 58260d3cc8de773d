//! End to end: real workflows in temporary git repositories, run on the host.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test helpers may panic: that is how tests fail.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_pipelines::{Level, RunEvent, RunOptions, Status, load};
use tempfile::TempDir;

mod common;

use common::{Ran, git_in, repo, run_in};

async fn run_one(files: &[(&str, &str)], tweak: impl FnOnce(&mut RunOptions)) -> Ran {
    let repo = repo(files);
    let state = TempDir::new().unwrap();
    run_in(repo.path(), state.path(), ".github/workflows/ci.yml", tweak).await
}

const WF: &str = ".github/workflows/ci.yml";

/// Runs `yaml` as the repository's only workflow.
async fn run_workflow(yaml: &str) -> Ran {
    run_one(&[(WF, yaml)], |_| {}).await
}

#[tokio::test]
async fn matrix_and_needs_outputs() {
    let ran = run_one(
        &[(WF, r#"
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    outputs:
      version: ${{ steps.v.outputs.version }}
    steps:
      - id: v
        run: echo "version=1.2" >> "$GITHUB_OUTPUT"
  test:
    needs: build
    runs-on: ubuntu-latest
    strategy:
      matrix:
        svc: [api, web]
        include: [{ svc: api, port: 80 }]
    steps:
      - run: echo "svc=${{ matrix.svc }} port=${{ matrix.port }} v=${{ needs.build.outputs.version }} r=${{ needs.build.result }} i=${{ strategy.job-index }}"
"#)],
        |_| {},
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    assert_eq!(
        ran.logs("test (api)"),
        ["svc=api port=80 v=1.2 r=success i=0"]
    );
    assert_eq!(
        ran.logs("test (web)"),
        ["svc=web port= v=1.2 r=success i=1"]
    );
}

#[tokio::test]
async fn status_functions_and_continue_on_error() {
    let ran = run_one(
        &[(
            WF,
            r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - id: soft
        run: exit 3
        continue-on-error: true
      - run: echo "after soft ${{ steps.soft.outcome }} ${{ steps.soft.conclusion }}"
      - run: exit 1
      - run: echo never
      - if: failure()
        run: echo on-failure
      - if: always()
        run: echo always
      - if: success()
        run: echo never-either
  b:
    needs: a
    runs-on: ubuntu-latest
    steps: [ { run: echo b } ]
  c:
    needs: a
    if: failure()
    runs-on: ubuntu-latest
    steps: [ { run: "echo c sees ${{ needs.a.result }}" } ]
  d:
    needs: a
    if: always()
    runs-on: ubuntu-latest
    steps: [ { run: echo d } ]
"#,
        )],
        |_| {},
    )
    .await;
    assert_eq!(ran.result.status, Status::Failure);
    let a = ran.logs("a");
    assert!(
        a.contains(&"after soft failure success".to_owned()),
        "{a:?}"
    );
    assert!(
        a.contains(&"on-failure".to_owned()) && a.contains(&"always".to_owned()),
        "{a:?}"
    );
    assert!(!a.iter().any(|l| l.starts_with("never")), "{a:?}");
    assert!(
        a.contains(&"##[error]Process completed with exit code 1.".to_owned()),
        "{a:?}"
    );
    assert_eq!(ran.result.jobs["b"], Status::Skipped);
    assert_eq!(ran.logs("c"), ["c sees failure"]);
    assert_eq!(ran.logs("d"), ["d"]);
    let steps = ran.job("a").steps;
    assert_eq!(steps[0].exit_code, Some(3));
    assert_eq!(steps[3].outcome, Status::Skipped);
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let started = Instant::now();
    let ran = run_one(
        &[(WF, "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: 'sleep 100 & sleep 100'\n        timeout-minutes: 1\n      - if: always()\n        run: echo after\n")],
        |o| {
            o.kill_grace = Duration::from_millis(200);
            o.minute = Duration::from_millis(600);
        },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(ran.result.status, Status::Failure);
    let logs = ran.logs("a");
    assert!(
        logs.contains(&"##[error]The action has timed out.".to_owned()),
        "{logs:?}"
    );
    assert!(logs.contains(&"after".to_owned()), "{logs:?}");
}

/// GitHub's environments: a job that names one reads its variables and secrets over the
/// repository's (names compared case-insensitively, the name may come from the matrix); a job
/// that names none, or an environment with nothing configured, reads the repository's.
#[tokio::test]
async fn a_job_in_an_environment_reads_its_variables_and_secrets() {
    let ran = run_one(
        &[(
            WF,
            r#"
on: push
jobs:
  plain:
    runs-on: ubuntu-latest
    steps:
      - run: echo "plain ${{ vars.REGION }} ${{ vars.TIER }} $(echo "$DB" | tr a-z A-Z)"
        env: { DB: "${{ secrets.DB }}" }
  deploy:
    runs-on: ubuntu-latest
    strategy:
      matrix:
        target: [Staging, review]
    environment: ${{ matrix.target }}
    steps:
      - run: echo "${{ matrix.target }} ${{ vars.REGION }} ${{ vars.TIER }} $(echo "$DB" | tr a-z A-Z)"
        env: { DB: "${{ secrets.db }}" }
"#,
        )],
        |o| {
            o.vars.insert("REGION".into(), "eu".into());
            o.vars.insert("TIER".into(), "base".into());
            o.secrets.insert("DB".into(), "repo-password".into());
            o.environments.insert(
                "staging".into(),
                kiln_pipelines::EnvironmentScope {
                    vars: [("tier".to_owned(), "small".to_owned())].into_iter().collect(),
                    secrets: [("DB".to_owned(), "staging-password".to_owned())]
                        .into_iter()
                        .collect(),
                },
            );
        },
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    // The secret, upper-cased so the mask does not hide which one the job read.
    assert_eq!(ran.logs("plain"), ["plain eu base REPO-PASSWORD"]);
    assert_eq!(
        ran.logs("deploy (Staging)"),
        ["Staging eu small STAGING-PASSWORD"]
    );
    assert_eq!(
        ran.logs("deploy (review)"),
        ["review eu base REPO-PASSWORD"]
    );
    // Both passwords are secrets: neither reaches a log line or an event as it is.
    let events = format!("{:?}", ran.events);
    assert!(!events.contains("repo-password"), "{events}");
    assert!(!events.contains("staging-password"), "{events}");
}

#[tokio::test]
async fn secrets_are_masked() {
    let ran = run_one(
        &[(
            WF,
            r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    outputs: { leak: "${{ steps.s.outputs.x }}" }
    steps:
      - id: s
        run: |
          echo "token is ${{ secrets.TOKEN }} and $TOKEN"
          echo "::add-mask::dynamic-value"
          echo "now dynamic-value is hidden"
          echo "x=${{ secrets.TOKEN }}" >> "$GITHUB_OUTPUT"
          echo "::warning::careful with hunter2"
          echo "::error file=src/app.js,line=3,col=7,endColumn=9,title=Lint hunter2::unused x"
        env: { TOKEN: "${{ secrets.TOKEN }}" }
"#,
        )],
        |o| {
            o.secrets.insert("TOKEN".into(), "hunter2".into());
        },
    )
    .await;
    let logs = ran.logs("a");
    assert!(
        logs.contains(&"token is *** and ***".to_owned()),
        "{logs:?}"
    );
    assert!(logs.contains(&"now *** is hidden".to_owned()), "{logs:?}");
    assert!(
        !ran.events
            .iter()
            .any(|e| format!("{e:?}").contains("hunter2")),
        "{:?}",
        ran.events
    );
    assert!(
        logs.iter().any(|l| l.contains("Skip output 'leak'")),
        "{logs:?}"
    );
    assert!(ran.events.iter().any(
        |e| matches!(e, RunEvent::Annotation { annotation, .. } if annotation.message == "careful with ***")
    ));
    // Locations and titles are kept (and masked), and the job's record holds them.
    let located = ran
        .events
        .iter()
        .find_map(|e| match e {
            RunEvent::Annotation { annotation, .. } if annotation.location.is_some() => {
                Some(annotation.clone())
            }
            _ => None,
        })
        .unwrap();
    let location = located.location.clone().unwrap();
    assert_eq!(location.to_string(), "src/app.js:3:7");
    assert_eq!(location.end_column, Some(9));
    assert_eq!(location.end_line, None);
    assert_eq!(located.title.as_deref(), Some("Lint ***"));
    assert_eq!(located.message, "unused x");
    let record = ran.job("a");
    assert_eq!(record.annotations.len(), 2, "{:?}", record.annotations);
    assert_eq!(record.annotations[1], located);
}

#[tokio::test]
async fn environment_files() {
    let ran = run_one(
        &[(WF, r#"
on: push
env: { LEVEL: workflow, KEEP: w }
jobs:
  a:
    runs-on: ubuntu-latest
    env: { LEVEL: job }
    outputs: { multi: "${{ steps.o.outputs.multi }}" }
    steps:
      - run: |
          echo "FROM_FILE=one" >> "$GITHUB_ENV"
          { echo "MULTI<<EOF"; echo "line 1"; echo "line 2"; echo "EOF"; } >> "$GITHUB_ENV"
          mkdir -p "$RUNNER_TEMP/bin" && printf '#!/bin/sh\necho tool ran\n' > "$RUNNER_TEMP/bin/mytool" && chmod +x "$RUNNER_TEMP/bin/mytool"
          echo "$RUNNER_TEMP/bin" >> "$GITHUB_PATH"
          echo "summary line" >> "$GITHUB_STEP_SUMMARY"
      - id: o
        run: |
          echo "$LEVEL $KEEP $FROM_FILE ${{ env.FROM_FILE }}"
          echo "$MULTI"
          mytool
          echo "CI=$CI GA=$GITHUB_ACTIONS OS=$RUNNER_OS EV=$GITHUB_EVENT_NAME REF=$GITHUB_REF_NAME"
          test -f "$GITHUB_EVENT_PATH"
          { echo "multi<<XYZ"; echo "a=b"; echo "c"; echo "XYZ"; } >> "$GITHUB_OUTPUT"
        env: { LEVEL: step }
      - run: echo "${{ steps.o.outputs.multi }}" | wc -l
"#)],
        |_| {},
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    let logs = ran.logs("a");
    assert_eq!(
        logs,
        [
            "step w one one",
            "line 1",
            "line 2",
            "tool ran",
            "CI=true GA=true OS=Linux EV=push REF=main",
            "2"
        ]
    );
    let job = ran.job("a");
    assert_eq!(job.outputs["multi"], "a=b\nc");
    assert_eq!(job.summary, "summary line\n");
}

/// An action input's `deprecationMessage` (action metadata syntax): the runner warns with it
/// when a step gives the input, and says nothing when the step leaves it out.
#[tokio::test]
async fn a_deprecated_action_input_warns_when_given() {
    let ran = run_one(
        &[
            (
                ".github/actions/old/action.yml",
                r#"
name: old
inputs:
  token: { description: a token, deprecationMessage: "use `auth` instead" }
  auth: { description: the new way }
runs:
  using: composite
  steps:
    - shell: bash
      run: echo "ran with '${{ inputs.token }}${{ inputs.auth }}'"
"#,
            ),
            (
                WF,
                r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: ./.github/actions/old
        with: { token: t }
      - uses: ./.github/actions/old
        with: { auth: a }
"#,
            ),
        ],
        |_| {},
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    let logs = ran.logs("a");
    let warning = "##[warning]Input 'token' has been deprecated with message: use `auth` instead";
    assert_eq!(
        logs.iter().filter(|l| l.as_str() == warning).count(),
        1,
        "one warning, for the step that gave the input: {logs:?}"
    );
    assert!(logs.iter().any(|l| l == "ran with 't'"), "{logs:?}");
    assert!(logs.iter().any(|l| l == "ran with 'a'"), "{logs:?}");
}

#[tokio::test]
async fn composite_actions_and_reusable_workflows() {
    let ran = run_one(
        &[
            (
                ".github/actions/greet/action.yml",
                r#"
name: greet
inputs:
  who: { description: who, default: world }
  punct: { default: "!" }
outputs:
  said: { value: "${{ steps.say.outputs.said }}" }
runs:
  using: composite
  steps:
    - id: say
      shell: bash
      run: |
        echo "hello ${{ inputs.who }}${{ inputs.punct }}"
        echo "said=hello ${{ inputs.who }}" >> "$GITHUB_OUTPUT"
        test -f "$GITHUB_ACTION_PATH/action.yml"
"#,
            ),
            (
                ".github/workflows/lib.yml",
                r#"
on:
  workflow_call:
    inputs:
      name: { type: string, required: true }
      loud: { type: boolean, default: false }
    secrets:
      key: { required: true }
    outputs:
      result: { value: "${{ jobs.inner.outputs.r }}" }
jobs:
  inner:
    runs-on: ubuntu-latest
    outputs: { r: "${{ steps.x.outputs.r }}" }
    steps:
      - id: x
        run: |
          echo "inner ${{ inputs.name }} loud=${{ inputs.loud }} key=${{ secrets.key }}"
          echo "r=done-${{ inputs.name }}" >> "$GITHUB_OUTPUT"
"#,
            ),
            (
                WF,
                r#"
on: push
jobs:
  local:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: ./.github/actions/greet
        id: g
        with: { who: kiln }
      - uses: ./.github/actions/greet
      - run: echo "got ${{ steps.g.outputs.said }}"
  call:
    uses: ./.github/workflows/lib.yml
    with: { name: lib, loud: true }
    secrets: { key: s3 }
  after:
    needs: call
    runs-on: ubuntu-latest
    steps: [ { run: "echo ${{ needs.call.outputs.result }}" } ]
"#,
            ),
        ],
        |_| {},
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    assert_eq!(
        ran.logs("local")[1..],
        ["hello kiln!", "hello world!", "got hello kiln"]
    );
    // A secret given to the called workflow is masked there, a literal one too.
    assert_eq!(ran.logs("call / inner"), ["inner lib loud=true key=***"]);
    assert_eq!(ran.logs("after"), ["done-lib"]);
}

#[tokio::test]
async fn cache_miss_then_hit() {
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
      - id: c
        uses: actions/cache@v4
        with:
          path: deps
          key: deps-${{ hashFiles('lock.txt') }}
          restore-keys: deps-
      - run: echo "hit=${{ steps.c.outputs.cache-hit }}"
      - if: steps.c.outputs.cache-hit != 'true'
        run: mkdir -p deps && echo built > deps/out.txt
      - run: cat deps/out.txt
"#,
        ),
        ("lock.txt", "v1"),
    ];
    let repo = repo(&files);
    let state = TempDir::new().unwrap();
    let first = run_in(repo.path(), state.path(), WF, |o| o.run_id = 1).await;
    // A miss leaves `cache-hit` empty, as actions/cache does.
    assert_eq!(first.logs("a")[2], "hit=", "{:?}", first.logs("a"));
    let second = run_in(repo.path(), state.path(), WF, |o| o.run_id = 2).await;
    let logs = second.logs("a");
    assert_eq!(logs[2], "hit=true", "{logs:?}");
    assert_eq!(logs.last().unwrap(), "built");
    // A new lockfile misses the key but restores through the prefix.
    std::fs::write(repo.path().join("lock.txt"), "v2").unwrap();
    Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qam",
            "v2",
        ])
        .current_dir(repo.path())
        .output()
        .unwrap();
    let third = run_in(repo.path(), state.path(), WF, |o| o.run_id = 3).await;
    let logs = third.logs("a");
    assert!(
        logs[1].starts_with("Cache restored from key: deps-"),
        "{logs:?}"
    );
    assert_eq!(logs[2], "hit=false");
    assert_eq!(logs[logs.len() - 2], "built");
    assert!(
        logs.last()
            .unwrap()
            .starts_with("Cache saved with key: deps-"),
        "{logs:?}"
    );
}

/// `actions/cache/restore` and `actions/cache/save`, the split halves of `actions/cache`:
/// restore leaves no save for the job's end, save saves where its step stands (so a later
/// failing step does not lose it), and saving a key that exists warns and goes on.
#[tokio::test]
async fn split_cache_actions_restore_and_save_where_the_steps_stand() {
    let files = [(
        WF,
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - id: restore
        uses: actions/cache/restore@v4
        with:
          path: out
          key: out-${{ github.run_id }}
          restore-keys: out-
      - run: echo "hit=${{ steps.restore.outputs.cache-hit }} matched=${{ steps.restore.outputs.cache-matched-key }}"
      - run: mkdir -p out && echo "saved by ${{ github.run_id }}" > out/f && cat out/f
      - uses: actions/cache/save@v4
        with:
          path: out
          key: out-${{ github.run_id }}
      - uses: actions/cache/save@v4
        with:
          path: out
          key: out-${{ github.run_id }}
      - run: exit 1
"#,
    )];
    let repo = repo(&files);
    let state = TempDir::new().unwrap();
    let first = run_in(repo.path(), state.path(), WF, |o| o.run_id = 1).await;
    let logs = first.logs("a");
    assert_eq!(first.result.status, Status::Failure, "{logs:?}");
    assert_eq!(logs[1], "hit= matched=", "{logs:?}");
    assert!(
        logs.contains(&"Cache saved with key: out-1".to_owned()),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l
                .starts_with("##[warning]Failed to save: Unable to reserve cache with key out-1")),
        "{logs:?}"
    );
    assert!(
        !logs.iter().any(|l| l.contains("Not saving cache")),
        "no save is left for the job's end: {logs:?}"
    );

    let second = run_in(repo.path(), state.path(), WF, |o| o.run_id = 2).await;
    let logs = second.logs("a");
    assert_eq!(logs[0], "Cache restored from key: out-1", "{logs:?}");
    assert_eq!(logs[1], "hit=false matched=out-1", "{logs:?}");
}

#[tokio::test]
async fn artifacts_across_jobs_and_hash_files() {
    let ran = run_one(
        &[
            (
                WF,
                r#"
on: push
jobs:
  make:
    runs-on: ubuntu-latest
    steps:
      - run: mkdir -p dist/sub && echo one > dist/a.txt && echo two > dist/sub/b.txt
      - uses: actions/upload-artifact@v4
        with: { name: dist, path: dist/ }
  use:
    needs: make
    runs-on: ubuntu-latest
    steps:
      - uses: actions/download-artifact@v4
        with: { name: dist, path: got }
      - run: cat got/a.txt got/sub/b.txt
      - run: echo "before checkout '${{ hashFiles('src/**/*.txt') }}'"
      - uses: actions/checkout@v4
      - run: echo "${{ hashFiles('src/**/*.txt', '!src/skip.txt') }}"
"#,
            ),
            ("src/x.txt", "x"),
            ("src/skip.txt", "s"),
        ],
        |_| {},
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    let logs = ran.logs("use");
    assert_eq!(&logs[1..4], ["one", "two", "before checkout ''"]);
    let expected = {
        use sha2::{Digest, Sha256};
        let mut all = Sha256::new();
        all.update(Sha256::digest(b"x"));
        hex::encode(all.finalize())
    };
    assert_eq!(logs[5], expected);
}

/// upload-artifact v4's outputs, as its README lists them: `artifact-id` (the artifact's
/// number, which release workflows hand to signing and attestation steps through job
/// outputs), `artifact-url` (`<server>/<repository>/actions/runs/<run>/artifacts/<id>`) and
/// `artifact-digest` (a SHA-256). download-artifact's `download-path` is where it wrote,
/// with `~` expanded ("basic tilde expansion").
#[tokio::test]
async fn artifact_outputs_are_the_ones_upload_and_download_artifact_set() {
    let ran = run_one(
        &[(
            WF,
            r#"
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    outputs:
      id: ${{ steps.upload.outputs.artifact-id }}
    steps:
      - run: mkdir dist && echo one > dist/a.txt
      - uses: actions/upload-artifact@v4
        with: { name: first, path: dist }
      - id: upload
        uses: actions/upload-artifact@v4
        with: { name: second, path: dist/a.txt }
      - run: |
          echo "id=${{ steps.upload.outputs.artifact-id }}"
          echo "url=${{ steps.upload.outputs.artifact-url }}"
          echo "digest=${{ steps.upload.outputs.artifact-digest }}"
  use:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - id: down
        uses: actions/download-artifact@v4
        with: { name: second, path: ~/dl }
      - run: echo "from build ${{ needs.build.outputs.id }} at ${{ steps.down.outputs.download-path }}"
      - run: cat "${{ steps.down.outputs.download-path }}/a.txt"
"#,
        )],
        |o| o.run_id = 7,
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    let logs = ran.logs("build");
    let line = |key: &str| {
        logs.iter()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {logs:?}"))
            .to_owned()
    };
    assert_eq!(line("id="), "2", "the job's second upload: {logs:?}");
    let url = line("url=");
    assert!(
        url.starts_with("http://localhost/") && url.ends_with("/actions/runs/7/artifacts/2"),
        "{url}"
    );
    let digest = line("digest=");
    assert!(
        digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()),
        "{digest}"
    );
    let used = ran.logs("use");
    let from = used
        .iter()
        .find(|l| l.starts_with("from build"))
        .unwrap_or_else(|| panic!("{used:?}"));
    assert!(
        from.starts_with("from build 2 at /") && from.ends_with("/home/dl"),
        "{from}"
    );
    assert_eq!(used.last().map(String::as_str), Some("one"), "{used:?}");
}

/// download-artifact's `artifact-ids` (v4.2 and later): the artifacts with those numbers,
/// typically handed over as a job output from upload-artifact's `artifact-id`. One artifact
/// goes into the path itself (v5's rule, like a download by name), several each into a
/// directory named after it; numbers not found are a warning while others are, an error when
/// none is; `name` and `artifact-ids` together are refused, in the action's words.
#[tokio::test]
async fn download_artifact_takes_artifacts_by_their_numbers() {
    let ran = run_workflow(
        r#"
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    outputs:
      first: ${{ steps.first.outputs.artifact-id }}
      second: ${{ steps.second.outputs.artifact-id }}
    steps:
      - run: echo one > one.txt && echo two > two.txt
      - id: first
        uses: actions/upload-artifact@v4
        with: { name: first, path: one.txt }
      - id: second
        uses: actions/upload-artifact@v4
        with: { name: second, path: two.txt }
  use:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - uses: actions/download-artifact@v5
        with:
          artifact-ids: ${{ needs.build.outputs.second }}
          path: single
      - uses: actions/download-artifact@v5
        with:
          artifact-ids: ${{ needs.build.outputs.first }}, ${{ needs.build.outputs.second }},99
          path: both
      - run: cat single/two.txt both/first/one.txt both/second/two.txt
      - id: none
        continue-on-error: true
        uses: actions/download-artifact@v5
        with: { artifact-ids: '98,99' }
      - id: both-inputs
        continue-on-error: true
        uses: actions/download-artifact@v5
        with: { name: first, artifact-ids: '1' }
      - id: not-a-number
        continue-on-error: true
        uses: actions/download-artifact@v5
        with: { artifact-ids: 'one' }
      - run: echo "${{ steps.none.outcome }} ${{ steps.both-inputs.outcome }} ${{ steps.not-a-number.outcome }}"
"#,
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    let used = ran.logs("use");
    let has = |text: &str| used.iter().any(|l| l.contains(text));
    for text in [
        "one",
        "two",
        "Could not find the following artifact IDs: 99",
        "Unable to download artifact(s): None of the provided artifact IDs were found",
        "Unable to download artifact(s): Inputs 'name' and 'artifact-ids' cannot be used together. Please specify only one.",
        "Unable to download artifact(s): Invalid artifact ID: 'one'. Must be a number.",
        "failure failure failure",
    ] {
        assert!(has(text), "no {text:?} in {used:?}");
    }
}

/// upload-artifact takes paths outside the workspace: Docker's multi-platform build recipe,
/// which vaultwarden's release workflow (AGPL-3.0) follows, uploads
/// `${{ runner.temp }}/digests/*` from each leg and downloads them all into the same
/// directory of the merging job. Files are named relative to the patterns' common search
/// path, and a hidden search path still hides its files. The workflow here is our own.
#[tokio::test]
async fn artifacts_upload_from_outside_the_workspace() {
    let ran = run_workflow(
        r#"
on: push
jobs:
  build:
    strategy:
      matrix:
        arch: [amd64, arm64]
    runs-on: ubuntu-latest
    steps:
      - run: |
          mkdir -p "$RUNNER_TEMP/digests" "$RUNNER_TEMP/.hidden"
          touch "$RUNNER_TEMP/digests/${{ matrix.arch }}" "$RUNNER_TEMP/.hidden/x"
      - uses: actions/upload-artifact@v4
        with:
          name: digests-${{ matrix.arch }}
          path: ${{ runner.temp }}/digests/*
          if-no-files-found: error
      - uses: actions/upload-artifact@v4
        with:
          name: hidden-${{ matrix.arch }}
          path: ${{ runner.temp }}/.hidden
  merge:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - uses: actions/download-artifact@v4
        with:
          path: ${{ runner.temp }}/digests
          pattern: digests-*
          merge-multiple: true
      - run: ls
        working-directory: ${{ runner.temp }}/digests
"#,
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    assert_eq!(
        ran.logs("merge"),
        ["Downloaded digests-amd64, digests-arm64", "amd64", "arm64"]
    );
    let build = ran.logs("build (amd64)");
    assert!(
        build.iter().any(|l| l.contains("No files were found")),
        "the hidden directory uploads nothing: {build:?}"
    );
}

/// `download-artifact` without a name: every artifact matching `pattern`, each into a
/// directory of its name, or all into `path` itself with `merge-multiple` (matrix legs
/// uploading one artifact each, gathered by one job: the common use). As the action's
/// source has it, `download-path` is set only once something was downloaded, and a missing
/// artifact fails with its words.
#[tokio::test]
async fn artifacts_by_pattern_each_in_its_directory_or_merged() {
    let ran = run_workflow(
        r#"
on: push
jobs:
  leg:
    strategy:
      matrix:
        n: [1, 2]
    runs-on: ubuntu-latest
    steps:
      - run: mkdir -p out && echo "leg ${{ matrix.n }}" > out/leg-${{ matrix.n }}.txt
      - uses: actions/upload-artifact@v4
        with: { name: "out-${{ matrix.n }}", path: out/ }
      - uses: actions/upload-artifact@v4
        with: { name: "other-${{ matrix.n }}", path: out/ }
  gather:
    needs: leg
    runs-on: ubuntu-latest
    steps:
      - uses: actions/download-artifact@v4
        with: { pattern: "out-*", path: each }
      - run: ls each && cat each/out-2/leg-2.txt
      - uses: actions/download-artifact@v4
        with: { pattern: "out-*", path: merged, merge-multiple: true }
      - run: ls merged
      - id: none
        uses: actions/download-artifact@v4
        with: { pattern: "none-*" }
      - run: echo "path=[${{ steps.none.outputs.download-path }}]"
      - uses: actions/download-artifact@v4
        continue-on-error: true
        with: { name: missing }
"#,
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    let logs = ran.logs("gather");
    assert_eq!(
        logs,
        [
            "Downloaded out-1, out-2",
            "out-1",
            "out-2",
            "leg 2",
            "Downloaded out-1, out-2",
            "leg-1.txt",
            "leg-2.txt",
            "No artifacts found to download",
            "path=[]",
            "##[error]Unable to download artifact(s): Artifact 'missing' not found",
        ],
        "{logs:?}"
    );
}

/// The host's version of a tool, as `tool --version` prints it (`v20.11.1`, `Python 3.11.7`).
fn host_version(program: &str) -> String {
    let out = Command::new(program).arg("--version").output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.split_whitespace()
        .map(|w| w.trim_start_matches('v'))
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap()
        .to_owned()
}

/// setup-node and setup-python read `node-version-file` / `python-version-file` (checked
/// against the host's tool like the version inputs), and a package cache keyed by the lock
/// file; a file that is missing or names a version the host lacks, and a cache kiln does not
/// know, fail the step clearly.
#[tokio::test]
async fn setup_actions_read_version_files_and_package_caches() {
    let node = host_version("node");
    let node_major = node.split('.').next().unwrap().to_owned();
    let python = host_version("python3");
    let python_minor = python.split('.').take(2).collect::<Vec<_>>().join(".");
    let package_json = format!(r#"{{"name":"x","engines":{{"node":">={node_major}"}}}}"#);
    let files = [
        (
            WF,
            r#"
on: push
jobs:
  good:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - id: n
        uses: actions/setup-node@v4
        with: { node-version-file: .nvmrc }
      - uses: actions/setup-node@v4
        with: { node-version-file: package.json }
      - id: p
        uses: actions/setup-python@v5
        with: { python-version-file: .python-version, cache: pipenv }
      - run: echo "node=${{ steps.n.outputs.node-version }} hit=${{ steps.p.outputs.cache-hit }}"
  too-old:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-node@v4
        with: { node-version-file: old.nvmrc }
  missing:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-node@v4
        with: { node-version-file: nowhere/.nvmrc }
  unknown-cache:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-node@v4
        with: { cache: bower }
"#,
        ),
        (".nvmrc", &format!("v{node_major}\n")),
        ("package.json", &package_json),
        (".python-version", &format!("{python_minor}\n")),
        ("Pipfile.lock", "{}"),
        ("old.nvmrc", "0.10\n"),
    ];
    let ran = run_one(&files, |_| {}).await;
    let good = ran.logs("good");
    assert!(
        good.contains(&format!("node=v{node} hit=false")),
        "{good:?}"
    );
    assert!(
        good.iter().any(
            |l| l.starts_with("Cache not found for input keys: setup-python-Linux-")
                && l.contains(&format!("-python-{python}-pipenv-"))
        ),
        "{good:?}"
    );
    let too_old = ran.logs("too-old").join("\n");
    assert!(
        too_old.contains("node-version `0.10` is not satisfied by the host's node"),
        "{too_old}"
    );
    let missing = ran.logs("missing").join("\n");
    assert!(
        missing.contains("The specified node version file at: ")
            && missing.contains("nowhere/.nvmrc does not exist"),
        "{missing}"
    );
    let unknown = ran.logs("unknown-cache").join("\n");
    assert!(
        unknown.contains("Caching for 'bower' is not supported"),
        "{unknown}"
    );
}

/// `actions/checkout` with `submodules: true` checks out the submodules at the commits the
/// repository records; without it the submodule's directory stays empty, as on GitHub.
#[tokio::test]
async fn checkout_fetches_submodules_when_asked() {
    let sub = repo(&[("f.txt", "from the submodule")]);
    let main = repo(&[(
        WF,
        r#"
on: push
jobs:
  with:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with: { submodules: true }
      - run: cat libs/sub/f.txt
  without:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: ls -A libs/sub | wc -l
  other:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with: { submodules: sometimes }
      - run: ls -A libs/sub | wc -l
  upper:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with: { submodules: RECURSIVE }
      - run: cat libs/sub/f.txt
"#,
    )]);
    let git = |args: &[&str]| git_in(main.path(), args);
    git(&[
        "submodule",
        "add",
        "-q",
        &sub.path().to_string_lossy(),
        "libs/sub",
    ]);
    git(&["commit", "-qm", "add the submodule"]);
    let state = TempDir::new().unwrap();
    let ran = run_in(main.path(), state.path(), WF, |_| {}).await;
    let with = ran.logs("with");
    assert_eq!(
        with[1..],
        ["Submodules updated", "from the submodule"],
        "{with:?}"
    );
    assert_eq!(ran.logs("without")[1..], ["0"]);
    // actions/checkout's input-helper.ts compares the value in upper case, and anything but
    // TRUE or RECURSIVE is false.
    assert_eq!(ran.logs("other")[1..], ["0"]);
    assert_eq!(
        ran.logs("upper")[1..],
        ["Submodules updated (recursively)", "from the submodule"]
    );
}

/// `actions/checkout`'s `ref:` resolved as the action resolves it (input-helper.ts,
/// ref-helper.ts's `getCheckoutInfo`): a branch before a tag of the same name, a ref that
/// does not exist fails the step with the action's words naming it (an abbreviated SHA is
/// such a ref), and the checkout already in the workspace is left as it was. `sparse-checkout`
/// lands only its directories (and the top-level files, in cone mode), and one git refuses
/// leaves the checkout there as it was; `clean: false` over a checkout is refused rather than
/// ignored.
#[tokio::test]
async fn checkout_refs_sparse_and_clean_as_actions_checkout() {
    let repo = repo(&[
        (
            WF,
            r#"
on: push
jobs:
  missing:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - id: co
        uses: actions/checkout@v4
        with: { ref: no-such-branch }
      - if: always()
        run: echo "${{ steps.co.outcome }} $(cat top.txt)"
  qualified:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with: { ref: refs/heads/no-such-branch }
  short-sha:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with: { ref: "${{ github.sha }}" }
      - run: echo "full sha ok"
      - uses: actions/checkout@v4
        with: { ref: "${{ github.sha != '' && 'abcdef1' || '' }}" }
  names:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with: { ref: both }
      - run: cat which.txt
      - uses: actions/checkout@v4
        with: { ref: v1, path: tagged }
      - run: echo "$(cat tagged/which.txt) $(git -C tagged symbolic-ref -q HEAD || echo detached)"
  sparse:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with:
          sparse-checkout: |
            a
      - run: ls
  bad-sparse:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/checkout@v4
        with: { sparse-checkout: "a/*.txt" }
      - if: always()
        run: echo "still $(cat top.txt)"
  clean:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with: { clean: false }
      - run: echo built > out.txt
      - uses: actions/checkout@v4
        with: { clean: false }
"#,
        ),
        ("top.txt", "main"),
        ("which.txt", "main"),
        ("a/x.txt", "x"),
        ("b/y.txt", "y"),
    ]);
    let git = |args: &[&str]| git_in(repo.path(), args);
    // A tag `v1` and a tag and a branch both named `both`: the branch wins.
    std::fs::write(repo.path().join("which.txt"), "tag").unwrap();
    git(&["commit", "-qam", "tag"]);
    git(&["tag", "v1"]);
    git(&["tag", "both"]);
    std::fs::write(repo.path().join("which.txt"), "branch").unwrap();
    git(&["commit", "-qam", "branch"]);
    git(&["branch", "both"]);
    git(&["reset", "-q", "--hard", "HEAD~2"]);
    let state = TempDir::new().unwrap();
    let ran = run_in(repo.path(), state.path(), WF, |_| {}).await;
    let error = |job: &str| {
        ran.logs(job)
            .into_iter()
            .filter(|l| l.starts_with("##[error]"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        error("missing"),
        ["##[error]A branch or tag with the name 'no-such-branch' could not be found"]
    );
    assert_eq!(ran.logs("missing").last().unwrap(), "failure main");
    assert_eq!(
        error("qualified"),
        ["##[error]fatal: couldn't find remote ref refs/heads/no-such-branch"]
    );
    assert_eq!(ran.job("qualified").status, Status::Failure);
    assert!(ran.logs("short-sha").contains(&"full sha ok".to_owned()));
    assert_eq!(
        error("short-sha"),
        ["##[error]A branch or tag with the name 'abcdef1' could not be found"]
    );
    let names = ran.logs("names");
    assert!(names.contains(&"branch".to_owned()), "{names:?}");
    assert_eq!(names.last().unwrap(), "tag detached", "{names:?}");
    let sparse = ran.logs("sparse");
    assert_eq!(sparse.last().unwrap(), "which.txt", "{sparse:?}");
    assert!(sparse.contains(&"a".to_owned()) && !sparse.contains(&"b".to_owned()));
    assert_eq!(ran.job("sparse").status, Status::Success);
    // git refuses a pattern in cone mode after the clone: the checkout already there stays.
    let bad_sparse = error("bad-sparse");
    assert_eq!(bad_sparse.len(), 1, "{bad_sparse:?}");
    assert!(
        bad_sparse[0].contains("specify directories rather than patterns"),
        "{bad_sparse:?}"
    );
    assert_eq!(ran.logs("bad-sparse").last().unwrap(), "still main");
    let clean = error("clean");
    assert_eq!(clean.len(), 1, "{clean:?}");
    assert!(clean[0].contains("clean: false keeps the untracked files"));
}

#[tokio::test]
async fn fail_fast_cancels_matrix_siblings() {
    let started = Instant::now();
    let ran = run_one(
        &[(
            WF,
            r#"
on: push
jobs:
  t:
    runs-on: ubuntu-latest
    strategy:
      matrix: { kind: [fail, slow] }
    steps:
      - run: |
          if [ "${{ matrix.kind }}" = fail ]; then exit 1; fi
          sleep 100
"#,
        )],
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
    assert_eq!(ran.result.status, Status::Failure);
}

/// A leg fail-fast cancels before it started is still a job of the run, cancelled, as GitHub
/// lists it; kiln printed "job cancelled" for it but recorded no job, so `kiln ci show` left it
/// out (found running microsoft/TypeScript's CI, `fail-fast` on and `max-parallel` reached).
#[tokio::test]
async fn legs_cancelled_before_they_start_are_recorded() {
    let ran = run_one(
        &[(
            WF,
            r#"
on: push
jobs:
  t:
    runs-on: ubuntu-latest
    strategy:
      max-parallel: 1
      matrix: { n: [1, 2, 3] }
    steps:
      - run: exit ${{ matrix.n == 1 && 1 || 0 }}
"#,
        )],
        |_| {},
    )
    .await;
    assert_eq!(ran.job("t (1)").status, Status::Failure);
    assert_eq!(ran.job("t (2)").status, Status::Cancelled);
    assert_eq!(ran.job("t (3)").status, Status::Cancelled);
    assert!(ran.job("t (3)").steps.is_empty());
}

#[tokio::test]
async fn shells_and_working_directory() {
    let ran = run_one(
        &[
            (
                WF,
                r#"
on: push
defaults: { run: { working-directory: sub } }
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: pwd | xargs basename
      - shell: sh
        run: echo "sh $0" | sed 's/ .*\// /'
      - shell: python
        run: print("py", 1 + 1)
      - shell: bash {0}
        working-directory: .
        run: false; echo "no -e here"
"#,
            ),
            ("sub/keep", ""),
        ],
        |_| {},
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    let logs = &ran.logs("a")[1..];
    assert_eq!(logs[0], "sub");
    assert!(logs[1].starts_with("sh "), "{logs:?}");
    assert_eq!(&logs[2..], ["py 2", "no -e here"]);
}

/// A step's own `env` is in the `env` context of its `if`: actions/runner's `StepsRunner`
/// evaluates and merges it before the condition. 0xPolygon/polygon-edge's test workflow
/// guards its SonarQube steps this way, with `HAVE_SONAR_TOKEN: ${{ secrets.SONAR_TOKEN !=
/// '' }}` in the step's env; the example here is our own. An `env` that does not evaluate
/// fails the step, whatever its `if`.
#[tokio::test]
async fn a_steps_if_sees_its_own_env() {
    let yaml = r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - name: scan
        if: env.HAVE_TOKEN == 'true'
        env:
          HAVE_TOKEN: ${{ secrets.TOKEN != '' }}
        run: echo "scan with $HAVE_TOKEN"
      - if: env.HAVE_TOKEN == 'true'
        run: echo "not the next step's"
      - name: broken
        if: false
        env:
          BAD: ${{ fromJSON('{') }}
        run: echo never
"#;
    let with = run_one(&[(WF, yaml)], |o| {
        o.secrets.insert("TOKEN".into(), "t0ken".into());
    })
    .await;
    assert_eq!(with.logs("a")[0], "scan with true", "{:?}", with.events);
    assert!(
        !with.logs("a").iter().any(|l| l.contains("next step")),
        "{:?}",
        with.logs("a")
    );
    assert_eq!(with.result.status, Status::Failure, "the broken env fails");
    let without = run_workflow(yaml).await;
    assert!(
        !without.logs("a").iter().any(|l| l.starts_with("scan")),
        "{:?}",
        without.logs("a")
    );
}

/// A step's `working-directory:` with no value runs in the workspace: actions/runner's script
/// handler applies `defaults.run.working-directory` only to a step without the key. The
/// construct is from ruby/ruby's `windows.yml` (Ruby or BSD-2-Clause licence), whose first
/// step makes the directory the defaults name for every later step; the example is our own.
#[tokio::test]
async fn an_empty_working_directory_is_the_workspace_not_the_default() {
    let ran = run_workflow(
        r#"
on: push
defaults:
  run:
    working-directory: build
jobs:
  make:
    runs-on: ubuntu-latest
    steps:
      - run: mkdir build
        working-directory:
      - run: pwd | xargs basename
      - run: pwd | xargs basename
        working-directory: ''
"#,
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    let logs = ran.logs("make");
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert_eq!(logs[0], "build");
    assert_ne!(logs[1], "build", "{logs:?}");
}

#[tokio::test]
async fn each_job_gets_its_own_workspace_and_checkout_makes_a_git_repository() {
    let ran = run_one(
        &[(
            WF,
            r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: ls -A | wc -l
      - uses: actions/checkout@v4
      - run: |
          git rev-parse HEAD
          git branch --show-current
          git status --porcelain | wc -l
          echo scratch > left-by-a
          mkdir -p "$RUNNER_TEMP/made-by-a/deep" && echo x > "$RUNNER_TEMP/made-by-a/deep/f"
  b:
    needs: a
    runs-on: [self-hosted, linux]
    steps:
      - run: test ! -e left-by-a && echo clean
      - run: echo "workspace $(ls -A | wc -l)"; echo "temp $(ls -A "$RUNNER_TEMP")"
      - run: echo scratch > left-by-b; echo x > "$RUNNER_TEMP/made-by-b"
  c:
    needs: b
    runs-on: ubuntu-latest
    steps:
      - run: echo "workspace $(ls -A | wc -l)"; echo "temp $(ls -A "$RUNNER_TEMP")"
"#,
        )],
        |_| {},
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    let logs = ran.logs("a");
    let sha = &logs[2];
    assert_eq!(sha.len(), 40, "{logs:?}");
    assert_eq!(logs[0], "0");
    assert_eq!(&logs[3..], ["main", "0"]);
    // A job never sees what an earlier one left, even in a directory the runner reuses.
    let fresh = ["workspace 0", "temp _runner_file_commands"];
    assert_eq!(ran.logs("b"), ["clean", fresh[0], fresh[1]]);
    assert_eq!(ran.logs("c"), fresh);
}

#[tokio::test]
async fn unknown_runner_labels_fail_the_job_clearly() {
    let ran = run_one(
        &[(
            WF,
            r#"
on: push
jobs:
  t:
    strategy:
      fail-fast: false
      matrix: { os: [ubuntu-latest, windows-latest] }
    runs-on: ${{ matrix.os }}
    steps: [ { run: echo ran } ]
  slim:
    runs-on: ubuntu-slim
    steps: [ { run: echo ran } ]
  gpu:
    runs-on: [self-hosted, gpu]
    steps: [ { run: echo ran } ]
  extra:
    runs-on: [self-hosted, big]
    steps: [ { run: echo ran } ]
"#,
        )],
        |o| o.runner_labels = vec!["BIG".to_owned()],
    )
    .await;
    assert_eq!(ran.logs("t (ubuntu-latest)"), ["ran"]);
    // GitHub's single-CPU Linux runner, as astral-sh/uv's format checks use it.
    assert_eq!(ran.logs("slim"), ["ran"]);
    assert_eq!(ran.logs("extra"), ["ran"]);
    assert_eq!(ran.job("t (windows-latest)").status, Status::Failure);
    let windows = ran.logs("t (windows-latest)");
    assert!(
        windows[0].starts_with(
            "##[error]no runner matches runs-on label `windows-latest`: kiln runs jobs on this host"
        ),
        "{windows:?}"
    );
    assert!(
        windows[0].ends_with("to run only the matrix legs this host can, pass --matrix os=VALUE)"),
        "{windows:?}"
    );
    assert!(
        !ran.logs("gpu")[0].contains("--matrix"),
        "{:?}",
        ran.logs("gpu")
    );
    assert!(
        ran.logs("gpu")[0].contains("`gpu`"),
        "{:?}",
        ran.logs("gpu")
    );
    assert_eq!(ran.result.status, Status::Failure);
}

/// Matrix expansion as "Using a matrix for your jobs" documents it, and `max-parallel: 1`
/// runs the instances one at a time in matrix order (several workers: the order is kiln's,
/// not the scheduler's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_include_exclude_and_max_parallel() {
    let state = TempDir::new().unwrap();
    let trace = state.path().join("trace");
    let workflow = format!(
        r#"
on: push
jobs:
  t:
    runs-on: ubuntu-latest
    strategy:
      max-parallel: 1
      matrix:
        os: [a, b]
        v: [1, 2]
        exclude: [{{ os: b, v: 2 }}]
        include:
          - {{ os: a, v: 1, extra: yes }}
          - {{ os: z }}
    steps:
      - run: |
          echo "start ${{{{ matrix.os }}}}${{{{ matrix.v }}}}" >> {trace}
          echo "${{{{ matrix.os }}}}-${{{{ matrix.v }}}}-${{{{ matrix.extra }}}} of ${{{{ strategy.job-total }}}}"
          sleep 0.05
          echo "end ${{{{ matrix.os }}}}${{{{ matrix.v }}}}" >> {trace}
"#,
        trace = trace.display()
    );
    let repo = repo(&[(WF, &workflow)]);
    let ran = run_in(repo.path(), state.path(), WF, |o| o.max_parallel = 4).await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    let mut names: Vec<String> = ran.store.jobs().into_iter().map(|(_, j)| j.name).collect();
    names.sort();
    // What `include` adds to a leg of the product is not in its name (GitHub's `MatrixBuilder`
    // names the leg before it applies `include`); a leg of its own is named after its values.
    assert_eq!(names, ["t (a, 1)", "t (a, 2)", "t (b, 1)", "t (z)"]);
    assert_eq!(ran.logs("t (a, 1)"), ["a-1-yes of 4"]);
    assert_eq!(ran.logs("t (z)"), ["z-- of 4"]);
    // max-parallel: 1 — every instance ends before the next starts.
    let lines: Vec<String> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 8, "{lines:?}");
    for pair in lines.chunks(2) {
        assert_eq!(pair[0].replace("start", "end"), pair[1], "{lines:?}");
    }
    let starts: Vec<&str> = lines.iter().step_by(2).map(String::as_str).collect();
    assert_eq!(starts, ["start a1", "start a2", "start b1", "start z"]);
}

#[tokio::test]
async fn cancelled_steps_and_job_level_continue_on_error() {
    let ran = run_one(
        &[(
            WF,
            r#"
on: push
jobs:
  t:
    runs-on: ubuntu-latest
    strategy:
      matrix: { kind: [fail, slow] }
    steps:
      - run: |
          if [ "${{ matrix.kind }}" = fail ]; then exit 1; fi
          sleep 100
      - if: cancelled()
        run: echo "cleanup after cancel"
      - if: failure()
        run: echo "failure handler"
  soft:
    runs-on: ubuntu-latest
    continue-on-error: true
    steps: [ { run: exit 4 } ]
  after-soft:
    needs: soft
    runs-on: ubuntu-latest
    steps: [ { run: "echo soft was ${{ needs.soft.result }}" } ]
"#,
        )],
        |o| {
            o.max_parallel = 4;
            o.kill_grace = Duration::from_millis(200);
        },
    )
    .await;
    let slow = ran.logs("t (slow)");
    assert!(
        slow.contains(&"cleanup after cancel".to_owned()),
        "{slow:?}"
    );
    assert!(!slow.contains(&"failure handler".to_owned()), "{slow:?}");
    assert_eq!(ran.logs("t (fail)").last().unwrap(), "failure handler");
    assert_eq!(ran.job("soft").status, Status::Failure);
    assert_eq!(ran.logs("after-soft"), ["soft was success"]);
}

#[tokio::test]
async fn a_timed_out_step_leaves_no_grandchild() {
    let state = TempDir::new().unwrap();
    let pidfile = state.path().join("pid");
    let workflow = format!(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: |\n          (sleep 100; echo never) &\n          echo $! > {}\n          sleep 100\n        timeout-minutes: 1\n",
        pidfile.display()
    );
    let repo = repo(&[(WF, &workflow)]);
    let ran = run_in(repo.path(), state.path(), WF, |o| {
        o.kill_grace = Duration::from_millis(100);
        o.minute = Duration::from_millis(300);
    })
    .await;
    assert_eq!(ran.result.status, Status::Failure);
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    // The subshell was SIGKILLed with its group; it is gone once reaped (or a zombie meanwhile).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .chars()
            .next();
        if matches!(state, None | Some('Z' | 'X')) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} still runs: {stat}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn workflow_commands_and_multiline_secrets() {
    let ran = run_one(
        &[(
            WF,
            r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    outputs: { o: "${{ steps.s.outputs.text }}" }
    steps:
      - id: s
        run: |
          printf '%s\n' "$KEY"
          echo "::group::Build things"
          echo "inside"
          echo "::endgroup::"
          echo "::stop-commands::pause-token"
          echo "::warning::not a command now"
          echo "::pause-token::"
          echo "::notice file=a.txt,line=3::a command again"
          d="ghadelimiter_5b1c"
          { echo "text<<$d"; echo "x=1"; echo "y<<z"; echo "$d"; } >> "$GITHUB_OUTPUT"
          { echo "MY_ENV<<$d"; echo "a"; echo "b"; echo "$d"; } >> "$GITHUB_ENV"
          echo "saved=1" >> "$GITHUB_STATE"
        env: { KEY: "${{ secrets.KEY }}" }
      - run: |
          echo "$MY_ENV" | tr '\n' ' '
          echo
"#,
        )],
        |o| {
            o.secrets.insert(
                "KEY".into(),
                "-----BEGIN-----\nsecret-body\n-----END-----".into(),
            );
        },
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    assert_eq!(
        ran.logs("a"),
        [
            "***",
            "***",
            "***",
            "##[group]Build things",
            "inside",
            "##[endgroup]",
            // The runner logs the lines that stop and resume commands.
            // The token is longer than six characters: the runner masks it.
            "::stop-commands::***",
            "::warning::not a command now",
            "::***::",
            "##[notice]a command again",
            "a b "
        ]
    );
    assert!(!format!("{:?}", ran.events).contains("secret-body"));
    let annotations: Vec<&RunEvent> = ran
        .events
        .iter()
        .filter(|e| matches!(e, RunEvent::Annotation { .. }))
        .collect();
    assert_eq!(annotations.len(), 1, "{annotations:?}");
    assert_eq!(ran.job("a").outputs["o"], "x=1\ny<<z");
}

#[tokio::test]
async fn dispatch_inputs_are_typed_and_defaults_and_custom_shells_apply() {
    let ran = run_one(
        &[(
            WF,
            r#"
on:
  workflow_dispatch:
    inputs:
      flag: { type: boolean, default: false }
      count: { type: number, default: 2 }
      level: { type: choice, options: [low, high], default: low }
defaults:
  run: { shell: python }
jobs:
  a:
    runs-on: ubuntu-latest
    defaults: { run: { shell: "node {0}" } }
    steps:
      - run: console.log("node", ${{ inputs.flag == true }}, ${{ inputs.count == 3 }}, "${{ inputs.level }}", "${{ github.event.inputs.flag }}")
      - shell: sh
        run: echo "sh ${{ inputs.flag && 'on' || 'off' }}"
  b:
    runs-on: ubuntu-latest
    steps:
      - run: print("python", "${{ inputs.count }}")
      - shell: perl {0}
        run: print "perl\n";
"#,
        )],
        |o| {
            o.event_name = "workflow_dispatch".into();
            o.event = serde_json::json!({ "inputs": { "flag": "true", "count": "3" } });
            o.inputs.insert("flag".into(), "true".into());
            o.inputs.insert("count".into(), "3".into());
        },
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    assert_eq!(ran.logs("a"), ["node true true low true", "sh on"]);
    assert_eq!(ran.logs("b"), ["python 3", "perl"]);
}

/// `::stop-commands::` as the runner's `ActionCommandManager.ValidateStopToken` decides: an
/// empty token, `pause-logging` or a command's name is refused with the runner's words, the
/// step fails and commands go on (the `::warning::` after each is one); with
/// `ACTIONS_ALLOW_UNSECURE_STOPCOMMAND_TOKENS` the same token stops them. While stopped,
/// `::add-mask::` is not carried out (the value stays visible), `::TOKEN::` in any case
/// resumes them, and a stop never resumed ends with its step.
#[tokio::test]
async fn stop_commands_tokens_the_runner_refuses_fail_the_step() {
    const REFUSED: &str = "##[error]You cannot use a endToken that is an empty string, the string 'pause-logging', or another workflow command. For more information see: https://docs.github.com/actions/learn-github-actions/workflow-commands-for-github-actions#example-stopping-and-starting-workflow-commands or opt into insecure command execution by setting the `ACTIONS_ALLOW_UNSECURE_STOPCOMMAND_TOKENS` environment variable to `true`.";
    let ran = run_workflow(
        r###"
on: push
jobs:
  refused:
    runs-on: ubuntu-latest
    steps:
      - id: s
        continue-on-error: true
        run: |
          echo "::stop-commands::"
          echo "::warning::one"
          echo "::stop-commands::pause-logging"
          echo "::warning::two"
          echo "::stop-commands::Error"
          echo "::warning::three"
      - run: echo "after ${{ steps.s.outcome }}"
  allowed:
    runs-on: ubuntu-latest
    env: { ACTIONS_ALLOW_UNSECURE_STOPCOMMAND_TOKENS: "true" }
    steps:
      - run: |
          echo "::stop-commands::group"
          echo "::add-mask::visible"
          echo "::error::not an error"
          echo "::GROUP::"
          echo "::notice::a command again"
  short:
    runs-on: ubuntu-latest
    steps:
      - run: |
          echo "::stop-commands::abc"
          echo "::add-mask::visible"
          echo "visible"
          echo "##[ABC]"
          echo "::add-mask::hidden"
          echo "hidden"
          echo "::stop-commands::xyz"
      - run: echo "::notice::commands again in the next step"
"###,
    )
    .await;
    assert_eq!(
        ran.logs("refused"),
        [
            REFUSED,
            "##[warning]one",
            REFUSED,
            "##[warning]two",
            REFUSED,
            "##[warning]three",
            "after failure",
        ]
    );
    assert_eq!(ran.job("refused").steps[0].outcome, Status::Failure);
    assert_eq!(
        ran.logs("allowed"),
        [
            "::stop-commands::group",
            "::add-mask::visible",
            "::error::not an error",
            "::GROUP::",
            "##[notice]a command again",
        ]
    );
    assert_eq!(ran.job("allowed").status, Status::Success);
    assert_eq!(
        ran.logs("short"),
        [
            "::stop-commands::abc",
            "::add-mask::visible",
            "visible",
            "##[ABC]",
            "***",
            "::stop-commands::xyz",
            // Each step's handler has its own ActionCommandManager (Handler.Initialize:
            // `hostContext.CreateService`), so a stop never resumed ends with its step.
            "##[notice]commands again in the next step",
        ]
    );
}

/// The runner's older `##[name]` form and command names in any case are commands too, and a
/// `::name::` the runner does not know is plain output: `##[add-mask]` hides the value (it
/// was printed as is), `##[group]` folds, `::Warning::` annotates, and the lines that stop and
/// resume commands stay in the log.
#[tokio::test]
async fn older_command_form_and_names_in_any_case() {
    let ran = run_workflow(
        r###"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: |
          echo "##[add-mask]hunter2"
          echo "the password is hunter2"
          echo "::echo::on"
          echo "::add-mask::   "
          echo "::add-mask::swordfish"
          echo "::echo::off"
          echo "##[group]Build"
          echo "inside"
          echo "##[endgroup]"
          echo "::Warning file=app.js,LINE=3::careful"
          echo "::section::not a command"
          echo "::stop-commands::tok"
          echo "::error::not an error"
          echo "::tok::"
          echo "##[set-output name=answer]42"
"###,
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    assert_eq!(
        ran.logs("a"),
        [
            "the password is ***",
            "##[warning]Can't add secret mask for empty string in ##[add-mask] command.",
            "::add-mask::***",
            "::echo::off",
            "##[group]Build",
            "inside",
            "##[endgroup]",
            "##[warning]careful",
            "::section::not a command",
            "::stop-commands::tok",
            "::error::not an error",
            "::tok::",
            "##[warning]The `set-output` command is deprecated and will be disabled soon. Please upgrade to using Environment Files. For more information see: https://github.blog/changelog/2022-10-11-github-actions-deprecating-save-state-and-set-output-commands/",
        ]
    );
    let warning = ran
        .events
        .iter()
        .find_map(|e| match e {
            RunEvent::Annotation { annotation, .. } if annotation.message == "careful" => {
                Some(annotation.clone())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(warning.location.unwrap().line, Some(3));
    assert_eq!(ran.job("a").steps[0].outputs["answer"], "42");
}

/// What the setup actions export to later steps, as the real ones do: setup-node's
/// `registry-url` writes an `.npmrc` that reads `NODE_AUTH_TOKEN` and points
/// `NPM_CONFIG_USERCONFIG` at it (with a placeholder token until a step sets one);
/// setup-python exports `pythonLocation` and friends for the host's installation.
#[tokio::test]
async fn setup_actions_export_registry_auth_and_python_location() {
    let ran = run_workflow(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/setup-node@v4
        with:
          registry-url: https://npm.example.com
          scope: MyOrg
      - uses: actions/setup-python@v5
      - run: |
          cat "$NPM_CONFIG_USERCONFIG"; echo
          echo "token=$NODE_AUTH_TOKEN"
          test -x "$pythonLocation/bin/python3" && echo "python at pythonLocation"
          test "$Python3_ROOT_DIR" = "$pythonLocation" && echo "roots agree"
      - env:
          NODE_AUTH_TOKEN: from-a-secret
        run: echo "publish token=$NODE_AUTH_TOKEN"
"#,
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    let logs = ran.logs("a");
    let from = logs
        .iter()
        .position(|l| l.starts_with("//npm.example.com/"))
        .unwrap_or_else(|| panic!("{logs:?}"));
    assert_eq!(
        logs[from..from + 7],
        [
            "//npm.example.com/:_authToken=${NODE_AUTH_TOKEN}",
            "@myorg:registry=https://npm.example.com/",
            "always-auth=false",
            "token=XXXXX-XXXXX-XXXXX-XXXXX",
            "python at pythonLocation",
            "roots agree",
            "publish token=from-a-secret",
        ]
    );
}

/// The rest of the runner's commands: `::echo::on|off` logs the commands that follow (or
/// stops), and the deprecated `::save-state::` warns and still hands a JavaScript action's post
/// its `STATE_` value.
#[tokio::test]
async fn echo_matchers_and_save_state_commands() {
    let main_js =
        r#"console.log("::save-state name=phase::multi%0Aline"); console.log("main done");"#;
    let post_js = r#"console.log(`post sees ${JSON.stringify(process.env.STATE_phase)}`);"#;
    let ran = run_one(
        &[
            (
                ".github/actions/st/action.yml",
                "name: st\nruns:\n  using: node20\n  main: main.js\n  post: post.js\n",
            ),
            (".github/actions/st/main.js", main_js),
            (".github/actions/st/post.js", post_js),
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
          echo "::echo::on"
          echo "::notice::seen twice"
          echo "::remove-matcher owner=eslint::"
          echo "::echo::off"
          echo "::notice::seen once"
      - uses: ./.github/actions/st
"#,
            ),
        ],
        |_| {},
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    assert_eq!(
        ran.logs("a")[1..],
        [
            "::notice::seen twice",
            "##[notice]seen twice",
            "::remove-matcher owner=eslint::",
            "::echo::off",
            "##[notice]seen once",
            "##[warning]The `save-state` command is deprecated and will be disabled soon. Please upgrade to using Environment Files. For more information see: https://github.blog/changelog/2022-10-11-github-actions-deprecating-save-state-and-set-output-commands/",
            "main done",
            r#"post sees "multi\nline""#,
        ]
    );
}

/// Problem matchers: added by one step, they turn matching lines of later steps into
/// annotations pointing at the workspace's files, until removed; a matcher file that cannot be
/// read fails its step, as the runner's command does.
#[tokio::test]
async fn problem_matchers_annotate_later_steps_until_removed() {
    let matcher = r#"{"problemMatcher": [{"owner": "lint", "pattern": [
        {"regexp": "^(\\S+):(\\d+):(\\d+): (warning|error): (.*) \\[(.*)\\]$",
         "file": 1, "line": 2, "column": 3, "severity": 4, "message": 5, "code": 6}]}]}"#;
    let ran = run_one(
        &[
            (".github/lint.json", matcher),
            ("src/app.js", "let x;\n"),
            (
                WF,
                r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: echo "::add-matcher::.github/lint.json"
      - run: |
          echo "src/app.js:1:5: warning: 'x' is never read [no-unused]"
          echo "elsewhere.js:2:1: error: no such file [e1]"
          echo "plain"
      - run: |
          echo "::remove-matcher owner=lint::"
          echo "src/app.js:1:5: warning: after removal [no-unused]"
      - id: missing
        continue-on-error: true
        run: echo "::add-matcher::.github/none.json"
"#,
            ),
        ],
        |_| {},
    )
    .await;
    let found: Vec<_> = ran
        .events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Annotation { annotation, .. } => Some(annotation.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(found[0].level, Level::Warning);
    assert_eq!(found[0].message, "'x' is never read");
    assert_eq!(found[0].title.as_deref(), Some("no-unused"));
    let at = found[0].location.as_ref().unwrap();
    assert_eq!(
        (at.file.as_str(), at.line, at.col),
        ("src/app.js", Some(1), Some(5))
    );
    // A file that is not in the workspace: an annotation without a location.
    assert_eq!(found[1].level, Level::Error);
    assert_eq!(found[1].location, None);
    assert!(
        found[2]
            .message
            .starts_with("Unable to process command '::add-matcher::.github/none.json'"),
        "{found:?}"
    );
    assert_eq!(found.len(), 4, "{found:?}");
    let logs = ran.logs("a");
    assert!(
        logs.contains(
            &"##[warning]src/app.js:1:5: warning: 'x' is never read [no-unused]".to_owned()
        ),
        "{logs:?}"
    );
    assert!(
        logs.contains(&"src/app.js:1:5: warning: after removal [no-unused]".to_owned()),
        "{logs:?}"
    );
    let job = ran.job("a");
    let statuses: Vec<_> = job.steps.iter().map(|s| s.outcome).collect();
    assert_eq!(
        statuses,
        [
            Status::Success,
            Status::Success,
            Status::Success,
            Status::Success,
            Status::Failure
        ]
    );
}

#[tokio::test]
async fn local_javascript_actions_with_inputs_state_and_post() {
    let main_js = r#"
const fs = require("fs");
const who = process.env.INPUT_WHO;
console.log(`hello ${who} from ${process.env.INPUT_SPACED_NAME}`);
fs.appendFileSync(process.env.GITHUB_OUTPUT, `greeting=hi ${who}\n`);
fs.appendFileSync(process.env.GITHUB_STATE, `started=${who}\n`);
console.log("::notice::from js");
"#;
    let post_js =
        r#"console.log(`post sees ${process.env.STATE_started} and ${process.env.INPUT_WHO}`);"#;
    let ran = run_one(
        &[
            (
                ".github/actions/js/action.yml",
                "name: js\ninputs:\n  who: { default: world }\n  spaced name: { default: two words }\nruns:\n  using: node20\n  main: main.js\n  post: post.js\n",
            ),
            (".github/actions/js/main.js", main_js),
            (".github/actions/js/post.js", post_js),
            (
                ".github/actions/skip-post/action.yml",
                "name: s\nruns:\n  using: node20\n  main: main.js\n  post: post.js\n  post-if: failure()\n",
            ),
            (".github/actions/skip-post/main.js", "console.log('s main')"),
            (".github/actions/skip-post/post.js", "console.log('s post')"),
            (
                WF,
                r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - id: g
        uses: ./.github/actions/js
        with: { who: kiln }
      - uses: ./.github/actions/skip-post
      - run: echo "output ${{ steps.g.outputs.greeting }}"
"#,
            ),
        ],
        |_| {},
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    assert_eq!(
        ran.logs("a")[1..],
        [
            "hello kiln from two words",
            "##[notice]from js",
            "s main",
            "output hi kiln",
            "post sees kiln and kiln"
        ]
    );
}

/// A workflow in a concurrency group: its one step marks that it started, then waits (up to
/// 30 s) for `go` in the marks directory.
const GROUPED: &str = r#"
on:
  workflow_dispatch:
    inputs:
      tag: { type: string }
      marks: { type: string }
      cancel: { type: boolean, default: false }
      queue: { type: choice, options: [single, max], default: single }
concurrency:
  group: Deploy-${{ github.ref }}
  cancel-in-progress: ${{ inputs.cancel }}
  queue: ${{ inputs.queue }}
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: |
          echo "${{ inputs.tag }}" >> "${{ inputs.marks }}/order"
          touch "${{ inputs.marks }}/started-${{ inputs.tag }}"
          for i in $(seq 1 600); do [ -f "${{ inputs.marks }}/go" ] && exit 0; sleep 0.05; done
          exit 1
"#;

/// A repository holding [`GROUPED`], a state directory its runs share, and the marks.
struct Grouped {
    repo: TempDir,
    state: TempDir,
    marks: TempDir,
}

impl Grouped {
    fn new() -> Grouped {
        Grouped {
            repo: repo(&[(WF, GROUPED)]),
            state: TempDir::new().unwrap(),
            marks: TempDir::new().unwrap(),
        }
    }

    fn mark(&self, name: &str) -> std::path::PathBuf {
        self.marks.path().join(name)
    }

    /// Starts run `tag` in the background.
    fn start(&self, tag: &str, cancel: bool) -> tokio::task::JoinHandle<Ran> {
        self.start_in(tag, cancel, "single")
    }

    /// Starts run `tag` in the background, waiting as `queue` says if the group is busy.
    fn start_in(&self, tag: &str, cancel: bool, queue: &str) -> tokio::task::JoinHandle<Ran> {
        let queue = queue.to_owned();
        let (repo, state, marks, tag) = (
            self.repo.path().to_owned(),
            self.state.path().to_owned(),
            self.marks.path().to_owned(),
            tag.to_owned(),
        );
        tokio::spawn(async move {
            run_in(&repo, &state, WF, |o| {
                o.event_name = "workflow_dispatch".into();
                o.run_id = u64::from(tag.as_bytes()[0]);
                o.inputs.insert("tag".into(), tag.clone().into());
                o.inputs
                    .insert("marks".into(), marks.to_string_lossy().into_owned().into());
                o.inputs.insert("cancel".into(), cancel.into());
                o.inputs.insert("queue".into(), queue.clone().into());
            })
            .await
        })
    }

    /// Starts run `tag` and waits until its step runs.
    async fn start_running(&self, tag: &str, cancel: bool) -> tokio::task::JoinHandle<Ran> {
        let run = self.start(tag, cancel);
        let started = self.mark(&format!("started-{tag}"));
        eventually(tag, || started.exists()).await;
        run
    }
}

/// Polls `done` every 20 ms for up to 20 s.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether some run of the group is queued (a `pending` file under the work directory).
fn someone_waits(state: &Path) -> bool {
    std::fs::read_dir(state.join("runs/concurrency"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|group| group.path().join("pending").exists())
}

fn annotations(ran: &Ran) -> Vec<String> {
    ran.events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Annotation { annotation, .. } => Some(annotation.message.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_group_runs_one_and_the_newest_waiter_replaces_the_waiting_one() {
    let g = Grouped::new();
    let a = g.start_running("A", false).await;
    let b = g.start("B", false);
    eventually("B to wait", || someone_waits(g.state.path())).await;
    let c = g.start("C", false);
    let b = b.await.unwrap();
    assert_eq!(b.result.status, Status::Cancelled);
    assert!(
        annotations(&b)
            .iter()
            .any(|a| a.contains("higher priority waiting request for 'Deploy-refs/heads/main'")),
        "{:?}",
        annotations(&b)
    );
    assert!(!g.mark("started-C").exists(), "C waits for A");
    std::fs::write(g.mark("go"), "").unwrap();
    assert_eq!(a.await.unwrap().result.status, Status::Success);
    let c = c.await.unwrap();
    assert_eq!(c.result.status, Status::Success, "{:?}", c.events);
    assert!(!g.mark("started-B").exists());
}

/// Control the concurrency of workflows and jobs: with `queue: max` waiting runs line up
/// instead of replacing each other, and run in the order they came. kiln once refused the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_concurrency_group_runs_every_waiter_in_order() {
    let g = Grouped::new();
    let a = g.start_running("A", false).await;
    let b = g.start_in("B", false, "max");
    eventually("B to wait", || someone_waits(g.state.path())).await;
    let c = g.start_in("C", false, "max");
    let pending = || {
        std::fs::read_dir(g.state.path().join("runs/concurrency"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|d| std::fs::read_to_string(d.path().join("pending")).ok())
            .map(|t| t.lines().count())
            .sum::<usize>()
    };
    eventually("C to wait behind B", || pending() == 2).await;
    std::fs::write(g.mark("go"), "").unwrap();
    for run in [a, b, c] {
        let ran = run.await.unwrap();
        assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    }
    let order = std::fs::read_to_string(g.mark("order")).unwrap();
    assert_eq!(order, "A\nB\nC\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_in_progress_cancels_the_running_run() {
    let g = Grouped::new();
    let a = g.start_running("A", false).await;
    let b = g.start("B", true);
    let a = a.await.unwrap();
    assert_eq!(a.result.status, Status::Cancelled, "{:?}", a.events);
    assert!(
        annotations(&a)
            .iter()
            .any(|t| t.contains("cancels runs in progress"))
    );
    let started_b = g.mark("started-B");
    eventually("B to start", || started_b.exists()).await;
    std::fs::write(g.mark("go"), "").unwrap();
    assert_eq!(b.await.unwrap().result.status, Status::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_one_group_never_overlap() {
    let marks = TempDir::new().unwrap();
    let m = marks.path().to_string_lossy().into_owned();
    let workflow = format!(
        r#"
on: push
jobs:
  x:
    runs-on: ubuntu-latest
    concurrency: shared
    steps:
      - run: |
          touch "{m}/started-x"
          for i in $(seq 1 600); do [ -f "{m}/go" ] && break; sleep 0.05; done
          touch "{m}/done-x"
  y:
    runs-on: ubuntu-latest
    concurrency: {{ group: SHARED }}
    steps:
      - run: |
          [ ! -f "{m}/started-x" ] || [ -f "{m}/done-x" ] || {{ echo "overlaps x"; exit 1; }}
          touch "{m}/ran-y"
"#
    );
    let repo = repo(&[(WF, &workflow)]);
    let state = TempDir::new().unwrap();
    let (r, s) = (repo.path().to_owned(), state.path().to_owned());
    let run = tokio::spawn(async move { run_in(&r, &s, WF, |_| {}).await });
    eventually("x to start or y to run", || {
        marks.path().join("started-x").exists() || marks.path().join("ran-y").exists()
    })
    .await;
    std::fs::write(marks.path().join("go"), "").unwrap();
    let ran = run.await.unwrap();
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
}

#[test]
fn permissions_concurrency_and_environment_are_checked() {
    let repo = repo(&[(
        WF,
        r#"
on: push
permissions: { contents: read, id-token: read, secrets: write }
concurrency: { cancel-in-progress: true, queue: maximum }
jobs:
  a:
    runs-on: ubuntu-latest
    permissions: read-some
    concurrency: ${{ secrets.nope }}
    environment: { url: "https://example.test" }
    steps: [ { run: "true" } ]
  b:
    runs-on: ubuntu-latest
    environment: { name: "prod-${{ github.ref_name }}", url: "${{ steps.d.outputs.url }}" }
    steps: [ { id: d, run: "true" } ]
"#,
    )]);
    let err = load(repo.path(), WF).err().unwrap().to_string();
    for expected in [
        "`read` is not an access level for `id-token`",
        "unknown key `secrets` in `permissions`",
        "`concurrency` is missing `group`",
        "`maximum` is not a concurrency queue mode",
        "`read-some` is not a permissions value",
        "secrets",
        "`jobs.a.environment` is missing `name`",
    ] {
        assert!(err.contains(expected), "{expected}: {err}");
    }
    assert!(!err.contains("jobs.b"), "b's environment is valid: {err}");
}

/// Shapes real-world workflows use that GitHub runs: a `container` expression that evaluates
/// to nothing runs on the runner (cargo-dist's release workflow), a `strategy` without a
/// matrix is one instance with the defaults, `matrix` is `null` without a strategy, and a
/// YAML number in `env` prints as GitHub prints it.
#[tokio::test]
async fn real_world_shapes_run_as_on_github() {
    let ran = run_one(
        &[(
            WF,
            r#"
on: push
env:
  VERSION: 1.10
jobs:
  dist:
    strategy:
      fail-fast: false
      matrix:
        include:
          - { name: host }
          - { name: boxed, container: { image: "quay.io/pypa/manylinux_2_28_x86_64" } }
    name: dist ${{ matrix.name }}
    runs-on: ubuntu-latest
    container: ${{ matrix.container && matrix.container.image || null }}
    steps: [ { run: "echo ran ${{ matrix.name }}" } ]
  single:
    runs-on: ubuntu-latest
    strategy:
      fail-fast: true
    steps:
      - uses: actions/checkout@v4
        with: { fetch-deph: 1 }
      - run: echo "total=${{ strategy.job-total }} index=${{ strategy.job-index }} m=[${{ matrix.x }}] v=$VERSION"
"#,
        )],
        |_| {},
    )
    .await;
    assert_eq!(ran.logs("dist host"), ["ran host"]);
    assert_eq!(ran.job("dist boxed").status, Status::Failure);
    let first_lines = [
        (
            "dist boxed",
            "##[error]container: this instance runs in the image `quay.io/pypa/manylinux_2_28_x86_64`",
        ),
        (
            "single",
            "##[warning]Unexpected input(s) 'fetch-deph', valid inputs are [",
        ),
    ];
    for (job, start) in first_lines {
        let logs = ran.logs(job);
        assert!(
            logs.first().is_some_and(|l| l.starts_with(start)),
            "{job}: {logs:?}"
        );
    }
    assert_eq!(
        ran.logs("single").last().map(String::as_str),
        Some("total=1 index=0 m=[] v=1.1")
    );
}

/// Contexts reference, `github.action_path` / default environment variables,
/// `GITHUB_ACTION_PATH`: the directory of the action, written as a path without a trailing
/// separator whether the step says `uses: ./`, `uses: ./sub` or `uses: ./sub/`.
#[tokio::test]
async fn github_action_path_has_no_trailing_separator() {
    let action = "runs:\n  using: composite\n  steps:\n    - shell: bash\n      run: echo \"path=${GITHUB_ACTION_PATH#$GITHUB_WORKSPACE}|\"\n";
    let ran = run_one(
        &[
            ("action.yml", action),
            ("sub/action.yml", action),
            (
                WF,
                "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - uses: ./\n      - uses: ./sub\n      - uses: ./sub/\n",
            ),
        ],
        |_| {},
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    let logs = ran.logs("a");
    assert_eq!(
        logs[1..],
        ["path=|", "path=/sub|", "path=/sub|"],
        "{logs:?}"
    );
}

/// Workflow syntax, `env`: a block written as one expression is evaluated when the job or step
/// starts and each of the mapping's values is set as GitHub prints it; `null` sets nothing and
/// anything else that is not a mapping fails the step, naming the expression.
#[tokio::test]
async fn env_written_as_one_expression_sets_the_mapping_it_evaluates_to() {
    let ran = run_workflow(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    strategy:
      matrix:
        include:
          - { leg: docs, env: { TOXENV: docs, WORKERS: 2 } }
    env: ${{ fromJSON('{"SHARED":"yes"}') }}
    steps:
      - env: ${{ matrix.env }}
        run: echo "$TOXENV $WORKERS $SHARED"
      - env: ${{ matrix.missing }}
        run: echo "none ${TOXENV:-unset}"
      - env: ${{ matrix.leg }}
        run: echo unreachable
"#,
    )
    .await;
    let jobs = ran.store.jobs();
    assert_eq!(jobs.len(), 1);
    let logs = ran.logs(&jobs[0].1.name);
    assert_eq!(ran.result.status, Status::Failure, "{logs:?}");
    assert_eq!(logs[..2], ["docs 2 yes", "none unset"]);
    assert!(
        logs[2].contains("`${{ matrix.leg }}` must evaluate to a mapping (it gave String)"),
        "{logs:?}"
    );
}

/// Workflow syntax, `jobs.<job_id>.steps[*].with`: GitHub's schema gives the contexts to the
/// mapping itself, as for `env`, so one expression may stand for every input of an action (a
/// composite action's and a built-in's); an input the action does not declare is still warned
/// about, and a value that is not a mapping fails the step, naming the expression.
#[tokio::test]
async fn with_written_as_one_expression_gives_the_action_its_inputs() {
    let ran = run_one(
        &[
            (
                ".github/actions/greet/action.yml",
                "inputs:\n  who: { default: world }\n  punct: { default: '!' }\nruns:\n  using: composite\n  steps:\n    - shell: bash\n      run: echo \"hello ${{ inputs.who }}${{ inputs.punct }}\"\n",
            ),
            (
                WF,
                r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    strategy:
      matrix:
        include:
          - { greet: { who: kiln, extra: 1 }, upload: { name: notes, path: notes.txt } }
    steps:
      - uses: actions/checkout@v4
      - uses: ./.github/actions/greet
        with: ${{ matrix.greet }}
      - run: echo hi > notes.txt
      - uses: actions/upload-artifact@v4
        with: ${{ matrix.upload }}
      - uses: ./.github/actions/greet
        with: ${{ matrix.nothing }}
      - uses: ./.github/actions/greet
        with: ${{ matrix.greet.who }}
"#,
            ),
        ],
        |_| {},
    )
    .await;
    let jobs = ran.store.jobs();
    assert_eq!(jobs.len(), 1);
    let logs = ran.logs(&jobs[0].1.name);
    assert_eq!(ran.result.status, Status::Failure, "{logs:?}");
    let at = |needle: &str| {
        logs.iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in {logs:?}"))
    };
    assert!(at("Unexpected input(s) 'extra'") < at("hello kiln!"));
    assert!(at("hello kiln!") < at("hello world!"), "{logs:?}");
    assert!(
        logs.last().is_some_and(|l| l.contains(
            "with: `${{ matrix.greet.who }}` must evaluate to a mapping (it gave String)"
        )),
        "{logs:?}"
    );
    at("Uploaded artifact `notes` (1 files)");
}

/// Default environment variables, `GITHUB_ACTION` (and `github.action`): the step's `id`, or
/// `__run` for a script without one, `__self` for an action of the repository, `__owner_repo`
/// for another action, each repeated name with the suffix `_2`, `_3`, ...
#[tokio::test]
async fn github_action_names_each_step_as_the_runner_does() {
    let ran = run_one(
        &[
            (
                "action.yml",
                "runs:\n  using: composite\n  steps:\n    - shell: bash\n      run: echo \"inner=$GITHUB_ACTION\"\n",
            ),
            (
                WF,
                r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: echo "$GITHUB_ACTION"
      - run: echo "$GITHUB_ACTION ${{ github.action }}"
      - id: named
        run: echo "$GITHUB_ACTION"
      - uses: actions/checkout@v4
      - uses: ./
      - run: echo "$GITHUB_ACTION"
"#,
            ),
        ],
        |_| {},
    )
    .await;
    let logs = ran.logs("a");
    assert_eq!(ran.result.status, Status::Success, "{logs:?}");
    let printed: Vec<&str> = logs
        .iter()
        .map(String::as_str)
        .filter(|l| l.starts_with("__") || l.starts_with("named") || l.starts_with("inner="))
        .collect();
    assert_eq!(
        printed,
        [
            "__run",
            "__run_2 __run_2",
            "named",
            "inner=__run",
            "__run_3"
        ],
        "{logs:?}"
    );
}

/// What the runner says when a workflow command or an environment file cannot be processed
/// (actions/runner `ActionCommandManager.cs`, `FileCommandManager.cs`, `Constants.cs`): the
/// deprecation warning ends with GitHub's changelog address; a `set-output`/`save-state` without
/// a name, an empty or unknown `echo` value and an unterminated `GITHUB_OUTPUT` block are each
/// "Unable to process ..." and the problem, and fail the step although the script exits 0.
#[tokio::test]
async fn command_and_file_command_errors_read_as_the_runners() {
    let ran = run_workflow(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - id: nameless
        continue-on-error: true
        run: |
          echo "::set-output::x"
          echo "::save-state::y"
      - id: echo
        continue-on-error: true
        run: |
          echo "::echo::"
          echo "::echo::loud"
      - id: file
        continue-on-error: true
        run: |
          echo "good=1" >> "$GITHUB_OUTPUT"
          printf 'text<<EOF\nno end\n' >> "$GITHUB_OUTPUT"
          echo "SEEN=yes" >> "$GITHUB_ENV"
      - run: echo "seen=$SEEN"
"#,
    )
    .await;
    let logs = ran.logs("a");
    assert_eq!(ran.result.status, Status::Success, "{logs:?}");
    let deprecated = |c: &str| {
        format!(
            "##[warning]The `{c}` command is deprecated and will be disabled soon. Please upgrade to using Environment Files. For more information see: https://github.blog/changelog/2022-10-11-github-actions-deprecating-save-state-and-set-output-commands/"
        )
    };
    let expected = [
        deprecated("set-output"),
        "##[error]Unable to process command '::set-output::x' successfully.".into(),
        "##[error]Required field 'name' is missing in ##[set-output] command.".into(),
        deprecated("save-state"),
        "##[error]Unable to process command '::save-state::y' successfully.".into(),
        "##[error]Required field 'name' is missing in ##[save-state] command.".into(),
        "##[error]Unable to process command '::echo::' successfully.".into(),
        "##[error]Value cannot be null. (Parameter 'value')".into(),
        "##[error]Unable to process command '::echo::loud' successfully.".into(),
        "##[error]Invalid echo command value. Possible values can be: 'on', 'off'. Current value is: 'loud'.".into(),
        "##[error]Unable to process file command 'output' successfully.".into(),
        "##[error]Invalid value. Matching delimiter not found 'EOF'".into(),
        "seen=yes".to_owned(),
    ];
    assert_eq!(logs, expected);
    for step in &ran.job("a").steps[..3] {
        assert_eq!(
            (step.outcome, step.exit_code),
            (Status::Failure, Some(0)),
            "{step:?}"
        );
    }
}

/// A local action used before the checkout (or not in the repository) fails its step with the
/// runner's words and hint (actions/runner `ActionManager`: "Can't find 'action.yml',
/// 'action.yaml' or 'Dockerfile' under '...'. Did you forget to run actions/checkout before
/// running your local action?"); kiln said "<workflow>: error: no action.yml or action.yaml in".
#[tokio::test]
async fn a_local_action_missing_from_the_workspace_is_named_as_the_runner_names_it() {
    let ran = run_workflow(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: ./.github/actions/setup\n",
    )
    .await;
    let logs = ran.logs("a");
    assert_eq!(ran.result.status, Status::Failure, "{logs:?}");
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(
        logs[0].starts_with("##[error]Can't find 'action.yml', 'action.yaml' or 'Dockerfile' under '/")
            && logs[0].ends_with("/.github/actions/setup'. Did you forget to run actions/checkout before running your local action?"),
        "{logs:?}"
    );
}

/// Workflow commands, `set-env` and `add-path` (disabled in 2020): as the runner handles them,
/// each is refused unless `ACTIONS_ALLOW_UNSECURE_COMMANDS` is `true`, and a refused command
/// fails its step even when the script exits 0; opted in, they set a variable and prepend a
/// directory for the following steps. Contexts reference, `runner.temp` is `$RUNNER_TEMP`.
#[tokio::test]
async fn unsecure_commands_and_runner_temp_behave_as_on_github() {
    let ran = run_workflow(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: test "${{ runner.temp }}" = "$RUNNER_TEMP" && echo same temp
      - id: refused
        run: echo "::set-env name=OLD::value"
        continue-on-error: true
      - run: echo "old=${OLD:-unset}"
      - env: { ACTIONS_ALLOW_UNSECURE_COMMANDS: 'true' }
        run: |
          mkdir -p "$RUNNER_TEMP/bin"
          printf '#!/bin/sh\necho tool ran\n' > "$RUNNER_TEMP/bin/mytool"
          chmod +x "$RUNNER_TEMP/bin/mytool"
          echo "::set-env name=OLD::set"
          echo "::add-path::$RUNNER_TEMP/bin"
      - run: |
          echo "old=$OLD"
          mytool
"#,
    )
    .await;
    let logs = ran.logs("a");
    assert_eq!(ran.result.status, Status::Success, "{logs:?}");
    let refused = &ran.job("a").steps[1];
    assert_eq!(
        (refused.outcome, refused.conclusion, refused.exit_code),
        (Status::Failure, Status::Success, Some(0))
    );
    let expected = [
        "same temp",
        "##[error]Unable to process command '::set-env name=OLD::value' successfully.",
        "##[error]The `set-env` command is disabled. Please upgrade to using Environment Files or opt into unsecure command execution by setting the `ACTIONS_ALLOW_UNSECURE_COMMANDS` environment variable to `true`. For more information see: https://github.blog/changelog/2020-10-01-github-actions-deprecating-set-env-and-add-path-commands/",
        "old=unset",
        "old=set",
        "tool ran",
    ];
    assert_eq!(logs, expected);
}

/// Contexts reference, `github.workspace`: workflow and job `env` are read on the runner, so
/// `${{ github.workspace }}/data` there names the job's workspace (seaborn's `SEABORN_DATA`).
/// A `working-directory` that does not exist fails its step with the runner's message rather
/// than one that reads like a missing shell: the .NET error it logs as it is, naming the shell
/// by the path it was found at (`/usr/bin/bash`).
#[tokio::test]
async fn workflow_env_sees_the_job_workspace_and_a_missing_working_directory_is_named() {
    let ran = run_workflow(
        "on: push\nenv:\n  DATA: ${{ github.workspace }}/data\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: test \"$DATA\" = \"$GITHUB_WORKSPACE/data\" && echo data ok\n      - working-directory: nowhere\n        run: echo unreachable\n",
    )
    .await;
    let logs = ran.logs("a");
    assert_eq!(ran.result.status, Status::Failure, "{logs:?}");
    assert_eq!(logs[0], "data ok");
    let bash = Command::new("sh")
        .args(["-c", "command -v bash"])
        .output()
        .unwrap();
    let bash = String::from_utf8_lossy(&bash.stdout).trim().to_owned();
    assert!(
        logs[1].starts_with(&format!(
            "##[error]An error occurred trying to start process '{bash}' with working directory '"
        )) && logs[1].ends_with("/nowhere'. No such file or directory"),
        "{logs:?}"
    );
}

/// Contexts reference, `github` context, and Variables reference, default environment variables:
/// the workflow's ref and sha, the event payload's path, the GraphQL URL, the triggering actor,
/// whether the ref is protected and the step's `GITHUB_ENV` and `GITHUB_PATH` files are in the
/// context and in the environment alike, as real-world workflows read them
/// (`${{ github.event_path }}`, `$GITHUB_WORKFLOW_REF`); so is `runner.workspace`, which
/// GitHub's runner sets (`working-directory: ${{ runner.workspace }}/build`).
#[tokio::test]
async fn github_context_and_default_variables_name_the_workflow_the_event_and_the_api() {
    let ran = run_workflow(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: |
          echo "ref=${{ github.workflow_ref == format('{0}/.github/workflows/ci.yml@{1}', github.repository, github.ref) }}|${{ github.workflow_ref == env.GITHUB_WORKFLOW_REF }}|$([ "$GITHUB_WORKFLOW_REF" = '${{ github.workflow_ref }}' ] && echo same)"
          echo "sha=${{ github.workflow_sha == github.sha }}|$([ "$GITHUB_WORKFLOW_SHA" = '${{ github.sha }}' ] && echo same)"
          echo "event=$([ -f '${{ github.event_path }}' ] && [ '${{ github.event_path }}' = "$GITHUB_EVENT_PATH" ] && echo file)"
          echo "gql=${{ github.graphql_url }}|$GITHUB_GRAPHQL_URL"
          echo "actor=${{ github.triggering_actor }}|$GITHUB_TRIGGERING_ACTOR"
          echo "protected=${{ github.ref_protected }}|$GITHUB_REF_PROTECTED"
          echo 'head=${{ toJSON(github.head_ref) }}|${{ toJSON(github.base_ref) }}'
          echo "files=$([ '${{ github.env }}' = "$GITHUB_ENV" ] && [ '${{ github.path }}' = "$GITHUB_PATH" ] && echo same)"
          echo "runner=$([ '${{ runner.workspace }}' = "$RUNNER_WORKSPACE" ] && [ "$(dirname "$GITHUB_WORKSPACE")" = "$RUNNER_WORKSPACE" ] && echo same)"
"#,
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    assert_eq!(
        ran.logs("a"),
        [
            "ref=true|false|same",
            "sha=true|same",
            "event=file",
            "gql=http://localhost/api/graphql|http://localhost/api/graphql",
            "actor=kiln|kiln",
            "protected=false|false",
            "head=\"\"|\"\"",
            "files=same",
            "runner=same",
        ]
    );
}

/// GitHub shows a failed job with `continue-on-error` as failed, while its dependents see
/// `needs.<job>.result == 'success'` and the run concludes success (a matrix instance whose
/// `continue-on-error` is an expression counts the same way).
#[tokio::test]
async fn a_failed_job_with_continue_on_error_shows_failed_but_the_run_succeeds() {
    let ran = run_workflow(
        r#"
on: push
jobs:
  soft:
    runs-on: ubuntu-latest
    continue-on-error: true
    steps: [ { run: exit 4 } ]
  m:
    runs-on: ubuntu-latest
    continue-on-error: ${{ matrix.experimental }}
    strategy:
      matrix:
        v: [1, 2]
        experimental: [false]
        include: [ { v: 3, experimental: true } ]
    steps: [ { run: "test ${{ matrix.v }} != 3" } ]
  after:
    needs: [soft, m]
    runs-on: ubuntu-latest
    steps: [ { run: "echo soft=${{ needs.soft.result }} m=${{ needs.m.result }}" } ]
"#,
    )
    .await;
    assert_eq!(ran.logs("after"), ["soft=success m=success"]);
    assert_eq!(ran.job("soft").status, Status::Failure);
    assert_eq!(ran.job("m (3, true)").status, Status::Failure);
    assert_eq!(ran.job("m (1, false)").status, Status::Success);
    assert_eq!(ran.result.status, Status::Success);
    assert_eq!(ran.result.jobs["soft"], Status::Failure);
    assert_eq!(ran.result.jobs["m"], Status::Failure);
    assert_eq!(ran.result.jobs["after"], Status::Success);
}

/// `defaults.run` belongs to the workflow and its jobs: a composite action's steps run in the
/// workspace with their own shell, whatever the caller's defaults say (actions/runner applies
/// job defaults only outside an action's scope).
#[tokio::test]
async fn composite_steps_ignore_the_callers_run_defaults() {
    let ran = run_one(
        &[
            (
                WF,
                r#"
on: push
defaults:
  run: { shell: sh, working-directory: sub }
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: echo "job in $(basename "$PWD")"
      - uses: ./act
"#,
            ),
            (
                "act/action.yml",
                r#"
name: act
runs:
  using: composite
  steps:
    - shell: bash
      run: echo "action in $(basename "$PWD") pipefail=$(set -o | grep pipefail | tr -s ' \t' ' ')"
"#,
            ),
            ("sub/keep", ""),
        ],
        |_| {},
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    let workspace = ran.logs("a")[1..]
        .iter()
        .find(|l| l.starts_with("action in "))
        .cloned();
    assert_eq!(ran.logs("a")[1], "job in sub");
    assert_eq!(
        workspace.as_deref(),
        Some("action in workspace pipefail=pipefail on")
    );
}

/// Reusing workflows: the `github` context of a called workflow's jobs is the caller's, so
/// `github.workflow` and `$GITHUB_WORKFLOW` name the calling workflow.
#[tokio::test]
async fn a_called_workflow_sees_the_callers_github_context() {
    let ran = run_one(
        &[
            (
                WF,
                r#"
name: Caller
on: push
jobs:
  call:
    uses: ./.github/workflows/called.yml
"#,
            ),
            (
                ".github/workflows/called.yml",
                r#"
name: Called
on: workflow_call
jobs:
  inner:
    runs-on: ubuntu-latest
    steps:
      - run: echo "${{ github.workflow }} $GITHUB_WORKFLOW ${{ github.job }} ${{ endsWith(github.workflow_ref, 'ci.yml@refs/heads/main') }}"
"#,
            ),
        ],
        |_| {},
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    assert_eq!(ran.logs("call / inner"), ["Caller Caller inner true"]);
}

/// Shells the host lacks fail the step with the runner's "File not found" and say why; `cmd`
/// is a Windows shell; a custom program's script has no `.sh` extension (the runner names it
/// by the program: `.sh` for bash and sh, `.py` for python, none for others); a custom shell's
/// arguments are split as the runner splits them, double quotes grouping.
#[tokio::test]
async fn missing_and_custom_shells_behave_as_on_the_runner() {
    let ran = run_workflow(
        r#"
on: push
jobs:
  missing:
    runs-on: ubuntu-latest
    steps: [ { shell: "kiln-no-such-shell {0}", run: echo hi } ]
  windows:
    runs-on: ubuntu-latest
    steps: [ { shell: cmd, run: echo hi } ]
  custom:
    runs-on: ubuntu-latest
    steps:
      - shell: bash -c "echo quoted $0; . {0}" kiln
        run: echo sourced
      - shell: env bash {0}
        run: echo "env ${0##*/}"
      - shell: bash
        run: echo "bash ${0##*/}"
"#,
    )
    .await;
    let missing = ran.logs("missing").join("\n");
    assert!(
        missing.contains("File not found: 'kiln-no-such-shell'"),
        "{missing}"
    );
    assert!(ran.logs("windows").join("\n").contains("Windows shell"));
    assert_eq!(
        ran.logs("custom"),
        ["quoted kiln", "sourced", "env step", "bash step.sh"]
    );
    assert_eq!(ran.job("missing").status, Status::Failure);
    assert_eq!(ran.job("custom").status, Status::Success);
}

/// For `pull_request` events `github.head_ref` and `github.base_ref` (and `$GITHUB_HEAD_REF`,
/// `$GITHUB_BASE_REF`) are the pull request's branches, read from the payload; for other
/// events they are empty.
#[tokio::test]
async fn a_pull_request_names_its_head_and_base_branches() {
    let yaml = r#"
on: [push, pull_request]
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: echo "head=${{ github.head_ref }}|$GITHUB_HEAD_REF base=${{ github.base_ref }}|$GITHUB_BASE_REF"
"#;
    let ran = run_one(&[(WF, yaml)], |o| {
        o.event_name = "pull_request".into();
        o.event = serde_json::json!({
            "action": "opened",
            "pull_request": { "head": { "ref": "feature" }, "base": { "ref": "main" } }
        });
    })
    .await;
    assert_eq!(ran.logs("a"), ["head=feature|feature base=main|main"]);
    let pushed = run_one(&[(WF, yaml)], |o| {
        o.event = serde_json::json!({
            "pull_request": { "head": { "ref": "feature" }, "base": { "ref": "main" } }
        });
    })
    .await;
    assert_eq!(pushed.logs("a"), ["head=| base=|"]);
}

/// Calls of reusable workflows side by side, more of them than the host runs jobs at once:
/// a call runs no steps itself, so it holds no place its own jobs need (it deadlocked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_calls_of_reusable_workflows_than_places_all_finish() {
    let repo = repo(&[
        (
            WF,
            r#"
on: push
jobs:
  a: { uses: ./.github/workflows/called.yml, with: { n: a } }
  b: { uses: ./.github/workflows/called.yml, with: { n: b } }
  c: { uses: ./.github/workflows/called.yml, with: { n: c } }
"#,
        ),
        (
            ".github/workflows/called.yml",
            r#"
on:
  workflow_call:
    inputs: { n: { type: string, required: true } }
jobs:
  inner:
    runs-on: ubuntu-latest
    steps: [ { run: "echo ${{ inputs.n }}" } ]
"#,
        ),
    ]);
    let state = TempDir::new().unwrap();
    let ran = tokio::time::timeout(
        Duration::from_secs(30),
        run_in(repo.path(), state.path(), WF, |o| o.max_parallel = 2),
    )
    .await
    .expect("the run deadlocked");
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    for call in ["a", "b", "c"] {
        assert_eq!(ran.logs(&format!("{call} / inner")), [call]);
    }
}

/// "Variables": the default `GITHUB_*` and `RUNNER_*` variables cannot be overwritten, by
/// `GITHUB_ENV` or by `env:` (the runner exports them after the step's environment); other
/// names, `CI` among them, can.
#[tokio::test]
async fn default_variables_cannot_be_overwritten() {
    let ran = run_workflow(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    env: { GITHUB_REF: refs/heads/job }
    steps:
      - run: |
          echo "GITHUB_SHA=from-file" >> "$GITHUB_ENV"
          echo "RUNNER_OS=from-file" >> "$GITHUB_ENV"
          echo "MINE=from-file" >> "$GITHUB_ENV"
      - env: { GITHUB_WORKFLOW: step, CI: step, GITHUB_TOKEN: tok }
        run: |
          echo "$GITHUB_REF $RUNNER_OS $GITHUB_WORKFLOW $MINE $CI $GITHUB_TOKEN"
          echo "${GITHUB_SHA}" | grep -qx '${{ github.sha }}' && echo "sha kept"
"#,
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    assert_eq!(
        ran.logs("a"),
        [
            "refs/heads/main Linux .github/workflows/ci.yml from-file step tok",
            "sha kept"
        ]
    );
}

/// A called workflow's `secrets` are secrets there, a value the caller wrote as a literal or
/// built with an expression too: they are masked in its jobs' logs.
#[tokio::test]
async fn secrets_passed_to_a_called_workflow_are_masked() {
    let ran = run_one(
        &[
            (
                WF,
                r#"
on: push
jobs:
  call:
    uses: ./.github/workflows/called.yml
    secrets:
      TOKEN: literal-token-value
      BUILT: ${{ format('built-{0}', 'value') }}
"#,
            ),
            (
                ".github/workflows/called.yml",
                r#"
on:
  workflow_call:
    secrets:
      TOKEN: { required: true }
      BUILT: { required: true }
jobs:
  inner:
    runs-on: ubuntu-latest
    steps:
      - run: echo "token ${{ secrets.TOKEN }} built ${{ secrets.BUILT }}"
"#,
            ),
        ],
        |_| {},
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    assert_eq!(ran.logs("call / inner"), ["token *** built ***"]);
}

/// The step's environment files live in one directory per job, created when a step needs it:
/// a step that removes the directory does not stop the next from writing its files, and an
/// empty file (most steps write none) reads as nothing.
#[tokio::test]
async fn a_step_that_removes_the_runner_files_directory_does_not_break_the_next() {
    let ran = run_workflow(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: echo "FIRST=1" >> "$GITHUB_ENV"
      - run: rm -rf "$(dirname "$GITHUB_ENV")"
      - run: echo "SECOND=2" >> "$GITHUB_ENV"
      - run: echo "first=$FIRST second=$SECOND"
"#,
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    assert_eq!(ran.logs("a"), ["first=1 second=2"]);
}

/// A step's events are held for a moment so that a short step sends them together, but a step
/// that runs longer streams its output live: its first line reaches the channel while the step
/// still waits (on a FIFO the test writes to only once it has seen that line).
#[tokio::test]
async fn a_long_steps_output_streams_live() {
    use std::os::unix::fs::OpenOptionsExt;
    let fifo_dir = TempDir::new().unwrap();
    let fifo = fifo_dir.path().join("go");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // Open for reading and writing: never blocks, and the step's `read` has a writer.
    let mut go = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let yaml = format!(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    timeout-minutes: 1\n    steps:\n      - run: |\n          echo first\n          read -r go < '{}'\n          echo \"got $go\"\n",
        fifo.display()
    );
    let repo = repo(&[(WF, &yaml)]);
    let state = TempDir::new().unwrap();
    let set = load(repo.path(), WF).unwrap();
    let mut opts = RunOptions::new(repo.path(), "HEAD", state.path());
    opts.home = state.path().join("home");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let store = std::sync::Arc::new(kiln_pipelines::MemoryStore::default());
    let running = tokio::spawn(kiln_pipelines::run(set, opts, tx, store));
    let mut seen = Vec::new();
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = rx.recv().await {
            let first = matches!(&event, RunEvent::Log { line, .. } if line == "first");
            seen.push(event);
            if first {
                return;
            }
        }
    })
    .await;
    // Let the step end whatever was seen.
    std::io::Write::write_all(&mut go, b"now\n").unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.is_ok(), "no live line while the step ran: {seen:?}");
    assert_eq!(result.status, Status::Success);
    while let Ok(event) = rx.try_recv() {
        seen.push(event);
    }
    let logs: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            RunEvent::Log { line, .. } => Some(line.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(logs, ["first", "got now"]);
}

/// A job's status functions look at every job it depends on, not only those it names
/// (actions/runner#2205): past a skipped or failed job, a job that ran with `always()` does not
/// make its own dependents run by default; `failure()` is true only when one of them failed, so
/// `!failure()` (the usual way around it) runs past a skipped one.
#[tokio::test]
async fn a_jobs_status_functions_see_every_job_it_depends_on() {
    let ran = run_workflow(
        r#"
on: push
jobs:
  skipped:
    if: false
    runs-on: ubuntu-latest
    steps: [ { run: echo never } ]
  after-skipped:
    needs: skipped
    if: always()
    runs-on: ubuntu-latest
    steps: [ { run: echo after-skipped } ]
  default-past-skipped:
    needs: after-skipped
    runs-on: ubuntu-latest
    steps: [ { run: echo never } ]
  failure-past-skipped:
    needs: after-skipped
    if: failure()
    runs-on: ubuntu-latest
    steps: [ { run: echo never } ]
  not-failure-past-skipped:
    needs: after-skipped
    if: "!failure()"
    runs-on: ubuntu-latest
    steps: [ { run: echo not-failure } ]
  fails:
    runs-on: ubuntu-latest
    steps: [ { run: exit 1 } ]
  after-failed:
    needs: fails
    if: always()
    runs-on: ubuntu-latest
    steps: [ { run: echo after-failed } ]
  default-past-failed:
    needs: after-failed
    runs-on: ubuntu-latest
    steps: [ { run: echo never } ]
  failure-past-failed:
    needs: after-failed
    if: failure()
    runs-on: ubuntu-latest
    steps: [ { run: "echo failure-past-failed ${{ needs.after-failed.result }}" } ]
"#,
    )
    .await;
    let status = |name: &str| ran.job(name).status;
    assert_eq!(status("after-skipped"), Status::Success, "{:?}", ran.events);
    assert_eq!(status("default-past-skipped"), Status::Skipped);
    assert_eq!(status("failure-past-skipped"), Status::Skipped);
    assert_eq!(status("not-failure-past-skipped"), Status::Success);
    assert_eq!(status("after-failed"), Status::Success);
    assert_eq!(status("default-past-failed"), Status::Skipped);
    assert_eq!(status("failure-past-failed"), Status::Success);
    assert_eq!(
        ran.logs("failure-past-failed"),
        ["failure-past-failed success"]
    );
}

/// A composite action's steps read `github.action_path` (the action's directory, as
/// `$GITHUB_ACTION_PATH`) and `github.action_status` (the action's result so far).
#[tokio::test]
async fn composite_steps_see_the_actions_path_and_status_in_the_github_context() {
    let action = r#"
runs:
  using: composite
  steps:
    - shell: bash
      run: |
        [ "${{ github.action_path }}" = "$GITHUB_ACTION_PATH" ] && echo "path ${GITHUB_ACTION_PATH#$GITHUB_WORKSPACE}"
        echo "status ${{ github.action_status }}"
    - shell: bash
      continue-on-error: false
      run: exit 3
    - if: always()
      shell: bash
      run: echo "status ${{ github.action_status }}"
"#;
    let ran = run_one(
        &[
            ("tools/act/action.yml", action),
            (
                WF,
                "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - uses: ./tools/act\n      - if: always()\n        run: echo \"outside '${{ github.action_path }}'\"\n",
            ),
        ],
        |_| {},
    )
    .await;
    assert_eq!(ran.result.status, Status::Failure, "{:?}", ran.events);
    let logs = ran.logs("a");
    assert_eq!(
        logs[1..],
        [
            "path /tools/act",
            "status success",
            "##[error]Process completed with exit code 3.",
            "status failure",
            "outside ''"
        ],
        "{logs:?}"
    );
}

/// A job output that evaluates to an empty string is not set, as the runner's
/// `JobExtension` skips it: `needs.<job>.outputs` has no such key.
#[tokio::test]
async fn empty_job_outputs_are_not_set() {
    let ran = run_workflow(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    outputs:
      set: ${{ steps.s.outputs.v }}
      from-skipped: ${{ steps.k.outputs.v }}
      empty: ''
    steps:
      - id: s
        run: echo "v=1" >> "$GITHUB_OUTPUT"
      - id: k
        if: false
        run: echo "v=2" >> "$GITHUB_OUTPUT"
  b:
    needs: a
    runs-on: ubuntu-latest
    steps:
      - run: echo '${{ toJSON(needs.a.outputs) }}' | tr -d ' \n'; echo
"#,
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    assert_eq!(ran.logs("b"), [r#"{"set":"1"}"#]);
}

/// `$GITHUB_ENV` cannot set `NODE_OPTIONS` (actions/runner#2775): an error annotation, the
/// variable unchanged, the step's result too. A summary over 1 MiB is dropped whole with an
/// error annotation, the step's result unchanged. A `\r` before a line's `\n` belongs to the
/// value, as on a Linux runner.
#[tokio::test]
async fn file_commands_refuse_node_options_and_oversized_summaries_and_keep_carriage_returns() {
    let ran = run_workflow(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    env: { NODE_OPTIONS: --from-job }
    steps:
      - id: s
        run: |
          echo "node_options=--max-old-space-size=10" >> "$GITHUB_ENV"
          echo "OTHER=kept" >> "$GITHUB_ENV"
          printf 'cr=v\r\n' >> "$GITHUB_OUTPUT"
          head -c 1048577 /dev/zero | tr '\0' x >> "$GITHUB_STEP_SUMMARY"
      - env:
          CR: ${{ steps.s.outputs.cr }}
        run: |
          echo "$NODE_OPTIONS ${node_options:-unset} $OTHER ${#CR}"
          echo "small" >> "$GITHUB_STEP_SUMMARY"
"#,
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    assert_eq!(
        ran.logs("a"),
        [
            "##[error]Can't store NODE_OPTIONS output parameter using '$GITHUB_ENV' command.",
            "##[error]$GITHUB_STEP_SUMMARY upload aborted, supports content up to a size of 1024k, got 1024k. For more information see: https://docs.github.com/actions/using-workflows/workflow-commands-for-github-actions#adding-a-markdown-summary",
            "--from-job unset kept 2",
        ]
    );
    let job = ran.job("a");
    assert_eq!(job.summary, "small\n");
    assert_eq!(job.annotations.len(), 2, "{:?}", job.annotations);
}

/// `github.ref_name` is the ref without its kind, slashes kept (`feature/login`); a `schedule`
/// run's payload names the cron entry that fired (`github.event.schedule`).
#[tokio::test]
async fn ref_names_keep_their_slashes_and_a_schedule_names_its_cron() {
    let yaml = r#"
on:
  schedule: [ { cron: '30 5 * * 1' }, { cron: '0 0 * * *' } ]
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: echo "${{ github.ref_name }} $GITHUB_REF_NAME ${{ github.event.schedule }}"
"#;
    let ran = run_one(&[(WF, yaml)], |o| {
        o.event_name = "schedule".into();
        o.git_ref = "refs/heads/feature/login".into();
    })
    .await;
    assert_eq!(
        ran.logs("a"),
        ["feature/login feature/login 30 5 * * 1"],
        "{:?}",
        ran.events
    );
}

/// Step debug logging ("Enabling debug logging"): with a secret or variable
/// `ACTIONS_STEP_DEBUG` true, `::debug::` lines are shown and `runner.debug` and
/// `$RUNNER_DEBUG` are `1`; without it the lines are hidden and `runner.debug` is not set.
#[tokio::test]
async fn actions_step_debug_shows_debug_lines_and_sets_runner_debug() {
    let yaml = r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: |
          echo "::debug::looking closer"
          echo "debug=${{ runner.debug }}|$RUNNER_DEBUG has=${{ contains(toJSON(runner), '"debug"') }}"
"#;
    let quiet = run_one(&[(WF, yaml)], |_| {}).await;
    assert_eq!(quiet.logs("a"), ["debug=| has=false"]);
    let by_secret = run_one(&[(WF, yaml)], |o| {
        o.secrets.insert("ACTIONS_STEP_DEBUG".into(), "True".into());
    })
    .await;
    assert_eq!(
        by_secret.logs("a"),
        ["##[debug]looking closer", "debug=1|1 has=true"]
    );
    let by_variable = run_one(&[(WF, yaml)], |o| {
        o.vars.insert("ACTIONS_STEP_DEBUG".into(), "TRUE".into());
    })
    .await;
    assert_eq!(by_variable.logs("a"), by_secret.logs("a"));
}

/// A secret printed encoded is masked as the runner's value encoders write it: in base64 (also
/// after a prefix, as in a basic-auth header), JSON-escaped and URL-encoded.
#[tokio::test]
async fn secrets_are_masked_in_base64_json_and_urls_too() {
    let yaml = r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - env:
          TOKEN: ${{ secrets.TOKEN }}
        run: |
          printf '%s' "$TOKEN" | base64
          printf 'user:%s' "$TOKEN" | base64
          echo '${{ toJSON(secrets) }}' | grep TOKEN
          python3 -c 'import os, urllib.parse; print("url=" + urllib.parse.quote(os.environ["TOKEN"], safe=""))'
"#;
    let ran = run_one(&[(WF, yaml)], |o| {
        o.secrets.insert("TOKEN".into(), "s3cr\"t/v@lue".into());
    })
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    assert_eq!(
        ran.logs("a"),
        ["***", "dXNlcjpz***", r#"  "TOKEN": "***""#, "url=***"]
    );
}

/// The `github` context names the step's files as the runner does (`github.output`,
/// `github.state`, `github.step_summary`, `github.env`, `github.path`: the files of the
/// `$GITHUB_*` variables), and where its secrets come from (`github.secret_source`).
#[tokio::test]
async fn the_github_context_names_the_steps_files() {
    let ran = run_workflow(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: |
          [ "${{ github.output }}" = "$GITHUB_OUTPUT" ] && [ "${{ github.state }}" = "$GITHUB_STATE" ] \
            && [ "${{ github.step_summary }}" = "$GITHUB_STEP_SUMMARY" ] && [ "${{ github.env }}" = "$GITHUB_ENV" ] \
            && [ "${{ github.path }}" = "$GITHUB_PATH" ] && echo "same files, secrets from ${{ github.secret_source }}"
"#,
    )
    .await;
    assert_eq!(
        ran.logs("a"),
        ["same files, secrets from Actions"],
        "{:?}",
        ran.events
    );
}

/// Output is read in lines as the runner reads it (`StreamReader.ReadLine`): a lone `\r`
/// ends a line as `\n` and `\r\n` do, so a progress bar's frames are lines of their own and a
/// workflow command after one is carried out.
#[tokio::test]
async fn a_carriage_return_ends_an_output_line() {
    let ran = run_workflow(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: |
          printf '10%%\r50%%\r100%%\r\ndone\n'
          printf 'progress\r::add-mask::hidden-value\n'
          echo "hidden-value"
"#,
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    assert_eq!(
        ran.logs("a"),
        ["10%", "50%", "100%", "done", "progress", "***"]
    );
}

/// `$GITHUB_PATH` as the runner reads it: each non-empty line as written (blanks kept), the
/// newest first, a directory added again moved to the front instead of listed twice.
#[tokio::test]
async fn github_path_lines_are_taken_as_written_newest_first_without_duplicates() {
    let ran = run_workflow(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: |
          printf '/opt/a\r\n/opt/b\n\n' >> "$GITHUB_PATH"
      - run: |
          printf '/opt/a\n /opt/c\n' >> "$GITHUB_PATH"
      - run: |
          echo "$PATH" | cut -d: -f1-3
"#,
    )
    .await;
    assert_eq!(ran.result.status, Status::Success, "{:?}", ran.events);
    assert_eq!(ran.logs("a"), [" /opt/c:/opt/a:/opt/b"]);
}

/// A local JavaScript action as the runner's `ActionRunner` runs one: its `pre` does not run
/// (a warning says so: the repository is not checked out when the job's pre steps are set
/// up), its `post` runs though `main` failed (it is queued as `main` starts), and a non-zero
/// exit fails the step without the "Process completed" error a `run` step gets
/// (`NodeScriptActionHandler` leaves the explaining to the action: `core.setFailed` writes
/// `::error::`), in its main and post scripts alike.
#[tokio::test]
async fn a_failing_javascript_action_reports_only_its_own_error() {
    let action = "runs:\n  using: node20\n  pre: pre.js\n  main: main.js\n  post: post.js\n";
    let ran = run_one(
        &[
            ("act/action.yml", action),
            ("act/pre.js", "console.log('pre ran');\n"),
            ("act/main.js", "console.log('::error::boom');\nprocess.exit(3);\n"),
            ("act/post.js", "console.log('post ran');\nprocess.exit(4);\n"),
            (
                WF,
                "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - id: js\n        uses: ./act\n      - if: failure()\n        run: echo \"outcome ${{ steps.js.outcome }}\"\n",
            ),
        ],
        |_| {},
    )
    .await;
    assert_eq!(ran.result.status, Status::Failure, "{:?}", ran.events);
    let logs = ran.logs("a");
    assert_eq!(
        logs[1..],
        [
            "##[warning]`pre` execution is not supported for local action from './act'",
            "##[error]boom",
            "outcome failure",
            "post ran"
        ],
        "{logs:?}"
    );
    assert!(
        !logs.iter().any(|l| l.contains("Process completed")),
        "{logs:?}"
    );
}
