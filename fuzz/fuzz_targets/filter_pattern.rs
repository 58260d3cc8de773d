//! Fuzzes the `on.push` filter matcher: any pattern and text must compile and match without a
//! panic, and in time linear in their product (no backtracking blow-up).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (pattern, path) = text.split_once('\n').unwrap_or((text, ""));
        let compiled = kiln_pipelines::filter::Pattern::new(pattern);
        let _ = compiled.matches(path);
        let _ = kiln_pipelines::filter::selected(&[compiled], path);
    }
});
