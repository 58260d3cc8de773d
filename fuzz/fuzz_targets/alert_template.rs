//! Fuzzes alert annotation templates (`{{ $labels.x }}`, `{{ $value }}`): any text parses or
//! is refused without a panic, and what parses holds no empty label name.
#![no_main]

use kiln_spec::alerting::{TemplatePiece, parse_template};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(pieces) = parse_template(text)
    {
        for piece in pieces {
            if let TemplatePiece::Label(name) = piece {
                assert!(!name.is_empty());
            }
        }
    }
});
