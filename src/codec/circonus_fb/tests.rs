use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use flatbuffers::FlatBufferBuilder;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::codec::{Encoder, Reason, Rejects, Skipped, Unrepresentable};
use crate::model::{Batch, Bin, Histogram, Point, Source, Timestamp, Value, ValueKind};

const V1_FIXTURE: &[u8] = include_bytes!("../../../tests/fixtures/metriclist_v1_CIML.bin");
const V2_FIXTURE: &[u8] = include_bytes!("../../../tests/fixtures/metriclist_v2_CMLS.bin");

const FIXTURE_TIME: i64 = 1_700_000_000_123;
const UUID: &str = "1b988fd7-d1e2-48ec-848e-55709511d43f";
const UUID_BYTES: [u8; 16] = [
    0x1b, 0x98, 0x8f, 0xd7, 0xd1, 0xe2, 0x48, 0xec, 0x84, 0x8e, 0x55, 0x70, 0x95, 0x11, 0xd4, 0x3f,
];

fn decode_all(body: &[u8]) -> (Result<FbOutcome, FlatbufferError>, Vec<Point>, Rejects) {
    let mut batch = Batch::new();
    let mut rejects = Rejects::default();
    let outcome = decode(body, &mut batch, &mut rejects);
    (outcome, batch.to_points(), rejects)
}

fn source() -> Arc<Source> {
    Arc::new(Source {
        account_id: Some(1),
        check_uuid: Some(UUID.to_owned()),
        check_name: Some("test".to_owned()),
        target: None,
        module: None,
    })
}

fn fixture_point() -> Point {
    Point {
        name: "duration".to_owned(),
        tags: vec![("env".to_owned(), "prod".to_owned())],
        timestamp: Timestamp::from_millis(FIXTURE_TIME),
        value: Value::F64(1.5),
        source: Some(source()),
    }
}

fn encode(generation: Generation, points: &[Point]) -> (Vec<u8>, usize, Skipped) {
    let mut encoder = CirconusFbEncoder::new(generation, None);
    let batch: Batch = points.iter().cloned().collect();
    let mut out = Vec::new();
    let mut skipped = Skipped::default();
    let written = encoder.encode(&mut batch.iter(), &mut out, &mut skipped);
    (out, written, skipped)
}

fn hist(bins: &[(i8, i8, u64)], cumulative: bool) -> Value {
    Value::Histogram(Arc::new(Histogram {
        bins: bins
            .iter()
            .map(|&(val, exp, count)| Bin { val, exp, count })
            .collect(),
        cumulative,
    }))
}

// === fixtures ===

#[test]
fn decodes_the_v1_fixture() {
    let (outcome, points, rejects) = decode_all(V1_FIXTURE);
    let outcome = outcome.expect("body decodes");
    assert_eq!(
        outcome,
        FbOutcome {
            generation: Generation::Ciml,
            records: 1,
            errors: 0
        }
    );
    assert_eq!(rejects.total(), 0);
    assert_eq!(points, vec![fixture_point()]);
    let source = points[0].source.as_deref().expect("a source");
    assert_eq!(source.target, None);
    assert_eq!(source.module, None);
}

#[test]
fn decodes_the_v2_fixture() {
    let (outcome, points, _) = decode_all(V2_FIXTURE);
    assert_eq!(
        outcome.expect("body decodes"),
        FbOutcome {
            generation: Generation::Cmls,
            records: 1,
            errors: 0
        }
    );
    assert_eq!(points, vec![fixture_point()]);
}

/// Sets the little-endian u64 at `at`.
fn patch_u64(body: &[u8], at: usize, value: u64) -> Vec<u8> {
    let mut body = body.to_vec();
    body[at..at + 8].copy_from_slice(&value.to_le_bytes());
    body
}

#[test]
fn sample_timestamp_zero_means_the_metric_timestamp() {
    // Metric.timestamp sits at 0x48 in both fixtures; the v1 MetricValue
    // timestamp at 0x70 and the v2 MetricSample timestamp at 0x88.
    for (fixture, sample_at) in [(V1_FIXTURE, 0x70), (V2_FIXTURE, 0x88)] {
        let body = patch_u64(&patch_u64(fixture, 0x48, 42_000), sample_at, 0);
        let (_, points, _) = decode_all(&body);
        assert_eq!(points[0].timestamp, Timestamp::from_millis(42_000));

        // A non-zero sample timestamp wins over the Metric's.
        let body = patch_u64(&patch_u64(fixture, 0x48, 42_000), sample_at, 7_000);
        let (_, points, _) = decode_all(&body);
        assert_eq!(points[0].timestamp, Timestamp::from_millis(7_000));

        // Beyond i64 milliseconds: that sample is a reject, not a wrap.
        let body = patch_u64(fixture, sample_at, u64::MAX);
        let (outcome, points, rejects) = decode_all(&body);
        assert!(points.is_empty());
        assert_eq!(outcome.expect("body decodes").errors, 1);
        assert_eq!(rejects.count(Reason::BadTimestamp), 1);
    }
}

// === round trips ===

fn every_value() -> Vec<Value> {
    vec![
        Value::I32(-5),
        Value::I32(0),
        Value::U32(u32::MAX),
        Value::I64(i64::MIN),
        Value::U64(u64::MAX),
        Value::F64(1.5),
        Value::F64(-0.0),
        Value::F64(f64::INFINITY),
        Value::Text(Arc::from("héllo wörld")),
        Value::Text(Arc::from("")),
        hist(&[(10, 0, 2), (-1, 0, 1), (25, 2, 300), (-50, -1, 1)], false),
        hist(&[(10, 0, u64::MAX)], true),
        hist(&[], false),
        Value::Absent(ValueKind::F64),
        Value::Absent(ValueKind::Text),
        Value::Absent(ValueKind::Histogram),
    ]
}

fn points_for(values: &[Value]) -> Vec<Point> {
    values
        .iter()
        .enumerate()
        .map(|(index, value)| {
            let mut point = Point::new(
                format!("metric.{index}"),
                Timestamp::from_millis(FIXTURE_TIME + index as i64),
                value.clone(),
            );
            if index % 2 == 0 {
                point = point.with_tag("env", "prod").with_tag("az", "b");
            }
            point.source = Some(source());
            point
        })
        .collect()
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        // -0.0 == 0.0 and NaN != NaN: compare the bits.
        (Value::F64(a), Value::F64(b)) => a.to_bits() == b.to_bits(),
        _ => a == b,
    }
}

#[test]
fn every_value_kind_round_trips_in_both_generations() {
    let points = points_for(&every_value());
    for generation in [Generation::Ciml, Generation::Cmls] {
        let (body, written, skipped) = encode(generation, &points);
        assert_eq!(written, points.len());
        assert_eq!(skipped.total(), 0);
        assert_eq!(body.len() % 8, 0);
        let (outcome, decoded, _) = decode_all(&body);
        let outcome = outcome.expect("body decodes");
        assert_eq!(outcome.generation, generation);
        assert_eq!(outcome.records, points.len() as u64);
        assert_eq!(outcome.errors, 0);
        for (sent, got) in points.iter().zip(&decoded) {
            assert_eq!(got.name, sent.name);
            let mut tags = sent.tags.clone();
            tags.sort();
            assert_eq!(got.tags, tags);
            assert_eq!(got.timestamp, sent.timestamp);
            assert_eq!(got.source, sent.source);
            let expected = match &sent.value {
                // Histograms come back sorted NaN first, then ascending.
                Value::Histogram(h) if h.bins.len() == 4 => {
                    hist(&[(-1, 0, 1), (-50, -1, 1), (10, 0, 2), (25, 2, 300)], false)
                }
                other => other.clone(),
            };
            assert!(
                same_value(&got.value, &expected),
                "{generation:?}: {:?} != {expected:?}",
                got.value
            );
        }
    }
}

#[test]
fn absent_integers_come_back_as_absent_numbers() {
    for generation in [Generation::Ciml, Generation::Cmls] {
        let (body, _, _) = encode(generation, &points_for(&[Value::Absent(ValueKind::I32)]));
        let (_, decoded, _) = decode_all(&body);
        assert_eq!(decoded[0].value, Value::Absent(ValueKind::F64));
    }
}

#[test]
fn consecutive_metrics_of_one_check_share_one_source() {
    let points = points_for(&[Value::I32(1), Value::I32(2), Value::I32(3)]);
    for generation in [Generation::Ciml, Generation::Cmls] {
        let (body, _, _) = encode(generation, &points);
        let mut batch = Batch::new();
        decode(&body, &mut batch, &mut Rejects::default()).expect("body decodes");
        let first = batch.get(0).expect("one point").source().expect("a source");
        assert!(batch
            .iter()
            .all(|point| Arc::ptr_eq(point.source().expect("a source"), first)));
    }
}

// === encoder rules ===

#[test]
fn encoder_skips_what_it_cannot_write_and_counts_why() {
    let mut no_check = Point::new("a", Timestamp::from_millis(1), Value::I32(1));
    no_check.source = Some(Arc::new(Source {
        check_name: Some("only a name".to_owned()),
        ..Source::default()
    }));
    let mut bad_uuid = Point::new("b", Timestamp::from_millis(1), Value::I32(1));
    bad_uuid.source = Some(Arc::new(Source {
        check_uuid: Some("not-a-uuid".to_owned()),
        ..Source::default()
    }));
    let mut before_epoch = fixture_point();
    before_epoch.timestamp = Timestamp::from_millis(-1);
    let mut long_name = fixture_point();
    long_name.name = "x".repeat(5000);
    let mut empty_name = fixture_point();
    empty_name.name.clear();
    let points = vec![
        no_check,
        bad_uuid,
        before_epoch,
        long_name,
        empty_name,
        fixture_point(),
    ];
    for generation in [Generation::Ciml, Generation::Cmls] {
        let (body, written, skipped) = encode(generation, &points);
        assert_eq!(written, 1);
        assert_eq!(skipped.count(Unrepresentable::MissingCheck), 2);
        assert_eq!(skipped.count(Unrepresentable::NameTooLong), 1);
        assert_eq!(skipped.count(Unrepresentable::InvalidName), 1);
        assert_eq!(skipped.count(super::write::TIMESTAMP_BEFORE_EPOCH), 1);
        let (_, decoded, _) = decode_all(&body);
        assert_eq!(decoded, vec![fixture_point()]);
    }
}

#[test]
fn nothing_is_written_when_every_point_is_skipped() {
    let (body, written, skipped) = encode(
        Generation::Ciml,
        &[Point::new("a", Timestamp::from_millis(1), Value::I32(1))],
    );
    assert!(body.is_empty());
    assert_eq!(written, 0);
    assert_eq!(skipped.count(Unrepresentable::MissingCheck), 1);
}

#[test]
fn default_source_fills_in_and_a_point_source_wins() {
    let default = Arc::new(Source {
        account_id: Some(0),
        check_uuid: Some("C50361D8-7565-4F04-8128-3CD2613DBC82".to_owned()),
        check_name: None,
        target: Some("ignored".to_owned()),
        module: None,
    });
    let bare = Point::new("bare", Timestamp::from_millis(5), Value::U64(9));
    for generation in [Generation::Ciml, Generation::Cmls] {
        let mut encoder = CirconusFbEncoder::new(generation, Some(Arc::clone(&default)));
        let batch: Batch = [bare.clone(), fixture_point()].into_iter().collect();
        let mut body = Vec::new();
        let written = encoder.encode(&mut batch.iter(), &mut body, &mut Skipped::default());
        assert_eq!(written, 2);
        let (_, decoded, _) = decode_all(&body);
        let first = decoded[0].source.as_deref().expect("a source");
        assert_eq!(
            first.check_uuid.as_deref(),
            Some("c50361d8-7565-4f04-8128-3cd2613dbc82")
        );
        assert_eq!(first.account_id, Some(0));
        assert_eq!(first.target, None);
        assert_eq!(decoded[1], fixture_point());
    }
}

#[test]
fn a_reused_encoder_writes_the_same_bytes_again() {
    let points = points_for(&every_value());
    let batch: Batch = points.into_iter().collect();
    let mut encoder = CirconusFbEncoder::new(Generation::Cmls, None);
    let mut first = Vec::new();
    let mut second = Vec::new();
    encoder.encode(&mut batch.iter(), &mut first, &mut Skipped::default());
    encoder.encode(&mut batch.iter(), &mut second, &mut Skipped::default());
    assert_eq!(first, second);
}

// === flatc as an independent reader ===

/// Decodes `body` with `flatc --json`; `None` when flatc is not installed
/// (a failure under CI, where it must be).
fn flatc_json(schema_dir: &str, body: &[u8]) -> Option<serde_json::Value> {
    let probe = Command::new("flatc").arg("--version").output();
    if probe.is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "flatc is required under CI"
        );
        eprintln!("note: flatc not found; skipping the flatc cross-check");
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let bin = dir.path().join("body.bin");
    std::fs::write(&bin, body).expect("write body");
    let schema = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schema")
        .join(schema_dir)
        .join("metric_list.fbs");
    let output = Command::new("flatc")
        .arg("-o")
        .arg(dir.path())
        .args(["--json", "--raw-binary", "--strict-json"])
        .arg(&schema)
        .arg("--")
        .arg(&bin)
        .output()
        .expect("flatc runs");
    assert!(
        output.status.success(),
        "flatc failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(dir.path().join("body.json")).expect("flatc wrote JSON");
    Some(serde_json::from_str(&text).expect("flatc JSON parses"))
}

fn flatc_points() -> Vec<Point> {
    let mut points = vec![fixture_point()];
    let mut histogram = fixture_point();
    histogram.name = "latency".to_owned();
    histogram.tags.clear();
    histogram.value = hist(&[(25, 0, 1), (-1, 0, 3), (10, -2, 2), (25, 0, 4)], true);
    points.push(histogram);
    let mut absent = fixture_point();
    absent.value = Value::Absent(ValueKind::Text);
    points.push(absent);
    let mut text = fixture_point();
    text.value = Value::Text(Arc::from("up"));
    text.timestamp = Timestamp::from_millis(1);
    points.push(text);
    points
}

#[test]
fn flatc_reads_what_the_v1_encoder_writes() {
    let (body, _, _) = encode(Generation::Ciml, &flatc_points());
    let Some(json) = flatc_json("circonus_v1", &body) else {
        return;
    };
    let metric = |ts: u64, value: serde_json::Value| {
        json!({
            "timestamp": ts,
            "check_name": "test",
            "check_uuid": UUID,
            "account_id": 1,
            "value": value,
        })
    };
    let expected = json!({ "metrics": [
        metric(1_700_000_000_123, json!({
            "name": "duration|ST[env:prod]", "timestamp": 1_700_000_000_123_u64,
            "value_type": "DoubleValue", "value": { "value": 1.5 } })),
        metric(1_700_000_000_123, json!({
            "name": "latency", "timestamp": 1_700_000_000_123_u64,
            "value_type": "Histogram", "value": {
                "buckets": [
                    { "val": -1, "count": 3 },
                    { "val": 10, "exp": -2, "count": 2 },
                    { "val": 25, "count": 5 }
                ],
                "cumulative": true } })),
        metric(1_700_000_000_123, json!({
            "name": "duration|ST[env:prod]", "timestamp": 1_700_000_000_123_u64,
            "value_type": "AbsentStringValue", "value": {} })),
        metric(1, json!({
            "name": "duration|ST[env:prod]", "timestamp": 1,
            "value_type": "StringValue", "value": { "value": "up" } })),
    ]});
    assert_eq!(json, expected);
}

#[test]
fn flatc_reads_what_the_v2_encoder_writes() {
    let (body, _, _) = encode(Generation::Cmls, &flatc_points());
    let Some(json) = flatc_json("circonus_v2", &body) else {
        return;
    };
    let metric = |ts: u64, name: &str, value_type: &str, value: serde_json::Value| {
        json!({
            "timestamp": ts,
            "check_name": "test",
            "check_uuid": UUID_BYTES,
            "account_id": 1,
            "value": { "name": name, "samples": [
                { "timestamp": ts, "value_type": value_type, "value": value }
            ] },
        })
    };
    let expected = json!({ "metrics": [
        metric(1_700_000_000_123, "duration|ST[env:prod]", "DoubleValue", json!({ "value": 1.5 })),
        metric(1_700_000_000_123, "latency", "Histogram", json!({
            "buckets": [
                { "count": 3, "val": -1, "exp": 0 },
                { "count": 2, "val": 10, "exp": -2 },
                { "count": 5, "val": 25, "exp": 0 }
            ],
            "cumulative": true })),
        metric(1_700_000_000_123, "duration|ST[env:prod]", "AbsentStringValue", json!({})),
        metric(1, "duration|ST[env:prod]", "StringValue", json!({ "value": "up" })),
    ]});
    assert_eq!(json, expected);
}

// === rejects inside a valid body ===

/// One hand-built Metric for the reject tests.
#[derive(Clone)]
struct RawMetric {
    timestamp: u64,
    uuid: RawUuid,
    name: Option<&'static str>,
    stream_tags: Vec<&'static str>,
    /// (timestamp, union tag, DoubleValue payload); v1 uses the first.
    samples: Vec<(u64, u8, f64)>,
}

#[derive(Clone)]
enum RawUuid {
    Text(&'static str),
    Bytes(Vec<u8>),
    Missing,
}

impl RawMetric {
    fn new(name: &'static str) -> Self {
        Self {
            timestamp: 1000,
            uuid: RawUuid::Missing,
            name: Some(name),
            stream_tags: Vec::new(),
            samples: vec![(0, tag::DOUBLE, 2.5)],
        }
    }
}

/// Builds a MetricList with the plain builder API, independently of the encoder.
fn build(generation: Generation, metrics: &[RawMetric]) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let mut metric_offsets = Vec::new();
    for metric in metrics {
        let value_of = |b: &mut FlatBufferBuilder<'_>, kind: u8, payload: f64| {
            let start = b.start_table();
            if kind == tag::DOUBLE {
                b.push_slot_always(slot::SCALAR_VALUE, payload);
            }
            b.end_table(start)
        };
        let name = metric.name.map(|name| b.create_string(name));
        let tags: Vec<_> = metric
            .stream_tags
            .iter()
            .map(|tag| b.create_string(tag))
            .collect();
        let tags = (!tags.is_empty()).then(|| b.create_vector(&tags));
        let value = match generation {
            Generation::Ciml => {
                let (ts, kind, payload) = metric.samples[0];
                let inner = value_of(&mut b, kind, payload);
                let start = b.start_table();
                if let Some(name) = name {
                    b.push_slot_always(slot::VALUE_NAME, name);
                }
                b.push_slot(slot::V1_VALUE_TIMESTAMP, ts, 0);
                if kind != tag::NONE {
                    b.push_slot_always(slot::V1_VALUE_TYPE, kind);
                    b.push_slot_always(slot::V1_VALUE_VALUE, inner);
                }
                if let Some(tags) = tags {
                    b.push_slot_always(slot::V1_VALUE_STREAM_TAGS, tags);
                }
                b.end_table(start)
            }
            Generation::Cmls => {
                let mut samples = Vec::new();
                for &(ts, kind, payload) in &metric.samples {
                    let inner = value_of(&mut b, kind, payload);
                    let start = b.start_table();
                    b.push_slot(slot::SAMPLE_TIMESTAMP, ts, 0);
                    if kind != tag::NONE {
                        b.push_slot_always(slot::SAMPLE_TYPE, kind);
                        b.push_slot_always(slot::SAMPLE_VALUE, inner);
                    }
                    samples.push(b.end_table(start));
                }
                let samples = b.create_vector(&samples);
                let start = b.start_table();
                if let Some(name) = name {
                    b.push_slot_always(slot::VALUE_NAME, name);
                }
                if let Some(tags) = tags {
                    b.push_slot_always(slot::V2_VALUE_STREAM_TAGS, tags);
                }
                b.push_slot_always(slot::V2_VALUE_SAMPLES, samples);
                b.end_table(start)
            }
        };
        let uuid = match &metric.uuid {
            RawUuid::Text(text) => Some(b.create_string(text).as_union_value()),
            RawUuid::Bytes(bytes) => Some(b.create_vector(&bytes[..]).as_union_value()),
            RawUuid::Missing => None,
        };
        let start = b.start_table();
        b.push_slot(slot::METRIC_TIMESTAMP, metric.timestamp, 0);
        if let Some(uuid) = uuid {
            b.push_slot_always(slot::METRIC_CHECK_UUID, uuid);
        }
        b.push_slot_always(slot::METRIC_VALUE, value);
        metric_offsets.push(b.end_table(start));
    }
    let metrics = b.create_vector(&metric_offsets);
    let start = b.start_table();
    b.push_slot_always(slot::LIST_METRICS, metrics);
    let list = b.end_table(start);
    b.finish(list, Some(generation.identifier()));
    b.finished_data().to_vec()
}

#[test]
fn bad_metrics_are_counted_and_the_rest_kept() {
    let good = RawMetric::new("good");
    let cases: Vec<(RawMetric, Reason)> = vec![
        (
            RawMetric {
                samples: vec![(0, tag::NONE, 0.0)],
                ..RawMetric::new("none")
            },
            Reason::BadItem,
        ),
        (
            RawMetric {
                samples: vec![(0, 11, 0.0)],
                ..RawMetric::new("unknown member")
            },
            Reason::BadValue,
        ),
        (
            RawMetric {
                name: None,
                ..RawMetric::new("")
            },
            Reason::EmptyName,
        ),
        (RawMetric::new(""), Reason::EmptyName),
        (RawMetric::new("|ST[a:b]"), Reason::EmptyName),
        (RawMetric::new("m|ST[a:b"), Reason::BadStreamTags),
        (
            RawMetric {
                stream_tags: vec!["a:b,c:d"],
                ..RawMetric::new("m")
            },
            Reason::BadStreamTags,
        ),
    ];
    for generation in [Generation::Ciml, Generation::Cmls] {
        for (bad, reason) in &cases {
            let body = build(generation, &[bad.clone(), good.clone()]);
            let (outcome, points, rejects) = decode_all(&body);
            let outcome = outcome.expect("body decodes");
            assert_eq!((outcome.records, outcome.errors), (1, 1), "{reason:?}");
            assert_eq!(rejects.count(*reason), 1, "{generation:?} {reason:?}");
            assert_eq!(points[0].name, "good");
            assert_eq!(points[0].timestamp, Timestamp::from_millis(1000));
            assert_eq!(points[0].value, Value::F64(2.5));
            assert_eq!(points[0].source, None);
        }
    }
}

#[test]
fn check_uuids_are_validated_per_generation() {
    let with = |uuid| RawMetric {
        uuid,
        ..RawMetric::new("m")
    };
    let body = build(
        Generation::Ciml,
        &[
            with(RawUuid::Text("1B988FD7-D1E2-48EC-848E-55709511D43F")),
            with(RawUuid::Text("1b988fd7d1e248ec848e55709511d43f")),
            with(RawUuid::Text("1b988fd7-d1e2-48ec-848e-55709511d43g")),
        ],
    );
    let (_, points, rejects) = decode_all(&body);
    assert_eq!(points.len(), 1);
    let source = points[0].source.as_deref().expect("a source");
    assert_eq!(source.check_uuid.as_deref(), Some(UUID));
    assert_eq!(source.account_id, None);
    assert_eq!(source.check_name, None);
    assert_eq!(rejects.count(Reason::BadCheck), 2);

    let body = build(
        Generation::Cmls,
        &[
            with(RawUuid::Bytes(UUID_BYTES.to_vec())),
            with(RawUuid::Bytes(UUID_BYTES[..15].to_vec())),
            with(RawUuid::Bytes(Vec::new())),
        ],
    );
    let (_, points, rejects) = decode_all(&body);
    assert_eq!(points.len(), 1);
    assert_eq!(
        points[0]
            .source
            .as_deref()
            .expect("a source")
            .check_uuid
            .as_deref(),
        Some(UUID)
    );
    assert_eq!(rejects.count(Reason::BadCheck), 2);
}

#[test]
fn the_stream_tags_vector_is_merged_into_the_name_tags() {
    for generation in [Generation::Ciml, Generation::Cmls] {
        let metric = RawMetric {
            stream_tags: vec!["host:a", "role:db"],
            ..RawMetric::new("cpu|ST[env:prod]")
        };
        let (_, points, _) = decode_all(&build(generation, &[metric]));
        assert_eq!(points[0].name, "cpu");
        let tags: Vec<(&str, &str)> = points[0]
            .tags
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(tags, [("env", "prod"), ("host", "a"), ("role", "db")]);
    }
}

#[test]
fn v2_samples_are_points_of_their_own() {
    let metric = RawMetric {
        samples: vec![
            (0, tag::DOUBLE, 1.0),
            (2000, tag::DOUBLE, 2.0),
            (3000, tag::NONE, 0.0),
        ],
        ..RawMetric::new("m")
    };
    let (outcome, points, rejects) =
        decode_all(&build(Generation::Cmls, std::slice::from_ref(&metric)));
    let outcome = outcome.expect("body decodes");
    assert_eq!((outcome.records, outcome.errors), (2, 1));
    assert_eq!(rejects.count(Reason::BadItem), 1);
    let times: Vec<i64> = points.iter().map(|p| p.timestamp.as_millis()).collect();
    assert_eq!(times, [1000, 2000]);

    let empty = RawMetric {
        samples: Vec::new(),
        ..metric
    };
    let (_, points, rejects) = decode_all(&build(Generation::Cmls, &[empty]));
    assert!(points.is_empty());
    assert_eq!(rejects.count(Reason::BadItem), 1);
}

// === corrupt bodies ===

fn encoded_bodies() -> Vec<Vec<u8>> {
    let points = points_for(&every_value());
    vec![
        V1_FIXTURE.to_vec(),
        V2_FIXTURE.to_vec(),
        encode(Generation::Ciml, &points).0,
        encode(Generation::Cmls, &points).0,
    ]
}

#[test]
fn every_truncation_is_an_error() {
    for body in encoded_bodies() {
        // Only the zero padding after the last referenced byte may go.
        let needed = (0..=body.len())
            .find(|len| decode_all(&body[..*len]).0.is_ok())
            .expect("the whole body decodes");
        assert!(body.len() - needed < 8, "needed {needed} of {}", body.len());
        assert!(body[needed..].iter().all(|byte| *byte == 0));
        for len in 0..needed {
            let (outcome, points, _) = decode_all(&body[..len]);
            assert!(outcome.is_err(), "truncated to {len}");
            assert!(points.is_empty());
        }
    }
}

#[test]
fn byte_flips_never_panic() {
    for body in encoded_bodies() {
        for at in 0..body.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut corrupt = body.clone();
                corrupt[at] ^= mask;
                let _ = decode_all(&corrupt);
            }
        }
    }
}

#[test]
fn wrong_and_short_headers_are_errors() {
    let (outcome, _, _) = decode_all(&V1_FIXTURE[..7]);
    assert_eq!(
        outcome.expect_err("not a metric list"),
        FlatbufferError::TooSmall { len: 7 }
    );
    let mut body = V1_FIXTURE.to_vec();
    body[4..8].copy_from_slice(b"CIMM");
    let (outcome, _, _) = decode_all(&body);
    assert_eq!(
        outcome.expect_err("not a metric list"),
        FlatbufferError::UnknownIdentifier { found: *b"CIMM" }
    );
    // A legacy body labelled as the current generation does not verify.
    body[4..8].copy_from_slice(b"CMLS");
    let (outcome, points, _) = decode_all(&body);
    assert!(matches!(
        outcome,
        Err(FlatbufferError::Verification {
            generation: Generation::Cmls,
            ..
        })
    ));
    assert!(points.is_empty());
}

#[test]
fn vector_lengths_past_the_end_are_errors() {
    // The metrics vector length sits at 0x1c in both fixtures; the name
    // string length at 0x94 (v1) and 0xac (v2).
    for (fixture, name_len_at) in [(V1_FIXTURE, 0x94), (V2_FIXTURE, 0xac)] {
        for (at, len) in [(0x1c, 2), (0x1c, u32::MAX), (name_len_at, 1000)] {
            let mut body = fixture.to_vec();
            body[at..at + 4].copy_from_slice(&len.to_le_bytes());
            let (outcome, points, _) = decode_all(&body);
            assert!(
                matches!(outcome, Err(FlatbufferError::Verification { .. })),
                "{outcome:?}"
            );
            assert!(points.is_empty());
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        mut body in proptest::collection::vec(any::<u8>(), 0..512),
        identifier in prop_oneof![Just(*b"CIML"), Just(*b"CMLS"), any::<[u8; 4]>()],
    ) {
        if body.len() >= 8 {
            body[4..8].copy_from_slice(&identifier);
        }
        let _ = decode_all(&body);
    }

    #[test]
    fn mutated_bodies_never_panic(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut body = encoded_bodies().swap_remove(which);
        for (at, byte) in edits {
            let at = at % body.len();
            body[at] = byte;
        }
        let _ = decode_all(&body);
    }
}

#[test]
fn large_bodies_with_shared_check_strings_stay_within_the_verifier_budget() {
    // Short names and one shared check per body push the expanded size
    // furthest past the buffer size.
    let points: Vec<Point> = (0..20_000)
        .map(|index| {
            let mut point = Point::new("m", Timestamp::from_millis(index), Value::I32(1));
            point.source = Some(source());
            point
        })
        .collect();
    for generation in [Generation::Ciml, Generation::Cmls] {
        let (body, written, _) = encode(generation, &points);
        assert_eq!(written, points.len());
        let (outcome, decoded, _) = decode_all(&body);
        assert_eq!(outcome.expect("body decodes").records, 20_000);
        assert_eq!(decoded.len(), 20_000);
    }
}

#[test]
fn offsets_shared_without_limit_are_refused() {
    // Every element of the metrics vector points at the same Metric: 4
    // bytes of body per element, the whole Metric of verification work.
    let mut b = FlatBufferBuilder::new();
    let name = b.create_string(&"n".repeat(200));
    let start = b.start_table();
    b.push_slot_always(slot::VALUE_NAME, name);
    let value = b.end_table(start);
    let start = b.start_table();
    b.push_slot_always(slot::METRIC_VALUE, value);
    let metric = b.end_table(start);
    let metrics = b.create_vector(&vec![metric; 1000]);
    let start = b.start_table();
    b.push_slot_always(slot::LIST_METRICS, metrics);
    let list = b.end_table(start);
    b.finish(list, Some("CIML"));
    let (outcome, points, _) = decode_all(b.finished_data());
    assert!(
        matches!(
            outcome,
            Err(FlatbufferError::Verification {
                source: flatbuffers::InvalidFlatbuffer::ApparentSizeTooLarge,
                ..
            })
        ),
        "{outcome:?}"
    );
    assert!(points.is_empty());
}
