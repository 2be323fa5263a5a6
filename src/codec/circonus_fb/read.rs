//! Reading: verify the whole body with the crate's verifier, then walk it
//! with a bounds-checked reader and append one point per sample.

use std::borrow::Cow;
use std::sync::Arc;

use super::table::{root, Scalar, TableRef, VectorRef};
use super::verify::verify;
use super::{
    format_uuid, parse_uuid, slot, tag, FbOutcome, FlatbufferError, Generation, V2_BUCKET_BYTES,
};
use crate::codec::stream_tags::parse_name;
use crate::codec::{Reason, Rejects};
use crate::model::{Batch, Bin, Histogram, Source, Timestamp, Value, ValueKind};

/// Root offset plus file identifier.
const HEADER_BYTES: usize = 8;
/// One stream tag as `stream_tags::parse_name` returns it.
type Tag<'a> = (Cow<'a, str>, Cow<'a, str>);

/// Verifies `body` (identifier chooses the generation: "CIML" or "CMLS" at bytes 4..8) and appends every sample as a point.
///
/// v1 gives one point per Metric, v2 one per MetricSample. A sample or v1
/// MetricValue timestamp of 0 means the Metric's timestamp. Metrics and
/// samples that cannot become points are counted in `rejects` and skipped.
///
/// # Errors
/// [`FlatbufferError`] when the body is too small, has an unknown
/// identifier or fails verification; nothing is appended then.
pub fn decode(
    body: &[u8],
    out: &mut Batch,
    rejects: &mut Rejects,
) -> Result<FbOutcome, FlatbufferError> {
    let generation = identify(body)?;
    verify(body, generation)
        .map_err(|source| FlatbufferError::Verification { generation, source })?;
    let points_before = out.len();
    let errors_before = rejects.total();
    let mut reader = Reader {
        generation,
        out,
        rejects,
        last_source: None,
        tags: Vec::new(),
    };
    if let Some(list) = root(body) {
        reader.list(list);
    }
    Ok(FbOutcome {
        generation,
        records: (reader.out.len() - points_before) as u64,
        errors: reader.rejects.total() - errors_before,
    })
}

fn identify(body: &[u8]) -> Result<Generation, FlatbufferError> {
    let Some(identifier) = body.get(4..HEADER_BYTES) else {
        return Err(FlatbufferError::TooSmall { len: body.len() });
    };
    Generation::from_identifier(identifier).ok_or_else(|| {
        let mut found = [0u8; 4];
        found.copy_from_slice(identifier);
        FlatbufferError::UnknownIdentifier { found }
    })
}

// === reading verified buffers ===

/// Walks one verified body, appending points and counting rejects.
struct Reader<'b, 'o> {
    generation: Generation,
    out: &'o mut Batch,
    rejects: &'o mut Rejects,
    /// The identity of the previous Metric, shared while it repeats so a
    /// check costs one allocation, not one per point.
    last_source: Option<Arc<Source>>,
    /// Reused for every name whose tags all come from the body.
    tags: Vec<Tag<'b>>,
}

/// Why a Metric or sample became a reject.
type Rejected = (Reason, &'static str);

impl<'b> Reader<'b, '_> {
    fn list(&mut self, list: TableRef<'b>) {
        let Some(metrics) = list.vector(slot::LIST_METRICS) else {
            return;
        };
        for index in 0..metrics.len {
            match metrics.table(index) {
                Some(metric) => self.metric(metric),
                None => self.reject(Reason::BadItem, "", "unreadable metric"),
            }
        }
    }

    fn metric(&mut self, metric: TableRef<'b>) {
        let Some(value) = metric.table(slot::METRIC_VALUE) else {
            return self.reject(Reason::BadItem, "", "metric without a value");
        };
        let name = value.string(slot::VALUE_NAME).unwrap_or("");
        if let Err((reason, detail)) = self.metric_value(metric, value, name) {
            self.reject(reason, name, detail);
        }
    }

    /// Reads the identity and name shared by the Metric's samples, then the samples.
    fn metric_value(
        &mut self,
        metric: TableRef<'b>,
        value: TableRef<'b>,
        name: &'b str,
    ) -> Result<(), Rejected> {
        if name.is_empty() {
            return Err((Reason::EmptyName, "metric without a name"));
        }
        // Kept as an Option: only samples that fall back to it need it valid.
        let metric_time = metric
            .scalar::<u64>(slot::METRIC_TIMESTAMP)
            .map_or(Some(Timestamp::from_millis(0)), millis);
        let source = self.source(metric)?;
        let extra_tags_slot = match self.generation {
            Generation::Ciml => slot::V1_VALUE_STREAM_TAGS,
            Generation::Cmls => slot::V2_VALUE_STREAM_TAGS,
        };
        let common = Common {
            value,
            metric_time,
            source,
        };
        match value.vector(extra_tags_slot).filter(|tags| tags.len > 0) {
            None => {
                let mut tags = std::mem::take(&mut self.tags);
                let result = parse_name(name, &mut tags)
                    .map_err(|_| (Reason::BadStreamTags, "unreadable stream tags"))
                    .and_then(|base| self.samples(&common, base, &tags));
                tags.clear();
                self.tags = tags;
                result
            }
            // Rare (reconnoiter leaves the vector empty): join the entries
            // onto the name so one parser applies every tag rule.
            Some(extra) => {
                let full = join_stream_tags(name, extra)?;
                let mut tags = Vec::new();
                let base = parse_name(&full, &mut tags)
                    .map_err(|_| (Reason::BadStreamTags, "unreadable stream tags"))?;
                self.samples(&common, base, &tags)
            }
        }
    }

    /// Appends the Metric's samples under the base name and tags.
    fn samples(
        &mut self,
        common: &Common<'b>,
        base: &str,
        tags: &[Tag<'_>],
    ) -> Result<(), Rejected> {
        if base.is_empty() {
            return Err((Reason::EmptyName, "name is only stream tags"));
        }
        let value = common.value;
        match self.generation {
            Generation::Ciml => {
                let sample = Sample {
                    timestamp: value.scalar::<u64>(slot::V1_VALUE_TIMESTAMP),
                    table: value,
                    type_slot: slot::V1_VALUE_TYPE,
                    value_slot: slot::V1_VALUE_VALUE,
                };
                let (timestamp, value) = sample.read(common.metric_time, self.generation)?;
                self.push(base, tags, timestamp, value, common);
            }
            Generation::Cmls => {
                let samples = value
                    .vector(slot::V2_VALUE_SAMPLES)
                    .filter(|samples| samples.len > 0)
                    .ok_or((Reason::BadItem, "metric without samples"))?;
                for index in 0..samples.len {
                    let read = samples
                        .table(index)
                        .ok_or((Reason::BadItem, "unreadable sample"))
                        .and_then(|table| {
                            let sample = Sample {
                                timestamp: table.scalar::<u64>(slot::SAMPLE_TIMESTAMP),
                                table,
                                type_slot: slot::SAMPLE_TYPE,
                                value_slot: slot::SAMPLE_VALUE,
                            };
                            sample.read(common.metric_time, self.generation)
                        });
                    match read {
                        Ok((timestamp, value)) => self.push(base, tags, timestamp, value, common),
                        // One bad sample costs only itself.
                        Err((reason, detail)) => self.reject(reason, base, detail),
                    }
                }
            }
        }
        Ok(())
    }

    fn push(
        &mut self,
        base: &str,
        tags: &[Tag<'_>],
        timestamp: Timestamp,
        value: Value,
        common: &Common<'_>,
    ) {
        let tags = tags.iter().map(|(key, value)| (&**key, &**value));
        self.out
            .push(base, tags, timestamp, value, common.source.clone());
    }

    /// The Metric's check identity, reusing the previous one when equal.
    fn source(&mut self, metric: TableRef<'b>) -> Result<Option<Arc<Source>>, Rejected> {
        const BAD_UUID: Rejected = (Reason::BadCheck, "check uuid is not a uuid");
        let uuid_bytes = match self.generation {
            Generation::Ciml => match metric.string(slot::METRIC_CHECK_UUID) {
                Some(text) => Some(parse_uuid(text).ok_or(BAD_UUID)?),
                None => None,
            },
            Generation::Cmls => match metric.vector(slot::METRIC_CHECK_UUID) {
                Some(raw) => Some(
                    raw.bytes(1)
                        .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
                        .ok_or((Reason::BadCheck, "check uuid is not 16 bytes"))?,
                ),
                None => None,
            },
        };
        let uuid_text = uuid_bytes.map(|bytes| format_uuid(&bytes));
        let check_uuid = match &uuid_text {
            Some(text) => Some(std::str::from_utf8(text).map_err(|_| BAD_UUID)?),
            None => None,
        };
        let account_id = metric.scalar::<i32>(slot::METRIC_ACCOUNT_ID);
        let check_name = metric.string(slot::METRIC_CHECK_NAME);
        if account_id.is_none() && check_uuid.is_none() && check_name.is_none() {
            return Ok(None);
        }
        if let Some(last) = &self.last_source {
            if last.account_id == account_id
                && last.check_uuid.as_deref() == check_uuid
                && last.check_name.as_deref() == check_name
            {
                return Ok(Some(Arc::clone(last)));
            }
        }
        let source = Arc::new(Source {
            account_id,
            check_uuid: check_uuid.map(str::to_owned),
            check_name: check_name.map(str::to_owned),
            target: None,
            module: None,
        });
        self.last_source = Some(Arc::clone(&source));
        Ok(Some(source))
    }

    fn reject(&mut self, reason: Reason, record: &str, detail: &'static str) {
        self.rejects
            .add_with_detail(reason, record.as_bytes(), || detail.to_owned());
    }
}

/// What every sample of one Metric shares.
struct Common<'b> {
    value: TableRef<'b>,
    /// `None` when the Metric's timestamp is beyond `i64` milliseconds.
    metric_time: Option<Timestamp>,
    source: Option<Arc<Source>>,
}

/// Where one sample's fields live: a v1 MetricValue or a v2 MetricSample.
struct Sample<'b> {
    timestamp: Option<u64>,
    table: TableRef<'b>,
    type_slot: u16,
    value_slot: u16,
}

impl Sample<'_> {
    fn read(
        &self,
        metric_time: Option<Timestamp>,
        generation: Generation,
    ) -> Result<(Timestamp, Value), Rejected> {
        let timestamp = match self.timestamp {
            None | Some(0) => metric_time,
            Some(raw) => millis(raw),
        }
        .ok_or((Reason::BadTimestamp, "timestamp beyond i64 milliseconds"))?;
        let kind = self.table.scalar::<u8>(self.type_slot).unwrap_or(tag::NONE);
        if kind == tag::NONE {
            return Err((Reason::BadItem, "sample without a value"));
        }
        let table = self
            .table
            .table(self.value_slot)
            .ok_or((Reason::BadItem, "sample without a value"))?;
        Ok((timestamp, read_value(kind, table, generation)?))
    }
}

fn millis(raw: u64) -> Option<Timestamp> {
    i64::try_from(raw).ok().map(Timestamp::from_millis)
}

/// The union member `kind` stored in `table`. Absent scalar fields read as
/// the schema default, as every FlatBuffers reader does.
fn read_value(kind: u8, table: TableRef<'_>, generation: Generation) -> Result<Value, Rejected> {
    let field = slot::SCALAR_VALUE;
    Ok(match kind {
        tag::INT => Value::I32(table.scalar(field).unwrap_or(0)),
        tag::UINT => Value::U32(table.scalar(field).unwrap_or(0)),
        tag::LONG => Value::I64(table.scalar(field).unwrap_or(0)),
        tag::ULONG => Value::U64(table.scalar(field).unwrap_or(0)),
        tag::DOUBLE => Value::F64(table.scalar(field).unwrap_or(0.0)),
        tag::STRING => Value::Text(Arc::from(table.string(field).unwrap_or(""))),
        tag::HISTOGRAM => Value::Histogram(Arc::new(read_histogram(table, generation))),
        tag::ABSENT_NUMERIC => Value::Absent(ValueKind::F64),
        tag::ABSENT_STRING => Value::Absent(ValueKind::Text),
        tag::ABSENT_HISTOGRAM => Value::Absent(ValueKind::Histogram),
        _ => return Err((Reason::BadValue, "unknown value type")),
    })
}

/// The bins as they appear on the wire; writers sort and merge them.
fn read_histogram(table: TableRef<'_>, generation: Generation) -> Histogram {
    let cumulative = table.scalar::<u8>(slot::HISTOGRAM_CUMULATIVE).unwrap_or(0) != 0;
    let Some(buckets) = table.vector(slot::HISTOGRAM_BUCKETS) else {
        return Histogram {
            bins: Vec::new(),
            cumulative,
        };
    };
    let bins = match generation {
        Generation::Ciml => (0..buckets.len)
            .filter_map(|index| buckets.table(index))
            .map(|bucket| Bin {
                val: bucket.scalar(slot::BUCKET_VAL).unwrap_or(0),
                exp: bucket.scalar(slot::BUCKET_EXP).unwrap_or(0),
                count: bucket.scalar(slot::BUCKET_COUNT).unwrap_or(0),
            })
            .collect(),
        Generation::Cmls => buckets
            .bytes(V2_BUCKET_BYTES)
            .unwrap_or_default()
            .chunks_exact(V2_BUCKET_BYTES)
            .filter_map(|bucket| {
                Some(Bin {
                    count: u64::read(bucket, 0)?,
                    val: i8::read(bucket, 8)?,
                    exp: i8::read(bucket, 9)?,
                })
            })
            .collect(),
    };
    Histogram { bins, cumulative }
}

/// `name|ST[entry,entry,...]` for the MetricValue's `stream_tags` vector.
fn join_stream_tags(name: &str, entries: VectorRef<'_>) -> Result<String, Rejected> {
    const BAD: Rejected = (Reason::BadStreamTags, "stream tag entry cannot be framed");
    let mut full = String::with_capacity(name.len() + 5 + 16 * entries.len);
    full.push_str(name);
    full.push_str("|ST[");
    for index in 0..entries.len {
        let entry = entries.string(index).ok_or(BAD)?;
        // These would end the entry or the section early and silently turn
        // one tag into another; a real tag carries them base64-encoded.
        if entry.is_empty() || entry.contains([',', ']', '|']) {
            return Err(BAD);
        }
        if index > 0 {
            full.push(',');
        }
        full.push_str(entry);
    }
    full.push(']');
    Ok(full)
}
