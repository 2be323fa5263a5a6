//! `irondb_tsv::parse_body`, the IRONdb `/raw` TSV body parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsrelay::codec::irondb_tsv;
use tsrelay_fuzz::body_parser;

fuzz_target!(|data: &[u8]| {
    body_parser(data, |body, batch, rejects| {
        let outcome = irondb_tsv::parse_body(body, batch, rejects);
        // Every record is a point or an error, never both.
        assert_eq!(outcome.records, batch.len() as u64 + outcome.errors);
    });
});
