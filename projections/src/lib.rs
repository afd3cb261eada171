//! Pure folds from events to read models. The same fold runs when Weft starts (replaying
//! the log, after loading a snapshot) and while it runs (applying each new event in stream
//! order), so the two can never disagree; [`State::digest`] proves it in tests.
//!
//! Everything here is deterministic: ordered maps only, and every time comes from the
//! event's envelope, never from the clock.

pub mod access;
pub mod agents;
pub mod spin_ups;
pub mod targets;
pub mod work;

use std::collections::BTreeMap;

use events::Envelope;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use access::{Credential, Credentials, Token, Tokens};
pub use agents::{Agent, AgentStatus, Agents};
pub use spin_ups::{SpinUp, SpinUpStatus, SpinUps};
pub use targets::{HealthStatus, Target, TargetStatus, Targets};
pub use work::{AttemptUsage, OrderKey, Route, Work, WorkItems, WorkStatus};

/// The format of a snapshot's bytes. A snapshot of another format is ignored and the log
/// replayed from zero: snapshots are a cache, the log is the truth.
pub const SNAPSHOT_FORMAT: u32 = 4;

/// Everything Weft knows, as folded from the log up to `sequence`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Stream sequence of the last event applied.
    pub sequence: u64,
    pub projects: BTreeMap<String, Project>,
}

/// One tenant's read models. Cloning one is cheap (its collections are persistent), so a
/// writer can decide on a copy while readers keep the committed state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Project {
    /// When the project's latest event was recorded.
    pub last_event_ms: u64,
    /// The instance that writes for the project, and the sequence of its election: what
    /// every one of its appends expects the project's writer subject to be at.
    pub writer: Option<(String, u64)>,
    pub targets: Targets,
    pub work: WorkItems,
    pub agents: Agents,
    pub spin_ups: SpinUps,
    /// The spending budget, when one is set.
    #[serde(default)]
    pub budget: Option<Budget>,
    /// Reported cost by UTC day (days since the Unix epoch).
    #[serde(default)]
    pub spent_by_day: BTreeMap<u64, f64>,
    /// API tokens: only the access project has any.
    #[serde(default)]
    pub tokens: Tokens,
    /// NATS credentials issued to the project's agents.
    #[serde(default)]
    pub credentials: Credentials,
}

/// A project's spending budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    pub max_cost_usd_per_day: f64,
    pub warn_at_fraction: f64,
    /// The last day a warning was recorded for (`YYYY-MM-DD`).
    pub warned_day: Option<String>,
}

/// The UTC day (since the epoch) of a time.
pub fn day_of(time_ms: u64) -> u64 {
    time_ms / 86_400_000
}

impl Project {
    /// What the agents' CLIs reported the project's work cost on the UTC day of `now_ms`.
    pub fn spent_on(&self, now_ms: u64) -> f64 {
        self.spent_by_day
            .get(&day_of(now_ms))
            .copied()
            .unwrap_or(0.0)
    }

    /// Whether new work waits: the day's reported cost reached the budget.
    pub fn budget_reached(&self, now_ms: u64) -> bool {
        self.budget
            .as_ref()
            .is_some_and(|b| self.spent_on(now_ms) >= b.max_cost_usd_per_day)
    }
}

impl Project {
    /// Folds one of the project's events, stored at stream sequence `sequence`.
    pub fn apply(&mut self, sequence: u64, envelope: &Envelope) {
        self.last_event_ms = self.last_event_ms.max(envelope.time_ms);
        let cost = match &envelope.event {
            events::Event::WorkCompleted(e) => e.usage.as_ref(),
            events::Event::WorkFailed(e) => e.usage.as_ref(),
            events::Event::WorkParked(e) => e.usage.as_ref(),
            _ => None,
        }
        .and_then(|u| u.cost_usd);
        if let Some(cost) = cost {
            *self
                .spent_by_day
                .entry(day_of(envelope.time_ms))
                .or_default() += cost;
        }
        match envelope.aggregate {
            events::AggregateKind::Target => self.targets.apply(sequence, envelope),
            events::AggregateKind::SpinUp => {
                spin_ups::apply(&mut self.targets, &mut self.spin_ups, envelope)
            }
            events::AggregateKind::Work | events::AggregateKind::Agent => {
                work::apply(&mut self.work, &mut self.agents, sequence, envelope)
            }
            events::AggregateKind::Budget => match &envelope.event {
                events::Event::BudgetSet(e) => {
                    self.budget = e.max_cost_usd_per_day.map(|max| Budget {
                        max_cost_usd_per_day: max,
                        warn_at_fraction: e.warn_at_fraction,
                        warned_day: self.budget.as_ref().and_then(|b| b.warned_day.clone()),
                    });
                }
                events::Event::BudgetWarned(e) => {
                    if let Some(b) = &mut self.budget {
                        b.warned_day = Some(e.day.clone());
                    }
                }
                _ => {}
            },
            events::AggregateKind::Token => self.tokens.apply(envelope),
            events::AggregateKind::Credential => self.credentials.apply(envelope),
            events::AggregateKind::Writer => {
                if let events::Event::WriterElected(e) = &envelope.event {
                    self.writer = Some((e.instance.clone(), sequence));
                }
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SnapshotRepr<S> {
    format: u32,
    state: S,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Yes,
    /// The event's sequence is not after the state's: it was already folded in.
    AlreadyApplied,
}

impl State {
    /// Folds one event stored at stream sequence `sequence` into the state.
    /// Passes an event this binary cannot read: the state is still at that point of the
    /// log (every reader of the log does the same, so their digests agree).
    pub fn skip(&mut self, sequence: u64) {
        self.sequence = self.sequence.max(sequence);
    }

    pub fn apply(&mut self, sequence: u64, envelope: &Envelope) -> Applied {
        if sequence <= self.sequence {
            return Applied::AlreadyApplied;
        }
        self.sequence = sequence;
        // Looked up before inserting: the project's name is copied once, not per event.
        match self.projects.get_mut(&envelope.project) {
            Some(project) => project.apply(sequence, envelope),
            None => self
                .projects
                .entry(envelope.project.clone())
                .or_default()
                .apply(sequence, envelope),
        }
        Applied::Yes
    }

    pub fn project(&self, project: &str) -> Option<&Project> {
        self.projects.get(project)
    }

    /// The project's read models; an empty project when it has no events yet.
    pub fn project_or_empty(&self, project: &str) -> &Project {
        static EMPTY: std::sync::LazyLock<Project> = std::sync::LazyLock::new(Project::default);
        self.projects.get(project).unwrap_or(&EMPTY)
    }

    /// SHA-256 of the canonical encoding of the whole state, hex.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.encode_canonical()))
    }

    fn encode_canonical(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("state serializes to msgpack infallibly")
    }

    pub fn to_snapshot(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(&SnapshotRepr {
            format: SNAPSHOT_FORMAT,
            state: self,
        })
        .expect("state serializes to msgpack infallibly")
    }

    /// `None` when the bytes are not a snapshot of the current format.
    pub fn from_snapshot(bytes: &[u8]) -> Option<State> {
        let repr: SnapshotRepr<State> = rmp_serde::from_slice(bytes).ok()?;
        (repr.format == SNAPSHOT_FORMAT).then_some(repr.state)
    }
}

#[cfg(test)]
mod fold_properties;
