//! Cheap architecture checks: every file explains itself, and the engine stays out of the
//! world's way (the spec model in, `Actions` and `Progress` out).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic

use std::path::Path;

#[test]
fn every_file_starts_with_a_module_doc() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["src", "tests"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    text.starts_with("//!"),
                    "{} has no module doc",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn the_engine_depends_on_the_spec_alone_of_kiln_and_touches_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let deps = manifest.split("[dependencies]").nth(1).unwrap();
    let deps = deps.split("\n[").next().unwrap();
    let kiln: Vec<&str> = deps
        .lines()
        .filter_map(|l| l.split(['.', ' ', '=']).next())
        .filter(|name| name.starts_with("kiln-"))
        .collect();
    assert_eq!(kiln, vec!["kiln-spec"]);
    for entry in std::fs::read_dir(root.join("src")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for banned in [
            "std::fs",
            "std::process",
            "tokio::net",
            "tokio::process",
            "std::net",
        ] {
            assert!(!text.contains(banned), "{} uses {banned}", path.display());
        }
    }
}
