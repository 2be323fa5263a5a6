//! Segment files: their names, their header, record framing, the scan that
//! validates a segment at open and the read of one record.
//!
//! ```text
//! segment = magic "TSRSPOOL" version:u32-LE (=1) record*
//! record  = len:u32-LE crc:u32-LE points:u32-LE payload[len]
//!           crc = CRC-32 (IEEE) of points:u32-LE followed by payload
//! ```
//!
//! Files are named by a zero-padded sequence number, `00000000000000000001.seg`,
//! so that a directory listing sorts them in append order.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

/// First bytes of every segment file.
pub(super) const SEGMENT_MAGIC: [u8; 8] = *b"TSRSPOOL";
/// The segment format version this build writes and reads.
pub(super) const SEGMENT_VERSION: u32 = 1;
/// Bytes of the segment header: magic and version.
pub(super) const SEGMENT_HEADER_LEN: u64 = 12;
/// Bytes of a record header: length, CRC, points.
pub(super) const RECORD_HEADER_LEN: u64 = 12;

const SUFFIX: &str = ".seg";
const DIGITS: usize = 20;

/// The file name of segment `seq`.
pub(super) fn file_name(seq: u64) -> String {
    format!("{seq:0width$}{SUFFIX}", width = DIGITS)
}

/// The sequence number of a segment file name, `None` for other files.
pub(super) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header a new segment starts with.
pub(super) fn segment_header() -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    header[..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    header
}

/// The header written before `payload`. The caller has checked that the
/// payload length fits a u32.
pub(super) fn record_header(payload: &[u8], points: u32) -> [u8; RECORD_HEADER_LEN as usize] {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&points.to_le_bytes());
    hasher.update(payload);
    let mut header = [0u8; RECORD_HEADER_LEN as usize];
    header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[4..8].copy_from_slice(&hasher.finalize().to_le_bytes());
    header[8..].copy_from_slice(&points.to_le_bytes());
    header
}

/// What the first bytes of a segment file say.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HeaderCheck {
    /// A segment this build reads.
    Valid,
    /// Shorter than a header, or all zeros: a crash while creating it.
    Torn,
    /// Not a tsrelay segment at all.
    Foreign,
    /// A tsrelay segment of another format version.
    Unsupported(u32),
}

/// Reads and checks the segment header at the start of `file`.
pub(super) fn check_header(file: &mut File, file_len: u64) -> io::Result<HeaderCheck> {
    if file_len < SEGMENT_HEADER_LEN {
        return Ok(HeaderCheck::Torn);
    }
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut header)?;
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    Ok(if header.iter().all(|&b| b == 0) {
        HeaderCheck::Torn
    } else if header[..8] != SEGMENT_MAGIC {
        HeaderCheck::Foreign
    } else if version != SEGMENT_VERSION {
        HeaderCheck::Unsupported(version)
    } else {
        HeaderCheck::Valid
    })
}

/// Records and points of a run of records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Tally {
    /// Number of records.
    pub(super) records: u64,
    /// Sum of their points.
    pub(super) points: u64,
}

impl Tally {
    /// One record of `points` points.
    pub(super) fn one(points: u32) -> Self {
        Self {
            records: 1,
            points: u64::from(points),
        }
    }

    /// Adds `other` to this tally.
    pub(super) fn add(&mut self, other: Tally) {
        self.records += other.records;
        self.points += other.points;
    }

    /// This tally less `other`, stopping at zero.
    pub(super) fn minus(self, other: Tally) -> Tally {
        Tally {
            records: self.records.saturating_sub(other.records),
            points: self.points.saturating_sub(other.points),
        }
    }
}

/// What a scan of a segment found.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Scan {
    /// End of the last record that passed its checks.
    pub(super) valid_end: u64,
    /// The valid records.
    pub(super) total: Tally,
    /// The valid records that end at or before the split offset.
    pub(super) before_split: Tally,
    /// End of the last of those (the header length when there is none).
    pub(super) split_boundary: u64,
}

/// Validates every record (length and CRC) from the header on and stops at
/// the first that fails: everything from there is torn or corrupt.
pub(super) fn scan(file: &mut File, file_len: u64, split: u64) -> io::Result<Scan> {
    file.seek(SeekFrom::Start(SEGMENT_HEADER_LEN))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut chunk = vec![0u8; 1 << 16];
    let mut scan = Scan {
        valid_end: SEGMENT_HEADER_LEN,
        total: Tally::default(),
        before_split: Tally::default(),
        split_boundary: SEGMENT_HEADER_LEN,
    };
    loop {
        let offset = scan.valid_end;
        if file_len.saturating_sub(offset) < RECORD_HEADER_LEN {
            return Ok(scan);
        }
        let mut header = [0u8; RECORD_HEADER_LEN as usize];
        reader.read_exact(&mut header)?;
        let (len, crc, points) = parse_record_header(&header);
        let end = offset + RECORD_HEADER_LEN + u64::from(len);
        if end > file_len {
            return Ok(scan);
        }
        // Hash in chunks: a record's length is not trusted until its CRC
        // matches, so nothing is allocated from it.
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&points.to_le_bytes());
        let mut left = u64::from(len);
        while left > 0 {
            let take = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let part = &mut chunk[..take];
            reader.read_exact(part)?;
            hasher.update(part);
            left -= take as u64;
        }
        if hasher.finalize() != crc {
            return Ok(scan);
        }
        scan.valid_end = end;
        scan.total.records += 1;
        scan.total.points += u64::from(points);
        if end <= split {
            scan.before_split = scan.total;
            scan.split_boundary = end;
        }
    }
}

/// One record read back by [`read_record`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ReadRecord {
    /// The record passed its CRC.
    Valid {
        /// The payload.
        payload: Vec<u8>,
        /// Its point count.
        points: u32,
        /// The offset just past it.
        end: u64,
    },
    /// Its length runs past `valid_end`, or its CRC does not match.
    Corrupt,
}

/// Reads the record at `offset`, which must end by `valid_end`.
pub(super) fn read_record(file: &mut File, offset: u64, valid_end: u64) -> io::Result<ReadRecord> {
    let mut header = [0u8; RECORD_HEADER_LEN as usize];
    if valid_end.saturating_sub(offset) < RECORD_HEADER_LEN {
        return Ok(ReadRecord::Corrupt);
    }
    file.seek(SeekFrom::Start(offset))?;
    match file.read_exact(&mut header) {
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
            return Ok(ReadRecord::Corrupt)
        }
        other => other?,
    }
    let (len, crc, points) = parse_record_header(&header);
    let end = offset + RECORD_HEADER_LEN + u64::from(len);
    if end > valid_end {
        return Ok(ReadRecord::Corrupt);
    }
    // `len` is bounded by `valid_end`, which open() or append() measured.
    let mut payload = vec![0u8; len as usize];
    match file.read_exact(&mut payload) {
        // The file is shorter than it was: something outside cut it.
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
            return Ok(ReadRecord::Corrupt)
        }
        other => other?,
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&points.to_le_bytes());
    hasher.update(&payload);
    Ok(if hasher.finalize() == crc {
        ReadRecord::Valid {
            payload,
            points,
            end,
        }
    } else {
        ReadRecord::Corrupt
    })
}

fn parse_record_header(header: &[u8; RECORD_HEADER_LEN as usize]) -> (u32, u32, u32) {
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    (word(0), word(4), word(8))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn names_sort_in_sequence_order_and_parse_back() {
        assert_eq!(file_name(1), "00000000000000000001.seg");
        assert_eq!(file_name(u64::MAX), "18446744073709551615.seg");
        assert!(file_name(9) < file_name(10));
        for seq in [0, 1, 42, u64::MAX] {
            assert_eq!(parse_file_name(&file_name(seq)), Some(seq));
        }
        for other in [
            "LOCK",
            "CURSOR",
            "1.seg",
            "0000000000000000000a.seg",
            "99999999999999999999.seg",
        ] {
            assert_eq!(parse_file_name(other), None, "{other}");
        }
    }

    #[test]
    fn scan_counts_records_and_splits_at_a_boundary() {
        let mut file = tempfile::tempfile().expect("temp file");
        file.write_all(&segment_header()).expect("header");
        let mut ends = Vec::new();
        for (i, payload) in [&b"a"[..], b"", b"hello"].iter().enumerate() {
            file.write_all(&record_header(payload, i as u32 + 1))
                .expect("record header");
            file.write_all(payload).expect("payload");
            ends.push(file.stream_position().expect("position"));
        }
        let len = ends[2];
        assert_eq!(
            check_header(&mut file, len).expect("check"),
            HeaderCheck::Valid
        );
        let scan = scan(&mut file, len, ends[1] + 3).expect("scan");
        assert_eq!(scan.valid_end, len);
        assert_eq!(
            scan.total,
            Tally {
                records: 3,
                points: 6
            }
        );
        assert_eq!(
            scan.before_split,
            Tally {
                records: 2,
                points: 3
            }
        );
        assert_eq!(scan.split_boundary, ends[1]);
        let record = read_record(&mut file, ends[1], len).expect("read");
        let expected = ReadRecord::Valid {
            payload: b"hello".to_vec(),
            points: 3,
            end: len,
        };
        assert_eq!(record, expected);
        assert_eq!(
            read_record(&mut file, ends[1], len - 1).expect("read"),
            ReadRecord::Corrupt
        );
    }

    #[test]
    fn headers_are_classified() {
        let cases: [(&[u8], HeaderCheck); 4] = [
            (b"TSRSP", HeaderCheck::Torn),
            (&[0; 12], HeaderCheck::Torn),
            (b"NOTASPOOL...", HeaderCheck::Foreign),
            (b"TSRSPOOL\x02\0\0\0", HeaderCheck::Unsupported(2)),
        ];
        for (bytes, expected) in cases {
            let mut file = tempfile::tempfile().expect("temp file");
            file.write_all(bytes).expect("write");
            assert_eq!(
                check_header(&mut file, bytes.len() as u64).expect("check"),
                expected
            );
        }
    }
}
