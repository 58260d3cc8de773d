//! The runbook actions over the control plane: restart, scale and rollback are the
//! controller's own operations (a rollback is an apply of the service with its previous
//! release pinned, trigger `runbook`, like `kiln rollback`); commands run in the stack's
//! directory in their own process group, killed whole when the step times out; HTTP and
//! notifications go through the alert notifier's transport (notifications as Alertmanager
//! v4 bodies, so existing receivers take them); `wait` queries the metrics store; `drain`
//! asks the route actor to take an instance out of rotation (it refuses when none would be
//! left in it), waits for its requests in flight, and restarts it through the controller.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_alerts::{NotifyAlert, NotifyStatus, Querier};
use kiln_runbooks::{ActionFuture, Actions, RunContext};
use kiln_spec::runbooks::DrainThen;
use kiln_supervisor::InstanceState;
use tokio::sync::{mpsc, oneshot};

use super::RunbooksHandle;
use crate::daemon::Command;
use crate::metrics::now_ms;
use crate::ops::{self, ApplyRequest, Selection};

/// How much of a command's output the audit keeps.
const OUTPUT_LIMIT: usize = 400;
/// How often a drain that restarts its instance asks whether it is ready again (the step's
/// timeout bounds the wait).
const READY_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// [`Actions`] over the running control plane.
#[derive(Debug)]
pub struct ControlActions {
    pub(crate) dir: PathBuf,
    pub(crate) commands: mpsc::Sender<Command>,
    /// The route actor, which owns which instances are in rotation.
    pub(crate) routes: crate::ingress::Routes,
    pub(crate) metrics: Option<Arc<kiln_metrics::Store>>,
    pub(crate) runbooks: RunbooksHandle,
    /// The maintenance actor, which owns the routes' maintenance pages.
    pub(crate) maintenance: crate::maintenance::MaintenanceHandle,
}

impl ControlActions {
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, String> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| "the control plane is shutting down".to_owned())?;
        answer
            .await
            .map_err(|_| "the control plane is shutting down".to_owned())
    }

    /// Tells a human that a guard stopped a runbook.
    pub async fn escalation(
        &self,
        receiver: &str,
        message: &str,
        run: &RunContext,
    ) -> Result<String, String> {
        self.deliver(receiver, "RunbookEscalated", message, run)
            .await
    }

    async fn deliver(
        &self,
        receiver: &str,
        alertname: &str,
        message: &str,
        run: &RunContext,
    ) -> Result<String, String> {
        let stack = ops::load_stack(&self.dir).map_err(|e| e.message().to_owned())?;
        let Some(decl) = stack
            .alerting
            .receivers
            .iter()
            .find(|r| r.name == receiver)
            .cloned()
        else {
            return Err(format!("no receiver named `{receiver}`"));
        };
        let mut labels = kiln_alerts::LabelSet::new();
        labels.insert("alertname".into(), alertname.into());
        labels.insert("runbook".into(), run.runbook.clone());
        labels.insert("target".into(), run.target.clone());
        labels.insert("run_id".into(), run.run_id.clone());
        let annotations = kiln_alerts::LabelSet::from([("summary".to_owned(), message.to_owned())]);
        let alert = NotifyAlert {
            status: NotifyStatus::Firing,
            fingerprint: kiln_alerts::fingerprint(&labels),
            labels: labels.clone(),
            annotations,
            starts_at: now_ms(),
            ends_at: None,
            generator_url: format!("kiln runbook show {}", run.run_id),
        };
        let group_key = format!("{{}}:{{runbook=\"{}\"}}", run.runbook);
        let payload = kiln_alerts::group_payload(receiver, &group_key, &labels, &[alert], "");
        let notification = kiln_alerts::Notification {
            receiver: receiver.to_owned(),
            group_key,
            status: NotifyStatus::Firing,
            payload,
        };
        let transport = crate::alerts::transport::Transport::new(&self.dir);
        kiln_alerts::deliver_with_retries(
            &transport,
            &decl,
            &notification,
            kiln_alerts::Backoff::default(),
        )
        .await
        .map(|attempts| format!("notified {receiver} (attempts: {attempts})"))
        .map_err(|e| e.to_string())
    }
}

impl Actions for ControlActions {
    fn restart<'a>(&'a self, service: &'a str) -> ActionFuture<'a> {
        Box::pin(async move {
            self.ask(|reply| Command::Restart(service.to_owned(), reply))
                .await??;
            Ok(format!("restarted every instance of {service}"))
        })
    }

    fn scale<'a>(&'a self, service: &'a str, replicas: u32) -> ActionFuture<'a> {
        Box::pin(async move {
            self.ask(|reply| Command::Scale(service.to_owned(), replicas, reply))
                .await??;
            Ok(format!("scaled {service} to {replicas}"))
        })
    }

    fn rollback<'a>(&'a self, service: &'a str, to: Option<&'a str>) -> ActionFuture<'a> {
        Box::pin(async move {
            let address = crate::deploys::service_address(service);
            let mut select = Selection {
                targets: vec![address.clone()],
                only: true,
                ..Selection::default()
            };
            // Without `to`, the control plane picks the release before the current one when
            // the apply starts: a deploy still in flight has finished by then.
            let roll_back = match to {
                Some(to) => {
                    let store = ops::open_store(&self.dir).map_err(|e| e.message().to_owned())?;
                    let digest = crate::deploys::resolve_release(&store, &address, to)
                        .map_err(|e| e.message().to_owned())?;
                    let mut attrs = serde_json::Map::new();
                    attrs.insert("release_id".into(), serde_json::Value::String(digest));
                    select.overrides = [(address.clone(), attrs)].into_iter().collect();
                    Vec::new()
                }
                None => vec![address.clone()],
            };
            let request = ApplyRequest {
                select,
                parallelism: 10,
                trigger: "runbook".into(),
                roll_back,
                ..ApplyRequest::default()
            };
            let (events, _ignored) = mpsc::unbounded_channel();
            let outcome = self
                .ask(|reply| Command::Apply(request, events, reply))
                .await?
                .map_err(|e| e.message().to_owned())?;
            if outcome.report.succeeded() {
                let store = ops::open_store(&self.dir).map_err(|e| e.message().to_owned())?;
                let now = crate::deploys::current_release(&store, &address)
                    .map_err(|e| e.message().to_owned())?
                    .unwrap_or_default();
                Ok(format!(
                    "rolled {service} back to release {}",
                    kiln_deploy::release::short(&now)
                ))
            } else {
                let failed: Vec<String> = outcome
                    .report
                    .failed
                    .iter()
                    .map(|(a, m)| format!("{a}: {m}"))
                    .collect();
                Err(format!("the rollback failed: {}", failed.join("; ")))
            }
        })
    }

    fn command<'a>(&'a self, argv: &'a [String]) -> ActionFuture<'a> {
        Box::pin(async move {
            let (program, args) = argv
                .split_first()
                .ok_or_else(|| "empty command".to_owned())?;
            let mut command = tokio::process::Command::new(program);
            command
                .args(args)
                .current_dir(&self.dir)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .process_group(0)
                .kill_on_drop(true);
            let child = command.spawn().map_err(|e| format!("{program}: {e}"))?;
            // A timed-out step drops this future: the guard kills the whole group, so
            // nothing the script started outlives the step.
            let group = GroupGuard(child.id().and_then(|id| i32::try_from(id).ok()));
            let output = child
                .wait_with_output()
                .await
                .map_err(|e| format!("{program}: {e}"));
            drop(group);
            let output = output?;
            let text = String::from_utf8_lossy(if output.status.success() {
                &output.stdout
            } else {
                &output.stderr
            })
            .trim()
            .to_owned();
            let text = tail(&text, OUTPUT_LIMIT);
            if output.status.success() {
                Ok(if text.is_empty() {
                    "exit 0".to_owned()
                } else {
                    text
                })
            } else {
                Err(format!("{}: {text}", output.status))
            }
        })
    }

    fn http<'a>(&'a self, method: &'a str, url: &'a str, expect: u16) -> ActionFuture<'a> {
        Box::pin(async move {
            let status = crate::alerts::transport::request(url, method, None).await?;
            if status == expect {
                Ok(format!("{method} {url}: {status}"))
            } else {
                Err(format!("{method} {url}: {status}, expected {expect}"))
            }
        })
    }

    fn query_holds<'a>(&'a self, query: &'a str) -> ActionFuture<'a, bool> {
        Box::pin(async move {
            let Some(store) = self.metrics.clone() else {
                return Err("kiln runs without a metrics store".to_owned());
            };
            let query = query.to_owned();
            let samples = tokio::task::spawn_blocking(move || {
                crate::alerts::StoreQuerier(store).query(&query, now_ms())
            })
            .await
            .map_err(|e| e.to_string())??;
            Ok(!samples.is_empty())
        })
    }

    fn notify<'a>(
        &'a self,
        receiver: &'a str,
        message: &'a str,
        run: &'a RunContext,
    ) -> ActionFuture<'a> {
        Box::pin(self.deliver(receiver, "RunbookNotification", message, run))
    }

    fn drain<'a>(
        &'a self,
        service: &'a str,
        instance: &'a str,
        wait: std::time::Duration,
        then: DrainThen,
    ) -> ActionFuture<'a> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let id = self.routes.cordon(service, instance).await?;
            let ids = std::collections::BTreeSet::from([id.clone()]);
            let left = self.routes.wait_idle(&ids, wait).await;
            let waited = if left == 0 {
                format!(
                    "its requests in flight finished within {}ms",
                    started.elapsed().as_millis()
                )
            } else {
                format!(
                    "{left} request(s) still in flight after {}",
                    kiln_runbooks::guard::human(
                        u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
                    )
                )
            };
            match then {
                DrainThen::Keep => Ok(format!(
                    "took {id} out of rotation; {waited}; it keeps running out of rotation until `undrain` or its next restart"
                )),
                DrainThen::Restart => {
                    let restarting = std::time::Instant::now();
                    self.ask(|reply| Command::RestartInstance(id.clone(), reply))
                        .await??;
                    loop {
                        let instances = self.ask(Command::Services).await?;
                        if instances
                            .iter()
                            .any(|i| i.id.to_string() == id && i.state == InstanceState::Ready)
                        {
                            break;
                        }
                        tokio::time::sleep(READY_POLL).await;
                    }
                    self.routes.uncordon(service, &id).await?;
                    Ok(format!(
                        "took {id} out of rotation; {waited}; restarted it; back in rotation, ready after {}ms",
                        restarting.elapsed().as_millis()
                    ))
                }
            }
        })
    }

    fn maintenance<'a>(
        &'a self,
        route: &'a str,
        page: Option<kiln_spec::runbooks::ResolvedPage>,
        run: &'a RunContext,
    ) -> ActionFuture<'a> {
        Box::pin(async move {
            let by = format!("runbook {} (run {})", run.runbook, run.run_id);
            match page {
                Some(page) => {
                    let active = self
                        .maintenance
                        .start(crate::maintenance::StartRequest {
                            route: route.to_owned(),
                            for_ms: Some(page.duration_ms),
                            status: Some(page.status),
                            message: Some(page.message),
                            retry_after_ms: page.retry_after_ms,
                            by,
                        })
                        .await?;
                    Ok(format!(
                        "route {} in maintenance {}: answers {} \"{}\"",
                        active.route,
                        crate::maintenance::until_text(
                            &active,
                            jiff::Timestamp::now().as_millisecond()
                        ),
                        active.status,
                        active.message
                    ))
                }
                None => {
                    let active = self
                        .maintenance
                        .end(crate::maintenance::EndRequest {
                            route: route.to_owned(),
                            by,
                        })
                        .await?;
                    Ok(format!("route {} serves again", active.route))
                }
            }
        })
    }

    fn undrain<'a>(&'a self, service: &'a str, instance: &'a str) -> ActionFuture<'a> {
        Box::pin(async move {
            let id = self.routes.uncordon(service, instance).await?;
            Ok(format!("put {id} back into rotation"))
        })
    }

    fn approval<'a>(&'a self, run: &'a RunContext, _message: &'a str) -> ActionFuture<'a> {
        Box::pin(async move {
            match self.runbooks.approval(&run.run_id).await {
                Some(by) => Ok(format!("approved by {by}")),
                None => Err("the control plane stopped before an approval".to_owned()),
            }
        })
    }
}

/// Kills a process group when dropped before its leader was reaped.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The last `limit` bytes of `text`, on a character boundary.
fn tail(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}
