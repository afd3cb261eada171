//! Executing commands: each goes to its project's writer ([`crate::writer`]), which decides
//! it against the project's state, records its events all or none, and answers once the
//! projection shows them (so a client reads its own write).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use decide::{Command, Rejection, Settings};
use events::Envelope;
use tokio::sync::{mpsc, oneshot};

use crate::projector::Projection;
use crate::store::{CommitMode, EventStore};
use crate::writer::{self, Request};

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
    /// Other writers kept being elected; the client may retry.
    Contended,
    Unavailable(String),
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub sequence: u64,
    pub envelope: Envelope,
}

pub struct Commands {
    shared: Arc<writer::Shared>,
    /// The queue of each project's writer, started on the project's first command.
    writers: Mutex<HashMap<String, mpsc::UnboundedSender<Request>>>,
}

impl Commands {
    pub fn new(
        store: EventStore,
        projection: Arc<Projection>,
        settings: Arc<Settings>,
        instance: String,
        mode: CommitMode,
    ) -> Self {
        Self {
            shared: Arc::new(writer::Shared {
                store,
                projection,
                settings,
                instance,
                mode,
            }),
            writers: Mutex::default(),
        }
    }

    pub fn projection(&self) -> &Arc<Projection> {
        &self.shared.projection
    }

    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    /// This instance's id, as its elections record it.
    pub fn instance(&self) -> &str {
        &self.shared.instance
    }

    /// Decides `command` against the project's state and records its events, all or none.
    /// Nothing to record (the state already is what was asked) is an empty list.
    pub async fn execute(
        &self,
        ctx: &CommandContext,
        project: &str,
        command: impl Into<Command>,
    ) -> Result<Vec<Recorded>, CommandError> {
        let (reply, answer) = oneshot::channel();
        let request = Request::new(ctx.clone(), command.into(), reply);
        self.queue_of(project)
            .send(request)
            .map_err(|_| CommandError::Unavailable("the project's writer has stopped".into()))?;
        answer.await.unwrap_or_else(|_| {
            Err(CommandError::Unavailable(
                "the project's writer has stopped".into(),
            ))
        })
    }

    fn queue_of(&self, project: &str) -> mpsc::UnboundedSender<Request> {
        let mut writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queue) = writers.get(project).filter(|q| !q.is_closed()) {
            return queue.clone();
        }
        let (queue, requests) = mpsc::unbounded_channel();
        tokio::spawn(writer::run(
            self.shared.clone(),
            project.to_string(),
            requests,
        ));
        writers.insert(project.to_string(), queue.clone());
        queue
    }
}
