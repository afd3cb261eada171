//! The spin-up aggregate: Weft starting an agent on a target. Triggered, then the mechanism
//! answers (started, or failed), then the agent registers (completed, decided with the
//! registration in [`crate::agent`]) or does not in time (failed); what it started is
//! stopped at scale-down.

use events::spin_up::{SpinUpFailed, SpinUpStarted, SpinUpStopped, SpinUpTriggered};
use events::Event;
use projections::{Project, SpinUpStatus, TargetStatus};

use crate::rejection::Rejection;
use crate::Decision;

/// The work item a spin-up is for.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ForWork {
    pub work_id: String,
    pub capability: String,
    pub boundary: String,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SpinUpCommand {
    /// `target` is an id or a name; `reason` is `work-pending` or `manual`.
    Trigger {
        spin_up_id: String,
        target: String,
        reason: String,
        work: Option<ForWork>,
    },
    /// The mechanism started something (`detail` says what; `pid` for process groups).
    RecordStarted {
        spin_up_id: String,
        detail: String,
        pid: Option<u32>,
    },
    /// `stage`: `start` (the mechanism failed) or `registration` (no agent in time).
    Fail {
        spin_up_id: String,
        stage: String,
        error: String,
    },
    /// What it started was stopped.
    RecordStopped { spin_up_id: String, reason: String },
}

pub fn decide(command: &SpinUpCommand, project: &Project) -> Result<Vec<Decision>, Rejection> {
    match command {
        SpinUpCommand::Trigger {
            spin_up_id,
            target,
            reason,
            work,
        } => {
            let t = project.targets.get_by_id_or_name(target).ok_or_else(|| {
                Rejection::NotFound(format!("Target with ID or name {target} not found"))
            })?;
            if t.status == TargetStatus::Disabled {
                return Err(Rejection::WrongState(format!(
                    "Target {} is disabled",
                    t.name
                )));
            }
            let live = t.spin_ups_live;
            if live >= t.max_agents {
                return Err(Rejection::WrongState(format!(
                    "Target {} already runs {live} of its {} agents (maxAgents)",
                    t.name, t.max_agents
                )));
            }
            Ok(vec![Decision::new(
                spin_up_id,
                Event::SpinUpTriggered(SpinUpTriggered {
                    target_id: t.id.clone(),
                    target_name: t.name.clone(),
                    agent_type: t.agent_type.clone(),
                    reason: reason.clone(),
                    work_id: work.as_ref().map(|w| w.work_id.clone()),
                    capability: work.as_ref().map(|w| w.capability.clone()),
                    boundary: work.as_ref().map(|w| w.boundary.clone()),
                }),
            )])
        }
        SpinUpCommand::RecordStarted {
            spin_up_id,
            detail,
            pid,
        } => {
            let s = find(project, spin_up_id)?;
            // Also after `completed`: a fast agent may register before the mechanism answers.
            let waiting = matches!(s.status, SpinUpStatus::Triggered | SpinUpStatus::Completed);
            if s.detail.is_some() || !waiting {
                return Ok(vec![]);
            }
            Ok(vec![Decision::new(
                spin_up_id,
                Event::SpinUpStarted(SpinUpStarted {
                    detail: detail.clone(),
                    pid: *pid,
                }),
            )])
        }
        SpinUpCommand::Fail {
            spin_up_id,
            stage,
            error,
        } => {
            let s = find(project, spin_up_id)?;
            if !s.status.is_in_flight() {
                return Ok(vec![]);
            }
            Ok(vec![Decision::new(
                spin_up_id,
                Event::SpinUpFailed(SpinUpFailed {
                    error: error.clone(),
                    stage: stage.clone(),
                }),
            )])
        }
        SpinUpCommand::RecordStopped { spin_up_id, reason } => {
            let s = find(project, spin_up_id)?;
            if !s.status.is_live() {
                return Ok(vec![]);
            }
            Ok(vec![Decision::new(
                spin_up_id,
                Event::SpinUpStopped(SpinUpStopped {
                    reason: reason.clone(),
                }),
            )])
        }
    }
}

fn find<'a>(project: &'a Project, id: &str) -> Result<&'a projections::SpinUp, Rejection> {
    project
        .spin_ups
        .get(id)
        .ok_or_else(|| Rejection::NotFound(format!("Spin-up {id} not found")))
}
