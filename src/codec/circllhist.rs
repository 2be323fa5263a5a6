//! circllhist wire format: libcircllhist's `hist_serialize` bytes and their
//! base64 form, as IRONdb `H1`/`H2` records carry them (protocols.md 8.3).
//!
//! ```text
//! u16 BE   number of bins N
//! N times: i8 val | i8 exp | u8 t (0..=7) | t+1 count bytes, little-endian
//! ```
//!
//! Writing always produces the normalised form (NaN bucket first, then
//! ascending on the real line, no duplicates, no zero counts), because the C
//! reader appends bins in wire order without sorting and later binary
//! searches in C consumers go wrong on anything else. Counts use the minimal
//! correct width; the C writer's limit table has typos that truncate counts
//! in `[2^32, 2^36)` and `[2^48, 2^52)`, which we do not reproduce. Reading
//! accepts what the C reader accepts, except that fewer bins than the header
//! announces is an error here (the C reader stops quietly when the input
//! ends on a bin boundary), and returns a normalised histogram.
//!
//! We do not use the `openhistogram` crate: it is not wire-compatible with
//! libcircllhist (it writes count bytes big-endian, and its multi-byte count
//! writer is broken), so its output would be misread by IRONdb.
//!
//! This module is pure: no I/O, no logging, no clock.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::model::{Bin, Histogram};

/// Why bytes are not a circllhist histogram.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HistogramError {
    /// The input ends inside the header or inside a bin the header announced.
    #[error("histogram truncated")]
    Truncated,
    /// A bin declares a count wider than 8 bytes (`t` above 7).
    #[error("bin count width byte {t} is over 7")]
    BadCountWidth {
        /// The width byte as read (count bytes minus one).
        t: u8,
    },
    /// Bytes remain after the last bin the header announced.
    #[error("{extra} bytes after the last bin")]
    TrailingBytes {
        /// How many bytes were left over.
        extra: usize,
    },
    /// The text is not standard padded base64.
    #[error("invalid base64")]
    Base64(#[from] base64::DecodeError),
}

/// Bytes of the header (the bin count).
const HEADER_BYTES: usize = 2;
/// Bytes of a bin before its count: val, exp, width.
const BIN_HEADER_BYTES: usize = 3;
/// The smallest encoded bin (a one-byte count).
const MIN_BIN_BYTES: usize = BIN_HEADER_BYTES + 1;

/// Appends the binary encoding of `histogram` to `out`. Any histogram is
/// accepted: an unnormalised one is normalised into a copy first, a
/// normalised one (what every decoder returns) is written without copying.
/// The cumulative flag is not part of the format (IRONdb says it with `H2`).
pub fn serialize(histogram: &Histogram, out: &mut Vec<u8>) {
    if histogram.is_normalised() {
        write_bins(&histogram.bins, out);
    } else {
        let mut copy = histogram.clone();
        copy.normalise();
        write_bins(&copy.bins, out);
    }
}

/// Reads one histogram that fills `bytes` exactly. Bins with a zero count
/// and bins with invalid buckets are read and left out; the result is
/// normalised and not cumulative.
///
/// # Errors
/// [`HistogramError::Truncated`], [`HistogramError::BadCountWidth`], or
/// [`HistogramError::TrailingBytes`] when bytes follow the last bin.
pub fn deserialize(bytes: &[u8]) -> Result<Histogram, HistogramError> {
    let (histogram, used) = deserialize_prefix(bytes)?;
    match bytes.len() - used {
        0 => Ok(histogram),
        extra => Err(HistogramError::TrailingBytes { extra }),
    }
}

/// Reads one histogram from the start of `bytes` and returns it with the
/// number of bytes it took, as libcircllhist's `hist_deserialize` does.
///
/// # Errors
/// [`HistogramError::Truncated`] or [`HistogramError::BadCountWidth`].
pub fn deserialize_prefix(bytes: &[u8]) -> Result<(Histogram, usize), HistogramError> {
    let Some((&[high, low], body)) = bytes.split_first_chunk::<HEADER_BYTES>() else {
        return Err(HistogramError::Truncated);
    };
    let declared = usize::from(u16::from_be_bytes([high, low]));
    // The header is untrusted: reserve only what the input can hold.
    let mut bins = Vec::with_capacity(declared.min(body.len() / MIN_BIN_BYTES));
    let mut pos = 0;
    for _ in 0..declared {
        let Some(&[val, exp, t]) = body
            .get(pos..)
            .and_then(|rest| rest.first_chunk::<BIN_HEADER_BYTES>())
        else {
            return Err(HistogramError::Truncated);
        };
        if t > 7 {
            return Err(HistogramError::BadCountWidth { t });
        }
        let width = usize::from(t) + 1;
        let start = pos + BIN_HEADER_BYTES;
        let count_bytes = body
            .get(start..start + width)
            .ok_or(HistogramError::Truncated)?;
        let mut little_endian = [0u8; 8];
        little_endian[..width].copy_from_slice(count_bytes);
        pos = start + width;
        let bin = Bin {
            val: val as i8,
            exp: exp as i8,
            count: u64::from_le_bytes(little_endian),
        };
        if bin.count != 0 && bin.is_valid() {
            bins.push(bin);
        }
    }
    let mut histogram = Histogram {
        bins,
        cumulative: false,
    };
    histogram.normalise();
    Ok((histogram, HEADER_BYTES + pos))
}

/// Appends the standard padded base64 of the binary encoding to `out`.
pub fn encode_base64(histogram: &Histogram, out: &mut Vec<u8>) {
    encode_base64_with(histogram, &mut Vec::new(), out);
}

/// [`encode_base64`] with a caller's scratch buffer for the binary form,
/// so that an encoder writing many histograms allocates once.
pub fn encode_base64_with(histogram: &Histogram, scratch: &mut Vec<u8>, out: &mut Vec<u8>) {
    scratch.clear();
    serialize(histogram, scratch);
    let start = out.len();
    // Only a length overflowing usize has no encoded length: nothing to write.
    let Some(encoded_len) = base64::encoded_len(scratch.len(), true) else {
        return;
    };
    out.resize(start + encoded_len, 0);
    // The slice is sized by encoded_len, so this cannot fail; keep `out`
    // unchanged rather than half-written if it ever did.
    match STANDARD.encode_slice(&scratch[..], &mut out[start..]) {
        Ok(written) => out.truncate(start + written),
        Err(_) => out.truncate(start),
    }
}

/// Reads a histogram from standard padded base64 (surrounding ASCII
/// whitespace ignored). The decoded bytes must hold exactly one histogram,
/// as libcircllhist's `hist_deserialize_b64` requires.
///
/// # Errors
/// [`HistogramError::Base64`] for text that is not padded standard base64,
/// otherwise the errors of [`deserialize`].
pub fn decode_base64(text: &[u8]) -> Result<Histogram, HistogramError> {
    decode_base64_with(text, &mut Vec::new())
}

/// [`decode_base64`] with a caller's scratch buffer for the decoded bytes,
/// so that a decoder reading many histograms allocates once.
///
/// # Errors
/// As [`decode_base64`].
pub fn decode_base64_with(text: &[u8], scratch: &mut Vec<u8>) -> Result<Histogram, HistogramError> {
    scratch.clear();
    STANDARD.decode_vec(text.trim_ascii(), scratch)?;
    deserialize(scratch)
}

/// Writes normalised bins: header, then each bin with its minimal count width.
fn write_bins(bins: &[Bin], out: &mut Vec<u8>) {
    // A normalised histogram has at most 2 + 2 * 90 * 256 = 46 082 distinct
    // buckets, so the count always fits; saturating keeps header and body
    // consistent even if that ever changed.
    let n_bins = u16::try_from(bins.len()).unwrap_or(u16::MAX);
    out.reserve(HEADER_BYTES + bins.len() * MIN_BIN_BYTES);
    out.extend_from_slice(&n_bins.to_be_bytes());
    for bin in &bins[..usize::from(n_bins)] {
        let width = count_width(bin.count);
        out.extend_from_slice(&[bin.val as u8, bin.exp as u8, (width - 1) as u8]);
        out.extend_from_slice(&bin.count.to_le_bytes()[..width]);
    }
}

/// The fewest bytes (1..=8) that hold `count`.
fn count_width(count: u64) -> usize {
    let significant_bytes = 8 - count.leading_zeros() as usize / 8;
    significant_bytes.max(1)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const EXAMPLES: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/circllhist_examples.txt"
    ));

    /// One fixture example: its bins as `(val, exp, count, edge, far edge)`,
    /// the hex bytes and the base64.
    struct Example {
        name: String,
        bins: Vec<(i8, i8, u64, f64, f64)>,
        bytes: Vec<u8>,
        base64: String,
    }

    /// Parses the fixture: a line `name desc {(val, exp): (count, edge,
    /// far_edge), ...}` then a line `hex .. .. b64 ...`.
    fn examples() -> Vec<Example> {
        let lines: Vec<&str> = EXAMPLES.lines().filter(|l| !l.trim().is_empty()).collect();
        lines
            .chunks(2)
            .map(|pair| {
                let (description, encoded) = (pair[0], pair[1].trim());
                let name = description.split(' ').next().expect("name").to_owned();
                let dict = &description[description.find('{').expect("{") + 1..];
                let bins = dict
                    .split("), (")
                    .map(|entry| {
                        let numbers: Vec<&str> = entry
                            .split(|c: char| !(c.is_ascii_digit() || "-.e".contains(c)))
                            .filter(|s| !s.is_empty())
                            .collect();
                        assert_eq!(numbers.len(), 5, "{entry}");
                        (
                            numbers[0].parse().expect("val"),
                            numbers[1].parse().expect("exp"),
                            numbers[2].parse().expect("count"),
                            numbers[3].parse().expect("edge"),
                            numbers[4].parse().expect("far edge"),
                        )
                    })
                    .collect();
                let hex = encoded
                    .strip_prefix("hex ")
                    .expect("hex")
                    .split("b64")
                    .next()
                    .expect("hex part");
                let bytes = hex
                    .split_whitespace()
                    .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
                    .collect();
                let base64 = encoded.rsplit(' ').next().expect("b64").to_owned();
                Example {
                    name,
                    bins,
                    bytes,
                    base64,
                }
            })
            .collect()
    }

    fn histogram(bins: &[(i8, i8, u64)]) -> Histogram {
        Histogram {
            bins: bins
                .iter()
                .map(|&(val, exp, count)| Bin { val, exp, count })
                .collect(),
            cumulative: false,
        }
    }

    fn to_bytes(histogram: &Histogram) -> Vec<u8> {
        let mut out = Vec::new();
        serialize(histogram, &mut out);
        out
    }

    fn to_base64(histogram: &Histogram) -> String {
        let mut out = Vec::new();
        encode_base64(histogram, &mut out);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn fixture_examples_round_trip_exactly() {
        let examples = examples();
        assert_eq!(examples.len(), 4);
        for example in &examples {
            let bins: Vec<_> = example.bins.iter().map(|b| (b.0, b.1, b.2)).collect();
            // The fixture lists bins in Python dict order, not wire order.
            let built = histogram(&bins);
            assert_eq!(to_bytes(&built), example.bytes, "{}", example.name);
            assert_eq!(to_base64(&built), example.base64, "{}", example.name);
            let read = deserialize(&example.bytes).expect(&example.name);
            assert_eq!(to_bytes(&read), example.bytes, "{}", example.name);
            assert_eq!(read.count(), built.count());
            let from_text = decode_base64(example.base64.as_bytes()).expect(&example.name);
            assert_eq!(from_text, read, "{}", example.name);
            for &(val, exp, _, edge, far_edge) in &example.bins {
                let bin = Bin { val, exp, count: 1 };
                if bin.is_nan() {
                    continue;
                }
                // The fixture gives the edge nearest zero, then the far one.
                let (near, far) = if val < 0 {
                    (bin.upper(), bin.lower())
                } else {
                    (bin.lower(), bin.upper())
                };
                assert_eq!(
                    (near, far),
                    (edge, far_edge),
                    "{} ({val}, {exp})",
                    example.name
                );
            }
        }
    }

    #[test]
    fn protocol_examples_decode_as_documented() {
        let single = decode_base64(b"AAFQ/gAB").expect("valid");
        assert_eq!(single, histogram(&[(80, -2, 1)]));
        let hundreds = Histogram::from_values(std::iter::repeat_n(1.0, 300));
        assert_eq!(
            to_bytes(&hundreds),
            [0x00, 0x01, 0x0a, 0x00, 0x01, 0x2c, 0x01]
        );
        assert_eq!(to_base64(&hundreds), "AAEKAAEsAQ==");
        let mixed = Histogram::from_values([1.0, 1.0, 2.5, 250.0, -0.5, 0.0, f64::NAN]);
        assert_eq!(to_base64(&mixed), "AAb/AAABzv8AAQAAAAEKAAACGQAAARkCAAE=");
        let edges = Histogram::from_values([0.11, 99.999, 1e-130, 1e130, -100.0]);
        assert_eq!(to_base64(&edges), "AAX/AAAB9gIAAQAAAAEL/wABYwEAAQ==");
    }

    #[test]
    fn the_empty_histogram_is_two_zero_bytes() {
        let empty = Histogram::default();
        assert_eq!(to_bytes(&empty), [0, 0]);
        assert_eq!(to_base64(&empty), "AAA=");
        assert_eq!(decode_base64(b"AAA=").expect("valid"), empty);
        assert_eq!(deserialize(&[0, 0]).expect("valid"), empty);
    }

    #[test]
    fn counts_use_the_minimal_correct_width() {
        let cases: &[(u64, u8)] = &[
            (1, 0),
            (0xff, 0),
            (0x100, 1),
            (0xffff, 1),
            (0x1_0000, 2),
            (0xff_ffff, 2),
            (0x100_0000, 3),
            (0xffff_ffff, 3),
            // The C writer's typo writes 4 bytes here and loses the top bits.
            (1 << 32, 4),
            (0xf_ffff_ffff, 4),
            (0xff_ffff_ffff, 4),
            (1 << 40, 5),
            (1 << 48, 6),
            (0xf_ffff_ffff_ffff, 6),
            (1 << 56, 7),
            (u64::MAX, 7),
        ];
        for &(count, t) in cases {
            let bytes = to_bytes(&histogram(&[(10, 0, count)]));
            assert_eq!(bytes[4], t, "{count:#x}");
            assert_eq!(bytes.len(), 2 + 3 + usize::from(t) + 1, "{count:#x}");
            assert_eq!(deserialize(&bytes).expect("valid").count(), count);
        }
        let max = to_bytes(&histogram(&[(10, 0, u64::MAX)]));
        assert_eq!(
            max,
            [0, 1, 10, 0, 7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        // Eight little-endian bytes, least significant first.
        let read = deserialize(&[0, 1, 10, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8]).expect("valid");
        assert_eq!(read.bins[0].count, 0x0807_0605_0403_0201);
    }

    #[test]
    fn zero_counts_and_invalid_buckets_are_read_and_dropped() {
        // Four bins: count 0, invalid val 5, invalid NaN-like (-1, 3), valid.
        let bytes = [
            0, 4, 10, 0, 0, 0, 5, 0, 0, 1, 0xff, 3, 0, 1, 20, 0, 1, 0x34, 0x12,
        ];
        let read = deserialize(&bytes).expect("valid");
        assert_eq!(read, histogram(&[(20, 0, 0x1234)]));
        // A declared bin count of zero with no bins.
        assert_eq!(deserialize(&[0, 0]).expect("valid").bins.len(), 0);
    }

    #[test]
    fn unordered_and_repeated_bins_are_normalised_on_read() {
        let bytes = [0, 4, 20, 0, 0, 1, 10, 0, 0, 2, 20, 0, 0, 3, 0xff, 0, 0, 1];
        let read = deserialize(&bytes).expect("valid");
        assert_eq!(read, histogram(&[(-1, 0, 1), (10, 0, 2), (20, 0, 4)]));
        assert_eq!(
            to_bytes(&read),
            [0, 3, 0xff, 0, 0, 1, 10, 0, 0, 2, 20, 0, 0, 4]
        );
        // Writing an unnormalised histogram writes its normalised form.
        let unsorted = histogram(&[(20, 0, 1), (0, 5, 1), (10, 0, 0), (20, 0, u64::MAX)]);
        assert_eq!(
            to_bytes(&unsorted),
            [0, 2, 0, 0, 0, 1, 20, 0, 7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
    }

    #[test]
    fn malformed_bytes_are_errors() {
        use HistogramError::*;
        let cases: &[(&[u8], HistogramError)] = &[
            (b"", Truncated),
            (&[0], Truncated),
            (&[0, 1], Truncated),
            (&[0, 1, 10, 0], Truncated),
            (&[0, 1, 10, 0, 1, 5], Truncated),
            (&[0, 2, 10, 0, 0, 1], Truncated),
            (
                &[0, 1, 10, 0, 8, 1, 1, 1, 1, 1, 1, 1, 1, 1],
                BadCountWidth { t: 8 },
            ),
            (&[0, 1, 10, 0, 0xff, 1], BadCountWidth { t: 0xff }),
            (&[0, 0, 0], TrailingBytes { extra: 1 }),
            (&[0, 1, 10, 0, 0, 1, 9, 9], TrailingBytes { extra: 2 }),
        ];
        for (bytes, error) in cases {
            assert_eq!(deserialize(bytes).as_ref(), Err(error), "{bytes:?}");
        }
        let (read, used) = deserialize_prefix(&[0, 1, 10, 0, 0, 1, 9, 9]).expect("valid");
        assert_eq!((read.count(), used), (1, 6));
    }

    #[test]
    fn base64_is_strict_inside_and_tolerant_around() {
        let expected = histogram(&[(80, -2, 1)]);
        for text in [&b"AAFQ/gAB"[..], b"  AAFQ/gAB\n", b"\tAAFQ/gAB\r\n"] {
            assert_eq!(decode_base64(text).as_ref(), Ok(&expected), "{text:?}");
        }
        // Decoded bytes beyond the histogram are trailing garbage.
        assert_eq!(
            decode_base64(b"AAFQ/gABAA=="),
            Err(HistogramError::TrailingBytes { extra: 1 })
        );
        for text in [
            &b"AAFQ/gAB!"[..],
            b"AAFQ /gAB",
            b"AAA",
            b"AA==AA==",
            b"AAFQ-gAB",
        ] {
            let result = decode_base64(text);
            assert!(
                matches!(result, Err(HistogramError::Base64(_))),
                "{text:?}: {result:?}"
            );
        }
        assert_eq!(decode_base64(b""), Err(HistogramError::Truncated));
        assert_eq!(decode_base64(b"AA=="), Err(HistogramError::Truncated));
        assert_eq!(decode_base64(b"AAE="), Err(HistogramError::Truncated));
        assert_eq!(
            decode_base64(b"AAEKAAg="),
            Err(HistogramError::BadCountWidth { t: 8 })
        );
    }

    #[test]
    fn scratch_variants_reuse_their_buffers() {
        let mut scratch = Vec::new();
        let mut out = b"prefix ".to_vec();
        let histogram = Histogram::from_values([1.0, 2.0]);
        encode_base64_with(&histogram, &mut scratch, &mut out);
        encode_base64_with(&Histogram::default(), &mut scratch, &mut out);
        assert_eq!(out, b"prefix AAIKAAABFAAAAQ==AAA=");
        let read = decode_base64_with(b"AAIKAAABFAAAAQ==", &mut scratch).expect("valid");
        assert_eq!(read, histogram);
        let read = decode_base64_with(b"AAA=", &mut scratch).expect("valid");
        assert_eq!(read, Histogram::default());
    }

    fn arb_bin() -> impl Strategy<Value = Bin> {
        let bucket = prop_oneof![
            8 => (10i8..=99, any::<bool>(), any::<i8>())
                .prop_map(|(val, negative, exp)| (if negative { -val } else { val }, exp)),
            1 => Just((0i8, 0i8)),
            1 => Just((-1i8, 0i8)),
        ];
        let count = prop_oneof![1u64..=0xff, 1u64..=0xffff_ffff, 1u64..=u64::MAX];
        (bucket, count).prop_map(|((val, exp), count)| Bin { val, exp, count })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(read) = deserialize(&bytes) {
                prop_assert!(read.is_normalised());
                // Whatever was read writes back to bytes that read the same.
                let again = deserialize(&to_bytes(&read)).expect("own output");
                prop_assert_eq!(again, read);
            }
            let _ = deserialize_prefix(&bytes);
            let _ = decode_base64(&bytes);
        }

        #[test]
        fn arbitrary_bin_streams_never_panic(
            declared in any::<u16>(),
            body in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            let mut bytes = declared.to_be_bytes().to_vec();
            bytes.extend_from_slice(&body);
            let _ = deserialize(&bytes);
        }

        #[test]
        fn deserialize_inverts_serialize(bins in proptest::collection::vec(arb_bin(), 0..40)) {
            let mut original = Histogram { bins, cumulative: false };
            original.normalise();
            let bytes = to_bytes(&original);
            prop_assert_eq!(deserialize(&bytes).expect("own output"), original.clone());
            prop_assert_eq!(decode_base64(to_base64(&original).as_bytes()).expect("own output"), original);
        }
    }
}
