//! The `kairosdb_telnet` stream decoder over two reads; see `tsrelay_fuzz::stream_decoder`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsrelay::codec::Protocol;
use tsrelay_fuzz::{stream_decoder, Framing};

fuzz_target!(|data: &[u8]| stream_decoder(Protocol::KairosdbTelnet, Framing::Lines, data));
