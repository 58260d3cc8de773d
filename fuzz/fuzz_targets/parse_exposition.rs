//! Fuzzes the exposition parser in both formats: it must return, never panic.
#![no_main]

use kiln_metrics::exposition::{Format, parse_exposition};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_exposition(text, Format::Prometheus);
        let _ = parse_exposition(text, Format::OpenMetrics);
    }
});
