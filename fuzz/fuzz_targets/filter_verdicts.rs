//! What a filter hands back from its memory: a verdict, its own error, or
//! garbage, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshplay::catalogue::abi::decode_verdict;

fuzz_target!(|bytes: &[u8]| {
    let _ = decode_verdict(bytes);
});
