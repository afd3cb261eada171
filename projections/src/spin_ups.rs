//! Spin-ups of one project, and what they mean for their targets (in use, spin-ups in
//! flight, use count, last failure). Folded together with the targets because each spin-up
//! event updates both. Spin-ups are kept forever (they are history); the indexes hold the
//! few that still matter: those in flight and those whose agent is there.

use std::sync::Arc;

use events::{Envelope, Event};
use imbl::{OrdMap, OrdSet};
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
    /// When its agent registered: the spin-up's latency ends here.
    #[serde(default)]
    pub completed_at_ms: Option<u64>,
    /// How its target starts agents, as the target was when it was triggered (kept when
    /// the target is removed). `None` in snapshots of before.
    #[serde(default)]
    pub mechanism: Option<events::target::Mechanism>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpinUps {
    spin_ups: OrdMap<String, Arc<SpinUp>>,
    /// (triggered at, id) of spin-ups in flight.
    in_flight: OrdSet<(u64, String)>,
    /// Completed spin-ups: their agent is (or was, until stopped) there.
    linked: OrdSet<String>,
    by_status: OrdMap<String, usize>,
}

impl SpinUps {
    pub fn get(&self, id: &str) -> Option<&SpinUp> {
        self.spin_ups.get(id).map(|s| s.as_ref())
    }

    /// Every spin-up, by id.
    pub fn iter(&self) -> impl Iterator<Item = &SpinUp> {
        self.spin_ups.values().map(|s| s.as_ref())
    }

    /// Spin-ups in flight, oldest first.
    pub fn in_flight(&self) -> impl Iterator<Item = &SpinUp> {
        self.in_flight.iter().filter_map(|(_, id)| self.get(id))
    }

    /// Completed spin-ups not stopped yet: their agent is there, or has gone and what it
    /// ran on is still to be stopped.
    pub fn linked(&self) -> impl Iterator<Item = &SpinUp> {
        self.linked.iter().filter_map(|id| self.get(id))
    }

    pub fn count(&self, status: SpinUpStatus) -> usize {
        self.by_status.get(status.as_str()).copied().unwrap_or(0)
    }

    fn unindex(&mut self, s: &SpinUp) {
        self.in_flight.remove(&(s.triggered_at_ms, s.id.clone()));
        self.linked.remove(&s.id);
        if let Some(n) = self.by_status.get_mut(s.status.as_str()) {
            *n -= 1;
            if *n == 0 {
                self.by_status.remove(s.status.as_str());
            }
        }
    }

    fn index(&mut self, s: &SpinUp) {
        if s.status.is_in_flight() {
            self.in_flight.insert((s.triggered_at_ms, s.id.clone()));
        }
        if s.status == SpinUpStatus::Completed {
            self.linked.insert(s.id.clone());
        }
        *self
            .by_status
            .entry(s.status.as_str().to_string())
            .or_default() += 1;
    }

    fn update(&mut self, id: &str, change: impl FnOnce(&mut SpinUp)) -> Option<&SpinUp> {
        let mut entry = self.spin_ups.remove(id)?;
        self.unindex(&entry);
        change(Arc::make_mut(&mut entry));
        self.index(&entry);
        self.spin_ups.insert(id.to_string(), entry);
        self.get(id)
    }

    fn on_target<'a>(&'a self, target: &'a str) -> impl Iterator<Item = &'a SpinUp> + 'a {
        self.in_flight()
            .chain(self.linked())
            .filter(move |s| s.target_id == target)
    }
}

/// What a target's spin-ups mean for it: in use while an agent it started is there; how many
/// are in flight; how many may hold something running there.
fn refresh_target(targets: &mut Targets, spin_ups: &SpinUps, target_id: &str) {
    let linked = spin_ups
        .on_target(target_id)
        .filter(|s| s.status == SpinUpStatus::Completed)
        .filter_map(|s| s.agent_id.clone())
        .last();
    let in_flight = spin_ups
        .on_target(target_id)
        .filter(|s| s.status.is_in_flight())
        .count() as u32;
    let live = spin_ups.on_target(target_id).count() as u32;
    targets.update(target_id, |t| {
        t.spin_ups_in_flight = in_flight;
        t.spin_ups_live = live;
        if t.status != TargetStatus::Disabled {
            t.status = if linked.is_some() {
                TargetStatus::InUse
            } else {
                TargetStatus::Available
            };
        }
        t.current_agent_guid = linked;
    });
}

pub(crate) fn apply(targets: &mut Targets, spin_ups: &mut SpinUps, envelope: &Envelope) {
    let time = envelope.time_ms;
    let id = envelope.aggregate_id.as_str();
    let changed = match &envelope.event {
        Event::SpinUpTriggered(e) => {
            if spin_ups.spin_ups.contains_key(id) || targets.get(&e.target_id).is_none() {
                return;
            }
            let spin_up = SpinUp {
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
                completed_at_ms: None,
                mechanism: targets.get(&e.target_id).map(|t| t.config.mechanism()),
            };
            spin_ups.index(&spin_up);
            spin_ups.spin_ups.insert(id.to_string(), Arc::new(spin_up));
            true
        }
        Event::SpinUpStarted(e) => {
            // The agent may register before the mechanism has answered (a fast local
            // process): then the spin-up is already completed and stays so.
            let answerable = spin_ups.get(id).is_some_and(|s| {
                s.detail.is_none()
                    && matches!(s.status, SpinUpStatus::Triggered | SpinUpStatus::Completed)
            });
            if !answerable {
                return;
            }
            let target = spin_ups.update(id, |s| {
                if s.status == SpinUpStatus::Triggered {
                    s.status = SpinUpStatus::Started;
                }
                s.detail = Some(e.detail.clone());
                s.pid = e.pid;
                s.updated_at_ms = time;
            });
            if let Some(target) = target.map(|s| s.target_id.clone()) {
                targets.update(&target, |t| {
                    t.use_count += 1;
                    t.last_used_at_ms = Some(time);
                });
            }
            true
        }
        Event::SpinUpCompleted(e) => {
            if !spin_ups.get(id).is_some_and(|s| s.status.is_in_flight()) {
                return;
            }
            spin_ups.update(id, |s| {
                s.status = SpinUpStatus::Completed;
                s.agent_id = Some(e.agent_id.clone());
                s.updated_at_ms = time;
                s.completed_at_ms = Some(time);
            });
            true
        }
        Event::SpinUpFailed(e) => {
            if !spin_ups.get(id).is_some_and(|s| s.status.is_in_flight()) {
                return;
            }
            let target = spin_ups
                .update(id, |s| {
                    s.status = SpinUpStatus::Failed;
                    s.error = Some(e.error.clone());
                    s.updated_at_ms = time;
                })
                .map(|s| s.target_id.clone());
            if let Some(target) = target {
                targets.update(&target, |t| t.last_spin_up_failure_ms = Some(time));
            }
            true
        }
        Event::SpinUpStopped(_) => {
            if !spin_ups.get(id).is_some_and(|s| s.status.is_live()) {
                return;
            }
            spin_ups.update(id, |s| {
                s.status = SpinUpStatus::Stopped;
                s.updated_at_ms = time;
            });
            true
        }
        // Only spin-up events are routed here.
        _ => false,
    };
    if changed {
        if let Some(target) = spin_ups.get(id).map(|s| s.target_id.clone()) {
            refresh_target(targets, spin_ups, &target);
        }
    }
}
