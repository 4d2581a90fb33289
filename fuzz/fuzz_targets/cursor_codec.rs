//! SCAN cursors: packing round-trips, and any bytes decode safely: see `check_cursor_codec`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| respite_fuzz::check_cursor_codec(data));
