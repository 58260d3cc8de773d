//! Fuzzes the workflow parser: any text must give a model or diagnostics, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = kiln_pipelines::parse_workflow(std::path::Path::new("fuzz.yml"), text);
    }
});
