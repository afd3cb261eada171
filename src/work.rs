//! Work items and agents: validating submissions, routing as policy data, and deciding
//! every transition. Pure: no I/O, tested as plain Rust.

use std::collections::BTreeMap;

use events::work::{
    AfterFailure, AgentRegistered, AgentShutdownRequested, AgentWentOffline, FreedLease,
    RoutingReason, WorkAssigned, WorkCancelled, WorkCompleted, WorkFailed, WorkLeaseExpired,
    WorkProgressed, WorkRetried, WorkStarted, WorkSubmitted,
};
use events::Event;
use projections::{Agent, AgentStatus, Project, State, Work, WorkStatus};
use serde::{Deserialize, Serialize};

use crate::commands::{Decision, Rejection};

/// How work of one boundary may be routed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BoundaryRule {
    /// Only these agent types may take the work (absent: any).
    #[serde(default)]
    pub allowed_agent_types: Option<Vec<String>>,
    /// Tried first, in this order.
    #[serde(default)]
    pub preferred_agent_types: Vec<String>,
}

/// Routing as data: a rule per boundary. Whatever the rules say, an agent only ever gets
/// work whose boundary it lists, and only work it has the capability for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutingPolicy {
    pub boundaries: BTreeMap<String, BoundaryRule>,
}

impl Default for RoutingPolicy {
    /// The original's documented table.
    fn default() -> Self {
        let rule = |allowed: Option<&[&str]>, preferred: &[&str]| BoundaryRule {
            allowed_agent_types: allowed.map(|a| a.iter().map(|s| s.to_string()).collect()),
            preferred_agent_types: preferred.iter().map(|s| s.to_string()).collect(),
        };
        RoutingPolicy {
            boundaries: BTreeMap::from([
                (
                    "corporate".to_string(),
                    rule(Some(&["copilot-cli"]), &["copilot-cli"]),
                ),
                (
                    "corporate-adjacent".to_string(),
                    rule(None, &["copilot-cli"]),
                ),
                ("personal".to_string(), rule(None, &["claude-code"])),
                ("open-source".to_string(), rule(None, &[])),
            ]),
        }
    }
}

impl RoutingPolicy {
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("routing policy: {e}"))
    }

    fn rule(&self, boundary: &str) -> BoundaryRule {
        self.boundaries.get(boundary).cloned().unwrap_or_default()
    }
}

/// Retry and lease settings.
#[derive(Clone, Debug)]
pub struct WorkSettings {
    pub default_max_attempts: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
}

impl Default for WorkSettings {
    fn default() -> Self {
        WorkSettings {
            default_max_attempts: 3,
            retry_base_ms: 1_000,
            retry_max_ms: 60_000,
        }
    }
}

/// A submission as the client sent it.
#[derive(Clone, Debug, Default)]
pub struct SubmitRequest {
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
}

fn is_agent_type(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_rfc3339(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b't')
        && b[13] == b':'
        && b[16] == b':'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|i| b[*i].is_ascii_digit())
        && (value.ends_with('Z') || value.ends_with('z') || value[19..].contains(['+', '-']))
}

pub fn validate_submit(
    request: SubmitRequest,
    settings: &WorkSettings,
) -> Result<WorkSubmitted, Rejection> {
    let mut errors = Vec::new();
    let mut check = |ok: bool, field: &str, message: &str| {
        if !ok {
            errors.push(crate::commands::FieldError {
                field: field.into(),
                message: message.into(),
            });
        }
    };
    let text_ok = |v: &str, max: usize| !v.trim().is_empty() && v.chars().count() <= max;
    check(
        text_ok(&request.description, 100_000),
        "description",
        "must be a non-empty string of at most 100000 characters",
    );
    check(
        text_ok(&request.capability, 128),
        "capability",
        "must be a non-empty string of at most 128 characters",
    );
    check(
        text_ok(&request.boundary, 128),
        "boundary",
        "must be a non-empty string of at most 128 characters",
    );
    if let Some(t) = &request.task_id {
        check(
            text_ok(t, 256),
            "taskId",
            "must be a non-empty string of at most 256 characters",
        );
    }
    let priority = request.priority.unwrap_or(5);
    check(
        (1..=10).contains(&priority),
        "priority",
        "must be an integer between 1 and 10",
    );
    for (field, value) in [
        ("preferredAgentType", &request.preferred_agent_type),
        ("requiredAgentType", &request.required_agent_type),
    ] {
        if let Some(v) = value {
            check(
                is_agent_type(v),
                field,
                "must be an agent type such as claude-code or copilot-cli",
            );
        }
    }
    if let Some(d) = &request.deadline {
        check(
            is_rfc3339(d),
            "deadline",
            "must be an RFC 3339 date-time such as 2026-01-31T12:00:00Z",
        );
    }
    if let Some(c) = &request.context_data {
        check(c.is_object(), "contextData", "must be an object");
    }
    let max_attempts = request
        .max_attempts
        .unwrap_or(settings.default_max_attempts as i64);
    check(
        (1..=100).contains(&max_attempts),
        "maxAttempts",
        "must be an integer between 1 and 100",
    );
    if let Some(k) = &request.idempotency_key {
        check(
            text_ok(k, 256),
            "Idempotency-Key",
            "must be a non-empty string of at most 256 characters",
        );
    }
    if !errors.is_empty() {
        return Err(Rejection::Invalid(errors));
    }
    Ok(WorkSubmitted {
        task_id: request
            .task_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        description: request.description,
        capability: request.capability.trim().to_string(),
        boundary: request.boundary.trim().to_string(),
        priority: priority as u8,
        preferred_agent_type: request.preferred_agent_type,
        required_agent_type: request.required_agent_type,
        deadline: request.deadline,
        context_data: request.context_data.map(|c| c.to_string()),
        max_attempts: max_attempts as u32,
        idempotency_key: request.idempotency_key,
    })
}

/// The id of an item submitted with an idempotency key: the same key in the same project
/// is the same item, whoever asks and however often.
pub fn id_for_key(project: &str, key: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("weft:{project}:{key}").as_bytes(),
    )
    .to_string()
}

/// `None` when the item exists already (a repeated idempotent submission).
pub fn decide_submit(
    state: &State,
    project: &str,
    id: &str,
    submitted: &WorkSubmitted,
) -> Result<Option<Decision>, Rejection> {
    if state
        .project(project)
        .is_some_and(|p| p.work.get(id).is_some())
    {
        return Ok(None);
    }
    Ok(Some(Decision::next(
        id.to_string(),
        0,
        Event::WorkSubmitted(submitted.clone()),
    )))
}

/// The agent types that may take `work`, and the order in which to prefer them.
pub(crate) fn type_rules(
    policy: &RoutingPolicy,
    work: &Work,
) -> (Option<Vec<String>>, Vec<String>, String) {
    let rule = policy.rule(&work.boundary);
    let mut allowed = rule.allowed_agent_types.clone();
    let mut text = match &allowed {
        Some(types) => format!("boundary {}: {} only", work.boundary, types.join(" or ")),
        None => format!("boundary {}: any agent type", work.boundary),
    };
    if let Some(required) = &work.required_agent_type {
        allowed = Some(match allowed {
            Some(types) => types.into_iter().filter(|t| t == required).collect(),
            None => vec![required.clone()],
        });
        text.push_str(&format!("; {required} required"));
    }
    let mut preferred = Vec::new();
    if let Some(p) = &work.preferred_agent_type {
        preferred.push(p.clone());
        text.push_str(&format!("; {p} preferred by the submitter"));
    } else if !rule.preferred_agent_types.is_empty() {
        text.push_str(&format!(
            "; {} preferred",
            rule.preferred_agent_types.join(", ")
        ));
    }
    preferred.extend(rule.preferred_agent_types.iter().cloned());
    (allowed, preferred, text)
}

/// Whether `agent` may ever take `work` (capacity aside).
fn eligible(agent: &Agent, work: &Work, allowed: &Option<Vec<String>>) -> bool {
    agent.status == AgentStatus::Online
        && agent.shutdown_requested.is_none()
        && agent.capabilities.contains(&work.capability)
        && agent.boundaries.contains(&work.boundary)
        && allowed
            .as_ref()
            .is_none_or(|a| a.contains(&agent.agent_type))
}

/// The best agent with free capacity for `work`, and why; `Err` says why there is none.
pub fn route<'a>(
    policy: &RoutingPolicy,
    project: &'a Project,
    work: &Work,
) -> Result<(&'a Agent, RoutingReason), String> {
    let (allowed, preferred, rule) = type_rules(policy, work);
    let rank = |a: &Agent| {
        preferred
            .iter()
            .position(|p| p == &a.agent_type)
            .unwrap_or(preferred.len())
    };
    let mut candidates: Vec<&Agent> = project
        .agents
        .iter()
        .filter(|a| eligible(a, work, &allowed) && a.free_slots() > 0)
        .collect();
    // Preferred types first, then the least loaded, then a stable order.
    candidates.sort_by_key(|a| (rank(a), a.active.len(), a.id.clone()));
    match candidates.first() {
        Some(best) => Ok((
            best,
            RoutingReason {
                rule,
                candidates: candidates.iter().map(|a| a.id.clone()).collect(),
            },
        )),
        None => Err(rule),
    }
}

/// The agent type an item is expected to land on: the submit response's `targetAgentType`.
pub fn expected_agent_type(
    policy: &RoutingPolicy,
    project: Option<&Project>,
    work: &Work,
) -> String {
    let (allowed, preferred, _) = type_rules(policy, work);
    let rank = |t: &String| {
        preferred
            .iter()
            .position(|p| p == t)
            .unwrap_or(preferred.len())
    };
    let mut types: Vec<String> = project
        .map(|p| {
            p.agents
                .iter()
                .filter(|a| eligible(a, work, &allowed))
                .map(|a| a.agent_type.clone())
                .collect()
        })
        .unwrap_or_default();
    types.sort_by_key(|t| (rank(t), t.clone()));
    types
        .into_iter()
        .next()
        .or_else(|| {
            preferred
                .into_iter()
                .find(|p| allowed.as_ref().is_none_or(|a| a.contains(p)))
        })
        .or_else(|| allowed.and_then(|a| a.into_iter().next()))
        .unwrap_or_else(|| "claude-code".to_string())
}

/// Whether any online agent could take `work` (now or when it frees up).
pub fn has_eligible_agent(policy: &RoutingPolicy, project: &Project, work: &Work) -> bool {
    let (allowed, _, _) = type_rules(policy, work);
    project.agents.iter().any(|a| eligible(a, work, &allowed))
}

/// The next assignment in `project`: pending items by priority then age, each to the best
/// agent with room. Items no agent can take now are skipped, not waited on.
pub fn decide_next_assignment(
    state: &State,
    project: &str,
    policy: &RoutingPolicy,
    now_ms: u64,
    lease_id: &str,
) -> Option<Decision> {
    let p = state.project(project)?;
    p.work
        .queue()
        .filter(|w| w.not_before_ms.is_none_or(|t| t <= now_ms))
        .find_map(|w| {
            let (agent, reason) = route(policy, p, w).ok()?;
            Some(Decision::next(
                w.id.clone(),
                w.version,
                Event::WorkAssigned(WorkAssigned {
                    agent_id: agent.id.clone(),
                    lease_id: lease_id.to_string(),
                    attempt: w.attempts + 1,
                    reason,
                }),
            ))
        })
}

/// What becomes of an item whose attempt ended without success.
pub fn after_failure(
    work: &Work,
    recoverable: bool,
    settings: &WorkSettings,
    now_ms: u64,
) -> AfterFailure {
    if !recoverable {
        AfterFailure::Failed
    } else if work.attempts >= work.max_attempts {
        AfterFailure::DeadLettered
    } else {
        let exponent = work.attempts.saturating_sub(1).min(20);
        let delay = settings
            .retry_base_ms
            .saturating_mul(1 << exponent)
            .min(settings.retry_max_ms);
        AfterFailure::Retry {
            at_ms: now_ms + delay,
        }
    }
}

fn find<'a>(state: &'a State, project: &str, id: &str) -> Result<&'a Work, Rejection> {
    state
        .project(project)
        .and_then(|p| p.work.get(id))
        .ok_or_else(|| Rejection::NotFound(format!("Work item with ID {id} not found")))
}

/// Who reports on which item, under which lease.
#[derive(Clone, Copy, Debug)]
pub struct LeaseRef<'a> {
    pub work_id: &'a str,
    pub agent_id: &'a str,
    pub lease_id: &'a str,
}

/// A report from an agent is accepted only from the holder of the item's current lease.
fn leased<'a>(state: &'a State, project: &str, by: LeaseRef) -> Result<&'a Work, Rejection> {
    let LeaseRef {
        work_id: id,
        agent_id: agent,
        lease_id: lease,
    } = by;
    let work = find(state, project, id)?;
    if work.status.is_leased()
        && work.lease_id.as_deref() == Some(lease)
        && work.assigned_to.as_deref() == Some(agent)
    {
        Ok(work)
    } else {
        Err(Rejection::Conflict(format!(
            "lease {lease} on work item {id} is not held by agent {agent} (status {})",
            work.status.as_str()
        )))
    }
}

pub fn decide_accept(
    state: &State,
    project: &str,
    by: LeaseRef,
) -> Result<Option<Decision>, Rejection> {
    let LeaseRef {
        work_id: id,
        agent_id: agent,
        lease_id: lease,
    } = by;
    let work = leased(state, project, by)?;
    if work.status == WorkStatus::InProgress {
        return Ok(None);
    }
    Ok(Some(Decision::next(
        id.to_string(),
        work.version,
        Event::WorkStarted(WorkStarted {
            agent_id: agent.into(),
            lease_id: lease.into(),
        }),
    )))
}

pub fn decide_progress(
    state: &State,
    project: &str,
    by: LeaseRef,
    progress: Option<u8>,
    message: &str,
) -> Result<Option<Decision>, Rejection> {
    let LeaseRef {
        work_id: id,
        agent_id: agent,
        lease_id: lease,
    } = by;
    let work = leased(state, project, by)?;
    Ok(Some(Decision::next(
        id.to_string(),
        work.version,
        Event::WorkProgressed(WorkProgressed {
            agent_id: agent.into(),
            lease_id: lease.into(),
            progress: progress.map(|p| p.min(100)),
            message: message.chars().take(4096).collect(),
        }),
    )))
}

/// `None` when this lease already completed it (a repeated report).
pub fn decide_complete(
    state: &State,
    project: &str,
    by: LeaseRef,
    summary: &str,
    output: Option<String>,
    artifacts: Vec<String>,
) -> Result<Option<Decision>, Rejection> {
    let LeaseRef {
        work_id: id,
        agent_id: agent,
        lease_id: lease,
    } = by;
    let work = find(state, project, id)?;
    if work.status == WorkStatus::Completed && work.lease_id.as_deref() == Some(lease) {
        return Ok(None);
    }
    let work = leased(state, project, by)?;
    Ok(Some(Decision::next(
        id.to_string(),
        work.version,
        Event::WorkCompleted(WorkCompleted {
            agent_id: agent.into(),
            lease_id: lease.into(),
            summary: summary.chars().take(16_384).collect(),
            output: output.map(|o| o.chars().take(262_144).collect()),
            artifacts,
        }),
    )))
}

pub fn decide_fail(
    state: &State,
    project: &str,
    by: LeaseRef,
    error: &str,
    recoverable: bool,
    settings: &WorkSettings,
    now_ms: u64,
) -> Result<Option<Decision>, Rejection> {
    let LeaseRef {
        work_id: id,
        agent_id: agent,
        lease_id: lease,
    } = by;
    let work = leased(state, project, by)?;
    Ok(Some(Decision::next(
        id.to_string(),
        work.version,
        Event::WorkFailed(WorkFailed {
            agent_id: agent.into(),
            lease_id: lease.into(),
            error: error.chars().take(16_384).collect(),
            recoverable,
            then: after_failure(work, recoverable, settings, now_ms),
        }),
    )))
}

/// Takes back an assignment its agent did not accept in time.
pub fn decide_expire_unaccepted(
    state: &State,
    project: &str,
    id: &str,
    lease: &str,
    settings: &WorkSettings,
    now_ms: u64,
) -> Result<Option<Decision>, Rejection> {
    let work = find(state, project, id)?;
    if work.status != WorkStatus::Assigned || work.lease_id.as_deref() != Some(lease) {
        return Ok(None);
    }
    Ok(Some(Decision::next(
        id.to_string(),
        work.version,
        Event::WorkLeaseExpired(WorkLeaseExpired {
            agent_id: work.assigned_to.clone().unwrap_or_default(),
            lease_id: lease.into(),
            reason: "not accepted in time".into(),
            then: after_failure(work, true, settings, now_ms),
        }),
    )))
}

/// `None` when already cancelled.
pub fn decide_cancel(
    state: &State,
    project: &str,
    id: &str,
    reason: Option<String>,
) -> Result<Option<Decision>, Rejection> {
    let work = find(state, project, id)?;
    match work.status {
        WorkStatus::Cancelled => Ok(None),
        WorkStatus::Completed => Err(Rejection::Conflict(format!(
            "Cannot cancel work in {} state",
            work.status.as_str()
        ))),
        _ => Ok(Some(Decision::next(
            id.to_string(),
            work.version,
            Event::WorkCancelled(WorkCancelled { reason }),
        ))),
    }
}

pub fn decide_retry(state: &State, project: &str, id: &str) -> Result<Option<Decision>, Rejection> {
    let work = find(state, project, id)?;
    match work.status {
        WorkStatus::DeadLettered | WorkStatus::Failed => Ok(Some(Decision::next(
            id.to_string(),
            work.version,
            Event::WorkRetried(WorkRetried {}),
        ))),
        other => Err(Rejection::Conflict(format!(
            "Only dead-lettered or failed work can be retried; this item is {}",
            other.as_str()
        ))),
    }
}

pub fn decide_register_agent(
    state: &State,
    project: &str,
    id: &str,
    registration: &AgentRegistered,
) -> Result<Option<Decision>, Rejection> {
    let version = state
        .project(project)
        .and_then(|p| p.agents.get(id))
        .map_or(0, |a| a.version);
    Ok(Some(Decision::next(
        id.to_string(),
        version,
        Event::AgentRegistered(registration.clone()),
    )))
}

/// Marks an agent offline and frees every lease it held. `None` if it already is offline.
pub fn decide_agent_offline(
    state: &State,
    project: &str,
    id: &str,
    reason: &str,
    settings: &WorkSettings,
    now_ms: u64,
) -> Result<Option<Decision>, Rejection> {
    let p = state
        .project(project)
        .ok_or_else(|| Rejection::NotFound(format!("Agent with GUID {id} not found")))?;
    let agent = p
        .agents
        .get(id)
        .ok_or_else(|| Rejection::NotFound(format!("Agent with GUID {id} not found")))?;
    if agent.status == AgentStatus::Offline {
        return Ok(None);
    }
    let freed = agent
        .active
        .iter()
        .filter_map(|w| p.work.get(w))
        .filter_map(|w| {
            Some(FreedLease {
                work_id: w.id.clone(),
                lease_id: w.lease_id.clone()?,
                then: after_failure(w, true, settings, now_ms),
            })
        })
        .collect();
    Ok(Some(Decision::next(
        id.to_string(),
        agent.version,
        Event::AgentWentOffline(AgentWentOffline {
            reason: reason.into(),
            freed,
        }),
    )))
}

/// `None` when a shutdown was already requested.
pub fn decide_shutdown(
    state: &State,
    project: &str,
    id: &str,
    reason: &str,
    graceful: bool,
) -> Result<Option<Decision>, Rejection> {
    let agent = state
        .project(project)
        .and_then(|p| p.agents.get(id))
        .ok_or_else(|| Rejection::NotFound(format!("Agent with GUID {id} not found")))?;
    if agent.status == AgentStatus::Offline {
        return Err(Rejection::Conflict(format!("Agent {id} is offline")));
    }
    if agent.shutdown_requested.is_some() {
        return Ok(None);
    }
    Ok(Some(Decision::next(
        id.to_string(),
        agent.version,
        Event::AgentShutdownRequested(AgentShutdownRequested {
            reason: reason.into(),
            graceful,
        }),
    )))
}

#[cfg(test)]
mod tests;
