//! Opening a spool directory: read the cursor, delete what it says was
//! delivered, validate every record of the rest, cut torn tails, and
//! rebuild the in-memory index.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::Path;

use super::cursor::{self, StoredCursor};
use super::segment::{self, HeaderCheck, SEGMENT_HEADER_LEN};
use super::state::{Recovered, SegmentMeta, State};
use super::{io_error, FsyncPolicy, Position, Recovery, SpoolError, SpoolOptions};

/// Scans `options.dir` (already locked) and returns the spool's state.
pub(super) fn recover(options: SpoolOptions) -> Result<(State, Recovery), SpoolError> {
    let dir = options.dir.as_path();
    let durable = options.fsync != FsyncPolicy::Never;
    remove_if_present(&dir.join(cursor::CURSOR_TMP_FILE))?;
    let mut report = Recovery::default();
    let cursor_path = dir.join(cursor::CURSOR_FILE);
    let commit = match cursor::read(dir).map_err(|e| io_error("read", &cursor_path, e))? {
        StoredCursor::Valid(position) => position,
        StoredCursor::Missing => Position::default(),
        StoredCursor::Invalid => {
            report.cursor_reset = true;
            Position::default()
        }
    };
    let mut recovered = Recovered {
        segments: VecDeque::new(),
        next_seq: commit.segment,
        commit,
        committed: Default::default(),
    };
    let mut dir_changed = false;
    for seq in list_segments(dir)? {
        recovered.next_seq = recovered.next_seq.max(seq);
        let path = dir.join(segment::file_name(seq));
        if seq < commit.segment {
            // Delivered; the commit that deleted it did not reach the disk.
            remove_if_present(&path)?;
            dir_changed = true;
            continue;
        }
        match recover_segment(&path, seq, commit, durable, &mut report)? {
            Some((meta, committed)) => {
                if seq == commit.segment {
                    recovered.commit.offset = committed.1;
                    recovered.committed = committed.0;
                }
                recovered.segments.push_back(meta);
            }
            None => {
                remove_if_present(&path)?;
                dir_changed = true;
            }
        }
    }
    recovered.next_seq = recovered.next_seq.saturating_add(1);
    if dir_changed && durable {
        cursor::sync_dir(dir).map_err(|e| io_error("sync", dir, e))?;
    }
    let state = State::new(options, recovered);
    report.records = state.pending().records;
    report.points = state.pending().points;
    report.bytes = state.disk_bytes();
    report.segments = state.segments_len();
    Ok((state, report))
}

/// What a segment held before the cursor: its records, and the boundary.
type Committed = (segment::Tally, u64);

/// Validates one segment and cuts a bad tail. `None` means the segment
/// holds nothing left to deliver and is to be deleted.
fn recover_segment(
    path: &Path,
    seq: u64,
    commit: Position,
    durable: bool,
    report: &mut Recovery,
) -> Result<Option<(SegmentMeta, Committed)>, SpoolError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io_error("open", path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| io_error("stat", path, e))?
        .len();
    match segment::check_header(&mut file, file_len).map_err(|e| io_error("read", path, e))? {
        HeaderCheck::Valid => {}
        HeaderCheck::Torn => {
            // Created but never given a record: a crash while starting it.
            report.torn_bytes += file_len;
            return Ok(None);
        }
        HeaderCheck::Foreign => {
            return Err(SpoolError::NotASegment {
                path: path.to_path_buf(),
            })
        }
        HeaderCheck::Unsupported(version) => {
            return Err(SpoolError::UnsupportedVersion {
                path: path.to_path_buf(),
                version,
            })
        }
    }
    let split = if seq == commit.segment {
        commit.offset
    } else {
        SEGMENT_HEADER_LEN
    };
    let scan = segment::scan(&mut file, file_len, split).map_err(|e| io_error("read", path, e))?;
    if scan.valid_end < file_len {
        report.torn_records += 1;
        report.torn_bytes += file_len - scan.valid_end;
        file.set_len(scan.valid_end)
            .map_err(|e| io_error("truncate", path, e))?;
        if durable {
            file.sync_all().map_err(|e| io_error("sync", path, e))?;
        }
    }
    let committed = if seq == commit.segment {
        (scan.before_split, scan.split_boundary)
    } else {
        (segment::Tally::default(), SEGMENT_HEADER_LEN)
    };
    if scan.total.records == committed.0.records {
        // Everything delivered, or no record at all: a restart never
        // appends to an old segment, so it has no further use.
        return Ok(None);
    }
    let meta = SegmentMeta {
        seq,
        size: scan.valid_end,
        tally: scan.total,
    };
    Ok(Some((meta, committed)))
}

/// The sequence numbers of the segment files in `dir`, in order.
fn list_segments(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error("list", dir, e))? {
        let entry = entry.map_err(|e| io_error("list", dir, e))?;
        if let Some(seq) = entry
            .file_name()
            .to_str()
            .and_then(segment::parse_file_name)
        {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

fn remove_if_present(path: &Path) -> Result<(), SpoolError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io_error("delete", path, error)),
    }
}
