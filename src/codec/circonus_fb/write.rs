//! Writing: one MetricList per `encode` call, one Metric per point.

use std::cmp::Ordering;
use std::sync::Arc;

use flatbuffers::{FlatBufferBuilder, TableFinishedWIPOffset, UnionWIPOffset, WIPOffset};

use super::{parse_uuid, slot, tag, Generation};
use crate::codec::stream_tags::write_name;
use crate::codec::{Encoder, Skipped, Unrepresentable};
use crate::model::{Bin, Histogram, PointRef, Source, Value, ValueKind};

/// Bodies are padded to this many bytes: IRONdb release notes mention
/// fixes to flatbuffer alignment handling, so never hand it less.
const BODY_ALIGN: usize = 8;

/// The skip reason for a timestamp before 1970, which `ulong` cannot hold.
/// `Unrepresentable` has no timestamp variant yet; this is the nearest
/// ("the target cannot store this value") until one is added.
pub(super) const TIMESTAMP_BEFORE_EPOCH: Unrepresentable = Unrepresentable::TimestampOutOfRange;

/// An offset to something already written, whatever its type.
type Offset = WIPOffset<UnionWIPOffset>;
/// A finished table.
type TableOffset = WIPOffset<TableFinishedWIPOffset>;

/// Writes one MetricList per call in the chosen generation.
pub struct CirconusFbEncoder {
    /// Which schema generation to write.
    pub generation: Generation,
    /// The check identity for points whose own source has no check UUID.
    pub default_source: Option<Arc<Source>>,
    /// Reused across calls so a steady stream of chunks stops allocating.
    builder: FlatBufferBuilder<'static>,
    /// The canonical name of the point being written.
    name: String,
    /// The Metric tables of the current call.
    metrics: Vec<TableOffset>,
    /// v1 bucket tables of the histogram being written.
    buckets: Vec<TableOffset>,
    /// Sorted, merged copy of the histogram being written.
    bins: Vec<Bin>,
    /// Check strings already written in this call, shared by the following
    /// Metrics of the same check.
    check: Option<CheckOffsets>,
}

/// The written check fields of one source.
struct CheckOffsets {
    source: Arc<Source>,
    name: Option<Offset>,
    uuid: Offset,
}

impl CirconusFbEncoder {
    /// An encoder for `generation` falling back to `default_source`.
    pub fn new(generation: Generation, default_source: Option<Arc<Source>>) -> Self {
        Self {
            generation,
            default_source,
            builder: FlatBufferBuilder::new(),
            name: String::new(),
            metrics: Vec::new(),
            buckets: Vec::new(),
            bins: Vec::new(),
            check: None,
        }
    }

    /// Writes the Metric of one point, or says why the point cannot be one.
    /// Everything that can fail is checked before the first byte is written.
    fn metric(&mut self, point: &PointRef<'_>) -> Result<TableOffset, Unrepresentable> {
        let timestamp =
            u64::try_from(point.timestamp().as_millis()).map_err(|_| TIMESTAMP_BEFORE_EPOCH)?;
        let source = self.source_of(point).ok_or(Unrepresentable::MissingCheck)?;
        let uuid = source
            .check_uuid
            .as_deref()
            .and_then(parse_uuid)
            .ok_or(Unrepresentable::MissingCheck)?;
        if point.name().is_empty() {
            return Err(Unrepresentable::InvalidName);
        }
        self.name.clear();
        write_name(point.name(), point.tags(), &mut self.name)
            .map_err(|_| Unrepresentable::NameTooLong)?;

        let (check_name, check_uuid) = self.check_offsets(source, &uuid);
        let name = self.builder.create_string(&self.name).as_union_value();
        let value = match self.generation {
            Generation::Ciml => self.metric_value_v1(name, timestamp, point.value()),
            Generation::Cmls => self.metric_value_v2(name, timestamp, point.value()),
        };
        let account_id = self
            .check
            .as_ref()
            .and_then(|check| check.source.account_id);
        let builder = &mut self.builder;
        let start = builder.start_table();
        builder.push_slot(slot::METRIC_TIMESTAMP, timestamp, 0);
        if let Some(check_name) = check_name {
            builder.push_slot_always(slot::METRIC_CHECK_NAME, check_name);
        }
        builder.push_slot_always(slot::METRIC_CHECK_UUID, check_uuid);
        // Written even when 0, so that an explicit account survives a round trip.
        if let Some(account_id) = account_id {
            builder.push_slot_always(slot::METRIC_ACCOUNT_ID, account_id);
        }
        builder.push_slot_always(slot::METRIC_VALUE, value);
        Ok(builder.end_table(start))
    }

    /// The point's own source when it names a check, else the default.
    fn source_of(&self, point: &PointRef<'_>) -> Option<Arc<Source>> {
        match point.source() {
            Some(source) if source.check_uuid.is_some() => Some(Arc::clone(source)),
            _ => self.default_source.clone(),
        }
    }

    /// The check name and UUID offsets for `source`, written once per run
    /// of Metrics from the same check.
    fn check_offsets(&mut self, source: Arc<Source>, uuid: &[u8; 16]) -> (Option<Offset>, Offset) {
        if let Some(check) = &self.check {
            if Arc::ptr_eq(&check.source, &source) || *check.source == *source {
                return (check.name, check.uuid);
            }
        }
        let builder = &mut self.builder;
        let name = source
            .check_name
            .as_deref()
            .map(|name| builder.create_string(name).as_union_value());
        let uuid = match self.generation {
            Generation::Ciml => {
                let text = super::format_uuid(uuid);
                let text = std::str::from_utf8(&text).unwrap_or_default();
                builder.create_string(text).as_union_value()
            }
            Generation::Cmls => builder.create_vector(&uuid[..]).as_union_value(),
        };
        self.check = Some(CheckOffsets { source, name, uuid });
        (name, uuid)
    }

    /// v1 MetricValue: name, the point's timestamp and the value inline.
    fn metric_value_v1(&mut self, name: Offset, timestamp: u64, value: &Value) -> Offset {
        let (kind, value) = self.value(value);
        let builder = &mut self.builder;
        let start = builder.start_table();
        builder.push_slot(slot::V1_VALUE_TIMESTAMP, timestamp, 0);
        builder.push_slot_always(slot::VALUE_NAME, name);
        builder.push_slot_always(slot::V1_VALUE_VALUE, value);
        builder.push_slot_always(slot::V1_VALUE_TYPE, kind);
        builder.end_table(start).as_union_value()
    }

    /// v2 MetricValue: name and one MetricSample.
    fn metric_value_v2(&mut self, name: Offset, timestamp: u64, value: &Value) -> Offset {
        let (kind, value) = self.value(value);
        let builder = &mut self.builder;
        let start = builder.start_table();
        builder.push_slot(slot::SAMPLE_TIMESTAMP, timestamp, 0);
        builder.push_slot_always(slot::SAMPLE_VALUE, value);
        builder.push_slot_always(slot::SAMPLE_TYPE, kind);
        let sample = builder.end_table(start);
        let samples = builder.create_vector(&[sample]);
        let start = builder.start_table();
        builder.push_slot_always(slot::VALUE_NAME, name);
        builder.push_slot_always(slot::V2_VALUE_SAMPLES, samples);
        builder.end_table(start).as_union_value()
    }

    /// Writes the union member for `value`; returns its discriminant and offset.
    fn value(&mut self, value: &Value) -> (u8, Offset) {
        let builder = &mut self.builder;
        match value {
            Value::I32(v) => (tag::INT, scalar_table(builder, *v)),
            Value::U32(v) => (tag::UINT, scalar_table(builder, *v)),
            Value::I64(v) => (tag::LONG, scalar_table(builder, *v)),
            Value::U64(v) => (tag::ULONG, scalar_table(builder, *v)),
            Value::F64(v) => (tag::DOUBLE, scalar_table(builder, *v)),
            Value::Text(text) => {
                let text = builder.create_string(text);
                (tag::STRING, scalar_table(builder, text))
            }
            Value::Histogram(histogram) => (tag::HISTOGRAM, self.histogram(histogram)),
            Value::Absent(kind) => {
                let kind = match kind {
                    ValueKind::Text => tag::ABSENT_STRING,
                    ValueKind::Histogram => tag::ABSENT_HISTOGRAM,
                    ValueKind::I32
                    | ValueKind::U32
                    | ValueKind::I64
                    | ValueKind::U64
                    | ValueKind::F64 => tag::ABSENT_NUMERIC,
                };
                let start = builder.start_table();
                (kind, builder.end_table(start).as_union_value())
            }
        }
    }

    /// A Histogram table with sorted, merged, valid bins.
    fn histogram(&mut self, histogram: &Histogram) -> Offset {
        sorted_bins(&histogram.bins, &mut self.bins);
        let builder = &mut self.builder;
        let buckets = match self.generation {
            Generation::Ciml => {
                self.buckets.clear();
                for bin in &self.bins {
                    let start = builder.start_table();
                    builder.push_slot(slot::BUCKET_COUNT, bin.count, 0);
                    builder.push_slot(slot::BUCKET_VAL, bin.val, 0);
                    builder.push_slot(slot::BUCKET_EXP, bin.exp, 0);
                    self.buckets.push(builder.end_table(start));
                }
                builder.create_vector(&self.buckets).as_union_value()
            }
            Generation::Cmls => {
                // A vector of 16-byte structs written as two u64 words per
                // element: the builder prepends, so go backwards and push
                // the {val, exp, padding} word before the count.
                builder.start_vector::<u64>(self.bins.len() * 2);
                for bin in self.bins.iter().rev() {
                    let val_exp = u64::from(bin.val.to_le_bytes()[0])
                        | u64::from(bin.exp.to_le_bytes()[0]) << 8;
                    builder.push(val_exp);
                    builder.push(bin.count);
                }
                builder.end_vector::<u64>(self.bins.len()).as_union_value()
            }
        };
        let start = builder.start_table();
        builder.push_slot_always(slot::HISTOGRAM_BUCKETS, buckets);
        builder.push_slot(slot::HISTOGRAM_CUMULATIVE, histogram.cumulative, false);
        builder.end_table(start).as_union_value()
    }
}

impl Encoder for CirconusFbEncoder {
    /// Appends one MetricList holding every representable point, padded to
    /// a multiple of 8 bytes; appends nothing when no point is written.
    /// The return value is what `X-Snowth-Datapoints` announces.
    fn encode(
        &mut self,
        points: &mut dyn Iterator<Item = PointRef<'_>>,
        out: &mut Vec<u8>,
        skipped: &mut Skipped,
    ) -> usize {
        self.builder.reset();
        self.metrics.clear();
        self.check = None;
        for point in points {
            match self.metric(&point) {
                Ok(metric) => self.metrics.push(metric),
                Err(reason) => skipped.add(reason),
            }
        }
        if self.metrics.is_empty() {
            return 0;
        }
        let builder = &mut self.builder;
        let metrics = builder.create_vector(&self.metrics);
        let start = builder.start_table();
        builder.push_slot_always(slot::LIST_METRICS, metrics);
        let list = builder.end_table(start);
        builder.finish(list, Some(self.generation.identifier()));
        let body = builder.finished_data();
        out.extend_from_slice(body);
        // Trailing zeros are outside every offset; they only round the size up.
        let padding = (BODY_ALIGN - body.len() % BODY_ALIGN) % BODY_ALIGN;
        out.resize(out.len() + padding, 0);
        self.metrics.len()
    }
}

/// A table whose single field `value` (slot 4) holds `value`. Written even
/// when it equals the default so that `-0.0` keeps its sign.
fn scalar_table<T: flatbuffers::Push>(builder: &mut FlatBufferBuilder<'_>, value: T) -> Offset {
    let start = builder.start_table();
    builder.push_slot_always(slot::SCALAR_VALUE, value);
    builder.end_table(start).as_union_value()
}

/// Fills `out` with the valid, non-empty bins of `bins` in circllhist order,
/// merging repeats: libcircllhist readers neither sort nor merge.
fn sorted_bins(bins: &[Bin], out: &mut Vec<Bin>) {
    out.clear();
    out.extend(bins.iter().filter_map(|bin| {
        let (val, exp) = match bin.val {
            // The zero and NaN buckets have one exponent.
            0 | -1 => (bin.val, 0),
            val if (10..=99).contains(&val.unsigned_abs()) => (val, bin.exp),
            _ => return None,
        };
        (bin.count > 0).then_some(Bin {
            val,
            exp,
            count: bin.count,
        })
    }));
    out.sort_unstable_by(bucket_order);
    out.dedup_by(|later, kept| {
        let same = later.val == kept.val && later.exp == kept.exp;
        if same {
            kept.count = kept.count.saturating_add(later.count);
        }
        same
    });
}

/// Orders buckets along the real line with the NaN bucket first: NaN,
/// negatives from the most negative, zero, positives ascending. With two
/// significant digits `val` in 10..=99, a bucket's magnitude grows with
/// `exp` first and `val` second.
fn bucket_order(a: &Bin, b: &Bin) -> Ordering {
    fn key(bin: &Bin) -> (u8, i16, i16) {
        let (val, exp) = (i16::from(bin.val), i16::from(bin.exp));
        match bin.val {
            -1 => (0, 0, 0),
            0 => (2, 0, 0),
            v if v < 0 => (1, -exp, val),
            _ => (3, exp, val),
        }
    }
    key(a).cmp(&key(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(val: i8, exp: i8, count: u64) -> Bin {
        Bin { val, exp, count }
    }

    #[test]
    fn bins_sort_nan_first_then_real_line_and_merge() {
        let input = [
            bin(25, 2, 1),
            bin(10, 0, 1),
            bin(0, 0, 1),
            bin(-10, 0, 4),
            bin(-50, -1, 1),
            bin(-1, 0, 1),
            bin(10, 0, 1),
            bin(25, 0, 1),
            bin(5, 0, 9),   // invalid bucket
            bin(30, 1, 0),  // empty
            bin(-99, 0, 2), // more negative than (-10, 0)
        ];
        let mut out = Vec::new();
        sorted_bins(&input, &mut out);
        assert_eq!(
            out,
            vec![
                bin(-1, 0, 1),
                bin(-99, 0, 2),
                bin(-10, 0, 4),
                bin(-50, -1, 1),
                bin(0, 0, 1),
                bin(10, 0, 2),
                bin(25, 0, 1),
                bin(25, 2, 1),
            ]
        );
    }
}
