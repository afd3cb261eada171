//! Reading events of any schema version as the current one.

use events::{DecodeError, Envelope, RawEnvelope, RawEvent, SCHEMA_VERSION};

/// Lifts an event's raw payload from schema `from` to `from + 1`.
pub struct Upcaster {
    pub from: u32,
    pub lift: fn(&mut RawEvent),
}

/// Every upcaster, by `from`. Schema v1 is the first, so there are none yet; a change that
/// is not additive adds one here and bumps `events::SCHEMA_VERSION`.
pub const UPCASTERS: &[Upcaster] = &[];

/// Decodes an event as stored, lifting it to the current schema on the way.
pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    decode_with(bytes, UPCASTERS, SCHEMA_VERSION)
}

fn decode_with(
    bytes: &[u8],
    upcasters: &[Upcaster],
    current: u32,
) -> Result<Envelope, DecodeError> {
    if let Ok(envelope) = Envelope::decode_current(bytes) {
        if envelope.schema_version == current {
            return Ok(envelope);
        }
    }
    let mut raw = RawEnvelope::decode(bytes)?;
    while raw.schema_version < current {
        if let Some(step) = upcasters.iter().find(|u| u.from == raw.schema_version) {
            (step.lift)(&mut raw.event);
        }
        raw.schema_version += 1;
    }
    raw.into_typed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::target::{LocalConfig, MechanismConfig, TargetRegistered};
    use events::{AggregateKind, Event};

    fn registered(name: &str) -> Envelope {
        Envelope {
            id: "e1".into(),
            project: "p".into(),
            aggregate: AggregateKind::Target,
            aggregate_id: "t1".into(),
            schema_version: 1,
            time_ms: 5,
            actor: "system".into(),
            correlation_id: None,
            causation_id: None,
            event: Event::TargetRegistered(TargetRegistered {
                target_id: "t1".into(),
                name: name.into(),
                description: None,
                agent_type: "claude-code".into(),
                capabilities: vec!["x".into()],
                boundaries: vec!["personal".into()],
                config: MechanismConfig::Local(LocalConfig {
                    command: "true".into(),
                    ..Default::default()
                }),
                health_check: None,
                tags: vec![],
                max_agents: None,
                registered_by: "api".into(),
            }),
        }
    }

    /// A pretend v1 -> v2 change that renamed the payload field `name` to `title` and back:
    /// the v2 reader must see what the v1 writer meant.
    fn rename_name_to_title(event: &mut RawEvent) {
        if let rmpv::Value::Map(fields) = &mut event.data {
            for (key, _) in fields.iter_mut() {
                if key.as_str() == Some("name") {
                    *key = rmpv::Value::from("title");
                }
            }
        }
    }
    fn rename_title_to_name(event: &mut RawEvent) {
        if let rmpv::Value::Map(fields) = &mut event.data {
            for (key, _) in fields.iter_mut() {
                if key.as_str() == Some("title") {
                    *key = rmpv::Value::from("name");
                }
            }
        }
    }

    #[test]
    fn current_events_decode_without_upcasting() {
        let e = registered("a");
        assert_eq!(decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn old_events_pass_through_every_upcaster_in_order() {
        let e = registered("kept");
        let chain = [
            Upcaster {
                from: 1,
                lift: rename_name_to_title,
            },
            Upcaster {
                from: 2,
                lift: rename_title_to_name,
            },
        ];
        let lifted = decode_with(&e.encode(), &chain, 3).unwrap();
        assert_eq!(lifted.schema_version, 3);
        assert_eq!(lifted.event, e.event);

        // Stopping half way leaves a payload the current types cannot read: a clear error.
        let half = decode_with(&e.encode(), &chain[..1], 2);
        assert!(matches!(half, Err(DecodeError::Payload { .. })));
    }
}
