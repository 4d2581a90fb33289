//! Any bytes, in any chunking and nesting, through `ReplyScanner`: see `check_reply_scanner`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| respite_fuzz::check_reply_scanner(data));
