//! The executor: walks a plan as a dependency graph, `parallelism` changes at a time.
//!
//! Each change is recorded in two steps, intent then outcome, so that a crash between them
//! leaves a pending operation that the next start turns into a tainted resource: the state
//! never claims more than what happened. A failed change skips everything that depends on it;
//! independent changes carry on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_plan::{Action, Change, Plan, digest_value};
use kiln_spec::Stack;
use kiln_spec::eval::Known;
use kiln_spec::model::Condition;
use kiln_state::{Operation, OperationOutcome, ResourceRecord, ResourceRecordInput, StateHandle};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;

use crate::Providers;
use crate::desired::{Inputs, Knowledge, evaluate_one, known_from};
use crate::provider::{Attributes, Started};
use crate::refresh::to_provider_record;

/// What the executor reports as it goes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    /// A change started.
    Started {
        /// The resource.
        address: String,
        /// What is being done.
        action: Action,
    },
    /// A change finished.
    Done {
        /// The resource.
        address: String,
        /// What was done (`NoOp` when the values turned out unchanged).
        action: Action,
        /// How long it took.
        elapsed: Duration,
    },
    /// A change failed.
    Failed {
        /// The resource.
        address: String,
        /// Why.
        message: String,
    },
    /// A change was not attempted because something it needs failed.
    Skipped {
        /// The resource.
        address: String,
        /// The failed dependency.
        because: String,
    },
}

/// The result of an apply.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Changes carried out, by action.
    pub done: BTreeMap<String, Action>,
    /// Changes that failed, with the reason.
    pub failed: BTreeMap<String, String>,
    /// Changes skipped, with the failed dependency.
    pub skipped: BTreeMap<String, String>,
}

impl Report {
    /// True when every change succeeded.
    pub fn succeeded(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty()
    }
}

/// Everything an apply needs.
#[derive(Debug, Clone)]
pub struct Apply {
    /// The validated stack (to evaluate attributes with outputs known now).
    pub stack: Arc<Stack>,
    /// Outside inputs of evaluation.
    pub inputs: Arc<Inputs>,
    /// The providers.
    pub providers: Providers,
    /// The state store.
    pub state: StateHandle,
    /// The revision this apply records under.
    pub serial: u64,
    /// How many changes may run at once.
    pub parallelism: usize,
}

type TaskResult = (
    String,
    Result<(Action, Option<ResourceRecord>), String>,
    Duration,
);

/// Runs the plan. Never returns early on a failed change: the report says what happened to each.
pub async fn apply(
    run: &Apply,
    plan: &Plan,
    progress: &UnboundedSender<Progress>,
) -> Result<Report, kiln_state::StateError> {
    let records: BTreeMap<String, ResourceRecord> = run
        .state
        .call(|s| s.resources())
        .await?
        .into_iter()
        .map(|r| (r.address.clone(), r))
        .collect();
    let mut known: BTreeMap<String, Known> = records
        .iter()
        .map(|(a, r)| (a.clone(), known_from(r)))
        .collect();
    let changes: BTreeMap<String, Change> = plan
        .changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .map(|c| (c.address.clone(), c.clone()))
        .collect();
    for address in changes.keys() {
        known.insert(address.clone(), Known::Unknown);
    }
    let mut waiting: BTreeMap<String, BTreeSet<String>> = changes
        .iter()
        .map(|(a, c)| {
            (
                a.clone(),
                c.after
                    .iter()
                    .filter(|d| changes.contains_key(*d))
                    .cloned()
                    .collect(),
            )
        })
        .collect();
    let mut dependents: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (a, deps) in &waiting {
        for d in deps {
            dependents.entry(d.clone()).or_default().push(a.clone());
        }
    }
    let waits_for_start = waits_for_start(&run.stack, &waiting);
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut run = run.clone();
    run.providers.context = Arc::new(crate::provider::ProviderContext {
        started: Some(Started(started_tx)),
        ..(*run.providers.context).clone()
    });
    let mut report = Report::default();
    let mut tasks: JoinSet<TaskResult> = JoinSet::new();
    let mut records = records;
    let parallelism = run.parallelism.max(1);
    // Changes whose dependencies are all done, in address order so runs are reproducible.
    let mut ready: BTreeSet<String> = waiting
        .iter()
        .filter(|(_, w)| w.is_empty())
        .map(|(a, _)| a.clone())
        .collect();
    loop {
        while tasks.len() < parallelism {
            let Some(address) = ready.pop_first() else {
                break;
            };
            waiting.remove(&address);
            let Some(change) = changes.get(&address).cloned() else {
                continue;
            };
            let _ = progress.send(Progress::Started {
                address: address.clone(),
                action: change.action,
            });
            let task = Task {
                run: run.clone(),
                known: knowledge_for(&run.stack, &address, &known),
                change,
                record: records.get(&address).cloned(),
            };
            tasks.spawn(async move {
                let started = Instant::now();
                let result = task.execute().await;
                (address, result, started.elapsed())
            });
        }
        if tasks.is_empty() {
            break;
        }
        let joined = tokio::select! {
            Some(joined) = tasks.join_next() => joined,
            Some((address, outputs)) = started_rx.recv() => {
                if let Some(Known::Unknown) = known.get(&address) {
                    known.insert(address.clone(), provisional(outputs));
                    for d in waits_for_start.get(&address).into_iter().flatten() {
                        if let Some(w) = waiting.get_mut(d)
                            && w.remove(&address)
                            && w.is_empty()
                        {
                            ready.insert(d.clone());
                        }
                    }
                }
                continue;
            }
            else => break,
        };
        let (address, result, elapsed) = match joined {
            Ok(r) => r,
            Err(e) => {
                return Err(kiln_state::StateError::Invalid(format!(
                    "an apply task failed: {e}"
                )));
            }
        };
        match result {
            Ok((action, record)) => {
                match &record {
                    Some(r) => {
                        known.insert(address.clone(), known_from(r));
                        records.insert(address.clone(), r.clone());
                    }
                    None => {
                        known.remove(&address);
                        records.remove(&address);
                    }
                }
                let _ = progress.send(Progress::Done {
                    address: address.clone(),
                    action,
                    elapsed,
                });
                report.done.insert(address.clone(), action);
                for d in dependents.get(&address).into_iter().flatten() {
                    if let Some(w) = waiting.get_mut(d) {
                        w.remove(&address);
                        if w.is_empty() {
                            ready.insert(d.clone());
                        }
                    }
                }
            }
            Err(message) => {
                let _ = progress.send(Progress::Failed {
                    address: address.clone(),
                    message: message.clone(),
                });
                report.failed.insert(address.clone(), message);
                skip_dependents(&address, &dependents, &mut waiting, &mut report, progress);
            }
        }
    }
    Ok(report)
}

/// For each change, the changes that wait on it only until it has started (`depends_on` with
/// `condition: started`): they may go ahead as soon as its provider reports the start.
fn waits_for_start(
    stack: &Stack,
    waiting: &BTreeMap<String, BTreeSet<String>>,
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (dependent, deps) in waiting {
        let Some(resource) = stack.resources.get(dependent) else {
            continue;
        };
        for (dep, condition) in &resource.conditions {
            if *condition == Condition::Started && deps.contains(dep) {
                out.entry(dep.clone()).or_default().push(dependent.clone());
            }
        }
    }
    out
}

/// What dependents may read of a resource that has started but is not applied yet: the outputs
/// its provider already knows; its attributes are recorded only once it is applied.
fn provisional(outputs: Attributes) -> Known {
    Known::Known {
        attributes: serde_json::Map::new(),
        outputs,
        sensitive: false,
    }
}

/// What a task may read: only the resources its own declaration depends on, so that spawning a
/// task costs in proportion to its references, not to the size of the stack.
fn knowledge_for(
    stack: &Stack,
    address: &str,
    known: &BTreeMap<String, Known>,
) -> BTreeMap<String, Known> {
    stack
        .resources
        .get(address)
        .map(|r| {
            r.depends_on
                .keys()
                .filter_map(|d| known.get(d).map(|k| (d.clone(), k.clone())))
                .collect()
        })
        .unwrap_or_default()
}

fn skip_dependents(
    failed: &str,
    dependents: &BTreeMap<String, Vec<String>>,
    waiting: &mut BTreeMap<String, BTreeSet<String>>,
    report: &mut Report,
    progress: &UnboundedSender<Progress>,
) {
    let mut stack: Vec<String> = dependents.get(failed).cloned().unwrap_or_default();
    while let Some(address) = stack.pop() {
        if waiting.remove(&address).is_none() {
            continue;
        }
        let _ = progress.send(Progress::Skipped {
            address: address.clone(),
            because: failed.to_owned(),
        });
        report.skipped.insert(address.clone(), failed.to_owned());
        stack.extend(dependents.get(&address).cloned().unwrap_or_default());
    }
}

/// One change, carried out on its own task.
struct Task {
    run: Apply,
    change: Change,
    record: Option<ResourceRecord>,
    known: BTreeMap<String, Known>,
}

impl Task {
    async fn execute(self) -> Result<(Action, Option<ResourceRecord>), String> {
        match self.change.action {
            Action::Delete => self.delete().await.map(|()| (Action::Delete, None)),
            Action::Create | Action::Update | Action::Replace => self.write().await,
            Action::NoOp => Ok((Action::NoOp, self.record)),
        }
    }

    async fn delete(&self) -> Result<(), String> {
        let Some(record) = &self.record else {
            return Ok(());
        };
        let op = self.begin(Operation::Delete).await?;
        let provider = self
            .run
            .providers
            .get(&record.kind)
            .map_err(|e| e.to_string())?;
        let result = provider
            .delete(&self.run.providers.context, &to_provider_record(record))
            .await;
        match result {
            Ok(()) => self.complete(op, OperationOutcome::Deleted).await,
            Err(e) => {
                let message = e.to_string();
                self.complete(
                    op,
                    OperationOutcome::Failed {
                        message: message.clone(),
                        changed: false,
                    },
                )
                .await?;
                Err(message)
            }
        }
    }

    async fn write(&self) -> Result<(Action, Option<ResourceRecord>), String> {
        let knowledge = Knowledge {
            inputs: &self.run.inputs,
            resources: &self.known,
        };
        let desired =
            evaluate_one(&self.run.stack, &self.change.address, &knowledge).map_err(|f| {
                f.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
        if !desired.unknown.is_empty() {
            let names: Vec<&str> = desired.unknown.iter().map(String::as_str).collect();
            return Err(format!(
                "values still unknown at apply time: {}",
                names.join(", ")
            ));
        }
        // An update planned only because values were unknown may turn out to change nothing.
        let mut action = self.change.action;
        let had_unknown = self
            .change
            .attrs
            .iter()
            .any(|a| a.after.as_deref() == Some(kiln_plan::UNKNOWN));
        let drifted = self.change.reasons.iter().any(|r| r.starts_with("drift:"));
        if action == Action::Update && had_unknown && !drifted {
            let recorded = self.record.as_ref().map(crate::desired::recorded_from);
            let again = kiln_plan::change_for(&desired, recorded.as_ref(), None);
            if again.action == Action::NoOp {
                return Ok((Action::NoOp, self.record.clone()));
            }
            action = again.action;
        }
        let provider = self
            .run
            .providers
            .get(&desired.kind)
            .map_err(|e| e.to_string())?
            .clone();
        let ctx = &self.run.providers.context;
        let op_kind = match action {
            Action::Create => Operation::Create,
            Action::Replace => Operation::Replace,
            _ => Operation::Update,
        };
        let op = self.begin(op_kind).await?;
        let result = match (action, &self.record) {
            (Action::Update, Some(record)) => {
                provider
                    .update(ctx, &to_provider_record(record), &desired.attrs)
                    .await
            }
            (Action::Replace, Some(record)) if !self.change.create_before_destroy => {
                match provider.delete(ctx, &to_provider_record(record)).await {
                    Ok(()) => {
                        provider
                            .create(ctx, &desired.kind, &desired.address, &desired.attrs)
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
            (Action::Replace, Some(record)) => match provider
                .create(ctx, &desired.kind, &desired.address, &desired.attrs)
                .await
            {
                Ok(applied) => provider
                    .delete(ctx, &to_provider_record(record))
                    .await
                    .map(|()| applied),
                Err(e) => Err(e),
            },
            _ => {
                provider
                    .create(ctx, &desired.kind, &desired.address, &desired.attrs)
                    .await
            }
        };
        match result {
            Ok(applied) => {
                let mut attributes = desired.attrs.clone();
                for name in &desired.sensitive {
                    if let Some(v) = attributes.get_mut(name) {
                        *v = digest_value(v);
                    }
                }
                let input = ResourceRecordInput {
                    address: desired.address.clone(),
                    kind: desired.kind.clone(),
                    attributes: serde_json::Value::Object(attributes),
                    outputs: serde_json::Value::Object(applied.outputs),
                    private: serde_json::json!({
                        "provider": applied.private,
                        "lifecycle": { "prevent_destroy": desired.lifecycle.prevent_destroy },
                    }),
                    dependencies: desired.depends_on.iter().cloned().collect(),
                };
                self.complete(op, OperationOutcome::Written(input)).await?;
                let address = desired.address.clone();
                let record = self
                    .run
                    .state
                    .call(move |s| s.resource(&address))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((action, record))
            }
            Err(e) => {
                let changed = matches!(e, crate::provider::ProviderError::Partial { .. })
                    || action == Action::Replace;
                let message = e.to_string();
                self.complete(
                    op,
                    OperationOutcome::Failed {
                        message: message.clone(),
                        changed,
                    },
                )
                .await?;
                Err(message)
            }
        }
    }

    async fn begin(&self, op: Operation) -> Result<i64, String> {
        let serial = self.run.serial;
        let address = self.change.address.clone();
        let kind = self.change.kind.clone();
        self.run
            .state
            .call(move |s| s.begin_operation(serial, &address, &kind, op))
            .await
            .map_err(|e| e.to_string())
    }

    async fn complete(&self, op: i64, outcome: OperationOutcome) -> Result<(), String> {
        self.run
            .state
            .call(move |s| s.complete_operation(op, outcome))
            .await
            .map_err(|e| e.to_string())
    }
}
