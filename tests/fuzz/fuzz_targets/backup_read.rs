//! Any bytes into the backup reader: never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = perfd::store::backup::check_bytes(data);
});
