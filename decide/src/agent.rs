//! The agent aggregate: an agent joins (registers), may be asked to shut down, and goes
//! offline (it said goodbye, or its heartbeats stopped). Going offline ends every lease it
//! held, in the same atomic commit.

use events::spin_up::SpinUpCompleted;
use events::work::{AgentRegistered, AgentResumed, AgentShutdownRequested, AgentWentOffline};
use events::Event;
use projections::{AgentStatus, Project};

use crate::rejection::{is_agent_type, Rejection, Validation};
use crate::{work, Decision, Settings};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum AgentCommand {
    /// An agent joins (or rejoins, with new settings). When Weft started it, its spin-up
    /// completes in the same commit.
    Register {
        agent_id: String,
        registration: AgentRegistered,
        now_ms: u64,
    },
    GoOffline {
        agent_id: String,
        /// `heartbeat-missed`, `shutdown`, ...
        reason: String,
        now_ms: u64,
    },
    RequestShutdown {
        agent_id: String,
        /// `manual`, `idle-timeout`, `scaling-down`, `maintenance`, `error`.
        reason: String,
        graceful: bool,
    },
    /// Work may be routed to a paused agent again (its limit reset, or a person said so).
    Resume { agent_id: String, reason: String },
}

/// Whether `value` can be an agent id (it is a token of NATS subjects and a URL segment).
pub fn is_agent_id(value: &str) -> bool {
    events::subject::is_valid_token(value)
}

pub fn validate_registration(agent_id: &str, r: &AgentRegistered) -> Result<(), Rejection> {
    let mut errors = Validation::default();
    errors.check(
        is_agent_id(agent_id),
        "agentId",
        "must be 1-128 letters, digits, '-' or '_'",
    );
    errors.check(
        is_agent_type(&r.agent_type),
        "agentType",
        "must be an agent type such as claude-code or copilot-cli",
    );
    errors.names("capabilities", &r.capabilities, 1);
    errors.names("boundaries", &r.boundaries, 1);
    errors.check(
        (1..=1000).contains(&r.max_concurrent_tasks),
        "maxConcurrentTasks",
        "must be between 1 and 1000",
    );
    errors.finish(())
}

fn not_found(id: &str) -> Rejection {
    Rejection::NotFound(format!("Agent with GUID {id} not found"))
}

pub fn decide(
    command: &AgentCommand,
    project: &Project,
    settings: &Settings,
) -> Result<Vec<Decision>, Rejection> {
    match command {
        AgentCommand::Register {
            agent_id,
            registration,
            now_ms,
        } => {
            validate_registration(agent_id, registration)?;
            let mut decisions = vec![Decision::new(
                agent_id,
                Event::AgentRegistered(registration.clone()),
            )];
            // A spin-up still waiting for its agent completes now; a fast agent may register
            // before the mechanism has even answered.
            if let Some(spin_up) = registration
                .spin_up_id
                .as_deref()
                .and_then(|id| project.spin_ups.get(id))
                .filter(|s| s.status.is_in_flight())
            {
                decisions.push(Decision::new(
                    &spin_up.id,
                    Event::SpinUpCompleted(SpinUpCompleted {
                        agent_id: agent_id.clone(),
                        duration_ms: now_ms.saturating_sub(spin_up.triggered_at_ms),
                    }),
                ));
            }
            Ok(decisions)
        }
        AgentCommand::GoOffline {
            agent_id,
            reason,
            now_ms,
        } => {
            let agent = project
                .agents
                .get(agent_id)
                .ok_or_else(|| not_found(agent_id))?;
            if agent.status == AgentStatus::Offline {
                return Ok(vec![]);
            }
            // Each lease ends as its own event on its item, committed with the agent's.
            let mut decisions: Vec<Decision> = agent
                .active
                .iter()
                .filter_map(|id| project.work.get(id))
                .filter(|w| w.status.is_leased())
                .map(|w| {
                    work::expire(
                        w,
                        &format!("agent {agent_id} went offline: {reason}"),
                        settings,
                        *now_ms,
                    )
                })
                .collect();
            decisions.push(Decision::new(
                agent_id,
                Event::AgentWentOffline(AgentWentOffline {
                    reason: reason.clone(),
                    freed: vec![],
                }),
            ));
            Ok(decisions)
        }
        AgentCommand::RequestShutdown {
            agent_id,
            reason,
            graceful,
        } => {
            let agent = project
                .agents
                .get(agent_id)
                .ok_or_else(|| not_found(agent_id))?;
            if agent.status == AgentStatus::Offline {
                return Err(Rejection::WrongState(format!(
                    "Agent {agent_id} is offline"
                )));
            }
            if agent.shutdown_requested.is_some() {
                return Ok(vec![]);
            }
            Ok(vec![Decision::new(
                agent_id,
                Event::AgentShutdownRequested(AgentShutdownRequested {
                    reason: reason.clone(),
                    graceful: *graceful,
                }),
            )])
        }
        AgentCommand::Resume { agent_id, reason } => {
            let agent = project
                .agents
                .get(agent_id)
                .ok_or_else(|| not_found(agent_id))?;
            if agent.paused_until_ms.is_none() {
                return Ok(vec![]);
            }
            Ok(vec![Decision::new(
                agent_id,
                Event::AgentResumed(AgentResumed {
                    reason: reason.clone(),
                }),
            )])
        }
    }
}
