//! Executing commands: decide against the current state, append the event with an
//! expectation about the log, and wait until the projection shows it (so a client reads
//! its own write). A conflict means someone else wrote first: reload, decide again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use decide::{Command, Rejection, Settings};
use events::{Envelope, SCHEMA_VERSION};

use crate::projector::Projection;
use crate::store::{Entry, EventStore, StoreError};

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

#[derive(Debug)]
pub enum CommandError {
    /// The rules refused the command (validation, not found, a name taken...).
    Rejected(Rejection),
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
    settings: Arc<Settings>,
    /// One writer at a time per project within this process, so concurrent requests queue
    /// instead of conflicting; the expectations still guard against other processes.
    project_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Commands {
    pub fn new(store: EventStore, projection: Arc<Projection>, settings: Arc<Settings>) -> Self {
        Self {
            store,
            projection,
            settings,
            project_locks: Mutex::new(HashMap::new()),
        }
    }

    pub fn projection(&self) -> &Arc<Projection> {
        &self.projection
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn lock_for(&self, project: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.project_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(project.to_string()).or_default().clone()
    }

    /// Decides `command` against the project's state and records its events, all or none.
    /// Nothing to record (the state already is what was asked) is an empty list.
    pub async fn execute(
        &self,
        ctx: &CommandContext,
        project: &str,
        command: impl Into<Command>,
    ) -> Result<Vec<Recorded>, CommandError> {
        let command = command.into();
        let lock = self.lock_for(project);
        let _guard = lock.lock().await;
        for _ in 0..MAX_ATTEMPTS {
            let decisions = self
                .projection
                .read(|s| decide::decide(&command, s.project_or_empty(project), &self.settings))
                .map_err(CommandError::Rejected)?;
            if decisions.is_empty() {
                return Ok(vec![]);
            }
            let time_ms = crate::time::now_ms();
            let envelopes: Vec<Envelope> = decisions
                .iter()
                .map(|d| Envelope {
                    id: ulid::Ulid::generate().to_string(),
                    project: project.to_string(),
                    aggregate: d.event.aggregate_kind(),
                    aggregate_id: d.aggregate_id.clone(),
                    schema_version: SCHEMA_VERSION,
                    time_ms,
                    actor: ctx.actor.clone(),
                    correlation_id: ctx.correlation_id.clone(),
                    causation_id: ctx.causation_id.clone(),
                    event: d.event.clone(),
                })
                .collect();
            let entries: Vec<Entry> = envelopes
                .iter()
                .zip(&decisions)
                .map(|(envelope, d)| Entry {
                    envelope,
                    expect: &d.expect,
                })
                .collect();
            match self.store.append(&entries, None).await {
                Ok(appended) => {
                    let recorded: Vec<Recorded> = appended
                        .iter()
                        .zip(envelopes)
                        .map(|(a, envelope)| Recorded {
                            sequence: a.sequence,
                            envelope,
                        })
                        .collect();
                    let last = recorded.last().map_or(0, |r| r.sequence);
                    let applied = recorded
                        .iter()
                        .all(|r| self.projection.apply_if_next(r.sequence, &r.envelope))
                        || self
                            .projection
                            .wait_for(last, READ_YOUR_WRITE_TIMEOUT)
                            .await;
                    if !applied {
                        tracing::warn!(
                            sequence = last,
                            "recorded, but the projection has not caught up yet"
                        );
                    }
                    return Ok(recorded);
                }
                Err(StoreError::Conflict) => {
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
                Err(StoreError::Unavailable(e)) => return Err(CommandError::Unavailable(e)),
            }
        }
        Err(CommandError::Contended)
    }
}
