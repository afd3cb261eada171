//! Executing commands: decide against the current state, append the event with an
//! expectation about the log, and wait until the projection shows it (so a client reads
//! its own write). A conflict means someone else wrote first: reload, decide again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use events::{Envelope, Event, SCHEMA_VERSION};
use projections::State;

use crate::projector::Projection;
use crate::store::{AppendError, EventStore, Expect};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    Invalid(Vec<FieldError>),
    NotFound(String),
    Conflict(String),
}

impl Rejection {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection::Invalid(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }
}

/// Who is asking, and what caused the request.
#[derive(Clone, Debug)]
pub struct CommandContext {
    pub actor: String,
    /// Ties together the events of one request (an API call's `X-Request-Id`).
    pub correlation_id: Option<String>,
    /// What caused the command: the work item behind a spin-up, the spin-up behind an
    /// agent's registration.
    pub causation_id: Option<String>,
}

/// What a decision wants recorded.
#[derive(Clone, Debug)]
pub struct Decision {
    pub aggregate_id: String,
    pub event: Event,
    pub expect: Expect,
}

impl Decision {
    /// The next event on an aggregate whose last event is at stream sequence `version`.
    pub fn next(aggregate_id: impl Into<String>, version: u64, event: Event) -> Self {
        Decision {
            aggregate_id: aggregate_id.into(),
            event,
            expect: Expect::AggregateAt(version),
        }
    }
}

#[derive(Debug)]
pub enum CommandError<R> {
    /// The decision refused the command (validation, not found, conflict of names...).
    Rejected(R),
    /// The log kept moving under us; the client may retry.
    Contended,
    Unavailable(String),
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub sequence: u64,
    pub envelope: Envelope,
}

const MAX_ATTEMPTS: usize = 10;
const READ_YOUR_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Commands {
    store: EventStore,
    projection: Arc<Projection>,
    /// One writer at a time per project within this process, so concurrent requests queue
    /// instead of conflicting; the expectations still guard against other processes.
    project_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Commands {
    pub fn new(store: EventStore, projection: Arc<Projection>) -> Self {
        Self {
            store,
            projection,
            project_locks: Mutex::new(HashMap::new()),
        }
    }

    pub fn projection(&self) -> &Arc<Projection> {
        &self.projection
    }

    fn lock_for(&self, project: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.project_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(project.to_string()).or_default().clone()
    }

    /// Decides with `decide` and records the event. `decide` returning `Ok(None)` means
    /// there is nothing to record (the state already is what was asked).
    pub async fn execute<R>(
        &self,
        ctx: &CommandContext,
        project: &str,
        decide: impl Fn(&State) -> Result<Option<Decision>, R>,
    ) -> Result<Option<Recorded>, CommandError<R>> {
        let lock = self.lock_for(project);
        let _guard = lock.lock().await;
        for _ in 0..MAX_ATTEMPTS {
            let Some(decision) = self
                .projection
                .read(&decide)
                .map_err(CommandError::Rejected)?
            else {
                return Ok(None);
            };
            let envelope = Envelope {
                id: ulid::Ulid::generate().to_string(),
                project: project.to_string(),
                aggregate: decision.event.aggregate_kind(),
                aggregate_id: decision.aggregate_id,
                schema_version: SCHEMA_VERSION,
                time_ms: crate::time::now_ms(),
                actor: ctx.actor.clone(),
                correlation_id: ctx.correlation_id.clone(),
                causation_id: ctx.causation_id.clone(),
                event: decision.event,
            };
            match self.store.append(&envelope, &decision.expect, None).await {
                Ok(appended) => {
                    let applied = self.projection.apply_if_next(appended.sequence, &envelope)
                        || self
                            .projection
                            .wait_for(appended.sequence, READ_YOUR_WRITE_TIMEOUT)
                            .await;
                    if !applied {
                        tracing::warn!(
                            sequence = appended.sequence,
                            "recorded, but the projection has not caught up yet"
                        );
                    }
                    return Ok(Some(Recorded {
                        sequence: appended.sequence,
                        envelope,
                    }));
                }
                Err(AppendError::Conflict) => {
                    let head = self
                        .store
                        .last_sequence()
                        .await
                        .map_err(|e| CommandError::Unavailable(e.to_string()))?;
                    if !self.projection.wait_for(head, Duration::from_secs(2)).await {
                        self.projection
                            .wait_for_change(Duration::from_millis(50))
                            .await;
                    }
                }
                Err(AppendError::Unavailable(e)) => return Err(CommandError::Unavailable(e)),
            }
        }
        Err(CommandError::Contended)
    }
}
