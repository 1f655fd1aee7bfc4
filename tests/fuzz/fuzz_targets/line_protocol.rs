//! Any bytes into the line-protocol parser: never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use perfd::ingest::{BatchBuilder, line_protocol};
use perfd::model::TimeBounds;

fuzz_target!(|data: &[u8]| {
    let now = 1_700_000_000_000;
    let mut b = BatchBuilder::new(TimeBounds::new(now, 30 * 86_400_000));
    let _ = line_protocol::parse(data, line_protocol::Precision::Ns, now, &mut b);
});
