//! GitHub's parallel steps (changelog 2026-06-25; the runner's `BackgroundStepCoordinator`).
//!
//! A background step runs beside the job's next steps, from a copy of the job's state taken
//! when it starts ([`JobState::fork`]) with environment files of its own. What it changes (its
//! outputs and outcome in `steps`, `GITHUB_ENV`, `GITHUB_PATH`, its summary, post steps and
//! record) reaches the job only when a `wait`, `wait-all` or `cancel` step completes it, or
//! the job's end does (GitHub's implicit `wait-all` before the post steps). A `parallel` group
//! is its steps started in the background and then waited for together. Problem matchers a
//! background step adds (`::add-matcher::`) stay its own, so that a step running beside others
//! does not change how their output is read while they run.
//!
//! Everything runs on the job's task: the background steps are futures this module polls while
//! the job's own step runs ([`Background::beside`]) or while a control step waits, so the job's
//! state has one owner and a background step's changes are applied by that owner.

use std::sync::Arc;
use std::task::Poll;

use tokio::sync::Semaphore;

use super::{
    Frame, IndexMap, Instant, JobCx, JobState, Pin, Ready, Status, Step, StepAction, StepResult,
    action_names, execute_step, ready_step, record, started_step, step_context, step_name,
};
use crate::events::{RunEvent, StepRecord};
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

/// At most this many background steps run at once in a job; the others wait for a slot.
const MAX_RUNNING: usize = 10;

/// How long a background step that a `cancel` step stops has to end (the runner's grace
/// period) before it is abandoned as cancelled (its process group is killed then).
const CANCEL_GRACE: Duration = Duration::from_millis(7500);

type Running<'a> = Pin<Box<dyn Future<Output = (usize, Box<Finished>)> + Send + 'a>>;

/// The background steps of one job instance.
pub(super) struct Background<'a> {
    /// Every background step started, in order; an index here names one.
    steps: Vec<Started>,
    /// The futures of those still running, with their index.
    running: Vec<(usize, Running<'a>)>,
    slots: Arc<Semaphore>,
    /// The background steps' records put in the job's so far: for each step, its place
    /// (`records_at`, then its index) and how many.
    placed: Vec<((usize, usize), usize)>,
}

struct Started {
    /// The `id` a `wait` or `cancel` step names it by (none for a `parallel` group's steps,
    /// which are not named from outside their group).
    addressable: Option<String>,
    /// Its `id`, for its entry in the `steps` context.
    id: Option<String>,
    name: String,
    cancel: Arc<watch::Sender<bool>>,
    progress: Progress,
    /// A `cancel` step stopped it: its being cancelled does not count in the job's result.
    cancelled_by_step: bool,
    /// How many records of the job's own steps (not background ones) there were when it
    /// started: its own go after those, and after the background steps that started before
    /// it, as the runner's timeline lists steps in the order they start.
    records_at: usize,
}

enum Progress {
    Running,
    /// Ended; its changes wait to be applied to the job.
    Finished(Box<Finished>),
    /// Waited for (its changes applied), with its conclusion.
    Completed(Status),
}

pub(super) struct Finished {
    state: JobState,
    frame: Frame,
    conclusion: Status,
}

/// What a turn of [`Background::beside`] ended with.
enum Turn<T> {
    Work(T),
    Step(usize, Box<Finished>),
}

impl<'a> Background<'a> {
    pub(super) fn new() -> Self {
        Background {
            steps: Vec::new(),
            running: Vec::new(),
            slots: Arc::new(Semaphore::new(MAX_RUNNING)),
            placed: Vec::new(),
        }
    }

    /// Starts `step` (whose `env` and `if` said it runs) in the background: its index.
    #[allow(clippy::too_many_arguments)] // The step and where it starts from.
    pub(super) fn start(
        &mut self,
        cx: JobCx<'a>,
        state: &JobState,
        frame: &Frame,
        step: &'a Step,
        action_name: &str,
        ready: Ready,
        addressable: bool,
    ) -> usize {
        let index = self.steps.len();
        let (cancel, cancelled) = watch::channel(false);
        let cancel = Arc::new(cancel);
        forward_job_cancel(state.cancel.clone(), cancel.clone());
        let files_dir = state.files_dir.join(format!("background-{}", index + 1));
        let mut fork = state.fork(files_dir, cancelled);
        let mut fork_frame = Frame {
            steps: frame.steps.clone(),
            inputs: frame.inputs.clone(),
            action_path: None,
            failed: frame.failed,
        };
        let id = step.id.as_ref().map(|i| i.name.clone());
        self.steps.push(Started {
            addressable: id.clone().filter(|_| addressable),
            id,
            name: ready.name.clone(),
            cancel,
            progress: Progress::Running,
            cancelled_by_step: false,
            records_at: state.records.len() - self.placed.iter().map(|(_, n)| n).sum::<usize>(),
        });
        // A free slot is taken now, so the step shows as started where it is written.
        let free = self.slots.clone().try_acquire_owned().ok();
        let mut started = Instant::now();
        if free.is_some() {
            started_step(cx, &ready.name);
        }
        let slots = self.slots.clone();
        let action_name = action_name.to_owned();
        let work = async move {
            let slot = match free {
                Some(slot) => Some(slot),
                None => {
                    let mut stopped = fork.cancel.clone();
                    let slot = tokio::select! {
                        slot = slots.acquire_owned() => slot.ok(),
                        _ = stopped.wait_for(|c| *c) => None,
                    };
                    started = Instant::now();
                    started_step(cx, &ready.name);
                    slot
                }
            };
            let conclusion = if slot.is_some() {
                execute_step(
                    cx,
                    &mut fork,
                    &mut fork_frame,
                    step,
                    &action_name,
                    ready,
                    started,
                )
                .await
            } else {
                // Cancelled while it waited for a slot: it never ran.
                let result = StepResult::failed(Status::Cancelled);
                record(
                    cx.shared,
                    cx.inst,
                    &mut fork,
                    &mut fork_frame,
                    step,
                    &ready.name,
                    result,
                    false,
                    started,
                )
            };
            drop(slot);
            let finished = Finished {
                state: fork,
                frame: fork_frame,
                conclusion,
            };
            (index, Box::new(finished))
        };
        self.running.push((index, Box::pin(work)));
        index
    }

    /// Runs `work` (the job's own step) while the background steps go on.
    pub(super) async fn beside<T>(&mut self, work: impl Future<Output = T>) -> T {
        tokio::pin!(work);
        // Bounded: each turn ends the work or one background step, of which there are few.
        loop {
            if self.running.is_empty() {
                return work.await;
            }
            let turn = tokio::select! {
                biased;
                out = &mut work => Turn::Work(out),
                (index, finished) = next_finished(&mut self.running) => Turn::Step(index, finished),
            };
            match turn {
                Turn::Work(out) => return out,
                Turn::Step(index, finished) => {
                    self.steps[index].progress = Progress::Finished(finished)
                }
            }
        }
    }

    fn is_running(&self, index: usize) -> bool {
        self.running.iter().any(|(i, _)| *i == index)
    }

    /// Waits until each of `indices` has ended.
    pub(super) async fn wait(&mut self, indices: &[usize]) {
        // Bounded: each turn ends one running step.
        while indices.iter().any(|&i| self.is_running(i)) {
            let (index, finished) = next_finished(&mut self.running).await;
            self.steps[index].progress = Progress::Finished(finished);
        }
    }

    /// Applies what each of `indices` (ended) changed to the job, once: their merged result.
    pub(super) fn complete(
        &mut self,
        cx: JobCx<'_>,
        indices: &[usize],
        state: &mut JobState,
        frame: &mut Frame,
    ) -> Status {
        let mut result = Status::Success;
        for &index in indices {
            let started = &mut self.steps[index];
            let progress = std::mem::replace(
                &mut started.progress,
                Progress::Completed(Status::Cancelled),
            );
            let conclusion = match progress {
                Progress::Finished(finished) => {
                    let (conclusion, records) =
                        apply(cx, *finished, started.id.as_deref(), state, frame);
                    // After the job's own records before it and the background steps' records
                    // placed so far that started before it.
                    let place = (started.records_at, index);
                    let shift: usize = (self.placed.iter())
                        .filter(|(other, _)| *other < place)
                        .map(|(_, n)| n)
                        .sum();
                    let at = (started.records_at + shift).min(state.records.len());
                    self.placed.push((place, records.len()));
                    state.records.splice(at..at, records);
                    conclusion
                }
                Progress::Completed(conclusion) => conclusion,
                // Abandoned after its grace period.
                Progress::Running => Status::Cancelled,
            };
            started.progress = Progress::Completed(conclusion);
            result = merge(result, conclusion);
        }
        result
    }

    /// Stops the background step at `index` (SIGTERM, then SIGKILL after the step's kill
    /// grace), waiting for it at most [`CANCEL_GRACE`].
    pub(super) async fn cancel(&mut self, index: usize) {
        self.steps[index].cancelled_by_step = true;
        if !self.is_running(index) {
            return;
        }
        let _ = self.steps[index].cancel.send(true);
        if tokio::time::timeout(CANCEL_GRACE, self.wait(&[index]))
            .await
            .is_err()
        {
            // Dropping its future kills its process group (see `process::run`).
            self.running.retain(|(i, _)| *i != index);
            self.steps[index].progress = Progress::Completed(Status::Cancelled);
        }
    }

    /// The background steps not yet waited for, in the order they started.
    pub(super) fn unwaited(&self) -> Vec<usize> {
        (0..self.steps.len())
            .filter(|&i| !matches!(self.steps[i].progress, Progress::Completed(_)))
            .collect()
    }

    /// The result the background steps add to the job's: all of theirs merged, but for a
    /// step a `cancel` step cancelled (its failure before that still counts).
    pub(super) fn job_result(&self) -> Status {
        self.steps
            .iter()
            .filter_map(|s| match s.progress {
                Progress::Completed(Status::Cancelled) if s.cancelled_by_step => None,
                Progress::Completed(conclusion) => Some(conclusion),
                _ => None,
            })
            .fold(Status::Success, merge)
    }

    /// The background step a `wait` or `cancel` step names by `id`, if it started.
    fn by_id(&self, id: &str) -> Option<usize> {
        self.steps
            .iter()
            .rposition(|s| s.addressable.as_deref() == Some(id))
    }

    /// The names of steps as the runner's log lists them: each step's name (the `id` for one
    /// that never started), or "(none)".
    fn describe<'n>(&'n self, steps: impl Iterator<Item = (Option<usize>, &'n str)>) -> String {
        let names: Vec<&str> = steps
            .map(|(index, id)| index.map_or(id, |i| self.steps[i].name.as_str()))
            .collect();
        if names.is_empty() {
            "(none)".to_owned()
        } else {
            names.join(", ")
        }
    }

    fn describe_started(&self, indices: &[usize]) -> String {
        self.describe(indices.iter().map(|&i| (Some(i), "")))
    }

    /// The runner's closing lines: the summary, then each step's result.
    fn report(&self, cx: JobCx<'_>, summary: &str, indices: &[usize]) {
        cx.log(summary);
        for &index in indices {
            let step = &self.steps[index];
            let result = match step.progress {
                Progress::Completed(conclusion) => task_result(conclusion),
                _ => "Unknown",
            };
            cx.log(&format!("  {}: {result}", step.name));
        }
    }
}

/// A `wait`, `wait-all`, `cancel` or `parallel` step. It always runs (it has no `if`) and
/// its result is that of the steps it waited for (a `cancel` step's is success); a failure
/// fails the job unless its `continue-on-error` says otherwise.
pub(super) async fn control_step<'a>(
    cx: JobCx<'a>,
    state: &mut JobState,
    frame: &mut Frame,
    background: &mut Background<'a>,
    step: &'a Step,
    action_name: &str,
) {
    let started = Instant::now();
    let ctx = step_context(cx, state, frame, action_name);
    let name = step_name(step, &ctx);
    cx.shared.emit(RunEvent::StepStarted {
        job: cx.inst.display.clone(),
        step: name.clone(),
    });
    let outcome = match &step.action {
        StepAction::Cancel(id) => cancel_step(cx, state, frame, background, id).await,
        StepAction::Run(_) | StepAction::Uses { .. } => Status::Success,
        waiting => {
            let (indices, opening, summary) = waited(cx, state, frame, background, waiting);
            cx.log(&opening);
            background.wait(&indices).await;
            let result = background.complete(cx, &indices, state, frame);
            background.report(cx, summary, &indices);
            result
        }
    };
    let continue_on_error = ctx.flag(step.continue_on_error.as_ref()).unwrap_or(false);
    let result = StepResult {
        outcome,
        exit_code: None,
        outputs: IndexMap::new(),
    };
    record(
        cx.shared,
        cx.inst,
        state,
        frame,
        step,
        &name,
        result,
        continue_on_error,
        started,
    );
}

/// The background steps a `wait`, `wait-all` or `parallel` step waits for (a `parallel`
/// step starts its own first), with the runner's opening and closing lines.
fn waited<'a>(
    cx: JobCx<'a>,
    state: &mut JobState,
    frame: &mut Frame,
    background: &mut Background<'a>,
    action: &'a StepAction,
) -> (Vec<usize>, String, &'static str) {
    const WAITING: &str = "Waiting for background step(s) to complete";
    const WAITED: &str = "Finished waiting for background step(s).";
    match action {
        StepAction::Wait(ids) => {
            let named: Vec<(Option<usize>, &str)> = ids
                .iter()
                .map(|id| (background.by_id(&id.name), id.name.as_str()))
                .collect();
            let indices = named.iter().filter_map(|(i, _)| *i).collect();
            let names = background.describe(named.into_iter());
            (indices, format!("{WAITING}: {names}"), WAITED)
        }
        StepAction::WaitAll => {
            let indices = background.unwaited();
            let opening = if indices.is_empty() {
                "No background steps remaining to wait for.".to_owned()
            } else {
                let names = background.describe_started(&indices);
                format!("Waiting for all background step(s) to complete: {names}")
            };
            let summary = "Finished waiting for all background step(s).";
            (indices, opening, summary)
        }
        StepAction::Parallel(members) => {
            let names = action_names(members);
            let mut indices = Vec::new();
            for (member, member_action) in members.iter().zip(&names) {
                let member_started = Instant::now();
                if let Some(ready) =
                    ready_step(cx, state, frame, member, member_action, member_started)
                {
                    let index =
                        background.start(cx, state, frame, member, member_action, ready, false);
                    indices.push(index);
                }
            }
            let names = background.describe_started(&indices);
            (indices, format!("{WAITING}: {names}"), WAITED)
        }
        StepAction::Run(_) | StepAction::Uses { .. } | StepAction::Cancel(_) => {
            (Vec::new(), String::new(), WAITED)
        }
    }
}

/// A `cancel` step: stops the step it names if it still runs, and completes it either way.
async fn cancel_step(
    cx: JobCx<'_>,
    state: &mut JobState,
    frame: &mut Frame,
    background: &mut Background<'_>,
    id: &crate::workflow::Name,
) -> Status {
    let index = background.by_id(&id.name);
    cx.log(&format!(
        "Cancelling background step(s): {}",
        background.describe(std::iter::once((index, id.name.as_str())))
    ));
    let indices: Vec<usize> = index.into_iter().collect();
    if let Some(index) = index {
        background.cancel(index).await;
    }
    background.complete(cx, &indices, state, frame);
    background.report(cx, "Finished cancelling background step(s).", &indices);
    Status::Success
}

/// Applies an ended background step's changes to the job, in the order it made them: its
/// conclusion and its records (for the caller to place).
fn apply(
    cx: JobCx<'_>,
    finished: Finished,
    id: Option<&str>,
    state: &mut JobState,
    frame: &mut Frame,
) -> (Status, Vec<StepRecord>) {
    let Finished {
        state: fork,
        frame: fork_frame,
        conclusion,
    } = finished;
    for write in fork.writes.unwrap_or_default() {
        state.apply(write);
    }
    state.posts.extend(fork.posts);
    state.pgids.extend(fork.pgids);
    state.summary.push_str(&fork.summary);
    if fork.timed_out
        && let Some(message) = state.time_out()
    {
        cx.log(&message);
    }
    if let Some(id) = id
        && let Some(entry) = fork_frame.steps.get(id)
    {
        frame.steps.insert(id.to_owned(), entry.clone());
    }
    (conclusion, fork.records)
}

/// The runner's `MergeTaskResults` over the results kiln has: the first that is not a
/// success stays.
fn merge(current: Status, coming: Status) -> Status {
    if current == Status::Success {
        coming
    } else {
        current
    }
}

/// A result as the runner's log writes it (`TaskResult`).
fn task_result(status: Status) -> &'static str {
    match status {
        Status::Success => "Succeeded",
        Status::Failure => "Failed",
        Status::Cancelled => "Canceled",
        Status::Skipped => "Skipped",
    }
}

/// Cancels a background step when its job is cancelled from now on. A job cancelled before
/// the step started does not stop it: the step runs because its `if` asked to run after a
/// cancel, as the job's own steps do.
fn forward_job_cancel(mut job: watch::Receiver<bool>, step: Arc<watch::Sender<bool>>) {
    if *job.borrow_and_update() {
        return;
    }
    tokio::spawn(async move {
        tokio::select! {
            changed = job.wait_for(|c| *c) => {
                if changed.is_ok() {
                    let _ = step.send(true);
                }
            }
            () = step.closed() => {}
        }
    });
}

/// The next running step to end, removed from `running`.
fn next_finished<'r, 'a: 'r>(
    running: &'r mut Vec<(usize, Running<'a>)>,
) -> impl Future<Output = (usize, Box<Finished>)> + 'r {
    std::future::poll_fn(move |task| {
        for i in 0..running.len() {
            if let Poll::Ready(out) = running[i].1.as_mut().poll(task) {
                drop(running.swap_remove(i));
                return Poll::Ready(out);
            }
        }
        Poll::Pending
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_result_that_is_not_a_success_is_the_merged_result() {
        use Status::*;
        let cases = [
            (vec![], Success),
            (vec![Success, Success], Success),
            (vec![Success, Failure, Cancelled], Failure),
            (vec![Cancelled, Failure], Cancelled),
            (vec![Success, Skipped], Skipped),
            (vec![Skipped, Failure], Skipped),
        ];
        for (results, merged) in cases {
            assert_eq!(
                results.iter().copied().fold(Success, merge),
                merged,
                "{results:?}"
            );
        }
    }
}
