//! The event vocabulary of Weft: the envelope every event travels in, every event type,
//! the subjects they are stored under, and their encoding. No I/O lives here.
//!
//! Events are encoded with MessagePack using named fields, so a field added later is read
//! as absent (`Option`/`default`) from old events; a change that is not additive bumps
//! [`SCHEMA_VERSION`] and gets an upcaster in the `migrations` crate.

pub mod access;
pub mod budget;
mod envelope;
#[cfg(any(test, feature = "testing"))]
pub mod fixture;
pub mod output;
pub mod spin_up;
pub mod subject;
pub mod target;
pub mod time;
pub mod work;
pub mod writer;

pub use envelope::{AggregateKind, DecodeError, Envelope, Event, RawEnvelope, RawEvent};

/// The schema version written into every new event's envelope.
pub const SCHEMA_VERSION: u32 = 1;

/// The JetStream stream that holds the whole event log.
pub const STREAM: &str = "WEFT_EVENTS";

/// Who caused an event that no person or agent asked for.
pub const SYSTEM_ACTOR: &str = "system";
