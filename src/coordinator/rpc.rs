//! The agent protocol's request handlers (`weft.rpc.<project>.<operation>`, queue group
//! `weft`): registration, heartbeats, goodbyes and work reports. See
//! `docs/agent-protocol.md`.
//!
//! With several instances, any of them takes a request and its command goes to the
//! project's writer. Heartbeats are the exception: every instance hears every heartbeat
//! (so whichever takes over a project knows who is alive), and the project's writer
//! answers it.

use std::sync::Arc;

use decide::work::Lease;
use decide::{AgentCommand, WorkCommand};
use futures::StreamExt;
use projections::AgentStatus;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::{agent_actor, assignment, caused_by, Coordinator};
use crate::commands::CommandError;
use crate::protocol::{self, codes, Assignment, Reply};
use crate::time::now_ms;

type Answer = Vec<u8>;

fn reply<T: serde::Serialize>(r: Reply<T>) -> Answer {
    serde_json::to_vec(&r).unwrap_or_default()
}

fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Answer> {
    serde_json::from_slice(payload).map_err(|e| {
        reply(Reply::<()>::err(
            codes::INVALID,
            format!("malformed request: {e}"),
        ))
    })
}

/// The refusal of a request whose body speaks for another agent than the one its subject
/// names: where NATS has authorization, the subject is what the agent's credentials were
/// allowed to publish, so the body must agree with it.
fn other_agent(named: &str, payload: &[u8]) -> Option<Answer> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Speaker {
        agent_id: Option<String>,
    }
    let speaker: Speaker = serde_json::from_slice(payload).ok()?;
    let claimed = speaker.agent_id?;
    (claimed != named).then(|| {
        reply(Reply::<()>::err(
            codes::INVALID,
            format!("a request on agent {named}'s subject cannot speak for agent {claimed}"),
        ))
    })
}

/// A refusal in the protocol's terms: each kind of rejection has its own code.
fn failure(e: CommandError) -> Answer {
    reply(match e {
        CommandError::Rejected(r) => Reply::<()>::err(r.code(), r.to_string()),
        CommandError::Contended => Reply::err(codes::UNAVAILABLE, "busy; retry"),
        CommandError::Unavailable(m) => Reply::err(codes::UNAVAILABLE, m),
        CommandError::NotWriter => Reply::err(codes::UNAVAILABLE, "no writer right now; retry"),
    })
}

impl Coordinator {
    /// Answers the agent protocol's requests until the subscription ends or `shutdown`.
    pub async fn serve_rpc(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), String> {
        let cannot = |e| format!("cannot subscribe to the agent protocol: {e}");
        let mut requests = self
            .client
            .queue_subscribe("weft.rpc.*.>", protocol::RPC_QUEUE_GROUP.into())
            .await
            .map_err(cannot)?;
        let heartbeat = format!("weft.rpc.*.{}", protocol::HEARTBEAT);
        let mut heartbeats = self.client.subscribe(heartbeat).await.map_err(cannot)?;
        let mut heartbeats_named = self
            .client
            .subscribe(format!("weft.rpc.*.{}.*", protocol::HEARTBEAT))
            .await
            .map_err(cannot)?;
        loop {
            let (message, every_instance) = tokio::select! {
                _ = shutdown.cancelled() => break,
                message = requests.next() => (message, false),
                message = heartbeats.next() => (message, true),
                message = heartbeats_named.next() => (message, true),
            };
            let Some(message) = message else { break };
            let this = self.clone();
            tokio::spawn(async move { this.answer(message, every_instance).await });
        }
        // Stop taking requests, so another instance in the queue group answers them.
        let _ = requests.unsubscribe().await;
        let _ = heartbeats.unsubscribe().await;
        let _ = heartbeats_named.unsubscribe().await;
        Ok(())
    }

    /// `every_instance`: the message came by the subscription every instance has (a
    /// heartbeat), not by the queue group's.
    async fn answer(&self, message: async_nats::Message, every_instance: bool) {
        let Some(reply_to) = message.reply.clone() else {
            return;
        };
        let tokens: Vec<&str> = message.subject.as_str().split('.').collect();
        let (project, operation, named) = match tokens.as_slice() {
            ["weft", "rpc", p, kind, verb] => (p.to_string(), format!("{kind}.{verb}"), None),
            ["weft", "rpc", p, kind, verb, agent] => {
                (p.to_string(), format!("{kind}.{verb}"), Some(*agent))
            }
            _ => return,
        };
        let body = if !events::subject::is_valid_token(&project) {
            reply(Reply::<()>::err(codes::INVALID, "invalid project id"))
        } else if let Some(refusal) = named.and_then(|agent| other_agent(agent, &message.payload)) {
            refusal
        } else {
            let payload = &message.payload;
            let outcome = match operation.as_str() {
                protocol::REGISTER => self.register(&project, payload).await,
                // The queue group's copy of a heartbeat: the plain subscription has it too.
                protocol::HEARTBEAT if !every_instance => return,
                protocol::HEARTBEAT => match self.heartbeat(&project, payload) {
                    // Heard here; the project's writer answers.
                    _ if !self.answers_heartbeats(&project) => return,
                    answer => answer,
                },
                protocol::DEREGISTER => self.deregister(&project, payload).await,
                protocol::ACCEPT
                | protocol::PROGRESS
                | protocol::COMPLETE
                | protocol::FAIL
                | protocol::PARK => self.report(&project, &operation, payload).await,
                protocol::OUTPUT => self.output(&project, payload).await,
                other => Err(reply(Reply::<()>::err(
                    codes::INVALID,
                    format!("unknown operation {other}"),
                ))),
            };
            outcome.unwrap_or_else(|answer| answer)
        };
        if let Err(e) = self.client.publish(reply_to, body.into()).await {
            tracing::debug!("reply not sent: {e}");
        }
    }

    async fn register(&self, project: &str, payload: &[u8]) -> Result<Answer, Answer> {
        let request: protocol::RegisterRequest = parse(payload)?;
        let id = request.agent_id.clone();
        let spin_up = request.spin_up_id.clone();
        let command = AgentCommand::Register {
            agent_id: request.agent_id,
            registration: events::work::AgentRegistered {
                agent_type: request.agent_type,
                capabilities: request.capabilities,
                boundaries: request.boundaries,
                max_concurrent_tasks: request.max_concurrent_tasks,
                idle_timeout_ms: request.idle_timeout_ms,
                hostname: request.hostname,
                handle: request.handle,
                spin_up_id: request.spin_up_id,
                target_id: request.target_id,
            },
            now_ms: now_ms(),
        };
        let ctx = caused_by(agent_actor(&id), spin_up.as_deref());
        self.run(&ctx, project, command).await.map_err(failure)?;
        self.heard(project, &id);
        tracing::info!(project, agent = id, "agent registered");
        Ok(reply(Reply::ok(protocol::RegisterReply {
            heartbeat_interval_ms: self.settings().timing.heartbeat_interval_ms,
        })))
    }

    fn heartbeat(&self, project: &str, payload: &[u8]) -> Result<Answer, Answer> {
        let request: protocol::HeartbeatRequest = parse(payload)?;
        let known = self.commands.projection().read(|s| {
            let p = s.project(project)?;
            let agent = p
                .agents
                .get(&request.agent_id)
                .filter(|a| a.status == AgentStatus::Online)?;
            let assignments: Vec<Assignment> = agent
                .active
                .iter()
                .filter_map(|id| p.work.get(id))
                .map(assignment)
                .collect();
            let cancel = request
                .running
                .iter()
                .filter(|id| !agent.active.contains(*id))
                .cloned()
                .collect();
            let shutdown =
                agent
                    .shutdown_requested
                    .as_ref()
                    .map(|reason| protocol::ShutdownRequest {
                        graceful: true,
                        reason: reason.clone(),
                    });
            Some(protocol::HeartbeatReply {
                registered: true,
                assignments,
                cancel,
                shutdown,
            })
        });
        let answer = match known {
            Some(r) => {
                self.heard(project, &request.agent_id);
                r
            }
            // Unknown or marked offline: whatever it runs is no longer its own.
            None => protocol::HeartbeatReply {
                registered: false,
                cancel: request.running,
                ..Default::default()
            },
        };
        Ok(reply(Reply::ok(answer)))
    }

    /// The project's writer answers heartbeats; nobody else, unless it has no writer.
    fn answers_heartbeats(&self, project: &str) -> bool {
        !matches!(
            self.commands.leases().map(|l| l.role(project)),
            Some(crate::leases::Role::Standby { .. })
        )
    }

    async fn deregister(&self, project: &str, payload: &[u8]) -> Result<Answer, Answer> {
        let request: protocol::DeregisterRequest = parse(payload)?;
        let command = AgentCommand::GoOffline {
            agent_id: request.agent_id.clone(),
            reason: "shutdown".into(),
            now_ms: now_ms(),
        };
        self.run(&agent_actor(&request.agent_id), project, command)
            .await
            .map_err(failure)?;
        self.forget(project, &request.agent_id);
        Ok(reply(Reply::ok(())))
    }

    /// Stores lines an attempt printed, if its lease is still current; nothing goes to the
    /// audit log. Any instance may take them: the output stream is not the writer's.
    async fn output(&self, project: &str, payload: &[u8]) -> Result<Answer, Answer> {
        let r: protocol::OutputReport = parse(payload)?;
        self.heard(project, &r.agent_id);
        let lease = Lease {
            work_id: r.work_id,
            agent_id: r.agent_id,
            lease_id: r.lease_id,
        };
        let attempt = self.commands.projection().read(|s| {
            let p = s.project(project).ok_or_else(|| {
                decide::Rejection::NotFound(format!("project {project} has no work"))
            })?;
            decide::work::leased(p, &lease).map(|w| w.attempts)
        });
        let attempt = attempt.map_err(|r| failure(CommandError::Rejected(r)))?;
        let mut first_line = r.first_line.max(1);
        for lines in events::output::chunks_of(r.lines) {
            let chunk = events::output::Chunk {
                work_id: lease.work_id.clone(),
                agent_id: lease.agent_id.clone(),
                attempt,
                first_line,
                lines,
                at_ms: now_ms(),
            };
            first_line = chunk.next_line();
            self.output
                .append(project, &chunk)
                .await
                .map_err(|e| reply(Reply::<()>::err(codes::UNAVAILABLE, e)))?;
        }
        Ok(reply(Reply::ok(())))
    }

    async fn report(
        &self,
        project: &str,
        operation: &str,
        payload: &[u8],
    ) -> Result<Answer, Answer> {
        let r: protocol::WorkReport = parse(payload)?;
        self.heard(project, &r.agent_id);
        let lease = Lease {
            work_id: r.work_id,
            agent_id: r.agent_id.clone(),
            lease_id: r.lease_id,
        };
        let message = r.message.unwrap_or_default();
        let command = match operation {
            protocol::ACCEPT => WorkCommand::Accept { lease },
            protocol::PROGRESS => WorkCommand::Progress {
                lease,
                progress: r.progress,
                message,
                phase: r.phase,
                now_ms: now_ms(),
            },
            protocol::COMPLETE => WorkCommand::Complete {
                lease,
                summary: message,
                output: r.output,
                artifacts: r.artifacts,
                workspace: r.workspace,
                usage: r.usage,
            },
            protocol::PARK => WorkCommand::Park {
                lease,
                reason: message,
                until_ms: r.until_ms,
                workspace: r.workspace,
                usage: r.usage,
            },
            _ => WorkCommand::Fail {
                lease,
                error: message,
                recoverable: r.recoverable.unwrap_or(true),
                now_ms: now_ms(),
                workspace: r.workspace,
                usage: r.usage,
            },
        };
        self.run(&agent_actor(&r.agent_id), project, command)
            .await
            .map_err(failure)?;
        Ok(reply(Reply::ok(())))
    }
}
