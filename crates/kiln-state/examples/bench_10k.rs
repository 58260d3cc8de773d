//! Times the state store at the benchmark's scale: 10,000 resources written
//! through the batched operation protocol, then read back.
//!
//! Run with `cargo run --release -p kiln-state --example bench_10k [N]`.

use std::time::Instant;

use kiln_state::{
    NewRevision, Operation, OperationOutcome, ResourceRecordInput, RevisionStatus, StateError,
    Store,
};
use serde_json::json;

fn main() -> Result<(), StateError> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("kiln-state-bench-{}", std::process::id()));
    let path = dir.join(".kiln/state.db");
    let result = run(&path, n);
    // Best effort: a leftover temp dir is harmless.
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(path: &std::path::Path, n: usize) -> Result<(), StateError> {
    let mut store = Store::open(path)?;
    let serial = store
        .begin_revision(&NewRevision {
            user: "bench".into(),
            command: "apply".into(),
            files_digest: "sha256:bench".into(),
            plan: json!({}),
        })?
        .serial;
    let ops: Vec<(String, String, Operation)> = (0..n)
        .map(|i| {
            (
                address(i),
                "docker.container".to_string(),
                Operation::Create,
            )
        })
        .collect();

    let t = Instant::now();
    let ids = store.begin_operations(serial, &ops)?;
    let begin = t.elapsed();

    let outcomes: Vec<(i64, OperationOutcome)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, OperationOutcome::Written(record(i))))
        .collect();
    let t = Instant::now();
    store.complete_operations(outcomes)?;
    let complete = t.elapsed();
    store.finish_revision(serial, RevisionStatus::Applied, json!({ "created": n }))?;

    let t = Instant::now();
    let all = store.resources()?;
    let read = t.elapsed();
    check_len(all.len(), n)?;

    // A cold read as a fresh `kiln apply` process would do it.
    drop(store);
    let t = Instant::now();
    let mut store = Store::open(path)?;
    let open = t.elapsed();
    let cold = store.resources()?;
    let cold_read = t.elapsed() - open;
    check_len(cold.len(), n)?;

    let unbatched = update_one_by_one(&mut store, n)?;

    println!("resources: {n}");
    println!("begin_operations (one tx):    {begin:?}");
    println!("complete_operations (one tx): {complete:?}");
    println!("resources() warm:             {read:?}");
    println!("Store::open (existing):       {open:?}");
    println!("resources() after reopen:     {cold_read:?}");
    println!("{n} x (begin_operation + complete_operation), one tx each: {unbatched:?}");
    Ok(())
}

/// The unbatched protocol: two transactions per resource.
fn update_one_by_one(store: &mut Store, n: usize) -> Result<std::time::Duration, StateError> {
    let serial = store
        .begin_revision(&NewRevision {
            user: "bench".into(),
            command: "apply".into(),
            files_digest: "sha256:bench2".into(),
            plan: json!({}),
        })?
        .serial;
    let t = Instant::now();
    for i in 0..n {
        let id =
            store.begin_operation(serial, &address(i), "docker.container", Operation::Update)?;
        store.complete_operation(id, OperationOutcome::Written(record(i)))?;
    }
    let took = t.elapsed();
    store.finish_revision(serial, RevisionStatus::Applied, json!({ "updated": n }))?;
    Ok(took)
}

fn address(i: usize) -> String {
    format!("service.app_{i:05}")
}

fn record(i: usize) -> ResourceRecordInput {
    ResourceRecordInput {
        address: address(i),
        kind: "docker.container".into(),
        attributes: json!({
            "image": "nginx:1.27",
            "name": format!("app-{i}"),
            "ports": [{"host": 8000 + (i % 1000), "container": 80}],
            "env": {"INDEX": i.to_string(), "MODE": "prod"},
            "labels": {"kiln.stack": "bench"},
        }),
        outputs: json!({ "id": format!("{i:064x}"), "ip": "10.0.0.1" }),
        private: json!({ "etag": i }),
        dependencies: vec!["network.default".into()],
    }
}

fn check_len(got: usize, want: usize) -> Result<(), StateError> {
    if got == want {
        Ok(())
    } else {
        Err(StateError::Corrupt(format!(
            "read {got} resources, wrote {want}"
        )))
    }
}
