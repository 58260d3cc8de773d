//! Fuzzes what a webhook delivery brings from the network: any body and any signature header
//! must be checked and parsed without a panic, and a body signed with the secret must verify.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first line is the signature header, the rest the body.
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (header, body) = data.split_at(split);
    let body = body.get(1..).unwrap_or_default();
    let secret = b"fuzz-secret";
    let _ = kiln_delivery::webhook::verify_signature(
        secret,
        body,
        std::str::from_utf8(header).ok(),
    );
    let signed = kiln_delivery::webhook::sign(secret, body);
    assert!(kiln_delivery::webhook::verify_signature(secret, body, Some(&signed)).is_ok());
    let _ = kiln_delivery::webhook::parse_push(body, jiff::Timestamp::UNIX_EPOCH, 7 * 24 * 3600);
});
