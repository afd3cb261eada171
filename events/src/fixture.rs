//! One envelope fixture for the tests of every crate: a test names the event, its aggregate
//! and its time; the rest of the envelope is filled in the same way everywhere.

use crate::{Envelope, Event, SCHEMA_VERSION};

pub fn envelope(project: &str, aggregate_id: &str, time_ms: u64, event: Event) -> Envelope {
    Envelope {
        id: format!("evt-{aggregate_id}-{time_ms}"),
        project: project.into(),
        aggregate: event.aggregate_kind(),
        aggregate_id: aggregate_id.into(),
        schema_version: SCHEMA_VERSION,
        time_ms,
        actor: "test".into(),
        correlation_id: None,
        causation_id: None,
        event,
    }
}
