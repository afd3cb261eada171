//! Starting agents on demand: which target serves a pending item, and the decisions of a
//! spin-up's life. Pure: no I/O, tested as plain Rust.

use events::spinup::{
    SpinUpCompleted, SpinUpFailed, SpinUpStarted, SpinUpStopped, SpinUpTriggered,
};
use events::Event;
use projections::{HealthStatus, Project, SpinUpStatus, State, Target, TargetStatus, Work};

use crate::commands::{Decision, Rejection};
use crate::work::{self, RoutingPolicy};

#[derive(Clone, Debug)]
pub struct SpinUpSettings {
    /// A target whose spin-up failed is not used again for this long.
    pub cooldown_ms: u64,
}

/// Whether an agent started on `target` could take `work`.
pub fn target_serves(policy: &RoutingPolicy, target: &Target, work: &Work) -> bool {
    let (allowed, _, _) = work::type_rules(policy, work);
    target.capabilities.contains(&work.capability)
        && target.boundaries.contains(&work.boundary)
        && allowed
            .as_ref()
            .is_none_or(|a| a.contains(&target.agent_type))
}

/// Items that need a new agent: pending, due, with no agent that could take them now,
/// and not already covered by a spin-up in flight (each counts as one agent's worth).
pub fn unserved<'a>(policy: &RoutingPolicy, project: &'a Project, now_ms: u64) -> Vec<&'a Work> {
    let mut in_flight: Vec<&Target> = project
        .spin_ups
        .iter()
        .filter(|s| s.status.is_in_flight())
        .filter_map(|s| project.targets.get(&s.target_id))
        .collect();
    project
        .work
        .queue()
        .filter(|w| w.not_before_ms.is_none_or(|t| t <= now_ms))
        .filter(|w| work::route(policy, project, w).is_err())
        .filter(
            |w| match in_flight.iter().position(|t| target_serves(policy, t, w)) {
                Some(i) => {
                    in_flight.remove(i);
                    false
                }
                None => true,
            },
        )
        .collect()
}

/// The best target for `work`: enabled, not unhealthy, not cooling down after a failure,
/// below its agent limit; preferred agent types first, then the least used.
pub fn choose_target<'a>(
    policy: &RoutingPolicy,
    project: &'a Project,
    work: &Work,
    settings: &SpinUpSettings,
    now_ms: u64,
) -> Option<&'a Target> {
    let (_, preferred, _) = work::type_rules(policy, work);
    let rank = |t: &Target| {
        preferred
            .iter()
            .position(|p| p == &t.agent_type)
            .unwrap_or(preferred.len())
    };
    let cooling = |t: &Target| {
        project.spin_ups.iter().any(|s| {
            s.target_id == t.id
                && s.status == SpinUpStatus::Failed
                && s.updated_at_ms + settings.cooldown_ms > now_ms
        })
    };
    let mut candidates: Vec<&Target> = project
        .targets
        .iter()
        .filter(|t| {
            t.status != TargetStatus::Disabled && t.health_status != HealthStatus::Unhealthy
        })
        .filter(|t| target_serves(policy, t, work))
        .filter(|t| (project.spin_ups.live_on(&t.id).count() as u32) < t.max_agents)
        .filter(|t| !cooling(t))
        .collect();
    candidates.sort_by_key(|t| (rank(t), t.use_count, t.registered_at_ms));
    candidates.into_iter().next()
}

pub fn decide_trigger(
    state: &State,
    project: &str,
    spin_up_id: &str,
    target_key: &str,
    reason: &str,
    work: Option<&Work>,
) -> Result<Option<Decision>, Rejection> {
    let p = state.project(project);
    let target = p
        .and_then(|p| p.targets.get_by_id_or_name(target_key))
        .ok_or_else(|| {
            Rejection::NotFound(format!("Target with ID or name {target_key} not found"))
        })?;
    if target.status == TargetStatus::Disabled {
        return Err(Rejection::Conflict(format!(
            "Target {} is disabled",
            target.name
        )));
    }
    let live = p.map_or(0, |p| p.spin_ups.live_on(&target.id).count()) as u32;
    if live >= target.max_agents {
        return Err(Rejection::Conflict(format!(
            "Target {} already runs {live} of its {} agents (maxAgents)",
            target.name, target.max_agents
        )));
    }
    Ok(Some(Decision::next(
        spin_up_id.to_string(),
        0,
        Event::SpinUpTriggered(SpinUpTriggered {
            target_id: target.id.clone(),
            target_name: target.name.clone(),
            agent_type: target.agent_type.clone(),
            reason: reason.into(),
            work_id: work.map(|w| w.id.clone()),
            capability: work.map(|w| w.capability.clone()),
            boundary: work.map(|w| w.boundary.clone()),
        }),
    )))
}

fn transition(
    state: &State,
    project: &str,
    id: &str,
    allowed: impl Fn(SpinUpStatus) -> bool,
    event: Event,
) -> Result<Option<Decision>, Rejection> {
    let spin_up = state
        .project(project)
        .and_then(|p| p.spin_ups.get(id))
        .ok_or_else(|| Rejection::NotFound(format!("Spin-up {id} not found")))?;
    if !allowed(spin_up.status) {
        return Ok(None);
    }
    Ok(Some(Decision::next(id, spin_up.version, event)))
}

/// Also after `completed`: a fast agent may register before the mechanism has answered.
pub fn decide_started(
    state: &State,
    project: &str,
    id: &str,
    detail: String,
    pid: Option<u32>,
) -> Result<Option<Decision>, Rejection> {
    let answered = state
        .project(project)
        .and_then(|p| p.spin_ups.get(id))
        .is_some_and(|s| s.detail.is_some());
    if answered {
        return Ok(None);
    }
    transition(
        state,
        project,
        id,
        |s| matches!(s, SpinUpStatus::Triggered | SpinUpStatus::Completed),
        Event::SpinUpStarted(SpinUpStarted { detail, pid }),
    )
}

pub fn decide_completed(
    state: &State,
    project: &str,
    id: &str,
    agent_id: &str,
    now_ms: u64,
) -> Result<Option<Decision>, Rejection> {
    let started = state
        .project(project)
        .and_then(|p| p.spin_ups.get(id))
        .map_or(now_ms, |s| s.triggered_at_ms);
    transition(
        state,
        project,
        id,
        SpinUpStatus::is_in_flight,
        Event::SpinUpCompleted(SpinUpCompleted {
            agent_id: agent_id.into(),
            duration_ms: now_ms.saturating_sub(started),
        }),
    )
}

pub fn decide_failed(
    state: &State,
    project: &str,
    id: &str,
    stage: &str,
    error: String,
) -> Result<Option<Decision>, Rejection> {
    transition(
        state,
        project,
        id,
        SpinUpStatus::is_in_flight,
        Event::SpinUpFailed(SpinUpFailed {
            error,
            stage: stage.into(),
        }),
    )
}

pub fn decide_stopped(
    state: &State,
    project: &str,
    id: &str,
    reason: &str,
) -> Result<Option<Decision>, Rejection> {
    transition(
        state,
        project,
        id,
        SpinUpStatus::is_live,
        Event::SpinUpStopped(SpinUpStopped {
            reason: reason.into(),
        }),
    )
}
