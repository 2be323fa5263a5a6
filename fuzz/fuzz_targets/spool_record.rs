//! `spool::record::decode_points`: a spool record read back after a crash
//! or from a damaged disk must never panic or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsrelay_fuzz::body_parser;

fuzz_target!(|data: &[u8]| {
    body_parser(data, |bytes, batch, _rejects| {
        if let Ok(n) = tsrelay::spool::record::decode_points(bytes, batch) {
            assert_eq!(n as usize, batch.len());
        }
    });
});
