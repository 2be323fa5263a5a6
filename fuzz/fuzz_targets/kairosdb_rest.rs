//! `kairos_json::parse_body`, the KairosDB REST body parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsrelay::codec::kairos_json::parse_body;
use tsrelay_fuzz::body_parser;

fuzz_target!(|data: &[u8]| {
    // KairosDB's errors are strings, not `Rejects`; that collector stays empty.
    body_parser(data, |body, batch, _rejects| {
        let outcome = parse_body(body, batch);
        assert_eq!(outcome.n_points, batch.len());
        // Reading stops only with a reason, and the reason is the last error.
        assert!(!outcome.stopped || !outcome.errors.is_empty());
    });
});
