//! The point model every codec reads and writes (design.md section 3).
//!
//! A data point is a name, a sorted tag list, a millisecond timestamp, a typed
//! value and an optional source identity. Points travel in [`Batch`]es whose
//! strings live in one arena, so decoding a read buffer allocates per batch,
//! not per point. This module depends on nothing else in the crate.

mod batch;
mod graphite_name;
mod histogram;
mod point;
mod timestamp;
mod value;

pub use batch::{Batch, PointRef, TagIter};
pub use graphite_name::{carbon_tag_order, write_carbon_name};
pub use histogram::{Bin, Histogram};
pub use point::{Point, Source};
pub use timestamp::Timestamp;
pub use value::{Value, ValueKind};
