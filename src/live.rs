//! What the live view shows: our events in the original's 19 coordinator event types
//! (`work:submitted`, `spin-up:failed`, ...), their WebSocket topics and filters, and the
//! stats shapes. Pure: derived from the event log and the projected state.

use events::{Envelope, Event};
use projections::{Project, State, TargetStatus, WorkStatus};
use serde_json::{json, Map, Value};

use crate::time::rfc3339;

pub const TOPICS: [&str; 4] = ["work", "agents", "targets", "stats"];

fn agent_summary(project: Option<&Project>, id: &str) -> Value {
    let agent = project.and_then(|p| p.agents.get(id));
    let mut summary =
        json!({"guid": id, "agentType": agent.map_or("unknown", |a| a.agent_type.as_str())});
    if let Some(h) = agent.and_then(|a| a.hostname.clone()) {
        summary["hostname"] = h.into();
    }
    if let Some(h) = agent.and_then(|a| a.handle.clone()) {
        summary["handle"] = h.into();
    }
    summary
}

/// The original's event for one of ours, with its topic; `None` for events it has no
/// counterpart for. Every event also carries its log `sequence` (an extension).
pub fn coordinator_event(
    state: &State,
    sequence: u64,
    e: &Envelope,
) -> Option<(&'static str, Value)> {
    let p = state.project(&e.project);
    let id = e.aggregate_id.as_str();
    let work = p.and_then(|p| p.work.get(id));
    let task_id = work.map(|w| w.task_id.clone()).unwrap_or_default();
    let target = p.and_then(|p| p.targets.get(id));
    let target_name = target.map(|t| t.name.clone()).unwrap_or_default();
    let spin_up = p.and_then(|p| p.spin_ups.get(id));
    let (topic, kind, mut data) = match &e.event {
        Event::WorkSubmitted(s) => (
            "work",
            "work:submitted",
            json!({
                "workId": id, "taskId": s.task_id, "capability": s.capability, "boundary": s.boundary,
                "priority": s.priority, "description": s.description,
            }),
        ),
        Event::WorkAssigned(a) => (
            "work",
            "work:assigned",
            json!({
                "workId": id, "taskId": task_id, "assignedTo": a.agent_id, "assignedToAgent": agent_summary(p, &a.agent_id),
                "capability": work.map(|w| w.capability.clone()), "boundary": work.map(|w| w.boundary.clone()),
                "attempt": a.attempt, "routing": {"rule": a.reason.rule, "candidates": a.reason.candidates},
            }),
        ),
        Event::WorkStarted(s) => (
            "work",
            "work:started",
            json!({
                "workId": id, "taskId": task_id, "assignedTo": s.agent_id, "assignedToAgent": agent_summary(p, &s.agent_id),
            }),
        ),
        Event::WorkProgressed(s) => (
            "work",
            "work:progress",
            json!({
                "workId": id, "taskId": task_id, "assignedTo": s.agent_id, "assignedToAgent": agent_summary(p, &s.agent_id),
                "progress": s.progress, "message": s.message, "phase": s.phase,
            }),
        ),
        Event::WorkCompleted(s) => (
            "work",
            "work:completed",
            json!({
                "workId": id, "taskId": task_id, "assignedTo": s.agent_id, "assignedToAgent": agent_summary(p, &s.agent_id),
                "summary": s.summary,
            }),
        ),
        Event::WorkFailed(s) => (
            "work",
            "work:failed",
            json!({
                "workId": id, "taskId": task_id, "assignedTo": s.agent_id, "assignedToAgent": agent_summary(p, &s.agent_id),
                "errorMessage": s.error, "recoverable": s.recoverable,
            }),
        ),
        Event::WorkLeaseExpired(s) => (
            "work",
            "work:failed",
            json!({
                "workId": id, "taskId": task_id, "assignedTo": s.agent_id, "errorMessage": format!("lease expired: {}", s.reason),
                "recoverable": true,
            }),
        ),
        Event::WorkCancelled(_) => (
            "work",
            "work:cancelled",
            json!({
                "workId": id, "taskId": task_id, "assignedTo": work.and_then(|w| w.assigned_to.clone()),
            }),
        ),
        Event::AgentRegistered(r) => (
            "agents",
            "agent:registered",
            json!({
                "agent": agent_summary(p, id), "capabilities": r.capabilities, "boundaries": r.boundaries, "status": "online",
            }),
        ),
        Event::AgentWentOffline(o) => (
            "agents",
            "agent:updated",
            json!({
                "agent": agent_summary(p, id), "previousStatus": "online", "newStatus": "offline", "currentTaskCount": 0,
                "reason": o.reason,
            }),
        ),
        Event::BudgetSet(b) => (
            "work",
            "budget:updated",
            json!({"maxCostUsdPerDay": b.max_cost_usd_per_day, "warnAtFraction": b.warn_at_fraction}),
        ),
        Event::BudgetWarned(b) => (
            "work",
            "budget:warned",
            json!({"day": b.day, "spentUsd": b.spent_usd, "maxCostUsdPerDay": b.max_cost_usd_per_day}),
        ),
        Event::WorkParked(s) => (
            "work",
            "work:parked",
            json!({
                "workId": id, "taskId": task_id, "assignedTo": s.agent_id, "reason": s.reason,
                "until": s.until_ms.map(rfc3339),
            }),
        ),
        Event::AgentPaused(s) => (
            "agents",
            "agent:updated",
            json!({
                "agent": agent_summary(p, id), "previousStatus": "online", "newStatus": "paused",
                "reason": s.reason, "pausedUntil": s.until_ms.map(rfc3339),
            }),
        ),
        Event::AgentResumed(s) => (
            "agents",
            "agent:updated",
            json!({
                "agent": agent_summary(p, id), "previousStatus": "paused", "newStatus": "online",
                "reason": s.reason,
            }),
        ),
        Event::AgentShutdownRequested(s) => (
            "agents",
            "agent:shutdown",
            json!({
                "agent": agent_summary(p, id), "reason": s.reason, "graceful": s.graceful,
            }),
        ),
        Event::TargetRegistered(r) => (
            "targets",
            "target:registered",
            json!({
                "targetId": id, "targetName": r.name, "agentType": r.agent_type, "capabilities": r.capabilities,
                "boundaries": r.boundaries, "mechanism": r.config.mechanism().as_str(),
            }),
        ),
        Event::TargetUpdated(_) | Event::TargetEnabled(_) => (
            "targets",
            "target:updated",
            json!({
                "targetId": id, "targetName": target_name, "newStatus": target.map(|t| t.status.as_str()),
            }),
        ),
        Event::TargetDisabled(d) => (
            "targets",
            "target:disabled",
            json!({
                "targetId": id, "targetName": target_name, "reason": d.reason,
            }),
        ),
        // The target is gone from the state by now; its name is in the log's history.
        Event::TargetRemoved(_) => ("targets", "target:removed", json!({"targetId": id})),
        Event::TargetHealthChecked(h) => (
            "targets",
            "target:health-changed",
            json!({
                "targetId": id, "targetName": target_name, "newHealth": if h.healthy { "healthy" } else { "unhealthy" },
                "error": h.error,
            }),
        ),
        Event::SpinUpTriggered(t) => (
            "targets",
            "spin-up:triggered",
            json!({
                "spinUpId": id, "targetId": t.target_id, "targetName": t.target_name, "targetAgentType": t.agent_type,
                "capability": t.capability, "boundary": t.boundary, "workId": t.work_id,
            }),
        ),
        Event::SpinUpStarted(_) => (
            "targets",
            "spin-up:started",
            json!({
                "spinUpId": id, "targetId": spin_up.map(|s| s.target_id.clone()), "targetName": spin_up.map(|s| s.target_name.clone()),
                "agentType": spin_up.map(|s| s.agent_type.clone()), "capability": spin_up.and_then(|s| s.capability.clone()),
                "workId": spin_up.and_then(|s| s.work_id.clone()),
            }),
        ),
        Event::SpinUpCompleted(c) => (
            "targets",
            "spin-up:completed",
            json!({
                "spinUpId": id, "targetId": spin_up.map(|s| s.target_id.clone()), "targetName": spin_up.map(|s| s.target_name.clone()),
                "agentType": spin_up.map(|s| s.agent_type.clone()), "agentGuid": c.agent_id, "durationMs": c.duration_ms,
            }),
        ),
        Event::SpinUpFailed(f) => (
            "targets",
            "spin-up:failed",
            json!({
                "spinUpId": id, "targetId": spin_up.map(|s| s.target_id.clone()), "targetName": spin_up.map(|s| s.target_name.clone()),
                "agentType": spin_up.map(|s| s.agent_type.clone()), "errorMessage": f.error,
                "workId": spin_up.and_then(|s| s.work_id.clone()),
            }),
        ),
        Event::WorkRetried(_)
        | Event::SpinUpStopped(_)
        | Event::WriterElected(_)
        // Who may do what is for admins to audit (`/api/events`), not for the live view.
        | Event::TokenCreated(_)
        | Event::TokenRevoked(_)
        | Event::CredentialIssued(_)
        | Event::CredentialRevoked(_) => return None,
    };
    if let Value::Object(fields) = &mut data {
        let mut full = Map::new();
        full.insert("type".into(), kind.into());
        full.insert("timestamp".into(), rfc3339(e.time_ms).into());
        full.insert("projectId".into(), e.project.clone().into());
        full.insert("sequence".into(), sequence.into());
        full.extend(
            std::mem::take(fields)
                .into_iter()
                .filter(|(_, v)| !v.is_null()),
        );
        data = Value::Object(full);
    }
    Some((topic, data))
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn contains(v: &Value, key: &str, wanted: &str) -> bool {
    v.get(key)
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(wanted)))
}

/// The original's filter rules (§5.5), plus `projectId` on every topic.
pub fn matches(topic: &str, filter: &Map<String, Value>, event: &Value) -> bool {
    let kind = text(event, "type").unwrap_or_default();
    filter.iter().all(|(key, wanted)| {
        let Some(wanted) = wanted.as_str() else {
            return true;
        };
        if key == "projectId" {
            return text(event, "projectId") == Some(wanted);
        }
        match (topic, key.as_str()) {
            ("work", "status") => {
                let status = match kind {
                    "work:submitted" => "pending",
                    "work:assigned" => "assigned",
                    "work:started" | "work:progress" => "in-progress",
                    "work:completed" => "completed",
                    "work:failed" => "failed",
                    "work:cancelled" => "cancelled",
                    _ => return false,
                };
                status == wanted
            }
            ("work", "capability" | "boundary" | "taskId" | "assignedTo") => {
                text(event, key) == Some(wanted)
            }
            ("agents", "agentType") => event["agent"]["agentType"].as_str() == Some(wanted),
            ("agents", "guid") => event["agent"]["guid"].as_str() == Some(wanted),
            ("agents", "status") => match kind {
                "agent:updated" => text(event, "newStatus") == Some(wanted),
                "agent:registered" => text(event, "status") == Some(wanted),
                "agent:shutdown" => wanted == "offline",
                _ => false,
            },
            ("agents", "capability") => contains(event, "capabilities", wanted),
            ("agents", "boundary") => contains(event, "boundaries", wanted),
            ("targets", "agentType" | "mechanism" | "targetId") => text(event, key) == Some(wanted),
            ("targets", "status") => match kind {
                "target:updated" => text(event, "newStatus") == Some(wanted),
                "target:registered" => wanted == "available",
                "target:disabled" => wanted == "disabled",
                _ => true,
            },
            ("targets", "capability") => contains(event, "capabilities", wanted),
            ("targets", "boundary") => contains(event, "boundaries", wanted),
            ("stats", _) => true,
            // A field this topic does not know never matches.
            _ => false,
        }
    })
}

/// Per-project numbers, as the WebSocket `stats` message and `/api/stats` count them.
#[derive(Default)]
pub struct ProjectCounts {
    pub agents_total: usize,
    pub agents_by_type: std::collections::BTreeMap<String, usize>,
    pub agents_by_status: std::collections::BTreeMap<String, usize>,
    pub pending: usize,
    pub active: usize,
    pub completed: usize,
    pub failed: usize,
    pub targets_total: usize,
    pub targets_available: usize,
    pub targets_in_use: usize,
    pub targets_disabled: usize,
    pub last_activity_ms: u64,
}

/// Counted correctly, unlike the original: every agent (not only those with capability
/// `general`), disabled targets too; failed includes dead-lettered and cancelled.
/// Read from the projections' counters: the same cost however much the project holds.
pub fn project_counts(p: &Project) -> ProjectCounts {
    let work = |statuses: &[WorkStatus]| statuses.iter().map(|s| p.work.count(*s)).sum();
    let collect = |counts: &mut dyn Iterator<Item = (&str, usize)>| {
        counts
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.to_string(), n))
            .collect()
    };
    ProjectCounts {
        agents_total: p.agents.len(),
        agents_by_type: collect(&mut p.agents.count_by_type()),
        agents_by_status: collect(&mut p.agents.count_by_shown_status()),
        pending: work(&[WorkStatus::Pending]),
        active: work(&[WorkStatus::Assigned, WorkStatus::InProgress]),
        completed: work(&[WorkStatus::Completed]),
        failed: work(&[
            WorkStatus::Failed,
            WorkStatus::Cancelled,
            WorkStatus::DeadLettered,
        ]),
        targets_total: p.targets.len(),
        targets_available: p.targets.count(TargetStatus::Available),
        targets_in_use: p.targets.count(TargetStatus::InUse),
        targets_disabled: p.targets.count(TargetStatus::Disabled),
        last_activity_ms: p.last_event_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_follow_the_original_rules() {
        let submitted = json!({"type": "work:submitted", "projectId": "p", "capability": "rust", "boundary": "personal"});
        let f = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert!(matches("work", &f(json!({})), &submitted));
        assert!(matches(
            "work",
            &f(json!({"status": "pending", "capability": "rust"})),
            &submitted
        ));
        assert!(!matches(
            "work",
            &f(json!({"status": "completed"})),
            &submitted
        ));
        assert!(
            !matches("work", &f(json!({"assignedTo": "x"})), &submitted),
            "missing fields never match"
        );
        assert!(!matches("work", &f(json!({"projectId": "q"})), &submitted));
        let shutdown =
            json!({"type": "agent:shutdown", "agent": {"guid": "g", "agentType": "claude-code"}});
        assert!(matches(
            "agents",
            &f(json!({"status": "offline", "guid": "g"})),
            &shutdown
        ));
        assert!(!matches(
            "agents",
            &f(json!({"status": "online"})),
            &shutdown
        ));
        let registered =
            json!({"type": "target:registered", "capabilities": ["rust"], "mechanism": "ssh"});
        assert!(matches(
            "targets",
            &f(json!({"status": "available", "capability": "rust", "mechanism": "ssh"})),
            &registered
        ));
        assert!(!matches(
            "targets",
            &f(json!({"status": "disabled"})),
            &registered
        ));
        assert!(
            !matches("targets", &f(json!({"taskId": "t"})), &registered),
            "a work filter never matches target events"
        );
    }
}
