//! KairosDB REST JSON: the body of `POST /api/v1/datapoints` (protocols.md section 5).
//!
//! Input follows KairosDB's `DataPointsParser`. The body is one metric object
//! or an array of them. Each metric is bound the way Gson binds `NewMetric`,
//! checked with KairosDB's rules and messages, and its points are appended one
//! by one. So, as in KairosDB, valid metrics and the valid datapoints of a
//! metric are kept even when others in the same body fail; the caller answers
//! 400 with every error. KairosDB has two kinds of failure, and so does this
//! module:
//!
//! * a validation error (`metric[0](name=m).tags count must be greater than
//!   or equal to 1.`) is listed and reading goes on;
//! * malformed JSON, or a field Gson cannot bind (a `timestamp` of `1.5`, a
//!   `name` that is an object, an array element that is not an object), stops
//!   reading at that metric: what came before is kept, nothing after is read.
//!
//! Where tsrelay differs from KairosDB, and why:
//!
//! * serde_json is strict where Gson is lenient inside a metric object, so
//!   `NaN`, comments, single quotes and `[1,]` are JSON errors here.
//! * A value or datapoint timestamp KairosDB cannot convert (`"type":"long"`
//!   with `"abc"`) makes KairosDB fail with a 500 and stop reading; here it is
//!   one more listed error and reading goes on. Numeric strings convert like
//!   numbers (`"1.5"` as a timestamp is 1), as protocols.md describes.
//! * A long outside the signed 64-bit range is an error here; KairosDB
//!   silently keeps its low 64 bits.
//! * Numeric-looking strings use ASCII digits only (Java also takes other
//!   Unicode digits), and a negative `ttl` means no TTL.
//! * With `skip_validate`, KairosDB fails on a null name or tag value it cannot
//!   store; here those get the usual `may not be null.` errors.
//!
//! Output writes one JSON array per chunk, one object per series (name, tags,
//! TTL and text-or-number), datapoints as `[ms, value]`, doubles always with a
//! `.` so that KairosDB does not read them back as longs.
//!
//! This module is pure: no I/O, no logging, no clock. The HTTP layer
//! decompresses and bounds the body.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::{Encoder, Skipped, Unrepresentable};
use crate::model::{Batch, PointRef, Timestamp, Value};

/// KairosDB's answer to an empty body (or one cut short).
const END_OF_INPUT: &str = "Invalid json. No content due to end of input.";
/// KairosDB's answer to a body that is neither an object nor an array.
const INVALID_START: &str = "Invalid start of json.";

/// What [`parse_body`] found besides the points it appended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParseOutcome {
    /// Every problem, in KairosDB's words; empty means KairosDB answers 204.
    pub errors: Vec<String>,
    /// How many points were appended.
    pub n_points: usize,
    /// Reading stopped before the end of the body (malformed JSON or a field
    /// that cannot be bound); the last error says why.
    pub stopped: bool,
}

/// Parses a (decompressed) request body, appends every valid point to `out`
/// and lists every problem, as KairosDB does. Never panics.
pub fn parse_body(body: &[u8], out: &mut Batch) -> ParseOutcome {
    let mut reader = BodyReader {
        out,
        outcome: ParseOutcome::default(),
    };
    let first = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    let mut json = serde_json::Deserializer::from_slice(body);
    // Anything after the top-level value is ignored, as KairosDB never reads it.
    let result = match first {
        Some(b'[') => json.deserialize_seq(MetricArray(&mut reader)),
        Some(b'{') => MetricElement::deserialize(&mut json).map(|metric| {
            reader.metric(None, metric);
        }),
        None => {
            reader.stop(END_OF_INPUT.to_owned());
            return reader.outcome;
        }
        Some(_) => {
            reader.stop(INVALID_START.to_owned());
            return reader.outcome;
        }
    };
    // After a stop the array is left half read; that error is not the body's.
    if let (Err(error), false) = (result, reader.outcome.stopped) {
        let message = if error.is_eof() {
            END_OF_INPUT.to_owned()
        } else {
            error.to_string()
        };
        reader.stop(message);
    }
    reader.outcome
}

/// Writes `points` as one JSON array of metric objects, one object per
/// series in first-seen order, and returns how many points were written.
/// Writes nothing when every point was skipped.
pub fn write_body<'a>(
    points: impl Iterator<Item = PointRef<'a>>,
    out: &mut Vec<u8>,
    skipped: &mut Skipped,
) -> usize {
    let hasher = RandomState::new();
    let mut series: Vec<Series<'a>> = Vec::new();
    let mut series_by_hash: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut value_text = Vec::new();
    let mut written = 0;
    for point in points {
        value_text.clear();
        let text =
            match check_point(&point).and_then(|()| write_value(point.value(), &mut value_text)) {
                Ok(text) => text,
                Err(reason) => {
                    skipped.add(reason);
                    continue;
                }
            };
        let candidates = series_by_hash
            .entry(series_hash(&hasher, &point, text))
            .or_default();
        let index = match candidates.iter().find(|i| series[**i].holds(&point, text)) {
            Some(index) => *index,
            None => {
                candidates.push(series.len());
                series.push(Series {
                    first: point,
                    text,
                    datapoints: Vec::new(),
                });
                series.len() - 1
            }
        };
        series[index].add(point.timestamp(), &value_text);
        written += 1;
    }
    if !series.is_empty() {
        out.push(b'[');
        for (n, one) in series.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            one.write(out);
        }
        out.push(b']');
    }
    written
}

/// Encoder for KairosDB REST upstreams: each chunk is one request body.
#[derive(Debug, Default, Clone, Copy)]
pub struct KairosJsonEncoder;

impl Encoder for KairosJsonEncoder {
    fn encode(
        &mut self,
        points: &mut dyn Iterator<Item = PointRef<'_>>,
        out: &mut Vec<u8>,
        skipped: &mut Skipped,
    ) -> usize {
        write_body(points, out, skipped)
    }
}

// === reading ===

struct BodyReader<'b> {
    out: &'b mut Batch,
    outcome: ParseOutcome,
}

impl BodyReader<'_> {
    /// Binds, checks and appends the metric at `index` of the array (`None`
    /// for a lone object). Returns false when reading must stop.
    fn metric(&mut self, index: Option<usize>, element: MetricElement<'_>) -> bool {
        let bound = match element {
            MetricElement::Object(fields) => bind_metric(&fields, index),
            MetricElement::Other(token) => Err(Mismatch::new("BEGIN_OBJECT", token).at(index, "")),
        };
        match bound {
            Ok(metric) => {
                let before = self.out.len();
                let errors = &mut self.outcome.errors;
                append_metric(&metric, index.unwrap_or(0), self.out, errors);
                self.outcome.n_points += self.out.len() - before;
                true
            }
            Err(message) => {
                self.stop(message);
                false
            }
        }
    }

    fn stop(&mut self, message: String) {
        self.outcome.errors.push(message);
        self.outcome.stopped = true;
    }
}

/// Streams the top-level array so that metrics before a JSON error are kept.
struct MetricArray<'r, 'b>(&'r mut BodyReader<'b>);

impl<'de> Visitor<'de> for MetricArray<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of metric objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(element) = seq.next_element::<MetricElement<'de>>()? {
            if !self.0.metric(Some(index), element) {
                break;
            }
            index += 1;
        }
        Ok(())
    }
}

/// One element of the body: a metric's raw fields, or the Gson token of
/// something that is not an object.
enum MetricElement<'a> {
    Object(RawMetric<'a>),
    Other(&'static str),
}

/// A metric object's known fields as raw JSON; a repeated field keeps its
/// last value, as with Gson.
#[derive(Default)]
struct RawMetric<'a> {
    name: Option<&'a RawValue>,
    timestamp: Option<&'a RawValue>,
    time: Option<&'a RawValue>,
    value: Option<&'a RawValue>,
    tags: Option<&'a RawValue>,
    datapoints: Option<&'a RawValue>,
    skip_validate: Option<&'a RawValue>,
    kind: Option<&'a RawValue>,
    ttl: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Field {
    Name,
    Timestamp,
    Time,
    Value,
    Tags,
    Datapoints,
    SkipValidate,
    Type,
    Ttl,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for MetricElement<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ElementVisitor)
    }
}

struct ElementVisitor;

impl<'de> Visitor<'de> for ElementVisitor {
    type Value = MetricElement<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a metric object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = RawMetric::default();
        while let Some(field) = map.next_key::<Field>()? {
            let slot = match field {
                Field::Name => &mut raw.name,
                Field::Timestamp => &mut raw.timestamp,
                Field::Time => &mut raw.time,
                Field::Value => &mut raw.value,
                Field::Tags => &mut raw.tags,
                Field::Datapoints => &mut raw.datapoints,
                Field::SkipValidate => &mut raw.skip_validate,
                Field::Type => &mut raw.kind,
                Field::Ttl => &mut raw.ttl,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value()?);
        }
        Ok(MetricElement::Object(raw))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(MetricElement::Other("BEGIN_ARRAY"))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(MetricElement::Other("NULL"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(MetricElement::Other("BOOLEAN"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(MetricElement::Other("NUMBER"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(MetricElement::Other("NUMBER"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(MetricElement::Other("NUMBER"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(MetricElement::Other("STRING"))
    }
}

/// A metric as Gson binds `NewMetric`.
struct Metric<'a> {
    name: Option<String>,
    /// `time` if present, else `timestamp`.
    timestamp: Option<i64>,
    value: Option<&'a RawValue>,
    /// In body order; a key without a value is a JSON null.
    tags: Vec<(String, Option<String>)>,
    /// A null datapoint is kept as an empty one.
    datapoints: Vec<Vec<&'a RawValue>>,
    validate: bool,
    kind: Option<String>,
    ttl: i32,
}

/// Binds the fields like Gson, or returns Gson's error (which stops reading).
fn bind_metric<'a>(raw: &RawMetric<'a>, index: Option<usize>) -> Result<Metric<'a>, String> {
    let at = |field: &'static str| move |mismatch: Mismatch| mismatch.at(index, field);
    let long = |raw: Option<&RawValue>, expected| {
        let bound = raw.map(|raw| bind_long(raw, expected)).transpose();
        bound.map(Option::flatten)
    };
    let string = |raw: Option<&RawValue>| raw.map(bind_string).transpose().map(Option::flatten);
    let time = long(raw.time, "a long").map_err(at(".time"))?;
    let timestamp = long(raw.timestamp, "a long").map_err(at(".timestamp"))?;
    let ttl = long(raw.ttl, "an int").map_err(at(".ttl"))?.unwrap_or(0);
    let ttl =
        i32::try_from(ttl).map_err(|_| at(".ttl")(Mismatch::new("an int", ttl.to_string())))?;
    let skip_validate = raw.skip_validate.map(bind_bool).transpose();
    Ok(Metric {
        name: string(raw.name).map_err(at(".name"))?,
        timestamp: time.or(timestamp),
        value: raw.value,
        tags: raw
            .tags
            .map_or(Ok(Vec::new()), |tags| bind_tags(tags, index))?,
        datapoints: raw
            .datapoints
            .map_or(Ok(Vec::new()), |points| bind_datapoints(points, index))?,
        validate: !skip_validate
            .map_err(at(".skip_validate"))?
            .unwrap_or(false),
        kind: string(raw.kind).map_err(at(".type"))?,
        ttl,
    })
}

/// A JSON value Gson cannot bind to a field's Java type.
struct Mismatch {
    expected: &'static str,
    found: String,
}

impl Mismatch {
    fn new(expected: &'static str, found: impl Into<String>) -> Self {
        Self {
            expected,
            found: found.into(),
        }
    }

    /// Gson's message, without its line and column.
    fn at(self, index: Option<usize>, field: &str) -> String {
        let (expected, found) = (self.expected, self.found);
        match index {
            Some(i) => format!("Expected {expected} but was {found} at path $[{i}]{field}"),
            None => format!("Expected {expected} but was {found} at path ${field}"),
        }
    }
}

/// Gson's `String` adapter: null is absent, numbers and booleans are text.
fn bind_string(raw: &RawValue) -> Result<Option<String>, Mismatch> {
    match classify(raw) {
        Element::Null => Ok(None),
        Element::Str(text) => Ok(Some(text.into_owned())),
        Element::Number(text) => Ok(Some(text.to_owned())),
        Element::Bool(flag) => Ok(Some(flag.to_string())),
        other => Err(Mismatch::new("a string", other.token())),
    }
}

/// Gson's `Long`/`int` adapters (`JsonReader.nextLong`): integral numbers
/// or numeric strings. `expected` names the Java type for the message.
fn bind_long(raw: &RawValue, expected: &'static str) -> Result<Option<i64>, Mismatch> {
    let text = match classify(raw) {
        Element::Null => return Ok(None),
        Element::Number(text) => Cow::Borrowed(text),
        Element::Str(text) => text,
        other => return Err(Mismatch::new(expected, other.token())),
    };
    if let Ok(value) = text.parse::<i64>() {
        return Ok(Some(value));
    }
    // Java's `(long) double` saturates like Rust's `as`; the value must survive it.
    let double = text.trim_matches(|c: char| c <= ' ').parse::<f64>().ok();
    match double.map(|d| (d as i64, d)) {
        Some((long, double)) if long as f64 == double => Ok(Some(long)),
        _ => Err(Mismatch::new(expected, text.into_owned())),
    }
}

/// Gson's `boolean` adapter: a JSON boolean or a string `true` in any case.
fn bind_bool(raw: &RawValue) -> Result<bool, Mismatch> {
    match classify(raw) {
        Element::Null => Ok(false),
        Element::Bool(flag) => Ok(flag),
        Element::Str(text) => Ok(text.eq_ignore_ascii_case("true")),
        other => Err(Mismatch::new("a boolean", other.token())),
    }
}

/// Gson's `Map<String, String>` adapter; a repeated key is an error.
fn bind_tags(
    raw: &RawValue,
    index: Option<usize>,
) -> Result<Vec<(String, Option<String>)>, String> {
    match classify(raw) {
        Element::Null => return Ok(Vec::new()),
        Element::Object => {}
        other => return Err(Mismatch::new("BEGIN_OBJECT", other.token()).at(index, ".tags")),
    }
    let entries = serde_json::from_str::<Entries<'_>>(raw.get()).map_err(|e| e.to_string())?;
    let mut seen = HashSet::with_capacity(entries.0.len());
    let mut tags = Vec::with_capacity(entries.0.len());
    for (key, value) in &entries.0 {
        if !seen.insert(key.as_str()) {
            return Err(format!("duplicate key: {key}"));
        }
        let value = bind_string(value).map_err(|m| m.at(index, &format!(".tags.{key}")))?;
        tags.push((key.clone(), value));
    }
    Ok(tags)
}

/// Gson's `JsonElement[][]` adapter.
fn bind_datapoints<'a>(
    raw: &'a RawValue,
    index: Option<usize>,
) -> Result<Vec<Vec<&'a RawValue>>, String> {
    let items = match classify(raw) {
        Element::Null => return Ok(Vec::new()),
        Element::Array(items) => items,
        other => return Err(Mismatch::new("BEGIN_ARRAY", other.token()).at(index, ".datapoints")),
    };
    let bind_one = |(n, item): (usize, &'a RawValue)| match classify(item) {
        Element::Null => Ok(Vec::new()),
        Element::Array(values) => Ok(values),
        other => {
            Err(Mismatch::new("BEGIN_ARRAY", other.token()).at(index, &format!(".datapoints[{n}]")))
        }
    };
    items.into_iter().enumerate().map(bind_one).collect()
}

/// A JSON object's entries in body order.
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EntriesVisitor)
    }
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Entries(entries))
    }
}

// === checking and appending ===

/// The `metric[i](name=…)` prefix of error messages, formatted only when
/// an error is reported.
#[derive(Debug, Clone, Copy)]
struct Ctx<'a> {
    index: usize,
    name: Option<&'a str>,
}

impl std::fmt::Display for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name {
            Some(name) => write!(f, "metric[{}](name={name})", self.index),
            None => write!(f, "metric[{}]", self.index),
        }
    }
}

/// Validates like `validateAndAddDataPoints`, then appends the points.
fn append_metric(metric: &Metric<'_>, index: usize, out: &mut Batch, errors: &mut Vec<String>) {
    let mut ctx = Ctx { index, name: None };
    let value = metric.value.map(classify);
    let n_errors = errors.len();
    if metric.validate {
        validate(metric, value.as_ref(), &mut ctx, errors);
    } else {
        check_storable(metric, &ctx, errors);
    }
    let Some(name) = metric.name.as_deref() else {
        return;
    };
    if errors.len() > n_errors {
        return;
    }
    let tags: Vec<(&str, &str)> = metric
        .tags
        .iter()
        .filter_map(|(key, value)| Some((key.as_str(), value.as_deref()?)))
        .collect();
    let ttl = u32::try_from(metric.ttl).unwrap_or(0);
    let mut push = |timestamp: i64, value: Value| {
        out.push(
            name,
            tags.iter().copied(),
            Timestamp::from_millis(timestamp),
            value,
            None,
        );
        out.set_last_ttl(ttl);
    };
    if let (Some(timestamp), Some(value)) = (metric.timestamp, &value) {
        match data_point(metric.kind.as_deref(), value) {
            Ok(value) => push(timestamp, value),
            Err(problem) => errors.push(problem.message(&ctx, &"")),
        }
    }
    // KairosDB only advances the datapoint index after a stored point.
    let mut position = 0;
    for datapoint in &metric.datapoints {
        match read_datapoint(datapoint, metric.kind.as_deref()) {
            Ok((timestamp, value)) => {
                push(timestamp, value);
                position += 1;
            }
            Err(problem) => {
                errors.push(problem.message(&ctx, &format_args!(".datapoints[{position}]")))
            }
        }
    }
}

/// KairosDB's checks of name, value/timestamp pairing and tags. Once the
/// name is valid it becomes part of `ctx`, as in KairosDB's messages.
fn validate<'m>(
    metric: &'m Metric<'_>,
    value: Option<&Element<'_>>,
    ctx: &mut Ctx<'m>,
    errors: &mut Vec<String>,
) {
    match metric.name.as_deref() {
        None => errors.push(format!("{ctx}.name may not be null.")),
        Some("") => errors.push(format!("{ctx}.name may not be empty.")),
        Some(name) => ctx.name = Some(name),
    }
    if metric.timestamp.is_some() {
        let string_type = metric.kind.as_deref() == Some("string");
        if let Some(problem) = missing_value(value, string_type) {
            errors.push(format!("{ctx}.value {problem}"));
        }
    } else if value.is_some_and(|value| !matches!(value, Element::Null)) {
        errors.push(format!("{ctx}.timestamp may not be null."));
    }
    if metric.tags.is_empty() {
        errors.push(format!(
            "{ctx}.tags count must be greater than or equal to 1."
        ));
    }
    for (position, (key, value)) in metric.tags.iter().enumerate() {
        let tag = if key.is_empty() {
            errors.push(format!("{ctx}.tag[{position}].name may not be empty."));
            position.to_string()
        } else {
            key.clone()
        };
        match value.as_deref() {
            None => errors.push(format!("{ctx}.tag[{tag}].value may not be null.")),
            Some("") => errors.push(format!("{ctx}.tag[{tag}].value may not be empty.")),
            Some(_) => {}
        }
    }
}

/// With `skip_validate`, only what a point cannot be stored without.
fn check_storable(metric: &Metric<'_>, ctx: &Ctx<'_>, errors: &mut Vec<String>) {
    if metric.name.is_none() {
        errors.push(format!("{ctx}.name may not be null."));
    }
    for (key, value) in &metric.tags {
        if value.is_none() {
            errors.push(format!("{ctx}.tag[{key}].value may not be null."));
        }
    }
}

/// Why one point of a valid metric was not stored.
enum Problem {
    /// `<ctx><at>.<field> <complaint>`.
    Field(&'static str, &'static str),
    /// The value cannot be converted to the type it was given or inferred.
    NotA(&'static str),
    /// No type given and the value is not a JSON primitive.
    InvalidType,
    /// A type KairosDB does not know.
    Unregistered(String),
}

impl Problem {
    fn message(self, ctx: &Ctx<'_>, at: &dyn std::fmt::Display) -> String {
        match self {
            Problem::Field(field, complaint) => format!("{ctx}{at}.{field} {complaint}"),
            Problem::NotA(kind) => format!("{ctx}{at}.value is not a valid {kind}."),
            Problem::InvalidType => format!("{ctx} value is an invalid type"),
            Problem::Unregistered(kind) => format!("Unregistered data point type '{kind}'"),
        }
    }
}

/// One `[ts, value]` or `[ts, value, "type"]` entry of `datapoints`.
fn read_datapoint(
    datapoint: &[&RawValue],
    metric_kind: Option<&str>,
) -> Result<(i64, Value), Problem> {
    let (timestamp, value) = match datapoint {
        [] => return Err(Problem::Field("timestamp", "cannot be null or empty.")),
        [_] => return Err(Problem::Field("value", "cannot be null or empty.")),
        [timestamp, value, ..] => (classify(timestamp), classify(value)),
    };
    let timestamp = match timestamp {
        Element::Null => return Err(Problem::Field("timestamp", "may not be null.")),
        other => json_long(&other).ok_or(Problem::Field("timestamp", "is not a valid long."))?,
    };
    let own_kind;
    let kind = match datapoint.get(2) {
        Some(raw) => {
            own_kind =
                text_of(&classify(raw)).map_or_else(|| raw.get().to_owned(), Cow::into_owned);
            Some(own_kind.as_str())
        }
        None => metric_kind,
    };
    if let Some(problem) = missing_value(Some(&value), kind == Some("string")) {
        return Err(Problem::Field("value", problem));
    }
    Ok((timestamp, data_point(kind, &value)?))
}

/// KairosDB's `isNotNullOrEmpty` for a JSON value, except that an empty
/// string is a valid `string` value (protocols.md 5.4).
fn missing_value(value: Option<&Element<'_>>, string_type: bool) -> Option<&'static str> {
    match value {
        None => Some("may not be null."),
        Some(Element::Null) => Some("may not be empty."),
        Some(Element::Array(items)) if items.is_empty() => Some("may not be an empty array."),
        Some(element) if !string_type && text_of(element).is_some_and(|text| text.is_empty()) => {
            Some("may not be empty.")
        }
        Some(_) => None,
    }
}

/// Converts a value to its given or inferred KairosDB type.
fn data_point(kind: Option<&str>, value: &Element<'_>) -> Result<Value, Problem> {
    let kind = match kind {
        Some(kind) => kind,
        None => infer_type(value).ok_or(Problem::InvalidType)?,
    };
    match kind {
        "long" => json_long(value)
            .map(Value::I64)
            .ok_or(Problem::NotA("long")),
        "double" => json_double(value)
            .map(Value::F64)
            .ok_or(Problem::NotA("double")),
        "string" => text_of(value)
            .map(|text| Value::Text(Arc::from(&*text)))
            .ok_or(Problem::NotA("string")),
        other => Err(Problem::Unregistered(other.to_owned())),
    }
}

/// KairosDB's `findType`: numbers and numeric-looking strings are `long`
/// without a `.` in their text and `double` with one; other primitives are
/// `string`; null, arrays and objects have no type.
fn infer_type(value: &Element<'_>) -> Option<&'static str> {
    let numeric = match value {
        Element::Number(text) => *text,
        Element::Str(text) if looks_numeric(text) => text.as_ref(),
        Element::Str(_) | Element::Bool(_) => return Some("string"),
        Element::Null | Element::Array(_) | Element::Object => return None,
    };
    Some(if numeric.contains('.') {
        "double"
    } else {
        "long"
    })
}

/// KairosDB's `Util.isNumber`: an optional `+`, `-` or `.`, then digits with
/// at most one `.`, not ending in `.`.
fn looks_numeric(text: &str) -> bool {
    let body = text.strip_prefix(['+', '-', '.']).unwrap_or(text);
    !body.is_empty()
        && !text.ends_with('.')
        && body.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && body.bytes().filter(|b| *b == b'.').count() <= 1
}

/// Gson's `getAsLong`: a number or numeric string, truncated toward zero.
fn json_long(value: &Element<'_>) -> Option<i64> {
    match value {
        Element::Number(text) => decimal_to_i64(text),
        Element::Str(text) => decimal_to_i64(text),
        Element::Array(items) if items.len() == 1 => json_long(&classify(items[0])),
        _ => None,
    }
}

/// Gson's `getAsDouble`.
fn json_double(value: &Element<'_>) -> Option<f64> {
    match value {
        Element::Number(text) => text.parse().ok(),
        Element::Str(text) => text.trim_matches(|c: char| c <= ' ').parse().ok(),
        Element::Array(items) if items.len() == 1 => json_double(&classify(items[0])),
        _ => None,
    }
}

/// Gson's `getAsString`: `None` where Java would throw.
fn text_of<'e>(value: &'e Element<'_>) -> Option<Cow<'e, str>> {
    match value {
        Element::Str(text) => Some(Cow::Borrowed(text)),
        Element::Number(text) => Some(Cow::Borrowed(text)),
        Element::Bool(flag) => Some(Cow::Borrowed(if *flag { "true" } else { "false" })),
        Element::Array(items) if items.len() == 1 => {
            text_of(&classify(items[0])).map(|text| Cow::Owned(text.into_owned()))
        }
        _ => None,
    }
}

/// The integer part of a decimal number (`-12.7e1` is -127), as Java's
/// `BigDecimal.longValue` computes it, or `None` when it is not a number or
/// does not fit in an `i64`.
fn decimal_to_i64(text: &str) -> Option<i64> {
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], parse_exponent(&unsigned[at + 1..])?),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let is_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !is_digits(whole) || !is_digits(fraction) {
        return None;
    }
    // The number is `digits × 10^(exponent − fraction.len())`; keep the digits
    // left of the decimal point, padding with zeros when the exponent says so.
    let digits = whole
        .bytes()
        .chain(fraction.bytes())
        .skip_while(|b| *b == b'0');
    let n_digits = digits.clone().count();
    let n_integer_digits = i64::try_from(n_digits)
        .ok()?
        .saturating_add(exponent)
        .saturating_sub(i64::try_from(fraction.len()).ok()?);
    if n_digits == 0 || n_integer_digits <= 0 {
        return Some(0);
    }
    if n_integer_digits > 19 {
        return None;
    }
    let magnitude = digits
        .chain(std::iter::repeat(b'0'))
        .take(usize::try_from(n_integer_digits).ok()?)
        .fold(0_i128, |acc, b| acc * 10 + i128::from(b - b'0'));
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// An exponent's value, saturating far beyond any meaningful number.
fn parse_exponent(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value = digits.bytes().fold(0_i64, |acc, b| {
        acc.saturating_mul(10).saturating_add(i64::from(b - b'0'))
    });
    Some(if negative { -value } else { value })
}

/// A JSON value classified by its first byte, keeping a number's text.
enum Element<'a> {
    Null,
    Bool(bool),
    Number(&'a str),
    Str(Cow<'a, str>),
    Array(Vec<&'a RawValue>),
    Object,
}

impl Element<'_> {
    /// Gson's name for the token that starts the value.
    fn token(&self) -> &'static str {
        match self {
            Element::Null => "NULL",
            Element::Bool(_) => "BOOLEAN",
            Element::Number(_) => "NUMBER",
            Element::Str(_) => "STRING",
            Element::Array(_) => "BEGIN_ARRAY",
            Element::Object => "BEGIN_OBJECT",
        }
    }
}

/// Classifies valid raw JSON (the decoding below cannot fail on it).
fn classify(raw: &RawValue) -> Element<'_> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => Element::Null,
        Some(b't') => Element::Bool(true),
        Some(b'f') => Element::Bool(false),
        Some(b'"') => Element::Str(match serde_json::from_str::<&str>(text) {
            Ok(unescaped) => Cow::Borrowed(unescaped),
            Err(_) => Cow::Owned(serde_json::from_str(text).unwrap_or_default()),
        }),
        Some(b'[') => Element::Array(serde_json::from_str(text).unwrap_or_default()),
        Some(b'{') => Element::Object,
        _ => Element::Number(text),
    }
}

// === writing ===

/// The points of one output metric object.
struct Series<'a> {
    /// The first point: its name, tags and TTL are the series'.
    first: PointRef<'a>,
    text: bool,
    /// `[ts,value]` entries separated by commas.
    datapoints: Vec<u8>,
}

impl Series<'_> {
    fn holds(&self, point: &PointRef<'_>, text: bool) -> bool {
        self.text == text
            && self.first.name() == point.name()
            && self.first.ttl() == point.ttl()
            && self.first.tags().eq(point.tags())
    }

    fn add(&mut self, timestamp: Timestamp, value: &[u8]) {
        if !self.datapoints.is_empty() {
            self.datapoints.push(b',');
        }
        self.datapoints.push(b'[');
        let mut ints = itoa::Buffer::new();
        self.datapoints
            .extend_from_slice(ints.format(timestamp.as_millis()).as_bytes());
        self.datapoints.push(b',');
        self.datapoints.extend_from_slice(value);
        self.datapoints.push(b']');
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"name\":");
        write_json_string(self.first.name(), out);
        out.extend_from_slice(b",\"tags\":{");
        for (n, (key, value)) in self.first.tags().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            write_json_string(key, out);
            out.push(b':');
            write_json_string(value, out);
        }
        out.push(b'}');
        if let Some(ttl) = self.first.ttl() {
            // KairosDB reads `ttl` as a Java int.
            let ttl = ttl.min(i32::MAX.unsigned_abs());
            out.extend_from_slice(b",\"ttl\":");
            out.extend_from_slice(itoa::Buffer::new().format(ttl).as_bytes());
        }
        if self.text {
            out.extend_from_slice(b",\"type\":\"string\"");
        }
        out.extend_from_slice(b",\"datapoints\":[");
        out.extend_from_slice(&self.datapoints);
        out.extend_from_slice(b"]}");
    }
}

/// What KairosDB REST cannot take: an empty name, no tags, an empty tag.
fn check_point(point: &PointRef<'_>) -> Result<(), Unrepresentable> {
    if point.name().is_empty() {
        return Err(Unrepresentable::InvalidName);
    }
    if !point.has_tags() {
        return Err(Unrepresentable::MissingTags);
    }
    if point
        .tags()
        .any(|(key, value)| key.is_empty() || value.is_empty())
    {
        return Err(Unrepresentable::InvalidName);
    }
    Ok(())
}

/// Writes a value as JSON; returns whether it is text (a `string` series).
/// Integers are JSON integers (KairosDB longs); a `u64` above `i64::MAX` is
/// written as a double, since KairosDB longs are signed.
fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<bool, Unrepresentable> {
    let mut ints = itoa::Buffer::new();
    let integer = match *value {
        Value::I32(v) => ints.format(v),
        Value::U32(v) => ints.format(v),
        Value::I64(v) => ints.format(v),
        Value::U64(v) => match i64::try_from(v) {
            Ok(v) => ints.format(v),
            Err(_) => return write_double(v as f64, out),
        },
        Value::F64(v) => return write_double(v, out),
        Value::Text(ref text) => {
            write_json_string(text, out);
            return Ok(true);
        }
        Value::Histogram(_) => return Err(Unrepresentable::Histogram),
        Value::Absent(_) => return Err(Unrepresentable::Absent),
    };
    out.extend_from_slice(integer.as_bytes());
    Ok(false)
}

/// Writes a double in its shortest round-trip form, always with a `.`
/// (`1.0e20`, not `1e20`), because KairosDB reads a number without one as a long.
fn write_double(value: f64, out: &mut Vec<u8>) -> Result<bool, Unrepresentable> {
    if !value.is_finite() {
        return Err(Unrepresentable::NonFiniteValue);
    }
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(value);
    if text.contains('.') {
        out.extend_from_slice(text.as_bytes());
    } else {
        let (mantissa, exponent) = text.split_at(text.find('e').unwrap_or(text.len()));
        out.extend_from_slice(mantissa.as_bytes());
        out.extend_from_slice(b".0");
        out.extend_from_slice(exponent.as_bytes());
    }
    Ok(false)
}

fn write_json_string(text: &str, out: &mut Vec<u8>) {
    // Serialising a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

fn series_hash(hasher: &RandomState, point: &PointRef<'_>, text: bool) -> u64 {
    let mut state = hasher.build_hasher();
    point.name().hash(&mut state);
    for tag in point.tags() {
        tag.hash(&mut state);
    }
    point.ttl().hash(&mut state);
    text.hash(&mut state);
    state.finish()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::model::{Histogram, Point, ValueKind};

    /// The points of a body with their TTLs, and the outcome.
    fn parse(body: &str) -> (Vec<(Point, Option<u32>)>, ParseOutcome) {
        let mut batch = Batch::new();
        let outcome = parse_body(body.as_bytes(), &mut batch);
        assert_eq!(outcome.n_points, batch.len());
        let points = batch.iter().map(|p| (p.to_point(), p.ttl())).collect();
        (points, outcome)
    }

    fn values(body: &str) -> (Vec<(i64, Value)>, Vec<String>) {
        let (points, outcome) = parse(body);
        let values = points
            .into_iter()
            .map(|(p, _)| (p.timestamp.as_millis(), p.value))
            .collect();
        (values, outcome.errors)
    }

    fn point(name: &str, tags: &[(&str, &str)], ms: i64, value: Value) -> Point {
        let mut point = Point::new(name, Timestamp::from_millis(ms), value);
        for (key, tag_value) in tags {
            point = point.with_tag(*key, *tag_value);
        }
        point.tags.sort();
        point
    }

    fn text(value: &str) -> Value {
        Value::Text(value.into())
    }

    #[test]
    fn protocols_md_5_4_array_example_is_accepted_whole() {
        let (points, outcome) = parse(
            r#"[{"name":"archive_file_tracked","datapoints":[[1359788400000,123],[1359788300000,13.2]],
                 "tags":{"host":"server1","data_center":"DC1"},"ttl":300},
                {"name":"archive_file_search","timestamp":1359786400000,"value":321,"tags":{"host":"server2"}}]"#,
        );
        assert_eq!(
            outcome,
            ParseOutcome {
                n_points: 3,
                ..ParseOutcome::default()
            }
        );
        let tracked = [("host", "server1"), ("data_center", "DC1")];
        assert_eq!(
            points,
            vec![
                (
                    point(
                        "archive_file_tracked",
                        &tracked,
                        1_359_788_400_000,
                        Value::I64(123)
                    ),
                    Some(300)
                ),
                (
                    point(
                        "archive_file_tracked",
                        &tracked,
                        1_359_788_300_000,
                        Value::F64(13.2)
                    ),
                    Some(300)
                ),
                (
                    point(
                        "archive_file_search",
                        &[("host", "server2")],
                        1_359_786_400_000,
                        Value::I64(321)
                    ),
                    None
                ),
            ]
        );
    }

    #[test]
    fn single_values_are_typed_like_kairosdb() {
        let cases: &[(&str, &str, Value)] = &[
            (
                "numeric string is a long",
                r#""value":"123""#,
                Value::I64(123),
            ),
            (
                "numeric string with a dot is a double",
                r#""value":"123.3""#,
                Value::F64(123.3),
            ),
            ("signed numeric string", r#""value":"+7""#, Value::I64(7)),
            ("leading dot", r#""value":".5""#, Value::F64(0.5)),
            (
                "1e5 has no dot: a long",
                r#""value":1e5"#,
                Value::I64(100_000),
            ),
            ("1.5e3 is a double", r#""value":1.5e3"#, Value::F64(1500.0)),
            (
                "an integral double stays a double",
                r#""value":2.0"#,
                Value::F64(2.0),
            ),
            ("booleans are text", r#""value":true"#, text("true")),
            (
                "other strings are text",
                r#""value":"The Value""#,
                text("The Value"),
            ),
            ("exponent strings are text", r#""value":"1e5""#, text("1e5")),
            (
                "empty string with type string",
                r#""value":"","type":"string""#,
                text(""),
            ),
            (
                "number with type string",
                r#""value":5,"type":"string""#,
                text("5"),
            ),
            (
                "long type truncates like BigDecimal",
                r#""value":1.9,"type":"long""#,
                Value::I64(1),
            ),
            (
                "double type",
                r#""value":"4","type":"double""#,
                Value::F64(4.0),
            ),
            (
                "a one-element array reads as its element",
                r#""value":["x"],"type":"string""#,
                text("x"),
            ),
            (
                "i64 extremes",
                r#""value":-9223372036854775808"#,
                Value::I64(i64::MIN),
            ),
        ];
        for (what, fields, expected) in cases {
            let body = format!(r#"{{"name":"m","timestamp":1,{fields},"tags":{{"a":"b"}}}}"#);
            let (got, errors) = values(&body);
            assert_eq!(errors, Vec::<String>::new(), "{what}");
            assert_eq!(got, vec![(1, expected.clone())], "{what}");
        }
    }

    #[test]
    fn timestamps_follow_gson() {
        let cases: &[(&str, i64)] = &[
            (r#""time":5,"timestamp":9"#, 5),
            (r#""time":null,"timestamp":9"#, 9),
            (r#""timestamp":"42""#, 42),
            (r#""timestamp":1e3"#, 1000),
            (r#""timestamp":2.0"#, 2),
            (r#""timestamp":-1"#, -1),
            (r#""timestamp":0"#, 0),
        ];
        for (fields, expected) in cases {
            let body = format!(r#"{{"name":"m",{fields},"value":1,"tags":{{"a":"b"}}}}"#);
            let (got, errors) = values(&body);
            assert_eq!(errors, Vec::<String>::new(), "{fields}");
            assert_eq!(got, vec![(*expected, Value::I64(1))], "{fields}");
        }
    }

    #[test]
    fn datapoint_timestamps_are_numbers_or_numeric_strings_truncated() {
        let (got, errors) = values(
            r#"{"name":"m","tags":{"a":"b"},
                "datapoints":[[1,1],["2",2],[3.9,3],["4.2",4],[-5.5,5],[6e2,6],[7,"x","string"]]}"#,
        );
        assert_eq!(errors, Vec::<String>::new());
        let stamps: Vec<i64> = got.iter().map(|(ms, _)| *ms).collect();
        assert_eq!(stamps, vec![1, 2, 3, 4, -5, 600, 7]);
        assert_eq!(got[6].1, text("x"));
    }

    #[test]
    fn every_error_has_kairosdb_wording() {
        let cases: &[(&str, &[&str])] = &[
            (
                r#"[{"name":"metric1","timestamp":1234,"value":456,"datapoints":[[1,2]],"tags":{"foo":"bar"}},
                   {"datapoints":[[1,2]],"tags":{"foo":"bar"}}]"#,
                &["metric[1].name may not be null."],
            ),
            (
                r#"[{"name":"","tags":{"foo":"bar"},"datapoints":[[1,2]]}]"#,
                &["metric[0].name may not be empty."],
            ),
            (
                r#"[{"name":"metric1","timestamp":1234,"tags":{"foo":"bar"}}]"#,
                &["metric[0](name=metric1).value may not be null."],
            ),
            (
                r#"[{"name":"metric1","value":1234,"tags":{"foo":"bar"}}]"#,
                &["metric[0](name=metric1).timestamp may not be null."],
            ),
            (
                r#"[{"name":"metric1","tags":{"foo":"bar"},"datapoints":[[]]}]"#,
                &["metric[0](name=metric1).datapoints[0].timestamp cannot be null or empty."],
            ),
            (
                r#"[{"name":"metric1","tags":{"foo":"bar"},"datapoints":[[2]]}]"#,
                &["metric[0](name=metric1).datapoints[0].value cannot be null or empty."],
            ),
            (
                r#"[{"name":"metric1","tags":{"foo":"bar"},"datapoints":[[null,2]]}]"#,
                &["metric[0](name=metric1).datapoints[0].timestamp may not be null."],
            ),
            (
                r#"[{"name":"metric1","tags":{"foo":"bar"},"datapoints":[[2,null]]}]"#,
                &["metric[0](name=metric1).datapoints[0].value may not be empty."],
            ),
            (
                r#"[{"name":"metric1","tags":{"foo":"bar"},"datapoints":[[2,""]]}]"#,
                &["metric[0](name=metric1).datapoints[0].value may not be empty."],
            ),
            (
                r#"{"name":"metricName","tags":{"foo":""},"datapoints":[[1,2]]}"#,
                &["metric[0](name=metricName).tag[foo].value may not be empty."],
            ),
            (
                r#"{"name":"metricName","tags":{"foo":null},"datapoints":[[1,2]]}"#,
                &["metric[0](name=metricName).tag[foo].value may not be null."],
            ),
            (
                r#"{"name":"metricName","tags":{"":"bar"},"datapoints":[[1,2]]}"#,
                &["metric[0](name=metricName).tag[0].name may not be empty."],
            ),
            (
                r#"{"name":"m","datapoints":[[1,2]]}"#,
                &["metric[0](name=m).tags count must be greater than or equal to 1."],
            ),
            (
                r#"{"name":"m","timestamp":1,"value":"","tags":{"a":"b"}}"#,
                &["metric[0](name=m).value may not be empty."],
            ),
            (
                r#"{"name":"m","timestamp":1,"value":[],"tags":{"a":"b"}}"#,
                &["metric[0](name=m).value may not be an empty array."],
            ),
            (
                r#"{"name":"m","timestamp":1,"value":1,"type":"x","tags":{"a":"b"}}"#,
                &["Unregistered data point type 'x'"],
            ),
            (
                r#"{"name":"m","datapoints":[[1,1,"x"],[2,2,"long"]],"tags":{"a":"b"}}"#,
                &["Unregistered data point type 'x'"],
            ),
            (
                r#"{"name":"m","timestamp":1,"value":{"a":1},"tags":{"a":"b"}}"#,
                &["metric[0](name=m) value is an invalid type"],
            ),
            (
                r#"{"name":"m","datapoints":[[1,[1,2]]],"tags":{"a":"b"}}"#,
                &["metric[0](name=m) value is an invalid type"],
            ),
            (
                r#"{"name":"m","timestamp":1,"value":"abc","type":"long","tags":{"a":"b"}}"#,
                &["metric[0](name=m).value is not a valid long."],
            ),
            (
                r#"{"name":"m","datapoints":[[true,1]],"tags":{"a":"b"}}"#,
                &["metric[0](name=m).datapoints[0].timestamp is not a valid long."],
            ),
            (
                r#"{"name":"m","timestamp":1,"value":12345678901234567890,"tags":{"a":"b"}}"#,
                &["metric[0](name=m).value is not a valid long."],
            ),
            (
                r#"{"name":"metricName","timestamp":456,"value":"","tags":{"name":""}}"#,
                &[
                    "metric[0](name=metricName).value may not be empty.",
                    "metric[0](name=metricName).tag[name].value may not be empty.",
                ],
            ),
            (
                r#"{"timestamp":1,"tags":{},"value":null}"#,
                &[
                    "metric[0].name may not be null.",
                    "metric[0].value may not be empty.",
                    "metric[0].tags count must be greater than or equal to 1.",
                ],
            ),
            (
                r#"{"name":"m","timestamp":1,"value":{},"skip_validate":true}"#,
                &["metric[0] value is an invalid type"],
            ),
        ];
        for (body, expected) in cases {
            let (_, outcome) = parse(body);
            assert_eq!(outcome.errors, *expected, "{body}");
            assert!(!outcome.stopped, "{body}");
        }
    }

    #[test]
    fn a_bad_metric_between_good_ones_keeps_both_good_ones() {
        let (points, outcome) = parse(
            r#"[{"name":"a","timestamp":1,"value":1,"tags":{"h":"x"}},
                {"name":"b","timestamp":2,"value":2},
                {"name":"c","timestamp":3,"value":3,"tags":{"h":"x"}}]"#,
        );
        let names: Vec<_> = points.iter().map(|(p, _)| p.name.as_str()).collect();
        assert_eq!(names, vec!["a", "c"]);
        assert_eq!(
            outcome.errors,
            vec!["metric[1](name=b).tags count must be greater than or equal to 1."]
        );
    }

    #[test]
    fn bad_datapoints_do_not_cost_the_good_ones() {
        let (got, errors) =
            values(r#"{"name":"m","tags":{"a":"b"},"datapoints":[[1,1],[],[2,null],[3,3],[4]]}"#);
        assert_eq!(got, vec![(1, Value::I64(1)), (3, Value::I64(3))]);
        // KairosDB advances the index only after a stored point.
        assert_eq!(
            errors,
            vec![
                "metric[0](name=m).datapoints[1].timestamp cannot be null or empty.",
                "metric[0](name=m).datapoints[1].value may not be empty.",
                "metric[0](name=m).datapoints[2].value cannot be null or empty.",
            ]
        );
    }

    #[test]
    fn value_and_datapoints_in_one_object_are_both_ingested() {
        let (got, errors) = values(
            r#"[{"name":"metric1","time":1234,"value":4321,"datapoints":[[456,654]],"tags":{"foo":"bar"}}]"#,
        );
        assert!(errors.is_empty());
        assert_eq!(got, vec![(1234, Value::I64(4321)), (456, Value::I64(654))]);
    }

    #[test]
    fn skip_validate_accepts_what_validation_would_refuse() {
        let (points, outcome) = parse(r#"{"name":"m","skip_validate":true,"datapoints":[[1,2]]}"#);
        assert!(outcome.errors.is_empty());
        assert_eq!(points, vec![(point("m", &[], 1, Value::I64(2)), None)]);
        let (_, outcome) =
            parse(r#"{"skip_validate":"TRUE","tags":{"a":null},"datapoints":[[1,2]]}"#);
        assert_eq!(
            outcome.errors,
            vec![
                "metric[0].name may not be null.",
                "metric[0].tag[a].value may not be null."
            ]
        );
    }

    #[test]
    fn ttl_is_attached_to_every_point_of_the_metric() {
        let (points, outcome) = parse(
            r#"{"name":"m","ttl":"60","timestamp":1,"value":1,"datapoints":[[2,2]],"tags":{"a":"b"}}"#,
        );
        assert!(outcome.errors.is_empty());
        let ttls: Vec<_> = points.iter().map(|(_, ttl)| *ttl).collect();
        assert_eq!(ttls, vec![Some(60), Some(60)]);
        let (points, _) =
            parse(r#"{"name":"m","ttl":-5,"timestamp":1,"value":1,"tags":{"a":"b"}}"#);
        assert_eq!(points[0].1, None);
    }

    #[test]
    fn bodies_that_are_not_metrics() {
        let cases: &[(&str, &str)] = &[
            ("", END_OF_INPUT),
            (" \n\t ", END_OF_INPUT),
            ("5", INVALID_START),
            ("\"x\"", INVALID_START),
            ("null", INVALID_START),
            ("xyz", INVALID_START),
            ("[", END_OF_INPUT),
            ("[{\"name\":", END_OF_INPUT),
        ];
        for (body, expected) in cases {
            let (points, outcome) = parse(body);
            assert!(points.is_empty(), "{body:?}");
            assert_eq!(outcome.errors, vec![*expected], "{body:?}");
            assert!(outcome.stopped, "{body:?}");
        }
        let (_, outcome) = parse("[]");
        assert_eq!(outcome, ParseOutcome::default());
    }

    #[test]
    fn malformed_json_reports_the_parser_message_and_keeps_what_came_before() {
        let (points, outcome) = parse(r#"[{"name": "metric1", "timestamp": 1234, "value": }]"#);
        assert!(points.is_empty());
        assert_eq!(outcome.errors.len(), 1);
        assert!(
            outcome.errors[0].starts_with("expected value at line 1"),
            "{:?}",
            outcome.errors
        );
        let (points, outcome) = parse(
            r#"[{"name":"a","timestamp":1,"value":1,"tags":{"h":"x"}}, {"name": NaN}, {"name":"c"}]"#,
        );
        assert_eq!(points.len(), 1);
        assert!(outcome.stopped);
        assert_eq!(outcome.errors.len(), 1);
    }

    #[test]
    fn fields_gson_cannot_bind_stop_reading_at_that_metric() {
        let good = r#"{"name":"a","timestamp":1,"value":1,"tags":{"h":"x"}}"#;
        let cases: &[(&str, &str)] = &[
            (
                r#"{"name":"m","timestamp":1.5}"#,
                "Expected a long but was 1.5 at path $[1].timestamp",
            ),
            (
                r#"{"name":"m","time":"soon"}"#,
                "Expected a long but was soon at path $[1].time",
            ),
            (
                r#"{"name":{}}"#,
                "Expected a string but was BEGIN_OBJECT at path $[1].name",
            ),
            (
                r#"{"name":"m","ttl":1.5}"#,
                "Expected an int but was 1.5 at path $[1].ttl",
            ),
            (
                r#"{"name":"m","ttl":3000000000}"#,
                "Expected an int but was 3000000000 at path $[1].ttl",
            ),
            (
                r#"{"name":"m","tags":["a"]}"#,
                "Expected BEGIN_OBJECT but was BEGIN_ARRAY at path $[1].tags",
            ),
            (
                r#"{"name":"m","tags":{"a":[1]}}"#,
                "Expected a string but was BEGIN_ARRAY at path $[1].tags.a",
            ),
            (
                r#"{"name":"m","tags":{"a":"1","a":"2"}}"#,
                "duplicate key: a",
            ),
            (
                r#"{"name":"m","datapoints":5}"#,
                "Expected BEGIN_ARRAY but was NUMBER at path $[1].datapoints",
            ),
            (
                r#"{"name":"m","datapoints":[[1,2],3]}"#,
                "Expected BEGIN_ARRAY but was NUMBER at path $[1].datapoints[1]",
            ),
            (
                r#"{"name":"m","skip_validate":1}"#,
                "Expected a boolean but was NUMBER at path $[1].skip_validate",
            ),
            (
                r#"{"name":"m","type":[]}"#,
                "Expected a string but was BEGIN_ARRAY at path $[1].type",
            ),
            ("7", "Expected BEGIN_OBJECT but was NUMBER at path $[1]"),
            ("null", "Expected BEGIN_OBJECT but was NULL at path $[1]"),
            (
                "[1,[2]]",
                "Expected BEGIN_OBJECT but was BEGIN_ARRAY at path $[1]",
            ),
        ];
        for (bad, expected) in cases {
            let (points, outcome) = parse(&format!("[{good},{bad},{good}]"));
            assert_eq!(points.len(), 1, "{bad}");
            assert_eq!(outcome.errors, vec![*expected], "{bad}");
            assert!(outcome.stopped, "{bad}");
        }
        let (_, outcome) = parse(r#"{"name":"m","timestamp":1.5}"#);
        assert_eq!(
            outcome.errors,
            vec!["Expected a long but was 1.5 at path $.timestamp"]
        );
    }

    #[test]
    fn gson_conversions_of_names_and_tags() {
        let (points, outcome) = parse(
            r#"{"name":12,"timestamp":1,"value":1,"tags":{"n":1.50,"b":false},"unknown":[{}],"name":1e2}"#,
        );
        assert!(outcome.errors.is_empty());
        assert_eq!(
            points[0].0,
            point("1e2", &[("b", "false"), ("n", "1.50")], 1, Value::I64(1))
        );
    }

    #[test]
    fn trailing_bytes_after_the_top_level_value_are_ignored() {
        let (points, outcome) =
            parse(r#"{"name":"m","timestamp":1,"value":1,"tags":{"a":"b"}} trailing"#);
        assert_eq!(points.len(), 1);
        assert!(outcome.errors.is_empty());
    }

    #[test]
    fn decimals_truncate_toward_zero_within_i64() {
        let cases: &[(&str, Option<i64>)] = &[
            ("0", Some(0)),
            ("-0", Some(0)),
            ("+12", Some(12)),
            ("12.99", Some(12)),
            ("-12.99", Some(-12)),
            ("1e5", Some(100_000)),
            ("1E+2", Some(100)),
            ("1e-3", Some(0)),
            ("-12.7e1", Some(-127)),
            ("0.05e2", Some(5)),
            (".5", Some(0)),
            ("5.", Some(5)),
            ("000123", Some(123)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("1e19", None),
            ("1e999999999999999999999", None),
            ("0e999999999999999999999", Some(0)),
            ("1e-999999999999999999999", Some(0)),
            ("", None),
            ("-", None),
            (".", None),
            ("1e", None),
            ("1x", None),
            ("1.2.3", None),
            (" 1", None),
        ];
        for (input, expected) in cases {
            assert_eq!(decimal_to_i64(input), *expected, "{input:?}");
        }
    }

    #[test]
    fn numeric_looking_strings_follow_util_is_number() {
        let cases: &[(&str, bool)] = &[
            ("123", true),
            ("-1.5", true),
            ("+7", true),
            (".5", true),
            ("..5", true),
            ("1.", false),
            ("1.2.3", false),
            ("", false),
            ("-", false),
            ("1e5", false),
            (" 1", false),
        ];
        for (input, expected) in cases {
            assert_eq!(looks_numeric(input), *expected, "{input:?}");
        }
        // Java's Double.parseDouble refuses what isNumber let through.
        let (_, errors) = values(r#"{"name":"m","timestamp":1,"value":"..5","tags":{"a":"b"}}"#);
        assert_eq!(
            errors,
            vec!["metric[0](name=m).value is not a valid double."]
        );
    }

    fn encode(batch: &Batch) -> (Vec<u8>, usize, Skipped) {
        let mut out = Vec::new();
        let mut skipped = Skipped::default();
        let written = KairosJsonEncoder.encode(&mut batch.iter(), &mut out, &mut skipped);
        (out, written, skipped)
    }

    #[test]
    fn encoder_groups_series_in_first_seen_order() {
        let mut batch = Batch::new();
        let at = Timestamp::from_millis;
        batch.push("cpu", [("host", "a")], at(1), Value::I64(1), None);
        batch.push("cpu", [("host", "b")], at(2), Value::F64(2.5), None);
        batch.push("cpu", [("host", "a")], at(3), Value::F64(1e20), None);
        batch.push("cpu", [("host", "a")], at(4), text("up \"1\""), None);
        batch.push("cpu", [("host", "a")], at(5), Value::I64(7), None);
        batch.set_last_ttl(60);
        batch.push("cpu", [("host", "a")], at(6), Value::U64(u64::MAX), None);
        batch.push("cpu", [("host", "a")], at(7), Value::U32(9), None);
        let (out, written, skipped) = encode(&batch);
        assert_eq!(written, 7);
        assert_eq!(skipped.total(), 0);
        let body: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(
            body,
            json!([
                {"name": "cpu", "tags": {"host": "a"}, "datapoints": [[1, 1], [3, 1e20], [6, 18446744073709552000.0], [7, 9]]},
                {"name": "cpu", "tags": {"host": "b"}, "datapoints": [[2, 2.5]]},
                {"name": "cpu", "tags": {"host": "a"}, "type": "string", "datapoints": [[4, "up \"1\""]]},
                {"name": "cpu", "tags": {"host": "a"}, "ttl": 60, "datapoints": [[5, 7]]},
            ])
        );
        let raw = String::from_utf8(out).expect("utf-8");
        assert!(raw.contains("[3,1.0e20]"), "{raw}");
        // And KairosDB's reading of it gives the same values back.
        let (points, outcome) = parse(&raw);
        assert!(outcome.errors.is_empty());
        let third = points
            .iter()
            .find(|(p, _)| p.timestamp.as_millis() == 3)
            .expect("point 3");
        assert_eq!(third.0.value, Value::F64(1e20));
    }

    #[test]
    fn encoder_skips_what_kairosdb_rest_cannot_take() {
        let at = Timestamp::from_millis(1);
        let histogram = Value::Histogram(Arc::new(Histogram::default()));
        let mut batch = Batch::new();
        batch.push("nan", [("a", "b")], at, Value::F64(f64::NAN), None);
        batch.push("inf", [("a", "b")], at, Value::F64(f64::NEG_INFINITY), None);
        batch.push("hist", [("a", "b")], at, histogram, None);
        batch.push(
            "absent",
            [("a", "b")],
            at,
            Value::Absent(ValueKind::F64),
            None,
        );
        batch.push("untagged", [], at, Value::I64(1), None);
        batch.push("", [("a", "b")], at, Value::I64(1), None);
        batch.push("empty_tag", [("a", "")], at, Value::I64(1), None);
        let (out, written, skipped) = encode(&batch);
        assert!(out.is_empty());
        assert_eq!(written, 0);
        assert_eq!(skipped.count(Unrepresentable::NonFiniteValue), 2);
        assert_eq!(skipped.count(Unrepresentable::Histogram), 1);
        assert_eq!(skipped.count(Unrepresentable::Absent), 1);
        assert_eq!(skipped.count(Unrepresentable::MissingTags), 1);
        assert_eq!(skipped.count(Unrepresentable::InvalidName), 2);

        batch.push("ok", [("a", "b")], at, Value::I32(-3), None);
        let (out, written, _) = encode(&batch);
        assert_eq!(written, 1);
        assert_eq!(
            out,
            br#"[{"name":"ok","tags":{"a":"b"},"datapoints":[[1,-3]]}]"#
        );
    }

    fn arb_string(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 1..=max)
            .prop_map(|chars| chars.into_iter().collect())
    }

    fn arb_numeric() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::I64),
            (proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO)
                .prop_map(Value::F64),
        ]
    }

    /// Name, tags, TTL and `(ms, value)` points, all numeric or all text.
    type SeriesCase = (
        String,
        BTreeMap<String, String>,
        Option<u32>,
        Vec<(i64, Value)>,
    );

    fn arb_series() -> impl Strategy<Value = SeriesCase> {
        let points = prop_oneof![
            proptest::collection::vec((any::<i64>(), arb_numeric()), 1..5),
            proptest::collection::vec(
                (
                    any::<i64>(),
                    proptest::collection::vec(any::<char>(), 0..8).prop_map(|chars| Value::Text(
                        chars.into_iter().collect::<String>().into()
                    ))
                ),
                1..5
            ),
        ];
        (
            arb_string(12),
            proptest::collection::btree_map(arb_string(6), arb_string(6), 1..4),
            proptest::option::of(1..=i32::MAX.unsigned_abs()),
            points,
        )
    }

    proptest! {
        #[test]
        fn write_then_parse_round_trips(
            series in proptest::collection::vec(arb_series(), 1..5).prop_filter(
                "series are distinct",
                |series| {
                    let keys: HashSet<_> = series
                        .iter()
                        .map(|(name, tags, ttl, points)| {
                            (name, tags, ttl, matches!(points[0].1, Value::Text(_)))
                        })
                        .collect();
                    keys.len() == series.len()
                },
            ),
        ) {
            let mut batch = Batch::new();
            for (name, tags, ttl, points) in &series {
                for (ms, value) in points {
                    let tags = tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
                    batch.push(name, tags, Timestamp::from_millis(*ms), value.clone(), None);
                    batch.set_last_ttl(ttl.unwrap_or(0));
                }
            }
            let (out, written, skipped) = encode(&batch);
            prop_assert_eq!(skipped.total(), 0);
            prop_assert_eq!(written, batch.len());
            let mut parsed = Batch::new();
            let outcome = parse_body(&out, &mut parsed);
            prop_assert_eq!(outcome.errors, Vec::<String>::new());
            let expected: Vec<_> = batch.iter().map(|p| (p.to_point(), p.ttl())).collect();
            let got: Vec<_> = parsed.iter().map(|p| (p.to_point(), p.ttl())).collect();
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut batch = Batch::new();
            let outcome = parse_body(&body, &mut batch);
            prop_assert_eq!(outcome.n_points, batch.len());
        }

        #[test]
        fn json_shaped_noise_never_panics(
            tokens in proptest::collection::vec(
                prop::sample::select(vec![
                    "[", "]", "{", "}", ",", ":", "\"name\"", "\"m\"", "\"tags\"", "\"a\"",
                    "\"datapoints\"", "\"value\"", "\"timestamp\"", "\"time\"", "\"type\"",
                    "\"ttl\"", "\"skip_validate\"", "\"string\"", "\"long\"", "\"\"", "\"1.5\"",
                    "1", "-0", "1.5", "1e5", "1e999", "null", "true", "false",
                ]),
                0..64,
            ),
        ) {
            let body = tokens.concat();
            let mut batch = Batch::new();
            let outcome = parse_body(body.as_bytes(), &mut batch);
            prop_assert_eq!(outcome.n_points, batch.len());
        }
    }
}
