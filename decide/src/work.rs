//! The work item aggregate: submissions, assignments under leases, and every transition of
//! an item's life. A report from an agent counts only under the item's current lease.

use events::work::{
    AfterFailure, AgentPaused, RoutingReason, WorkAssigned, WorkCancelled, WorkCompleted,
    WorkFailed, WorkLeaseExpired, WorkParked, WorkProgressed, WorkRetried, WorkStarted,
    WorkSubmitted,
};
use events::Event;
use projections::{Project, Work, WorkStatus};

use crate::rejection::{is_agent_type, is_rfc3339, Rejection, Validation};
use crate::{Decision, Settings};

/// The shortest time between two recorded `work.progressed` of one attempt.
pub const PROGRESS_EVERY_MS: u64 = 5_000;
/// Most characters of a recorded progress message, and of its phase.
pub const PROGRESS_MESSAGE_CHARS: usize = 200;
pub const PROGRESS_PHASE_CHARS: usize = 40;

/// Retries after a failed attempt.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts before an item is dead-lettered, unless the item says otherwise.
    pub default_max_attempts: u32,
    /// Wait before the first retry; doubles with every attempt.
    pub base_ms: u64,
    pub max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            default_max_attempts: 3,
            base_ms: 1_000,
            max_ms: 60_000,
        }
    }
}

impl RetryPolicy {
    /// What becomes of an item whose attempt ended without success at `now_ms`.
    pub fn after_failure(&self, work: &Work, recoverable: bool, now_ms: u64) -> AfterFailure {
        if !recoverable {
            AfterFailure::Failed
        } else if work.attempts >= work.max_attempts {
            AfterFailure::DeadLettered
        } else {
            let exponent = work.attempts.saturating_sub(1).min(20);
            let delay = self.base_ms.saturating_mul(1 << exponent).min(self.max_ms);
            AfterFailure::Retry {
                at_ms: now_ms + delay,
            }
        }
    }
}

/// A submission as the client sent it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Submission {
    pub task_id: Option<String>,
    pub description: String,
    pub capability: String,
    pub boundary: String,
    pub priority: Option<i64>,
    pub preferred_agent_type: Option<String>,
    pub required_agent_type: Option<String>,
    pub deadline: Option<String>,
    pub context_data: Option<serde_json::Value>,
    pub max_attempts: Option<i64>,
    pub idempotency_key: Option<String>,
    pub workspace: Option<events::work::WorkspaceSpec>,
    pub max_cost_usd: Option<f64>,
    pub resume_session: bool,
}

/// Who reports on which item, under which lease.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    pub work_id: String,
    pub agent_id: String,
    pub lease_id: String,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum WorkCommand {
    /// `id` is new, or the id of an earlier submission with the same idempotency key (then
    /// nothing is recorded and the caller gets the existing item).
    Submit {
        id: String,
        submission: Submission,
    },
    /// Give a pending item to an agent under a new lease.
    Assign {
        work_id: String,
        agent_id: String,
        lease_id: String,
        reason: RoutingReason,
    },
    Accept {
        lease: Lease,
    },
    /// Coarse progress: recorded at most once per [`PROGRESS_EVERY_MS`] for an attempt
    /// (reports in between are accepted and not recorded), so the audit log grows with
    /// an attempt's time, not with how much its agent prints.
    Progress {
        lease: Lease,
        progress: Option<u8>,
        message: String,
        phase: Option<String>,
        now_ms: u64,
    },
    Complete {
        lease: Lease,
        summary: String,
        output: Option<String>,
        artifacts: Vec<String>,
        workspace: Option<events::work::WorkspaceOutcome>,
        usage: Option<events::work::Usage>,
    },
    Fail {
        lease: Lease,
        error: String,
        recoverable: bool,
        now_ms: u64,
        workspace: Option<events::work::WorkspaceOutcome>,
        usage: Option<events::work::Usage>,
    },
    /// A usage limit stopped the attempt: the item goes back to the queue without counting
    /// it, and the agent is paused until `until_ms` (`None`: until a person resumes it).
    Park {
        lease: Lease,
        reason: String,
        until_ms: Option<u64>,
        workspace: Option<events::work::WorkspaceOutcome>,
        usage: Option<events::work::Usage>,
    },
    /// Take an assignment back without a report (not accepted in time).
    ExpireLease {
        work_id: String,
        lease_id: String,
        reason: String,
        now_ms: u64,
    },
    Cancel {
        work_id: String,
        reason: Option<String>,
    },
    /// Put a dead-lettered or failed item back in the queue, attempts reset.
    Retry {
        work_id: String,
    },
}

/// Validates a submission into the event that records it. An item without a task id
/// takes its own id as one.
pub fn validate_submission(
    id: &str,
    request: &Submission,
    retry: &RetryPolicy,
) -> Result<WorkSubmitted, Rejection> {
    let mut errors = Validation::default();
    let text_ok = |v: &str, max: usize| !v.trim().is_empty() && v.chars().count() <= max;
    errors.check(
        text_ok(&request.description, 100_000),
        "description",
        "must be a non-empty string of at most 100000 characters",
    );
    errors.check(
        text_ok(&request.capability, 128),
        "capability",
        "must be a non-empty string of at most 128 characters",
    );
    errors.check(
        text_ok(&request.boundary, 128),
        "boundary",
        "must be a non-empty string of at most 128 characters",
    );
    if let Some(t) = &request.task_id {
        errors.check(
            text_ok(t, 256),
            "taskId",
            "must be a non-empty string of at most 256 characters",
        );
    }
    let priority = request.priority.unwrap_or(5);
    errors.check(
        (1..=10).contains(&priority),
        "priority",
        "must be an integer between 1 and 10",
    );
    for (field, value) in [
        ("preferredAgentType", &request.preferred_agent_type),
        ("requiredAgentType", &request.required_agent_type),
    ] {
        if let Some(v) = value {
            errors.check(
                is_agent_type(v),
                field,
                "must be an agent type such as claude-code or copilot-cli",
            );
        }
    }
    if let Some(d) = &request.deadline {
        errors.check(
            is_rfc3339(d),
            "deadline",
            "must be an RFC 3339 date-time such as 2026-01-31T12:00:00Z",
        );
    }
    if let Some(c) = &request.context_data {
        errors.check(c.is_object(), "contextData", "must be an object");
    }
    let max_attempts = request
        .max_attempts
        .unwrap_or(retry.default_max_attempts as i64);
    errors.check(
        (1..=100).contains(&max_attempts),
        "maxAttempts",
        "must be an integer between 1 and 100",
    );
    if let Some(k) = &request.idempotency_key {
        errors.check(
            text_ok(k, 256),
            "Idempotency-Key",
            "must be a non-empty string of at most 256 characters",
        );
    }
    if let Some(max) = request.max_cost_usd {
        errors.check(
            max.is_finite() && max > 0.0,
            "maxCostUsd",
            "must be a number of dollars above 0",
        );
    }
    if let Some(w) = &request.workspace {
        // Both reach git's command line: nothing that git could read as an option.
        errors.check(
            text_ok(&w.repo, 2048) && !w.repo.starts_with('-') && !w.repo.contains('\0'),
            "workspace.repo",
            "must be a git URL or path of at most 2048 characters, not starting with '-'",
        );
        if let Some(r) = &w.git_ref {
            errors.check(
                is_git_ref(r),
                "workspace.ref",
                "must be a branch, tag or commit: at most 256 characters, no spaces, '..', '~', '^', ':', '?', '*', '[' or '\\', not starting with '-'",
            );
        }
    }
    errors.finish(WorkSubmitted {
        task_id: request.task_id.clone().unwrap_or_else(|| id.to_string()),
        description: request.description.clone(),
        capability: request.capability.trim().to_string(),
        boundary: request.boundary.trim().to_string(),
        priority: priority as u8,
        preferred_agent_type: request.preferred_agent_type.clone(),
        required_agent_type: request.required_agent_type.clone(),
        deadline: request.deadline.clone(),
        context_data: request.context_data.as_ref().map(|c| c.to_string()),
        max_attempts: max_attempts as u32,
        idempotency_key: request.idempotency_key.clone(),
        workspace: request.workspace.clone(),
        max_cost_usd: request.max_cost_usd,
        resume_session: request.resume_session,
    })
}

/// A ref name git accepts and cannot mistake for an option (`git check-ref-format`'s rules,
/// the ones that matter on a command line).
fn is_git_ref(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 256
        && !r.starts_with('-')
        && !r.contains("..")
        && !r.ends_with('/')
        && !r.ends_with(".lock")
        && !r
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c))
}

pub(crate) fn find<'a>(project: &'a Project, id: &str) -> Result<&'a Work, Rejection> {
    project
        .work
        .get(id)
        .ok_or_else(|| Rejection::NotFound(format!("Work item with ID {id} not found")))
}

/// The item, if `lease` is its current lease held by the agent that reports.
/// The last non-empty line of `text`, at most `chars` characters.
fn short_line(text: &str, chars: usize) -> String {
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    line.trim().chars().take(chars).collect()
}

/// The item `lease` names, if the lease is still its current one: what every report of
/// an agent on the item is checked against (also its output, which is not an event).
pub fn leased<'a>(project: &'a Project, lease: &Lease) -> Result<&'a Work, Rejection> {
    let work = find(project, &lease.work_id)?;
    if work.status.is_leased()
        && work.lease_id.as_deref() == Some(lease.lease_id.as_str())
        && work.assigned_to.as_deref() == Some(lease.agent_id.as_str())
    {
        Ok(work)
    } else {
        Err(Rejection::LeaseLost(format!(
            "lease {} on work item {} is not held by agent {} (status {})",
            lease.lease_id,
            lease.work_id,
            lease.agent_id,
            work.status.as_str()
        )))
    }
}

pub fn decide(
    command: &WorkCommand,
    project: &Project,
    settings: &Settings,
) -> Result<Vec<Decision>, Rejection> {
    let next = |work: &Work, event: Event| Ok(vec![Decision::new(&work.id, event)]);
    match command {
        WorkCommand::Submit { id, submission } => {
            let submitted = validate_submission(id, submission, &settings.retry)?;
            if project.work.get(id).is_some() {
                return Ok(vec![]);
            }
            Ok(vec![Decision::new(id, Event::WorkSubmitted(submitted))])
        }
        WorkCommand::Assign {
            work_id,
            agent_id,
            lease_id,
            reason,
        } => {
            let work = find(project, work_id)?;
            if work.status != WorkStatus::Pending {
                return Err(Rejection::WrongState(format!(
                    "work item {work_id} is {}, not pending",
                    work.status.as_str()
                )));
            }
            let agent = project.agents.get(agent_id).ok_or_else(|| {
                Rejection::NotFound(format!("Agent with GUID {agent_id} not found"))
            })?;
            // Routing chose the agent; these are the rules no routing may break.
            if !settings.routing.rule_for(work).admits(agent, work) {
                return Err(Rejection::WrongState(format!(
                    "agent {agent_id} may not take work item {work_id}"
                )));
            }
            if agent.free_slots() == 0 {
                return Err(Rejection::WrongState(format!(
                    "agent {agent_id} has no free slot"
                )));
            }
            next(
                work,
                Event::WorkAssigned(WorkAssigned {
                    agent_id: agent_id.clone(),
                    lease_id: lease_id.clone(),
                    attempt: work.attempts + 1,
                    reason: reason.clone(),
                }),
            )
        }
        WorkCommand::Accept { lease } => {
            let work = leased(project, lease)?;
            if work.status == WorkStatus::InProgress {
                return Ok(vec![]);
            }
            next(
                work,
                Event::WorkStarted(WorkStarted {
                    agent_id: lease.agent_id.clone(),
                    lease_id: lease.lease_id.clone(),
                }),
            )
        }
        WorkCommand::Progress {
            lease,
            progress,
            message,
            phase,
            now_ms,
        } => {
            let work = leased(project, lease)?;
            let recent = work
                .progressed_at_ms
                .is_some_and(|at| now_ms.saturating_sub(at) < PROGRESS_EVERY_MS);
            if recent {
                return Ok(Vec::new());
            }
            next(
                work,
                Event::WorkProgressed(WorkProgressed {
                    agent_id: lease.agent_id.clone(),
                    lease_id: lease.lease_id.clone(),
                    progress: progress.map(|p| p.min(100)),
                    message: short_line(message, PROGRESS_MESSAGE_CHARS),
                    phase: phase
                        .as_deref()
                        .map(|p| short_line(p, PROGRESS_PHASE_CHARS))
                        .filter(|p| !p.is_empty()),
                }),
            )
        }
        WorkCommand::Complete {
            lease,
            summary,
            output,
            artifacts,
            workspace,
            usage,
        } => {
            let work = find(project, &lease.work_id)?;
            // A repeated report of this lease's completion is recorded once.
            if work.status == WorkStatus::Completed
                && work.lease_id.as_deref() == Some(lease.lease_id.as_str())
            {
                return Ok(vec![]);
            }
            let work = leased(project, lease)?;
            next(
                work,
                Event::WorkCompleted(WorkCompleted {
                    agent_id: lease.agent_id.clone(),
                    lease_id: lease.lease_id.clone(),
                    summary: summary.chars().take(16_384).collect(),
                    output: output.as_ref().map(|o| o.chars().take(262_144).collect()),
                    artifacts: artifacts.clone(),
                    workspace: workspace.clone(),
                    usage: usage.clone(),
                }),
            )
        }
        WorkCommand::Fail {
            lease,
            error,
            recoverable,
            now_ms,
            workspace,
            usage,
        } => {
            let work = leased(project, lease)?;
            next(
                work,
                Event::WorkFailed(WorkFailed {
                    agent_id: lease.agent_id.clone(),
                    lease_id: lease.lease_id.clone(),
                    error: error.chars().take(16_384).collect(),
                    recoverable: *recoverable,
                    then: settings.retry.after_failure(work, *recoverable, *now_ms),
                    workspace: workspace.clone(),
                    usage: usage.clone(),
                }),
            )
        }
        WorkCommand::Park {
            lease,
            reason,
            until_ms,
            workspace,
            usage,
        } => {
            let work = leased(project, lease)?;
            let reason: String = reason.chars().take(2048).collect();
            let mut decisions = vec![Decision::new(
                &work.id,
                Event::WorkParked(WorkParked {
                    agent_id: lease.agent_id.clone(),
                    lease_id: lease.lease_id.clone(),
                    reason: reason.clone(),
                    until_ms: *until_ms,
                    workspace: workspace.clone(),
                    usage: usage.clone(),
                }),
            )];
            let wanted = Some(until_ms.unwrap_or(u64::MAX));
            let agent = project.agents.get(&lease.agent_id);
            if agent.is_some_and(|a| a.paused_until_ms != wanted) {
                decisions.push(Decision::new(
                    &lease.agent_id,
                    Event::AgentPaused(AgentPaused {
                        reason,
                        until_ms: *until_ms,
                    }),
                ));
            }
            Ok(decisions)
        }
        WorkCommand::ExpireLease {
            work_id,
            lease_id,
            reason,
            now_ms,
        } => {
            let work = find(project, work_id)?;
            if !work.status.is_leased() || work.lease_id.as_deref() != Some(lease_id.as_str()) {
                return Ok(vec![]);
            }
            Ok(vec![expire(work, reason, settings, *now_ms)])
        }
        WorkCommand::Cancel { work_id, reason } => {
            let work = find(project, work_id)?;
            match work.status {
                WorkStatus::Cancelled => Ok(vec![]),
                WorkStatus::Completed => Err(Rejection::WrongState(format!(
                    "Cannot cancel work in {} state",
                    work.status.as_str()
                ))),
                _ => next(
                    work,
                    Event::WorkCancelled(WorkCancelled {
                        reason: reason.clone(),
                    }),
                ),
            }
        }
        WorkCommand::Retry { work_id } => {
            let work = find(project, work_id)?;
            match work.status {
                WorkStatus::DeadLettered | WorkStatus::Failed => {
                    next(work, Event::WorkRetried(WorkRetried {}))
                }
                other => Err(Rejection::WrongState(format!(
                    "Only dead-lettered or failed work can be retried; this item is {}",
                    other.as_str()
                ))),
            }
        }
    }
}

/// Ends the lease an item holds without a report: the agent did not accept in time, or
/// went offline. The item goes back to the queue (or is dead-lettered).
pub(crate) fn expire(work: &Work, reason: &str, settings: &Settings, now_ms: u64) -> Decision {
    Decision::new(
        &work.id,
        Event::WorkLeaseExpired(WorkLeaseExpired {
            agent_id: work.assigned_to.clone().unwrap_or_default(),
            lease_id: work.lease_id.clone().unwrap_or_default(),
            reason: reason.into(),
            then: settings.retry.after_failure(work, true, now_ms),
        }),
    )
}

#[cfg(test)]
mod tests;
