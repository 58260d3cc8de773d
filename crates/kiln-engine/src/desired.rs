//! Desired state: the stack's resources evaluated against what is known now.
//!
//! Resources are evaluated in dependency order; one whose change is pending makes the values
//! that read it "known after apply", exactly as the executor will later see them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use kiln_plan::{Action, Desired, Observed, Recorded};
use kiln_spec::Stack;
use kiln_spec::eval::{self, EvalFailure, Known};

/// The values evaluation reads from outside the files.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Variables: declared defaults with command-line overrides applied.
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Secret values in clear text.
    pub secrets: BTreeMap<String, String>,
    /// Environment variables visible to expressions.
    pub env: BTreeMap<String, String>,
    /// Directory that template paths are relative to.
    pub root: PathBuf,
    /// Attribute values that replace the evaluated ones for this run, by address: how
    /// `kiln rollback` and `kiln deploy --release` run another release than the tree's.
    pub overrides: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
}

/// Evaluation context over fixed inputs and the outputs known so far.
#[derive(Debug)]
pub struct Knowledge<'a> {
    /// Outside inputs.
    pub inputs: &'a Inputs,
    /// What is known of each resource.
    pub resources: &'a BTreeMap<String, Known>,
}

impl eval::Context for Knowledge<'_> {
    fn var(&self, name: &str) -> Option<serde_json::Value> {
        self.inputs.vars.get(name).cloned()
    }
    fn secret(&self, name: &str) -> Option<String> {
        self.inputs.secrets.get(name).cloned()
    }
    fn env(&self, name: &str) -> Option<String> {
        self.inputs.env.get(name).cloned()
    }
    fn resource(&self, address: &str) -> Known {
        self.resources
            .get(address)
            .cloned()
            .unwrap_or(Known::Unknown)
    }
}

/// What the state recorded of a resource, as evaluation sees it.
pub fn known_from(record: &kiln_state::ResourceRecord) -> Known {
    Known::Known {
        attributes: record.attributes.as_object().cloned().unwrap_or_default(),
        outputs: record.outputs.as_object().cloned().unwrap_or_default(),
        sensitive: false,
    }
}

/// The plan's view of a recorded resource.
pub fn recorded_from(record: &kiln_state::ResourceRecord) -> Recorded {
    Recorded {
        address: record.address.clone(),
        kind: record.kind.clone(),
        attrs: record.attributes.as_object().cloned().unwrap_or_default(),
        depends_on: record.dependencies.iter().cloned().collect(),
        tainted: record.status == kiln_state::ResourceStatus::Tainted,
        prevent_destroy: record
            .private
            .pointer("/lifecycle/prevent_destroy")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
    }
}

/// Evaluates one resource against the given knowledge.
pub fn evaluate_one(
    stack: &Stack,
    address: &str,
    knowledge: &Knowledge<'_>,
) -> Result<Desired, Vec<EvalFailure>> {
    let Some(resource) = stack.resources.get(address) else {
        return Err(vec![EvalFailure {
            address: address.to_owned(),
            attribute: String::new(),
            message: "not in the stack".into(),
        }]);
    };
    let mut evaluated = eval::evaluate_resource(stack, resource, knowledge)?;
    if let Some(overrides) = knowledge.inputs.overrides.get(address) {
        for (name, value) in overrides {
            evaluated.attrs.insert(name.clone(), value.clone());
        }
    }
    Ok(Desired {
        address: resource.address.clone(),
        kind: resource.kind.clone(),
        attrs: evaluated.attrs,
        unknown: evaluated.unknown,
        sensitive: evaluated.sensitive,
        depends_on: resource.depends_on.keys().cloned().collect(),
        lifecycle: resource.lifecycle.clone(),
    })
}

/// Evaluates every resource in dependency order, marking as unknown whatever reads a resource
/// that this plan will change.
pub fn evaluate_all(
    stack: &Stack,
    inputs: &Inputs,
    records: &BTreeMap<String, kiln_state::ResourceRecord>,
    observed: &BTreeMap<String, Observed>,
) -> Result<Vec<Desired>, Vec<EvalFailure>> {
    let mut known: BTreeMap<String, Known> = BTreeMap::new();
    let mut out = Vec::with_capacity(stack.resources.len());
    let mut failures = Vec::new();
    for address in dependency_order(stack) {
        let knowledge = Knowledge {
            inputs,
            resources: &known,
        };
        match evaluate_one(stack, &address, &knowledge) {
            Ok(desired) => {
                let record = records.get(&address);
                let recorded = record.map(recorded_from);
                let change =
                    kiln_plan::change_for(&desired, recorded.as_ref(), observed.get(&address));
                let state = match (change.action, record) {
                    (Action::NoOp, Some(r)) => known_from(r),
                    _ => Known::Unknown,
                };
                known.insert(address.clone(), state);
                out.push(desired);
            }
            Err(mut f) => {
                known.insert(address.clone(), Known::Unknown);
                failures.append(&mut f);
            }
        }
    }
    if failures.is_empty() {
        Ok(out)
    } else {
        Err(failures)
    }
}

/// Addresses with dependencies first (the spec guarantees there is no cycle).
pub fn dependency_order(stack: &Stack) -> Vec<String> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::with_capacity(stack.resources.len());
    for start in stack.resources.keys() {
        let mut stack_walk: Vec<(&str, bool)> = vec![(start.as_str(), false)];
        while let Some((address, expanded)) = stack_walk.pop() {
            if done.contains(address) {
                continue;
            }
            if expanded {
                done.insert(address);
                out.push(address.to_owned());
                continue;
            }
            stack_walk.push((address, true));
            if let Some(r) = stack.resources.get(address) {
                for dep in r.depends_on.keys().rev() {
                    if !done.contains(dep.as_str()) {
                        stack_walk.push((dep.as_str(), false));
                    }
                }
            }
        }
    }
    out
}
