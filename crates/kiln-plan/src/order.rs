//! Execution order: dependencies before dependents for creates and updates, dependents before
//! dependencies for deletes; ties broken by address so the order is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Action, Change, Desired, Recorded};

/// Fills in each change's `after` list and returns the changes in a valid execution order.
pub fn execution_order(
    mut changes: BTreeMap<String, Change>,
    desired: &BTreeMap<&str, &Desired>,
    recorded: &BTreeMap<&str, &Recorded>,
) -> Vec<Change> {
    let acting = |a: &str, changes: &BTreeMap<String, Change>| {
        changes.get(a).is_some_and(|c| c.action != Action::NoOp)
    };
    let mut waits: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (address, change) in &changes {
        let mut after = BTreeSet::new();
        match change.action {
            Action::Delete => {
                // Everything recorded as depending on this one, and going away too, goes first.
                for (other, r) in recorded {
                    if r.depends_on.contains(address)
                        && changes
                            .get(*other)
                            .is_some_and(|c| c.action == Action::Delete)
                    {
                        after.insert((*other).to_owned());
                    }
                }
            }
            _ => {
                if let Some(d) = desired.get(address.as_str()) {
                    for dep in &d.depends_on {
                        if acting(dep, &changes)
                            && changes.get(dep).is_some_and(|c| c.action != Action::Delete)
                        {
                            after.insert(dep.clone());
                        }
                    }
                }
            }
        }
        waits.insert(address.clone(), after);
    }
    for (address, after) in &waits {
        if let Some(c) = changes.get_mut(address) {
            c.after = after.iter().cloned().collect();
        }
    }
    kahn(&waits)
        .into_iter()
        .filter_map(|a| changes.remove(&a))
        .collect()
}

/// Kahn's algorithm with an ordered ready set; anything left in a cycle comes last, by address.
fn kahn(waits: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut remaining: BTreeMap<&str, usize> = waits
        .iter()
        .map(|(a, w)| {
            (
                a.as_str(),
                w.iter().filter(|d| waits.contains_key(*d)).count(),
            )
        })
        .collect();
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, w) in waits {
        for d in w.iter().filter(|d| waits.contains_key(*d)) {
            dependents.entry(d.as_str()).or_default().push(a.as_str());
        }
    }
    let mut ready: BTreeSet<&str> = remaining
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(a, _)| *a)
        .collect();
    let mut out = Vec::with_capacity(waits.len());
    while let Some(a) = ready.pop_first() {
        out.push(a.to_owned());
        remaining.remove(a);
        for d in dependents.get(a).into_iter().flatten() {
            if let Some(n) = remaining.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    ready.insert(d);
                }
            }
        }
    }
    out.extend(remaining.keys().map(|a| (*a).to_owned()));
    out
}
