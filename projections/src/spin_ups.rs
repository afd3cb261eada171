//! Spin-ups of one project, and what they mean for their targets (in use, use count,
//! last used). Folded together with the targets because each spin-up event updates both.

use std::collections::BTreeMap;

use events::{Envelope, Event};
use serde::{Deserialize, Serialize};

use crate::targets::{TargetStatus, Targets};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpinUpStatus {
    /// Decided; the mechanism has not answered yet.
    Triggered,
    /// The mechanism started something; waiting for the agent to register.
    Started,
    /// The agent registered.
    Completed,
    Failed,
    /// What it started was stopped.
    Stopped,
}

impl SpinUpStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SpinUpStatus::Triggered => "triggered",
            SpinUpStatus::Started => "started",
            SpinUpStatus::Completed => "completed",
            SpinUpStatus::Failed => "failed",
            SpinUpStatus::Stopped => "stopped",
        }
    }

    /// Not yet resolved: counts as capacity on its way.
    pub fn is_in_flight(self) -> bool {
        matches!(self, SpinUpStatus::Triggered | SpinUpStatus::Started)
    }

    /// Holds (or may hold) something running on the target.
    pub fn is_live(self) -> bool {
        !matches!(self, SpinUpStatus::Failed | SpinUpStatus::Stopped)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpinUp {
    pub id: String,
    pub target_id: String,
    pub target_name: String,
    pub agent_type: String,
    pub reason: String,
    pub work_id: Option<String>,
    pub capability: Option<String>,
    pub boundary: Option<String>,
    pub status: SpinUpStatus,
    pub detail: Option<String>,
    pub pid: Option<u32>,
    pub agent_id: Option<String>,
    pub error: Option<String>,
    pub triggered_at_ms: u64,
    pub updated_at_ms: u64,
    pub version: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpinUps {
    spin_ups: BTreeMap<String, SpinUp>,
}

impl SpinUps {
    pub fn get(&self, id: &str) -> Option<&SpinUp> {
        self.spin_ups.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &SpinUp> {
        self.spin_ups.values()
    }

    /// Spin-ups of `target` that may hold something running on it.
    pub fn live_on<'a>(&'a self, target: &'a str) -> impl Iterator<Item = &'a SpinUp> + 'a {
        self.spin_ups
            .values()
            .filter(move |s| s.target_id == target && s.status.is_live())
    }
}

/// A target is in use while an agent one of its spin-ups started is there (registered and
/// not yet stopped); spin-ups still waiting for their agent are counted apart.
pub(crate) fn refresh_status(targets: &mut Targets, spin_ups: &SpinUps, target_id: &str) {
    let linked = spin_ups
        .live_on(target_id)
        .filter(|s| s.status == SpinUpStatus::Completed)
        .filter_map(|s| s.agent_id.clone())
        .last();
    let in_flight = spin_ups
        .live_on(target_id)
        .filter(|s| s.status.is_in_flight())
        .count() as u32;
    if let Some(t) = targets.get_mut(target_id) {
        t.spin_ups_in_flight = in_flight;
        if t.status != TargetStatus::Disabled {
            t.status = if linked.is_some() {
                TargetStatus::InUse
            } else {
                TargetStatus::Available
            };
        }
        t.current_agent_guid = linked;
    }
}

pub(crate) fn apply(
    targets: &mut Targets,
    spin_ups: &mut SpinUps,
    sequence: u64,
    envelope: &Envelope,
) {
    let time = envelope.time_ms;
    let id = envelope.aggregate_id.as_str();
    match &envelope.event {
        Event::SpinUpTriggered(e) => {
            if spin_ups.spin_ups.contains_key(id) || targets.get(&e.target_id).is_none() {
                return;
            }
            spin_ups.spin_ups.insert(
                id.to_string(),
                SpinUp {
                    id: id.to_string(),
                    target_id: e.target_id.clone(),
                    target_name: e.target_name.clone(),
                    agent_type: e.agent_type.clone(),
                    reason: e.reason.clone(),
                    work_id: e.work_id.clone(),
                    capability: e.capability.clone(),
                    boundary: e.boundary.clone(),
                    status: SpinUpStatus::Triggered,
                    detail: None,
                    pid: None,
                    agent_id: None,
                    error: None,
                    triggered_at_ms: time,
                    updated_at_ms: time,
                    version: sequence,
                },
            );
        }
        Event::SpinUpStarted(e) => {
            // The agent may register before the mechanism has answered (a fast local
            // process): then the spin-up is already completed and stays so.
            let Some(s) = spin_ups.spin_ups.get_mut(id).filter(|s| {
                s.detail.is_none()
                    && matches!(s.status, SpinUpStatus::Triggered | SpinUpStatus::Completed)
            }) else {
                return;
            };
            if s.status == SpinUpStatus::Triggered {
                s.status = SpinUpStatus::Started;
            }
            s.detail = Some(e.detail.clone());
            s.pid = e.pid;
            s.updated_at_ms = time;
            s.version = sequence;
            let target = s.target_id.clone();
            if let Some(t) = targets.get_mut(&target) {
                t.use_count += 1;
                t.last_used_at_ms = Some(time);
            }
        }
        Event::SpinUpCompleted(e) => {
            let Some(s) = spin_ups
                .spin_ups
                .get_mut(id)
                .filter(|s| s.status.is_in_flight())
            else {
                return;
            };
            s.status = SpinUpStatus::Completed;
            s.agent_id = Some(e.agent_id.clone());
            s.updated_at_ms = time;
            s.version = sequence;
        }
        Event::SpinUpFailed(e) => {
            let Some(s) = spin_ups
                .spin_ups
                .get_mut(id)
                .filter(|s| s.status.is_in_flight())
            else {
                return;
            };
            s.status = SpinUpStatus::Failed;
            s.error = Some(e.error.clone());
            s.updated_at_ms = time;
            s.version = sequence;
        }
        Event::SpinUpStopped(_) => {
            let Some(s) = spin_ups.spin_ups.get_mut(id).filter(|s| s.status.is_live()) else {
                return;
            };
            s.status = SpinUpStatus::Stopped;
            s.updated_at_ms = time;
            s.version = sequence;
        }
        // Only spin-up events are routed here.
        _ => return,
    }
    if let Some(target) = spin_ups.spin_ups.get(id).map(|s| s.target_id.clone()) {
        refresh_status(targets, spin_ups, &target);
    }
}
