//! Codec micro benchmarks: points per second per core for decoding and
//! encoding each protocol (run with `cargo bench --bench codecs`).

use criterion::{criterion_main, BatchSize, Criterion, Throughput};
use tsrelay::codec::graphite_pickle::{GraphitePickleDecoder, GraphitePickleEncoder};
use tsrelay::codec::graphite_plain::{GraphitePlainDecoder, GraphitePlainEncoder};
use tsrelay::codec::kairos_json::{self, KairosJsonEncoder};
use tsrelay::codec::kairos_telnet::{KairosTelnetDecoder, KairosTelnetEncoder};
use tsrelay::codec::{Encoder, Rejects, Skipped, StreamDecoder};
use tsrelay::model::{Batch, Timestamp};

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
    pickle_frames_into(batch, &mut out);
    out
}

fn codecs(c: &mut Criterion) {
    let plaintext = plaintext_input();
    let batch = decoded_batch(&plaintext);
    let pickle = pickle_frames(&batch);

    let mut group = c.benchmark_group("graphite_plaintext");
    group.throughput(Throughput::Elements(N_POINTS as u64));
    group.bench_function("decode", |b| {
        b.iter_batched(
            || {
                (
                    Batch::with_capacity(N_POINTS, plaintext.len()),
                    Rejects::default(),
                )
            },
            |(mut out, mut rejects)| {
                GraphitePlainDecoder::new(16_384).decode(&plaintext, NOW, &mut out, &mut rejects)
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("encode", |b| {
        let mut out = Vec::with_capacity(plaintext.len() * 2);
        b.iter(|| {
            out.clear();
            GraphitePlainEncoder.encode(&mut batch.iter(), &mut out, &mut Skipped::default())
        })
    });
    group.finish();

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

    let mut group = c.benchmark_group("kairosdb_telnet");
    group.throughput(Throughput::Elements(N_POINTS as u64));
    group.bench_function("decode", |b| {
        b.iter_batched(
            || {
                (
                    Batch::with_capacity(N_POINTS, telnet.len()),
                    Rejects::default(),
                )
            },
            |(mut out, mut rejects)| {
                KairosTelnetDecoder::new(1024).decode(&telnet, NOW, &mut out, &mut rejects)
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("encode", |b| {
        let mut out = Vec::with_capacity(telnet.len() * 2);
        b.iter(|| {
            out.clear();
            KairosTelnetEncoder::default().encode(
                &mut tagged.iter(),
                &mut out,
                &mut Skipped::default(),
            )
        })
    });
    group.finish();

    let mut group = c.benchmark_group("kairosdb_rest");
    group.throughput(Throughput::Elements(N_POINTS as u64));
    group.bench_function("decode", |b| {
        b.iter_batched(
            || Batch::with_capacity(N_POINTS, rest.len()),
            |mut out| kairos_json::parse_body(&rest, &mut out).n_points,
            BatchSize::SmallInput,
        )
    });
    group.bench_function("encode", |b| {
        let mut out = Vec::with_capacity(rest.len() * 2);
        b.iter(|| {
            out.clear();
            KairosJsonEncoder.encode(&mut tagged.iter(), &mut out, &mut Skipped::default())
        })
    });
    group.finish();

    let mut group = c.benchmark_group("graphite_pickle");
    group.throughput(Throughput::Elements(N_POINTS as u64));
    group.bench_function("decode", |b| {
        b.iter_batched(
            || {
                (
                    Batch::with_capacity(N_POINTS, plaintext.len()),
                    Rejects::default(),
                )
            },
            |(mut out, mut rejects)| {
                GraphitePickleDecoder::new(1 << 20).decode(&pickle, NOW, &mut out, &mut rejects)
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("encode", |b| {
        let mut out = Vec::with_capacity(pickle.len() * 2);
        b.iter(|| {
            out.clear();
            pickle_frames_into(&batch, &mut out)
        })
    });
    group.finish();
}

fn pickle_frames_into(batch: &Batch, out: &mut Vec<u8>) -> usize {
    let mut skipped = Skipped::default();
    let mut written = 0;
    let mut points = batch.iter();
    loop {
        let mut chunk = points.by_ref().take(500).peekable();
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
