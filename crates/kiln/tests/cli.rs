//! The whole cycle through the real binary: validate, plan, apply, drift, destroy, locks.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Scratch;

const STACK: &str = r#"
name: demo
vars: { team: platform }
resources:
  version:
    kind: exec
    create: "echo '{\"version\": \"1.2.3\"}'"
  motd:
    kind: file
    path: out/motd
    content: "hello ${{ vars.team }} v${{ resources.version.outputs.version }}"
"#;

#[test]
fn apply_then_plan_is_empty_and_destroy_leaves_nothing() {
    let s = Scratch::new(STACK);
    assert!(s.ok(&["validate"]).contains("valid (2 resources"));
    let counts = s.counts();
    assert_eq!(counts["create"], 2);
    s.ok(&["apply"]);
    assert_eq!(
        std::fs::read_to_string(s.file("out/motd")).unwrap(),
        "hello platform v1.2.3"
    );
    assert_eq!(s.counts()["no_op"], 2);
    assert!(s.ok(&["plan"]).contains("No changes"));
    s.ok(&["destroy"]);
    assert!(!s.file("out/motd").exists());
    assert!(s.state().is_empty());
    let history = s.ok(&["history", "--json"]);
    let revisions: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert_eq!(revisions.as_array().unwrap().len(), 2);
}

#[test]
fn drift_is_planned_with_its_reason_and_repaired() {
    let s = Scratch::new(STACK);
    s.ok(&["apply"]);
    std::fs::write(s.file("out/motd"), "edited by hand").unwrap();
    let plan = s.ok(&["plan"]);
    assert!(
        plan.contains("drift: content changed outside kiln"),
        "{plan}"
    );
    assert_eq!(s.counts()["update"], 1);
    s.ok(&["apply"]);
    assert_eq!(
        std::fs::read_to_string(s.file("out/motd")).unwrap(),
        "hello platform v1.2.3"
    );
    std::fs::remove_file(s.file("out/motd")).unwrap();
    assert!(s.ok(&["plan"]).contains("drift: deleted outside kiln"));
}

#[test]
fn changing_a_force_new_attribute_replaces_and_says_why() {
    let s = Scratch::new(STACK);
    s.ok(&["apply"]);
    std::fs::write(s.file("kiln.yaml"), STACK.replace("out/motd", "out/motd2")).unwrap();
    let plan = s.ok(&["plan"]);
    assert!(plan.contains("replace because `path` changed"), "{plan}");
    s.ok(&["apply"]);
    assert!(s.file("out/motd2").exists());
    assert!(!s.file("out/motd").exists());
}

#[test]
fn an_invalid_stack_exits_1_and_changes_nothing() {
    let s = Scratch::new("name: demo\nresources:\n  a: { kind: file, pth: x, content: y }\n");
    let out = s.run(&["apply"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kiln.yaml:3:20"), "{stderr}");
    assert!(stderr.contains("did you mean `path`?"), "{stderr}");
    assert!(!s.file(".kiln/state.db").exists() || s.state().is_empty());
}

#[test]
fn a_held_lock_names_its_holder_and_force_unlock_releases_it() {
    let s = Scratch::new(STACK);
    let mut store = kiln_state::Store::open_in_stack(s.path()).unwrap();
    // pid 1 is alive, so the lock is not stale.
    let info = store
        .acquire_lock(&kiln_state::LockHolder {
            who: "alice@elsewhere".into(),
            pid: 1,
            operation: "apply".into(),
        })
        .unwrap();
    drop(store);
    let out = s.run(&["apply"]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("alice@elsewhere") && stderr.contains(&info.id),
        "{stderr}"
    );
    s.ok(&["force-unlock", &info.id]);
    s.ok(&["apply"]);
}

#[test]
fn a_saved_plan_is_refused_once_the_state_moved_on() {
    let s = Scratch::new(STACK);
    let plan_file = s.file("plan.json");
    s.ok(&["plan", "--out", plan_file.to_str().unwrap()]);
    s.ok(&["apply", plan_file.to_str().unwrap()]);
    let out = s.run(&["apply", plan_file.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_failure_stops_its_dependents_but_not_its_siblings() {
    let s = Scratch::new(
        "name: demo\nresources:\n  bad: { kind: exec, create: \"echo boom >&2; exit 3\" }\n  child: { kind: file, path: out/child, content: \"${{ resources.bad.outputs.stdout }}\" }\n  sibling: { kind: file, path: out/sibling, content: ok }\n",
    );
    let out = s.run(&["apply"]);
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("resources.child: skipped because resources.bad failed"),
        "{stdout}"
    );
    assert!(s.file("out/sibling").exists());
    assert!(String::from_utf8_lossy(&out.stderr).contains("boom"));
    let state = s.state();
    assert!(state.contains(&"resources.sibling".to_owned()));
    assert!(!state.contains(&"resources.child".to_owned()));
}

#[test]
fn prevent_destroy_refuses_the_plan() {
    let s = Scratch::new(
        "name: demo\nresources:\n  keep: { kind: file, path: out/keep, content: x, lifecycle: { prevent_destroy: true } }\n",
    );
    s.ok(&["apply"]);
    let out = s.run(&["destroy"]);
    assert_eq!(out.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&out.stderr).contains("prevent_destroy"));
    assert!(s.file("out/keep").exists());
}

#[test]
fn targets_select_a_resource_and_what_it_needs() {
    let s = Scratch::new(&format!(
        "{STACK}  other: {{ kind: file, path: out/other, content: x }}\n"
    ));
    s.ok(&["apply", "--target", "resources.motd"]);
    assert!(s.file("out/motd").exists());
    assert!(!s.file("out/other").exists());
    assert_eq!(s.counts()["create"], 1);
}
