//! The attribute-level comparison of one resource.

use sha2::{Digest, Sha256};

use crate::{Action, AttrChange, Change, Desired, Observed, Recorded};

/// Longest value shown in full in a plan.
const SHOW_MAX: usize = 120;

/// The digest kept instead of a sensitive value: `sha256:<hex>`.
pub fn digest_value(value: &serde_json::Value) -> serde_json::Value {
    let bytes = match value {
        serde_json::Value::String(s) => s.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    };
    serde_json::Value::String(format!("sha256:{}", hex::encode(Sha256::digest(&bytes))))
}

/// A value as a plan shows it: JSON, shortened when long.
pub fn shown_value(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= SHOW_MAX {
        return text;
    }
    let head: String = text.chars().take(SHOW_MAX - 20).collect();
    format!("{head}… ({} bytes)", text.len())
}

const SENSITIVE: &str = "(sensitive)";
/// How a value known only after apply is shown.
pub const UNKNOWN: &str = "(known after apply)";

fn show(value: &serde_json::Value, sensitive: bool) -> String {
    if sensitive {
        SENSITIVE.into()
    } else {
        shown_value(value)
    }
}

/// A resource that is no longer wanted.
pub fn delete(recorded: &Recorded, why: &str) -> Change {
    Change {
        address: recorded.address.clone(),
        kind: recorded.kind.clone(),
        action: Action::Delete,
        reasons: vec![why.into()],
        attrs: Vec::new(),
        create_before_destroy: false,
        after: Vec::new(),
    }
}

/// The change for a desired resource.
pub fn resource(
    desired: &Desired,
    recorded: Option<&Recorded>,
    observed: Option<&Observed>,
) -> Change {
    let mut change = Change {
        address: desired.address.clone(),
        kind: desired.kind.clone(),
        action: Action::NoOp,
        reasons: Vec::new(),
        attrs: Vec::new(),
        create_before_destroy: desired.lifecycle.create_before_destroy,
        after: Vec::new(),
    };
    let Some(recorded) = recorded else {
        change.action = Action::Create;
        change.attrs = creation_attrs(desired);
        return change;
    };
    if recorded.kind != desired.kind {
        change.action = Action::Replace;
        change.reasons.push(format!(
            "replace because the kind changed from `{}` to `{}`",
            recorded.kind, desired.kind
        ));
        change.attrs = creation_attrs(desired);
        return change;
    }
    if matches!(observed, Some(Observed::Absent)) {
        change.action = Action::Create;
        change.reasons.push("drift: deleted outside kiln".into());
        change.attrs = creation_attrs(desired);
        return change;
    }
    if recorded.tainted {
        change.action = Action::Replace;
        change
            .reasons
            .push("replace because an earlier operation on it was interrupted (tainted)".into());
        change.attrs = creation_attrs(desired);
        return change;
    }
    let schema = kiln_spec::schema::kind(&desired.kind);
    let ignored = |name: &str| desired.lifecycle.ignore_changes.iter().any(|i| i == name);
    let mut force = Vec::new();
    let mut names: Vec<&String> = desired
        .attrs
        .keys()
        .chain(desired.unknown.iter())
        .chain(recorded.attrs.keys())
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        if ignored(name) {
            continue;
        }
        let sensitive = desired.sensitive.contains(name);
        let before = recorded.attrs.get(name);
        let forces = schema
            .and_then(|s| s.attr(name))
            .is_some_and(|a| a.force_new);
        let after_shown = if desired.unknown.contains(name) {
            Some(UNKNOWN.to_owned())
        } else if let Some(after) = desired.attrs.get(name) {
            let compared = if sensitive {
                digest_value(after)
            } else {
                after.clone()
            };
            if before == Some(&compared) {
                continue;
            }
            Some(show(after, sensitive))
        } else if before.is_none() {
            continue;
        } else {
            None
        };
        let before_sensitive = before
            .and_then(|b| b.as_str())
            .is_some_and(|s| s.starts_with("sha256:"))
            && sensitive;
        change.attrs.push(AttrChange {
            name: name.clone(),
            before: before.map(|b| show(b, before_sensitive)),
            after: after_shown,
            forces_replacement: forces,
        });
        if forces {
            force.push(name.clone());
        }
    }
    if let Some(Observed::Drifted(drift)) = observed {
        for (name, reason) in drift {
            if ignored(name) {
                continue;
            }
            change.reasons.push(format!("drift: {reason}"));
            if !change.attrs.iter().any(|a| &a.name == name) {
                let value = desired.attrs.get(name);
                change.attrs.push(AttrChange {
                    name: name.clone(),
                    before: Some("(changed outside kiln)".into()),
                    after: value.map(|v| show(v, desired.sensitive.contains(name))),
                    forces_replacement: false,
                });
            }
        }
    }
    if change.attrs.is_empty() {
        return change;
    }
    if !force.is_empty() {
        change.action = Action::Replace;
        let names: Vec<String> = force.iter().map(|n| format!("`{n}`")).collect();
        change
            .reasons
            .insert(0, format!("replace because {} changed", names.join(", ")));
        return change;
    }
    if let Some(required) = schema.and_then(|s| s.in_place_requires)
        && !desired.attrs.contains_key(required)
        && !desired.unknown.contains(required)
    {
        change.action = Action::Replace;
        let names: Vec<String> = change
            .attrs
            .iter()
            .map(|a| format!("`{}`", a.name))
            .collect();
        change.reasons.insert(
            0,
            format!(
                "replace because {} changed and there is no `{required}` to change it in place",
                names.join(", ")
            ),
        );
        return change;
    }
    change.action = Action::Update;
    if change.reasons.is_empty() {
        let names: Vec<String> = change
            .attrs
            .iter()
            .map(|a| format!("`{}`", a.name))
            .collect();
        change
            .reasons
            .push(format!("update because {} changed", names.join(", ")));
    }
    change
}

fn creation_attrs(desired: &Desired) -> Vec<AttrChange> {
    let mut out: Vec<AttrChange> = desired
        .attrs
        .iter()
        .map(|(name, v)| AttrChange {
            name: name.clone(),
            before: None,
            after: Some(show(v, desired.sensitive.contains(name))),
            forces_replacement: false,
        })
        .collect();
    out.extend(desired.unknown.iter().map(|name| AttrChange {
        name: name.clone(),
        before: None,
        after: Some(UNKNOWN.into()),
        forces_replacement: false,
    }));
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
