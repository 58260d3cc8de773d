//! The planner: given what the files declare, what the state recorded and what the providers
//! observed, decide for every resource whether to create, update in place, replace, delete or
//! leave it, with the attribute-level diff and the reason.
//!
//! **Architecture invariant:** pure and deterministic. No I/O, no clock, no randomness; the
//! same inputs give the same plan, byte for byte, whatever the order of the inputs.

mod diff;
mod order;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use diff::{UNKNOWN, digest_value, resource as change_for, shown_value};

/// A resource as the files declare it, after evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Its address.
    pub address: String,
    /// Its kind.
    pub kind: String,
    /// Evaluated attributes (sensitive ones in clear; the planner hashes them).
    pub attrs: serde_json::Map<String, serde_json::Value>,
    /// Attributes known only after apply.
    pub unknown: BTreeSet<String>,
    /// Attributes derived from secrets.
    pub sensitive: BTreeSet<String>,
    /// Addresses it depends on.
    pub depends_on: BTreeSet<String>,
    /// Lifecycle rules.
    pub lifecycle: kiln_spec::model::Lifecycle,
}

/// A resource as the state recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// Its address.
    pub address: String,
    /// Its kind.
    pub kind: String,
    /// Recorded attributes (sensitive ones as `sha256:` digests).
    pub attrs: serde_json::Map<String, serde_json::Value>,
    /// Addresses it depended on when applied (deletes run in reverse of these).
    pub depends_on: BTreeSet<String>,
    /// An operation on it was interrupted: what exists is unknown.
    pub tainted: bool,
    /// `prevent_destroy` as recorded, so a resource removed from the files stays protected.
    pub prevent_destroy: bool,
}

/// What refreshing found for a recorded resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Observed {
    /// It is gone.
    Absent,
    /// It exists; these attributes drifted, each with a reason.
    Drifted(Vec<(String, String)>),
    /// It exists as recorded.
    Unchanged,
}

/// What happens to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Nothing.
    NoOp,
    /// Created.
    Create,
    /// Changed in place.
    Update,
    /// Destroyed and created again.
    Replace,
    /// Destroyed.
    Delete,
}

impl Action {
    /// The symbol in front of a change, as `terraform plan` prints it.
    pub fn symbol(self) -> &'static str {
        match self {
            Action::NoOp => " ",
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
        }
    }
}

/// One attribute's before and after, as shown to the user (secrets never in clear).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrChange {
    /// The attribute.
    pub name: String,
    /// Value before, if any (`(sensitive)` for secrets).
    pub before: Option<String>,
    /// Value after, if any (`(known after apply)` when not known yet).
    pub after: Option<String>,
    /// This change forces a replacement.
    pub forces_replacement: bool,
}

/// The change to one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The resource.
    pub address: String,
    /// Its kind.
    pub kind: String,
    /// What happens.
    pub action: Action,
    /// Why, in sentences ("replace because `path` changed").
    pub reasons: Vec<String>,
    /// Attribute-level diff.
    pub attrs: Vec<AttrChange>,
    /// Replacement order: create the new one first.
    pub create_before_destroy: bool,
    /// Addresses this change must wait for.
    pub after: Vec<String>,
}

/// The plan: every resource's change in a dependency-respecting, deterministic order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Changes, no-ops included, in execution order.
    pub changes: Vec<Change>,
}

/// How many of each action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Created.
    pub create: usize,
    /// Updated in place.
    pub update: usize,
    /// Replaced.
    pub replace: usize,
    /// Deleted.
    pub delete: usize,
    /// Unchanged.
    pub no_op: usize,
}

impl Plan {
    /// Counts by action.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for change in &self.changes {
            match change.action {
                Action::Create => c.create += 1,
                Action::Update => c.update += 1,
                Action::Replace => c.replace += 1,
                Action::Delete => c.delete += 1,
                Action::NoOp => c.no_op += 1,
            }
        }
        c
    }

    /// True when applying would change nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.iter().all(|c| c.action == Action::NoOp)
    }
}

/// What to plan.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Plan the destruction of everything recorded.
    pub destroy: bool,
    /// Only these addresses (and what they depend on; for destroy, what depends on them).
    pub targets: Vec<String>,
    /// Leave these addresses (and what depends on them) alone.
    pub excludes: Vec<String>,
    /// Only the targets themselves: what they depend on keeps its recorded state (how
    /// `kiln deploy` changes one service and nothing else).
    pub only: bool,
}

/// A plan that must not be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The plan would destroy a resource that has `prevent_destroy`.
    #[error("{address} has lifecycle.prevent_destroy set, but the plan would {action} it")]
    PreventDestroy {
        /// The protected resource.
        address: String,
        /// "destroy" or "replace".
        action: &'static str,
    },
    /// A `--target` or `--exclude` names nothing.
    #[error("`{address}` matches no resource")]
    UnknownTarget {
        /// What was given.
        address: String,
    },
}

/// Plans every resource.
pub fn plan(
    desired: &[Desired],
    recorded: &[Recorded],
    observed: &BTreeMap<String, Observed>,
    options: &Options,
) -> Result<Plan, Vec<PlanError>> {
    let recorded_by: BTreeMap<&str, &Recorded> =
        recorded.iter().map(|r| (r.address.as_str(), r)).collect();
    let desired_by: BTreeMap<&str, &Desired> =
        desired.iter().map(|d| (d.address.as_str(), d)).collect();
    let mut changes: BTreeMap<String, Change> = BTreeMap::new();
    if options.destroy {
        for r in recorded {
            changes.insert(r.address.clone(), diff::delete(r, "destroy requested"));
        }
    } else {
        for d in desired {
            let change = diff::resource(
                d,
                recorded_by.get(d.address.as_str()).copied(),
                observed.get(&d.address),
            );
            changes.insert(d.address.clone(), change);
        }
        for r in recorded
            .iter()
            .filter(|r| !desired_by.contains_key(r.address.as_str()))
        {
            changes.insert(
                r.address.clone(),
                diff::delete(r, "no longer in the stack files"),
            );
        }
    }
    propagate_unknowns(&mut changes, &desired_by);
    let mut errors = select(&mut changes, &desired_by, &recorded_by, options);
    let ordered = order::execution_order(changes, &desired_by, &recorded_by);
    for change in &ordered {
        let protected = desired_by
            .get(change.address.as_str())
            .map(|d| d.lifecycle.prevent_destroy)
            .or_else(|| {
                recorded_by
                    .get(change.address.as_str())
                    .map(|r| r.prevent_destroy)
            })
            .unwrap_or(false);
        let action = match change.action {
            Action::Delete => "destroy",
            Action::Replace => "replace",
            _ => continue,
        };
        if protected {
            errors.push(PlanError::PreventDestroy {
                address: change.address.clone(),
                action,
            });
        }
    }
    if errors.is_empty() {
        Ok(Plan { changes: ordered })
    } else {
        Err(errors)
    }
}

/// A resource that reads another which is being created, updated or replaced cannot know its
/// values yet; those attributes were marked unknown by the evaluator. Nothing to do here but
/// make sure a resource with unknown attributes is at least an update.
fn propagate_unknowns(changes: &mut BTreeMap<String, Change>, desired: &BTreeMap<&str, &Desired>) {
    for change in changes.values_mut() {
        let Some(d) = desired.get(change.address.as_str()) else {
            continue;
        };
        if change.action == Action::NoOp && !d.unknown.is_empty() {
            change.action = Action::Update;
            change
                .reasons
                .push("reads values known only after apply".into());
        }
    }
}

/// Applies `--target` and `--exclude`: unselected changes become no-ops.
fn select(
    changes: &mut BTreeMap<String, Change>,
    desired: &BTreeMap<&str, &Desired>,
    recorded: &BTreeMap<&str, &Recorded>,
    options: &Options,
) -> Vec<PlanError> {
    let mut errors = Vec::new();
    for address in options.targets.iter().chain(&options.excludes) {
        if !changes.contains_key(address)
            && !changes
                .keys()
                .any(|a| a.starts_with(&format!("{address}.")))
        {
            errors.push(PlanError::UnknownTarget {
                address: address.clone(),
            });
        }
    }
    if options.targets.is_empty() && options.excludes.is_empty() {
        return errors;
    }
    let deps = |a: &str| -> Vec<String> {
        desired
            .get(a)
            .map(|d| d.depends_on.iter().cloned().collect())
            .or_else(|| {
                recorded
                    .get(a)
                    .map(|r| r.depends_on.iter().cloned().collect())
            })
            .unwrap_or_default()
    };
    let mut dependents: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in changes.keys() {
        for dep in deps(a) {
            dependents.entry(dep).or_default().push(a.clone());
        }
    }
    let matches = |set: &[String], a: &str| {
        set.iter()
            .any(|t| a == t || a.starts_with(&format!("{t}.")))
    };
    let keys: Vec<String> = changes.keys().cloned().collect();
    let mut selected: BTreeSet<String> = if options.targets.is_empty() {
        keys.iter().cloned().collect()
    } else {
        let roots: Vec<String> = keys
            .iter()
            .filter(|a| matches(&options.targets, a))
            .cloned()
            .collect();
        // Applying a target applies what it needs; destroying a target destroys what needs it.
        if options.only {
            roots.into_iter().collect()
        } else if options.destroy {
            closure(roots, |a| dependents.get(a).cloned().unwrap_or_default())
        } else {
            closure(roots, |a| deps(a))
        }
    };
    let excluded_roots: Vec<String> = keys
        .iter()
        .filter(|a| matches(&options.excludes, a))
        .cloned()
        .collect();
    for a in closure(excluded_roots, |a| {
        dependents.get(a).cloned().unwrap_or_default()
    }) {
        selected.remove(&a);
    }
    for (address, change) in changes.iter_mut() {
        if !selected.contains(address) && change.action != Action::NoOp {
            change.action = Action::NoOp;
            change.reasons = vec!["not selected by --target/--exclude".into()];
            change.attrs.clear();
        }
    }
    errors
}

fn closure(roots: Vec<String>, next: impl Fn(&str) -> Vec<String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = roots;
    while let Some(a) = stack.pop() {
        if seen.insert(a.clone()) {
            stack.extend(next(&a));
        }
    }
    seen
}
