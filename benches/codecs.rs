//! Codec micro benchmarks: points per second per core for decoding and
//! encoding each protocol (run with `cargo bench --bench codecs`).

use criterion::{criterion_main, BatchSize, Criterion, Throughput};
use std::sync::Arc;
use tsrelay::codec::graphite_pickle::{GraphitePickleDecoder, GraphitePickleEncoder};
use tsrelay::codec::graphite_plain::{GraphitePlainDecoder, GraphitePlainEncoder};
use tsrelay::codec::kairos_json::{self, KairosJsonEncoder};
use tsrelay::codec::kairos_telnet::{KairosTelnetDecoder, KairosTelnetEncoder};

use tsrelay::codec::circonus_fb::{self, CirconusFbEncoder, Generation};
use tsrelay::codec::irondb_tsv::{self, IrondbTsvEncoder};
use tsrelay::codec::{circllhist, Encoder, Rejects, Skipped, StreamDecoder};
use tsrelay::model::{Batch, Histogram, PointRef, Source, Timestamp};

const N_POINTS: usize = 10_000;
const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

/// Realistic plaintext: host/metric paths, a tenth of them tagged.
fn plaintext_input() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..N_POINTS {
        let line = if i % 10 == 0 {
            format!(
                "app.requests.latency;dc=eu-{};host=web{:03} {}.25 1700000{:03}\n",
                i % 3,
                i % 500,
                i % 977,
                i % 1000
            )
        } else {
            format!(
                "servers.web{:03}.cpu.core{}.utilisation {}.{} 1700000{:03}\n",
                i % 500,
                i % 16,
                i % 100,
                i % 7,
                i % 1000
            )
        };
        out.extend_from_slice(line.as_bytes());
    }
    out
}

fn decoded_batch(input: &[u8]) -> Batch {
    let mut batch = Batch::new();
    let mut rejects = Rejects::default();
    let _ = GraphitePlainDecoder::new(16_384).decode(input, NOW, &mut batch, &mut rejects);
    assert_eq!(batch.len(), N_POINTS);
    batch
}

fn pickle_frames(batch: &Batch) -> Vec<u8> {
    let mut out = Vec::new();
    pickle_frames_into(&mut batch.iter(), &mut out);
    out
}

fn codecs(c: &mut Criterion) {
    let plaintext = plaintext_input();
    let batch = decoded_batch(&plaintext);
    let pickle = pickle_frames(&batch);
    // KairosDB targets need tags: give every point one, as templates would.
    let mut tagged = Batch::with_capacity(N_POINTS, plaintext.len());
    for point in batch.iter() {
        tagged.push(
            point.name(),
            point.tags().chain([("host", "web01")]),
            point.timestamp(),
            point.value().clone(),
            None,
        );
    }
    let mut telnet = Vec::new();
    KairosTelnetEncoder::default().encode(&mut tagged.iter(), &mut telnet, &mut Skipped::default());
    let mut rest = Vec::new();
    KairosJsonEncoder.encode(&mut tagged.iter(), &mut rest, &mut Skipped::default());

    bench_codec(
        c,
        "graphite_plaintext",
        &plaintext,
        &batch,
        &|bytes, out| decode_stream(&mut GraphitePlainDecoder::new(16_384), bytes, out),
        &|points, out| GraphitePlainEncoder.encode(points, out, &mut Skipped::default()),
    );
    bench_codec(
        c,
        "kairosdb_telnet",
        &telnet,
        &tagged,
        &|bytes, out| decode_stream(&mut KairosTelnetDecoder::new(1024), bytes, out),
        &|points, out| KairosTelnetEncoder::default().encode(points, out, &mut Skipped::default()),
    );
    bench_codec(
        c,
        "kairosdb_rest",
        &rest,
        &tagged,
        &|bytes, out| kairos_json::parse_body(bytes, out).n_points,
        &|points, out| KairosJsonEncoder.encode(points, out, &mut Skipped::default()),
    );
    // IRONdb points carry a check identity and stream tags.
    let check = Arc::new(Source {
        account_id: Some(123),
        check_uuid: Some("1b988fd7-d1e1-48ec-848e-55709511d43f".to_owned()),
        check_name: Some("c_123_987654::http".to_owned()),
        target: Some("example.com".to_owned()),
        module: Some("http".to_owned()),
    });
    let mut iron = Batch::with_capacity(N_POINTS, plaintext.len());
    for point in tagged.iter() {
        iron.push(
            point.name(),
            point.tags(),
            point.timestamp(),
            point.value().clone(),
            Some(Arc::clone(&check)),
        );
    }
    let mut tsv = Vec::new();
    IrondbTsvEncoder::default().encode(&mut iron.iter(), &mut tsv, &mut Skipped::default());
    bench_codec(
        c,
        "irondb_tsv",
        &tsv,
        &iron,
        &|bytes, out| irondb_tsv::parse_body(bytes, out, &mut Rejects::default()).records as usize,
        &|points, out| IrondbTsvEncoder::default().encode(points, out, &mut Skipped::default()),
    );
    for (name, generation) in [
        ("flatbuffer_ciml", Generation::Ciml),
        ("flatbuffer_cmls", Generation::Cmls),
    ] {
        let mut encoder = CirconusFbEncoder::new(generation, None);
        let mut body = Vec::new();
        encoder.encode(&mut iron.iter(), &mut body, &mut Skipped::default());
        bench_codec(
            c,
            name,
            &body,
            &iron,
            &|bytes, out| {
                circonus_fb::decode(bytes, out, &mut Rejects::default())
                    .map_or(0, |outcome| outcome.records as usize)
            },
            &|points, out| {
                CirconusFbEncoder::new(generation, None).encode(
                    points,
                    out,
                    &mut Skipped::default(),
                )
            },
        );
    }
    bench_circllhist(c);
    bench_codec(
        c,
        "graphite_pickle",
        &pickle,
        &batch,
        &|bytes, out| decode_stream(&mut GraphitePickleDecoder::new(1 << 20), bytes, out),
        &|points, out| pickle_frames_into(points, out),
    );
}

/// circllhist base64 (`H1`) write and read of latency-like histograms.
fn bench_circllhist(c: &mut Criterion) {
    const N_HISTOGRAMS: usize = 1_000;
    let histograms: Vec<Histogram> = (0..N_HISTOGRAMS)
        .map(|i| {
            Histogram::from_values(
                (0..200).map(|j| 0.001 * (1.0 + ((i * 7 + j * 13) % 997) as f64 * 1.7)),
            )
        })
        .collect();
    let encoded: Vec<Vec<u8>> = histograms
        .iter()
        .map(|h| {
            let mut out = Vec::new();
            circllhist::encode_base64(h, &mut out);
            out
        })
        .collect();
    let mut group = c.benchmark_group("circllhist_base64");
    group.throughput(Throughput::Elements(N_HISTOGRAMS as u64));
    group.bench_function("encode", |b| {
        let mut out = Vec::with_capacity(1 << 16);
        b.iter(|| {
            out.clear();
            for h in &histograms {
                circllhist::encode_base64(h, &mut out);
            }
            out.len()
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| {
            encoded
                .iter()
                .filter_map(|text| circllhist::decode_base64(text).ok())
                .map(|h| h.bins.len())
                .sum::<usize>()
        })
    });
    group.finish();
}

type DecodeFn<'a> = &'a dyn Fn(&[u8], &mut Batch) -> usize;
type EncodeFn<'a> = &'a dyn Fn(&mut dyn Iterator<Item = PointRef<'_>>, &mut Vec<u8>) -> usize;

/// Decode and encode throughput of one protocol, in points per second.
fn bench_codec(
    c: &mut Criterion,
    protocol: &str,
    input: &[u8],
    points: &Batch,
    decode: DecodeFn<'_>,
    encode: EncodeFn<'_>,
) {
    let mut group = c.benchmark_group(protocol);
    group.throughput(Throughput::Elements(N_POINTS as u64));
    group.bench_function("decode", |b| {
        b.iter_batched(
            || Batch::with_capacity(N_POINTS, input.len()),
            |mut out| decode(input, &mut out),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("encode", |b| {
        let mut out = Vec::with_capacity(input.len() * 2);
        b.iter(|| {
            out.clear();
            encode(&mut points.iter(), &mut out)
        })
    });
    group.finish();
}

fn decode_stream(decoder: &mut dyn StreamDecoder, bytes: &[u8], out: &mut Batch) -> usize {
    let mut rejects = Rejects::default();
    let _ = decoder.decode(bytes, NOW, out, &mut rejects);
    out.len()
}

/// Frames of at most 500 points, as carbon's relay sends.
fn pickle_frames_into(points: &mut dyn Iterator<Item = PointRef<'_>>, out: &mut Vec<u8>) -> usize {
    let mut skipped = Skipped::default();
    let mut written = 0;
    loop {
        let mut chunk = (&mut *points).take(500).peekable();
        if chunk.peek().is_none() {
            return written;
        }
        written += GraphitePickleEncoder.encode(&mut chunk, out, &mut skipped);
    }
}

mod harness {
    #![allow(missing_docs)]
    use super::codecs;
    criterion::criterion_group!(benches, codecs);
}

criterion_main!(harness::benches);
