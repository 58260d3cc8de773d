//! SIGKILL in the middle of an apply of 200 resources: the next plan shows only the unfinished
//! work, and a second apply completes it.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Scratch, wait_until};

fn stack(n: usize) -> String {
    let mut yaml = String::from("name: crash\nresources:\n");
    for i in 0..n {
        yaml.push_str(&format!("  r{i:03}: {{ kind: exec, create: \"sleep 0.02; echo '{{\\\"n\\\": {i}}}'\", destroy: \"true\" }}\n"));
    }
    yaml
}

fn recorded(s: &Scratch) -> usize {
    kiln_state::Store::open_in_stack(s.path())
        .and_then(|st| st.resource_count())
        .map_or(0, |n| n as usize)
}

#[test]
fn sigkill_during_apply_leaves_a_true_state_and_a_second_apply_finishes() {
    let s = Scratch::new(&stack(200));
    let mut child = s
        .command(&["apply", "--parallelism", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || recorded(&s) >= 40),
        "the apply never got going"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();

    let done = recorded(&s);
    assert!((40..200).contains(&done), "{done} recorded");
    let counts = s.counts();
    let unchanged = counts["no_op"].as_u64().unwrap() as usize;
    let create = counts["create"].as_u64().unwrap() as usize;
    let replace = counts["replace"].as_u64().unwrap() as usize;
    // Interrupted operations are tainted and replaced; everything finished is left alone.
    assert_eq!(unchanged + create + replace, 200, "{counts}");
    assert!(
        replace <= 4,
        "at most the in-flight operations are uncertain: {counts}"
    );
    assert_eq!(
        unchanged + replace,
        done,
        "every recorded resource is either finished or uncertain: {counts}"
    );
    assert!(create > 0);

    s.ok(&["apply"]);
    let after = s.counts();
    assert_eq!(after["no_op"], 200, "{after}");
    let history = s.ok(&["history", "--json"]);
    let revisions: serde_json::Value = serde_json::from_str(&history).unwrap();
    let statuses: Vec<&str> = revisions
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["applied", "interrupted"]);
}
