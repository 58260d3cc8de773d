//! Constructs found in real-world workflows that GitHub accepts, each written here as a minimal
//! example of our own: kiln must read them as GitHub does (the doc section is in each test).

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test helpers may panic: that is how tests fail.

use std::path::Path;

use kiln_pipelines::parse_workflow;
use kiln_pipelines::workflow::{JobBody, StepAction, Workflow};

/// Loads `yaml` as the `action.yml` of a fresh directory.
fn load_action(
    yaml: &str,
) -> Result<kiln_pipelines::workflow::CompositeAction, Box<kiln_pipelines::LoadError>> {
    let dir = tempfile::TempDir::new().unwrap();
    std::fs::write(dir.path().join("action.yml"), yaml).unwrap();
    kiln_pipelines::load::load_action(dir.path())
}

/// A workflow's `env` entries as written.
fn env_texts(w: &Workflow) -> Vec<(&str, &str)> {
    w.env
        .entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.text.as_str()))
        .collect()
}

fn parse(yaml: &str) -> Workflow {
    match parse_workflow(Path::new("ci.yml"), yaml) {
        Ok((workflow, _)) => workflow,
        Err(e) => panic!("GitHub accepts this workflow, kiln refused it:\n{e}"),
    }
}

/// Workflow syntax, `jobs.<job_id>.strategy`: `matrix`, `fail-fast` and `max-parallel` are all
/// optional, so a strategy with only `fail-fast` is one job instance.
#[test]
fn workflow_syntax_strategy_without_a_matrix_is_one_instance() {
    let w = parse(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    strategy:\n      fail-fast: true\n    steps:\n      - run: echo ${{ strategy.job-total }}\n",
    );
    let strategy = w.jobs["a"].strategy.as_ref().expect("strategy kept");
    assert!(strategy.matrix.is_none());
    assert_eq!(
        strategy.fail_fast.as_ref().map(|t| t.text.as_str()),
        Some("true")
    );
}

/// Contexts reference, context availability: `matrix` is listed for every job key and step
/// key (not for a job's `if`); in a job without a matrix GitHub gives it `null`.
#[test]
fn contexts_matrix_is_available_in_jobs_without_a_strategy() {
    let w = parse(
        "on: push\njobs:\n  a:\n    runs-on: ${{ matrix.os || 'ubuntu-latest' }}\n    steps:\n      - run: make\n        working-directory: ${{ matrix.dir }}\n      - uses: actions/cache@v4\n        with: { path: x, key: \"${{ runner.os }}-${{ matrix.go }}\" }\n  b:\n    uses: ./.github/workflows/called.yml\n    with: { v: \"${{ matrix.v }}\" }\n",
    );
    assert!(w.jobs["a"].strategy.is_none());
    assert!(matches!(w.jobs["b"].body, JobBody::Call(_)));
}

/// A job's `if` is evaluated before the matrix expands: `matrix` stays an unknown name there.
#[test]
fn contexts_matrix_is_still_refused_in_a_job_if() {
    let err = parse_workflow(
        Path::new("ci.yml"),
        "on: push\njobs:\n  a:\n    if: matrix.os == 'x'\n    runs-on: x\n    strategy: { matrix: { os: [x] } }\n    steps: [ { run: x } ]\n",
    )
    .expect_err("GitHub refuses matrix in a job's if");
    let text = err.to_string();
    assert!(
        text.contains("Unrecognized named-value: 'matrix'"),
        "{text}"
    );
    assert!(text.contains("before expanding the matrix"), "{text}");
}

/// A plain YAML number where GitHub wants a string is read as a number and printed back, as in
/// expressions: `go-version: 1.20` is "1.2" (the reason setup-go's and setup-python's READMEs
/// say to quote versions), `0x1F` is "31", `1e3` is "1000".
#[test]
fn yaml_numbers_in_string_places_print_as_github_prints_them() {
    let w = parse(
        "on: push\nenv:\n  DOTTED: 1.10\n  HEX: 0x1F\n  EXP: 1e3\n  INT: 42\n  QUOTED: '1.10'\n  WORD: on\njobs:\n  a:\n    runs-on: x\n    timeout-minutes: 30\n    steps:\n      - uses: actions/setup-python@v5\n        with: { python-version: 3.10 }\n",
    );
    let env = env_texts(&w);
    assert_eq!(
        env,
        [
            ("DOTTED", "1.1"),
            ("HEX", "31"),
            ("EXP", "1000"),
            ("INT", "42"),
            ("QUOTED", "1.10"),
            ("WORD", "on"),
        ]
    );
    let job = &w.jobs["a"];
    assert_eq!(
        job.timeout_minutes.as_ref().map(|t| t.text.as_str()),
        Some("30")
    );
    let JobBody::Steps(steps) = &job.body else {
        panic!("steps expected")
    };
    let StepAction::Uses { with, .. } = &steps[0].action else {
        panic!("uses expected")
    };
    assert_eq!(with.entries["python-version"].text, "3.1");
}

/// Workflow syntax, `jobs.<job_id>.container`: without a container the steps run on the
/// runner itself. An expression such as `${{ matrix.container && matrix.container.image ||
/// null }}` is decided per matrix instance when the job starts; a literal image is refused at
/// once, since kiln has no container engine.
#[test]
fn workflow_syntax_container_expressions_are_decided_when_the_job_runs() {
    let w = parse(
        "on: push\njobs:\n  a:\n    runs-on: x\n    strategy: { matrix: { include: [ { c: '' } ] } }\n    container: ${{ matrix.c || null }}\n    steps: [ { run: x } ]\n",
    );
    let container = w.jobs["a"].container.as_ref().expect("kept for run time");
    assert_eq!(container.text, "${{ matrix.c || null }}");
    let literal = parse(
        "on: push\njobs:\n  a:\n    runs-on: x\n    container: node:20\n    steps: [ { run: x } ]\n",
    );
    let refused = &literal.jobs["a"].refused;
    assert!(
        refused.len() == 1 && refused[0].message.contains("`container` is not supported"),
        "a literal container needs Docker: {refused:?}"
    );
}

/// Metadata syntax for GitHub Actions, `inputs`: `description`, `required`, `default` and
/// `deprecationMessage`. The runner's schema reads `default` over `github`, `strategy`,
/// `matrix`, `job` and `runner` (and `hashFiles`), and takes any other key, at the top level
/// too; a quoted `required: 'true'` is common and means true.
#[test]
fn metadata_syntax_action_inputs_are_read_as_the_runner_reads_them() {
    let action = match load_action(
        "name: a\ndescription: d\nicon: x\ninputs:\n  token:\n    required: 'true'\n    default: ${{ github.token }}\n    deprecationMessage: use auth\n  dir:\n    required: false\n    default: ${{ runner.temp }}/x\n  old:\n    description: kept for compatibility\n    x-extra: 1\nruns:\n  using: composite\n  steps:\n    - run: echo \"${{ inputs.dir }}\"\n      shell: bash\n",
    ) {
        Ok(a) => a,
        Err(e) => panic!("GitHub accepts this action, kiln refused it:\n{e}"),
    };
    assert!(action.inputs["token"].required);
    assert!(!action.inputs["dir"].required);
    assert_eq!(
        action.inputs["dir"]
            .default
            .as_ref()
            .map(|t| t.text.as_str()),
        Some("${{ runner.temp }}/x")
    );
    assert_eq!(action.steps.len(), 1);
}

/// Metadata syntax for GitHub Actions, `outputs.<output_id>.value`: required for composite
/// actions only. A JavaScript action sets its outputs itself and only describes them, as
/// setup-uv or setup-node do.
#[test]
fn metadata_syntax_javascript_action_outputs_need_no_value() {
    if let Err(e) = load_action(
        "name: js\ndescription: d\noutputs:\n  cache-hit:\n    description: whether the cache was found\nruns:\n  using: node24\n  main: dist/index.js\n  post: dist/post.js\n  post-if: success()\n",
    ) {
        panic!("GitHub accepts this action, kiln refused it:\n{e}");
    }
    let err = load_action(
        "name: c\ndescription: d\noutputs:\n  x:\n    description: no value\nruns:\n  using: composite\n  steps: [ { run: echo, shell: bash } ]\n",
    )
    .expect_err("composite needs value");
    assert!(err.to_string().contains("is missing `value`"), "{err}");
}

/// Workflow syntax, `env` (workflow, job and step): GitHub's schema gives the contexts to the
/// mapping itself, so one expression may stand for the whole block, as scrapy's checks do with
/// `env: ${{ matrix.env }}` over matrix rows that carry their own `env`. Text around the
/// expression makes it a string, which is still not a mapping.
#[test]
fn workflow_syntax_env_may_be_one_expression_for_the_whole_mapping() {
    let w = parse(
        "on: push\nenv: ${{ fromJSON(vars.SHARED_ENV) }}\njobs:\n  a:\n    runs-on: x\n    strategy:\n      matrix:\n        include:\n          - { py: '3.11', env: { TOXENV: docs } }\n    env: ${{ matrix.env }}\n    steps:\n      - run: tox\n        env: \"${{ matrix.env }}\"\n",
    );
    let expression = |env: &kiln_pipelines::workflow::Env| {
        assert!(env.entries.is_empty());
        env.expression.as_ref().map(|t| t.text.clone())
    };
    assert_eq!(
        expression(&w.env).as_deref(),
        Some("${{ fromJSON(vars.SHARED_ENV) }}")
    );
    let job = &w.jobs["a"];
    assert_eq!(expression(&job.env).as_deref(), Some("${{ matrix.env }}"));
    let JobBody::Steps(steps) = &job.body else {
        panic!("steps expected")
    };
    assert_eq!(
        expression(&steps[0].env).as_deref(),
        Some("${{ matrix.env }}")
    );
    let err = parse_workflow(
        Path::new("ci.yml"),
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: tox\n        env: prefix-${{ github.sha }}\n",
    )
    .expect_err("a string is not a mapping");
    assert!(err.to_string().contains("must be a mapping"), "{err}");
}

/// Workflow syntax, YAML anchors and aliases: GitHub reads anchors and aliases but refuses the
/// merge key `<<`. kiln reports that one mistake, not the `runs-on` and `steps` the merged
/// mapping would have brought.
#[test]
fn yaml_merge_keys_are_refused_once_without_follow_on_errors() {
    let err = parse_workflow(
        Path::new("ci.yml"),
        "on: push\njobs:\n  a: &base\n    runs-on: ubuntu-latest\n    steps: [ { run: make } ]\n  b:\n    <<: *base\n    needs: a\n",
    )
    .expect_err("GitHub refuses merge keys");
    let text = err.to_string();
    assert_eq!(err.diagnostics.len(), 1, "{text}");
    assert!(
        text.contains("YAML merge keys (`<<`) are not supported"),
        "{text}"
    );
    assert!(text.contains("ci.yml:7:5"), "{text}");
}

/// The runner's YAML reader (`YamlObjectReader`) takes the core schema's tags: `!!str` keeps a
/// version as written where a plain `3.10` would be the number 3.1.
#[test]
fn yaml_core_schema_tags_are_read_as_the_runner_reads_them() {
    let w = parse(
        "on: push\nenv:\n  PY: !!str 3.10\n  N: !!int 7\n  ON: !!bool true\njobs:\n  a:\n    runs-on: !!str ubuntu-latest\n    steps: !!seq\n      - uses: actions/setup-python@v5\n        with: !!map { python-version: !!str 3.10 }\n",
    );
    let env = env_texts(&w);
    assert_eq!(env, [("PY", "3.10"), ("N", "7"), ("ON", "true")]);
    let JobBody::Steps(steps) = &w.jobs["a"].body else {
        panic!("steps expected")
    };
    let StepAction::Uses { with, .. } = &steps[0].action else {
        panic!("uses expected")
    };
    assert_eq!(with.entries["python-version"].text, "3.10");
    let err = parse_workflow(
        Path::new("ci.yml"),
        "on: push\njobs:\n  a:\n    runs-on: x\n    timeout-minutes: !!int ten\n    steps: [ { run: make } ]\n",
    )
    .expect_err("`ten` is no integer");
    assert!(
        err.to_string().contains("`ten` is not a valid `!!int`"),
        "{err}"
    );
}

/// Events that trigger workflows, `merge_group`: it takes `types`, `branches` and
/// `branches-ignore` (GitHub's workflow schema). A key GitHub does not read under an event is
/// ignored, not refused: a misspelt `branch:` makes a push workflow run on every branch, and
/// `paths-ignore` on `merge_group` (as ruby/ruby's Windows workflow had it) never filters.
/// kiln loads such workflows, warns about each ignored key, and does not filter by it.
#[test]
fn events_keys_github_does_not_read_are_warnings_and_do_not_filter() {
    let (w, _) = parse_workflow(
        Path::new("ci.yml"),
        "description: builds\non:\n  push:\n    branch: main\n  merge_group:\n    branches: [main]\n    paths-ignore: ['doc/**']\n  image_version:\n    names: [base]\n  pull_request_comment:\njobs:\n  a:\n    runs-on: x\n    steps: [ { run: make } ]\n",
    )
    .unwrap_or_else(|e| panic!("GitHub accepts this workflow, kiln refused it:\n{e}"));
    let warned: Vec<(&str, Option<&str>)> = w
        .warnings
        .iter()
        .map(|d| (d.key_path.as_str(), d.help.as_deref()))
        .collect();
    assert_eq!(
        warned,
        [
            ("on.push.branch", Some("did you mean `branches`?")),
            (
                "on.merge_group.paths-ignore",
                Some(
                    "GitHub runs the workflow for every merge group: filter by paths in a job's `if` or a step instead"
                )
            ),
        ]
    );
    assert!(w.on["push"].branches.is_empty(), "`branch` is no filter");
    assert_eq!(w.on["merge_group"].branches, ["main"]);
    assert!(w.on["merge_group"].paths_ignore.is_empty());
    assert!(w.on.contains_key("image_version") && w.on.contains_key("pull_request_comment"));
}

/// Controlling permissions for `GITHUB_TOKEN`: every scope GitHub's workflow schema lists is
/// accepted (`artifact-metadata`, `copilot-requests` and `vulnerability-alerts` came later than
/// the others), each with the levels it takes: `copilot-requests` and `id-token` only `write`
/// or `none`, `models` and `vulnerability-alerts` only `read` or `none`.
#[test]
fn permissions_every_scope_with_its_levels() {
    parse(
        "on: push\npermissions:\n  artifact-metadata: write\n  copilot-requests: write\n  vulnerability-alerts: read\n  models: read\n  id-token: write\n  attestations: write\njobs:\n  a:\n    runs-on: ubuntu-latest\n    permissions: { artifact-metadata: read, copilot-requests: none, vulnerability-alerts: none }\n    steps: [ { run: 'true' } ]\n",
    );
    let err = parse_workflow(
        Path::new("ci.yml"),
        "on: push\npermissions: { models: write, vulnerability-alerts: write, copilot-requests: read }\njobs:\n  a:\n    runs-on: x\n    steps: [ { run: 'true' } ]\n",
    )
    .expect_err("GitHub refuses these levels");
    let text = err.to_string();
    for expected in [
        "`write` is not an access level for `models`",
        "`write` is not an access level for `vulnerability-alerts`",
        "`read` is not an access level for `copilot-requests`",
    ] {
        assert!(text.contains(expected), "{expected}: {text}");
    }
}

/// GitHub's workflow schema (`job-factory`) takes a job's `snapshot` (custom images: an image
/// name, or `{ image-name, if, version }`) and `cancel-timeout-minutes`; neither changes what
/// runs on a host, and kiln once refused both as unknown keys.
#[test]
fn workflow_syntax_snapshot_and_cancel_timeout_minutes() {
    parse(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    snapshot: my-image\n    cancel-timeout-minutes: 5\n    steps: [ { run: 'true' } ]\n  b:\n    runs-on: ubuntu-latest\n    snapshot:\n      image-name: my-image\n      if: github.ref == 'refs/heads/main'\n      version: 2.*\n    steps: [ { run: 'true' } ]\n",
    );
    let err = parse_workflow(
        Path::new("ci.yml"),
        "on: push\njobs:\n  a:\n    runs-on: x\n    snapshot: { version: 1.* }\n    steps: [ { run: 'true' } ]\n",
    )
    .expect_err("image-name is required");
    assert!(err.to_string().contains("image-name"), "{err}");
}

/// A key with nothing after it is YAML null, which GitHub's template reader converts to ''
/// wherever the schema allows a string: an input's or output's `description`, an input's
/// `default`, the workflow's `name`; a step's `shell:` with no value is the default shell.
/// kiln once refused each as "must be a string, found null".
#[test]
fn null_string_keys_read_as_empty() {
    let w = parse(
        "name:\non:\n  workflow_dispatch:\n    inputs:\n      tag:\n        description:\n        required: true\n        default:\n  workflow_call:\n    inputs:\n      x:\n        description:\n        type: string\n        default:\n    outputs:\n      o:\n        description:\n        value: ${{ jobs.a.outputs.o }}\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo\n        shell:\n",
    );
    assert!(w.name.is_none());
    let JobBody::Steps(steps) = &w.jobs["a"].body else {
        panic!("steps")
    };
    assert!(steps[0].shell.is_none());
    let action = load_action(
        "name: a\ninputs:\n  who:\n    description:\n    default:\nruns:\n  using: composite\n  steps: [ { run: echo, shell: bash } ]\n",
    );
    assert!(action.is_ok(), "{:?}", action.err().map(|e| e.to_string()));
}
