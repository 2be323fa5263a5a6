//! tsrelay: accept metric points in several wire protocols, route them, and
//! forward them to upstreams in (possibly other) protocols.
//!
//! ```text
//! input::{tcp,udp} --codec::StreamDecoder--> model::Batch --route::Router-->
//!     queue (one per upstream, bounded in points, WhenFull policy)
//!     --> output (chunking, codec::Encoder, transport, retry) --> upstream
//! ```
//!
//! `model` and `codec` are pure and depend on nothing else; `config` turns
//! relay.yaml into validated types; `relay` is the only module that knows the
//! whole graph.

pub mod codec;
pub mod config;
pub mod health;
pub mod model;
pub mod queue;
pub mod rate;
pub mod receipt;
pub mod route;
pub mod spool;
pub mod telemetry;
pub mod translate;

pub mod admin;
pub mod broker;
pub mod convert;
pub mod explain;
pub mod input;
pub mod output;
pub mod relay;
pub mod summary;
