//! The schemas of record as verifiers: one uninhabited type per table,
//! implementing the crate's `Verifiable` as flatc-generated code does, with
//! the slots of protocols.md section 7. Union members NONE and unknown pass
//! here and are left to the reader, which rejects them one sample at a time.

use flatbuffers::{ForwardsUOffset, InvalidFlatbuffer, Vector, Verifiable, Verifier};

use super::{slot, tag, Generation, V2_BUCKET_BYTES};

/// The schema nests at most six tables (list, metric, value, sample,
/// histogram, bucket); anything deeper is not a MetricList.
const MAX_DEPTH: usize = 8;
/// Verification work allowed per body byte. Shared vtables and shared
/// strings make the expanded tree larger than the buffer (about 2.3 times
/// for this encoder's output with one check per body, 1.0 for flatc's), but
/// a body whose offsets all point at one big table would make verification
/// quadratic; a fixed factor keeps it linear in the body size.
const APPARENT_SIZE_FACTOR: usize = 8;
/// The smallest table (a lone soffset) takes this many bytes of the
/// verifier's apparent-size budget, which bounds how many tables it visits.
const MIN_TABLE_BYTES: usize = 4;

/// Checks every offset, length, alignment and string of `body` against
/// the schema of `generation`, within bounds that keep the work linear.
pub(super) fn verify(body: &[u8], generation: Generation) -> Result<(), InvalidFlatbuffer> {
    let max_apparent_size = body.len().saturating_mul(APPARENT_SIZE_FACTOR);
    let options = flatbuffers::VerifierOptions {
        max_depth: MAX_DEPTH,
        max_tables: max_apparent_size / MIN_TABLE_BYTES,
        max_apparent_size,
        ignore_missing_null_terminator: false,
    };
    let mut verifier = Verifier::new(&options, body);
    match generation {
        Generation::Ciml => <ForwardsUOffset<ListV1>>::run_verifier(&mut verifier, 0),
        Generation::Cmls => <ForwardsUOffset<ListV2>>::run_verifier(&mut verifier, 0),
    }
}

/// Declares a table type whose only field is `value`.
macro_rules! value_table {
    ($($name:ident: $field:ty),* $(,)?) => {$(
        enum $name {}
        impl Verifiable for $name {
            fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> Result<(), InvalidFlatbuffer> {
                v.visit_table(pos)?
                    .visit_field::<$field>("value", slot::SCALAR_VALUE, false)?
                    .finish();
                Ok(())
            }
        }
    )*};
}

value_table! {
    IntValue: i32,
    UintValue: u32,
    LongValue: i64,
    UlongValue: u64,
    DoubleValue: f64,
    StringValue: ForwardsUOffset<&str>,
}

/// AbsentNumericValue, AbsentStringValue and AbsentHistogramValue.
enum EmptyTable {}

impl Verifiable for EmptyTable {
    fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.visit_table(pos)?.finish();
        Ok(())
    }
}

/// Checks the union member `kind` at `pos`; `H` is the generation's Histogram.
fn verify_value<H: Verifiable>(
    kind: u8,
    v: &mut Verifier<'_, '_>,
    pos: usize,
) -> Result<(), InvalidFlatbuffer> {
    match kind {
        tag::INT => v.verify_union_variant::<ForwardsUOffset<IntValue>>("IntValue", pos),
        tag::UINT => v.verify_union_variant::<ForwardsUOffset<UintValue>>("UintValue", pos),
        tag::LONG => v.verify_union_variant::<ForwardsUOffset<LongValue>>("LongValue", pos),
        tag::ULONG => v.verify_union_variant::<ForwardsUOffset<UlongValue>>("UlongValue", pos),
        tag::DOUBLE => v.verify_union_variant::<ForwardsUOffset<DoubleValue>>("DoubleValue", pos),
        tag::STRING => v.verify_union_variant::<ForwardsUOffset<StringValue>>("StringValue", pos),
        tag::HISTOGRAM => v.verify_union_variant::<ForwardsUOffset<H>>("Histogram", pos),
        tag::ABSENT_NUMERIC | tag::ABSENT_STRING | tag::ABSENT_HISTOGRAM => {
            v.verify_union_variant::<ForwardsUOffset<EmptyTable>>("Absent", pos)
        }
        _ => Ok(()),
    }
}

/// v1 `MetricList`.
enum ListV1 {}
/// v1 `Metric`.
enum MetricV1 {}
/// v1 `MetricValue`, the sample inlined.
enum MetricValueV1 {}
/// v1 `Histogram`.
enum HistogramV1 {}
/// v1 `HistogramBucket`, a table.
enum BucketV1 {}
/// v2 `MetricList`.
enum ListV2 {}
/// v2 `Metric`.
enum MetricV2 {}
/// v2 `MetricValue`.
enum MetricValueV2 {}
/// v2 `MetricSample`.
enum SampleV2 {}
/// v2 `Histogram`.
enum HistogramV2 {}
/// v2 `[HistogramBucket]`: 16-byte, 8-byte aligned structs.
enum BucketsV2 {}

type Strings<'a> = ForwardsUOffset<Vector<'a, ForwardsUOffset<&'a str>>>;

impl Verifiable for ListV1 {
    fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.visit_table(pos)?
            .visit_field::<ForwardsUOffset<Vector<'_, ForwardsUOffset<MetricV1>>>>(
                "metrics",
                slot::LIST_METRICS,
                false,
            )?
            .finish();
        Ok(())
    }
}

impl Verifiable for MetricV1 {
    fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.visit_table(pos)?
            .visit_field::<u64>("timestamp", slot::METRIC_TIMESTAMP, false)?
            .visit_field::<ForwardsUOffset<&str>>("check_name", slot::METRIC_CHECK_NAME, false)?
            .visit_field::<ForwardsUOffset<&str>>("check_uuid", slot::METRIC_CHECK_UUID, false)?
            .visit_field::<i32>("account_id", slot::METRIC_ACCOUNT_ID, false)?
            .visit_field::<ForwardsUOffset<MetricValueV1>>("value", slot::METRIC_VALUE, false)?
            .finish();
        Ok(())
    }
}

impl Verifiable for MetricValueV1 {
    fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.visit_table(pos)?
            .visit_field::<ForwardsUOffset<&str>>("name", slot::VALUE_NAME, false)?
            .visit_field::<u64>("timestamp", slot::V1_VALUE_TIMESTAMP, false)?
            .visit_union::<u8, _>(
                "value_type",
                slot::V1_VALUE_TYPE,
                "value",
                slot::V1_VALUE_VALUE,
                false,
                verify_value::<HistogramV1>,
            )?
            .visit_field::<i16>("generation", slot::V1_VALUE_GENERATION, false)?
            .visit_field::<Strings<'_>>("stream_tags", slot::V1_VALUE_STREAM_TAGS, false)?
            .finish();
        Ok(())
    }
}

impl Verifiable for HistogramV1 {
    fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.visit_table(pos)?
            .visit_field::<ForwardsUOffset<Vector<'_, ForwardsUOffset<BucketV1>>>>(
                "buckets",
                slot::HISTOGRAM_BUCKETS,
                false,
            )?
            .visit_field::<bool>("cumulative", slot::HISTOGRAM_CUMULATIVE, false)?
            .finish();
        Ok(())
    }
}

impl Verifiable for BucketV1 {
    fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.visit_table(pos)?
            .visit_field::<i8>("val", slot::BUCKET_VAL, false)?
            .visit_field::<i8>("exp", slot::BUCKET_EXP, false)?
            .visit_field::<u64>("count", slot::BUCKET_COUNT, false)?
            .finish();
        Ok(())
    }
}

impl Verifiable for ListV2 {
    fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.visit_table(pos)?
            .visit_field::<ForwardsUOffset<Vector<'_, ForwardsUOffset<MetricV2>>>>(
                "metrics",
                slot::LIST_METRICS,
                false,
            )?
            .finish();
        Ok(())
    }
}

impl Verifiable for MetricV2 {
    fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.visit_table(pos)?
            .visit_field::<u64>("timestamp", slot::METRIC_TIMESTAMP, false)?
            .visit_field::<ForwardsUOffset<&str>>("check_name", slot::METRIC_CHECK_NAME, false)?
            .visit_field::<ForwardsUOffset<Vector<'_, u8>>>(
                "check_uuid",
                slot::METRIC_CHECK_UUID,
                false,
            )?
            .visit_field::<i32>("account_id", slot::METRIC_ACCOUNT_ID, false)?
            .visit_field::<ForwardsUOffset<MetricValueV2>>("value", slot::METRIC_VALUE, false)?
            .finish();
        Ok(())
    }
}

impl Verifiable for MetricValueV2 {
    fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.visit_table(pos)?
            .visit_field::<ForwardsUOffset<&str>>("name", slot::VALUE_NAME, false)?
            .visit_field::<Strings<'_>>("stream_tags", slot::V2_VALUE_STREAM_TAGS, false)?
            .visit_field::<ForwardsUOffset<Vector<'_, ForwardsUOffset<SampleV2>>>>(
                "samples",
                slot::V2_VALUE_SAMPLES,
                false,
            )?
            .finish();
        Ok(())
    }
}

impl Verifiable for SampleV2 {
    fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.visit_table(pos)?
            .visit_field::<u64>("timestamp", slot::SAMPLE_TIMESTAMP, false)?
            .visit_union::<u8, _>(
                "value_type",
                slot::SAMPLE_TYPE,
                "value",
                slot::SAMPLE_VALUE,
                false,
                verify_value::<HistogramV2>,
            )?
            .visit_field::<i16>("generation", slot::SAMPLE_GENERATION, false)?
            .finish();
        Ok(())
    }
}

impl Verifiable for HistogramV2 {
    fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.visit_table(pos)?
            .visit_field::<ForwardsUOffset<BucketsV2>>("buckets", slot::HISTOGRAM_BUCKETS, false)?
            .visit_field::<bool>("cumulative", slot::HISTOGRAM_CUMULATIVE, false)?
            .finish();
        Ok(())
    }
}

impl Verifiable for BucketsV2 {
    fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> Result<(), InvalidFlatbuffer> {
        let len = usize::try_from(v.get_uoffset(pos)?).unwrap_or(usize::MAX);
        let start = pos.saturating_add(4);
        // The struct holds a u64, so the elements are 8-byte aligned.
        v.is_aligned::<u64>(start)?;
        v.range_in_buffer(start, len.saturating_mul(V2_BUCKET_BYTES))
    }
}
