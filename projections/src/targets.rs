//! The spin-up targets read model of one project.

use std::sync::Arc;

use events::target::{HealthCheckSettings, MechanismConfig};
use events::{Envelope, Event};
use imbl::{OrdMap, OrdSet};

use crate::work::Route;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetStatus {
    Available,
    InUse,
    Disabled,
    Error,
}

impl TargetStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetStatus::Available => "available",
            TargetStatus::InUse => "in-use",
            TargetStatus::Disabled => "disabled",
            TargetStatus::Error => "error",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthStatus {
    Healthy,
    Unhealthy,
    Unknown,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
            HealthStatus::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub agent_type: String,
    pub capabilities: Vec<String>,
    pub boundaries: Vec<String>,
    pub config: MechanismConfig,
    pub status: TargetStatus,
    pub current_agent_guid: Option<String>,
    pub health_check: Option<HealthCheckSettings>,
    pub last_health_check_ms: Option<u64>,
    pub health_status: HealthStatus,
    pub last_error: Option<String>,
    pub disabled_reason: Option<String>,
    pub registered_by: String,
    /// The actor of the `target.registered` event.
    pub registered_by_actor: String,
    pub registered_at_ms: u64,
    pub updated_at_ms: u64,
    pub last_used_at_ms: Option<u64>,
    pub use_count: u64,
    pub tags: Vec<String>,
    /// How many agents it may run at once.
    pub max_agents: u32,
    /// Spin-ups on it whose agent has not registered yet.
    pub spin_ups_in_flight: u32,
    /// Spin-ups on it that may hold something running there (in flight, or linked).
    pub spin_ups_live: u32,
    /// When a spin-up on it last failed (the cooldown counts from here).
    pub last_spin_up_failure_ms: Option<u64>,
    /// Stream sequence of `target.registered`: list order, and the target's key.
    pub registered_sequence: u64,
}

impl Target {
    /// When its next periodic health check is due, if it has them.
    pub fn health_check_due_ms(&self) -> Option<u64> {
        let check = self.health_check.as_ref().filter(|h| h.enabled)?;
        Some(
            self.last_health_check_ms
                .map_or(0, |last| last + check.interval_ms),
        )
    }
}

/// The targets of one project, in registration order, with lookups by id and by name, the
/// health checks by when they are due, and counts by status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Targets {
    /// Keyed by the sequence of the `target.registered` event, which is also list order.
    by_registration: OrdMap<u64, Arc<Target>>,
    ids: OrdMap<String, u64>,
    names: OrdMap<String, u64>,
    /// (due time, registration sequence) of every periodic health check.
    health_due: OrdSet<(u64, u64)>,
    by_status: OrdMap<TargetStatus, usize>,
    /// Targets by the (capability, boundary) pairs they serve, in registration order.
    serving: OrdMap<Route, OrdSet<u64>>,
}

impl Targets {
    pub fn get(&self, id: &str) -> Option<&Target> {
        self.ids
            .get(id)
            .and_then(|seq| self.by_registration.get(seq))
            .map(|t| t.as_ref())
    }

    pub fn by_name(&self, name: &str) -> Option<&Target> {
        self.names
            .get(name)
            .and_then(|seq| self.by_registration.get(seq))
            .map(|t| t.as_ref())
    }

    /// The original's lookup rule: an id first, then a name.
    pub fn get_by_id_or_name(&self, key: &str) -> Option<&Target> {
        self.get(key).or_else(|| self.by_name(key))
    }

    /// In registration order.
    pub fn iter(&self) -> impl Iterator<Item = &Target> {
        self.by_registration.values().map(|t| t.as_ref())
    }

    /// In registration order, from after the target registered at `after` on.
    pub fn listed(&self, after: Option<u64>) -> impl Iterator<Item = &Target> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, Excluded);
        self.by_registration
            .range((from, Unbounded))
            .map(|(_, t)| t.as_ref())
    }

    pub fn len(&self) -> usize {
        self.by_registration.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_registration.is_empty()
    }

    pub fn count(&self, status: TargetStatus) -> usize {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    /// The targets whose capabilities and boundaries cover `route`, in registration order
    /// (whatever their status: the rules judge that).
    pub fn serving<'a>(&'a self, route: &Route) -> impl Iterator<Item = &'a Target> + 'a {
        self.serving
            .get(route)
            .into_iter()
            .flat_map(|seqs| seqs.iter())
            .filter_map(|seq| self.by_registration.get(seq))
            .map(|t| t.as_ref())
    }

    /// Whether any target covers `route`.
    pub fn serve(&self, route: &Route) -> bool {
        self.serving.get(route).is_some_and(|s| !s.is_empty())
    }

    fn routes<'a>(
        capabilities: &'a [String],
        boundaries: &'a [String],
    ) -> impl Iterator<Item = Route> + 'a {
        capabilities
            .iter()
            .flat_map(move |c| boundaries.iter().map(move |b| (c.clone(), b.clone())))
    }

    fn add_routes(&mut self, t: &Target) {
        for route in Self::routes(&t.capabilities, &t.boundaries) {
            self.serving
                .entry(route)
                .or_default()
                .insert(t.registered_sequence);
        }
    }

    fn remove_routes(&mut self, capabilities: &[String], boundaries: &[String], seq: u64) {
        for route in Self::routes(capabilities, boundaries) {
            if let Some(seqs) = self.serving.get_mut(&route) {
                seqs.remove(&seq);
                if seqs.is_empty() {
                    self.serving.remove(&route);
                }
            }
        }
    }

    /// Targets whose periodic health check is due at `now_ms`.
    pub fn health_checks_due(&self, now_ms: u64) -> impl Iterator<Item = &Target> {
        self.health_due
            .range(..=(now_ms, u64::MAX))
            .filter_map(|(_, seq)| self.by_registration.get(seq))
            .map(|t| t.as_ref())
    }

    fn unindex(&mut self, t: &Target) {
        if let Some(due) = t.health_check_due_ms() {
            self.health_due.remove(&(due, t.registered_sequence));
        }
        if let Some(n) = self.by_status.get_mut(&t.status) {
            *n -= 1;
            if *n == 0 {
                self.by_status.remove(&t.status);
            }
        }
    }

    fn index(&mut self, t: &Target) {
        if let Some(due) = t.health_check_due_ms() {
            self.health_due.insert((due, t.registered_sequence));
        }
        *self.by_status.entry(t.status).or_default() += 1;
    }

    /// Changes a target, keeping the indexes in step (also for folds of other aggregates
    /// that change a target: spin-ups).
    pub(crate) fn update(&mut self, id: &str, change: impl FnOnce(&mut Target)) -> bool {
        let Some(seq) = self.ids.get(id).copied() else {
            return false;
        };
        let Some(mut entry) = self.by_registration.remove(&seq) else {
            return false;
        };
        self.unindex(&entry);
        let (capabilities, boundaries) = (entry.capabilities.clone(), entry.boundaries.clone());
        change(Arc::make_mut(&mut entry));
        // Most changes (status, spin-ups, health) leave what it serves alone.
        if entry.capabilities != capabilities || entry.boundaries != boundaries {
            self.remove_routes(&capabilities, &boundaries, seq);
            self.add_routes(&entry);
        }
        self.index(&entry);
        self.by_registration.insert(seq, entry);
        true
    }

    /// Events that do not fit the state (a second registration of an id, a change to a
    /// removed target) are ignored rather than trusted: the decisions that write events
    /// never produce them, and replay must not fail on history.
    pub(crate) fn apply(&mut self, sequence: u64, envelope: &Envelope) {
        let time = envelope.time_ms;
        let id = envelope.aggregate_id.as_str();
        match &envelope.event {
            Event::TargetRegistered(e) => {
                if self.ids.contains_key(id) || self.names.contains_key(&e.name) {
                    return;
                }
                let target = Target {
                    id: id.to_string(),
                    name: e.name.clone(),
                    description: e.description.clone(),
                    agent_type: e.agent_type.clone(),
                    capabilities: e.capabilities.clone(),
                    boundaries: e.boundaries.clone(),
                    config: e.config.clone(),
                    status: TargetStatus::Available,
                    current_agent_guid: None,
                    health_check: e.health_check.clone(),
                    last_health_check_ms: None,
                    health_status: HealthStatus::Unknown,
                    last_error: None,
                    disabled_reason: None,
                    registered_by: e.registered_by.clone(),
                    registered_by_actor: envelope.actor.clone(),
                    registered_at_ms: time,
                    updated_at_ms: time,
                    last_used_at_ms: None,
                    use_count: 0,
                    tags: e.tags.clone(),
                    max_agents: e.max_agents.unwrap_or(1),
                    spin_ups_in_flight: 0,
                    spin_ups_live: 0,
                    last_spin_up_failure_ms: None,
                    registered_sequence: sequence,
                };
                self.index(&target);
                self.add_routes(&target);
                self.ids.insert(id.to_string(), sequence);
                self.names.insert(e.name.clone(), sequence);
                self.by_registration.insert(sequence, Arc::new(target));
            }
            Event::TargetUpdated(e) => {
                self.update(id, |t| {
                    if let Some(v) = &e.description {
                        t.description = Some(v.clone());
                    }
                    if let Some(v) = &e.capabilities {
                        t.capabilities = v.clone();
                    }
                    if let Some(v) = &e.boundaries {
                        t.boundaries = v.clone();
                    }
                    if let Some(v) = &e.config {
                        t.config = v.clone();
                    }
                    if let Some(v) = &e.health_check {
                        t.health_check = Some(v.clone());
                    }
                    if let Some(v) = &e.tags {
                        t.tags = v.clone();
                    }
                    if let Some(v) = e.max_agents {
                        t.max_agents = v;
                    }
                    t.updated_at_ms = time;
                });
            }
            Event::TargetEnabled(_) => {
                self.update(id, |t| {
                    // Enabled again while an agent it started is there: in use.
                    t.status = if t.current_agent_guid.is_some() {
                        TargetStatus::InUse
                    } else {
                        TargetStatus::Available
                    };
                    t.last_error = None;
                    t.disabled_reason = None;
                    t.updated_at_ms = time;
                });
            }
            Event::TargetDisabled(e) => {
                self.update(id, |t| {
                    t.status = TargetStatus::Disabled;
                    t.last_error = None;
                    t.disabled_reason = e.reason.clone();
                    t.updated_at_ms = time;
                });
            }
            Event::TargetHealthChecked(e) => {
                self.update(id, |t| {
                    t.health_status = if e.healthy {
                        HealthStatus::Healthy
                    } else {
                        HealthStatus::Unhealthy
                    };
                    t.last_health_check_ms = Some(time);
                    t.last_error = if e.healthy { None } else { e.error.clone() };
                });
            }
            Event::TargetRemoved(_) => {
                let Some(seq) = self.ids.remove(id) else {
                    return;
                };
                if let Some(t) = self.by_registration.remove(&seq) {
                    self.unindex(&t);
                    self.remove_routes(&t.capabilities, &t.boundaries, seq);
                    self.names.remove(&t.name);
                }
            }
            // Only target events are routed here (by aggregate kind).
            _ => {}
        }
    }
}
