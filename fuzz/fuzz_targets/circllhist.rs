//! circllhist binary and base64 (`H1`) readers; a histogram read back is
//! written and read again to the same bins.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsrelay::codec::circllhist;

fuzz_target!(|data: &[u8]| {
    if let Ok(histogram) = circllhist::deserialize(data) {
        let mut bytes = Vec::new();
        circllhist::serialize(&histogram, &mut bytes);
        let again = circllhist::deserialize(&bytes).expect("our own output reads back");
        assert_eq!(again, histogram);
    }
    let _ = circllhist::decode_base64(data);
});
