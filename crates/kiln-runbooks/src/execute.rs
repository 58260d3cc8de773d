//! Drives one run: substitutes the parameters into each step, runs it through [`Actions`]
//! under its timeout, feeds the outcome to the [`Phase`] step function (retries,
//! `on_failure`), runs called runbooks and fallbacks in place, and reports every step start
//! and end as [`Progress`]. A dry run reports what each step would do and calls nothing.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use kiln_spec::runbooks::{
    Action, DrainThen, ResolvedPage, RunbookDecl, Runbooks, StepDecl, substitute,
    substitute_in_script,
};
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use crate::run::Phase;

/// What an action gives back: a line for the audit, or why it failed.
pub type ActionFuture<'a, T = String> =
    Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// How long the wait action sleeps between two queries.
const WAIT_POLL: Duration = Duration::from_secs(1);
/// Calls nest at most this deep (cycles are refused at load; this bounds the rest).
const MAX_DEPTH: usize = 8;

/// The operations a runbook can ask of the world; the binary implements them over the
/// control plane. A dropped future must stop its work (a timed-out command is killed).
pub trait Actions: Send + Sync {
    /// Restarts every instance of `service`.
    fn restart<'a>(&'a self, service: &'a str) -> ActionFuture<'a>;
    /// Deploys `service`'s previous release, or `to`.
    fn rollback<'a>(&'a self, service: &'a str, to: Option<&'a str>) -> ActionFuture<'a>;
    /// Sets `service`'s replicas.
    fn scale<'a>(&'a self, service: &'a str, replicas: u32) -> ActionFuture<'a>;
    /// Runs a program; exit status 0 is success.
    fn command<'a>(&'a self, argv: &'a [String]) -> ActionFuture<'a>;
    /// Sends a request; the status must be `expect`.
    fn http<'a>(&'a self, method: &'a str, url: &'a str, expect: u16) -> ActionFuture<'a>;
    /// Whether `query` returns anything now.
    fn query_holds<'a>(&'a self, query: &'a str) -> ActionFuture<'a, bool>;
    /// Delivers `message` to `receiver`.
    fn notify<'a>(
        &'a self,
        receiver: &'a str,
        message: &'a str,
        run: &'a RunContext,
    ) -> ActionFuture<'a>;
    /// Resolves once `kiln runbook approve` approves the run (with who approved).
    fn approval<'a>(&'a self, run: &'a RunContext, message: &'a str) -> ActionFuture<'a>;
    /// Takes `instance` of `service` out of rotation (refused when no other ready instance
    /// would be left in it), waits up to `wait` for its requests in flight, then does `then`.
    fn drain<'a>(
        &'a self,
        service: &'a str,
        instance: &'a str,
        wait: Duration,
        then: DrainThen,
    ) -> ActionFuture<'a>;
    /// Puts `instance` of `service` back into rotation.
    fn undrain<'a>(&'a self, service: &'a str, instance: &'a str) -> ActionFuture<'a>;
    /// Puts `route` in maintenance with `page`, or ends its maintenance (`None`); the run is
    /// the actor its events name.
    fn maintenance<'a>(
        &'a self,
        route: &'a str,
        page: Option<ResolvedPage>,
        run: &'a RunContext,
    ) -> ActionFuture<'a>;
}

/// The run being executed.
#[derive(Debug, Clone, Serialize)]
pub struct RunContext {
    /// Its id.
    pub run_id: String,
    /// The runbook it runs.
    pub runbook: String,
    /// What it acts on.
    pub target: String,
    /// Whether nothing is to be changed.
    pub dry_run: bool,
}

/// How one attempt of one step ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepResult {
    /// The step's place: `2`, or `2.1` for the first step of a runbook called by step 2.
    pub path: String,
    /// Its name.
    pub name: String,
    /// Its action.
    pub action: String,
    /// The attempt, from 1.
    pub attempt: u32,
    /// What it did, or why it failed.
    pub outcome: Result<String, String>,
}

/// What the executor reports while a run goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Progress {
    /// An attempt starts.
    StepStarted {
        /// The step's place.
        path: String,
        /// Its name.
        name: String,
        /// Its action.
        action: String,
        /// The attempt.
        attempt: u32,
        /// The action with its parameters substituted.
        detail: String,
    },
    /// An attempt ended.
    StepFinished(StepResult),
    /// An approval step waits for `kiln runbook approve`.
    AwaitingApproval {
        /// The step's place.
        path: String,
        /// What the approver is asked.
        message: String,
    },
}

/// Runs `runbook` with `params` to its end and returns how it ended.
pub async fn execute(
    runbooks: &Runbooks,
    runbook: &RunbookDecl,
    params: &BTreeMap<String, String>,
    run: &RunContext,
    actions: &dyn Actions,
    progress: &UnboundedSender<Progress>,
) -> Phase {
    let executor = Executor {
        runbooks,
        run,
        actions,
        progress,
    };
    executor.run(runbook, params, "", 0).await
}

struct Executor<'a> {
    runbooks: &'a Runbooks,
    run: &'a RunContext,
    actions: &'a dyn Actions,
    progress: &'a UnboundedSender<Progress>,
}

impl Executor<'_> {
    fn run<'s>(
        &'s self,
        runbook: &'s RunbookDecl,
        params: &'s BTreeMap<String, String>,
        prefix: &'s str,
        depth: usize,
    ) -> Pin<Box<dyn Future<Output = Phase> + Send + 's>> {
        Box::pin(async move {
            let mut phase = Phase::start(&runbook.steps);
            while let Phase::Step { index, attempt, .. } = &phase {
                let (index, attempt) = (*index, *attempt);
                let Some(step) = runbook.steps.get(index) else {
                    break;
                };
                let path = format!("{prefix}{}", index + 1);
                let outcome = self.attempt(step, params, &path, attempt, depth).await;
                let _ = self.progress.send(Progress::StepFinished(StepResult {
                    path,
                    name: step.name.clone(),
                    action: step.action.kind().into(),
                    attempt,
                    outcome: outcome.clone(),
                }));
                phase = phase.next(&runbook.steps, outcome.map(|_| ()));
            }
            if let Phase::Aborted {
                fallback: Some(name),
                index,
                ..
            } = &phase
                && let Some(fallback) = self.runbooks.get(name)
                && depth < MAX_DEPTH
            {
                // The fallback gets the parameters it declares from this run's.
                let passed: BTreeMap<String, String> = params
                    .iter()
                    .filter(|(k, _)| fallback.params.contains_key(*k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .chain(fallback.params.iter().filter_map(|(k, p)| {
                        (!params.contains_key(k))
                            .then(|| p.default.clone().map(|d| (k.clone(), d)))
                            .flatten()
                    }))
                    .collect();
                let prefix = format!("{prefix}{}!", index + 1);
                let _ = self.run(fallback, &passed, &prefix, depth + 1).await;
            }
            phase
        })
    }

    async fn attempt(
        &self,
        step: &StepDecl,
        params: &BTreeMap<String, String>,
        path: &str,
        attempt: u32,
        depth: usize,
    ) -> Result<String, String> {
        // A shell script gets its values quoted; everything else as they are (one pass each,
        // so a value is never expanded again).
        let script = match &step.action {
            Action::Command { argv } if argv.len() == 3 && argv[0] == "sh" && argv[1] == "-c" => {
                Some(substitute_in_script(&argv[2], params))
            }
            _ => None,
        };
        let mut action = step.action.clone();
        for text in action.texts_mut() {
            *text = substitute(text, params);
        }
        if let (Some(script), Action::Command { argv }) = (script, &mut action) {
            argv[2] = script;
        }
        let detail = describe(&action);
        let _ = self.progress.send(Progress::StepStarted {
            path: path.to_owned(),
            name: step.name.clone(),
            action: action.kind().into(),
            attempt,
            detail: detail.clone(),
        });
        if let Action::Runbook { name, params } = &action {
            // A call's own steps have their own timeouts.
            return self.call(name, params, path, depth).await;
        }
        if self.run.dry_run {
            return Ok(format!("dry run: would {detail}"));
        }
        let timeout = Duration::from_millis(step.timeout_ms);
        match tokio::time::timeout(timeout, self.act(&action, path)).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "timed out after {}",
                crate::guard::human(step.timeout_ms)
            )),
        }
    }

    async fn call(
        &self,
        name: &str,
        given: &BTreeMap<String, String>,
        path: &str,
        depth: usize,
    ) -> Result<String, String> {
        let Some(callee) = self.runbooks.get(name) else {
            return Err(format!("no runbook named `{name}`"));
        };
        if depth >= MAX_DEPTH {
            return Err(format!("runbooks nest deeper than {MAX_DEPTH}"));
        }
        let mut params: BTreeMap<String, String> = callee
            .params
            .iter()
            .filter_map(|(k, p)| p.default.clone().map(|d| (k.clone(), d)))
            .collect();
        params.extend(given.clone());
        let prefix = format!("{path}.");
        match self.run(callee, &params, &prefix, depth + 1).await {
            Phase::Finished { failed } if failed.is_empty() => {
                Ok(format!("runbook {name} succeeded"))
            }
            Phase::Finished { failed } => {
                Err(format!("runbook {name}: {} step(s) failed", failed.len()))
            }
            Phase::Aborted { index, error, .. } => Err(format!(
                "runbook {name} stopped at step {}: {error}",
                index + 1
            )),
            Phase::Step { .. } => Err(format!("runbook {name} did not finish")),
        }
    }

    async fn act(&self, action: &Action, path: &str) -> Result<String, String> {
        let a = self.actions;
        match action {
            Action::Restart { service } => a.restart(service).await,
            Action::Rollback { service, to } => a.rollback(service, to.as_deref()).await,
            Action::Scale { service, replicas } => {
                let n = replicas
                    .parse()
                    .map_err(|_| format!("`{replicas}` is not a number of replicas"))?;
                a.scale(service, n).await
            }
            Action::Command { argv } => a.command(argv).await,
            Action::Http {
                method,
                url,
                expect,
            } => a.http(method, url, *expect).await,
            Action::Wait { query } => {
                // Bounded by the step's timeout around this future.
                loop {
                    if a.query_holds(query).await? {
                        return Ok(format!("`{query}` holds"));
                    }
                    tokio::time::sleep(WAIT_POLL).await;
                }
            }
            Action::Notify { receiver, message } => a.notify(receiver, message, self.run).await,
            Action::Approve { message } => {
                let _ = self.progress.send(Progress::AwaitingApproval {
                    path: path.to_owned(),
                    message: message.clone(),
                });
                a.approval(self.run, message).await
            }
            Action::Drain {
                service,
                instance,
                timeout_ms,
                then,
            } => {
                a.drain(service, instance, Duration::from_millis(*timeout_ms), *then)
                    .await
            }
            Action::Undrain { service, instance } => a.undrain(service, instance).await,
            Action::Maintenance { route, page } => {
                // Values from parameters are read only now; a bad one fails the step.
                let page = page.as_ref().map(|p| p.resolve()).transpose()?;
                a.maintenance(route, page, self.run).await
            }
            Action::Runbook { name, .. } => Err(format!("runbook {name} is called, not acted")),
        }
    }
}

/// An action in words, parameters substituted.
fn describe(action: &Action) -> String {
    match action {
        Action::Restart { service } => format!("restart {service}"),
        Action::Rollback { service, to } => match to {
            Some(to) => format!("roll {service} back to {to}"),
            None => format!("roll {service} back to its previous release"),
        },
        Action::Scale { service, replicas } => format!("scale {service} to {replicas}"),
        Action::Command { argv } => format!("run {}", argv.join(" ")),
        Action::Http {
            method,
            url,
            expect,
        } => format!("{method} {url} expecting {expect}"),
        Action::Wait { query } => format!("wait until `{query}` holds"),
        Action::Notify { receiver, message } => format!("notify {receiver}: {message}"),
        Action::Runbook { name, params } => {
            let given: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("run runbook {name} ({})", given.join(", "))
        }
        Action::Approve { message } => format!("wait for approval: {message}"),
        Action::Drain {
            service,
            instance,
            timeout_ms,
            then,
        } => format!(
            "drain {service} instance {instance} (waiting up to {} for requests in flight), then {}",
            crate::guard::human(*timeout_ms),
            then.as_str()
        ),
        Action::Undrain { service, instance } => {
            format!("put {service} instance {instance} back into rotation")
        }
        Action::Maintenance { route, page: None } => {
            format!("end the maintenance of route {route}")
        }
        Action::Maintenance {
            route,
            page: Some(page),
        } => format!(
            "put route {route} in maintenance for {} (status {}, \"{}\")",
            page.duration, page.status, page.message
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_spec::runbooks::{Guards, OnFailure, ParamDecl, ParamType};
    use kiln_spec::source::{FileId, Span};
    use std::sync::Mutex;

    /// Records calls; restarts of `bad` fail, commands hang.
    #[derive(Default)]
    struct Fake {
        calls: Mutex<Vec<String>>,
    }

    impl Fake {
        fn log(&self, line: String) {
            if let Ok(mut calls) = self.calls.lock() {
                calls.push(line);
            }
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().map(|c| c.clone()).unwrap_or_default()
        }
    }

    impl Actions for Fake {
        fn restart<'a>(&'a self, service: &'a str) -> ActionFuture<'a> {
            Box::pin(async move {
                self.log(format!("restart {service}"));
                if service == "bad" {
                    Err("refused".into())
                } else {
                    Ok("restarted".into())
                }
            })
        }
        fn rollback<'a>(&'a self, service: &'a str, _: Option<&'a str>) -> ActionFuture<'a> {
            Box::pin(async move {
                self.log(format!("rollback {service}"));
                Ok("rolled back".into())
            })
        }
        fn scale<'a>(&'a self, service: &'a str, n: u32) -> ActionFuture<'a> {
            Box::pin(async move {
                self.log(format!("scale {service} {n}"));
                Ok("scaled".into())
            })
        }
        fn command<'a>(&'a self, argv: &'a [String]) -> ActionFuture<'a> {
            Box::pin(async move {
                self.log(format!("command {}", argv.join(" ")));
                std::future::pending::<()>().await;
                Ok(String::new())
            })
        }
        fn http<'a>(&'a self, _: &'a str, _: &'a str, _: u16) -> ActionFuture<'a> {
            Box::pin(async { Ok("200".into()) })
        }
        fn query_holds<'a>(&'a self, _: &'a str) -> ActionFuture<'a, bool> {
            Box::pin(async { Ok(false) })
        }
        fn notify<'a>(&'a self, r: &'a str, m: &'a str, _: &'a RunContext) -> ActionFuture<'a> {
            Box::pin(async move {
                self.log(format!("notify {r}: {m}"));
                Ok("sent".into())
            })
        }
        fn approval<'a>(&'a self, _: &'a RunContext, _: &'a str) -> ActionFuture<'a> {
            Box::pin(async { Ok("approved by ann".into()) })
        }
        fn drain<'a>(
            &'a self,
            service: &'a str,
            instance: &'a str,
            wait: Duration,
            then: DrainThen,
        ) -> ActionFuture<'a> {
            Box::pin(async move {
                self.log(format!(
                    "drain {service} {instance} {}ms {}",
                    wait.as_millis(),
                    then.as_str()
                ));
                Ok("drained".into())
            })
        }
        fn undrain<'a>(&'a self, service: &'a str, instance: &'a str) -> ActionFuture<'a> {
            Box::pin(async move {
                self.log(format!("undrain {service} {instance}"));
                Ok("undrained".into())
            })
        }
        fn maintenance<'a>(
            &'a self,
            route: &'a str,
            page: Option<ResolvedPage>,
            run: &'a RunContext,
        ) -> ActionFuture<'a> {
            Box::pin(async move {
                self.log(match page {
                    Some(p) => format!(
                        "maintenance {route} {}ms {} {} by {}",
                        p.duration_ms, p.status, p.message, run.runbook
                    ),
                    None => format!("maintenance {route} off"),
                });
                Ok("done".into())
            })
        }
    }

    fn step(action: Action, retries: u32, on_failure: OnFailure) -> StepDecl {
        StepDecl {
            name: action.kind().into(),
            action,
            timeout_ms: 5_000,
            retries,
            on_failure,
        }
    }

    fn runbook(name: &str, steps: Vec<StepDecl>) -> RunbookDecl {
        RunbookDecl {
            name: name.into(),
            description: String::new(),
            params: BTreeMap::from([(
                "service".to_owned(),
                ParamDecl {
                    ty: ParamType::Service,
                    default: None,
                    required: true,
                },
            )]),
            steps,
            guards: Guards::default(),
            span: Span::new(FileId(0), 0, 0),
        }
    }

    fn context(dry_run: bool) -> RunContext {
        RunContext {
            run_id: "r1".into(),
            runbook: "fix".into(),
            target: "api".into(),
            dry_run,
        }
    }

    async fn go(
        runbooks: &Runbooks,
        name: &str,
        service: &str,
        dry_run: bool,
        fake: &Fake,
    ) -> (Phase, Vec<Progress>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let params = BTreeMap::from([("service".to_owned(), service.to_owned())]);
        let phase = execute(
            runbooks,
            &runbooks[name],
            &params,
            &context(dry_run),
            fake,
            &tx,
        )
        .await;
        drop(tx);
        let mut seen = Vec::new();
        while let Some(p) = rx.recv().await {
            seen.push(p);
        }
        (phase, seen)
    }

    fn stack() -> Runbooks {
        let svc = "${{ params.service }}".to_owned();
        let mut runbooks = Runbooks::new();
        runbooks.insert(
            "fix".into(),
            runbook(
                "fix",
                vec![
                    step(
                        Action::Restart {
                            service: svc.clone(),
                        },
                        2,
                        OnFailure::Runbook("page".into()),
                    ),
                    step(
                        Action::Scale {
                            service: svc.clone(),
                            replicas: "3".into(),
                        },
                        0,
                        OnFailure::Abort,
                    ),
                ],
            ),
        );
        runbooks.insert(
            "page".into(),
            runbook(
                "page",
                vec![step(
                    Action::Notify {
                        receiver: "oncall".into(),
                        message: format!("{svc} would not restart"),
                    },
                    0,
                    OnFailure::Abort,
                )],
            ),
        );
        runbooks.insert(
            "slow".into(),
            runbook(
                "slow",
                vec![
                    step(
                        Action::Command {
                            argv: vec!["sleep".into()],
                        },
                        1,
                        OnFailure::Continue,
                    ),
                    step(
                        Action::Runbook {
                            name: "fix".into(),
                            params: BTreeMap::from([("service".into(), svc)]),
                        },
                        0,
                        OnFailure::Abort,
                    ),
                ],
            ),
        );
        runbooks
    }

    #[tokio::test]
    async fn a_failing_step_is_retried_then_its_fallback_runs_with_the_parameters() {
        let fake = Fake::default();
        let (phase, progress) = go(&stack(), "fix", "bad", false, &fake).await;
        assert_eq!(
            fake.calls(),
            vec![
                "restart bad",
                "restart bad",
                "restart bad",
                "notify oncall: bad would not restart"
            ]
        );
        assert!(matches!(phase, Phase::Aborted { index: 0, .. }));
        let finished: Vec<&str> = progress
            .iter()
            .filter_map(|p| match p {
                Progress::StepFinished(r) => Some(r.path.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(finished, vec!["1", "1", "1", "1!1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_retry_and_continue_and_a_call_runs_the_callee() {
        let fake = Fake::default();
        let (phase, progress) = go(&stack(), "slow", "api", false, &fake).await;
        assert_eq!(
            fake.calls(),
            vec![
                "command sleep",
                "command sleep",
                "restart api",
                "scale api 3"
            ]
        );
        assert_eq!(phase, Phase::Finished { failed: vec![0] });
        assert!(progress.iter().any(|p| matches!(p, Progress::StepFinished(r) if r.outcome == Err("timed out after 5s".into()))));
        assert!(
            progress
                .iter()
                .any(|p| matches!(p, Progress::StepFinished(r) if r.path == "2.2"))
        );
    }

    #[tokio::test]
    async fn drain_and_undrain_get_their_instance_wait_and_next_step() {
        let svc = "${{ params.service }}".to_owned();
        let mut runbooks = Runbooks::new();
        runbooks.insert(
            "rotate".into(),
            runbook(
                "rotate",
                vec![
                    step(
                        Action::Drain {
                            service: svc.clone(),
                            instance: format!("{svc}/1"),
                            timeout_ms: 1_500,
                            then: DrainThen::Keep,
                        },
                        0,
                        OnFailure::Abort,
                    ),
                    step(
                        Action::Undrain {
                            service: svc.clone(),
                            instance: "1".into(),
                        },
                        0,
                        OnFailure::Abort,
                    ),
                ],
            ),
        );
        let fake = Fake::default();
        let (phase, progress) = go(&runbooks, "rotate", "api", false, &fake).await;
        assert_eq!(phase, Phase::Finished { failed: vec![] });
        assert_eq!(
            fake.calls(),
            vec!["drain api api/1 1500ms keep", "undrain api 1"]
        );
        assert!(progress.iter().any(|p| matches!(p, Progress::StepStarted { detail, .. }
            if detail == "drain api instance api/1 (waiting up to 1500ms for requests in flight), then keep")));
    }

    #[tokio::test]
    async fn maintenance_reads_its_values_once_substituted_and_refuses_bad_ones() {
        let page = |duration: &str| {
            Some(kiln_spec::runbooks::MaintenancePage {
                duration: duration.into(),
                status: "503".into(),
                message: "Back soon".into(),
                retry_after: None,
            })
        };
        let mut runbooks = Runbooks::new();
        runbooks.insert(
            "pause".into(),
            runbook(
                "pause",
                vec![
                    step(
                        Action::Maintenance {
                            route: "${{ params.service }}".into(),
                            page: page("2s"),
                        },
                        0,
                        OnFailure::Abort,
                    ),
                    step(
                        Action::Maintenance {
                            route: "shop".into(),
                            page: None,
                        },
                        0,
                        OnFailure::Abort,
                    ),
                    step(
                        Action::Maintenance {
                            route: "shop".into(),
                            page: page("${{ params.service }}"),
                        },
                        0,
                        OnFailure::Abort,
                    ),
                ],
            ),
        );
        let fake = Fake::default();
        let (phase, _) = go(&runbooks, "pause", "shop", false, &fake).await;
        assert_eq!(
            fake.calls(),
            vec![
                "maintenance shop 2000ms 503 Back soon by fix",
                "maintenance shop off"
            ]
        );
        let Phase::Aborted { index, error, .. } = phase else {
            panic!("{phase:?}")
        };
        assert_eq!(index, 2);
        assert!(error.contains("for: `shop` is not a duration"), "{error}");
    }

    #[tokio::test]
    async fn a_dry_run_calls_nothing_and_says_what_it_would_do() {
        let fake = Fake::default();
        let (phase, progress) = go(&stack(), "slow", "api", true, &fake).await;
        assert!(fake.calls().is_empty());
        assert_eq!(phase, Phase::Finished { failed: vec![] });
        let said: Vec<String> = progress
            .iter()
            .filter_map(|p| match p {
                Progress::StepFinished(r) => r.outcome.clone().ok(),
                _ => None,
            })
            .collect();
        assert_eq!(
            said,
            vec![
                "dry run: would run sleep",
                "dry run: would restart api",
                "dry run: would scale api to 3",
                "runbook fix succeeded"
            ]
        );
    }
}
