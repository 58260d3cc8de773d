//! `StateHandle`: async access to a `Store` owned by a dedicated thread.
//!
//! rusqlite blocks, so a tokio control plane must not call it on its worker
//! threads. The handle sends boxed closures over a std channel to the store's
//! own thread and awaits the answer on a oneshot. The thread ends when the
//! last handle is dropped (the channel closes).

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

use crate::error::StateError;
use crate::store::Store;

/// A unit of work for the store thread.
type Job = Box<dyn FnOnce(&mut Store) + Send>;

/// Cloneable async front of a `Store` running on its own thread.
#[derive(Debug, Clone)]
pub struct StateHandle {
    jobs: mpsc::Sender<Job>,
}

impl StateHandle {
    /// Moves `store` onto a new thread named `kiln-state` and returns a
    /// handle to it. If the thread cannot be started, every call returns
    /// `StateError::Closed`.
    pub fn spawn(store: Store) -> StateHandle {
        let (jobs, queue) = mpsc::channel::<Job>();
        // On spawn failure the closure (and with it the receiver) is dropped,
        // so sends fail and callers see Closed: no panic here.
        let _spawned = std::thread::Builder::new()
            .name("kiln-state".into())
            .spawn(move || run(store, queue));
        StateHandle { jobs }
    }

    /// Runs `f` on the store's thread and returns its result.
    ///
    /// Calls from all handles run one at a time, in the order they arrive.
    /// If `f` panics, the caller gets `StateError::TaskPanicked` and the store
    /// keeps serving (any transaction `f` had open is rolled back on drop).
    pub async fn call<R, F>(&self, f: F) -> Result<R, StateError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Store) -> Result<R, StateError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |store: &mut Store| {
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(store)))
                .unwrap_or(Err(StateError::TaskPanicked));
            // The caller may have stopped waiting; nothing to do then.
            let _ = reply.send(result);
        });
        self.jobs.send(job).map_err(|_| StateError::Closed)?;
        answer.await.map_err(|_| StateError::Closed)?
    }
}

fn run(mut store: Store, queue: mpsc::Receiver<Job>) {
    for job in queue {
        job(&mut store);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use crate::types::{LockHolder, NewEvent};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn calls_run_on_the_store_thread_and_return_results() {
        runtime().block_on(async {
            let h = StateHandle::spawn(Store::open_in_memory().unwrap());
            let name = h
                .call(|_| Ok(std::thread::current().name().map(str::to_string)))
                .await
                .unwrap();
            assert_eq!(name.as_deref(), Some("kiln-state"));
            let h2 = h.clone();
            let lock = h2
                .call(|s| {
                    s.acquire_lock(&LockHolder {
                        who: "cp@host".into(),
                        pid: 1,
                        operation: "reconcile".into(),
                    })
                })
                .await
                .unwrap();
            let seen = h.call(|s| s.current_lock()).await.unwrap();
            assert_eq!(seen, Some(lock));
        });
    }

    #[test]
    fn errors_pass_through_and_panics_do_not_kill_the_store() {
        runtime().block_on(async {
            let h = StateHandle::spawn(Store::open_in_memory().unwrap());
            let err = h.call(|s| s.release_lock("nope")).await.unwrap_err();
            assert!(matches!(err, StateError::NoSuchLock { .. }));
            let boom = h
                .call(|_| -> Result<(), StateError> { panic!("boom") })
                .await;
            assert!(matches!(boom, Err(StateError::TaskPanicked)));
            let id = h
                .call(|s| {
                    s.append_event(&NewEvent {
                        kind: "x".into(),
                        address: None,
                        serial: None,
                        message: String::new(),
                        data: serde_json::Value::Null,
                    })
                })
                .await
                .unwrap();
            assert!(id > 0);
        });
    }

    #[test]
    fn many_concurrent_callers() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        rt.block_on(async {
            let h = StateHandle::spawn(Store::open_in_memory().unwrap());
            let mut tasks = Vec::new();
            for i in 0..50 {
                let h = h.clone();
                tasks.push(tokio::spawn(async move {
                    h.call(move |s| {
                        s.append_event(&NewEvent {
                            kind: "tick".into(),
                            address: None,
                            serial: None,
                            message: i.to_string(),
                            data: serde_json::Value::Null,
                        })
                    })
                    .await
                }));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            assert_eq!(h.call(|s| s.last_event_id()).await.unwrap(), 50);
        });
    }

    #[test]
    fn the_store_thread_ends_when_the_last_handle_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let wal = dir.path().join("state.db-wal");
        let h = StateHandle::spawn(Store::open(&path).unwrap());
        let h2 = h.clone();
        runtime().block_on(async {
            h.call(|s| s.last_event_id()).await.unwrap();
        });
        assert!(wal.exists(), "WAL file exists while the store is open");
        drop(h);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(wal.exists(), "one handle still holds the store open");
        drop(h2);
        // SQLite removes the WAL file when the last connection closes,
        // i.e. when the store thread has dropped the Store.
        let gone = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            !wal.exists()
        });
        assert!(gone, "store thread did not drop the store");
    }
}
