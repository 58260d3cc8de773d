//! Tests of the upstream HTTP/1.1 exchange's pure parts: response heads, framing, the chunked
//! decoder, with bodies split at arbitrary read boundaries.

#[allow(unused_imports)]
use super::*;
