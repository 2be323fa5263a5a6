//! The cursor file: how far delivery has got, so a restart does not replay
//! delivered records.
//!
//! ```text
//! CURSOR = magic "TSRSPCUR" version:u32-LE (=1) segment:u64-LE offset:u64-LE crc:u32-LE
//! ```
//!
//! Everything before `(segment, offset)` was delivered. The file is replaced
//! atomically: written to `CURSOR.tmp`, then renamed over `CURSOR`. A cursor
//! that fails its CRC (a rename that reached the disk before the data) is
//! ignored, which replays delivered records: a duplicate, never a loss.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use super::Position;

/// The cursor's file name inside the spool directory.
pub(super) const CURSOR_FILE: &str = "CURSOR";
/// The name the next cursor is written under before the rename.
pub(super) const CURSOR_TMP_FILE: &str = "CURSOR.tmp";

const MAGIC: [u8; 8] = *b"TSRSPCUR";
const VERSION: u32 = 1;
const LEN: usize = 32;

/// What the cursor file held.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum StoredCursor {
    /// No cursor: nothing was ever committed.
    Missing,
    /// A valid cursor.
    Valid(Position),
    /// A cursor file that does not pass its checks.
    Invalid,
}

/// Reads the cursor of the spool in `dir`.
pub(super) fn read(dir: &Path) -> io::Result<StoredCursor> {
    let bytes = match fs::read(dir.join(CURSOR_FILE)) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(StoredCursor::Missing),
        Err(error) => return Err(error),
    };
    Ok(decode(&bytes).map_or(StoredCursor::Invalid, StoredCursor::Valid))
}

/// Replaces the cursor; with `durable`, the data and the rename reach the
/// disk before this returns.
pub(super) fn write(dir: &Path, position: Position, durable: bool) -> io::Result<()> {
    let tmp = dir.join(CURSOR_TMP_FILE);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    file.write_all(&encode(position))?;
    if durable {
        file.sync_data()?;
    }
    drop(file);
    fs::rename(&tmp, dir.join(CURSOR_FILE))?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes an earlier non-durable [`write`] durable.
pub(super) fn sync(dir: &Path) -> io::Result<()> {
    match File::open(dir.join(CURSOR_FILE)) {
        Ok(file) => file.sync_all()?,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    sync_dir(dir)
}

/// Makes the directory's entries (created, renamed files) durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    // Only Unix lets a directory be opened and fsynced; elsewhere the
    // file system orders metadata itself.
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn encode(position: Position) -> [u8; LEN] {
    let mut bytes = [0u8; LEN];
    bytes[..8].copy_from_slice(&MAGIC);
    bytes[8..12].copy_from_slice(&VERSION.to_le_bytes());
    bytes[12..20].copy_from_slice(&position.segment.to_le_bytes());
    bytes[20..28].copy_from_slice(&position.offset.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..28]);
    bytes[28..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Option<Position> {
    let bytes: &[u8; LEN] = bytes.try_into().ok()?;
    let crc = u32::from_le_bytes(bytes[28..].try_into().ok()?);
    let version = u32::from_le_bytes(bytes[8..12].try_into().ok()?);
    if bytes[..8] != MAGIC || version != VERSION || crc32fast::hash(&bytes[..28]) != crc {
        return None;
    }
    Some(Position {
        segment: u64::from_le_bytes(bytes[12..20].try_into().ok()?),
        offset: u64::from_le_bytes(bytes[20..28].try_into().ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_cursor_reads_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(read(dir.path()).expect("read"), StoredCursor::Missing);
        let position = Position {
            segment: 7,
            offset: 1234,
        };
        write(dir.path(), position, true).expect("write");
        write(dir.path(), position, false).expect("rewrite");
        sync(dir.path()).expect("sync");
        assert_eq!(
            read(dir.path()).expect("read"),
            StoredCursor::Valid(position)
        );
        assert!(!dir.path().join(CURSOR_TMP_FILE).exists());
    }

    #[test]
    fn a_damaged_cursor_is_invalid() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut bytes = encode(Position {
            segment: 1,
            offset: 12,
        });
        bytes[15] ^= 1;
        fs::write(dir.path().join(CURSOR_FILE), bytes).expect("write");
        assert_eq!(read(dir.path()).expect("read"), StoredCursor::Invalid);
        fs::write(dir.path().join(CURSOR_FILE), &bytes[..10]).expect("write");
        assert_eq!(read(dir.path()).expect("read"), StoredCursor::Invalid);
    }
}
