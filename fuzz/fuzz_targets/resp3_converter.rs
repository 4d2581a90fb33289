//! The RESP2 -> RESP3 converter: never panics, one valid RESP3 frame out per RESP2 frame in: see
//! `check_resp3_converter`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| respite_fuzz::check_resp3_converter(data));
