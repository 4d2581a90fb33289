//! `ReplyScanner` boundaries against redis-protocol's `decode_range`: see `check_differential`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| respite_fuzz::check_differential(data));
