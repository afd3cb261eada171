//! The coordinator's running parts: the scheduler ([`scheduler`]), the agent protocol's
//! request handlers ([`rpc`]) and target health checks ([`health`]). Every rule is in the
//! `decide` crate; this module feeds the rules state and the clock, records what they
//! decide, and carries out what the recorded events ask for (pushes to agents, starting
//! and stopping agents).

mod health;
mod rpc;
mod scheduler;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_nats::Client;
use decide::schedule::Liveness;
use decide::{Command, Settings};
use events::Event;
use projections::Work;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::commands::{CommandContext, CommandError, Commands, Recorded};
use crate::mechanism::{Launch, Mechanisms};
use crate::protocol::{self, Assignment};
use crate::time::now_ms;

pub use health::HealthOutcome;

pub struct Coordinator {
    pub commands: Arc<Commands>,
    client: Client,
    /// The NATS URL agents that Weft starts are told to join.
    agent_nats_url: String,
    /// Whether agents need NATS credentials Weft issues (the embedded server's
    /// authorization): spun-up agents are given theirs.
    pub issues_credentials: bool,
    pub mechanisms: Mechanisms,
    /// When agents were last heard from, per project. High-churn, so kept out of the log:
    /// only its consequence (`agent.offline`) is recorded.
    liveness: Mutex<HashMap<String, Liveness>>,
    /// When this instance began to listen: its start, or its last reconnection to NATS.
    listening_since_ms: std::sync::atomic::AtomicU64,
    /// Side effects running now (a target's health check, stopping a spin-up's agent), so
    /// the scheduler's next look does not start the same one again.
    running: Mutex<HashSet<String>>,
    /// From an item being offered to its assignment, for the assignments this instance made.
    pub assignment_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Where agents' output lines go (not the audit log).
    pub output: crate::output::OutputStore,
}

pub fn system() -> CommandContext {
    CommandContext {
        actor: events::SYSTEM_ACTOR.into(),
        correlation_id: None,
        causation_id: None,
    }
}

fn agent_actor(agent_id: &str) -> CommandContext {
    CommandContext {
        actor: format!("agent:{agent_id}"),
        correlation_id: None,
        causation_id: None,
    }
}

fn caused_by(mut ctx: CommandContext, cause: Option<&str>) -> CommandContext {
    ctx.causation_id = cause.map(String::from);
    ctx
}

pub fn assignment(work: &Work) -> Assignment {
    Assignment {
        work_id: work.id.clone(),
        lease_id: work.lease_id.clone().unwrap_or_default(),
        task_id: work.task_id.clone(),
        description: work.description.clone(),
        capability: work.capability.clone(),
        boundary: work.boundary.clone(),
        priority: work.priority,
        attempt: work.attempts,
        deadline: work.deadline.clone(),
        context_data: work
            .context_data
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok()),
        workspace: work.workspace.clone(),
        max_cost_usd: work.max_cost_usd,
        resume_session_id: work
            .assigned_to
            .as_deref()
            .and_then(|agent| work.session_to_resume(agent)),
    }
}

impl Coordinator {
    pub fn new(
        commands: Arc<Commands>,
        client: Client,
        agent_nats_url: String,
        issues_credentials: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            commands,
            output: crate::output::OutputStore::new(client.clone()),
            client,
            agent_nats_url,
            issues_credentials,
            mechanisms: Mechanisms::default(),
            liveness: Mutex::default(),
            listening_since_ms: now_ms().into(),
            running: Mutex::default(),
            assignment_seconds: crate::metrics::latency_histogram(),
        })
    }

    pub fn settings(&self) -> &Settings {
        self.commands.settings()
    }

    /// The connection to NATS came back: agents could not reach us meanwhile, so each
    /// gets a fresh window before its silence counts.
    pub fn reconnected(&self) {
        self.listening_since_ms
            .store(now_ms(), std::sync::atomic::Ordering::SeqCst);
    }

    fn heard(&self, project: &str, agent: &str) {
        let mut liveness = self.liveness.lock().unwrap_or_else(|p| p.into_inner());
        liveness
            .entry(project.to_string())
            .or_default()
            .heard(agent, now_ms());
    }

    fn forget(&self, project: &str, agent: &str) {
        let mut liveness = self.liveness.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = liveness.get_mut(project) {
            l.last_heard_ms.remove(agent);
        }
    }

    /// What the liveness rule sees for `project` now.
    fn liveness_of(&self, project: &str) -> Liveness {
        let liveness = self.liveness.lock().unwrap_or_else(|p| p.into_inner());
        let mut l = liveness.get(project).cloned().unwrap_or_default();
        l.listening_since_ms = self
            .listening_since_ms
            .load(std::sync::atomic::Ordering::SeqCst);
        l
    }

    /// When the agent last heartbeated (milliseconds since the epoch), if this process saw it.
    pub fn last_heartbeat_ms(&self, project: &str, agent: &str) -> Option<u64> {
        let liveness = self.liveness.lock().unwrap_or_else(|p| p.into_inner());
        liveness.get(project)?.last_heard_ms.get(agent).copied()
    }

    /// Claims the side effect `key` until the guard is dropped; `None` while it runs.
    fn run_once(&self, key: String) -> Option<Running<'_>> {
        let claimed = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        // Built only when claimed: its drop releases the claim.
        claimed.then(|| Running {
            coordinator: self,
            key,
        })
    }

    /// Records a command's decision (on the project's writer, wherever it runs); the
    /// writer's instance carries out what its events ask for ([`Self::carry_out_recorded`]).
    pub async fn run(
        &self,
        ctx: &CommandContext,
        project: &str,
        command: impl Into<Command>,
    ) -> Result<Vec<Recorded>, CommandError> {
        self.commands.execute(ctx, project, command).await
    }

    /// Carries out what the commands this instance's writers record ask for: pushes to
    /// agents in order, starting an agent for a spin-up and stopping what a failed one
    /// started in tasks of their own (they may take a round trip to a remote host).
    pub async fn carry_out_recorded(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(mut recorded) = self.commands.take_recorded() else {
            return;
        };
        loop {
            let (project, events) = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = recorded.recv() => match next {
                    Some(next) => next,
                    None => return,
                },
            };
            for r in events {
                if matches!(
                    r.envelope.event,
                    Event::SpinUpTriggered(_) | Event::SpinUpFailed(_)
                ) {
                    let (this, project) = (self.clone(), project.clone());
                    tokio::spawn(async move { this.carry_out(&project, &r).await });
                } else {
                    self.carry_out(&project, &r).await;
                }
            }
        }
    }

    async fn carry_out(&self, project: &str, recorded: &Recorded) {
        let id = recorded.envelope.aggregate_id.as_str();
        match &recorded.envelope.event {
            Event::WorkAssigned(a) => {
                let pushed = self.commands.projection().read(|s| {
                    let w = s.project(project)?.work.get(id)?;
                    (w.lease_id.as_deref() == Some(a.lease_id.as_str()))
                        .then(|| (assignment(w), w.offered_at_ms))
                });
                if let Some((message, offered_at_ms)) = pushed {
                    let waited_ms = recorded.envelope.time_ms.saturating_sub(offered_at_ms);
                    self.assignment_seconds.observe(waited_ms as f64 / 1000.0);
                    tracing::debug!(project, work = id, agent = a.agent_id, "assigned");
                    self.push(
                        protocol::agent_subject(project, &a.agent_id, "assign"),
                        &message,
                    )
                    .await;
                }
            }
            Event::AgentShutdownRequested(s) => {
                tracing::info!(project, agent = id, reason = s.reason, "asked to shut down");
                self.push_shutdown(project, id, s.graceful, &s.reason).await;
            }
            Event::SpinUpTriggered(t) => {
                tracing::info!(
                    project,
                    spin_up = id,
                    target = t.target_name,
                    reason = t.reason,
                    "spin-up triggered"
                );
                self.launch(project, id).await;
            }
            Event::SpinUpFailed(f) if f.stage == "registration" => {
                tracing::warn!(project, spin_up = id, "{}", f.error);
                self.stop_spin_up(project, id).await;
            }
            Event::AgentWentOffline(o) => {
                tracing::warn!(
                    project,
                    agent = id,
                    reason = o.reason,
                    "agent offline; its work goes back to the queue"
                );
                self.forget(project, id);
            }
            _ => {}
        }
    }

    async fn push<T: Serialize>(&self, subject: String, message: &T) {
        let body = serde_json::to_vec(message).unwrap_or_default();
        if let Err(e) = self.client.publish(subject.clone(), body.into()).await {
            // Not fatal: the next heartbeat reply carries the same information.
            tracing::debug!(subject, "push not sent: {e}");
        }
    }

    pub async fn push_cancel(
        &self,
        project: &str,
        agent: &str,
        work_id: &str,
        reason: Option<String>,
    ) {
        let message = protocol::CancelRequest {
            work_id: work_id.into(),
            reason,
        };
        self.push(protocol::agent_subject(project, agent, "cancel"), &message)
            .await;
    }

    async fn push_shutdown(&self, project: &str, agent: &str, graceful: bool, reason: &str) {
        let message = protocol::ShutdownRequest {
            graceful,
            reason: reason.into(),
        };
        self.push(
            protocol::agent_subject(project, agent, "shutdown"),
            &message,
        )
        .await;
    }

    /// Starts the mechanism for a recorded spin-up and records its answer.
    async fn launch(&self, project: &str, id: &str) {
        let found = self.commands.projection().read(|s| {
            let p = s.project(project)?;
            let spin_up = p.spin_ups.get(id)?;
            Some((p.targets.get(&spin_up.target_id)?.clone(), spin_up.clone()))
        });
        let Some((target, spin_up)) = found else {
            return;
        };
        // The agent it starts is the spin-up's own: its id is the spin-up's, and so are
        // the credentials that let it (and only it) in.
        let credentials = if self.issues_credentials {
            let issued = self
                .issue_credentials(
                    &caused_by(system(), Some(id)),
                    project,
                    id,
                    Some(id),
                    Some(&target.id),
                )
                .await;
            match issued {
                Ok((_, seed)) => Some(seed),
                Err(e) => {
                    tracing::warn!(project, spin_up = id, "no credentials for the agent: {e:?}");
                    None
                }
            }
        } else {
            None
        };
        let launch = Launch {
            spin_up_id: id,
            target: &target,
            project,
            nats_url: &self.agent_nats_url,
            work_id: spin_up.work_id.as_deref(),
            capability: spin_up.capability.as_deref(),
            boundary: spin_up.boundary.as_deref(),
            credentials: credentials.as_deref().map(|seed| (id, seed)),
        };
        let command = match self.mechanisms.start(&launch).await {
            Ok(started) => {
                tracing::info!(
                    project,
                    spin_up = id,
                    target = target.name,
                    "{}",
                    started.detail
                );
                decide::SpinUpCommand::RecordStarted {
                    spin_up_id: id.into(),
                    detail: started.detail,
                    pid: started.pid,
                }
            }
            Err(error) => {
                tracing::warn!(
                    project,
                    spin_up = id,
                    target = target.name,
                    kind = error.kind(),
                    "spin-up failed: {error}"
                );
                decide::SpinUpCommand::Fail {
                    spin_up_id: id.into(),
                    stage: "start".into(),
                    error: error.to_string(),
                }
            }
        };
        if let Err(e) = self.commands.execute(&system(), project, command).await {
            tracing::warn!(project, spin_up = id, "spin-up outcome not recorded: {e:?}");
        }
    }

    /// Issues NATS credentials for agent `agent_id` of `project`: the log records the
    /// public key; the answer is the credential's id and the seed, which nothing keeps.
    pub async fn issue_credentials(
        &self,
        ctx: &CommandContext,
        project: &str,
        agent_id: &str,
        spin_up_id: Option<&str>,
        target_id: Option<&str>,
    ) -> Result<(String, String), crate::commands::CommandError> {
        let pair = nkeys::KeyPair::new_user();
        let seed = pair.seed().map_err(|e| {
            crate::commands::CommandError::Unavailable(format!("cannot make an NKey: {e}"))
        })?;
        let id = format!("cred_{}", ulid::Ulid::generate().to_string().to_lowercase());
        self.commands
            .execute(
                ctx,
                project,
                decide::AccessCommand::IssueCredential {
                    id: id.clone(),
                    agent_id: agent_id.into(),
                    public_key: pair.public_key(),
                    spin_up_id: spin_up_id.map(String::from),
                    target_id: target_id.map(String::from),
                },
            )
            .await?;
        Ok((id, seed))
    }

    /// Stops what a spin-up started; true when the mechanism did.
    async fn stop_spin_up(&self, project: &str, id: &str) -> bool {
        let found = self.commands.projection().read(|s| {
            let p = s.project(project)?;
            let spin_up = p.spin_ups.get(id)?;
            Some((p.targets.get(&spin_up.target_id)?.clone(), spin_up.clone()))
        });
        let Some((target, spin_up)) = found else {
            return false;
        };
        match self.mechanisms.stop(&target, &spin_up).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(
                    project,
                    spin_up = id,
                    kind = e.kind(),
                    "could not stop what the spin-up started: {e}"
                );
                false
            }
        }
    }

    /// Starts an agent on a target now (`POST /api/targets/{id}/spin-up`); the spin-up's id.
    pub async fn spin_up_by_hand(
        &self,
        ctx: &CommandContext,
        project: &str,
        target: &str,
    ) -> Result<Option<String>, CommandError> {
        let id = uuid::Uuid::new_v4().to_string();
        let recorded = self
            .run(
                ctx,
                project,
                decide::SpinUpCommand::Trigger {
                    spin_up_id: id.clone(),
                    target: target.into(),
                    reason: "manual".into(),
                    work: None,
                },
            )
            .await?;
        Ok((!recorded.is_empty()).then_some(id))
    }
}

/// A side effect in progress; see [`Coordinator::run_once`].
struct Running<'a> {
    coordinator: &'a Coordinator,
    key: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut running = self
            .coordinator
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        running.remove(&self.key);
    }
}
