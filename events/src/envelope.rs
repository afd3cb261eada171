use serde::{Deserialize, Serialize};

use crate::access::{CredentialIssued, CredentialRevoked, TokenCreated, TokenRevoked};
use crate::budget::{BudgetSet, BudgetWarned};
use crate::spin_up::{
    SpinUpCompleted, SpinUpFailed, SpinUpStarted, SpinUpStopped, SpinUpTriggered,
};
use crate::target::{
    TargetDisabled, TargetEnabled, TargetHealthChecked, TargetRegistered, TargetRemoved,
    TargetUpdated,
};
use crate::work::{
    AgentPaused, AgentRegistered, AgentResumed, AgentShutdownRequested, AgentWentOffline,
    WorkAssigned, WorkCancelled, WorkCompleted, WorkFailed, WorkLeaseExpired, WorkParked,
    WorkProgressed, WorkRetried, WorkStarted, WorkSubmitted,
};
use crate::writer::WriterElected;

/// The kind of aggregate an event belongs to; the third token of its subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AggregateKind {
    Target,
    Work,
    Agent,
    /// Stored as `spinup` (one subject token); the events are named `spin-up.*`.
    #[serde(rename = "spinup")]
    SpinUp,
    /// Which Weft instance writes for the project (one aggregate per project, id `lease`).
    Writer,
    /// The project's spending budget (one aggregate per project, id `budget`).
    Budget,
    /// An API token (in the project [`crate::access::ACCESS_PROJECT`]).
    Token,
    /// NATS credentials of an agent of the project.
    Credential,
}

impl AggregateKind {
    pub const ALL: [AggregateKind; 8] = [
        AggregateKind::Target,
        AggregateKind::Work,
        AggregateKind::Agent,
        AggregateKind::SpinUp,
        AggregateKind::Writer,
        AggregateKind::Budget,
        AggregateKind::Token,
        AggregateKind::Credential,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AggregateKind::Target => "target",
            AggregateKind::Work => "work",
            AggregateKind::Agent => "agent",
            AggregateKind::SpinUp => "spinup",
            AggregateKind::Writer => "writer",
            AggregateKind::Budget => "budget",
            AggregateKind::Token => "token",
            AggregateKind::Credential => "credential",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == value)
    }
}

/// Declares [`Event`] from one table, so each event's name is written once: it is the
/// serialized tag, [`Event::type_name`], and the entry in [`Event::TYPE_NAMES`].
macro_rules! events {
    ($($(#[$doc:meta])* $name:literal => $variant:ident($payload:ty), $kind:ident;)*) => {
        /// Every event Weft records. The serialized tag (`type`) is the event's name everywhere:
        /// in the log, in `/api/events` and in `weft events`.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type", content = "data")]
        pub enum Event {
            $($(#[$doc])* #[serde(rename = $name)] $variant($payload),)*
        }

        impl Event {
            /// Every event type's name, in declaration order.
            pub const TYPE_NAMES: &'static [&'static str] = &[$($name),*];

            pub fn type_name(&self) -> &'static str {
                match self {
                    $(Event::$variant(_) => $name,)*
                }
            }

            /// The kind of aggregate whose subject the event is stored under.
            pub fn aggregate_kind(&self) -> AggregateKind {
                match self {
                    $(Event::$variant(_) => AggregateKind::$kind,)*
                }
            }
        }
    };
}

events! {
    "target.registered" => TargetRegistered(TargetRegistered), Target;
    "target.updated" => TargetUpdated(TargetUpdated), Target;
    "target.enabled" => TargetEnabled(TargetEnabled), Target;
    "target.disabled" => TargetDisabled(TargetDisabled), Target;
    "target.removed" => TargetRemoved(TargetRemoved), Target;
    "target.health-checked" => TargetHealthChecked(TargetHealthChecked), Target;
    "spin-up.triggered" => SpinUpTriggered(SpinUpTriggered), SpinUp;
    "spin-up.started" => SpinUpStarted(SpinUpStarted), SpinUp;
    "spin-up.completed" => SpinUpCompleted(SpinUpCompleted), SpinUp;
    "spin-up.failed" => SpinUpFailed(SpinUpFailed), SpinUp;
    "spin-up.stopped" => SpinUpStopped(SpinUpStopped), SpinUp;
    "work.submitted" => WorkSubmitted(WorkSubmitted), Work;
    "work.assigned" => WorkAssigned(WorkAssigned), Work;
    "work.started" => WorkStarted(WorkStarted), Work;
    "work.progressed" => WorkProgressed(WorkProgressed), Work;
    "work.completed" => WorkCompleted(WorkCompleted), Work;
    "work.failed" => WorkFailed(WorkFailed), Work;
    "work.lease-expired" => WorkLeaseExpired(WorkLeaseExpired), Work;
    "work.cancelled" => WorkCancelled(WorkCancelled), Work;
    "work.retried" => WorkRetried(WorkRetried), Work;
    "work.parked" => WorkParked(WorkParked), Work;
    "agent.registered" => AgentRegistered(AgentRegistered), Agent;
    "agent.offline" => AgentWentOffline(AgentWentOffline), Agent;
    "agent.shutdown-requested" => AgentShutdownRequested(AgentShutdownRequested), Agent;
    "agent.paused" => AgentPaused(AgentPaused), Agent;
    "agent.resumed" => AgentResumed(AgentResumed), Agent;
    "writer.elected" => WriterElected(WriterElected), Writer;
    "budget.set" => BudgetSet(BudgetSet), Budget;
    "budget.warned" => BudgetWarned(BudgetWarned), Budget;
    "token.created" => TokenCreated(TokenCreated), Token;
    "token.revoked" => TokenRevoked(TokenRevoked), Token;
    "credential.issued" => CredentialIssued(CredentialIssued), Credential;
    "credential.revoked" => CredentialRevoked(CredentialRevoked), Credential;
}

/// One recorded fact with everything needed to audit it: who caused it, when, and what
/// it was caused by.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// ULID: unique, and sortable by creation time.
    pub id: String,
    pub project: String,
    pub aggregate: AggregateKind,
    pub aggregate_id: String,
    pub schema_version: u32,
    /// Milliseconds since the Unix epoch, taken when the command was decided.
    pub time_ms: u64,
    /// The API token's name, an agent id, or [`crate::SYSTEM_ACTOR`].
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    pub event: Event,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed event envelope: {0}")]
    Envelope(#[from] rmp_serde::decode::Error),
    #[error("event {event_type} (schema v{version}) does not match its type: {source}")]
    Payload {
        event_type: String,
        version: u32,
        source: rmp_serde::decode::Error,
    },
}

impl Envelope {
    pub fn subject(&self) -> String {
        crate::subject::aggregate(&self.project, self.aggregate, &self.aggregate_id)
    }

    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("events serialize to msgpack infallibly")
    }

    /// Decodes an event written with the current schema. Older events go through
    /// [`RawEnvelope`] and the upcasters.
    pub fn decode_current(bytes: &[u8]) -> Result<Self, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }
}

/// An event's payload before it is given its type: the form upcasters rewrite.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RawEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default = "nil")]
    pub data: rmpv::Value,
}

fn nil() -> rmpv::Value {
    rmpv::Value::Nil
}

/// An envelope whose payload is still raw, as read from any schema version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawEnvelope {
    pub id: String,
    pub project: String,
    pub aggregate: AggregateKind,
    pub aggregate_id: String,
    pub schema_version: u32,
    pub time_ms: u64,
    pub actor: String,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub causation_id: Option<String>,
    pub event: RawEvent,
}

impl RawEnvelope {
    pub fn decode(bytes: &[u8]) -> Result<Self, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }

    /// Gives the payload its type. Call after upcasting to the current schema.
    pub fn into_typed(self) -> Result<Envelope, DecodeError> {
        let RawEvent { event_type, data } = self.event;
        let tagged = rmpv::Value::Map(vec![
            ("type".into(), rmpv::Value::from(event_type.as_str())),
            ("data".into(), data),
        ]);
        // rmpv's own deserializer cannot read adjacently tagged enums, rmp_serde's can;
        // this path only runs for events that needed upcasting.
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &tagged).expect("writing to a Vec cannot fail");
        let event: Event =
            rmp_serde::from_slice(&bytes).map_err(|source| DecodeError::Payload {
                event_type,
                version: self.schema_version,
                source,
            })?;
        Ok(Envelope {
            id: self.id,
            project: self.project,
            aggregate: self.aggregate,
            aggregate_id: self.aggregate_id,
            schema_version: self.schema_version,
            time_ms: self.time_ms,
            actor: self.actor,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            event,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::{LocalConfig, MechanismConfig};

    fn sample() -> Envelope {
        Envelope {
            id: "01JABCDEF".into(),
            project: "default".into(),
            aggregate: AggregateKind::Target,
            aggregate_id: "t1".into(),
            schema_version: crate::SCHEMA_VERSION,
            time_ms: 1_700_000_000_000,
            actor: "token:abcd".into(),
            correlation_id: None,
            causation_id: Some("cause".into()),
            event: Event::TargetRegistered(TargetRegistered {
                target_id: "t1".into(),
                name: "box".into(),
                description: None,
                agent_type: "claude-code".into(),
                capabilities: vec!["rust".into()],
                boundaries: vec!["personal".into()],
                config: MechanismConfig::Local(LocalConfig {
                    command: "weft agent".into(),
                    ..Default::default()
                }),
                health_check: None,
                tags: vec![],
                max_agents: None,
                registered_by: "api".into(),
            }),
        }
    }

    #[test]
    fn current_events_round_trip_both_ways() {
        let envelope = sample();
        let bytes = envelope.encode();
        assert_eq!(Envelope::decode_current(&bytes).unwrap(), envelope);
        let raw = RawEnvelope::decode(&bytes).unwrap();
        assert_eq!(raw.event.event_type, "target.registered");
        assert_eq!(raw.into_typed().unwrap(), envelope);
    }

    #[test]
    fn type_names_match_the_serialized_tag() {
        let envelope = sample();
        let raw = RawEnvelope::decode(&envelope.encode()).unwrap();
        assert_eq!(raw.event.event_type, envelope.event.type_name());
    }

    #[test]
    fn every_type_name_reads_as_its_variant_and_names_are_unique() {
        let unknown = |name: &str| {
            serde_json::from_value::<Event>(serde_json::json!({"type": name, "data": {}}))
                .err()
                .is_some_and(|e| e.to_string().contains("unknown variant"))
        };
        assert!(unknown("target.exploded"));
        let mut seen = std::collections::BTreeSet::new();
        for name in Event::TYPE_NAMES {
            assert!(!unknown(name), "{name} is not the tag of any variant");
            assert!(seen.insert(*name), "{name} is declared twice");
        }
        assert_eq!(seen.len(), 33);
    }

    #[test]
    fn an_unknown_event_type_is_an_error_not_a_panic() {
        let mut raw = RawEnvelope::decode(&sample().encode()).unwrap();
        raw.event.event_type = "target.exploded".into();
        assert!(matches!(raw.into_typed(), Err(DecodeError::Payload { .. })));
    }
}
