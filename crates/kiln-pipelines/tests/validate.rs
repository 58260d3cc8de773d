//! Validation: one case per class of bad input, each checked for its message and position.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test helpers may panic: that is how tests fail.

use std::path::Path;

use kiln_pipelines::parse_workflow;
use kiln_spec::Diagnostic;
use kiln_spec::source::SourceMap;

/// Where a diagnostic points, as `line:col` (`0:0` without a place).
fn place(sources: &SourceMap, d: &Diagnostic) -> String {
    let (line, col) = d
        .span
        .map(|s| sources.file(s.file).line_col(s.start))
        .unwrap_or((0, 0));
    format!("{line}:{col}")
}

/// Every diagnostic as `line:col message`, in order.
fn errors(yaml: &str) -> Vec<String> {
    let err = parse_workflow(Path::new("ci.yml"), yaml).expect_err("expected errors");
    err.diagnostics
        .iter()
        .map(|d| format!("{} {}", place(&err.sources, d), d.message))
        .collect()
}

fn ok(yaml: &str) {
    if let Err(e) = parse_workflow(Path::new("ci.yml"), yaml) {
        panic!("{e}");
    }
}

#[test]
fn a_full_workflow_parses() {
    ok(r#"
name: CI
run-name: "CI for ${{ github.ref }}"
on:
  push: { branches: [main], paths-ignore: ["docs/**"] }
  pull_request: { types: [opened] }
  workflow_dispatch:
    inputs:
      level: { type: choice, options: [a, b], default: a }
  schedule: [{ cron: "0 0 * * *" }]
permissions: read-all
concurrency: ci
env: { A: "${{ secrets.X }}" }
defaults: { run: { shell: bash, working-directory: . } }
jobs:
  build:
    runs-on: ubuntu-latest
    outputs: { v: "${{ steps.s.outputs.v }}" }
    steps:
      - uses: actions/checkout@v4
      - id: s
        run: echo "v=1" >> "$GITHUB_OUTPUT"
  test:
    needs: build
    if: needs.build.outputs.v == '1' && success()
    runs-on: [self-hosted, linux]
    timeout-minutes: 5
    strategy:
      fail-fast: false
      max-parallel: 2
      matrix:
        svc: [api, web]
        include: [{ svc: api, extra: true }]
        exclude: [{ svc: web }]
    steps:
      - run: echo ${{ matrix.svc }} ${{ hashFiles('**/*.rs') }}
        if: ${{ always() }}
        continue-on-error: ${{ matrix.svc == 'api' }}
"#);
}

#[test]
fn malformed_yaml() {
    let e = errors("on: push\njobs:\n  a: [1, 2\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].contains("invalid YAML"), "{e:?}");
}

/// A workflow's YAML mistakes send its user to `kiln ci validate`, and name the file as a
/// workflow, never as a stack file checked by `kiln validate`.
#[test]
fn yaml_mistakes_in_a_workflow_point_to_kiln_ci_validate() {
    let helps = |yaml: &str| {
        let err = parse_workflow(Path::new("ci.yml"), yaml).expect_err("expected errors");
        err.diagnostics
            .iter()
            .map(|d| format!("{} / {}", d.message, d.help.clone().unwrap_or_default()))
            .collect::<Vec<_>>()
    };
    let malformed = helps("on: push\njobs:\n  a: [1, 2\n");
    assert_eq!(malformed.len(), 1);
    assert!(
        malformed[0].ends_with("`kiln ci validate` reads YAML 1.2"),
        "{malformed:?}"
    );
    let two = helps("on: push\njobs: {}\n---\non: push\n");
    assert_eq!(
        two,
        [
            "a workflow file holds one YAML document / put each workflow in its own file under `.github/workflows`"
        ]
    );
}

#[test]
fn unknown_keys_are_all_reported_with_suggestions() {
    let yaml = "on: push\njobs:\n  a:\n    runs-on: x\n    step:\n      - run: x\n    tiemout-minutes: 3\n";
    let err = parse_workflow(Path::new("ci.yml"), yaml).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("ci.yml:5:5: error: unknown key `step`"),
        "{text}"
    );
    assert!(text.contains("did you mean `steps`?"), "{text}");
    assert!(
        text.contains("ci.yml:7:5: error: unknown key `tiemout-minutes`"),
        "{text}"
    );
    assert!(text.contains("did you mean `timeout-minutes`?"), "{text}");
    assert!(text.contains("is missing `steps`"), "{text}");
}

#[test]
fn bad_expressions_and_context_availability() {
    let e = errors(
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo ${{ jobs.x }}\n      - run: echo ${{ 1 + }}\n      - run: x\n        if: secrets.token\n",
    );
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[0].starts_with("6:") && e[0].contains("Unrecognized named-value: 'jobs'"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("7:") && e[1].contains("invalid expression"),
        "{e:?}"
    );
    assert!(
        e[2].starts_with("9:") && e[2].contains("'secrets'"),
        "{e:?}"
    );
    // Job-level `if` cannot read `matrix` even with a strategy.
    let e = errors(
        "on: push\njobs:\n  a:\n    if: matrix.x\n    runs-on: x\n    strategy: { matrix: { x: [1] } }\n    steps: [ { run: x } ]\n",
    );
    assert!(e[0].contains("'matrix'"), "{e:?}");
}

#[test]
fn missing_and_cyclic_needs() {
    let e = errors(
        "on: push\njobs:\n  a: { runs-on: x, needs: c, steps: [ { run: x } ] }\n  b: { runs-on: x, needs: [a], steps: [ { run: x } ] }\n  c: { runs-on: x, needs: [b], steps: [ { run: x } ] }\n  d: { runs-on: x, needs: [bb], steps: [ { run: x } ] }\n",
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e.iter().any(|m| m.contains("cycle: a -> b -> c -> a")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("6:") && m.contains("needs `bb`")),
        "{e:?}"
    );
}

/// The refusals (what kiln cannot run) of a workflow that loads, as `line:col message`.
fn refusals(yaml: &str) -> Vec<(String, String)> {
    let (w, sources) = parse_workflow(Path::new("ci.yml"), yaml).expect("the workflow loads");
    w.jobs
        .values()
        .flat_map(|j| j.refused.iter())
        .map(|d| {
            (
                format!("{} {}", place(&sources, d), d.message),
                d.label.clone(),
            )
        })
        .collect()
}

/// An action kiln cannot run (another repository's, `docker://`) is named where it is written,
/// with why and what to do; it refuses the runs that include its job (as `services`), so that
/// `kiln ci run --job other` runs the rest of a real-world workflow (found in the third corpus:
/// every `--job` run of a workflow with a remote action elsewhere was refused). A workflow that
/// does not load for another mistake reports them with it.
#[test]
fn unknown_actions_are_named() {
    // An undeclared `with:` key is the runner's warning on GitHub, not a workflow error
    // (run.rs checks the warning), so only the unknown action is refused.
    assert_eq!(
        refusals(
            "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - uses: someone/thing@v1\n      - uses: actions/checkout@v4\n        with: { deph: 1 }\n",
        ),
        [(
            "6:15 unknown action `someone/thing@v1`".to_owned(),
            "kiln runs no remote action: it downloads nothing".to_owned()
        )]
    );
    assert_eq!(
        refusals(
            "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - uses: docker://alpine:3.20\n",
        ),
        [(
            "6:15 unknown action `docker://alpine:3.20`".to_owned(),
            "a container action: kiln runs steps on the host, without a container engine"
                .to_owned()
        )]
    );
    assert_eq!(
        errors(
            "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - uses: someone/thing@v1\n  b:\n    runs-on: x\n    steps: [ { run: x, nope: 1 } ]\n",
        )
        .len(),
        2
    );
}

/// Reusing workflows: another repository's workflow (`{owner}/{repo}/.github/workflows/{file}@{ref}`,
/// fmtlib/fmt's release calls slsa-github-generator's) is valid on GitHub; kiln downloads
/// nothing, so like a remote action it refuses only the runs that include its job (kiln once
/// refused the whole file, so `kiln ci run --job build` did not run). A `uses` that is neither
/// form is still a mistake of the file.
#[test]
fn remote_reusable_workflows_refuse_only_their_job() {
    let yaml = "on: push\njobs:\n  build:\n    runs-on: x\n    steps: [ { run: x } ]\n  provenance:\n    needs: build\n    uses: slsa-framework/slsa-github-generator/.github/workflows/generator_generic_slsa3.yml@v2.1.0\n    with: { upload-assets: false }\n    secrets: inherit\n";
    let found: Vec<String> = refusals(yaml).into_iter().map(|(m, _)| m).collect();
    assert_eq!(
        found,
        [
            "8:11 reusable workflow `slsa-framework/slsa-github-generator/.github/workflows/generator_generic_slsa3.yml@v2.1.0` is not a local workflow file"
        ]
    );
    let (w, _) = parse_workflow(Path::new("ci.yml"), yaml).unwrap();
    assert!(w.jobs["build"].refused.is_empty());
    assert_eq!(
        errors("on: push\njobs:\n  a:\n    uses: octo/repo/ci.yml\n").len(),
        1,
        "no `@ref` and not under .github/workflows: not a reusable workflow reference"
    );
}

/// Workflow syntax, parallel steps (GitHub's changelog, 2026-06-25; its workflow schema and
/// parser, @actions/workflow-parser): `background: true` on a `run` or `uses` step, and
/// `wait`, `wait-all`, `cancel` and `parallel` steps read into the model.
#[test]
fn parallel_steps_are_read() {
    use kiln_pipelines::workflow::{JobBody, StepAction};
    let yaml = "on: push
jobs:
  a:
    runs-on: x
    steps:
      - id: server
        run: ./serve
        background: true
      - run: ./test
        background: false
      - id: db
        uses: ./.github/actions/db
        background: true
      - wait: server
        continue-on-error: true
      - name: both
        wait: [server, db]
      - wait-all:
      - wait-all: true
      - cancel: server
      - parallel:
          - run: a
          - id: server
            run: b
";
    let (w, _) = parse_workflow(Path::new("ci.yml"), yaml).unwrap();
    assert!(w.jobs["a"].refused.is_empty());
    let JobBody::Steps(steps) = &w.jobs["a"].body else {
        panic!("steps")
    };
    let kinds: Vec<String> = steps
        .iter()
        .map(|s| match &s.action {
            StepAction::Run(_) | StepAction::Uses { .. } => {
                format!("step background={}", s.background)
            }
            StepAction::Wait(ids) => format!(
                "wait {}",
                ids.iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            StepAction::WaitAll => "wait-all".to_owned(),
            StepAction::Cancel(id) => format!("cancel {}", id.name),
            StepAction::Parallel(members) => format!("parallel of {}", members.len()),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "step background=true",
            "step background=false",
            "step background=true",
            "wait server",
            "wait server,db",
            "wait-all",
            "wait-all",
            "cancel server",
            "parallel of 2",
        ]
    );
    assert!(steps[3].continue_on_error.is_some());
}

/// What GitHub's workflow parser refuses in parallel steps, in its words where it has them,
/// each at its place and all at once.
#[test]
fn parallel_step_mistakes_are_reported_where_they_are() {
    let yaml = "on: push
jobs:
  a:
    runs-on: x
    steps:
      - id: late
        run: x
        background: '${{ true }}'
      - wait: later
      - wait: [late, __run]
      - id: self
        cancel: self
      - wait-all: false
      - wait: lat
        if: always()
      - wait: late
        cancel: late
      - parallel:
          - run: a
            background: true
          - wait-all:
        name: group
      - id: later
        run: x
      - id: __mine
        run: x
";
    assert_eq!(
        errors(yaml),
        [
            "8:21 `jobs.a.steps[0].background` must be a boolean, found a string",
            "9:15 Step references unknown step ID 'later'",
            "10:22 The identifier '__run' is invalid. IDs starting with '__' are reserved.",
            "12:17 Step 'self' cannot reference itself",
            "13:19 The value of 'wait-all' must be true or omitted",
            "14:15 Step references unknown step ID 'lat'",
            "15:9 a `wait` step always runs: it takes no `if`",
            "17:9 a step is one `wait`, `wait-all`, `cancel` or `parallel` step, not both `wait` and `cancel`",
            "20:13 'background' is not allowed inside a parallel block. Steps in a parallel block are automatically run as background steps.",
            "21:13 'wait-all' is not allowed inside a parallel block.",
            "22:9 a `parallel` step holds only its list of steps, not `name`",
            "25:13 The identifier '__mine' is invalid. IDs starting with '__' are reserved.",
        ]
    );
}

/// GitHub's note: a composite action may run as a background step, but its own steps may not
/// be background, wait, cancel or parallel steps.
#[test]
fn an_action_s_steps_may_not_be_parallel_steps() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("action.yml"),
        "name: a\nruns:\n  using: composite\n  steps:\n    - run: x\n      shell: bash\n      background: true\n    - wait-all:\n",
    )
    .unwrap();
    let err = kiln_pipelines::load::load_action(dir.path()).expect_err("refused");
    let found: Vec<&str> = err.diagnostics.iter().map(|d| d.message.as_str()).collect();
    assert!(
        found.contains(&"`background` is not allowed in a composite action's steps"),
        "{found:?}"
    );
    assert!(
        found.contains(&"`wait-all` is not allowed in a composite action's steps"),
        "{found:?}"
    );
}

#[test]
fn invalid_matrices() {
    let e = errors(
        "on: push\njobs:\n  a:\n    runs-on: x\n    strategy:\n      matrix: {}\n    steps: [ { run: x } ]\n  b:\n    runs-on: x\n    strategy:\n      matrix: { os: [], v: 3, exclude: [ { nope: 1 } ] }\n    steps: [ { run: x } ]\n",
    );
    assert_eq!(e.len(), 4, "{e:?}");
    assert!(e[0].contains("at least one vector"), "{e:?}");
    assert!(e[1].contains("`os` does not contain any values"), "{e:?}");
    assert!(e[2].contains("must be a list"), "{e:?}");
    assert!(e[3].contains("exclude key `nope`"), "{e:?}");
    // An include with new keys is fine, as GitHub documents.
    ok(
        "on: push\njobs:\n  a:\n    runs-on: x\n    strategy: { matrix: { os: [a], include: [ { extra: 1 } ] } }\n    steps: [ { run: x } ]\n",
    );
}

/// `services` and a literal `container` load (other jobs of the workflow can run) but are
/// carried on the job with their positions, refused when a run includes it.
#[test]
fn containers_are_refused_clearly() {
    let (w, sources) = parse_workflow(
        Path::new("ci.yml"),
        "on: push\njobs:\n  a:\n    runs-on: x\n    services: { db: { image: postgres } }\n    container: node\n    steps: [ { run: x } ]\n",
    )
    .expect("loads");
    let e = kiln_pipelines::load::render(&sources, &w.jobs["a"].refused);
    assert_eq!(
        e.lines().filter(|l| l.contains(": error: ")).count(),
        2,
        "{e}"
    );
    assert!(
        e.contains(
            "ci.yml:5:5: error: job `a`: `services` is not supported without a container engine"
        ),
        "{e}"
    );
}

#[test]
fn events_and_steps() {
    let e = errors(
        "on: [pus]\njobs:\n  a:\n    runs-on: x\n    steps:\n      - name: nothing\n      - run: x\n        uses: actions/cache@v4\n",
    );
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[0].contains("unknown event `pus`"), "{e:?}");
    assert!(e[1].contains("missing `run`"), "{e:?}");
    assert!(e[2].contains("either `run` or `uses`"), "{e:?}");
}

/// Security hardening for GitHub Actions, "Understanding the risk of script injections": an
/// untrusted field expanded into `run:` is flagged with its place and the `env:` fix, as a
/// warning: GitHub runs such a workflow, and so does kiln (whoever can push to a branch kiln
/// follows can change the workflow itself; kiln runs no `pull_request_target` or issue events).
#[test]
fn untrusted_event_fields_inside_run_are_flagged_as_injection_risks() {
    let yaml = "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo \"${{ github.event.head_commit.message }}\"\n      - run: |\n          echo ok\n          git checkout ${{ github.head_ref }} && echo ${{ github.event.commits[0].message }}\n      - env:\n          TITLE: ${{ github.event.pull_request.title }}\n        run: echo \"$TITLE\" ${{ github.sha }}\n";
    let (workflow, sources) = parse_workflow(Path::new("ci.yml"), yaml).expect("it runs");
    let flagged: Vec<String> = workflow
        .warnings
        .iter()
        .map(|d| format!("{} {}", place(&sources, d), d.message))
        .collect();
    assert_eq!(
        flagged,
        [
            "6:24 `github.event.head_commit.message` is untrusted input expanded into the script: its text would run as shell code",
            "9:28 `github.head_ref` is untrusted input expanded into the script: its text would run as shell code",
            "9:59 `github.event.commits` is untrusted input expanded into the script: its text would run as shell code",
        ]
    );
    assert_eq!(
        workflow.warnings[0].help.as_deref(),
        Some(
            "pass it through the environment: add `env: { HEAD_COMMIT_MESSAGE: ${{ github.event.head_commit.message }} }` to the step and use \"$HEAD_COMMIT_MESSAGE\" in the script"
        )
    );
    assert_eq!(workflow.warnings[0].key_path, "jobs.a.steps[0].run");
}

/// A dispatch input whose default its own type refuses, or a `choice` without options, is a
/// warning at its place: the workflow still runs (a run from the command line gives values).
#[test]
fn dispatch_defaults_that_their_types_refuse_are_warned_about() {
    let yaml = "on:\n  workflow_dispatch:\n    inputs:\n      level: { type: choice, options: [low, high], default: mid }\n      ok: { type: choice, options: [low, high], default: high }\n      other: { type: choice }\n      flag: { type: boolean, default: maybe }\n      n: { type: number, default: abc }\n      m: { type: number, default: 2.5 }\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo\n";
    let (workflow, sources) = parse_workflow(Path::new("ci.yml"), yaml).expect("it runs");
    let warned: Vec<String> = workflow
        .warnings
        .iter()
        .map(|d| format!("{} {} ({})", place(&sources, d), d.message, d.key_path))
        .collect();
    assert_eq!(
        warned,
        [
            "4:61 the default `mid` is not one of its options (low, high) (on.workflow_dispatch.inputs.level.default)",
            "6:14 a `choice` input has no `options` to choose from (on.workflow_dispatch.inputs.other)",
            "7:39 the default `maybe` is not a boolean (true or false) (on.workflow_dispatch.inputs.flag.default)",
            "8:35 the default `abc` is not a number (on.workflow_dispatch.inputs.n.default)",
        ]
    );
}

/// A called workflow that is not in the repository is reported at the calling job's `uses`,
/// with that key's full path (as every other diagnostic names its key).
#[test]
fn a_missing_called_workflow_names_the_calling_job() {
    let repo = tempfile::TempDir::new().unwrap();
    let dir = repo.path().join(".github/workflows");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("ci.yml"),
        "on: push\njobs:\n  build:\n    uses: ./.github/workflows/_build.yml\n",
    )
    .unwrap();
    let err = kiln_pipelines::load(repo.path(), ".github/workflows/ci.yml")
        .expect_err("the called file is missing");
    let found: Vec<(String, String)> = err
        .diagnostics
        .iter()
        .map(|d| (d.key_path.clone(), d.message.clone()))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "jobs.build.uses");
    assert!(
        found[0]
            .1
            .starts_with("cannot read workflow `.github/workflows/_build.yml`"),
        "{found:?}"
    );
}

/// GitHub refuses a workflow with an empty `${{ }}` anywhere in a value ("An expression was
/// expected"), even in what the `run:` script reads as a shell comment: real-world workflows
/// have stopped running for it, and kiln accepted them.
#[test]
fn an_empty_expression_is_refused_even_in_a_script_comment() {
    assert_eq!(
        errors(
            "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: |\n          echo ok # never ${{ }} here\n"
        ),
        ["7:27 invalid expression: An expression was expected"]
    );
}

/// `timeout-minutes` is a number or an expression, as the workflow schema's
/// `number-strategy-context` and `number-steps-context` say: a fraction and an expression are
/// accepted, a quoted `'10'` is refused (GitHub: "Unexpected value '10'"), where it is written.
#[test]
fn timeout_minutes_is_a_number_or_an_expression() {
    ok(
        "on: push\njobs:\n  a:\n    runs-on: x\n    timeout-minutes: 0.5\n    steps:\n      - run: 'true'\n        timeout-minutes: ${{ fromJSON('2') }}\n",
    );
    assert_eq!(
        errors(
            "on: push\njobs:\n  a:\n    runs-on: x\n    timeout-minutes: '10'\n    steps:\n      - run: 'true'\n        timeout-minutes: soon\n"
        ),
        [
            "5:22 `jobs.a.timeout-minutes` must be a number, found the string '10'",
            "8:26 `jobs.a.steps[0].timeout-minutes` must be a number, found the string 'soon'",
        ]
    );
}

/// Every mistake at once: `services` and a remote action (which kiln refuses to run) are
/// reported with the other mistakes of a workflow that does not load, not only once those are
/// fixed (found in the third corpus: a workflow with a remote action and `services` showed only
/// the action).
#[test]
fn refused_services_are_reported_with_the_other_mistakes() {
    let e = errors(
        "on: push\njobs:\n  t:\n    runs-on: x\n    nope: 1\n    services:\n      w:\n        image: wiremock/wiremock:3\n    steps:\n      - uses: foo/bar@v1\n",
    );
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[0].starts_with("5:5 ") && e[0].contains("nope"), "{e:?}");
    assert_eq!(
        e[1..],
        [
            "6:5 job `t`: `services` is not supported without a container engine",
            "10:15 unknown action `foo/bar@v1`",
        ]
    );
}

/// A workflow file of comments only (a disabled workflow, found in the third corpus) is named
/// as empty, not "`` must be a mapping".
#[test]
fn an_empty_workflow_file_is_named_as_such() {
    assert_eq!(
        errors("# name: off\n# on: push\n"),
        ["1:1 the workflow file is empty: it holds no `on` and no `jobs`"]
    );
}

/// Built-in actions at a version GitHub no longer runs (the artifact actions before v4, the
/// cache before v4.2.0/v3.4.0: GitHub accepts the file and fails such a job as it is set up,
/// "automatically failed because it uses a deprecated version") are warned about where they
/// are written and still run: kiln's own implementation does not need the retired service.
/// A moving major tag of a current line is not judged. Found in the fourth corpus
/// (`actions/upload-artifact@v3.1.2`, `actions/cache@v2`).
#[test]
fn deprecated_builtin_versions_are_warned_about_not_refused() {
    let yaml = "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - uses: actions/upload-artifact@v3.1.2\n        with: { path: x }\n      - uses: actions/cache@v2\n        with: { path: x, key: k }\n      - uses: actions/cache@v3\n        with: { path: x, key: k }\n";
    assert_eq!(refusals(yaml), Vec::<(String, String)>::new());
    let (w, sources) = parse_workflow(Path::new("ci.yml"), yaml).expect("the workflow loads");
    let warned: Vec<(String, String)> = w
        .warnings
        .iter()
        .map(|d| {
            (
                format!("{} {}", place(&sources, d), d.message),
                d.label.clone(),
            )
        })
        .collect();
    let label = "GitHub fails the job as it is set up; kiln runs it".to_owned();
    assert_eq!(
        warned,
        [
            (
                "6:15 This request has been automatically failed because it uses a deprecated version of `actions/upload-artifact: v3.1.2`".to_owned(),
                label.clone()
            ),
            (
                "8:15 This request has been automatically failed because it uses a deprecated version of `actions/cache: v2`".to_owned(),
                label
            )
        ]
    );
}
