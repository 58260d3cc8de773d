//! For random resource graphs: apply, then plan reports no changes; destroy leaves nothing.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Scratch;
use proptest::prelude::*;

/// A random DAG: resource i may read the outputs of any j < i.
fn stacks() -> impl Strategy<Value = String> {
    (1usize..10)
        .prop_flat_map(|n| {
            let kinds = proptest::collection::vec(any::<bool>(), n);
            let edges = proptest::collection::vec(proptest::collection::vec(any::<bool>(), n), n);
            (Just(n), kinds, edges)
        })
        .prop_map(|(n, is_file, edges)| {
            let mut yaml = String::from("name: prop\nresources:\n");
            for i in 0..n {
                let reads: Vec<String> = (0..i)
                    .filter(|&j| edges[i][j])
                    .map(|j| if is_file[j] { format!("${{{{ resources.r{j}.outputs.sha256 }}}}") } else { format!("${{{{ resources.r{j}.outputs.value }}}}") })
                    .collect();
                let input = format!("r{i}:{}", reads.join(","));
                if is_file[i] {
                    yaml.push_str(&format!("  r{i}: {{ kind: file, path: out/r{i}, content: \"{input}\" }}\n"));
                } else {
                    yaml.push_str(&format!(
                        "  r{i}:\n    kind: exec\n    create: \"echo '{{\\\"value\\\": \\\"v{i}\\\"}}'\"\n    input: \"{input}\"\n"
                    ));
                }
            }
            yaml
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn apply_then_plan_is_empty_and_destroy_leaves_nothing(stack in stacks()) {
        let s = Scratch::new(&stack);
        s.ok(&["apply", "--parallelism", "4"]);
        let counts = s.counts();
        let total = stack.matches("  r").count();
        prop_assert_eq!(counts["no_op"].as_u64(), Some(total as u64), "{}", stack);
        prop_assert_eq!(counts["create"].as_u64(), Some(0));
        s.ok(&["destroy"]);
        prop_assert!(s.state().is_empty());
        let out = s.file("out");
        let left = std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0);
        prop_assert_eq!(left, 0, "files left in {:?}", out);
    }
}
