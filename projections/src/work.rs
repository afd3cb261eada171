//! The work items of one project, with the indexes that keep every command and every page
//! cheap whatever the backlog: list order, per status, pending by route, and assignments
//! waiting to be accepted.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::sync::Arc;

use events::work::{AfterFailure, RoutingReason};
use events::{Envelope, Event};
use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

use crate::agents::{Agent, AgentStatus, Agents};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
    #[serde(default)]
    pub progress_phase: Option<String>,
    /// When the current attempt's last `work.progressed` was recorded.
    #[serde(default)]
    pub progressed_at_ms: Option<u64>,
    pub routing: Option<RoutingReason>,
    /// Not to be assigned before this time (backoff after a failed attempt).
    pub not_before_ms: Option<u64>,
    pub result: Option<WorkResult>,
    pub error: Option<WorkError>,
    pub cancelled_at_ms: Option<u64>,
    pub updated_at_ms: u64,
    /// Stream sequence of `work.submitted`: the item's place in FIFO order, and its key.
    pub submitted_sequence: u64,
    /// The repository it is worked on in, as submitted.
    #[serde(default)]
    pub workspace: Option<events::work::WorkspaceSpec>,
    /// What its last attempt left in its workspace.
    #[serde(default)]
    pub workspace_outcome: Option<events::work::WorkspaceOutcome>,
    /// What its attempts cost, as their agents' CLIs reported it (one entry an attempt
    /// that reported any).
    #[serde(default)]
    pub usage: Vec<AttemptUsage>,
    /// The most one attempt may cost.
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
    #[serde(default)]
    pub resume_session: bool,
    /// The last time a usage limit sent it back to the queue.
    #[serde(default)]
    pub parked: Option<Parked>,
}

/// What one attempt cost, by whom and when it ended (for the cost ledger).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptUsage {
    pub agent_id: String,
    pub at_ms: u64,
    pub usage: events::work::Usage,
}

/// An attempt a usage limit stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Parked {
    pub reason: String,
    pub until_ms: Option<u64>,
    pub at_ms: u64,
}

impl Work {
    /// Where the item stands in list and queue order: priority first, then age.
    pub fn order(&self) -> OrderKey {
        (Reverse(self.priority), self.submitted_sequence)
    }

    pub fn route(&self) -> Route {
        (self.capability.clone(), self.boundary.clone())
    }

    /// The CLI session to resume when `agent` takes the item again: the session of the
    /// last attempt that agent reported one for, when the item asks for it.
    pub fn session_to_resume(&self, agent: &str) -> Option<String> {
        if !self.resume_session {
            return None;
        }
        self.usage
            .iter()
            .rev()
            .filter(|a| a.agent_id == agent)
            .find_map(|a| a.usage.session_id.clone())
    }

    /// What all its attempts cost together (see [`events::work::Usage::add`]); `None`
    /// when no attempt reported any.
    pub fn usage_total(&self) -> Option<events::work::Usage> {
        let mut usages = self.usage.iter().map(|a| &a.usage);
        let mut total = usages.next()?.clone();
        usages.for_each(|u| total.add(u));
        Some(total)
    }
}

/// List and queue order: highest priority first, then oldest first.
pub type OrderKey = (Reverse<u8>, u64);

/// What an item needs of an agent: (capability, boundary).
pub type Route = (String, String);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkItems {
    /// By `submitted_sequence`.
    items: OrdMap<u64, Arc<Work>>,
    ids: OrdMap<String, u64>,
    /// Every item, in list order.
    all: OrdSet<OrderKey>,
    by_status: OrdMap<WorkStatus, OrdSet<OrderKey>>,
    /// Pending items by what they need, each bucket in queue order.
    pending: OrdMap<Route, OrdSet<OrderKey>>,
    /// Assigned (not yet accepted) items, by when they were assigned.
    awaiting_accept: OrdSet<(u64, u64)>,
}

impl WorkItems {
    pub fn get(&self, id: &str) -> Option<&Work> {
        self.ids.get(id).and_then(|seq| self.by_sequence(*seq))
    }

    fn by_sequence(&self, seq: u64) -> Option<&Work> {
        self.items.get(&seq).map(|w| w.as_ref())
    }

    fn at(&self, key: &OrderKey) -> Option<&Work> {
        self.by_sequence(key.1)
    }

    /// Every item, in submission order.
    pub fn iter(&self) -> impl Iterator<Item = &Work> {
        self.items.values().map(|w| w.as_ref())
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// How many items have `status`.
    pub fn count(&self, status: WorkStatus) -> usize {
        self.by_status.get(&status).map_or(0, OrdSet::len)
    }

    /// Items of `status` (all, when `None`) in list order, from `after` (exclusive) on.
    pub fn listed(
        &self,
        status: Option<WorkStatus>,
        after: Option<OrderKey>,
    ) -> Box<dyn Iterator<Item = &Work> + '_> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, Excluded);
        let set = match status {
            Some(s) => match self.by_status.get(&s) {
                Some(set) => set,
                None => return Box::new(std::iter::empty()),
            },
            None => &self.all,
        };
        Box::new(set.range((from, Unbounded)).filter_map(|k| self.at(k)))
    }

    /// Pending items, highest priority first, then oldest first.
    pub fn queue(&self) -> impl Iterator<Item = &Work> {
        self.listed(Some(WorkStatus::Pending), None)
    }

    /// The routes that have pending items, and their items in queue order.
    pub fn pending_by_route(&self) -> impl Iterator<Item = (&Route, impl Iterator<Item = &Work>)> {
        self.pending
            .iter()
            .map(|(route, set)| (route, set.iter().filter_map(|k| self.at(k))))
    }

    /// Assigned items whose assignment is older than `before_ms`, oldest first.
    pub fn assigned_before(&self, before_ms: u64) -> impl Iterator<Item = &Work> {
        self.awaiting_accept
            .range(..(before_ms, 0))
            .filter_map(|(_, seq)| self.by_sequence(*seq))
    }

    /// Removes an item's entries from the indexes that depend on its state (its order and
    /// route never change).
    fn unindex(&mut self, w: &Work, status: WorkStatus, assigned_at_ms: Option<u64>) {
        let key = w.order();
        if let Some(set) = self.by_status.get_mut(&status) {
            set.remove(&key);
        }
        if status == WorkStatus::Pending {
            let route = w.route();
            if let Some(bucket) = self.pending.get_mut(&route) {
                bucket.remove(&key);
                if bucket.is_empty() {
                    self.pending.remove(&route);
                }
            }
        }
        if status == WorkStatus::Assigned {
            if let Some(at) = assigned_at_ms {
                self.awaiting_accept.remove(&(at, w.submitted_sequence));
            }
        }
    }

    fn index(&mut self, w: &Work) {
        let key = w.order();
        self.by_status.entry(w.status).or_default().insert(key);
        if w.status == WorkStatus::Pending {
            self.pending.entry(w.route()).or_default().insert(key);
        }
        if w.status == WorkStatus::Assigned {
            if let Some(at) = w.assigned_at_ms {
                self.awaiting_accept.insert((at, w.submitted_sequence));
            }
        }
    }

    pub(crate) fn insert(&mut self, w: Work) {
        self.all.insert(w.order());
        self.index(&w);
        self.ids.insert(w.id.clone(), w.submitted_sequence);
        self.items.insert(w.submitted_sequence, Arc::new(w));
    }

    /// Changes one item, keeping every index in step. `false` when there is no such item.
    pub(crate) fn update(&mut self, id: &str, change: impl FnOnce(&mut Work)) -> bool {
        let Some(seq) = self.ids.get(id).copied() else {
            return false;
        };
        let Some(mut entry) = self.items.remove(&seq) else {
            return false;
        };
        let (status, assigned_at_ms) = (entry.status, entry.assigned_at_ms);
        // Copies the item only if an earlier version of the state still shares it.
        change(Arc::make_mut(&mut entry));
        self.unindex(&entry, status, assigned_at_ms);
        self.index(&entry);
        self.items.insert(seq, entry);
        true
    }
}

/// Ends the lease an item holds, then does what `then` says.
fn end_lease(work: &mut WorkItems, agents: &mut Agents, id: &str, then: &AfterFailure, time: u64) {
    let mut holder = None;
    work.update(id, |w| {
        holder = w.assigned_to.take();
        w.lease_id = None;
        w.updated_at_ms = time;
        w.status = match then {
            AfterFailure::Retry { at_ms } => {
                w.not_before_ms = Some(*at_ms);
                WorkStatus::Pending
            }
            AfterFailure::DeadLettered => WorkStatus::DeadLettered,
            AfterFailure::Failed => WorkStatus::Failed,
        };
    });
    if let Some(agent) = holder {
        agents.update(&agent, |a| {
            a.active.remove(id);
            a.last_activity_ms = time;
        });
    }
}

/// Records what an attempt left: its workspace's outcome and what its CLI reported it cost.
fn left_by(
    w: &mut Work,
    agent: &str,
    time: u64,
    workspace: &Option<events::work::WorkspaceOutcome>,
    usage: &Option<events::work::Usage>,
) {
    if workspace.is_some() {
        w.workspace_outcome = workspace.clone();
    }
    w.usage.extend(usage.clone().map(|usage| AttemptUsage {
        agent_id: agent.to_string(),
        at_ms: time,
        usage,
    }));
}

/// Whether `agent` holds the item's current lease `lease`.
fn holds(work: &WorkItems, id: &str, agent: &str, lease: &str) -> bool {
    work.get(id).is_some_and(|w| {
        w.status.is_leased()
            && w.lease_id.as_deref() == Some(lease)
            && w.assigned_to.as_deref() == Some(agent)
    })
}

/// Folds work and agent events. They are folded together because events of one aggregate
/// change the other's read model: `work.assigned` takes a slot of the agent; a lease that
/// ends frees one. Events that do not fit the state are ignored, the same live and in a
/// replay.
pub(crate) fn apply(work: &mut WorkItems, agents: &mut Agents, sequence: u64, envelope: &Envelope) {
    let time = envelope.time_ms;
    let id = envelope.aggregate_id.as_str();
    match &envelope.event {
        Event::WorkSubmitted(e) => {
            if work.get(id).is_some() {
                return;
            }
            work.insert(Work {
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
                status: WorkStatus::Pending,
                submitted_by: envelope.actor.clone(),
                offered_at_ms: time,
                attempts: 0,
                assigned_to: None,
                lease_id: None,
                assigned_at_ms: None,
                started_at_ms: None,
                progress: None,
                progress_message: None,
                progress_phase: None,
                progressed_at_ms: None,
                routing: None,
                not_before_ms: None,
                result: None,
                error: None,
                cancelled_at_ms: None,
                updated_at_ms: time,
                submitted_sequence: sequence,
                workspace: e.workspace.clone(),
                workspace_outcome: None,
                usage: Vec::new(),
                parked: None,
                max_cost_usd: e.max_cost_usd,
                resume_session: e.resume_session,
            });
        }
        Event::WorkAssigned(e) => {
            let assignable = work
                .get(id)
                .is_some_and(|w| w.status == WorkStatus::Pending)
                && agents.get(&e.agent_id).is_some();
            if !assignable {
                return;
            }
            work.update(id, |w| {
                w.status = WorkStatus::Assigned;
                w.assigned_to = Some(e.agent_id.clone());
                w.lease_id = Some(e.lease_id.clone());
                w.assigned_at_ms = Some(time);
                w.started_at_ms = None;
                w.progress = None;
                w.progress_message = None;
                w.progress_phase = None;
                w.progressed_at_ms = None;
                w.attempts = e.attempt;
                w.routing = Some(e.reason.clone());
                w.not_before_ms = None;
                w.updated_at_ms = time;
            });
            agents.update(&e.agent_id, |a| {
                a.active.insert(id.to_string());
                a.last_activity_ms = time;
            });
        }
        Event::WorkStarted(e) => {
            if !holds(work, id, &e.agent_id, &e.lease_id) {
                return;
            }
            work.update(id, |w| {
                w.status = WorkStatus::InProgress;
                w.started_at_ms = Some(time);
                w.updated_at_ms = time;
            });
        }
        Event::WorkProgressed(e) => {
            if !holds(work, id, &e.agent_id, &e.lease_id) {
                return;
            }
            work.update(id, |w| {
                if e.progress.is_some() {
                    w.progress = e.progress;
                }
                w.progress_message = Some(e.message.clone());
                if e.phase.is_some() {
                    w.progress_phase = e.phase.clone();
                }
                w.progressed_at_ms = Some(time);
                w.updated_at_ms = time;
            });
        }
        Event::WorkCompleted(e) => {
            if !holds(work, id, &e.agent_id, &e.lease_id) {
                return;
            }
            agents.update(&e.agent_id, |a| {
                a.active.remove(id);
                a.completed_count += 1;
                a.last_activity_ms = time;
            });
            work.update(id, |w| {
                // The lease stays recorded: a repeated report from it is recognised as such.
                w.status = WorkStatus::Completed;
                w.progress = Some(100);
                w.error = None;
                w.result = Some(WorkResult {
                    summary: e.summary.clone(),
                    output: e.output.clone(),
                    artifacts: e.artifacts.clone(),
                    completed_at_ms: time,
                });
                left_by(w, &e.agent_id, time, &e.workspace, &e.usage);
                w.updated_at_ms = time;
            });
        }
        Event::WorkFailed(e) => {
            if !holds(work, id, &e.agent_id, &e.lease_id) {
                return;
            }
            agents.update(&e.agent_id, |a| a.failed_count += 1);
            work.update(id, |w| {
                w.error = Some(WorkError {
                    message: e.error.clone(),
                    recoverable: e.recoverable,
                    occurred_at_ms: time,
                });
                left_by(w, &e.agent_id, time, &e.workspace, &e.usage);
            });
            end_lease(work, agents, id, &e.then, time);
        }
        Event::WorkLeaseExpired(e) => {
            if !holds(work, id, &e.agent_id, &e.lease_id) {
                return;
            }
            work.update(id, |w| {
                w.error = Some(WorkError {
                    message: format!("lease expired: {}", e.reason),
                    recoverable: true,
                    occurred_at_ms: time,
                });
            });
            end_lease(work, agents, id, &e.then, time);
        }
        Event::WorkCancelled(_) => {
            let Some(holder) = work
                .get(id)
                .filter(|w| !w.status.is_final())
                .map(|w| w.assigned_to.clone())
            else {
                return;
            };
            if let Some(agent) = holder {
                agents.update(&agent, |a| {
                    a.active.remove(id);
                    a.last_activity_ms = time;
                });
            }
            work.update(id, |w| {
                w.status = WorkStatus::Cancelled;
                w.assigned_to = None;
                w.lease_id = None;
                w.cancelled_at_ms = Some(time);
                w.updated_at_ms = time;
            });
        }
        Event::WorkRetried(_) => {
            let retryable = work
                .get(id)
                .is_some_and(|w| matches!(w.status, WorkStatus::DeadLettered | WorkStatus::Failed));
            if !retryable {
                return;
            }
            work.update(id, |w| {
                w.status = WorkStatus::Pending;
                w.attempts = 0;
                w.not_before_ms = None;
                w.updated_at_ms = time;
            });
        }
        Event::AgentRegistered(e) => {
            let fresh = || {
                Some(Agent {
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
                    paused_until_ms: None,
                    paused_reason: None,
                })
            };
            // A re-registration (after a partition, say) brings it back with new settings;
            // the leases it had ended when it went offline.
            agents.upsert(id, fresh, |a| {
                a.agent_type = e.agent_type.clone();
                a.capabilities = e.capabilities.clone();
                a.boundaries = e.boundaries.clone();
                a.max_concurrent_tasks = e.max_concurrent_tasks;
                a.idle_timeout_ms = e.idle_timeout_ms;
                a.hostname = e.hostname.clone();
                a.handle = e.handle.clone();
                a.spin_up_id = e.spin_up_id.clone();
                a.target_id = e.target_id.clone();
                a.status = AgentStatus::Online;
                a.offline_reason = None;
                a.shutdown_requested = None;
                a.shutdown_requested_at_ms = None;
                a.last_registered_at_ms = time;
                a.last_activity_ms = time;
            });
        }
        Event::AgentWentOffline(e) => {
            // Only events of earlier versions carry freed leases; newer ones end each lease
            // with a `work.lease-expired` of its own, committed before this event.
            for freed in &e.freed {
                if holds(work, &freed.work_id, id, &freed.lease_id) {
                    work.update(&freed.work_id, |w| {
                        w.error = Some(WorkError {
                            message: format!("agent {id} went offline: {}", e.reason),
                            recoverable: true,
                            occurred_at_ms: time,
                        });
                    });
                    end_lease(work, agents, &freed.work_id, &freed.then, time);
                }
            }
            agents.update(id, |a| {
                a.status = AgentStatus::Offline;
                a.offline_reason = Some(e.reason.clone());
            });
        }
        Event::AgentShutdownRequested(e) => {
            agents.update(id, |a| {
                a.shutdown_requested = Some(e.reason.clone());
                a.shutdown_requested_at_ms = Some(time);
            });
        }
        Event::WorkParked(e) => {
            if !holds(work, id, &e.agent_id, &e.lease_id) {
                return;
            }
            work.update(id, |w| {
                // The attempt does not count: the limit was the account's, not the work's.
                w.attempts = w.attempts.saturating_sub(1);
                w.parked = Some(Parked {
                    reason: e.reason.clone(),
                    until_ms: e.until_ms,
                    at_ms: time,
                });
                left_by(w, &e.agent_id, time, &e.workspace, &e.usage);
            });
            end_lease(work, agents, id, &AfterFailure::Retry { at_ms: time }, time);
        }
        Event::AgentPaused(e) => {
            agents.update(id, |a| {
                a.paused_until_ms = Some(e.until_ms.unwrap_or(u64::MAX));
                a.paused_reason = Some(e.reason.clone());
            });
        }
        Event::AgentResumed(_) => {
            agents.update(id, |a| {
                a.paused_until_ms = None;
                a.paused_reason = None;
            });
        }
        // Only work and agent events are routed here (by aggregate kind).
        _ => {}
    }
}
