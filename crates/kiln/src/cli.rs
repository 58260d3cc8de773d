//! The command line, defined once: parsing, help and examples.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// kiln: declare, plan, apply, converge, observe.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, long_about = None)]
pub struct Cli {
    /// The stack's directory (holding kiln.yaml).
    #[arg(short = 'C', long = "dir", global = true, default_value = ".")]
    pub dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the stack files and report every mistake at once.
    #[command(
        after_help = "Example:\n  kiln -C examples/shop validate\n  kiln validate --json | jq '.diagnostics[].message'"
    )]
    Validate(Output),
    /// Show what apply would change, and why.
    #[command(
        after_help = "Example:\n  kiln plan\n  kiln plan --out plan.json --target resources.motd\n  kiln plan --json"
    )]
    Plan(PlanArgs),
    /// Carry out the changes (or a plan saved with `kiln plan --out`).
    #[command(
        after_help = "Example:\n  kiln apply\n  kiln apply plan.json\n  kiln apply --parallelism 20 --var team=platform"
    )]
    Apply(ApplyArgs),
    /// Destroy everything the state records, in reverse dependency order.
    #[command(after_help = "Example:\n  kiln destroy\n  kiln destroy --target resources.motd")]
    Destroy(ApplyArgs),
    /// Run the control plane: apply, then keep converging until stopped.
    #[command(
        after_help = "Example:\n  kiln up            # apply, then reconcile every 5s until Ctrl-C\n  kiln up -d         # the same in the background; `kiln down` stops it\n  kiln up --fresh    # destroy everything recorded, then build it again\n  kiln up --once     # apply and stop"
    )]
    Up(UpArgs),
    /// Stop a control plane started with `kiln up -d` (it drains first).
    #[command(after_help = "Example:\n  kiln down")]
    Down,
    /// List service instances: pid, port, health, restarts, uptime, CPU, memory.
    #[command(after_help = "Example:\n  kiln ps\n  kiln ps --json")]
    Ps(Output),
    /// Show service logs, interleaved by time like `docker compose logs`.
    #[command(
        after_help = "Example:\n  kiln logs                  # every service\n  kiln logs -f api web/0     # follow api and web's first instance\n  kiln logs --since 10m --tail 50 api"
    )]
    Logs(LogsArgs),
    /// Restart every instance of a service, one at a time.
    #[command(after_help = "Example:\n  kiln restart api")]
    Restart {
        /// The service.
        service: String,
    },
    /// Change a service's replica count now (the next plan shows it as drift against the files).
    #[command(after_help = "Example:\n  kiln scale api=3")]
    Scale {
        /// SERVICE=REPLICAS.
        assignment: String,
    },
    /// Deploy a service: its current tree as a new release, or a recorded release, by its
    /// `deploy:` strategy (rolling, blue-green or canary).
    #[command(
        after_help = "Example:\n  kiln deploy api                   # the code under its path, as a new release\n  kiln deploy api --release 3f2a1c  # a release kiln recorded (see `kiln releases api`)"
    )]
    Deploy {
        /// The service (`api` or `services.api`).
        service: String,
        /// A recorded release: its digest or at least 4 leading hex digits.
        #[arg(long)]
        release: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Return a service to its previous release (or the one named), by its deploy strategy;
    /// the next `kiln plan` shows the tree's release as the change an apply would make.
    #[command(after_help = "Example:\n  kiln rollback api\n  kiln rollback api --to 3f2a1c")]
    Rollback {
        /// The service (`api` or `services.api`).
        service: String,
        /// The release to return to (default: the one before the current).
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// List a service's releases (the running one marked) and its recent deploys.
    #[command(after_help = "Example:\n  kiln releases api\n  kiln releases api --json")]
    Releases {
        /// The service (`api` or `services.api`).
        service: String,
        #[command(flatten)]
        output: Output,
    },
    /// Move the release serving in the previous environment to ENV once every gate passes
    /// (healthy there, soaked, pipeline green, approved, no freeze, inside a window); prints
    /// each gate's verdict and exits non-zero when one fails.
    #[command(
        after_help = "Example:\n  kiln promote api --to production\n  kiln promote api --to production --release 3f2a1c"
    )]
    Promote(PromoteArgs),
    /// Record your approval (`$USER@host`, now) of a release for an environment whose
    /// `promote:` requires one.
    #[command(
        after_help = "Example:\n  kiln approve api --env production\n  kiln approve api --env production --release 3f2a1c"
    )]
    Approve(ApproveArgs),
    /// Print the web dashboard's URL (services, charts, deploys, pipeline runs, events).
    #[command(
        after_help = "Example:\n  kiln dash\n  kiln dash --open   # in a browser, when xdg-open can"
    )]
    Dash {
        /// Open it with `xdg-open` (prints the URL when that fails).
        #[arg(long)]
        open: bool,
    },
    /// Show the running control plane's status.
    #[command(after_help = "Example:\n  kiln status\n  kiln status --json")]
    Status(Output),
    /// Inspect the recorded state.
    #[command(
        subcommand,
        after_help = "Example:\n  kiln state list\n  kiln state show resources.motd --json"
    )]
    State(StateCommand),
    /// List the recorded revisions (every apply and destroy).
    #[command(after_help = "Example:\n  kiln history --limit 5\n  kiln history --json")]
    History(HistoryArgs),
    /// Evaluate a PromQL query over the control plane's metrics (Prometheus's /api/v1/query).
    #[command(
        after_help = "Example:\n  kiln query 'sum by (route, code_class) (rate(http_requests_total[1m]))'\n  kiln query 'kiln_instance_memory_rss_bytes' --json"
    )]
    Query {
        /// The PromQL expression.
        expr: String,
        /// Evaluation time (unix seconds or RFC 3339), default now.
        #[arg(long)]
        time: Option<String>,
        /// Output format.
        #[command(flatten)]
        output: Output,
    },
    /// Show the event log: applies, drift, restarts, crashes, scaling (oldest first).
    #[command(
        after_help = "Example:\n  kiln events --limit 20\n  kiln events --address services.api --json"
    )]
    Events(EventsArgs),
    /// The alerts the control plane tracks, and the rules as a Prometheus rule file.
    #[command(
        after_help = "Example:\n  kiln alerts\n  kiln alerts list --json\n  kiln alerts export --format prometheus > rules.yml && promtool check rules rules.yml"
    )]
    Alerts(crate::alerts::AlertsCommand),
    /// Mute alerts for a while (silences survive restarts).
    #[command(
        subcommand,
        after_help = "Example:\n  kiln silence add alertname=api-errors 'severity=\"page\"' --for 2h --comment 'deploying a fix'\n  kiln silence list\n  kiln silence expire 0190a1b2"
    )]
    Silence(crate::alerts::SilenceCommand),
    /// Incidents opened by paging alerts: their timelines, milestones and reports.
    #[command(
        subcommand,
        after_help = "Example:\n  kiln incident list --open\n  kiln incident show 3\n  kiln incident ack 3\n  kiln incident note 3 'rolling back the 12:00 deploy'\n  kiln incident resolve 3 --note 'bad release rolled back'\n  kiln incident report 3 > postmortem.md"
    )]
    Incident(crate::incidents::IncidentCommand),
    /// Runbooks: list them, run one (by hand or as a dry run), approve a waiting run, show a
    /// run's audit.
    #[command(
        subcommand,
        after_help = "Example:\n  kiln runbook list\n  kiln runbook run restart-api --param service=api --dry-run\n  kiln runbook run restart-api --param service=api\n  kiln runbook approve 0190a1b2\n  kiln runbook show 0190a1b2\n  kiln runbook runs"
    )]
    Runbook(crate::runbooks::RunbookCommand),
    /// A maintenance page on a route: every request gets it (503 and `Retry-After`) instead
    /// of reaching the service, until its time is up or it is turned off.
    #[command(
        subcommand,
        after_help = "Example:\n  kiln maintenance on shop --for 10m --message 'Back at 10:30'\n  kiln maintenance list\n  kiln maintenance off shop"
    )]
    Maintenance(crate::maintenance::commands::MaintenanceCommand),
    /// Validate and run GitHub Actions workflows (`.github/workflows/*.yml`) on this machine.
    #[command(
        subcommand,
        after_help = "Example:\n  kiln ci validate\n  kiln ci run ci.yml --secret TOKEN=...\n  kiln ci list\n  kiln ci show 3\n  kiln ci logs 3 --job test"
    )]
    Ci(CiCommand),
    /// Deployment frequency, lead time for changes, change failure rate and failed-deployment
    /// recovery time from kiln's own deploy records, each with its DORA 2024 level.
    #[command(
        after_help = "Example:\n  kiln dora\n  kiln dora --since 7d --service api\n  kiln dora --json"
    )]
    Dora(DoraArgs),
    /// Tell the control plane about pushed refs (run by the post-receive hook kiln installs;
    /// reads `<old> <new> <ref>` lines from stdin).
    #[command(name = "notify-push", hide = true)]
    NotifyPush,
    /// Remove a lock left by a process that is gone.
    #[command(
        name = "force-unlock",
        after_help = "Example:\n  kiln force-unlock 0190a1b2-..."
    )]
    ForceUnlock {
        /// The lock id printed by the command that found the state locked.
        lock_id: String,
    },
}

/// `--json`.
#[derive(Debug, Args, Clone)]
pub struct Output {
    /// Print machine-readable JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Options shared by plan, apply and destroy.
#[derive(Debug, Args, Clone)]
pub struct Selection {
    /// Only this address and what it needs (repeatable).
    #[arg(long = "target", value_name = "ADDRESS")]
    pub targets: Vec<String>,
    /// Leave this address and what depends on it alone (repeatable).
    #[arg(long = "exclude", value_name = "ADDRESS")]
    pub excludes: Vec<String>,
    /// Override a variable (repeatable): NAME=VALUE, VALUE parsed as YAML.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Skip asking providers what exists (plan from the recorded state alone).
    #[arg(long)]
    pub no_refresh: bool,
}

/// `kiln plan`.
#[derive(Debug, Args, Clone)]
pub struct PlanArgs {
    /// What to select.
    #[command(flatten)]
    pub select: Selection,
    /// Plan the destruction of everything recorded.
    #[arg(long)]
    pub destroy: bool,
    /// Save the plan to this file for `kiln apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Output format.
    #[command(flatten)]
    pub output: Output,
}

/// `kiln apply` and `kiln destroy`.
#[derive(Debug, Args, Clone)]
pub struct ApplyArgs {
    /// A plan saved by `kiln plan --out` (apply only).
    pub plan_file: Option<PathBuf>,
    /// What to select.
    #[command(flatten)]
    pub select: Selection,
    /// How many changes may run at once.
    #[arg(long, default_value_t = 10)]
    pub parallelism: usize,
    /// Output format.
    #[command(flatten)]
    pub output: Output,
}

/// `kiln up`.
#[derive(Debug, Args, Clone)]
pub struct UpArgs {
    /// Destroy everything recorded first, then build from nothing.
    #[arg(long)]
    pub fresh: bool,
    /// Apply once and stop instead of reconciling.
    #[arg(long)]
    pub once: bool,
    /// Run in the background; returns once the first apply is done.
    #[arg(short = 'd', long = "detach")]
    pub detach: bool,
    /// Seconds between reconcile passes.
    #[arg(long, default_value_t = 5)]
    pub interval: u64,
    /// How many changes may run at once.
    #[arg(long, default_value_t = 10)]
    pub parallelism: usize,
    /// Also serve the Prometheus API (for promtool and Grafana) on this loopback address, with
    /// the bearer token in .kiln/api-token; port 0 picks a free port (see `kiln status`).
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<std::net::SocketAddr>,
    /// Serve the read-only web dashboard on this loopback address; port 0 picks a free port
    /// (`kiln dash` prints the URL).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub dash_listen: std::net::SocketAddr,
    /// Serve GitHub push webhooks (`POST /hooks/github`, signed with `source.webhook.secret`)
    /// on this address; port 0 picks a free port (written to .kiln/hooks.addr).
    #[arg(long, value_name = "ADDR")]
    pub hooks_listen: Option<std::net::SocketAddr>,
}

/// `kiln promote`.
#[derive(Debug, Args, Clone)]
pub struct PromoteArgs {
    /// The service, as declared (`api`).
    pub service: String,
    /// The environment to promote to.
    #[arg(long)]
    pub to: String,
    /// A release of the previous environment (digest or 4+ hex digits); default: the one it
    /// runs.
    #[arg(long)]
    pub release: Option<String>,
    /// Output format.
    #[command(flatten)]
    pub output: Output,
}

/// `kiln approve`.
#[derive(Debug, Args, Clone)]
pub struct ApproveArgs {
    /// The service, as declared (`api`).
    pub service: String,
    /// The environment the approval is for.
    #[arg(long)]
    pub env: String,
    /// The release approved (digest or 4+ hex digits); default: the one the previous
    /// environment runs.
    #[arg(long)]
    pub release: Option<String>,
}

/// `kiln dora`.
#[derive(Debug, Args, Clone)]
pub struct DoraArgs {
    /// How far back to look: a duration such as `30d`, `12h`, `2w`.
    #[arg(long, default_value = "30d")]
    pub since: String,
    /// One service only (`api` or `services.api`).
    #[arg(long)]
    pub service: Option<String>,
    /// The end of the window (RFC 3339), default now: the same records and `--until` give the
    /// same figures.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Output format.
    #[command(flatten)]
    pub output: Output,
}

/// `kiln state ...`.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List recorded resources.
    #[command(after_help = "Example:\n  kiln state list\n  kiln state list --json")]
    List(Output),
    /// Show one recorded resource.
    #[command(after_help = "Example:\n  kiln state show resources.motd")]
    Show {
        /// Its address.
        address: String,
        /// Output format.
        #[command(flatten)]
        output: Output,
    },
}

/// `kiln history`.
#[derive(Debug, Args, Clone)]
pub struct HistoryArgs {
    /// Show at most this many revisions.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Output format.
    #[command(flatten)]
    pub output: Output,
}

/// `kiln logs`.
#[derive(Debug, Args, Clone)]
pub struct LogsArgs {
    /// Services, or SERVICE/INSTANCE; all services when none is given.
    pub targets: Vec<String>,
    /// Keep printing new lines as they come.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only lines newer than this (a duration such as 10m, 1h).
    #[arg(long)]
    pub since: Option<String>,
    /// Only the last N lines (of each target).
    #[arg(long)]
    pub tail: Option<usize>,
    /// Output format.
    #[command(flatten)]
    pub output: Output,
}

/// `kiln events`.
#[derive(Debug, Args, Clone)]
pub struct EventsArgs {
    /// Only events of this address.
    #[arg(long)]
    pub address: Option<String>,
    /// Only the newest N events.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Output format.
    #[command(flatten)]
    pub output: Output,
}

/// `kiln ci ...`: GitHub Actions workflows of the repository at `-C DIR`.
#[derive(Debug, Subcommand)]
pub enum CiCommand {
    /// Check workflows and report every mistake at once.
    #[command(
        after_help = "Example:\n  kiln ci validate                # every file in .github/workflows\n  kiln ci validate ci.yml release.yml\n  kiln ci validate --json"
    )]
    Validate {
        /// Workflow files (`ci.yml` or a path); all of `.github/workflows` when none is given.
        workflows: Vec<String>,
        /// Output format.
        #[command(flatten)]
        output: Output,
    },
    /// Run a workflow at a commit, print its output live and record it.
    #[command(
        after_help = "Example:\n  kiln ci run                              # the only workflow, at HEAD, as a push\n  kiln ci run ci.yml --job test --matrix service=api\n  kiln ci run deploy.yml --event workflow_dispatch --input env=staging --secret-file .secrets\n\nExit code: 0 when the run succeeded, 3 when it failed or was cancelled."
    )]
    Run(Box<CiRunArgs>),
    /// List recorded runs, newest first.
    #[command(after_help = "Example:\n  kiln ci list\n  kiln ci list --json")]
    List(Output),
    /// Show a run's jobs and steps: status, times, exit codes.
    #[command(after_help = "Example:\n  kiln ci show 3\n  kiln ci show 3 --json")]
    Show {
        /// The run id (from `kiln ci list`).
        run: u64,
        /// Output format.
        #[command(flatten)]
        output: Output,
    },
    /// Print a run's stored logs (secrets masked).
    #[command(after_help = "Example:\n  kiln ci logs 3\n  kiln ci logs 3 --job test")]
    Logs {
        /// The run id (from `kiln ci list`).
        run: u64,
        /// Only this job (its id, or a display name such as `test (api)`).
        #[arg(long)]
        job: Option<String>,
    },
}

/// `kiln ci run`.
#[derive(Debug, Args, Clone)]
pub struct CiRunArgs {
    /// The workflow file (`ci.yml` or a path); default: the only one in `.github/workflows`.
    pub workflow: Option<String>,
    /// Run only this job and the jobs it needs: a job id, or one matrix leg by the name
    /// GitHub shows for it (`--job 'build (linux, 1)'`).
    #[arg(long, value_name = "JOB")]
    pub job: Option<String>,
    /// Run only matrix instances where KEY is VALUE (repeatable). An object or list value is
    /// named by its JSON or its values as the job name shows them (`cfg=linux, 1`), a field
    /// inside one by a dotted path (`cfg.os=linux`, `flags.0=-O2`).
    #[arg(long = "matrix", value_name = "KEY=VALUE")]
    pub matrix: Vec<String>,
    /// The triggering event (`github.event_name`).
    #[arg(long, default_value = "push")]
    pub event: String,
    /// The event's webhook payload (`github.event`, `$GITHUB_EVENT_PATH`), a JSON object, in
    /// place of the one kiln builds from the repository (a pull request from the revision's
    /// branch into the default branch, a release of the tag at the commit, ...); for what git
    /// cannot tell (a comment's text, a label, a fork). Its `sender` and `repository` give
    /// `github.actor`, `actor_id`, `repository_id` and `repository_owner_id` (empty without
    /// them).
    #[arg(long = "event-file", value_name = "FILE")]
    pub event_file: Option<PathBuf>,
    /// For `--event schedule`: the `on.schedule` cron line that fired
    /// (`github.event.schedule`); default: the workflow's first.
    #[arg(long, value_name = "CRON")]
    pub schedule: Option<String>,
    /// A `workflow_dispatch` input (repeatable).
    #[arg(long = "input", value_name = "NAME=VALUE")]
    pub inputs: Vec<String>,
    /// A configuration variable, `vars.NAME` (repeatable); over kiln.yaml's `vars:`.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// A secret (repeatable); masked in every log line and never stored. `GITHUB_TOKEN` also
    /// fills `github.token`, as on GitHub (a local run has no token of its own: '' otherwise).
    #[arg(long = "secret", value_name = "NAME=VALUE")]
    pub secrets: Vec<String>,
    /// Secrets from a file of NAME=VALUE lines (`#` comments and blank lines skipped).
    #[arg(long = "secret-file", value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// The revision to run at (a commit, branch or tag).
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// Keep the run's job workspaces (under `.kiln/runs/`) when the run fails.
    #[arg(long)]
    pub keep_workspace: bool,
    /// A `runs-on` label this host also answers to (repeatable), besides `ubuntu-latest`,
    /// `self-hosted`, `linux` and the like.
    #[arg(long = "runner-label", value_name = "LABEL")]
    pub runner_labels: Vec<String>,
}
