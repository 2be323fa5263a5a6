//! `tsrelay translate --from P --to Q`: one conversion, offline, stdin to
//! stdout, through the same decoders, translation and encoders the relay
//! uses, so an operator sees what an upstream would receive.

use std::io::{self, Read, Write};

use crate::codec::{self, kairos_json, DecoderOptions, EncoderOptions, Protocol, Rejects, Skipped};
use crate::model::{Batch, Timestamp};
use crate::translate::Translation;

/// Points per encoded unit (one pickle frame, one JSON array).
const CHUNK_POINTS: usize = 500;

/// What a conversion did.
#[derive(Debug, Default)]
pub struct Report {
    /// Points decoded.
    pub decoded: usize,
    /// Points written.
    pub written: usize,
    /// Input records rejected.
    pub rejects: Rejects,
    /// Points the output format could not carry.
    pub skipped: Skipped,
    /// Errors of a REST body.
    pub errors: Vec<String>,
}

/// Why a conversion could not run.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The input protocol cannot be read offline.
    #[error("cannot read {0} (supported: graphite_plaintext, graphite_pickle, kairosdb_telnet, kairosdb_rest)")]
    Input(Protocol),
    /// The output protocol cannot be written offline.
    #[error("cannot write {0} (supported: graphite_plaintext, graphite_pickle, kairosdb_telnet, kairosdb_rest)")]
    Output(Protocol),
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The input's framing is broken (a pickle frame over the size limit).
    #[error("input cannot be framed")]
    Frame(#[from] codec::FrameError),
}

/// Converts everything on `input` from `from` to `to`.
///
/// # Errors
/// [`ConvertError`] for unsupported protocols or I/O failures.
pub fn run(
    from: Protocol,
    to: Protocol,
    translation: &Translation,
    mut input: impl Read,
    mut output: impl Write,
) -> Result<Report, ConvertError> {
    let mut encoder =
        codec::encoder_for(to, &EncoderOptions::default()).ok_or(ConvertError::Output(to))?;
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes)?;
    let mut report = Report::default();
    let mut batch = Batch::new();
    let now = Timestamp::now();
    if from == Protocol::KairosdbRest {
        let outcome = kairos_json::parse_body(&bytes, &mut batch);
        report.errors = outcome.errors;
    } else {
        let options = DecoderOptions {
            default_tag: Some(("add".to_owned(), "tag".to_owned())),
            ..DecoderOptions::default()
        };
        let mut decoder = codec::decoder_for(from, &options).ok_or(ConvertError::Input(from))?;
        let used = decoder.decode(&bytes, now, &mut batch, &mut report.rejects)?;
        let rest = &bytes[used..];
        if from == Protocol::GraphitePickle {
            // A partial frame at the end is counted as truncated.
            decoder.decode_eof(rest, &mut report.rejects);
        } else if !rest.is_empty() {
            // Offline input needs no final newline.
            let mut line = rest.to_vec();
            line.push(b'\n');
            decoder.decode(&line, now, &mut batch, &mut report.rejects)?;
        }
    }
    report.decoded = batch.len();
    let mut translated = Batch::with_capacity(batch.len(), 0);
    for point in batch.iter() {
        translation.apply(&point, &mut translated);
    }
    let mut out = Vec::new();
    let mut points = translated.iter();
    loop {
        let mut chunk = points.by_ref().take(CHUNK_POINTS).peekable();
        if chunk.peek().is_none() {
            break;
        }
        report.written += encoder.encode(&mut chunk, &mut out, &mut report.skipped);
        if to == Protocol::KairosdbRest && !out.is_empty() && out.last() != Some(&b'\n') {
            out.push(b'\n');
        }
    }
    output.write_all(&out)?;
    output.flush()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Reason;

    #[test]
    fn a_partial_pickle_frame_is_counted_and_an_oversized_one_refused() {
        let partial = [0u8, 0, 0, 9, b'('];
        let report = run(
            Protocol::GraphitePickle,
            Protocol::GraphitePlaintext,
            &Translation::default(),
            &partial[..],
            Vec::new(),
        )
        .expect("converts");
        assert_eq!(report.rejects.count(Reason::Truncated), 1);
        let oversized = [0x7fu8, 0, 0, 0];
        let result = run(
            Protocol::GraphitePickle,
            Protocol::GraphitePlaintext,
            &Translation::default(),
            &oversized[..],
            Vec::new(),
        );
        assert!(matches!(result, Err(ConvertError::Frame(_))));
    }
}
