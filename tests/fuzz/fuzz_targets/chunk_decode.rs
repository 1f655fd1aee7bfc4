//! Any bytes into the chunk, WAL and block decoders: never panics; a chunk that decodes
//! re-encodes to the same points.
#![no_main]
use libfuzzer_sys::fuzz_target;
use perfd::store::{block, codec, wal};

fuzz_target!(|data: &[u8]| {
    let _ = codec::header(data);
    let _ = wal::decode_wal(data);
    let _ = block::index(data);
    if let Ok(mut points) = codec::decode(data) {
        codec::normalize(&mut points);
        if !points.is_empty() {
            let again = codec::decode(&codec::encode(&points)).expect("re-encoded chunk decodes");
            assert_eq!(again.len(), points.len());
        }
    }
});
