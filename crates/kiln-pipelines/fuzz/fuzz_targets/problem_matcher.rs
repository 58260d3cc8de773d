//! Fuzzes problem matchers: any matcher file (the text before the first blank line) is refused
//! with a reason or registered, and any output after it is scanned, never with a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (file, output) = text.split_once("\n\n").unwrap_or((text, ""));
        let mut matchers = kiln_pipelines::matchers::Matchers::default();
        let builtin = kiln_pipelines::matchers::for_builtin(kiln_pipelines::workflow::Builtin::SetupNode);
        if let Some(builtin) = builtin {
            let _ = matchers.add(builtin, "setup-node");
        }
        let _ = matchers.add(file, "fuzz.json");
        let workspace = std::path::Path::new("/nonexistent-kiln-fuzz");
        for line in output.lines() {
            let _ = matchers.scan(line, workspace);
        }
    }
});
