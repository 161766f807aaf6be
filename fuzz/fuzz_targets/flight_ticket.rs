//! Flight ticket bytes → `flight::ticket::parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fraiseql::flight::ticket::parse(data, 64 * 1024);
});
