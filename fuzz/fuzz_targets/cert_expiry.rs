//! A certificate's expiry from any bytes: see `check_cert_expiry`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| respite_fuzz::check_cert_expiry(data));
