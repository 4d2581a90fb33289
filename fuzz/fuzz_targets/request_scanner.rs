//! Any bytes, in any chunking, through `RequestScanner`: see `check_request_scanner`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| respite_fuzz::check_request_scanner(data));
