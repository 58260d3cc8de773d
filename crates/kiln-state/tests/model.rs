//! Model-based property test: random sequences of revisions and operations
//! run against the real store and against a plain `BTreeMap` model; after
//! every step the resources must match, the serial must not go down and the
//! event log must only grow (old events unchanged).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::BTreeMap;

use kiln_state::{
    Event, EventQuery, NewRevision, Operation, OperationOutcome, ResourceRecordInput,
    ResourceStatus, RevisionStatus, Store,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const ADDRESSES: &[&str] = &["a.one", "a.two", "b.one", "c.x", "z.last"];
const KINDS: &[&str] = &["docker.container", "docker.network", "file"];

#[derive(Debug, Clone)]
enum Outcome {
    Written(i64),
    Deleted,
    Failed { changed: bool },
}

#[derive(Debug, Clone)]
enum Step {
    /// Finish the current revision (if any) and start a new one.
    NewRevision {
        finish_as: RevisionStatus,
    },
    Begin {
        addr: usize,
        kind: usize,
        op: Operation,
    },
    /// Complete the pending operation at index `pick % len`.
    Complete {
        pick: usize,
        outcome: Outcome,
    },
    /// Complete every pending operation in one batch.
    CompleteAll {
        outcomes: Vec<Outcome>,
    },
    Recover,
    SetStatus {
        addr: usize,
        tainted: bool,
    },
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => (0i64..100).prop_map(Outcome::Written),
        1 => Just(Outcome::Deleted),
        1 => any::<bool>().prop_map(|changed| Outcome::Failed { changed }),
    ]
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        Just(Operation::Create),
        Just(Operation::Update),
        Just(Operation::Replace),
        Just(Operation::Delete),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let finish = prop_oneof![
        Just(RevisionStatus::Applied),
        Just(RevisionStatus::Failed),
        Just(RevisionStatus::Interrupted),
    ];
    prop_oneof![
        1 => finish.prop_map(|finish_as| Step::NewRevision { finish_as }),
        4 => (0..ADDRESSES.len(), 0..KINDS.len(), operation())
            .prop_map(|(addr, kind, op)| Step::Begin { addr, kind, op }),
        4 => (any::<usize>(), outcome()).prop_map(|(pick, outcome)| Step::Complete { pick, outcome }),
        1 => prop::collection::vec(outcome(), 0..6).prop_map(|outcomes| Step::CompleteAll { outcomes }),
        1 => Just(Step::Recover),
        1 => (0..ADDRESSES.len(), any::<bool>()).prop_map(|(addr, tainted)| Step::SetStatus { addr, tainted }),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct ModelResource {
    kind: String,
    attributes: Value,
    status: ResourceStatus,
    serial: u64,
}

#[derive(Debug, Clone)]
struct PendingModel {
    id: i64,
    address: String,
    kind: String,
    serial: u64,
}

#[derive(Debug, Default)]
struct Model {
    resources: BTreeMap<String, ModelResource>,
    pending: Vec<PendingModel>,
    current: Option<u64>,
    last_serial: u64,
}

impl Model {
    fn taint(&mut self, op: &PendingModel) {
        let entry = self
            .resources
            .entry(op.address.clone())
            .or_insert_with(|| ModelResource {
                kind: op.kind.clone(),
                attributes: json!({}),
                status: ResourceStatus::Tainted,
                serial: op.serial,
            });
        entry.status = ResourceStatus::Tainted;
        entry.serial = op.serial;
    }

    fn complete(&mut self, op: &PendingModel, outcome: &Outcome) {
        match outcome {
            Outcome::Written(n) => {
                self.resources.insert(
                    op.address.clone(),
                    ModelResource {
                        kind: op.kind.clone(),
                        attributes: attributes(*n),
                        status: ResourceStatus::Ready,
                        serial: op.serial,
                    },
                );
            }
            Outcome::Deleted => {
                self.resources.remove(&op.address);
            }
            Outcome::Failed { changed: true } => self.taint(op),
            Outcome::Failed { changed: false } => {}
        }
    }
}

fn attributes(n: i64) -> Value {
    json!({ "n": n, "nested": { "list": [n, n + 1] } })
}

fn to_store_outcome(op: &PendingModel, outcome: &Outcome) -> OperationOutcome {
    match outcome {
        Outcome::Written(n) => OperationOutcome::Written(ResourceRecordInput {
            address: op.address.clone(),
            kind: op.kind.clone(),
            attributes: attributes(*n),
            outputs: json!({ "id": n }),
            private: Value::Null,
            dependencies: vec![],
        }),
        Outcome::Deleted => OperationOutcome::Deleted,
        Outcome::Failed { changed } => OperationOutcome::Failed {
            message: "provider said no".into(),
            changed: *changed,
        },
    }
}

fn ensure_revision(store: &mut Store, model: &mut Model) -> u64 {
    if let Some(serial) = model.current {
        return serial;
    }
    let rev = store
        .begin_revision(&NewRevision {
            user: "prop".into(),
            command: "apply".into(),
            files_digest: "d".into(),
            plan: Value::Null,
        })
        .unwrap();
    assert_eq!(rev.serial, model.last_serial + 1);
    model.last_serial = rev.serial;
    model.current = Some(rev.serial);
    rev.serial
}

fn run_step(store: &mut Store, model: &mut Model, step: &Step) {
    match step {
        Step::NewRevision { finish_as } => {
            if let Some(serial) = model.current.take() {
                store
                    .finish_revision(serial, *finish_as, json!({}))
                    .unwrap();
            }
            ensure_revision(store, model);
        }
        Step::Begin { addr, kind, op } => {
            let serial = ensure_revision(store, model);
            let (address, kind) = (ADDRESSES[*addr], KINDS[*kind]);
            let id = store.begin_operation(serial, address, kind, *op).unwrap();
            model.pending.push(PendingModel {
                id,
                address: address.into(),
                kind: kind.into(),
                serial,
            });
        }
        Step::Complete { pick, outcome } => {
            if model.pending.is_empty() {
                return;
            }
            let op = model.pending.remove(pick % model.pending.len());
            store
                .complete_operation(op.id, to_store_outcome(&op, outcome))
                .unwrap();
            model.complete(&op, outcome);
        }
        Step::CompleteAll { outcomes } => {
            let ops: Vec<PendingModel> = model.pending.drain(..).collect();
            let fallback = Outcome::Deleted;
            let batch: Vec<_> = ops
                .iter()
                .enumerate()
                .map(|(i, op)| {
                    let o = outcomes.get(i).unwrap_or(&fallback);
                    (op.id, to_store_outcome(op, o))
                })
                .collect();
            store.complete_operations(batch).unwrap();
            for (i, op) in ops.iter().enumerate() {
                model.complete(op, outcomes.get(i).unwrap_or(&fallback));
            }
        }
        Step::Recover => {
            let recovered = store.recover_pending().unwrap();
            let ids: Vec<i64> = recovered.iter().map(|p| p.id).collect();
            let expected: Vec<i64> = model.pending.iter().map(|p| p.id).collect();
            assert_eq!(ids, expected);
            for op in std::mem::take(&mut model.pending) {
                model.taint(&op);
            }
        }
        Step::SetStatus { addr, tainted } => {
            let address = ADDRESSES[*addr];
            let status = if *tainted {
                ResourceStatus::Tainted
            } else {
                ResourceStatus::Ready
            };
            let result = store.set_resource_status(address, status);
            match model.resources.get_mut(address) {
                Some(r) => {
                    result.unwrap();
                    r.status = status;
                }
                None => assert!(result.is_err()),
            }
        }
    }
}

fn all_events(store: &Store) -> Vec<Event> {
    store
        .events(&EventQuery {
            after_id: None,
            address: None,
            limit: usize::MAX,
        })
        .unwrap()
}

fn check(store: &Store, model: &Model, events_before: &[Event], serial_before: u64) -> Vec<Event> {
    let actual: BTreeMap<String, ModelResource> = store
        .resources()
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.address,
                ModelResource {
                    kind: r.kind,
                    attributes: r.attributes,
                    status: r.status,
                    serial: r.serial,
                },
            )
        })
        .collect();
    assert_eq!(actual, model.resources);

    let serial = store.serial().unwrap();
    assert!(serial >= serial_before);
    assert_eq!(serial, model.last_serial);

    let pending: Vec<i64> = store
        .pending_operations()
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(
        pending,
        model.pending.iter().map(|p| p.id).collect::<Vec<_>>()
    );

    let events = all_events(store);
    assert!(events.len() >= events_before.len());
    assert_eq!(&events[..events_before.len()], events_before);
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    events
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(steps in prop::collection::vec(step(), 1..40)) {
        let mut store = Store::open_in_memory().unwrap();
        let mut model = Model::default();
        let mut events = Vec::new();
        let mut serial = 0;
        for step in &steps {
            run_step(&mut store, &mut model, step);
            events = check(&store, &model, &events, serial);
            serial = store.serial().unwrap();
        }
    }
}
