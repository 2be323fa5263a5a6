//! `circonus_fb::decode`, the Circonus FlatBuffer MetricList reader (both generations).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsrelay::codec::circonus_fb;
use tsrelay_fuzz::body_parser;

fuzz_target!(|data: &[u8]| {
    body_parser(data, |body, batch, rejects| {
        if let Ok(outcome) = circonus_fb::decode(body, batch, rejects) {
            assert_eq!(outcome.records, batch.len() as u64);
        }
    });
});
