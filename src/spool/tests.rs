//! Spool behaviour on real files in temporary directories.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::segment::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::*;
use crate::model::{Batch, Source, Timestamp, Value};

fn options(dir: &Path, max_bytes: u64, segment_bytes: u64) -> SpoolOptions {
    SpoolOptions {
        dir: dir.to_path_buf(),
        max_bytes,
        segment_bytes,
        fsync: FsyncPolicy::Never,
        when_full: WhenSpoolFull::Block,
    }
}

fn open(options: SpoolOptions) -> (Spool, Recovery) {
    Spool::open(options).expect("open spool")
}

/// A payload that names its record, padded to vary sizes.
fn payload(i: u32) -> Vec<u8> {
    let mut bytes = format!("record-{i}:").into_bytes();
    bytes.resize(bytes.len() + (i as usize % 7) * 3, b'x');
    bytes
}

/// A payload of exactly `len` bytes naming its record.
fn sized_payload(i: u32, len: usize) -> Vec<u8> {
    let mut bytes = format!("r{i}:").into_bytes();
    bytes.resize(len, b'.');
    bytes
}

fn points_of(i: u32) -> u32 {
    i + 1
}

fn points_in(range: std::ops::Range<u32>) -> u64 {
    range.map(|i| u64::from(points_of(i))).sum()
}

fn append_all(spool: &Spool, range: std::ops::Range<u32>) {
    for i in range {
        let appended = spool.append(&payload(i), points_of(i)).expect("append");
        assert_eq!(appended, Appended::default());
    }
}

/// Appends a record that must fit without dropping anything.
fn put(spool: &Spool, record: &[u8], points: u32) {
    let appended = spool.append(record, points).expect("append");
    assert_eq!(appended, Appended::default());
}

fn next(spool: &Spool) -> (RecordId, Vec<u8>, u32) {
    spool.next().expect("next").expect("a record")
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort();
    files
}

fn only_segment(dir: &Path) -> PathBuf {
    let files = segment_files(dir);
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().expect("one segment")
}

fn frame(i: u32) -> u64 {
    RECORD_HEADER_LEN + payload(i).len() as u64
}

#[test]
fn records_come_out_in_order_across_segments_and_commits_delete_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spool, recovery) = open(options(dir.path(), 1 << 20, 256));
    assert_eq!(recovery, Recovery::default());
    append_all(&spool, 0..100);
    let n_segments = segment_files(dir.path()).len();
    assert!(n_segments > 10, "{n_segments}");
    assert_eq!(spool.len_records(), 100);
    assert_eq!(spool.len_points(), (1..=100).sum::<u64>());
    for i in 0..100 {
        let (id, bytes, points) = next(&spool);
        assert_eq!((bytes, points), (payload(i), points_of(i)));
        spool.commit(id).expect("commit");
        assert!(segment_files(dir.path()).len() <= n_segments);
    }
    assert!(spool.next().expect("next").is_none());
    assert_eq!((spool.len_records(), spool.len_points()), (0, 0));
    // Only the segment still open for appends is left.
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(
        spool.len_bytes(),
        fs::metadata(only_segment(dir.path())).expect("stat").len()
    );
}

#[test]
fn a_restart_replays_exactly_the_uncommitted_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spool, _) = open(options(dir.path(), 1 << 20, 100));
    append_all(&spool, 0..10);
    let handed_out: Vec<_> = (0..6).map(|_| next(&spool)).collect();
    spool.commit(handed_out[3].0).expect("commit");
    drop(spool);
    let (spool, recovery) = open(options(dir.path(), 1 << 20, 100));
    assert_eq!(recovery.records, 6);
    assert_eq!(recovery.points, points_in(4..10));
    assert_eq!((recovery.torn_records, recovery.torn_bytes), (0, 0));
    assert_eq!(recovery.bytes, spool.len_bytes());
    for i in 4..10 {
        assert_eq!(next(&spool).1, payload(i));
    }
    assert!(spool.next().expect("next").is_none());
}

#[test]
fn the_cursor_survives_a_restart_inside_one_segment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spool, _) = open(SpoolOptions {
        fsync: FsyncPolicy::EveryBatch,
        ..options(dir.path(), 1 << 20, 1 << 16)
    });
    append_all(&spool, 0..5);
    let third = (0..3).map(|_| next(&spool)).last().expect("three records");
    spool.commit(third.0).expect("commit");
    drop(spool);
    assert!(dir.path().join(cursor::CURSOR_FILE).exists());
    let (spool, recovery) = open(options(dir.path(), 1 << 20, 1 << 16));
    assert_eq!((recovery.records, recovery.segments), (2, 1));
    assert_eq!(next(&spool).1, payload(3));
    assert_eq!(next(&spool).1, payload(4));
}

#[test]
fn a_cut_anywhere_in_the_last_record_keeps_every_record_before_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spool, _) = open(options(dir.path(), 1 << 20, 1 << 16));
    append_all(&spool, 0..3);
    drop(spool);
    let path = only_segment(dir.path());
    let original = fs::read(&path).expect("read segment");
    let last_start = SEGMENT_HEADER_LEN + frame(0) + frame(1);
    assert_eq!(original.len() as u64, last_start + frame(2));
    for cut in last_start..original.len() as u64 {
        fs::write(&path, &original[..cut as usize]).expect("cut");
        let (spool, recovery) = open(options(dir.path(), 1 << 20, 1 << 16));
        let torn = cut - last_start;
        assert_eq!(recovery.records, 2, "cut at {cut}");
        assert_eq!(recovery.points, 3);
        assert_eq!(recovery.torn_records, u64::from(torn > 0), "cut at {cut}");
        assert_eq!(recovery.torn_bytes, torn);
        assert_eq!(fs::metadata(&path).expect("stat").len(), last_start);
        assert_eq!(next(&spool).1, payload(0));
        assert_eq!(next(&spool).1, payload(1));
        assert!(spool.next().expect("next").is_none());
    }
}

#[test]
fn a_torn_segment_header_is_deleted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spool, _) = open(options(dir.path(), 1 << 20, 1 << 16));
    append_all(&spool, 0..2);
    drop(spool);
    let torn = dir.path().join(segment::file_name(9));
    for len in 0..SEGMENT_HEADER_LEN as usize {
        fs::write(&torn, &segment::segment_header()[..len]).expect("write");
        let (spool, recovery) = open(options(dir.path(), 1 << 20, 1 << 16));
        assert_eq!((recovery.records, recovery.segments), (2, 1));
        assert_eq!(
            (recovery.torn_records, recovery.torn_bytes),
            (0, len as u64)
        );
        assert!(!torn.exists());
        // A segment created after the deleted one sorts after it too.
        put(&spool, b"after", 1);
        let files = segment_files(dir.path());
        assert!(files.last().is_some_and(|last| *last > torn), "{files:?}");
        drop(spool);
        fs::remove_file(files.last().expect("new segment")).expect("remove");
    }
}

#[test]
fn a_flipped_byte_discards_from_the_bad_record_to_the_segment_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spool, _) = open(options(dir.path(), 1 << 20, 1 << 16));
    append_all(&spool, 0..5);
    drop(spool);
    let path = only_segment(dir.path());
    let original = fs::read(&path).expect("read segment");
    let bad_start = SEGMENT_HEADER_LEN + frame(0) + frame(1);
    // Every byte of the third record: length, CRC, points and payload.
    for at in bad_start..bad_start + frame(2) {
        let mut damaged = original.clone();
        damaged[at as usize] ^= 0x20;
        fs::write(&path, &damaged).expect("write");
        let (spool, recovery) = open(options(dir.path(), 1 << 20, 1 << 16));
        assert_eq!(recovery.records, 2, "flip at {at}");
        assert_eq!(recovery.torn_records, 1);
        assert_eq!(recovery.torn_bytes, original.len() as u64 - bad_start);
        assert_eq!(next(&spool).1, payload(0));
        assert_eq!(next(&spool).1, payload(1));
        assert!(spool.next().expect("next").is_none());
    }
}

#[test]
fn damage_found_while_reading_is_reported_and_skipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spool, _) = open(options(dir.path(), 1 << 20, 1 << 16));
    append_all(&spool, 0..3);
    let path = only_segment(dir.path());
    let mut bytes = fs::read(&path).expect("read");
    let bad_start = SEGMENT_HEADER_LEN + frame(0);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    bytes[bad_start as usize + 13] ^= 1;
    fs::write(&path, &bytes).expect("damage");
    let (first, _, _) = next(&spool);
    match spool.next() {
        Err(SpoolError::Corrupt {
            offset,
            dropped_records,
            dropped_points,
            ..
        }) => {
            assert_eq!(offset, bad_start);
            assert_eq!(dropped_records, 2);
            assert_eq!(dropped_points, u64::from(points_of(1) + points_of(2)));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert!(spool.next().expect("next").is_none());
    assert_eq!(spool.len_records(), 1);
    assert_eq!(fs::metadata(&path).expect("stat").len(), bad_start);
    // Appends go on in a new segment, after the surviving record.
    put(&spool, b"later", 4);
    assert_eq!(next(&spool).1, b"later");
    spool.commit(first).expect("commit");
    spool.rewind();
    assert_eq!(next(&spool).1, b"later");
}

/// 88-byte payloads make 100-byte frames: nine fill a 1000-byte segment.
const FRAME_PAYLOAD: usize = 88;

#[test]
fn drop_oldest_deletes_whole_segments_and_reports_their_points() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spool, _) = open(SpoolOptions {
        when_full: WhenSpoolFull::DropOldest,
        ..options(dir.path(), 4000, 1 << 30)
    });
    let mut dropped = Appended::default();
    let mut first_drop_at = None;
    for i in 0..100u32 {
        let appended = spool
            .append(&sized_payload(i, FRAME_PAYLOAD), points_of(i))
            .expect("append");
        if appended != Appended::default() && first_drop_at.is_none() {
            first_drop_at = Some(i);
            // The first segment, records 0..9, goes whole.
            assert_eq!(appended.dropped_records, 9);
            assert_eq!(appended.dropped_points, points_in(0..9));
        }
        dropped.dropped_records += appended.dropped_records;
        dropped.dropped_points += appended.dropped_points;
        assert!(spool.len_bytes() <= 4000);
    }
    // Four full segments (4 x 912 bytes) and three records in a fifth fit.
    assert_eq!(first_drop_at, Some(39));
    let mut delivered = Vec::new();
    while let Some((id, bytes, _)) = spool.next().expect("next") {
        delivered.push(bytes);
        spool.commit(id).expect("commit");
    }
    let first_kept = dropped.dropped_records as u32;
    let expected: Vec<_> = (first_kept..100)
        .map(|i| sized_payload(i, FRAME_PAYLOAD))
        .collect();
    assert_eq!(delivered, expected);
    let dropped_points: u64 = points_in(0..first_kept);
    assert_eq!(dropped.dropped_points, dropped_points);
}

#[test]
fn drop_oldest_spares_the_segment_being_delivered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spool, _) = open(SpoolOptions {
        when_full: WhenSpoolFull::DropOldest,
        ..options(dir.path(), 4000, 1000)
    });
    let append = |i: u32| {
        spool
            .append(&sized_payload(i, FRAME_PAYLOAD), points_of(i))
            .expect("append")
    };
    for i in 0..9 {
        assert_eq!(append(i), Appended::default());
    }
    let (in_flight, _, _) = next(&spool);
    for i in 9..39 {
        assert_eq!(append(i), Appended::default());
    }
    let appended = append(39);
    assert_eq!(appended.dropped_records, 9);
    assert_eq!(appended.dropped_points, points_in(9..18));
    spool.commit(in_flight).expect("commit");
    let rest: Vec<_> = std::iter::from_fn(|| spool.next().expect("next").map(|r| r.1)).collect();
    let expected: Vec<_> = (1..9)
        .chain(18..40)
        .map(|i| sized_payload(i, FRAME_PAYLOAD))
        .collect();
    assert_eq!(rest, expected);
}

#[test]
fn block_refuses_when_full_until_deliveries_free_a_segment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spool, _) = open(options(dir.path(), 4000, 1000));
    let mut appended = 0;
    loop {
        match spool.append(&sized_payload(appended, FRAME_PAYLOAD), 1) {
            Ok(dropped) => assert_eq!(dropped, Appended::default()),
            Err(SpoolError::Full) => break,
            Err(other) => panic!("{other}"),
        }
        appended += 1;
    }
    assert_eq!(appended, 39);
    assert_eq!(spool.len_records(), 39);
    assert!(SpoolError::Full.is_retryable());
    // Delivering part of a segment frees nothing; delivering all of it does.
    for _ in 0..8 {
        spool.commit(next(&spool).0).expect("commit");
    }
    let another = sized_payload(99, FRAME_PAYLOAD);
    assert!(matches!(spool.append(&another, 1), Err(SpoolError::Full)));
    spool.commit(next(&spool).0).expect("commit");
    put(&spool, &sized_payload(39, FRAME_PAYLOAD), 1);
    assert_eq!(spool.len_records(), 31);
}

#[test]
fn rewind_hands_out_again_everything_after_the_last_commit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spool, _) = open(options(dir.path(), 1 << 20, 64));
    append_all(&spool, 0..5);
    let (a, _, _) = next(&spool);
    let (_, _, _) = next(&spool);
    let (c, _, _) = next(&spool);
    spool.commit(a).expect("commit");
    spool.rewind();
    assert!(matches!(
        spool.commit(c),
        Err(SpoolError::NotHandedOut { .. })
    ));
    assert_eq!(next(&spool).1, payload(1));
    let (again, bytes, _) = next(&spool);
    assert_eq!((again, bytes), (c, payload(2)));
    spool.commit(c).expect("commit");
    // Committing an older record again changes nothing.
    spool.commit(a).expect("recommit");
    assert_eq!(spool.len_records(), 2);
    assert_eq!(next(&spool).1, payload(3));
}

#[test]
fn a_second_open_of_the_directory_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spool, _) = open(options(dir.path(), 1 << 20, 1 << 16));
    match Spool::open(options(dir.path(), 1 << 20, 1 << 16)) {
        Err(error @ SpoolError::Locked { .. }) => {
            assert!(error.to_string().contains("in use"), "{error}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(spool);
    open(options(dir.path(), 1 << 20, 1 << 16));
}

#[test]
fn records_larger_than_a_segment_get_their_own() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spool, _) = open(options(dir.path(), 1000, 1 << 20));
    let big = vec![7u8; 500];
    put(&spool, b"small", 1);
    put(&spool, &big, 2);
    put(&spool, b"small again", 3);
    assert_eq!(segment_files(dir.path()).len(), 3);
    assert_eq!(next(&spool).1, b"small");
    assert_eq!(next(&spool).1, big);
    assert_eq!(next(&spool).1, b"small again");
    match spool.append(&[0u8; 1000], 1) {
        Err(error @ SpoolError::RecordTooLarge { .. }) => assert!(!error.is_retryable()),
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
}

#[test]
fn appends_after_a_fully_delivered_restart_are_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spool, _) = open(options(dir.path(), 1 << 20, 1 << 16));
    append_all(&spool, 0..3);
    let last = (0..3).map(|_| next(&spool)).last().expect("three records");
    spool.commit(last.0).expect("commit");
    drop(spool);
    let (spool, recovery) = open(options(dir.path(), 1 << 20, 1 << 16));
    assert_eq!((recovery.records, recovery.segments), (0, 0));
    assert!(segment_files(dir.path()).is_empty());
    put(&spool, b"new", 9);
    drop(spool);
    // The new segment sorts after the cursor, so it is not taken as delivered.
    let (spool, recovery) = open(options(dir.path(), 1 << 20, 1 << 16));
    assert_eq!((recovery.records, recovery.points), (1, 9));
    assert_eq!(next(&spool).1, b"new");
}

#[test]
fn a_damaged_cursor_replays_everything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spool, _) = open(options(dir.path(), 1 << 20, 1 << 16));
    append_all(&spool, 0..3);
    spool.commit(next(&spool).0).expect("commit");
    drop(spool);
    fs::write(dir.path().join(cursor::CURSOR_FILE), b"garbage").expect("damage");
    let (spool, recovery) = open(options(dir.path(), 1 << 20, 1 << 16));
    assert!(recovery.cursor_reset);
    assert_eq!(recovery.records, 3);
    assert_eq!(next(&spool).1, payload(0));
}

#[test]
fn foreign_and_future_segments_are_refused_and_other_files_ignored() {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join("README"), b"not a segment").expect("write");
    let (spool, recovery) = open(options(dir.path(), 1 << 20, 1 << 16));
    assert_eq!(recovery, Recovery::default());
    drop(spool);
    let segment_path = dir.path().join(segment::file_name(3));
    fs::write(&segment_path, b"SOMETHING ELSE").expect("write");
    let error = Spool::open(options(dir.path(), 1 << 20, 1 << 16)).expect_err("foreign");
    assert!(matches!(error, SpoolError::NotASegment { .. }), "{error}");
    fs::write(&segment_path, b"TSRSPOOL\x09\0\0\0").expect("write");
    let error = Spool::open(options(dir.path(), 1 << 20, 1 << 16)).expect_err("future");
    assert!(
        matches!(error, SpoolError::UnsupportedVersion { version: 9, .. }),
        "{error}"
    );
    assert!(segment_path.exists());
}

#[test]
fn every_fsync_policy_spools_and_recovers() {
    let policies = [
        FsyncPolicy::EveryBatch,
        FsyncPolicy::Interval(Duration::ZERO),
        FsyncPolicy::Interval(Duration::from_secs(3600)),
        FsyncPolicy::Never,
    ];
    for fsync in policies {
        let dir = tempfile::tempdir().expect("temp dir");
        let spool_options = SpoolOptions {
            fsync,
            ..options(dir.path(), 1 << 20, 128)
        };
        let (spool, _) = open(spool_options.clone());
        append_all(&spool, 0..10);
        spool.commit(next(&spool).0).expect("commit");
        spool.sync().expect("sync");
        drop(spool);
        let (spool, recovery) = open(spool_options);
        assert_eq!(recovery.records, 9, "{fsync:?}");
        assert_eq!(next(&spool).1, payload(1));
    }
}

#[test]
fn encoded_points_survive_the_spool() {
    let source = Arc::new(Source {
        account_id: Some(1),
        check_name: Some("check".into()),
        ..Source::default()
    });
    let mut batch = Batch::new();
    for i in 0..100 {
        let value = Value::I64(i);
        let point_source = Some(Arc::clone(&source));
        batch.push(
            "m",
            [("k", "v")],
            Timestamp::from_millis(i),
            value,
            point_source,
        );
    }
    let mut bytes = Vec::new();
    let n_points = record::encode_points(batch.iter(), &mut bytes);
    let dir = tempfile::tempdir().expect("temp dir");
    let (spool, _) = open(options(dir.path(), 1 << 20, 1 << 16));
    put(&spool, &bytes, n_points);
    drop(spool);
    let (spool, recovery) = open(options(dir.path(), 1 << 20, 1 << 16));
    assert_eq!(recovery.points, 100);
    let (_, stored, points) = next(&spool);
    let mut decoded = Batch::new();
    assert_eq!(record::decode_points(&stored, &mut decoded), Ok(points));
    assert_eq!(decoded.to_points(), batch.to_points());
}

#[test]
fn the_spool_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Spool>();
}
