//! The spool's state behind its mutex: what the segment files hold, how far
//! the reader and the committer have got, and the operations on them.
//!
//! The files are the truth; this is the index open() rebuilt from them plus
//! the reader's progress. Every operation updates the files first and the
//! counters after, so an error leaves the counters describing the files.
//! Appending lives here, handing out and committing in `deliver`.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Instant;

use super::segment::{self, Tally, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::{
    cursor, io_error, Appended, FsyncPolicy, Position, SpoolError, SpoolOptions, WhenSpoolFull,
};

mod deliver;

/// The spool's state; see the module docs.
#[derive(Debug)]
pub(super) struct State {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    fsync: FsyncPolicy,
    when_full: WhenSpoolFull,
    /// In sequence order; DropOldest can leave gaps.
    segments: VecDeque<SegmentMeta>,
    next_seq: u64,
    /// The segment being appended to, always the last of `segments`.
    writer: Option<Writer>,
    reader: Option<(u64, File)>,
    /// Everything before this was delivered.
    commit: Position,
    /// Records of `commit.segment` before `commit.offset`.
    committed: Tally,
    /// The next record to hand out is at or after this.
    read: Position,
    /// Handed out since the last commit or rewind, in order.
    in_flight: VecDeque<InFlight>,
    /// Records not yet committed.
    pending: Tally,
    disk_bytes: u64,
    /// Drops not yet returned to an appender (the append that made them failed).
    unreported: Appended,
    dirty: Dirty,
    last_sync: Instant,
}

/// One segment file as far as the spool trusts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SegmentMeta {
    /// Its sequence number.
    pub(super) seq: u64,
    /// Bytes up to the end of its last valid record.
    pub(super) size: u64,
    /// Its valid records.
    pub(super) tally: Tally,
}

/// What open() rebuilt from the directory.
#[derive(Debug, Default)]
pub(super) struct Recovered {
    /// The segments kept, in order.
    pub(super) segments: VecDeque<SegmentMeta>,
    /// Sequence number for the next segment.
    pub(super) next_seq: u64,
    /// The persisted commit position, moved to a record boundary.
    pub(super) commit: Position,
    /// Records of `commit.segment` before it.
    pub(super) committed: Tally,
}

#[derive(Debug)]
struct Writer {
    seq: u64,
    file: File,
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    end: Position,
    points: u32,
}

/// What has been written but not yet synced.
#[derive(Clone, Copy, Debug, Default)]
struct Dirty {
    data: bool,
    dir: bool,
    cursor: bool,
}

impl State {
    /// The state of a freshly opened spool.
    pub(super) fn new(options: SpoolOptions, recovered: Recovered) -> Self {
        let mut state = Self {
            segment_bytes: options.segment_bytes.min(options.max_bytes / 4),
            dir: options.dir,
            max_bytes: options.max_bytes,
            fsync: options.fsync,
            when_full: options.when_full,
            segments: recovered.segments,
            next_seq: recovered.next_seq,
            writer: None,
            reader: None,
            commit: recovered.commit,
            committed: recovered.committed,
            read: recovered.commit,
            in_flight: VecDeque::new(),
            pending: Tally::default(),
            disk_bytes: 0,
            unreported: Appended::default(),
            dirty: Dirty::default(),
            last_sync: Instant::now(),
        };
        for meta in &state.segments {
            state.pending.add(state.uncommitted(meta));
            state.disk_bytes += meta.size;
        }
        state
    }

    /// Records and points not yet committed.
    pub(super) fn pending(&self) -> Tally {
        self.pending
    }

    /// Bytes of the segment files.
    pub(super) fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// Number of segment files.
    pub(super) fn segments_len(&self) -> u64 {
        self.segments.len() as u64
    }

    /// See [`super::Spool::append`].
    pub(super) fn append(&mut self, record: &[u8], points: u32) -> Result<Appended, SpoolError> {
        let frame = RECORD_HEADER_LEN + record.len() as u64;
        if u32::try_from(record.len()).is_err() || SEGMENT_HEADER_LEN + frame > self.max_bytes {
            return Err(SpoolError::RecordTooLarge {
                bytes: frame,
                max_bytes: self.max_bytes,
            });
        }
        self.make_room(frame)?;
        // Sync what is due before writing, so that an error means this
        // record was not spooled.
        self.sync_if_due()?;
        self.ensure_writer(frame)?;
        self.write_record(record, points, frame)?;
        Ok(std::mem::take(&mut self.unreported))
    }

    /// See [`super::Spool::sync`].
    pub(super) fn sync(&mut self) -> Result<(), SpoolError> {
        if self.fsync == FsyncPolicy::Never {
            return Ok(());
        }
        self.sync_pending()
    }

    // === appending ===

    /// Under DropOldest, deletes segments until a frame fits.
    fn make_room(&mut self, frame: u64) -> Result<(), SpoolError> {
        loop {
            let header = if self.needs_new_segment(frame) {
                SEGMENT_HEADER_LEN
            } else {
                0
            };
            if self.disk_bytes + header + frame <= self.max_bytes {
                return Ok(());
            }
            if self.when_full == WhenSpoolFull::Block {
                return Err(SpoolError::Full);
            }
            // append() checked that a frame fits an empty spool, so there is
            // always a victim while it does not fit.
            let Some(victim) = self.pick_victim() else {
                return Err(SpoolError::Full);
            };
            self.drop_segment(victim)?;
        }
    }

    /// The oldest segment holding no handed-out record, else the oldest:
    /// a delivery in progress is likely to succeed, so its records are the
    /// last to go.
    fn pick_victim(&self) -> Option<usize> {
        let in_use = |seq: u64| self.in_flight.iter().any(|r| r.end.segment == seq);
        let idle = self.segments.iter().position(|s| !in_use(s.seq));
        idle.or_else(|| (!self.segments.is_empty()).then_some(0))
    }

    fn drop_segment(&mut self, index: usize) -> Result<(), SpoolError> {
        let Some(victim) = self.segments.get(index).copied() else {
            return Ok(());
        };
        self.delete_file(victim.seq)?;
        let lost = self.uncommitted(&victim);
        self.forget(index);
        self.pending = self.pending.minus(lost);
        self.in_flight.retain(|r| r.end.segment != victim.seq);
        self.unreported.dropped_records += lost.records;
        self.unreported.dropped_points += lost.points;
        Ok(())
    }

    fn needs_new_segment(&self, frame: u64) -> bool {
        match (&self.writer, self.segments.back()) {
            // A record larger than a segment still goes into an empty one.
            (Some(_), Some(last)) => {
                last.size > SEGMENT_HEADER_LEN && last.size + frame > self.segment_bytes
            }
            _ => true,
        }
    }

    fn ensure_writer(&mut self, frame: u64) -> Result<(), SpoolError> {
        if !self.needs_new_segment(frame) {
            return Ok(());
        }
        self.seal_writer()?;
        // Taken before trying, so a name that fails is never retried.
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = self.segment_path(seq);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_error("create", &path, e))?;
        let mut result = file.write_all(&segment::segment_header());
        if result.is_ok() && self.fsync == FsyncPolicy::EveryBatch {
            // The new name must be durable before a record in it is acked.
            result = cursor::sync_dir(&self.dir);
        }
        if let Err(error) = result {
            // If this fails too, open() deletes the headerless file.
            let _ = fs::remove_file(&path);
            return Err(io_error("create", &path, error));
        }
        self.segments.push_back(SegmentMeta {
            seq,
            size: SEGMENT_HEADER_LEN,
            tally: Tally::default(),
        });
        self.disk_bytes += SEGMENT_HEADER_LEN;
        self.writer = Some(Writer { seq, file });
        // Under EveryBatch the header is synced with the first record.
        let deferred = self.fsync != FsyncPolicy::EveryBatch;
        self.dirty.data |= deferred;
        self.dirty.dir |= deferred;
        Ok(())
    }

    /// Stops appending to the current segment, syncing what it still owes.
    fn seal_writer(&mut self) -> Result<(), SpoolError> {
        if let Some(writer) = self.writer.take() {
            if self.dirty.data && self.fsync != FsyncPolicy::Never {
                writer
                    .file
                    .sync_data()
                    .map_err(|e| io_error("sync", &self.segment_path(writer.seq), e))?;
            }
            self.dirty.data = false;
        }
        Ok(())
    }

    fn write_record(&mut self, record: &[u8], points: u32, frame: u64) -> Result<(), SpoolError> {
        let (Some(writer), Some(meta)) = (self.writer.as_mut(), self.segments.back_mut()) else {
            let error = io::Error::other("no segment open for writing");
            return Err(io_error("write", &self.dir, error));
        };
        let header = segment::record_header(record, points);
        let mut result = writer
            .file
            .write_all(&header)
            .and_then(|()| writer.file.write_all(record));
        if result.is_ok() && self.fsync == FsyncPolicy::EveryBatch {
            result = writer.file.sync_data();
        }
        if let Err(error) = result {
            // Cut the partial record so that nothing is ever written after
            // garbage, and seal the segment since its file position is now
            // unknown. If the cut fails, open() cuts it (only the garbage).
            let _ = writer.file.set_len(meta.size);
            let path = self.dir.join(segment::file_name(meta.seq));
            self.writer = None;
            self.dirty.data = false;
            return Err(io_error("write", &path, error));
        }
        meta.size += frame;
        meta.tally.add(Tally::one(points));
        self.disk_bytes += frame;
        self.pending.add(Tally::one(points));
        self.dirty.data |= self.fsync != FsyncPolicy::EveryBatch;
        Ok(())
    }

    // === helpers ===

    fn uncommitted(&self, meta: &SegmentMeta) -> Tally {
        if meta.seq < self.commit.segment {
            Tally::default()
        } else if meta.seq == self.commit.segment {
            meta.tally.minus(self.committed)
        } else {
            meta.tally
        }
    }

    /// Drops a deleted segment from the index.
    fn forget(&mut self, index: usize) {
        let Some(meta) = self.segments.remove(index) else {
            return;
        };
        self.disk_bytes = self.disk_bytes.saturating_sub(meta.size);
        if self.writer.as_ref().is_some_and(|w| w.seq == meta.seq) {
            self.writer = None;
            self.dirty.data = false;
        }
        if self
            .reader
            .as_ref()
            .is_some_and(|(seq, _)| *seq == meta.seq)
        {
            self.reader = None;
        }
    }

    fn delete_file(&self, seq: u64) -> Result<(), SpoolError> {
        // Deletions are never synced: a deleted segment that comes back
        // after a power failure is either before the cursor (open() deletes
        // it again) or was dropped (and is then delivered after all).
        let path = self.segment_path(seq);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(io_error("delete", &path, error)),
        }
    }

    fn sync_if_due(&mut self) -> Result<(), SpoolError> {
        match self.fsync {
            FsyncPolicy::Interval(every) if self.last_sync.elapsed() >= every => {
                self.sync_pending()
            }
            _ => Ok(()),
        }
    }

    fn sync_pending(&mut self) -> Result<(), SpoolError> {
        if self.dirty.data {
            if let Some(writer) = &self.writer {
                writer
                    .file
                    .sync_data()
                    .map_err(|e| io_error("sync", &self.segment_path(writer.seq), e))?;
            }
            self.dirty.data = false;
        }
        if self.dirty.cursor {
            cursor::sync(&self.dir).map_err(|e| io_error("sync", &self.dir, e))?;
            self.dirty.cursor = false;
            // cursor::sync also synced the directory.
            self.dirty.dir = false;
        }
        if self.dirty.dir {
            cursor::sync_dir(&self.dir).map_err(|e| io_error("sync", &self.dir, e))?;
            self.dirty.dir = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    fn segment_path(&self, seq: u64) -> PathBuf {
        self.dir.join(segment::file_name(seq))
    }
}
