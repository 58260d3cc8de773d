//! Every stack under `tests/invalid/` is wrong on purpose; each must be refused with the
//! diagnostics recorded in its snapshot (file:line:column, key path, expectation, fix).

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use kiln::commands::DiskFs;

#[test]
fn every_invalid_stack_is_refused_with_its_diagnostics() {
    let root = Path::new("tests/invalid");
    let mut cases: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "the catalogue has {} cases", cases.len());
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_snapshot_path("snapshots/invalid");
    settings.bind(|| {
        for case in &cases {
            let name = case.file_name().unwrap().to_string_lossy().into_owned();
            let failure = match kiln::tls::load(&DiskFs, &case.join("kiln.yaml")) {
                Ok(_) => panic!("{name}: the stack loaded, but it is invalid on purpose"),
                Err(f) => f,
            };
            let rendered = kiln::render::diagnostics(&failure.sources, &failure.diagnostics);
            insta::assert_snapshot!(name, rendered);
        }
    });
}
