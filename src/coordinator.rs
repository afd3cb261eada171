//! The coordinator's running parts: the scheduler (assigns pending work, marks silent
//! agents offline, takes back assignments nobody accepted) and the agent protocol's
//! request handlers. Every decision is one of the pure functions in [`crate::work`];
//! this module only feeds them state and the clock, and carries out pushes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::Client;
use futures::StreamExt;
use projections::{AgentStatus, Work, WorkStatus};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::commands::{CommandContext, CommandError, Commands, Rejection};
use crate::mechanism::{Launch, Mechanisms};
use crate::protocol::{self, codes, Assignment, Reply};
use crate::spinup::{self, SpinUpSettings};
use crate::time::now_ms;
use crate::work::{self, RoutingPolicy, WorkSettings};

#[derive(Clone, Debug)]
pub struct Timing {
    /// How often agents are told to heartbeat.
    pub heartbeat_interval: Duration,
    /// Silence after which an agent is marked offline and its leases freed.
    pub agent_timeout: Duration,
    /// Time an agent has to accept an assignment before it is taken back.
    pub accept_timeout: Duration,
    /// Time a started agent has to register before its spin-up counts as failed.
    pub spin_up_timeout: Duration,
    /// Idle time after which an agent is asked to shut down (unless its own says otherwise).
    pub idle_timeout: Duration,
    /// Time an agent asked to shut down has before what it runs on is stopped.
    pub scale_down_grace: Duration,
}

pub struct CoordinatorSettings {
    pub policy: RoutingPolicy,
    pub work: WorkSettings,
    pub spin_up: SpinUpSettings,
    pub timing: Timing,
    /// The NATS URL agents that Weft starts are told to join.
    pub agent_nats_url: String,
}

pub struct Coordinator {
    pub commands: Arc<Commands>,
    client: Client,
    pub policy: RoutingPolicy,
    pub settings: WorkSettings,
    spin_up: SpinUpSettings,
    timing: Timing,
    agent_nats_url: String,
    pub mechanisms: Mechanisms,
    /// Last heartbeat per (project, agent). High-churn, so kept out of the log: only its
    /// consequence (`agent.offline`) is recorded.
    last_seen: Mutex<HashMap<(String, String), (Instant, u64)>>,
    /// Targets whose periodic health check is running now.
    checking: Mutex<std::collections::HashSet<String>>,
    started: Instant,
}

fn system() -> CommandContext {
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
    }
}

impl Coordinator {
    pub fn new(
        commands: Arc<Commands>,
        client: Client,
        settings: CoordinatorSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            commands,
            client,
            policy: settings.policy,
            settings: settings.work,
            spin_up: settings.spin_up,
            timing: settings.timing,
            agent_nats_url: settings.agent_nats_url,
            mechanisms: Mechanisms::default(),
            checking: Mutex::default(),
            last_seen: Mutex::new(HashMap::new()),
            started: Instant::now(),
        })
    }

    fn seen(&self, project: &str, agent: &str) {
        let mut seen = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(
            (project.to_string(), agent.to_string()),
            (Instant::now(), now_ms()),
        );
    }

    /// When the agent last heartbeated (milliseconds since the epoch), if this process saw it.
    pub fn last_heartbeat_ms(&self, project: &str, agent: &str) -> Option<u64> {
        let seen = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&(project.to_string(), agent.to_string()))
            .map(|(_, ms)| *ms)
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

    pub async fn push_shutdown(&self, project: &str, agent: &str, graceful: bool, reason: &str) {
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

    /// Runs forever: assignments whenever the state changes, checks on a short tick.
    pub async fn run_scheduler(self: Arc<Self>) {
        let mut changes = self.commands.projection().subscribe();
        loop {
            changes.borrow_and_update();
            self.assign_all().await;
            self.spin_up_for_unserved_work().await;
            self.mark_silent_agents_offline().await;
            self.take_back_unaccepted().await;
            self.time_out_spin_ups().await;
            self.scale_down_idle_agents().await;
            self.stop_what_scaled_down_agents_ran_on().await;
            self.clone().check_due_targets();
            let _ = tokio::time::timeout(Duration::from_millis(250), changes.changed()).await;
        }
    }

    /// Assigns until nothing more can be: one item per project per round, so a busy
    /// project cannot starve the others.
    async fn assign_all(&self) {
        let mut projects: Vec<String> = self.commands.projection().read(|s| {
            s.projects
                .iter()
                .filter(|(_, p)| p.work.queue().next().is_some())
                .map(|(k, _)| k.clone())
                .collect()
        });
        while !projects.is_empty() {
            let mut still = Vec::new();
            for project in projects {
                if self.assign_one(&project).await {
                    still.push(project);
                }
            }
            projects = still;
        }
    }

    async fn assign_one(&self, project: &str) -> bool {
        let lease = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let outcome = self
            .commands
            .execute(&system(), project, |s| {
                Ok::<_, Rejection>(work::decide_next_assignment(
                    s,
                    project,
                    &self.policy,
                    now,
                    &lease,
                ))
            })
            .await;
        match outcome {
            Ok(Some(recorded)) => {
                let id = recorded.envelope.aggregate_id;
                let pushed = self.commands.projection().read(|s| {
                    let w = s.project(project)?.work.get(&id)?;
                    (w.lease_id.as_deref() == Some(lease.as_str()))
                        .then(|| (w.assigned_to.clone(), assignment(w)))
                });
                if let Some((Some(agent), message)) = pushed {
                    tracing::debug!(project, work = id, agent, "assigned");
                    self.push(protocol::agent_subject(project, &agent, "assign"), &message)
                        .await;
                }
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(project, "assignment not recorded: {e:?}");
                false
            }
        }
    }

    async fn mark_silent_agents_offline(&self) {
        let silent: Vec<(String, String)> = {
            let seen = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
            self.commands.projection().read(|s| {
                s.projects
                    .iter()
                    .flat_map(|(p, proj)| {
                        proj.agents
                            .iter()
                            .filter(|a| a.status == AgentStatus::Online)
                            .map(move |a| (p.clone(), a.id.clone()))
                    })
                    // Agents not heard from since we started get a full window from then.
                    .filter(|key| {
                        seen.get(key).map_or(self.started, |(at, _)| *at).elapsed()
                            > self.timing.agent_timeout
                    })
                    .collect()
            })
        };
        for (project, agent) in silent {
            let now = now_ms();
            let outcome = self
                .commands
                .execute(&system(), &project, |s| {
                    work::decide_agent_offline(
                        s,
                        &project,
                        &agent,
                        "heartbeat-missed",
                        &self.settings,
                        now,
                    )
                })
                .await;
            match outcome {
                Ok(Some(_)) => tracing::warn!(
                    project,
                    agent,
                    "agent missed its heartbeats: marked offline, its work freed"
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!(project, agent, "could not mark agent offline: {e:?}"),
            }
            self.last_seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(project, agent));
        }
    }

    async fn take_back_unaccepted(&self) {
        let limit = self.timing.accept_timeout.as_millis() as u64;
        let now = now_ms();
        let overdue: Vec<(String, String, String)> = self.commands.projection().read(|s| {
            s.projects
                .iter()
                .flat_map(|(p, proj)| {
                    proj.work
                        .iter()
                        .filter(|w| w.status == WorkStatus::Assigned)
                        .filter(|w| w.assigned_at_ms.is_some_and(|t| t + limit < now))
                        .filter_map(move |w| Some((p.clone(), w.id.clone(), w.lease_id.clone()?)))
                })
                .collect()
        });
        for (project, id, lease) in overdue {
            let outcome = self
                .commands
                .execute(&system(), &project, |s| {
                    work::decide_expire_unaccepted(s, &project, &id, &lease, &self.settings, now)
                })
                .await;
            if let Ok(Some(_)) = outcome {
                tracing::warn!(
                    project,
                    work = id,
                    "assignment not accepted in time: taken back"
                );
            }
        }
    }

    /// Starts agents for work nobody can take: one spin-up per unserved item, on the best
    /// target, counting spin-ups in flight as capacity so nothing is started twice.
    async fn spin_up_for_unserved_work(&self) {
        let projects: Vec<String> = self
            .commands
            .projection()
            .read(|s| s.projects.keys().cloned().collect());
        for project in projects {
            // Bounded: each round triggers at most one spin-up, which covers at least one item.
            for _ in 0..100 {
                let now = now_ms();
                let choice = self.commands.projection().read(|s| {
                    let p = s.project(&project)?;
                    spinup::unserved(&self.policy, p, now)
                        .into_iter()
                        .find_map(|w| {
                            spinup::choose_target(&self.policy, p, w, &self.spin_up, now)
                                .map(|t| (t.id.clone(), w.clone()))
                        })
                });
                let Some((target, item)) = choice else { break };
                if !self
                    .trigger(&project, &target, "work-pending", Some(&item))
                    .await
                    .is_ok_and(|launched| launched.is_some())
                {
                    break;
                }
            }
        }
    }

    /// Records a spin-up and starts the mechanism. Returns the spin-up's id, if one was
    /// triggered.
    pub async fn trigger(
        &self,
        project: &str,
        target: &str,
        reason: &str,
        item: Option<&Work>,
    ) -> Result<Option<String>, CommandError<Rejection>> {
        let id = uuid::Uuid::new_v4().to_string();
        let recorded = self
            .commands
            .execute(
                &caused_by(system(), item.map(|w| w.id.as_str())),
                project,
                |s| spinup::decide_trigger(s, project, &id, target, reason, item),
            )
            .await?;
        if recorded.is_none() {
            return Ok(None);
        }
        tracing::info!(project, spin_up = id, target, reason, "spin-up triggered");
        self.launch(project, &id).await;
        Ok(Some(id))
    }

    async fn launch(&self, project: &str, id: &str) {
        let found = self.commands.projection().read(|s| {
            let p = s.project(project)?;
            let spin_up = p.spin_ups.get(id)?;
            Some((p.targets.get(&spin_up.target_id)?.clone(), spin_up.clone()))
        });
        let Some((target, spin_up)) = found else {
            return;
        };
        let launch = Launch {
            spin_up_id: id,
            target: &target,
            project,
            nats_url: &self.agent_nats_url,
            work_id: spin_up.work_id.as_deref(),
            capability: spin_up.capability.as_deref(),
            boundary: spin_up.boundary.as_deref(),
        };
        let outcome = match self.mechanisms.start(&launch).await {
            Ok(started) => {
                tracing::info!(
                    project,
                    spin_up = id,
                    target = target.name,
                    "{}",
                    started.detail
                );
                self.commands
                    .execute(&system(), project, |s| {
                        spinup::decide_started(s, project, id, started.detail.clone(), started.pid)
                    })
                    .await
            }
            Err(error) => {
                tracing::warn!(
                    project,
                    spin_up = id,
                    target = target.name,
                    "spin-up failed: {error}"
                );
                self.commands
                    .execute(&system(), project, |s| {
                        spinup::decide_failed(s, project, id, "start", error.clone())
                    })
                    .await
            }
        };
        if let Err(e) = outcome {
            tracing::warn!(project, spin_up = id, "spin-up outcome not recorded: {e:?}");
        }
    }

    /// A spin-up whose agent has not registered in time failed: stop what it started, so
    /// the next target can be tried.
    async fn time_out_spin_ups(&self) {
        let limit = self.timing.spin_up_timeout.as_millis() as u64;
        let now = now_ms();
        let overdue: Vec<(String, String, projections::Target, projections::SpinUp)> =
            self.commands.projection().read(|s| {
                s.projects
                    .iter()
                    .flat_map(|(name, p)| {
                        p.spin_ups
                            .iter()
                            .filter(|su| {
                                su.status.is_in_flight() && su.triggered_at_ms + limit < now
                            })
                            .filter_map(move |su| {
                                Some((
                                    name.clone(),
                                    su.id.clone(),
                                    p.targets.get(&su.target_id)?.clone(),
                                    su.clone(),
                                ))
                            })
                    })
                    .collect()
            });
        for (project, id, target, spin_up) in overdue {
            let error = format!("no agent registered within {} s", limit / 1000);
            let outcome = self
                .commands
                .execute(&system(), &project, |s| {
                    spinup::decide_failed(s, &project, &id, "registration", error.clone())
                })
                .await;
            if let Ok(Some(_)) = outcome {
                tracing::warn!(project, spin_up = id, target = target.name, "{error}");
                if let Err(e) = self.mechanisms.stop(&target, &spin_up).await {
                    tracing::warn!(spin_up = id, "could not stop what the spin-up started: {e}");
                }
            }
        }
    }

    /// Agents without work for their idle timeout are asked to shut down; an agent holding
    /// a lease never is.
    async fn scale_down_idle_agents(&self) {
        let now = now_ms();
        let default = self.timing.idle_timeout.as_millis() as u64;
        let idle: Vec<(String, String)> = self.commands.projection().read(|s| {
            s.projects
                .iter()
                .flat_map(|(name, p)| {
                    p.agents
                        .iter()
                        .filter(|a| {
                            a.status == AgentStatus::Online
                                && a.active.is_empty()
                                && a.shutdown_requested.is_none()
                        })
                        .filter(move |a| {
                            let timeout = a.idle_timeout_ms.unwrap_or(default);
                            // 0 means: never scale this agent down.
                            timeout > 0 && a.last_activity_ms + timeout < now
                        })
                        .map(move |a| (name.clone(), a.id.clone()))
                })
                .collect()
        });
        for (project, agent) in idle {
            let outcome = self
                .commands
                .execute(&system(), &project, |s| {
                    work::decide_shutdown(s, &project, &agent, "idle-timeout", true)
                })
                .await;
            if let Ok(Some(_)) = outcome {
                tracing::info!(project, agent, "idle: asked to shut down");
                self.push_shutdown(&project, &agent, true, "idle-timeout")
                    .await;
            }
        }
    }

    /// Once an agent that Weft started has gone offline, or has not left within the grace
    /// period after a shutdown request, the mechanism stops what it started.
    async fn stop_what_scaled_down_agents_ran_on(&self) {
        let grace = self.timing.scale_down_grace.as_millis() as u64;
        let now = now_ms();
        let done: Vec<(
            String,
            String,
            projections::Target,
            projections::SpinUp,
            &'static str,
        )> = self.commands.projection().read(|s| {
            s.projects
                .iter()
                .flat_map(|(name, p)| {
                    p.spin_ups
                        .iter()
                        .filter(|su| su.status == projections::SpinUpStatus::Completed)
                        .filter_map(move |su| {
                            let agent = p.agents.get(su.agent_id.as_deref()?)?;
                            let reason = if agent.status == AgentStatus::Offline {
                                "agent offline"
                            } else if agent
                                .shutdown_requested_at_ms
                                .is_some_and(|t| t + grace < now)
                            {
                                "shutdown grace period over"
                            } else {
                                return None;
                            };
                            Some((
                                name.clone(),
                                su.id.clone(),
                                p.targets.get(&su.target_id)?.clone(),
                                su.clone(),
                                reason,
                            ))
                        })
                })
                .collect()
        });
        for (project, id, target, spin_up, reason) in done {
            if let Err(e) = self.mechanisms.stop(&target, &spin_up).await {
                tracing::warn!(
                    project,
                    spin_up = id,
                    "could not stop what the spin-up started: {e}"
                );
                continue;
            }
            let outcome = self
                .commands
                .execute(&system(), &project, |s| {
                    spinup::decide_stopped(s, &project, &id, reason)
                })
                .await;
            if let Ok(Some(_)) = outcome {
                tracing::info!(
                    project,
                    spin_up = id,
                    target = target.name,
                    reason,
                    "stopped what the spin-up started"
                );
            }
        }
    }

    /// Targets with `healthCheck.enabled` are checked every `intervalMs`, each in its own
    /// task (a slow check never holds up assignments), never twice at once.
    fn check_due_targets(self: Arc<Self>) {
        let now = now_ms();
        let due: Vec<(String, String, events::target::MechanismConfig, u64)> =
            self.commands.projection().read(|s| {
                s.projects
                    .iter()
                    .flat_map(|(name, p)| {
                        p.targets
                            .iter()
                            .filter_map(|t| {
                                Some((t, t.health_check.as_ref().filter(|h| h.enabled)?))
                            })
                            .filter(move |(t, h)| {
                                t.last_health_check_ms
                                    .is_none_or(|last| last + h.interval_ms <= now)
                            })
                            .map(move |(t, h)| {
                                (name.clone(), t.id.clone(), t.config.clone(), h.timeout_ms)
                            })
                    })
                    .collect()
            });
        for (project, target, config, timeout_ms) in due {
            if !self
                .checking
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(target.clone())
            {
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let outcome = tokio::time::timeout(
                    Duration::from_millis(timeout_ms),
                    this.mechanisms.check(&config),
                )
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {timeout_ms} ms")));
                let latency = started.elapsed().as_millis() as u64;
                let error = outcome.err();
                let recorded = this
                    .commands
                    .execute(&system(), &project, |s| {
                        crate::targets::decide_health_checked(
                            s,
                            &project,
                            &target,
                            error.is_none(),
                            error.clone(),
                            latency,
                        )
                    })
                    .await;
                if let Err(e) = recorded {
                    tracing::debug!(project, target, "health check not recorded: {e:?}");
                }
                this.checking
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&target);
            });
        }
    }

    /// Answers the agent protocol's requests until the subscription ends.
    pub async fn serve_rpc(self: Arc<Self>) -> Result<(), String> {
        let mut requests = self
            .client
            .queue_subscribe("weft.rpc.*.>", protocol::RPC_QUEUE_GROUP.into())
            .await
            .map_err(|e| format!("cannot subscribe to the agent protocol: {e}"))?;
        while let Some(message) = requests.next().await {
            let this = self.clone();
            tokio::spawn(async move { this.answer(message).await });
        }
        Ok(())
    }

    async fn answer(&self, message: async_nats::Message) {
        let Some(reply_to) = message.reply.clone() else {
            return;
        };
        let mut tokens = message.subject.as_str().splitn(4, '.');
        let (project, operation) =
            match (tokens.next(), tokens.next(), tokens.next(), tokens.next()) {
                (Some("weft"), Some("rpc"), Some(p), Some(op)) => (p.to_string(), op.to_string()),
                _ => return,
            };
        let body = if !events::subject::is_valid_token(&project) {
            serde_json::to_vec(&Reply::<()>::err(codes::INVALID, "invalid project id"))
        } else {
            let payload = &message.payload;
            match operation.as_str() {
                protocol::REGISTER => self.register(&project, payload).await,
                protocol::HEARTBEAT => self.heartbeat(&project, payload).await,
                protocol::DEREGISTER => self.deregister(&project, payload).await,
                protocol::ACCEPT | protocol::PROGRESS | protocol::COMPLETE | protocol::FAIL => {
                    self.report(&project, &operation, payload).await
                }
                other => serde_json::to_vec(&Reply::<()>::err(
                    codes::INVALID,
                    format!("unknown operation {other}"),
                )),
            }
        };
        if let Ok(body) = body {
            if let Err(e) = self.client.publish(reply_to, body.into()).await {
                tracing::debug!("reply not sent: {e}");
            }
        }
    }

    fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Vec<u8>> {
        serde_json::from_slice(payload).map_err(|e| {
            serde_json::to_vec(&Reply::<()>::err(
                codes::INVALID,
                format!("malformed request: {e}"),
            ))
            .unwrap_or_default()
        })
    }

    fn failure(e: CommandError<Rejection>) -> Reply<()> {
        match e {
            CommandError::Rejected(Rejection::Invalid(errors)) => Reply::err(
                codes::INVALID,
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            CommandError::Rejected(Rejection::NotFound(m)) => Reply::err(codes::NOT_FOUND, m),
            CommandError::Rejected(Rejection::Conflict(m)) => Reply::err(codes::LEASE_LOST, m),
            CommandError::Contended => Reply::err(codes::UNAVAILABLE, "busy; retry"),
            CommandError::Unavailable(m) => Reply::err(codes::UNAVAILABLE, m),
        }
    }

    async fn register(&self, project: &str, payload: &[u8]) -> serde_json::Result<Vec<u8>> {
        let request: protocol::RegisterRequest = match Self::parse(payload) {
            Ok(r) => r,
            Err(body) => return Ok(body),
        };
        let invalid = |m: &str| serde_json::to_vec(&Reply::<()>::err(codes::INVALID, m));
        if !events::subject::is_valid_token(&request.agent_id) {
            return invalid("agentId must be 1-128 letters, digits, '-' or '_'");
        }
        if request.agent_type.is_empty()
            || request.capabilities.is_empty()
            || request.boundaries.is_empty()
        {
            return invalid("agentType, capabilities and boundaries must not be empty");
        }
        if !(1..=1000).contains(&request.max_concurrent_tasks) {
            return invalid("maxConcurrentTasks must be between 1 and 1000");
        }
        let registration = events::work::AgentRegistered {
            agent_type: request.agent_type,
            capabilities: request.capabilities,
            boundaries: request.boundaries,
            max_concurrent_tasks: request.max_concurrent_tasks,
            idle_timeout_ms: request.idle_timeout_ms,
            hostname: request.hostname,
            handle: request.handle,
            spin_up_id: request.spin_up_id,
            target_id: request.target_id,
        };
        let id = request.agent_id;
        let spin_up_id = registration.spin_up_id.clone();
        let outcome = self
            .commands
            .execute(
                &caused_by(agent_actor(&id), spin_up_id.as_deref()),
                project,
                |s| work::decide_register_agent(s, project, &id, &registration),
            )
            .await;
        match outcome {
            Ok(_) => {
                self.seen(project, &id);
                tracing::info!(project, agent = id, "agent registered");
                if let Some(spin_up) = &spin_up_id {
                    let now = now_ms();
                    let linked = self
                        .commands
                        .execute(&system(), project, |s| {
                            spinup::decide_completed(s, project, spin_up, &id, now)
                        })
                        .await;
                    if let Err(e) = linked {
                        tracing::warn!(
                            project,
                            spin_up,
                            "agent registered, but its spin-up was not updated: {e:?}"
                        );
                    }
                }
                serde_json::to_vec(&Reply::ok(protocol::RegisterReply {
                    heartbeat_interval_ms: self.timing.heartbeat_interval.as_millis() as u64,
                }))
            }
            Err(e) => serde_json::to_vec(&Self::failure(e)),
        }
    }

    async fn heartbeat(&self, project: &str, payload: &[u8]) -> serde_json::Result<Vec<u8>> {
        let request: protocol::HeartbeatRequest = match Self::parse(payload) {
            Ok(r) => r,
            Err(body) => return Ok(body),
        };
        let reply = self.commands.projection().read(|s| {
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
        let reply = match reply {
            Some(r) => {
                self.seen(project, &request.agent_id);
                r
            }
            // Unknown or marked offline: whatever it runs is no longer its own.
            None => protocol::HeartbeatReply {
                registered: false,
                cancel: request.running,
                ..Default::default()
            },
        };
        serde_json::to_vec(&Reply::ok(reply))
    }

    async fn deregister(&self, project: &str, payload: &[u8]) -> serde_json::Result<Vec<u8>> {
        let request: protocol::DeregisterRequest = match Self::parse(payload) {
            Ok(r) => r,
            Err(body) => return Ok(body),
        };
        let now = now_ms();
        let id = request.agent_id;
        let outcome = self
            .commands
            .execute(&agent_actor(&id), project, |s| {
                work::decide_agent_offline(s, project, &id, "shutdown", &self.settings, now)
            })
            .await;
        self.last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(project.to_string(), id.clone()));
        match outcome {
            Ok(_) => serde_json::to_vec(&Reply::ok(())),
            Err(e) => serde_json::to_vec(&Self::failure(e)),
        }
    }

    async fn report(
        &self,
        project: &str,
        operation: &str,
        payload: &[u8],
    ) -> serde_json::Result<Vec<u8>> {
        let r: protocol::WorkReport = match Self::parse(payload) {
            Ok(r) => r,
            Err(body) => return Ok(body),
        };
        self.seen(project, &r.agent_id);
        let now = now_ms();
        let message = r.message.clone().unwrap_or_default();
        let by = work::LeaseRef {
            work_id: &r.work_id,
            agent_id: &r.agent_id,
            lease_id: &r.lease_id,
        };
        let outcome = self
            .commands
            .execute(&agent_actor(&r.agent_id), project, |s| match operation {
                protocol::ACCEPT => work::decide_accept(s, project, by),
                protocol::PROGRESS => work::decide_progress(s, project, by, r.progress, &message),
                protocol::COMPLETE => work::decide_complete(
                    s,
                    project,
                    by,
                    &message,
                    r.output.clone(),
                    r.artifacts.clone(),
                ),
                _ => work::decide_fail(
                    s,
                    project,
                    by,
                    &message,
                    r.recoverable.unwrap_or(true),
                    &self.settings,
                    now,
                ),
            })
            .await;
        match outcome {
            Ok(_) => serde_json::to_vec(&Reply::ok(())),
            Err(e) => serde_json::to_vec(&Self::failure(e)),
        }
    }
}
