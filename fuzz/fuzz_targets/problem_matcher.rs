//! Fuzzes problem matchers: any matcher file (the text before the first blank line) is refused
//! with a reason or registered, and any output after it is scanned, never with a panic.
#![no_main]

use std::sync::OnceLock;

use kiln_pipelines::matchers::{Matchers, for_builtin};
use kiln_pipelines::workflow::Builtin;
use libfuzzer_sys::fuzz_target;

/// setup-node's matchers, compiled once: the fuzzed file is registered on top of them.
fn builtin() -> &'static Matchers {
    static BUILTIN: OnceLock<Matchers> = OnceLock::new();
    BUILTIN.get_or_init(|| {
        let mut matchers = Matchers::default();
        if let Some(text) = for_builtin(Builtin::SetupNode) {
            let _ = matchers.add(text, "setup-node");
        }
        matchers
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (file, output) = text.split_once("\n\n").unwrap_or((text, ""));
        let mut matchers = builtin().clone();
        let _ = matchers.add(file, "fuzz.json");
        let workspace = std::path::Path::new("/nonexistent-kiln-fuzz");
        for line in output.lines() {
            let _ = matchers.scan(line, workspace);
        }
    }
});
