//! Executing commands: each goes to its project's writer ([`crate::writer`]), which decides
//! it against the project's state, records its events all or none, and answers once the
//! projection shows them (so a client reads its own write).
//!
//! With several instances on one log, the writer may be another instance's
//! ([`crate::leases`]): the command is sent to it over NATS request/reply
//! (`weft.cmd.<instance>.<project>`), and answered once this instance's projection shows
//! the events too. While the project has no writer (a takeover), the command waits for
//! one, within [`WRITER_PATIENCE`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use decide::{Command, Rejection, Settings};
use events::Envelope;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::leases::{Leases, Role};
use crate::projector::Projection;
use crate::store::{CommitMode, EventStore};
use crate::writer::{self, Request};

/// How long a command waits for its project to have a writer (a takeover: the lease of
/// a writer that is gone lapsing, a standby catching up).
pub const WRITER_PATIENCE: Duration = Duration::from_secs(20);
/// How long a writer elsewhere has to answer a command sent to it.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// Who is asking, and what caused the request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommandContext {
    pub actor: String,
    /// Ties together the events of one request (an API call's `X-Request-Id`).
    pub correlation_id: Option<String>,
    /// What caused the command: the work item behind a spin-up, the spin-up behind an
    /// agent's registration.
    pub causation_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum CommandError {
    /// The rules refused the command (validation, not found, a name taken...).
    Rejected(Rejection),
    /// Other writers kept being elected; the client may retry.
    Contended,
    Unavailable(String),
    /// This instance does not write for the project (any more); [`Commands::execute`]
    /// sends the command to the one that does, so callers do not see this.
    NotWriter,
}

/// What a standby sends the project's writer.
#[derive(Serialize, Deserialize)]
struct Forwarded {
    ctx: CommandContext,
    command: Command,
}

type Answer = Result<Vec<Recorded>, CommandError>;

/// A project and what one of its commands recorded.
pub type RecordedIn = (String, Vec<Recorded>);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Recorded {
    pub sequence: u64,
    pub envelope: Envelope,
}

pub struct Commands {
    shared: Arc<writer::Shared>,
    /// The queue of each project's writer, started on the project's first command.
    writers: Mutex<HashMap<String, mpsc::UnboundedSender<Request>>>,
    /// Every command this instance's writers recorded, for the coordinator to carry out
    /// (pushes to agents, starting agents): side effects happen on the writer only.
    recorded: mpsc::UnboundedSender<RecordedIn>,
    to_carry_out: Mutex<Option<mpsc::UnboundedReceiver<RecordedIn>>>,
}

impl Commands {
    /// `leases`: who writes for which project among instances; `None` when this instance
    /// is the only one writing to the log.
    pub fn new(
        store: EventStore,
        projection: Arc<Projection>,
        settings: Arc<Settings>,
        instance: String,
        mode: CommitMode,
        leases: Option<Arc<Leases>>,
    ) -> Self {
        let (recorded, to_carry_out) = mpsc::unbounded_channel();
        Self {
            shared: Arc::new(writer::Shared {
                store,
                projection,
                settings,
                instance,
                mode,
                leases,
            }),
            writers: Mutex::default(),
            recorded,
            to_carry_out: Mutex::new(Some(to_carry_out)),
        }
    }

    /// The commands this instance recorded, as they are recorded (one taker).
    pub fn take_recorded(&self) -> Option<mpsc::UnboundedReceiver<RecordedIn>> {
        self.to_carry_out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    pub fn leases(&self) -> Option<&Arc<Leases>> {
        self.shared.leases.as_ref()
    }

    /// Whether this instance writes for `project` (and so runs its timers).
    pub fn is_writer(&self, project: &str) -> bool {
        self.role(project) == Role::Writer
    }

    /// What this instance is for `project`: writer, standby or vacant.
    pub fn role(&self, project: &str) -> Role {
        self.shared
            .leases
            .as_ref()
            .map_or(Role::Writer, |l| l.role(project))
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

    /// Decides `command` against the project's state and records its events, all or none,
    /// on whichever instance writes for the project. Nothing to record (the state already
    /// is what was asked) is an empty list.
    pub async fn execute(
        &self,
        ctx: &CommandContext,
        project: &str,
        command: impl Into<Command>,
    ) -> Answer {
        use backon::Retryable;
        let command = command.into();
        let attempt = || async {
            match self.role(project) {
                Role::Writer => self.execute_here(ctx, project, command.clone()).await,
                Role::Standby { holder, revision } => {
                    self.forward(&holder, revision, ctx, project, &command)
                        .await
                }
                Role::Vacant => {
                    if let Some(leases) = &self.shared.leases {
                        leases.acquire(project).await;
                    }
                    Err(CommandError::NotWriter)
                }
            }
        };
        let patience = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(20))
            .with_max_delay(Duration::from_millis(500))
            .with_total_delay(Some(WRITER_PATIENCE))
            .without_max_times();
        match attempt
            .retry(patience)
            .sleep(tokio::time::sleep)
            .when(|e| matches!(e, CommandError::NotWriter))
            .await
        {
            Err(CommandError::NotWriter) => Err(CommandError::Unavailable(
                "the project has no writer: its instances are taking over; retry".into(),
            )),
            other => other,
        }
    }

    /// Runs the command through this instance's writer for the project.
    async fn execute_here(&self, ctx: &CommandContext, project: &str, command: Command) -> Answer {
        let (reply, answer) = oneshot::channel();
        let request = Request::new(ctx.clone(), command, reply);
        self.queue_of(project)
            .send(request)
            .map_err(|_| CommandError::Unavailable("the project's writer has stopped".into()))?;
        let answer = answer.await.unwrap_or_else(|_| {
            Err(CommandError::Unavailable(
                "the project's writer has stopped".into(),
            ))
        });
        if let Ok(recorded) = &answer {
            if !recorded.is_empty() {
                let _ = self.recorded.send((project.to_string(), recorded.clone()));
            }
        }
        answer
    }

    /// Sends the command to the instance that writes for the project, and waits until this
    /// instance's projection shows what it recorded.
    async fn forward(
        &self,
        holder: &str,
        revision: u64,
        ctx: &CommandContext,
        project: &str,
        command: &Command,
    ) -> Answer {
        let forwarded = Forwarded {
            ctx: ctx.clone(),
            command: command.clone(),
        };
        let payload = rmp_serde::to_vec_named(&forwarded)
            .map_err(|e| CommandError::Unavailable(format!("cannot encode the command: {e}")))?;
        let request = async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(FORWARD_TIMEOUT));
        let sent = self
            .shared
            .store
            .client()
            .send_request(command_subject(holder, project), request)
            .await;
        let message = match sent {
            Ok(message) => message,
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                // The writer's process is gone (its subscription with it): take over.
                if let Some(leases) = &self.shared.leases {
                    leases.take_from(project, holder, revision).await;
                }
                return Err(CommandError::NotWriter);
            }
            Err(e) if e.kind() == async_nats::RequestErrorKind::TimedOut => {
                return Err(CommandError::Unavailable(format!(
                    "the project's writer ({holder}) did not answer in time; the command may \
                     have been recorded"
                )))
            }
            Err(e) => return Err(CommandError::Unavailable(e.to_string())),
        };
        let answer: Answer = rmp_serde::from_slice(&message.payload).map_err(|e| {
            CommandError::Unavailable(format!("unreadable answer from the writer: {e}"))
        })?;
        if let Some(last) = answer.as_ref().ok().and_then(|r| r.last()) {
            // Read your write here too, not only on the writer.
            self.shared
                .projection
                .wait_for(last.sequence, Duration::from_secs(10))
                .await;
        }
        answer
    }

    /// Answers the commands other instances send this one for the projects it writes for,
    /// until `shutdown`.
    pub async fn serve_forwarded(self: Arc<Self>, shutdown: CancellationToken) {
        let subject = command_subject(&self.shared.instance, "*");
        let mut requests = match self.shared.store.client().subscribe(subject).await {
            Ok(requests) => requests,
            Err(e) => {
                tracing::error!("cannot take commands from other instances: {e}");
                return;
            }
        };
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                message = requests.next() => message,
            };
            let Some(message) = message else { break };
            let this = self.clone();
            tokio::spawn(async move { this.answer_forwarded(message).await });
        }
        let _ = requests.unsubscribe().await;
    }

    async fn answer_forwarded(&self, message: async_nats::Message) {
        let Some(reply) = message.reply.clone() else {
            return;
        };
        let project = message
            .subject
            .as_str()
            .rsplit('.')
            .next()
            .unwrap_or_default();
        let answer = match rmp_serde::from_slice::<Forwarded>(&message.payload) {
            Err(e) => Err(CommandError::Unavailable(format!(
                "unreadable command: {e}"
            ))),
            Ok(_) if !self.is_writer(project) => Err(CommandError::NotWriter),
            Ok(f) => self.execute_here(&f.ctx, project, f.command).await,
        };
        let body = rmp_serde::to_vec_named(&answer).unwrap_or_default();
        if let Err(e) = self.shared.store.client().publish(reply, body.into()).await {
            tracing::debug!(project, "answer to a forwarded command not sent: {e}");
        }
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

/// Where the instance `instance` takes commands for `project` from other instances.
fn command_subject(instance: &str, project: &str) -> String {
    format!("weft.cmd.{instance}.{project}")
}
