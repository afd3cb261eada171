//! Work items and agents of one project. They are folded together because events of one
//! aggregate update the other's read model: `work.assigned` takes a slot of the agent,
//! `agent.offline` frees the leases the agent held.

use std::collections::{BTreeMap, BTreeSet};

use events::work::{AfterFailure, RoutingReason};
use events::{Envelope, Event};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkStatus {
    Pending,
    Assigned,
    InProgress,
    Completed,
    Failed,
    Cancelled,
    DeadLettered,
}

impl WorkStatus {
    pub const ALL: [WorkStatus; 7] = [
        WorkStatus::Pending,
        WorkStatus::Assigned,
        WorkStatus::InProgress,
        WorkStatus::Completed,
        WorkStatus::Failed,
        WorkStatus::Cancelled,
        WorkStatus::DeadLettered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkStatus::Pending => "pending",
            WorkStatus::Assigned => "assigned",
            WorkStatus::InProgress => "in-progress",
            WorkStatus::Completed => "completed",
            WorkStatus::Failed => "failed",
            WorkStatus::Cancelled => "cancelled",
            WorkStatus::DeadLettered => "dead-lettered",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Held by an agent under a lease.
    pub fn is_leased(self) -> bool {
        matches!(self, WorkStatus::Assigned | WorkStatus::InProgress)
    }

    pub fn is_final(self) -> bool {
        matches!(self, WorkStatus::Completed | WorkStatus::Cancelled)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkResult {
    pub summary: String,
    pub output: Option<String>,
    pub artifacts: Vec<String>,
    pub completed_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkError {
    pub message: String,
    pub recoverable: bool,
    pub occurred_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Work {
    pub id: String,
    pub task_id: String,
    pub description: String,
    pub capability: String,
    pub boundary: String,
    pub priority: u8,
    pub preferred_agent_type: Option<String>,
    pub required_agent_type: Option<String>,
    pub deadline: Option<String>,
    pub context_data: Option<String>,
    pub max_attempts: u32,
    pub idempotency_key: Option<String>,
    pub status: WorkStatus,
    pub submitted_by: String,
    pub offered_at_ms: u64,
    pub attempts: u32,
    pub assigned_to: Option<String>,
    pub lease_id: Option<String>,
    pub assigned_at_ms: Option<u64>,
    pub started_at_ms: Option<u64>,
    pub progress: Option<u8>,
    pub progress_message: Option<String>,
    pub routing: Option<RoutingReason>,
    /// Not to be assigned before this time (backoff after a failed attempt).
    pub not_before_ms: Option<u64>,
    pub result: Option<WorkResult>,
    pub error: Option<WorkError>,
    pub cancelled_at_ms: Option<u64>,
    pub updated_at_ms: u64,
    /// Stream sequence of `work.submitted`: FIFO order within a priority.
    pub submitted_sequence: u64,
    /// Stream sequence of the last event on the item's own subject: what an append to it
    /// must expect. Events of other aggregates that touch the item leave it alone.
    pub version: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentStatus {
    Online,
    Offline,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub id: String,
    pub agent_type: String,
    pub capabilities: Vec<String>,
    pub boundaries: Vec<String>,
    pub max_concurrent_tasks: u32,
    pub idle_timeout_ms: Option<u64>,
    pub hostname: Option<String>,
    pub handle: Option<String>,
    pub spin_up_id: Option<String>,
    pub target_id: Option<String>,
    pub status: AgentStatus,
    pub offline_reason: Option<String>,
    /// Work items it holds a lease on.
    pub active: BTreeSet<String>,
    pub shutdown_requested: Option<String>,
    pub shutdown_requested_at_ms: Option<u64>,
    pub registered_at_ms: u64,
    /// Its latest registration (a rejoin after going offline included): liveness is never
    /// measured from before it.
    pub last_registered_at_ms: u64,
    /// Last time it received or finished work (idle detection starts here).
    pub last_activity_ms: u64,
    pub completed_count: u64,
    pub failed_count: u64,
    pub version: u64,
}

impl Agent {
    pub fn free_slots(&self) -> u32 {
        self.max_concurrent_tasks
            .saturating_sub(self.active.len() as u32)
    }

    pub fn is_available(&self) -> bool {
        self.status == AgentStatus::Online
            && self.shutdown_requested.is_none()
            && self.free_slots() > 0
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkItems {
    items: BTreeMap<String, Work>,
    /// Items that may be assigned: (priority descending, submission order).
    queue: BTreeSet<(std::cmp::Reverse<u8>, u64, String)>,
}

impl WorkItems {
    pub fn get(&self, id: &str) -> Option<&Work> {
        self.items.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Work> {
        self.items.values()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Pending items, highest priority first, then oldest first.
    pub fn queue(&self) -> impl Iterator<Item = &Work> {
        self.queue
            .iter()
            .filter_map(|(_, _, id)| self.items.get(id))
    }

    fn set_status(&mut self, id: &str, status: WorkStatus) {
        let Some(w) = self.items.get_mut(id) else {
            return;
        };
        let key = (
            std::cmp::Reverse(w.priority),
            w.submitted_sequence,
            w.id.clone(),
        );
        w.status = status;
        if status == WorkStatus::Pending {
            self.queue.insert(key);
        } else {
            self.queue.remove(&key);
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Agents {
    agents: BTreeMap<String, Agent>,
}

impl Agents {
    pub fn get(&self, id: &str) -> Option<&Agent> {
        self.agents.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Agent> {
        self.agents.values()
    }

    pub fn len(&self) -> usize {
        self.agents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }
}

/// Ends the lease an item holds, then does what `then` says.
fn end_lease(work: &mut WorkItems, agents: &mut Agents, id: &str, then: &AfterFailure, time: u64) {
    let Some(w) = work.items.get_mut(id) else {
        return;
    };
    if let Some(agent) = w.assigned_to.take().and_then(|a| agents.agents.get_mut(&a)) {
        agent.active.remove(id);
        agent.last_activity_ms = time;
    }
    w.lease_id = None;
    w.updated_at_ms = time;
    let status = match then {
        AfterFailure::Retry { at_ms } => {
            w.not_before_ms = Some(*at_ms);
            WorkStatus::Pending
        }
        AfterFailure::DeadLettered => WorkStatus::DeadLettered,
        AfterFailure::Failed => WorkStatus::Failed,
    };
    work.set_status(id, status);
}

/// Whether `agent` holds the item's current lease `lease`.
fn holds(work: &WorkItems, id: &str, agent: &str, lease: &str) -> bool {
    work.items.get(id).is_some_and(|w| {
        w.status.is_leased()
            && w.lease_id.as_deref() == Some(lease)
            && w.assigned_to.as_deref() == Some(agent)
    })
}

pub(crate) fn apply(work: &mut WorkItems, agents: &mut Agents, sequence: u64, envelope: &Envelope) {
    let time = envelope.time_ms;
    let id = envelope.aggregate_id.as_str();
    match &envelope.event {
        Event::WorkSubmitted(e) => {
            if work.items.contains_key(id) {
                return;
            }
            work.items.insert(
                id.to_string(),
                Work {
                    id: id.to_string(),
                    task_id: e.task_id.clone(),
                    description: e.description.clone(),
                    capability: e.capability.clone(),
                    boundary: e.boundary.clone(),
                    priority: e.priority,
                    preferred_agent_type: e.preferred_agent_type.clone(),
                    required_agent_type: e.required_agent_type.clone(),
                    deadline: e.deadline.clone(),
                    context_data: e.context_data.clone(),
                    max_attempts: e.max_attempts,
                    idempotency_key: e.idempotency_key.clone(),
                    status: WorkStatus::Cancelled,
                    submitted_by: envelope.actor.clone(),
                    offered_at_ms: time,
                    attempts: 0,
                    assigned_to: None,
                    lease_id: None,
                    assigned_at_ms: None,
                    started_at_ms: None,
                    progress: None,
                    progress_message: None,
                    routing: None,
                    not_before_ms: None,
                    result: None,
                    error: None,
                    cancelled_at_ms: None,
                    updated_at_ms: time,
                    submitted_sequence: sequence,
                    version: sequence,
                },
            );
            work.set_status(id, WorkStatus::Pending);
        }
        Event::WorkAssigned(e) => {
            let assignable = work
                .items
                .get(id)
                .is_some_and(|w| w.status == WorkStatus::Pending)
                && agents.agents.contains_key(&e.agent_id);
            if !assignable {
                return;
            }
            if let Some(w) = work.items.get_mut(id) {
                w.assigned_to = Some(e.agent_id.clone());
                w.lease_id = Some(e.lease_id.clone());
                w.assigned_at_ms = Some(time);
                w.started_at_ms = None;
                w.progress = None;
                w.progress_message = None;
                w.attempts = e.attempt;
                w.routing = Some(e.reason.clone());
                w.not_before_ms = None;
                w.updated_at_ms = time;
                w.version = sequence;
            }
            work.set_status(id, WorkStatus::Assigned);
            if let Some(agent) = agents.agents.get_mut(&e.agent_id) {
                agent.active.insert(id.to_string());
                agent.last_activity_ms = time;
            }
        }
        Event::WorkStarted(e) => {
            if !holds(work, id, &e.agent_id, &e.lease_id) {
                return;
            }
            if let Some(w) = work.items.get_mut(id) {
                w.started_at_ms = Some(time);
                w.updated_at_ms = time;
                w.version = sequence;
            }
            work.set_status(id, WorkStatus::InProgress);
        }
        Event::WorkProgressed(e) => {
            if !holds(work, id, &e.agent_id, &e.lease_id) {
                return;
            }
            if let Some(w) = work.items.get_mut(id) {
                if e.progress.is_some() {
                    w.progress = e.progress;
                }
                w.progress_message = Some(e.message.clone());
                w.updated_at_ms = time;
                w.version = sequence;
            }
        }
        Event::WorkCompleted(e) => {
            if !holds(work, id, &e.agent_id, &e.lease_id) {
                return;
            }
            if let Some(agent) = agents.agents.get_mut(&e.agent_id) {
                agent.active.remove(id);
                agent.completed_count += 1;
                agent.last_activity_ms = time;
            }
            if let Some(w) = work.items.get_mut(id) {
                // The lease stays recorded: a repeated report from it is recognised as such.
                w.progress = Some(100);
                w.error = None;
                w.result = Some(crate::work::WorkResult {
                    summary: e.summary.clone(),
                    output: e.output.clone(),
                    artifacts: e.artifacts.clone(),
                    completed_at_ms: time,
                });
                w.updated_at_ms = time;
                w.version = sequence;
            }
            work.set_status(id, WorkStatus::Completed);
        }
        Event::WorkFailed(e) => {
            if !holds(work, id, &e.agent_id, &e.lease_id) {
                return;
            }
            if let Some(agent) = agents.agents.get_mut(&e.agent_id) {
                agent.failed_count += 1;
            }
            if let Some(w) = work.items.get_mut(id) {
                w.error = Some(WorkError {
                    message: e.error.clone(),
                    recoverable: e.recoverable,
                    occurred_at_ms: time,
                });
                w.version = sequence;
            }
            end_lease(work, agents, id, &e.then, time);
        }
        Event::WorkLeaseExpired(e) => {
            if !holds(work, id, &e.agent_id, &e.lease_id) {
                return;
            }
            if let Some(w) = work.items.get_mut(id) {
                w.error = Some(WorkError {
                    message: format!("lease expired: {}", e.reason),
                    recoverable: true,
                    occurred_at_ms: time,
                });
                w.version = sequence;
            }
            end_lease(work, agents, id, &e.then, time);
        }
        Event::WorkCancelled(_) => {
            let Some(w) = work.items.get(id) else { return };
            if w.status.is_final() {
                return;
            }
            if let Some(agent) = w
                .assigned_to
                .clone()
                .and_then(|a| agents.agents.get_mut(&a))
            {
                agent.active.remove(id);
                agent.last_activity_ms = time;
            }
            if let Some(w) = work.items.get_mut(id) {
                w.assigned_to = None;
                w.lease_id = None;
                w.cancelled_at_ms = Some(time);
                w.updated_at_ms = time;
                w.version = sequence;
            }
            work.set_status(id, WorkStatus::Cancelled);
        }
        Event::WorkRetried(_) => {
            let retryable = work
                .items
                .get(id)
                .is_some_and(|w| matches!(w.status, WorkStatus::DeadLettered | WorkStatus::Failed));
            if !retryable {
                return;
            }
            if let Some(w) = work.items.get_mut(id) {
                w.attempts = 0;
                w.not_before_ms = None;
                w.updated_at_ms = time;
                w.version = sequence;
            }
            work.set_status(id, WorkStatus::Pending);
        }
        Event::AgentRegistered(e) => {
            let agent = agents
                .agents
                .entry(id.to_string())
                .or_insert_with(|| Agent {
                    id: id.to_string(),
                    agent_type: String::new(),
                    capabilities: vec![],
                    boundaries: vec![],
                    max_concurrent_tasks: 1,
                    idle_timeout_ms: None,
                    hostname: None,
                    handle: None,
                    spin_up_id: None,
                    target_id: None,
                    status: AgentStatus::Online,
                    offline_reason: None,
                    active: BTreeSet::new(),
                    shutdown_requested: None,
                    shutdown_requested_at_ms: None,
                    registered_at_ms: time,
                    last_registered_at_ms: time,
                    last_activity_ms: time,
                    completed_count: 0,
                    failed_count: 0,
                    version: sequence,
                });
            // A re-registration (after a partition, say) brings it back with new settings;
            // the leases it had were freed when it went offline.
            agent.agent_type = e.agent_type.clone();
            agent.capabilities = e.capabilities.clone();
            agent.boundaries = e.boundaries.clone();
            agent.max_concurrent_tasks = e.max_concurrent_tasks;
            agent.idle_timeout_ms = e.idle_timeout_ms;
            agent.hostname = e.hostname.clone();
            agent.handle = e.handle.clone();
            agent.spin_up_id = e.spin_up_id.clone();
            agent.target_id = e.target_id.clone();
            agent.status = AgentStatus::Online;
            agent.offline_reason = None;
            agent.shutdown_requested = None;
            agent.shutdown_requested_at_ms = None;
            agent.last_registered_at_ms = time;
            agent.last_activity_ms = time;
            agent.version = sequence;
        }
        Event::AgentWentOffline(e) => {
            // Only events of earlier versions carry freed leases; newer ones end each lease
            // with a `work.lease-expired` of its own, committed before this event.
            for freed in &e.freed {
                if holds(work, &freed.work_id, id, &freed.lease_id) {
                    // No `version` change: this event is on the agent's subject, and an
                    // item's version is the sequence of the last event on its own subject.
                    if let Some(w) = work.items.get_mut(&freed.work_id) {
                        w.error = Some(WorkError {
                            message: format!("agent {id} went offline: {}", e.reason),
                            recoverable: true,
                            occurred_at_ms: time,
                        });
                    }
                    end_lease(work, agents, &freed.work_id, &freed.then, time);
                }
            }
            if let Some(agent) = agents.agents.get_mut(id) {
                agent.status = AgentStatus::Offline;
                agent.offline_reason = Some(e.reason.clone());
                agent.version = sequence;
            }
        }
        Event::AgentShutdownRequested(e) => {
            if let Some(agent) = agents.agents.get_mut(id) {
                agent.shutdown_requested = Some(e.reason.clone());
                agent.shutdown_requested_at_ms = Some(time);
                agent.version = sequence;
            }
        }
        // Only work and agent events are routed here (by aggregate kind).
        _ => {}
    }
}
