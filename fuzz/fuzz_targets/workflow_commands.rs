//! Fuzzes the runner's text protocols: any line parses as a workflow command (either form) or
//! not, and any text as an environment file or an error, never with a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for line in text.lines() {
            let _ = kiln_pipelines::parse_command(line);
            let _ = kiln_pipelines::parse_legacy_command(line);
        }
        let _ = kiln_pipelines::parse_env_file(text);
    }
});
