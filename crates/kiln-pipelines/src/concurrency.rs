//! `concurrency` groups, across runs and processes (two `kiln ci run`s, or the control plane
//! and a developer's terminal), as GitHub defines them: in a group at most one run (or job)
//! runs and one waits. A newer arrival replaces the waiting one, which ends cancelled; with
//! `cancel-in-progress` it also cancels the running one. With `queue: max` arrivals wait in
//! line instead, and run in the order they came.
//!
//! A group is a directory under the work directory, named by the digest of the lower-cased
//! group name (GitHub compares names case-insensitively). `lock` is held with an exclusive
//! file lock by whoever runs (the kernel drops it if that process dies, so a crash never
//! wedges a group); `pending` names the waiters' tickets, one a line, the next to run first
//! (one line, the newest waiter's, unless arrivals queue); `running` the holder's; and
//! `cancel` the ticket of a holder asked to stop. Waiters and holders look at these files a
//! few times a second: a group changes hands in human time, and polling needs no daemon.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// How often waiters and holders look at the group's files.
const POLL: Duration = Duration::from_millis(100);

/// The longest a run waits for its group: GitHub's longest job (6 hours) plus margin.
const MAX_WAIT: Duration = Duration::from_secs(7 * 3600);

/// How an arrival waits for a busy group: GitHub's `concurrency.queue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queue {
    /// `single` (the default): the arrival replaces whoever waits.
    Single,
    /// `max`: the arrival waits behind whoever waits.
    Max,
}

/// The concurrency groups of one repository's runs.
#[derive(Debug, Clone)]
pub(crate) struct Groups {
    dir: PathBuf,
}

/// How asking for a group ended.
#[derive(Debug)]
pub(crate) enum Acquired {
    /// This run (or job) holds the group until the value is dropped.
    Held(Held),
    /// A newer arrival took this one's place in the queue: it ends cancelled, as on GitHub.
    Superseded,
    /// The caller gave up waiting (its own cancellation).
    Abandoned,
}

/// A held group. Dropping it lets the next waiter in.
#[derive(Debug)]
pub(crate) struct Held {
    // Dropping the file releases the lock.
    _lock: fs::File,
    dir: PathBuf,
    ticket: String,
    cancel: watch::Receiver<bool>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Held {
    /// Resolves when a newer arrival with `cancel-in-progress` asks this holder to stop.
    pub(crate) async fn cancel_requested(&mut self) {
        // An error means the watcher ended, which it only does when asked to stop.
        let _ = self.cancel.wait_for(|asked| *asked).await;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.watcher.abort();
        if read(&self.dir.join("running")).as_deref() == Some(self.ticket.as_str()) {
            let _ = fs::remove_file(self.dir.join("running"));
        }
    }
}

impl Groups {
    pub(crate) fn new(dir: &Path) -> Groups {
        Groups {
            dir: dir.to_owned(),
        }
    }

    /// Waits for `group`, reporting through `waiting` once if it has to wait. `abandon`
    /// turning true gives up.
    pub(crate) async fn acquire(
        &self,
        group: &str,
        cancel_in_progress: bool,
        queue: Queue,
        mut abandon: watch::Receiver<bool>,
        waiting: impl FnOnce(),
    ) -> io::Result<Acquired> {
        let dir = self.dir.join(group_key(group));
        fs::create_dir_all(&dir)?;
        let ticket = new_ticket();
        let file = open_lock(&dir.join("lock"))?;
        // A free group is taken at once: this arrival never waited, so nothing replaces it.
        // Arrivals that queue do not pass those already waiting in line.
        let may_pass = queue == Queue::Single || with_queue(&dir, || Ok(waiters(&dir).is_empty()))?;
        if may_pass {
            match file.try_lock() {
                Ok(()) => return self.take(dir, file, ticket, false),
                Err(fs::TryLockError::WouldBlock) => {}
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        with_queue(&dir, || {
            let mut line = match queue {
                Queue::Single => Vec::new(),
                Queue::Max => waiters(&dir),
            };
            line.push(ticket.clone());
            write_atomic(&dir.join("pending"), &line.join("\n"))
        })?;
        let started = Instant::now();
        let mut waiting = Some(waiting);
        loop {
            if cancel_in_progress && let Some(holder) = read(&dir.join("running")) {
                write_atomic(&dir.join("cancel"), &holder)?;
            }
            let line = waiters(&dir);
            if !line.contains(&ticket) {
                return Ok(Acquired::Superseded);
            }
            // Only the first in line takes the group.
            if line.first() == Some(&ticket) {
                match file.try_lock() {
                    Ok(()) => return self.take(dir, file, ticket, true),
                    Err(fs::TryLockError::WouldBlock) => {}
                    Err(fs::TryLockError::Error(e)) => return Err(e),
                }
            }
            if started.elapsed() > MAX_WAIT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "waited {} h for concurrency group `{group}`",
                        MAX_WAIT.as_secs() / 3600
                    ),
                ));
            }
            if let Some(report) = waiting.take() {
                report();
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                _ = abandon.wait_for(|gave_up| *gave_up) => {
                    leave_queue(&dir, &ticket)?;
                    return Ok(Acquired::Abandoned);
                }
            }
        }
    }

    /// Holding the lock: unless a newer arrival replaced this one while it `waited`, become
    /// the holder.
    fn take(
        &self,
        dir: PathBuf,
        file: fs::File,
        ticket: String,
        waited: bool,
    ) -> io::Result<Acquired> {
        if waited && !leave_queue(&dir, &ticket)? {
            return Ok(Acquired::Superseded);
        }
        write_atomic(&dir.join("running"), &ticket)?;
        let (tx, cancel) = watch::channel(false);
        let (watch_dir, watch_ticket) = (dir.clone(), ticket.clone());
        let watcher = tokio::spawn(async move {
            // Bounded by the holder: the task is aborted when the group is released.
            loop {
                if read(&watch_dir.join("cancel")).as_deref() == Some(watch_ticket.as_str()) {
                    let _ = tx.send(true);
                    return;
                }
                tokio::time::sleep(POLL).await;
            }
        });
        Ok(Acquired::Held(Held {
            _lock: file,
            dir,
            ticket,
            cancel,
            watcher,
        }))
    }
}

fn open_lock(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}

/// Runs `change` holding the group's queue lock, so that reading and replacing `pending` is
/// one step for every process (held for microseconds).
fn with_queue<T>(dir: &Path, change: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let queue = open_lock(&dir.join("queue.lock"))?;
    queue.lock()?;
    let result = change();
    // Closing the file releases the lock.
    drop(queue);
    result
}

/// Takes `ticket` out of the queue; false when a newer arrival already replaced it.
fn leave_queue(dir: &Path, ticket: &str) -> io::Result<bool> {
    with_queue(dir, || {
        let pending = dir.join("pending");
        let mut line = waiters(dir);
        let Some(at) = line.iter().position(|t| t == ticket) else {
            return Ok(false);
        };
        line.remove(at);
        if line.is_empty() {
            fs::remove_file(&pending)?;
        } else {
            write_atomic(&pending, &line.join("\n"))?;
        }
        Ok(true)
    })
}

/// The tickets waiting for the group, the next to run first.
fn waiters(dir: &Path) -> Vec<String> {
    read(&dir.join("pending"))
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The group's directory name: GitHub compares group names without regard to case.
fn group_key(group: &str) -> String {
    hex::encode(Sha256::digest(group.to_lowercase().as_bytes()))
}

/// Unique across processes (pid) and within one (counter), readable in the files.
fn new_ticket() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// Readers see the old content or the new, never a torn write.
fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", new_ticket()));
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn never() -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        std::mem::forget(tx);
        rx
    }

    #[tokio::test]
    async fn a_newer_waiter_replaces_the_waiting_one_and_runs_after_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let groups = Groups::new(dir.path());
        let Acquired::Held(first) = groups
            .acquire("Deploy", false, Queue::Single, never(), || {})
            .await
            .unwrap()
        else {
            panic!("an empty group is free");
        };
        let (waited_tx, mut waited) = tokio::sync::mpsc::unbounded_channel();
        let second = {
            let groups = groups.clone();
            let waited_tx = waited_tx.clone();
            tokio::spawn(async move {
                groups
                    .acquire("deploy", false, Queue::Single, never(), move || {
                        let _ = waited_tx.send(2);
                    })
                    .await
            })
        };
        assert_eq!(waited.recv().await, Some(2), "the second waits");
        // Names compare without case: the third queues in the same group.
        let third = {
            let groups = groups.clone();
            tokio::spawn(async move {
                groups
                    .acquire("DEPLOY", false, Queue::Single, never(), move || {
                        let _ = waited_tx.send(3);
                    })
                    .await
            })
        };
        assert!(matches!(
            second.await.unwrap().unwrap(),
            Acquired::Superseded
        ));
        assert_eq!(waited.recv().await, Some(3));
        drop(first);
        let Acquired::Held(_third) = third.await.unwrap().unwrap() else {
            panic!("the newest waiter runs once the holder is done");
        };
    }

    /// `queue: max`: arrivals wait in line behind the holder, none is cancelled, and they take
    /// the group in the order they came.
    #[tokio::test]
    async fn queued_arrivals_run_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let groups = Groups::new(dir.path());
        let Acquired::Held(first) = groups
            .acquire("g", false, Queue::Max, never(), || {})
            .await
            .unwrap()
        else {
            panic!("an empty group is free");
        };
        let (waited_tx, mut waited) = tokio::sync::mpsc::unbounded_channel();
        let (order_tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        let mut waiters = Vec::new();
        for n in 1..=3 {
            let groups = groups.clone();
            let (waited_tx, order_tx) = (waited_tx.clone(), order_tx.clone());
            waiters.push(tokio::spawn(async move {
                let held = groups
                    .acquire("g", false, Queue::Max, never(), move || {
                        let _ = waited_tx.send(n);
                    })
                    .await
                    .unwrap();
                let Acquired::Held(held) = held else {
                    panic!("waiter {n} was cancelled");
                };
                let _ = order_tx.send(n);
                drop(held);
            }));
            // Each is in line before the next arrives.
            assert_eq!(waited.recv().await, Some(n));
        }
        drop(first);
        for w in waiters {
            w.await.unwrap();
        }
        drop(order_tx);
        let mut ran = Vec::new();
        while let Some(n) = order.recv().await {
            ran.push(n);
        }
        assert_eq!(ran, vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn cancel_in_progress_asks_the_holder_to_stop() {
        let dir = tempfile::tempdir().unwrap();
        let groups = Groups::new(dir.path());
        let Acquired::Held(mut first) = groups
            .acquire("g", false, Queue::Single, never(), || {})
            .await
            .unwrap()
        else {
            panic!("free");
        };
        let second = {
            let groups = groups.clone();
            tokio::spawn(async move {
                groups
                    .acquire("g", true, Queue::Single, never(), || {})
                    .await
            })
        };
        tokio::time::timeout(Duration::from_secs(10), first.cancel_requested())
            .await
            .expect("the holder is asked to stop");
        drop(first);
        assert!(matches!(second.await.unwrap().unwrap(), Acquired::Held(_)));
    }

    /// Two arrivals at a free group: one runs at once, the other waits for it; neither is
    /// cancelled (there was never a waiter to replace).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_arrivals_at_a_free_group_both_run() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..30 {
            let groups = Groups::new(dir.path());
            let group = format!("g{round}");
            let (a, b) = (groups.clone(), groups.clone());
            let (ga, gb) = (group.clone(), group.clone());
            let first = tokio::spawn(async move {
                // Held, then released at the end of this task.
                matches!(
                    a.acquire(&ga, false, Queue::Single, never(), || {}).await,
                    Ok(Acquired::Held(_))
                )
            });
            let second = tokio::spawn(async move {
                matches!(
                    b.acquire(&gb, false, Queue::Single, never(), || {}).await,
                    Ok(Acquired::Held(_))
                )
            });
            assert!(first.await.unwrap(), "round {round}");
            assert!(second.await.unwrap(), "round {round}");
        }
    }

    #[tokio::test]
    async fn a_waiter_can_give_up() {
        let dir = tempfile::tempdir().unwrap();
        let groups = Groups::new(dir.path());
        let Acquired::Held(_first) = groups
            .acquire("g", false, Queue::Single, never(), || {})
            .await
            .unwrap()
        else {
            panic!("free");
        };
        let (give_up, abandon) = watch::channel(false);
        let waiter = {
            let groups = groups.clone();
            tokio::spawn(async move {
                groups
                    .acquire("g", false, Queue::Single, abandon, move || {
                        let _ = give_up.send(true);
                    })
                    .await
            })
        };
        assert!(matches!(
            waiter.await.unwrap().unwrap(),
            Acquired::Abandoned
        ));
        assert!(!dir.path().join(group_key("g")).join("pending").exists());
    }
}
