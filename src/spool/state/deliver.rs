//! The reading side of the spool's state: handing records out, committing
//! them, rewinding, and deleting what was delivered.

use std::fs::{File, OpenOptions};
use std::io;

use super::{InFlight, State};
use crate::spool::segment::{self, ReadRecord, Tally, SEGMENT_HEADER_LEN};
use crate::spool::{cursor, io_error, FsyncPolicy, Position, RecordId, SpoolError};

impl State {
    /// See [`crate::spool::Spool::next`].
    pub(in crate::spool) fn next(
        &mut self,
    ) -> Result<Option<(RecordId, Vec<u8>, u32)>, SpoolError> {
        loop {
            let Some(index) = self
                .segments
                .iter()
                .position(|s| s.seq >= self.read.segment)
            else {
                return Ok(None);
            };
            let Some(meta) = self.segments.get(index).copied() else {
                return Ok(None);
            };
            if meta.seq > self.read.segment || self.read.offset < SEGMENT_HEADER_LEN {
                self.read = Position {
                    segment: meta.seq,
                    offset: SEGMENT_HEADER_LEN,
                };
            }
            if self.read.offset >= meta.size {
                let Some(following) = self.segments.get(index + 1) else {
                    return Ok(None);
                };
                self.read = Position {
                    segment: following.seq,
                    offset: SEGMENT_HEADER_LEN,
                };
                continue;
            }
            let offset = self.read.offset;
            let outcome = self
                .reader(meta.seq)
                .and_then(|file| segment::read_record(file, offset, meta.size));
            let outcome = match outcome {
                Ok(outcome) => outcome,
                // Deleted behind the spool's back: as lost as a bad CRC.
                Err(error) if error.kind() == io::ErrorKind::NotFound => ReadRecord::Corrupt,
                Err(error) => return Err(io_error("read", &self.segment_path(meta.seq), error)),
            };
            let ReadRecord::Valid {
                payload,
                points,
                end,
            } = outcome
            else {
                return Err(self.discard_tail(index, offset));
            };
            self.read.offset = end;
            self.in_flight.push_back(InFlight {
                end: self.read,
                points,
            });
            let id = RecordId {
                segment: meta.seq,
                end,
            };
            return Ok(Some((id, payload, points)));
        }
    }

    /// See [`crate::spool::Spool::commit`].
    pub(in crate::spool) fn commit(&mut self, id: RecordId) -> Result<(), SpoolError> {
        let target = Position {
            segment: id.segment,
            offset: id.end,
        };
        if target > self.commit {
            if target > self.read {
                return Err(SpoolError::NotHandedOut { id });
            }
            self.advance_commit(target);
            let durable = self.fsync == FsyncPolicy::EveryBatch;
            cursor::write(&self.dir, self.commit, durable)
                .map_err(|e| io_error("write", &self.dir.join(cursor::CURSOR_FILE), e))?;
            self.dirty.cursor |= !durable;
        }
        self.delete_delivered()?;
        self.sync_if_due()
    }

    /// See [`crate::spool::Spool::rewind`].
    pub(in crate::spool) fn rewind(&mut self) {
        self.read = self.commit;
        self.in_flight.clear();
    }

    fn reader(&mut self, seq: u64) -> io::Result<&mut File> {
        let file = match self.reader.take() {
            Some((open, file)) if open == seq => file,
            _ => File::open(self.segment_path(seq))?,
        };
        Ok(&mut self.reader.insert((seq, file)).1)
    }

    /// Cuts a segment at a damaged record and accounts for what was lost.
    fn discard_tail(&mut self, index: usize, offset: u64) -> SpoolError {
        let path = self.segment_path(self.read.segment);
        let seq = self.read.segment;
        // Records before `offset` are the committed ones and the ones in flight.
        let mut kept = Tally::default();
        if self.commit.segment == seq {
            kept = self.committed;
        }
        for record in self.in_flight.iter().filter(|r| r.end.segment == seq) {
            kept.add(Tally::one(record.points));
        }
        let mut lost = Tally::default();
        if let Some(meta) = self.segments.get_mut(index) {
            lost = meta.tally.minus(kept);
            self.disk_bytes -= meta.size.saturating_sub(offset);
            meta.size = offset;
            meta.tally = kept;
        }
        self.pending = self.pending.minus(lost);
        self.reader = None;
        // Cut the file too so that a rewind or a restart does not meet the
        // damage again; if that fails, the next open() finds and cuts it.
        match self.writer.take() {
            Some(writer) if writer.seq == seq => {
                let _ = writer.file.set_len(offset);
                self.dirty.data = false;
            }
            other => {
                self.writer = other;
                if let Ok(file) = OpenOptions::new().write(true).open(&path) {
                    let _ = file.set_len(offset);
                }
            }
        }
        SpoolError::Corrupt {
            path,
            offset,
            dropped_records: lost.records,
            dropped_points: lost.points,
        }
    }

    /// Moves the commit position to `target`, retiring in-flight records.
    fn advance_commit(&mut self, target: Position) {
        while let Some(record) = self.in_flight.front().copied() {
            if record.end > target {
                break;
            }
            self.in_flight.pop_front();
            if record.end.segment != self.commit.segment {
                self.committed = Tally::default();
            }
            self.commit = record.end;
            self.committed.add(Tally::one(record.points));
            self.pending = self.pending.minus(Tally::one(record.points));
        }
        // A record whose segment DropOldest deleted has left in-flight
        // already; committing it still moves the position.
        if target > self.commit {
            if target.segment != self.commit.segment {
                self.committed = Tally::default();
            }
            self.commit = target;
        }
    }

    /// Deletes the segments every record of which is committed, except the
    /// one still being appended to.
    fn delete_delivered(&mut self) -> Result<(), SpoolError> {
        while let Some(front) = self.segments.front().copied() {
            let is_writer = self.writer.as_ref().is_some_and(|w| w.seq == front.seq);
            let delivered = front.seq < self.commit.segment
                || (front.seq == self.commit.segment
                    && self.commit.offset >= front.size
                    && !is_writer);
            if !delivered {
                return Ok(());
            }
            self.delete_file(front.seq)?;
            self.forget(0);
        }
        Ok(())
    }
}
