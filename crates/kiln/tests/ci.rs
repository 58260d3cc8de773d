//! `kiln ci` through the real binary, in scratch git repositories: runs are recorded (list, show,
//! logs), failures exit 3 and are recorded as such, validation points at line:column, and
//! secrets never reach the stored logs or the state database.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Scratch, git};

const GREEN: &str = r#"name: ci
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - name: greet
        run: echo "hello from ${{ github.event_name }}"
      - run: echo second-step
      - run: echo 'build *summary* line' >> "$GITHUB_STEP_SUMMARY"
      - run: echo "::warning file=src/app.js,line=3,col=7,title=Lint::unused variable"
  test:
    needs: build
    runs-on: ubuntu-latest
    strategy:
      matrix:
        n: [1, 2]
    steps:
      - run: echo "instance-${{ matrix.n }}"
"#;

/// A scratch git repository holding `workflows` (name → text), committed.
fn repo(workflows: &[(&str, &str)]) -> Scratch {
    let s = Scratch::new("name: demo\nresources: {}\n");
    std::fs::create_dir_all(s.file(".github/workflows")).unwrap();
    for (name, text) in workflows {
        std::fs::write(s.file(&format!(".github/workflows/{name}")), text).unwrap();
    }
    git(s.path(), &["init", "-q", "-b", "main"]);
    git(s.path(), &["add", "-A"]);
    git(s.path(), &["commit", "-q", "-m", "init"]);
    s
}

fn json(s: &Scratch, args: &[&str]) -> serde_json::Value {
    s.json(args)
}

#[test]
fn a_green_run_exits_0_and_is_listed_shown_and_logged() {
    let s = repo(&[("ci.yml", GREEN)]);
    let out = s.ok(&["ci", "run"]);
    assert!(out.contains("[build] hello from push"), "{out}");
    assert!(out.contains("[test (2)] instance-2"), "{out}");
    // A workflow command's annotation shows once, in its own words (with the file and line),
    // not also as the `##[warning]` line the log file keeps, as GitHub's log does.
    assert!(
        !out.contains("##[warning]"),
        "the warning shows once: {out}"
    );
    assert!(
        out.contains("[build] warning: src/app.js:3:7: Lint: unused variable"),
        "{out}"
    );
    assert!(
        out.starts_with("Run 1: ci (.github/workflows/ci.yml) on push"),
        "{out}"
    );

    let runs = json(&s, &["ci", "list", "--json"]);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["id"], 1);
    assert_eq!(runs[0]["workflow"], "ci");
    assert_eq!(runs[0]["event"], "push");
    assert_eq!(runs[0]["status"], "success");
    assert_eq!(runs[0]["commit"].as_str().unwrap().len(), 40);
    assert!(s.ok(&["ci", "list"]).contains("success"));

    let shown = json(&s, &["ci", "show", "1", "--json"]);
    let jobs = shown["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3, "{shown:#}");
    let build = jobs.iter().find(|j| j["name"] == "build").unwrap();
    assert_eq!(build["status"], "success");
    assert_eq!(build["steps"][0]["name"], "greet");
    assert_eq!(build["steps"][0]["exit_code"], 0);
    assert!(build["steps"][0]["started_at"].is_string());
    assert_eq!(build["annotations"][0]["level"], "warning", "{build:#}");
    assert_eq!(build["annotations"][0]["location"]["line"], 3);
    let text = s.ok(&["ci", "show", "1"]);
    assert!(
        text.contains("greet") && text.contains("build *summary* line"),
        "{text}"
    );
    // Annotations are kept with the job, as GitHub's run page shows them after the run.
    assert!(
        text.contains("warning: src/app.js:3:7: Lint: unused variable"),
        "{text}"
    );

    let logs = s.ok(&["ci", "logs", "1"]);
    assert!(
        logs.contains("hello from push") && logs.contains("instance-1"),
        "{logs}"
    );
    let one = s.ok(&["ci", "logs", "1", "--job", "test (1)"]);
    assert!(
        one.contains("instance-1") && !one.contains("instance-2"),
        "{one}"
    );
    assert!(s.file(".kiln/ci/1/build.log").is_file());
    let build_log = std::fs::read_to_string(s.file(".kiln/ci/1/build.log")).unwrap();
    assert!(
        !build_log.contains("warning: src/app.js"),
        "the log keeps the command's line once: {build_log}"
    );
    assert!(
        build_log.contains("##[warning]unused variable"),
        "{build_log}"
    );

    // --job keeps what the job needs; --matrix narrows its instances.
    s.ok(&["ci", "run", "ci.yml", "--job", "test", "--matrix", "n=2"]);
    let shown = json(&s, &["ci", "show", "2", "--json"]);
    let mut names: Vec<&str> = shown["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["build", "test (2)"]);
    let newest = json(&s, &["ci", "list", "--json"]);
    assert_eq!(newest[0]["id"], 2, "newest first");

    // The commit's workflow runs, not the working tree's edit of it.
    std::fs::write(
        s.file(".github/workflows/ci.yml"),
        GREEN.replace("echo second-step", "exit 1"),
    )
    .unwrap();
    let out = s.run(&["ci", "run", "--job", "build"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("the working tree's copy differs"));
}

#[test]
fn a_failing_step_exits_3_and_is_recorded_as_failed() {
    let s = repo(&[(
        "ci.yml",
        "on: push\njobs:\n  check:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo before\n      - name: breaks\n        run: exit 7\n      - run: echo never-printed\n",
    )]);
    let out = s.run(&["ci", "run"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("run 1 failure"));
    let shown = json(&s, &["ci", "show", "1", "--json"]);
    assert_eq!(shown["status"], "failure");
    let steps = shown["jobs"][0]["steps"].as_array().unwrap();
    assert_eq!(steps[1]["name"], "breaks");
    assert_eq!(steps[1]["conclusion"], "failure");
    assert_eq!(steps[1]["exit_code"], 7);
    assert_eq!(steps[2]["conclusion"], "skipped");
    assert!(!s.ok(&["ci", "logs", "1"]).contains("never-printed"));
}

/// A job with `continue-on-error` that fails: GitHub shows the job as failed, its dependents
/// see `needs.<job>.result == 'success'`, and the run succeeds; the summary line, the record and
/// the exit code say the same.
#[test]
fn a_failed_job_allowed_to_fail_shows_failed_in_a_green_run() {
    let s = repo(&[(
        "ci.yml",
        "on: push\njobs:\n  soft:\n    runs-on: ubuntu-latest\n    continue-on-error: true\n    steps: [ { run: exit 4 } ]\n  after:\n    needs: soft\n    runs-on: ubuntu-latest\n    steps: [ { run: 'echo soft-was-${{ needs.soft.result }}' } ]\n",
    )]);
    let out = s.ok(&["ci", "run"]);
    assert!(out.contains("[after] soft-was-success"), "{out}");
    assert!(
        out.contains("Run 1 success") && out.contains("soft failure, after success"),
        "{out}"
    );
    let shown = json(&s, &["ci", "show", "1", "--json"]);
    assert_eq!(shown["status"], "success");
    let jobs = shown["jobs"].as_array().unwrap();
    let soft = jobs.iter().find(|j| j["job_id"] == "soft").unwrap();
    assert_eq!(soft["status"], "failure");
}

/// `--event pull_request` runs the branch as a pull request's head: the payload's
/// `pull_request.head.ref` is the branch name (not a ref), and `github.head_ref` and
/// `github.base_ref` name the branches, as on GitHub. The run's ref is the pull request's merge
/// ref, as on GitHub, so a step kept for the main branch does not run.
#[test]
fn a_pull_request_run_names_its_branches() {
    let s = repo(&[(
        "ci.yml",
        "on: pull_request\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo \"pr ${{ github.event.pull_request.head.ref }} $GITHUB_HEAD_REF ${{ github.base_ref }} $GITHUB_REF $GITHUB_REF_NAME ${{ github.event.number }}\"\n      - if: github.ref == 'refs/heads/main'\n        run: echo deploy\n      - if: github.event.pull_request.head.repo.full_name == github.repository\n        run: echo not a fork\n",
    )]);
    let out = s.ok(&["ci", "run", "--event", "pull_request"]);
    assert!(
        out.contains("[a] pr main main main refs/pull/1/merge 1/merge 1"),
        "{out}"
    );
    assert!(!out.contains("[a] deploy"), "{out}");
    assert!(out.contains("[a] not a fork"), "{out}");
}

/// `github.repository` comes from the `origin` remote, as nektos/act does, so a job guarded
/// by `if: github.repository == 'owner/name'` (the usual guard on publishing jobs, found in
/// vaultwarden's and tokio's workflows in the fifth corpus) runs in a clone of that repository;
/// without a hosted origin it is `local/<directory>` and the guarded job is skipped.
#[test]
fn the_repository_is_named_by_the_origin_remote() {
    let wf = "on: push\njobs:\n  publish:\n    if: github.repository == 'acme/widgets'\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo \"repo $GITHUB_REPOSITORY ${{ github.repository_owner }} ${{ github.event.repository.name }} ${{ github.event.repository.full_name }}\"\n";
    let s = repo(&[("ci.yml", wf)]);
    let out = s.ok(&["ci", "run"]);
    assert!(!out.contains("[publish] repo"), "{out}");
    git(
        s.path(),
        &["remote", "add", "origin", "git@github.com:acme/widgets.git"],
    );
    let out = s.ok(&["ci", "run"]);
    assert!(
        out.contains("[publish] repo acme/widgets acme widgets acme/widgets"),
        "{out}"
    );
}

/// The default environment names the commit and the ref the run was asked for: a branch, a
/// tag (its commit, the tag as the ref), and a detached `HEAD` (no ref: `refs/heads/main`, as
/// before); the push payload's head commit is that commit, and an unknown revision is refused
/// before anything runs. (`kiln ci run` asks git all of this at once since session 16.)
#[test]
fn the_default_environment_names_the_revision_run() {
    let wf = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo \"at $GITHUB_SHA $GITHUB_REF $GITHUB_REF_NAME $GITHUB_REF_TYPE ${{ github.event.head_commit.id }} ${{ github.event.head_commit.message }} ${{ join(github.event.head_commit.added, ',') }}\"\n";
    let s = repo(&[("ci.yml", wf)]);
    let first = git(s.path(), &["rev-parse", "HEAD"]);
    git(s.path(), &["tag", "-a", "-m", "release", "v1"]);
    std::fs::write(s.file("second.txt"), "2\n").unwrap();
    git(s.path(), &["add", "second.txt"]);
    git(s.path(), &["commit", "-q", "-m", "second"]);
    let second = git(s.path(), &["rev-parse", "HEAD"]);
    git(s.path(), &["branch", "other", &first]);

    let out = s.ok(&["ci", "run"]);
    let want = format!("[a] at {second} refs/heads/main main branch {second} second second.txt");
    assert!(out.contains(&want), "{want}\n{out}");
    let out = s.ok(&["ci", "run", "--rev", "v1"]);
    let want = format!("[a] at {first} refs/tags/v1 v1 tag {first} init ");
    assert!(out.contains(&want), "{want}\n{out}");
    assert!(out.contains(".github/workflows/ci.yml"), "{out}");
    let out = s.ok(&["ci", "run", "--rev", "other"]);
    let want = format!("[a] at {first} refs/heads/other other branch {first} init ");
    assert!(out.contains(&want), "{want}\n{out}");
    git(s.path(), &["checkout", "-q", "--detach", &first]);
    let out = s.ok(&["ci", "run"]);
    let want = format!("[a] at {first} refs/heads/main main branch {first} init ");
    assert!(out.contains(&want), "{want}\n{out}");

    let refused = s.run(&["ci", "run", "--rev", "nope"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("`nope` is not a commit"), "{stderr}");
    assert_eq!(
        json(&s, &["ci", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        4
    );
}

/// A remote action refuses only the runs that include its job: `--job` runs the others (found
/// in the third corpus: `--job` on nightly workflows with a remote action elsewhere was
/// refused whole), and a run including it is refused before anything runs, naming it.
#[test]
fn a_remote_action_refuses_only_the_runs_that_include_its_job() {
    let s = repo(&[(
        "ci.yml",
        "on: push\njobs:\n  lint:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: someone/lint-action@v1\n  test:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo tested\n",
    )]);
    let out = s.ok(&["ci", "run", "--job", "test"]);
    assert!(out.contains("[test] tested"), "{out}");
    let refused = s.run(&["ci", "run"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("so nothing ran")
            && stderr.contains("unknown action `someone/lint-action@v1`"),
        "{stderr}"
    );
}

/// `kiln ci run --event push` on a branch the workflow's `on.push.branches` does not select
/// runs, as it runs a workflow without the trigger, but says GitHub would not (found in the
/// third corpus: a workflow filtered to `fix/e2e-tests-sid` ran from `main` without a word).
#[test]
fn a_push_the_filters_skip_runs_with_a_warning() {
    let s = repo(&[(
        "ci.yml",
        "on:\n  push:\n    branches: [release/*]\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ran\n",
    )]);
    let out = s.run(&["ci", "run", "--event", "push"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "warning: GitHub would not run this workflow for this push (branch `main` is not selected by on.push.branches); running it anyway"
        ),
        "{stderr}"
    );
}

/// A pushed commit whose message has `[skip ci]` (or another of GitHub's skip markers) starts
/// no `push` workflow on GitHub ("Skipping workflow runs"): `kiln ci run` still runs it, as it
/// runs a push the filters skip, but says GitHub would not. A message without one is quiet.
#[test]
fn a_push_whose_commit_says_skip_ci_runs_with_a_warning() {
    let s = repo(&[(
        "ci.yml",
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ran\n",
    )]);
    let out = s.run(&["ci", "run", "--event", "push"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("GitHub would not run"), "{stderr}");
    git(
        s.path(),
        &[
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "docs: typo [ci skip]",
        ],
    );
    let out = s.run(&["ci", "run", "--event", "push"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "warning: GitHub would not run this workflow for this push (the head commit's message has [ci skip]); running it anyway"
        ),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("[a] ran"));
}

#[test]
fn validate_reports_an_unknown_key_with_line_and_column() {
    let s = repo(&[
        ("ci.yml", GREEN),
        (
            "bad.yml",
            "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    stepz:\n      - run: 'true'\n",
        ),
    ]);
    let out = s.run(&["ci", "validate"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(".github/workflows/bad.yml:5:5"), "{stderr}");
    assert!(stderr.contains("unknown key `stepz`"), "{stderr}");
    assert!(stderr.contains("did you mean `steps`?"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ci.yml: valid"));
    s.ok(&["ci", "validate", "ci.yml"]);

    let out = s.run(&["ci", "validate", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let bad = &v["workflows"][0];
    assert_eq!(bad["path"], ".github/workflows/bad.yml");
    let unknown = bad["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["code"] == "unknown-key")
        .unwrap();
    assert_eq!(unknown["location"]["line"], 5);
    assert_eq!(unknown["location"]["column"], 5);

    // Two workflows and none named: the run is refused, listing them.
    let out = s.run(&["ci", "run"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.yml, .github/workflows/ci.yml"));
}

/// GitHub's parallel steps: each mistake where it is written, with its key path and a fix,
/// all at once (the rendering `kiln ci validate` prints).
#[test]
fn validate_renders_parallel_step_mistakes() {
    let s = repo(&[(
        "ci.yml",
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - id: server\n        run: ./serve\n        background: true\n      - wait: sever\n        if: always()\n      - parallel:\n          - run: a\n            background: true\n",
    )]);
    let out = s.run(&["ci", "validate"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stderr));
}

/// A reusable workflow is loaded with each workflow that calls it too: `kiln ci validate`
/// reports its mistakes and warnings once, and counts the files the mistakes are in (a caller
/// and its called workflow, as polygon-edge's nightly and test workflows are).
#[test]
fn validate_reports_a_called_workflows_mistakes_once() {
    let called = "on:\n  workflow_call:\njobs:\n  t:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: someone/scan@v1\n      - run: echo ${{ github.event.pull_request.title }}\n";
    let caller = "on: pull_request\njobs:\n  test:\n    uses: ./.github/workflows/test.yml\n  notify:\n    needs: test\n    runs-on: ubuntu-latest\n    steps:\n      - uses: someone/notify@v1\n";
    let s = repo(&[("nightly.yml", caller), ("test.yml", called)]);
    let out = s.run(&["ci", "validate"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("someone/scan@v1`").count(), 1, "{stderr}");
    assert_eq!(
        stderr.matches("warning[injection-risk]").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("2 mistakes found in 2 files"), "{stderr}");
}

/// An untrusted event field expanded into `run:` is flagged where it is written, with the fix,
/// and the workflow still validates and runs, as on GitHub. A workflow is named by its file
/// (with or without `.yml`) or by its `name:`, as `gh workflow run` takes either.
#[test]
fn injection_risks_are_warned_about_and_workflows_are_found_by_file_stem_or_name() {
    let risky = "name: Risky\non: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo \"msg=${{ github.event.head_commit.message }}\"\n      - run: echo \"default=${{ github.event.repository.default_branch }} before=${{ github.event.before }} by=${{ github.event.pusher.name }}\"\n      - run: echo \"added=${{ join(github.event.head_commit.added, ',') }} modified=[${{ join(github.event.head_commit.modified, ',') }}]\"\n";
    let s = repo(&[("ci.yml", GREEN), ("risky.yml", risky)]);
    let out = s.run(&["ci", "validate", "risky"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "warning[injection-risk]: `github.event.head_commit.message` is untrusted input"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(".github/workflows/risky.yml:7:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("help: pass it through the environment"),
        "{stderr}"
    );
    let v = json(&s, &["ci", "validate", "risky.yml", "--json"]);
    assert_eq!(v["valid"], true);
    assert_eq!(v["workflows"][0]["warnings"][0]["code"], "injection-risk");

    let out = s.run(&["ci", "run", "Risky"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("msg=init"), "{stdout}");
    // The first commit: no parent, so `before` is zeros, as for a new branch on GitHub.
    assert!(
        stdout.contains(&format!("default=main before={} by=", "0".repeat(40))),
        "{stdout}"
    );
    // The first commit's files are all added (they were listed as modified).
    assert!(stdout.contains("modified=[]"), "{stdout}");
    assert!(
        stdout.contains("added=") && stdout.contains(".github/workflows/risky.yml"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning[injection-risk]"));
    let out = s.run(&["ci", "run", "nothing-like-it"]);
    assert_ne!(out.status.code(), Some(0));
    // Two workflows run on push: a bare `kiln ci run` asks which.
    let out = s.run(&["ci", "run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("several workflows run on `push`; name one"),
        "{stderr}"
    );
}

/// A bare `kiln ci run` runs the one workflow the event triggers, as GitHub would: a
/// reusable workflow (`workflow_call` only) beside it is not a candidate.
#[test]
fn a_bare_run_picks_the_one_workflow_the_event_triggers() {
    let called = "on:\n  workflow_call:\njobs:\n  g:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo called\n";
    let caller = "name: main\non: push\njobs:\n  c:\n    uses: ./.github/workflows/called.yml\n";
    let s = repo(&[("called.yml", called), ("main.yml", caller)]);
    let out = s.ok(&["ci", "run"]);
    assert!(
        out.starts_with("Run 1: main (.github/workflows/main.yml) on push"),
        "{out}"
    );
    assert!(out.contains("[c / g] called"), "{out}");
    let out = s.run(&["ci", "run", "--event", "release"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no workflow runs on `release`; name one"),
        "{stderr}"
    );
}

/// `workflow_dispatch` with typed inputs: `inputs` holds them typed, with their defaults, and
/// `github.event.inputs` holds every declared input as the form sends it (strings); an
/// undeclared input, a missing required one and a value its type refuses are refused before
/// anything runs.
#[test]
fn a_dispatch_gives_typed_inputs_and_the_event_gives_them_all_as_strings() {
    let dispatch = r#"run-name: Release ${{ inputs.tag }} to ${{ inputs.target }}
on:
  workflow_dispatch:
    inputs:
      dry: { type: boolean }
      n: { type: number, default: 3 }
      target: { type: choice, options: [staging, prod], default: staging }
      tag: { type: string, required: true }
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: echo "typed dry=${{ inputs.dry }} n=${{ inputs.n }} more=${{ inputs.n > 2 }} target=${{ inputs.target }} tag=${{ inputs.tag }}"
      - run: echo "event dry=${{ github.event.inputs.dry }} n=${{ github.event.inputs.n }} same=${{ github.event.inputs.n == '3' }} target=${{ github.event.inputs.target }}"
      - if: inputs.dry
        run: echo never-printed
      - run: echo "repository ${{ github.event.repository.full_name == github.repository }}"
"#;
    let s = repo(&[("dispatch.yml", dispatch)]);
    let out = s.ok(&[
        "ci",
        "run",
        "dispatch",
        "--event",
        "workflow_dispatch",
        "--input",
        "tag=v1",
    ]);
    assert!(
        out.contains("typed dry=false n=3 more=true target=staging tag=v1"),
        "{out}"
    );
    assert!(out.contains("\nrun-name: Release v1 to staging\n"), "{out}");
    // GitHub's dispatch payload names the repository, as a push's does.
    assert!(out.contains("[a] repository true"), "{out}");
    // The run-name is kept with the run: `ci list` and `ci show` name it.
    let listed = s.ok(&["ci", "list"]);
    assert!(
        listed
            .lines()
            .nth(1)
            .is_some_and(|l| l.ends_with("  Release v1 to staging")),
        "{listed}"
    );
    let run_id = json(&s, &["ci", "list", "--json"])[0]["id"]
        .as_u64()
        .unwrap()
        .to_string();
    let shown = s.ok(&["ci", "show", &run_id]);
    assert!(
        shown.contains("\nrun-name: Release v1 to staging\n"),
        "{shown}"
    );
    assert!(
        out.contains("event dry=false n=3 same=true target=staging"),
        "{out}"
    );
    assert!(!out.contains("] never-printed"), "{out}");
    let out = s.run(&["ci", "run", "dispatch", "--event", "workflow_dispatch"]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("input `tag` of `on.workflow_dispatch` is required"),
        "{out:?}"
    );
    let out = s.run(&[
        "ci",
        "run",
        "dispatch",
        "--event",
        "workflow_dispatch",
        "--input",
        "tag=v1",
        "--input",
        "nope=1",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("declares no input `nope`"),
        "{out:?}"
    );
    // Values are checked against their types, as GitHub's dispatch checks them.
    for (input, why) in [
        (
            "target=dev",
            "is not in the list of allowed values: staging, prod",
        ),
        ("dry=maybe", "is not a boolean (true or false)"),
        ("n=many", "is not a number"),
    ] {
        let out = s.run(&[
            "ci",
            "run",
            "dispatch",
            "--event",
            "workflow_dispatch",
            "--input",
            "tag=v1",
            "--input",
            input,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{input}: {stderr}");
        assert!(stderr.contains(why), "{input}: {stderr}");
    }
}

/// kiln.yaml's `vars:` and `secrets:` are the run's repository variables and secrets, and its
/// `environments:` GitHub's environments: a job with `environment: staging` reads staging's
/// overrides. `--var` and `--secret` win over both. A stack whose services take their release
/// from this very pipeline loads for it before any run exists.
#[test]
fn a_run_reads_vars_and_secrets_from_the_stack_and_its_environments() {
    const STACK: &str = r#"name: demo
vars: { region: eu, tier: base, replicas: 2 }
secrets:
  db: { env: DEMO_DB_URL }
  token: { file: token.txt }
services:
  api: { run: ./serve, release: { pipeline: ci, artifact: api } }
environments:
  staging:
    vars: { tier: small }
    secrets: { db: { env: DEMO_STAGING_DB_URL } }
    deploy: { auto: true }
  production:
    promote: { from: staging }
"#;
    const WORKFLOW: &str = r#"name: ci
on: push
jobs:
  plain:
    runs-on: ubuntu-latest
    steps:
      - run: echo "plain ${{ vars.region }} ${{ vars.tier }} ${{ vars.replicas }} ${DB^^} ${TOKEN^^}"
        env: { DB: "${{ secrets.db }}", TOKEN: "${{ secrets.token }}" }
  staged:
    runs-on: ubuntu-latest
    environment: { name: staging, url: "https://staging.example" }
    steps:
      - run: echo "staged ${{ vars.region }} ${{ vars.tier }} ${DB^^}"
        env: { DB: "${{ secrets.db }}" }
"#;
    let s = Scratch::new(STACK);
    std::fs::create_dir_all(s.file(".github/workflows")).unwrap();
    std::fs::write(s.file(".github/workflows/ci.yml"), WORKFLOW).unwrap();
    std::fs::write(s.file("token.txt"), "token-from-file\n").unwrap();
    git(s.path(), &["init", "-q", "-b", "main"]);
    git(s.path(), &["add", "-A"]);
    git(s.path(), &["commit", "-q", "-m", "init"]);
    let run = |extra: &[&str]| {
        let mut args = vec!["ci", "run"];
        args.extend_from_slice(extra);
        let out = s
            .command(&args)
            .env("DEMO_DB_URL", "repo-db")
            .env("DEMO_STAGING_DB_URL", "staging-db")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The secrets' values, upper-cased so the masks do not hide which one a job read.
    let out = run(&[]);
    assert!(
        out.contains("plain eu base 2 REPO-DB TOKEN-FROM-FILE"),
        "{out}"
    );
    assert!(out.contains("staged eu small STAGING-DB"), "{out}");
    let out = run(&["--var", "tier=large", "--secret", "db=given"]);
    assert!(out.contains("plain eu large 2 GIVEN"), "{out}");
    assert!(out.contains("staged eu large GIVEN"), "{out}");
    for text in [out.as_str(), &s.ok(&["ci", "logs", "1"])] {
        for secret in ["repo-db", "staging-db", "token-from-file"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
}

#[test]
fn secrets_never_reach_the_stored_logs_or_state() {
    const SECRET: &str = "hunter2-very-secret";
    const FILE_SECRET: &str = "from-the-file-xyzzy";
    let s = repo(&[(
        "ci.yml",
        "on: push\njobs:\n  leak:\n    runs-on: ubuntu-latest\n    outputs:\n      out: ${{ steps.o.outputs.v }}\n    steps:\n      - run: echo \"token is $T and $U\"\n        env: { T: '${{ secrets.TOKEN }}', U: '${{ secrets.OTHER }}' }\n      - id: o\n        run: echo \"v=${{ secrets.TOKEN }}\" >> \"$GITHUB_OUTPUT\"\n",
    )]);
    std::fs::write(
        s.file("secrets.env"),
        format!("# test\nOTHER={FILE_SECRET}\n"),
    )
    .unwrap();
    let out = s.ok(&[
        "ci",
        "run",
        "--secret",
        &format!("TOKEN={SECRET}"),
        "--secret-file",
        s.file("secrets.env").to_str().unwrap(),
    ]);
    assert!(out.contains("token is *** and ***"), "{out}");
    let logs = s.ok(&["ci", "logs", "1"]);
    assert!(logs.contains("token is *** and ***"), "{logs}");
    let shown = s.ok(&["ci", "show", "1", "--json"]);
    for text in [&out, &logs, &shown] {
        assert!(!text.contains(SECRET) && !text.contains(FILE_SECRET));
    }
    // Every byte kiln keeps: the database (and its WAL) and the log files.
    let mut stack = vec![s.file(".kiln")];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            seen += 1;
            let bytes = std::fs::read(&path).unwrap();
            for secret in [SECRET, FILE_SECRET] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{secret} found in {}",
                    path.display()
                );
            }
        }
    }
    assert!(seen >= 2);
}

#[test]
fn an_interrupted_run_is_recorded_as_cancelled_and_leaves_no_process() {
    let pid_dir = tempfile::tempdir().unwrap();
    let pid_file = pid_dir.path().join("sleep.pid");
    let workflow = format!(
        "on: push\njobs:\n  slow:\n    runs-on: ubuntu-latest\n    steps:\n      - run: |\n          sleep 30 &\n          echo $! > {}\n          echo started\n          wait\n",
        pid_file.display()
    );
    let s = repo(&[("ci.yml", &workflow)]);
    let mut child = s
        .command(&["ci", "run"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The step wrote its background child's pid: the run is under way.
    assert!(common::wait_until(
        std::time::Duration::from_secs(20),
        || { std::fs::read_to_string(&pid_file).is_ok_and(|t| t.ends_with('\n')) }
    ));
    let sleep_pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    let shown = json(&s, &["ci", "show", "1", "--json"]);
    assert_eq!(shown["status"], "cancelled", "{shown:#}");
    // The step's background `sleep` was in its process group: it is gone (or a zombie
    // waiting for init to reap it).
    let alive = || {
        std::fs::read_to_string(format!("/proc/{sleep_pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    assert!(common::wait_until(
        std::time::Duration::from_secs(5),
        || !alive()
    ));
}

#[test]
fn a_run_whose_process_was_killed_shows_as_interrupted() {
    let pid_dir = tempfile::tempdir().unwrap();
    let pid_file = pid_dir.path().join("step.pid");
    let workflow = format!(
        "on: push\njobs:\n  slow:\n    runs-on: ubuntu-latest\n    steps:\n      - run: |\n          echo $$ > {}\n          sleep 30\n",
        pid_file.display()
    );
    let s = repo(&[("ci.yml", &workflow)]);
    let mut child = s
        .command(&["ci", "run"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(common::wait_until(
        std::time::Duration::from_secs(20),
        || std::fs::read_to_string(&pid_file).is_ok_and(|t| t.ends_with('\n'))
    ));
    child.kill().unwrap();
    child.wait().unwrap();
    // SIGKILL leaves the step's group behind (nothing can clean up after it): do it here.
    let step: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(step),
        nix::sys::signal::Signal::SIGKILL,
    );
    let runs = json(&s, &["ci", "list", "--json"]);
    assert_eq!(runs[0]["status"], "interrupted", "{runs:#}");
    assert!(runs[0]["finished_at"].is_string());
}

#[test]
fn runs_use_the_commit_not_the_working_tree_and_keep_workspaces_only_when_asked() {
    let wf = "on: push\njobs:\n  look:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - run: cat data.txt; test ! -e new.txt && echo no-untracked\n      - run: test \"$FAIL\" != yes\n        env: { FAIL: '${{ vars.FAIL }}' }\n";
    let s = repo(&[("ci.yml", wf)]);
    std::fs::write(s.file("data.txt"), "committed\n").unwrap();
    git(s.path(), &["add", "data.txt"]);
    git(s.path(), &["commit", "-q", "-m", "data"]);
    std::fs::write(s.file("data.txt"), "edited\n").unwrap();
    std::fs::write(s.file("new.txt"), "untracked\n").unwrap();
    let out = s.run(&["ci", "run"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("[look] committed") && stdout.contains("[look] no-untracked"),
        "{stdout}"
    );
    assert!(
        stderr.contains("note: 2 uncommitted changes in the working tree are not part of the run"),
        "{stderr}"
    );
    // A green run leaves nothing behind.
    assert!(!s.file(".kiln/runs/run-1").exists());
    // A failing run with --keep-workspace keeps the job's clone for a look.
    git(s.path(), &["checkout", "-q", "data.txt"]);
    std::fs::remove_file(s.file("new.txt")).unwrap();
    std::fs::write(
        s.file(".github/workflows/ci.yml"),
        wf.replace("'${{ vars.FAIL }}'", "'yes'"),
    )
    .unwrap();
    git(s.path(), &["commit", "-q", "-am", "fail"]);
    let out = s.run(&["ci", "run", "--keep-workspace"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kept the run's workspaces under"),
        "{stderr}"
    );
    assert!(!stderr.contains("uncommitted"), "{stderr}");
    assert!(
        s.file(".kiln/runs/run-2/job-0/workspace/data.txt")
            .is_file()
    );
}

/// `kiln ci validate` also reads the local actions (`uses: ./path`) the workflows name, and
/// those their composite steps name: a mistake in an `action.yml` is found before a run
/// reaches the step, with its place in that file.
#[test]
fn validate_reads_the_local_actions_the_workflows_use() {
    let workflow = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: ./.github/actions/outer\n";
    let s = repo(&[("ci.yml", workflow)]);
    let action = |name: &str, text: &str| {
        let dir = s.file(&format!(".github/actions/{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("action.yml"), text).unwrap();
    };
    action(
        "outer",
        "name: outer\nruns:\n  using: composite\n  steps:\n    - uses: ./.github/actions/inner\n",
    );
    action(
        "inner",
        "name: inner\nruns:\n  using: composite\n  steps:\n    - run: echo no shell\n",
    );
    let out = s.run(&["ci", "validate"]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains(".github/actions/outer: valid (local action)"),
        "{stdout}"
    );
    assert!(
        stderr.contains("`runs.steps[0]` is missing `shell`")
            && stderr.contains(".github/actions/inner/action.yml:5:7"),
        "{stderr}"
    );
    assert!(stderr.contains("1 mistake found in 1 file"), "{stderr}");
    let v: serde_json::Value =
        serde_json::from_slice(&s.run(&["ci", "validate", "--json"]).stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["actions"][1]["path"], ".github/actions/inner", "{v:#}");
    assert_eq!(v["actions"][1]["diagnostics"][0]["code"], "missing-key");

    action(
        "inner",
        "name: inner\nruns:\n  using: composite\n  steps:\n    - run: echo fine\n      shell: bash\n",
    );
    let out = s.ok(&["ci", "validate"]);
    assert!(
        out.contains(".github/actions/inner: valid (local action)"),
        "{out}"
    );

    // `uses: ./` is the action at the repository's root: named `.`, not an empty path.
    action(
        "inner",
        "name: inner\nruns:\n  using: composite\n  steps:\n    - uses: ./\n",
    );
    std::fs::write(
        s.file("action.yml"),
        "name: root\nruns:\n  using: composite\n  steps:\n    - run: echo root\n      shell: bash\n",
    )
    .unwrap();
    let out = s.ok(&["ci", "validate"]);
    assert!(out.contains("\n.: valid (local action)"), "{out}");
}

/// A workflow for every event whose payload kiln builds: it prints the payload as
/// `$GITHUB_EVENT_PATH` holds it, the run's refs, and a few fields as expressions read them.
const DUMP: &str = r#"on:
  push:
  pull_request:
  pull_request_target:
  release:
  workflow_dispatch:
  merge_group:
  issues:
  issue_comment:
  create:
  delete:
  schedule:
    - cron: '0 1 * * *'
    - cron: '30 5 * * 1'
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: echo "event $(cat "$GITHUB_EVENT_PATH")"
      - run: echo "refs $GITHUB_REF $GITHUB_SHA [$GITHUB_BASE_REF] [$GITHUB_HEAD_REF] $GITHUB_REF_TYPE"
      - run: echo "expr ${{ github.event.repository.html_url == format('{0}/{1}', github.server_url, github.repository) }} ${{ github.event.sender.login }} ${{ github.event.repository.default_branch }} [${{ github.event.schedule }}]"
"#;

/// The payload a run of DUMP printed.
fn event_of(out: &str) -> serde_json::Value {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("[a] event "))
        .unwrap_or_else(|| panic!("no payload printed:\n{out}"));
    serde_json::from_str(line).unwrap()
}

/// The line of DUMP's run that starts with `what`.
fn line_of<'a>(out: &'a str, what: &str) -> &'a str {
    let prefix = format!("[a] {what} ");
    out.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no `{what}` line:\n{out}"))
}

/// A DUMP repository named `acme/widgets` by its origin: `main` with the workflow, then
/// `feature` with two commits, while `main` moved on by one. Returns it with the fork point and
/// `main`'s tip.
fn branched() -> (Scratch, String, String) {
    let s = repo(&[("dump.yml", DUMP)]);
    let dir = s.path();
    git(
        dir,
        &[
            "remote",
            "add",
            "origin",
            "https://github.com/acme/widgets.git",
        ],
    );
    let fork_point = git(dir, &["rev-parse", "HEAD"]);
    git(dir, &["checkout", "-qb", "feature"]);
    std::fs::write(s.file("login.txt"), "form\n").unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "Start the login page"]);
    git(
        dir,
        &[
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "Add login\n\nFixes the form.",
        ],
    );
    git(dir, &["checkout", "-q", "main"]);
    git(
        dir,
        &["commit", "-q", "--allow-empty", "-m", "main moves on"],
    );
    let main_tip = git(dir, &["rev-parse", "HEAD"]);
    git(dir, &["checkout", "-q", "feature"]);
    (s, fork_point, main_tip)
}

/// `--event pull_request` from a branch: GitHub's pull request payload of a branch of the
/// repository into its default branch. `base.sha` is the merge base (not `main`'s newer tip,
/// not a made-up value), so `git diff base.sha github.sha` is the pull request's change as on
/// GitHub; the title and body are the head commit's message; the run is at the merge ref. The
/// whole shape is a snapshot.
#[test]
fn a_pull_request_payload_is_githubs_for_the_branch_into_the_default_branch() {
    let (s, fork_point, main_tip) = branched();
    let head = git(s.path(), &["rev-parse", "HEAD"]);
    let out = s.ok(&["ci", "run", "dump.yml", "--event", "pull_request"]);
    let event = event_of(&out);
    let pr = &event["pull_request"];
    assert_eq!(pr["base"]["sha"], fork_point.as_str(), "{out}");
    assert_ne!(pr["base"]["sha"], main_tip.as_str());
    assert_eq!(pr["head"]["sha"], head.as_str());
    assert_eq!(pr["base"]["ref"], "main");
    assert_eq!(pr["base"]["label"], "acme:main");
    assert_eq!(pr["head"]["label"], "acme:feature");
    assert_eq!(pr["title"], "Add login");
    assert_eq!(pr["body"], "Fixes the form.");
    assert_eq!(pr["commits"], 2);
    assert_eq!(
        (&pr["changed_files"], &pr["additions"], &pr["deletions"]),
        (
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(0)
        )
    );
    assert_eq!(pr["labels"], serde_json::json!([]));
    assert_eq!(pr["html_url"], "http://localhost/acme/widgets/pull/1");
    assert_eq!(
        pr["head"]["repo"]["full_name"],
        event["repository"]["full_name"]
    );
    assert_eq!(
        line_of(&out, "refs"),
        format!("refs/pull/1/merge {head} [main] [feature] branch")
    );
    assert_eq!(line_of(&out, "expr"), "true kiln main []");

    // The whole payload, its commits and times named.
    let time = git(s.path(), &["log", "-1", "--format=%cI"]);
    let text = serde_json::to_string_pretty(&event)
        .unwrap()
        .replace(&head, "<head>")
        .replace(&fork_point, "<merge base>")
        .replace(&time, "<commit time>");
    insta::assert_snapshot!(text);
}

/// `pull_request_target` runs at the base branch's ref, as on GitHub, and the base is the
/// default branch git knows (`origin/HEAD`, here `trunk`), not always `main`. Run on the default
/// branch itself, the pull request is its last commit.
#[test]
fn a_pull_request_targets_the_default_branch_git_knows() {
    let (s, fork_point, _) = branched();
    let dir = s.path();
    git(dir, &["branch", "-qm", "main", "trunk"]);
    let trunk = git(dir, &["rev-parse", "trunk"]);
    git(dir, &["update-ref", "refs/remotes/origin/trunk", &trunk]);
    git(
        dir,
        &[
            "symbolic-ref",
            "refs/remotes/origin/HEAD",
            "refs/remotes/origin/trunk",
        ],
    );
    let head = git(dir, &["rev-parse", "HEAD"]);
    let out = s.ok(&["ci", "run", "dump.yml", "--event", "pull_request_target"]);
    let pr = &event_of(&out)["pull_request"];
    assert_eq!(pr["base"]["ref"], "trunk", "{out}");
    assert_eq!(pr["base"]["sha"], fork_point.as_str());
    assert_eq!(
        line_of(&out, "refs"),
        format!("refs/heads/trunk {head} [trunk] [feature] branch")
    );

    git(dir, &["checkout", "-q", "trunk"]);
    let parent = git(dir, &["rev-parse", "HEAD^"]);
    let out = s.ok(&["ci", "run", "dump.yml", "--event", "pull_request"]);
    let pr = &event_of(&out)["pull_request"];
    assert_eq!(pr["base"]["sha"], parent.as_str(), "{out}");
    assert_eq!(pr["title"], "main moves on");
    assert_eq!(pr["body"], serde_json::Value::Null);

    // With no default branch git can tell (no origin/HEAD, main or master), the pull request
    // is the commit's own, against its parent, on its branch.
    git(
        dir,
        &["symbolic-ref", "--delete", "refs/remotes/origin/HEAD"],
    );
    std::fs::write(s.file("notes.txt"), "a\nb\n").unwrap();
    git(dir, &["add", "notes.txt"]);
    git(dir, &["commit", "-qm", "Notes"]);
    let parent = git(dir, &["rev-parse", "HEAD^"]);
    let out = s.ok(&["ci", "run", "dump.yml", "--event", "pull_request"]);
    let pr = &event_of(&out)["pull_request"];
    assert_eq!(pr["base"]["ref"], "trunk", "{out}");
    assert_eq!(pr["base"]["sha"], parent.as_str());
    assert_eq!(
        (&pr["changed_files"], &pr["additions"]),
        (&serde_json::json!(1), &serde_json::json!(2))
    );
}

/// `github.event.schedule` is the cron line that fired: the workflow's first unless
/// `--schedule` names another of its lines; one it does not have is refused.
#[test]
fn a_schedule_run_names_its_cron_line() {
    let s = repo(&[("dump.yml", DUMP)]);
    let out = s.ok(&["ci", "run", "--event", "schedule"]);
    assert_eq!(event_of(&out)["schedule"], "0 1 * * *", "{out}");
    let out = s.ok(&[
        "ci",
        "run",
        "--event",
        "schedule",
        "--schedule",
        "30 5  * * 1",
    ]);
    assert!(line_of(&out, "expr").ends_with("[30 5 * * 1]"), "{out}");
    let refused = s.run(&[
        "ci",
        "run",
        "--event",
        "schedule",
        "--schedule",
        "0 2 * * *",
    ]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        err.contains("is not one of the workflow's `on.schedule` crons: `0 1 * * *`, `30 5 * * 1`"),
        "{err}"
    );
    let refused = s.run(&["ci", "run", "--event", "push", "--schedule", "0 1 * * *"]);
    assert!(!refused.status.success());
}

/// `--event release` is the release of the tag at the commit: its name, notes (the annotated
/// tag's message), pre-release from its version, and the run at the tag's ref. A push of the
/// tag is a new ref with no commits of its own, based on the branch whose head it tags.
/// Without a tag there is no release, and the run says so.
#[test]
fn a_release_and_a_tag_push_are_the_tags_at_the_commit() {
    let s = repo(&[("dump.yml", DUMP)]);
    let dir = s.path();
    let out = s.run(&["ci", "run", "--event", "release"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning: no tag points at"), "{err}");
    git(dir, &["tag", "v2.0.0"]);
    git(dir, &["commit", "-q", "--allow-empty", "-m", "next"]);
    git(
        dir,
        &["tag", "-a", "v2.1.0-rc.1", "-m", "Second release\n\nNotes."],
    );
    let head = git(dir, &["rev-parse", "HEAD"]);
    let out = s.ok(&["ci", "run", "--event", "release"]);
    let release = &event_of(&out)["release"];
    assert_eq!(release["tag_name"], "v2.1.0-rc.1", "{out}");
    assert_eq!(release["name"], "v2.1.0-rc.1");
    assert_eq!(release["body"], "Second release\n\nNotes.");
    assert_eq!(release["prerelease"], true);
    assert_eq!(release["draft"], false);
    assert_eq!(release["target_commitish"], "main");
    assert_eq!(
        line_of(&out, "refs"),
        format!("refs/tags/v2.1.0-rc.1 {head} [] [] tag")
    );

    let out = s.ok(&["ci", "run", "--rev", "v2.1.0-rc.1", "--event", "push"]);
    let push = event_of(&out);
    assert_eq!(push["ref"], "refs/tags/v2.1.0-rc.1", "{out}");
    assert_eq!(push["base_ref"], "refs/heads/main");
    assert_eq!(push["created"], true);
    assert_eq!(push["before"], "0".repeat(40));
    assert_eq!(push["commits"], serde_json::json!([]));
    assert_eq!(push["head_commit"]["id"], head.as_str());
    // A tag of a commit no branch is at the head of has no base.
    let out = s.ok(&["ci", "run", "--rev", "v2.0.0", "--event", "push"]);
    assert_eq!(event_of(&out)["base_ref"], serde_json::Value::Null, "{out}");
    let out = s.ok(&["ci", "run", "--rev", "v2.0.0", "--event", "release"]);
    assert_eq!(event_of(&out)["release"]["prerelease"], false, "{out}");
}

/// Every payload names the repository as GitHub's do (web and clone addresses on kiln's
/// `github.server_url`, the default branch, not private nor a fork) and the sender; a dispatch
/// names its workflow; a merge group runs on its queue branch.
#[test]
fn every_payload_names_the_repository_and_the_sender() {
    let (s, fork_point, _) = branched();
    for event in [
        "push",
        "workflow_dispatch",
        "schedule",
        "issues",
        "issue_comment",
        "merge_group",
        "create",
        "delete",
        "pull_request",
        "release",
    ] {
        let out = s.ok(&["ci", "run", "dump.yml", "--event", event]);
        let payload = event_of(&out);
        let repository = &payload["repository"];
        assert_eq!(repository["full_name"], "acme/widgets", "{event}: {out}");
        assert_eq!(repository["owner"]["login"], "acme", "{event}");
        assert_eq!(repository["default_branch"], "main", "{event}");
        assert_eq!(
            repository["clone_url"], "http://localhost/acme/widgets.git",
            "{event}"
        );
        assert_eq!(repository["private"], false, "{event}");
        assert_eq!(repository["fork"], false, "{event}");
        assert_eq!(payload["sender"]["login"], "kiln", "{event}");
        assert!(
            line_of(&out, "expr").starts_with("true kiln main"),
            "{event}: {out}"
        );
        match event {
            "workflow_dispatch" => {
                assert_eq!(payload["workflow"], ".github/workflows/dump.yml");
            }
            "merge_group" => {
                let queue = format!("refs/heads/gh-readonly-queue/main/pr-1-{fork_point}");
                assert_eq!(payload["merge_group"]["head_ref"], queue.as_str(), "{out}");
                assert_eq!(payload["merge_group"]["base_sha"], fork_point.as_str());
                assert!(line_of(&out, "refs").starts_with(&queue), "{out}");
            }
            "create" => assert_eq!(payload["master_branch"], "main"),
            "delete" => {
                assert_eq!(
                    (&payload["ref"], &payload["ref_type"]),
                    (&serde_json::json!("feature"), &serde_json::json!("branch"))
                );
                assert_eq!(payload.get("master_branch"), None, "{out}");
            }
            "issue_comment" => assert_eq!(payload["action"], "created"),
            _ => {}
        }
    }
}

/// A review of the pull request is the pull request's payload with a review, at the merge
/// ref; a `repository_dispatch` is of the first event type the workflow listens for; a
/// `workflow_run` is of the activity it waits for; a `deployment_status` is a deployment's
/// success; a called
/// workflow runs in its caller's event, as on GitHub.
#[test]
fn reviews_dispatches_and_called_workflows_have_their_events() {
    let caller = r#"on:
  pull_request_review:
  repository_dispatch:
    types: [deploy, rollback]
  workflow_run:
    workflows: [ci]
    types: [requested]
  deployment_status:
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: echo "event $(cat "$GITHUB_EVENT_PATH")"
      - run: echo "refs $GITHUB_REF [$GITHUB_BASE_REF] [$GITHUB_HEAD_REF]"
  called:
    uses: ./.github/workflows/called.yml
"#;
    let called = "on: workflow_call\njobs:\n  b:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo \"called ${{ github.event_name }} ${{ github.event.action }} ${{ github.event.repository.default_branch }}\"\n";
    let sync = "on:\n  pull_request:\n    types: [synchronize, closed]\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo \"event $(cat \"$GITHUB_EVENT_PATH\")\"\n";
    let s = repo(&[
        ("caller.yml", caller),
        ("called.yml", called),
        ("sync.yml", sync),
    ]);
    git(s.path(), &["checkout", "-qb", "feature"]);
    git(s.path(), &["commit", "-q", "--allow-empty", "-m", "Tidy"]);
    // A workflow for other activity types sees the first of them: a push to the branch.
    let out = s.ok(&["ci", "run", "sync.yml", "--event", "pull_request"]);
    let event = event_of(&out);
    assert_eq!(event["action"], "synchronize", "{out}");
    assert_eq!(
        event["after"],
        git(s.path(), &["rev-parse", "HEAD"]).as_str()
    );
    assert_eq!(
        event["before"],
        git(s.path(), &["rev-parse", "HEAD^"]).as_str()
    );
    let out = s.ok(&["ci", "run", "caller.yml", "--event", "pull_request_review"]);
    let event = event_of(&out);
    assert_eq!(event["action"], "submitted", "{out}");
    assert_eq!(event["review"]["state"], "commented");
    assert_eq!(event["pull_request"]["title"], "Tidy");
    assert_eq!(line_of(&out, "refs"), "refs/pull/1/merge [main] [feature]");
    assert!(
        out.lines()
            .any(|l| l.ends_with("called pull_request_review submitted main")),
        "{out}"
    );
    let out = s.ok(&["ci", "run", "caller.yml", "--event", "repository_dispatch"]);
    let event = event_of(&out);
    assert_eq!(event["action"], "deploy", "{out}");
    assert_eq!(event["client_payload"], serde_json::json!({}));
    assert!(
        out.lines()
            .any(|l| l.ends_with("called repository_dispatch deploy main")),
        "{out}"
    );
    // The activity it listens for, of the workflow it names.
    let out = s.ok(&["ci", "run", "caller.yml", "--event", "workflow_run"]);
    let event = event_of(&out);
    assert_eq!(event["action"], "requested", "{out}");
    assert_eq!(event["workflow_run"]["name"], "ci");
    assert_eq!(event["workflow_run"]["status"], "queued");
    assert_eq!(event["workflow_run"]["conclusion"], serde_json::Value::Null);
    assert_eq!(event["workflow_run"]["head_branch"], "feature");
    let out = s.ok(&["ci", "run", "caller.yml", "--event", "deployment_status"]);
    let event = event_of(&out);
    assert_eq!(event["deployment_status"]["state"], "success", "{out}");
    assert_eq!(event["deployment"]["environment"], "production");
    assert_eq!(event["deployment"]["ref"], "feature");
}

/// The push payload's whole shape (the commit and its parent, its files, the repository, the
/// pusher and the sender), as a snapshot: the control plane's push runs build the same one.
#[test]
fn a_push_payload_is_githubs_for_the_commit_and_its_parent() {
    let (s, _, _) = branched();
    let dir = s.path();
    let out = s.ok(&[
        "ci",
        "run",
        "dump.yml",
        "--event",
        "push",
        "--rev",
        "feature~1",
    ]);
    let event = event_of(&out);
    let (sha, parent) = (
        git(dir, &["rev-parse", "feature~1"]),
        git(dir, &["rev-parse", "feature~2"]),
    );
    let tree = git(dir, &["rev-parse", "feature~1^{tree}"]);
    let time = git(dir, &["log", "-1", "--format=%cI", "feature~1"]);
    let text = serde_json::to_string_pretty(&event)
        .unwrap()
        .replace(&sha, "<sha>")
        .replace(&sha[..12], "<sha:12>")
        .replace(&parent, "<parent>")
        .replace(&parent[..12], "<parent:12>")
        .replace(&tree, "<tree>")
        .replace(&time, "<commit time>");
    insta::assert_snapshot!(text);
}
