//! Cheap architecture checks: every file explains itself, and the crate stays independent of
//! the rest of kiln (it takes plain specs and emits events).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic

use std::path::Path;

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_file_starts_with_a_module_doc() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in rust_files(&root.join("src"))
        .into_iter()
        .chain(rust_files(&root.join("tests")))
    {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("//!"),
            "{} has no module doc",
            file.display()
        );
    }
}

#[test]
fn the_supervisor_depends_on_no_other_kiln_crate() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let deps = manifest.split("[dependencies]").nth(1).unwrap();
    let deps = deps.split("\n[").next().unwrap();
    assert!(
        !deps.contains("kiln-"),
        "kiln-supervisor must not depend on other kiln crates"
    );
}
