//! The disk spool: a durable, bounded, append-only FIFO of records for one
//! upstream (design.md section 5).
//!
//! A record is an opaque payload (usually [`record::encode_points`]) plus
//! its point count. Records go to segment files in the spool directory
//! (`00000000000000000001.seg`, ...; format in `segment.rs`), each record
//! framed with its length and a CRC-32. The reader hands records out in
//! append order with [`Spool::next`]; [`Spool::commit`] says a record and
//! everything before it was delivered, which deletes fully delivered
//! segments and persists the read position in the `CURSOR` file (format in
//! `cursor.rs`); [`Spool::rewind`] hands out again everything after the
//! last commit. Delivery is therefore at least once.
//!
//! [`Spool::open`] validates every record; a torn or corrupt record and
//! everything after it in its segment is cut off and reported in
//! [`Recovery`]. A restart always starts a new segment, so a segment is
//! never appended to after a crash.
//!
//! The spool is bounded by `max_bytes` of segment files. When a record does
//! not fit, [`WhenSpoolFull`] decides: `Block` refuses it with
//! [`SpoolError::Full`]; `DropOldest` deletes whole segments, oldest first,
//! but keeps segments holding records handed out and not yet committed
//! unless nothing else can make room, and reports the points it dropped.
//!
//! Only one process may use a directory: an exclusive lock on its `LOCK`
//! file is held while the [`Spool`] lives. All I/O is blocking `std::fs`;
//! async callers use `spawn_blocking`. This module knows nothing of
//! protocols, queues or telemetry.

pub mod record;

mod cursor;
mod recover;
mod segment;
mod state;

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use state::State;

/// Default size of one segment file.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// The name of the lock file inside a spool directory.
pub const LOCK_FILE: &str = "LOCK";

/// How to open a spool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolOptions {
    /// The spool directory, created if missing; one per upstream.
    pub dir: PathBuf,
    /// Most bytes the segment files may take together.
    pub max_bytes: u64,
    /// Size at which a segment is closed and a new one started; capped to
    /// `max_bytes / 4` so that dropping one segment frees a useful share.
    pub segment_bytes: u64,
    /// When appended data and the cursor are forced to disk.
    pub fsync: FsyncPolicy,
    /// What an append does when the spool is full.
    pub when_full: WhenSpoolFull,
}

/// When the spool calls `fdatasync`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before every append and commit returns: nothing acknowledged is lost
    /// to a power failure.
    #[default]
    EveryBatch,
    /// At most once per interval, from an append, a commit or [`Spool::sync`]
    /// (which the caller runs on a timer): up to one interval of data can
    /// be lost to a power failure, none to a crash of the process.
    Interval(Duration),
    /// Never: the operating system writes back when it likes, and
    /// [`Spool::sync`] does nothing.
    Never,
}

/// What an append does when the record does not fit in `max_bytes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WhenSpoolFull {
    /// Delete the oldest whole segments and report the points dropped.
    DropOldest,
    /// Refuse the record with [`SpoolError::Full`]; the caller holds or
    /// drops it.
    #[default]
    Block,
}

/// What [`Spool::open`] found on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records not yet delivered, to be handed out again.
    pub records: u64,
    /// Points in those records.
    pub points: u64,
    /// Bytes of the segment files kept (what `max_bytes` bounds).
    pub bytes: u64,
    /// Torn or corrupt records cut off: one per segment whose tail was cut.
    pub torn_records: u64,
    /// Bytes cut off (the bad record and everything after it in its segment).
    pub torn_bytes: u64,
    /// Segment files kept.
    pub segments: u64,
    /// True when the cursor file was unreadable, so delivered records may
    /// be handed out again.
    pub cursor_reset: bool,
}

/// What an append dropped to make room (only under [`WhenSpoolFull::DropOldest`]).
#[must_use]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Records deleted unread (or handed out and not yet committed).
    pub dropped_records: u64,
    /// Points in those records.
    pub dropped_points: u64,
}

/// Identifies a record handed out by [`Spool::next`], for [`Spool::commit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId {
    segment: u64,
    end: u64,
}

/// Why a spool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Another process (or another `Spool` in this one) holds the directory.
    #[error("spool directory {dir} is in use by another process")]
    Locked {
        /// The spool directory.
        dir: PathBuf,
    },
    /// A file operation failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The record does not fit and the policy is [`WhenSpoolFull::Block`].
    #[error("spool is full")]
    Full,
    /// The record can never fit: it is larger than `max_bytes` (or 4 GiB).
    #[error("record of {bytes} bytes cannot fit a spool of {max_bytes} bytes")]
    RecordTooLarge {
        /// The record's size with its framing.
        bytes: u64,
        /// The spool's bound.
        max_bytes: u64,
    },
    /// A file named like a segment does not start like one.
    #[error("{path} is not a spool segment")]
    NotASegment {
        /// The file.
        path: PathBuf,
    },
    /// A segment written by a build with another format version.
    #[error("{path} has spool format version {version}")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
    /// [`Spool::commit`] got a record not handed out since the last rewind.
    #[error("record {id} was not handed out")]
    NotHandedOut {
        /// The record.
        id: RecordId,
    },
    /// [`Spool::next`] found a record damaged after open; it and the rest of
    /// its segment were discarded and the next call goes on after them.
    #[error("corrupt record at {path} offset {offset}: {dropped_records} records ({dropped_points} points) discarded")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
        /// Records discarded.
        dropped_records: u64,
        /// Points in those records.
        dropped_points: u64,
    },
}

/// A durable FIFO of records on disk; see the module docs.
#[derive(Debug)]
pub struct Spool {
    state: Mutex<State>,
    /// Holds the directory's exclusive lock until the spool is dropped.
    _lock: File,
}

/// A place in the spool: a segment and a byte offset in it. A position in
/// a segment that no longer exists means the start of the next one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    segment: u64,
    offset: u64,
}

// === impl Spool ===

impl Spool {
    /// Opens (creating if needed) the spool directory, locks it, and
    /// validates every segment; see [`Recovery`].
    ///
    /// # Errors
    /// [`SpoolError::Locked`] when the directory is in use,
    /// [`SpoolError::NotASegment`] or [`SpoolError::UnsupportedVersion`] for
    /// segment files this build must not touch, [`SpoolError::Io`] otherwise.
    pub fn open(options: SpoolOptions) -> Result<(Spool, Recovery), SpoolError> {
        fs::create_dir_all(&options.dir).map_err(|e| io_error("create", &options.dir, e))?;
        let lock_path = options.dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| io_error("open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked { dir: options.dir });
            }
            Err(TryLockError::Error(source)) => return Err(io_error("lock", &lock_path, source)),
        }
        let (state, recovery) = recover::recover(options)?;
        let spool = Spool {
            state: Mutex::new(state),
            _lock: lock,
        };
        Ok((spool, recovery))
    }

    /// Appends one record of `points` points.
    ///
    /// # Errors
    /// On any error the record was not spooled. [`SpoolError::Full`] under
    /// [`WhenSpoolFull::Block`]; [`SpoolError::RecordTooLarge`] when it can
    /// never fit; [`SpoolError::Io`] when writing or syncing failed. Drops
    /// made before an error are reported by the next successful append.
    pub fn append(&self, record: &[u8], points: u32) -> Result<Appended, SpoolError> {
        self.state().append(record, points)
    }

    /// Forces appended data and the cursor to disk (nothing under
    /// [`FsyncPolicy::Never`]); run it on a timer with
    /// [`FsyncPolicy::Interval`].
    ///
    /// # Errors
    /// [`SpoolError::Io`] when a sync failed.
    pub fn sync(&self) -> Result<(), SpoolError> {
        self.state().sync()
    }

    /// The oldest record not yet handed out, with its point count, or
    /// `None` when every record has been handed out.
    ///
    /// # Errors
    /// [`SpoolError::Corrupt`] when the record is damaged on disk (the next
    /// call goes on after it); [`SpoolError::Io`] when reading failed.
    pub fn next(&self) -> Result<Option<(RecordId, Vec<u8>, u32)>, SpoolError> {
        self.state().next()
    }

    /// Marks `id` and every record before it delivered: fully delivered
    /// segments are deleted and the position is persisted.
    ///
    /// # Errors
    /// [`SpoolError::NotHandedOut`] for a record not handed out since the
    /// last rewind; [`SpoolError::Io`] when the cursor could not be written
    /// or a segment deleted (a later commit retries the deletion).
    pub fn commit(&self, id: RecordId) -> Result<(), SpoolError> {
        self.state().commit(id)
    }

    /// Hands out again every record after the last commit.
    pub fn rewind(&self) {
        self.state().rewind();
    }

    /// Records not yet committed (handed out or not).
    pub fn len_records(&self) -> u64 {
        self.state().pending().records
    }

    /// Points in the records not yet committed.
    pub fn len_points(&self) -> u64 {
        self.state().pending().points
    }

    /// Bytes of the segment files, the quantity `max_bytes` bounds. A
    /// segment's delivered records keep their bytes until the whole segment
    /// is delivered.
    pub fn len_bytes(&self) -> u64 {
        self.state().disk_bytes()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock; if one ever did, the
        // files stay authoritative and the counters at worst drift until a
        // restart rescans, so keep serving rather than poison every caller.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // Best effort: an interval's worth of appends would otherwise wait
        // for the OS. Errors have no one to go to.
        let _ = self.state().sync();
    }
}

// === impl SpoolOptions ===

impl SpoolOptions {
    /// Options with the defaults: 64 MiB segments (capped to a quarter of
    /// `max_bytes`), fsync on every batch, block when full.
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self {
            dir: dir.into(),
            max_bytes,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            fsync: FsyncPolicy::default(),
            when_full: WhenSpoolFull::default(),
        }
    }
}

// === impl SpoolError ===

impl SpoolError {
    /// True when trying again later can succeed (after deliveries free room,
    /// or a transient I/O error).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Full | Self::Io { .. } | Self::Locked { .. } => true,
            Self::RecordTooLarge { .. }
            | Self::NotASegment { .. }
            | Self::UnsupportedVersion { .. }
            | Self::NotHandedOut { .. }
            | Self::Corrupt { .. } => false,
        }
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", segment::file_name(self.segment), self.end)
    }
}

/// Wraps an I/O error with what was being done to which path.
fn io_error(action: &'static str, path: &Path, source: io::Error) -> SpoolError {
    SpoolError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests;
