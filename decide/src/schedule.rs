//! The scheduler's rules: given a project's state, what agents were last heard from, the
//! settings and the time, what is due now. The coordinator feeds these the state and the
//! clock and carries out what they return; nothing here waits or looks at a clock.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use events::work::RoutingReason;
use projections::{AgentStatus, OrderKey, Project, Route, SpinUpStatus, Work};

use crate::agent::AgentCommand;
use crate::routing;
use crate::spin_up::{ForWork, SpinUpCommand};
use crate::work::WorkCommand;
use crate::{Command, Settings};

/// The timers of the fleet, in milliseconds.
#[derive(Clone, Debug)]
pub struct Timing {
    /// How often agents heartbeat.
    pub heartbeat_interval_ms: u64,
    /// Silence after which an agent is offline and its leases end.
    pub agent_timeout_ms: u64,
    /// Time an agent has to accept an assignment.
    pub accept_timeout_ms: u64,
    /// Time a started agent has to register.
    pub spin_up_timeout_ms: u64,
    /// Idle time after which an agent is asked to leave (unless its own setting says otherwise).
    pub idle_timeout_ms: u64,
    /// Time an agent asked to leave has before what it runs on is stopped.
    pub scale_down_grace_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat_interval_ms: 5_000,
            agent_timeout_ms: 15_000,
            accept_timeout_ms: 30_000,
            spin_up_timeout_ms: 60_000,
            idle_timeout_ms: 300_000,
            scale_down_grace_ms: 30_000,
        }
    }
}

impl Timing {
    /// Settings under which one late heartbeat would mark a live agent offline are refused:
    /// the timeout must cover at least three heartbeat intervals.
    pub fn check(&self) -> Result<(), String> {
        if self.heartbeat_interval_ms == 0 {
            return Err("the heartbeat interval must be above 0".into());
        }
        if self.agent_timeout_ms < 3 * self.heartbeat_interval_ms {
            return Err(format!(
                "the agent timeout ({} ms) must be at least three heartbeat intervals ({} ms)",
                self.agent_timeout_ms,
                3 * self.heartbeat_interval_ms
            ));
        }
        Ok(())
    }
}

/// When agents were last heard from. Heartbeats are not events (they would flood the log),
/// so this is what one Weft instance saw.
#[derive(Clone, Debug, Default)]
pub struct Liveness {
    /// Agent id -> time of its last heartbeat or report, as seen by this instance.
    pub last_heard_ms: HashMap<String, u64>,
    /// Silence counts from no earlier than this: when this instance began to listen (its
    /// start, its reconnection to NATS, its takeover of the project), since it could not
    /// have heard anything before.
    pub listening_since_ms: u64,
}

impl Liveness {
    pub fn heard(&mut self, agent_id: &str, now_ms: u64) {
        self.last_heard_ms.insert(agent_id.to_string(), now_ms);
    }
}

/// What is due that is not only a decision: side effects with their record afterwards.
#[derive(Clone, Debug, PartialEq)]
pub enum Duty {
    /// Decide and record this command (and carry out what its events ask for).
    Decide(Box<Command>),
    /// Stop what a spin-up started (its agent left, or overstayed a shutdown request),
    /// then record that it was stopped.
    StopSpinUp { spin_up_id: String, reason: String },
    /// Run a target's health check, then record the outcome.
    CheckHealth { target_id: String },
}

/// Everything due in `project` at `now_ms`. `new_id` gives fresh ids (leases, spin-ups).
pub fn due(
    project: &Project,
    liveness: &Liveness,
    settings: &Settings,
    now_ms: u64,
    new_id: &mut dyn FnMut() -> String,
) -> Vec<Duty> {
    let mut duties = Vec::new();
    // At the day's budget, new work waits: nothing is assigned, no agent is started.
    let held = project.budget_reached(now_ms);
    let assigned = if held {
        Vec::new()
    } else {
        assignments(project, settings, now_ms, new_id)
    };
    let taken: Vec<String> = assigned
        .iter()
        .filter_map(|c| match c {
            WorkCommand::Assign { work_id, .. } => Some(work_id.clone()),
            _ => None,
        })
        .collect();
    duties.extend(
        assigned
            .into_iter()
            .map(|c| Duty::Decide(Box::new(c.into()))),
    );
    if !held {
        duties.extend(
            spin_ups_for_unserved_work(project, settings, now_ms, &taken, new_id)
                .into_iter()
                .map(|c| Duty::Decide(Box::new(c.into()))),
        );
    }
    if budget_warning_due(project, now_ms) {
        duties.push(Duty::Decide(Box::new(
            crate::BudgetCommand::Warn { now_ms }.into(),
        )));
    }
    duties.extend(
        silent_agents(project, liveness, &settings.timing, now_ms)
            .into_iter()
            .map(|c| Duty::Decide(Box::new(c.into()))),
    );
    duties.extend(
        unaccepted_assignments(project, &settings.timing, now_ms)
            .into_iter()
            .map(|c| Duty::Decide(Box::new(c.into()))),
    );
    duties.extend(
        overdue_spin_ups(project, &settings.timing, now_ms)
            .into_iter()
            .map(|c| Duty::Decide(Box::new(c.into()))),
    );
    duties.extend(
        idle_agents(project, &settings.timing, now_ms)
            .into_iter()
            .map(|c| Duty::Decide(Box::new(c.into()))),
    );
    duties.extend(
        limits_reset(project, now_ms)
            .into_iter()
            .map(|c| Duty::Decide(Box::new(c.into()))),
    );
    duties.extend(
        ended_spin_ups_credentials(project)
            .into_iter()
            .map(|c| Duty::Decide(Box::new(c.into()))),
    );
    duties.extend(spin_ups_to_stop(project, &settings.timing, now_ms));
    duties.extend(health_checks_due(project, now_ms));
    duties
}

/// How many items of one route are looked at per round when none of them can be served:
/// the rest wait for the next round (they are behind these in the queue anyway).
const LOOK_AHEAD: usize = 256;

/// Pending items of the routes that `include` selects, merged into queue order (priority
/// first, then age) across routes, each route bounded to [`LOOK_AHEAD`] items.
fn queue_across<'a>(
    project: &'a Project,
    include: impl Fn(&Route) -> bool,
) -> impl Iterator<Item = &'a Work> + 'a {
    let mut heads: BinaryHeap<Reverse<(OrderKey, usize)>> = BinaryHeap::new();
    let mut routes: Vec<Box<dyn Iterator<Item = &'a Work> + 'a>> = Vec::new();
    for (route, items) in project.work.pending_by_route() {
        if !include(route) {
            continue;
        }
        let mut items: Box<dyn Iterator<Item = &'a Work> + 'a> = Box::new(items.take(LOOK_AHEAD));
        if let Some(first) = items.next() {
            heads.push(Reverse((first.order(), routes.len())));
            routes.push(Box::new(std::iter::once(first).chain(items)));
        }
    }
    let mut peeked: Vec<Option<&'a Work>> = routes.iter_mut().map(|r| r.next()).collect();
    std::iter::from_fn(move || {
        let Reverse((_, i)) = heads.pop()?;
        let item = peeked[i].take()?;
        if let Some(next) = routes[i].next() {
            heads.push(Reverse((next.order(), i)));
            peeked[i] = Some(next);
        }
        Some(item)
    })
}

/// Pending, due items by priority then age, each to the best agent with room; a slot given
/// to one item is not given to the next. Only routes some agent has room for are looked at;
/// items no agent can take now are skipped, not waited on.
pub fn assignments(
    project: &Project,
    settings: &Settings,
    now_ms: u64,
    new_id: &mut dyn FnMut() -> String,
) -> Vec<WorkCommand> {
    let mut used: BTreeMap<String, u32> = BTreeMap::new();
    let mut out = Vec::new();
    let queue = queue_across(project, |route| project.agents.any_available_for(route));
    for work in queue.filter(|w| w.not_before_ms.is_none_or(|t| t <= now_ms)) {
        let (agents, rule) = routing::candidates(&settings.routing, project, work, &used);
        let Some(best) = agents.first() else { continue };
        *used.entry(best.id.clone()).or_default() += 1;
        out.push(WorkCommand::Assign {
            work_id: work.id.clone(),
            agent_id: best.id.clone(),
            lease_id: new_id(),
            reason: RoutingReason {
                rule: rule.text,
                candidates: agents.iter().map(|a| a.id.clone()).collect(),
            },
        });
    }
    out
}

/// One spin-up per item that no agent can take and no spin-up in flight covers, on the
/// best target that can start one; a target's room given to one item is not given twice.
/// Routes that no target serves at all are not looked at.
pub fn spin_ups_for_unserved_work(
    project: &Project,
    settings: &Settings,
    now_ms: u64,
    assigned: &[String],
    new_id: &mut dyn FnMut() -> String,
) -> Vec<SpinUpCommand> {
    let served = |route: &Route| project.targets.serve(route);
    let mut on_their_way = routing::in_flight_targets(project);
    let mut promised: BTreeMap<String, u32> = BTreeMap::new();
    let mut out = Vec::new();
    for work in queue_across(project, served) {
        if assigned.contains(&work.id) || work.not_before_ms.is_some_and(|t| t > now_ms) {
            continue;
        }
        if routing::route(&settings.routing, project, work).is_ok() {
            continue;
        }
        let rule = settings.routing.rule_for(work);
        // A spin-up in flight is one agent's worth for one item.
        if let Some(i) = on_their_way.iter().position(|t| rule.served_by(t, work)) {
            on_their_way.remove(i);
            continue;
        }
        let Some(target) = routing::choose_target(
            &settings.routing,
            &settings.spin_up,
            project,
            work,
            now_ms,
            &promised,
        ) else {
            continue;
        };
        *promised.entry(target.id.clone()).or_default() += 1;
        out.push(SpinUpCommand::Trigger {
            spin_up_id: new_id(),
            target: target.id.clone(),
            reason: "work-pending".into(),
            work: Some(ForWork {
                work_id: work.id.clone(),
                capability: work.capability.clone(),
                boundary: work.boundary.clone(),
            }),
        });
    }
    out
}

/// Online agents silent for longer than the agent timeout. Silence counts from the last
/// heartbeat this instance heard, but never from before the agent's latest registration or
/// before this instance began listening.
pub fn silent_agents(
    project: &Project,
    liveness: &Liveness,
    timing: &Timing,
    now_ms: u64,
) -> Vec<AgentCommand> {
    project
        .agents
        .iter()
        .filter(|a| a.status == AgentStatus::Online)
        .filter(|a| {
            let heard = liveness.last_heard_ms.get(&a.id).copied().unwrap_or(0);
            let since = heard
                .max(a.last_registered_at_ms)
                .max(liveness.listening_since_ms);
            now_ms.saturating_sub(since) > timing.agent_timeout_ms
        })
        .map(|a| AgentCommand::GoOffline {
            agent_id: a.id.clone(),
            reason: "heartbeat-missed".into(),
            now_ms,
        })
        .collect()
}

/// Assignments not accepted once their accept window has passed.
pub fn unaccepted_assignments(project: &Project, timing: &Timing, now_ms: u64) -> Vec<WorkCommand> {
    project
        .work
        .assigned_before(now_ms.saturating_sub(timing.accept_timeout_ms))
        .filter_map(|w| {
            Some(WorkCommand::ExpireLease {
                work_id: w.id.clone(),
                lease_id: w.lease_id.clone()?,
                reason: "not accepted in time".into(),
                now_ms,
            })
        })
        .collect()
}

/// Spin-ups whose agent has not registered within the spin-up timeout failed; the
/// coordinator then stops what the mechanism started, so the next target can be tried.
pub fn overdue_spin_ups(project: &Project, timing: &Timing, now_ms: u64) -> Vec<SpinUpCommand> {
    project
        .spin_ups
        .in_flight()
        .take_while(|s| now_ms > s.triggered_at_ms + timing.spin_up_timeout_ms)
        .map(|s| SpinUpCommand::Fail {
            spin_up_id: s.id.clone(),
            stage: "registration".into(),
            error: format!(
                "no agent registered within {} s",
                timing.spin_up_timeout_ms / 1000
            ),
        })
        .collect()
}

/// Whether the day's reported cost reached the budget's warning threshold and no warning
/// was recorded today.
pub fn budget_warning_due(project: &Project, now_ms: u64) -> bool {
    project.budget.as_ref().is_some_and(|b| {
        project.spent_on(now_ms) >= b.max_cost_usd_per_day * b.warn_at_fraction
            && b.warned_day.as_deref() != Some(events::time::day(now_ms).as_str())
    })
}

/// Agents paused by a usage limit whose reset time has come are resumed (a pause with no
/// reset time waits for a person).
pub fn limits_reset(project: &Project, now_ms: u64) -> Vec<AgentCommand> {
    project
        .agents
        .iter()
        .filter(|a| a.paused_until_ms.is_some_and(|until| until <= now_ms))
        .map(|a| AgentCommand::Resume {
            agent_id: a.id.clone(),
            reason: "limit-reset".into(),
        })
        .collect()
}

/// Agents without work for their idle timeout are asked to leave; an agent holding a
/// lease never is, nor one whose idle timeout is 0.
pub fn idle_agents(project: &Project, timing: &Timing, now_ms: u64) -> Vec<AgentCommand> {
    project
        .agents
        .iter()
        .filter(|a| {
            a.status == AgentStatus::Online && a.active.is_empty() && a.shutdown_requested.is_none()
        })
        .filter(|a| {
            let timeout = a.idle_timeout_ms.unwrap_or(timing.idle_timeout_ms);
            timeout > 0 && now_ms > a.last_activity_ms + timeout
        })
        .map(|a| AgentCommand::RequestShutdown {
            agent_id: a.id.clone(),
            reason: "idle-timeout".into(),
            graceful: true,
        })
        .collect()
}

/// Spin-ups whose agent has gone offline, or has not left within the grace period after a
/// shutdown request: what they started is to be stopped.
pub fn spin_ups_to_stop(project: &Project, timing: &Timing, now_ms: u64) -> Vec<Duty> {
    project
        .spin_ups
        .linked()
        .filter_map(|s| {
            let agent = project.agents.get(s.agent_id.as_deref()?)?;
            let reason = if agent.status == AgentStatus::Offline {
                "agent offline"
            } else if agent
                .shutdown_requested_at_ms
                .is_some_and(|t| now_ms > t + timing.scale_down_grace_ms)
            {
                "shutdown grace period over"
            } else {
                return None;
            };
            Some(Duty::StopSpinUp {
                spin_up_id: s.id.clone(),
                reason: reason.into(),
            })
        })
        .collect()
}

/// The NATS credentials issued for a spin-up's agent, once that spin-up failed or what it
/// started was stopped: nobody is to log in with them again (nats-server disconnects
/// whoever still does).
pub fn ended_spin_ups_credentials(project: &Project) -> Vec<crate::AccessCommand> {
    project
        .credentials
        .valid()
        .filter(|c| {
            c.spin_up_id
                .as_deref()
                .and_then(|id| project.spin_ups.get(id))
                .is_some_and(|s| matches!(s.status, SpinUpStatus::Failed | SpinUpStatus::Stopped))
        })
        .map(|c| crate::AccessCommand::RevokeCredential {
            id: c.id.clone(),
            reason: Some("its spin-up ended".into()),
        })
        .collect()
}

/// Targets with health checks on whose interval has passed since the last check.
pub fn health_checks_due(project: &Project, now_ms: u64) -> Vec<Duty> {
    project
        .targets
        .health_checks_due(now_ms)
        .map(|t| Duty::CheckHealth {
            target_id: t.id.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
