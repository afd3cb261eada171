//! Why an item goes, or would go, where it goes: every agent and target of its project,
//! eligible or not and for which reasons, the rule that chose, and whether a spin-up would
//! start. The same rules as routing and spin-ups ([`crate::routing`]), asked about one item.

use std::collections::BTreeMap;

use projections::{AgentStatus, HealthStatus, Project, TargetStatus, Work};

use crate::routing;
use crate::Settings;

/// Why an agent or a target cannot take the item (now).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    Offline,
    ShuttingDown,
    /// A usage limit paused it.
    Paused,
    /// The item's boundary (or its required agent type) does not allow this agent type.
    AgentTypeNotAllowed,
    CapabilityMissing,
    /// It may not see the item's boundary.
    BoundaryNotAllowed,
    /// At its maximum of concurrent items.
    Full,
    Disabled,
    Unhealthy,
    /// Its last spin-up failed less than the cooldown ago.
    CoolingDown,
    /// It runs its `maxAgents` already.
    AtMaxAgents,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Offline => "offline",
            Refusal::ShuttingDown => "shutting-down",
            Refusal::Paused => "paused",
            Refusal::AgentTypeNotAllowed => "agent-type-not-allowed",
            Refusal::CapabilityMissing => "capability-missing",
            Refusal::BoundaryNotAllowed => "boundary-not-allowed",
            Refusal::Full => "full",
            Refusal::Disabled => "disabled",
            Refusal::Unhealthy => "unhealthy",
            Refusal::CoolingDown => "cooling-down",
            Refusal::AtMaxAgents => "at-max-agents",
        }
    }
}

/// One agent or target, asked whether it could take the item.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub id: String,
    /// A target's name; an agent's handle or id.
    pub name: String,
    pub agent_type: String,
    /// Empty: it can.
    pub refusals: Vec<Refusal>,
}

impl Verdict {
    pub fn eligible(&self) -> bool {
        self.refusals.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    /// The routing rule in words, as recorded with an assignment.
    pub rule: String,
    pub agents: Vec<Verdict>,
    pub targets: Vec<Verdict>,
    /// The agent routing would give it to now.
    pub chosen_agent: Option<String>,
    /// Whether Weft would start an agent for it (no agent could take it, and a spin-up
    /// is in flight for it or a target can start one), and on which target.
    pub spin_up: bool,
    pub chosen_target: Option<String>,
}

pub fn explain(settings: &Settings, project: &Project, work: &Work, now_ms: u64) -> Explanation {
    let rule = settings.routing.rule_for(work);
    let agents = project
        .agents
        .iter()
        .map(|a| {
            let mut refusals = Vec::new();
            if a.status != AgentStatus::Online {
                refusals.push(Refusal::Offline);
            }
            if a.shutdown_requested.is_some() {
                refusals.push(Refusal::ShuttingDown);
            }
            if a.paused_until_ms.is_some() {
                refusals.push(Refusal::Paused);
            }
            if !rule.allows(&a.agent_type) {
                refusals.push(Refusal::AgentTypeNotAllowed);
            }
            if !a.capabilities.contains(&work.capability) {
                refusals.push(Refusal::CapabilityMissing);
            }
            if !a.boundaries.contains(&work.boundary) {
                refusals.push(Refusal::BoundaryNotAllowed);
            }
            if a.active.len() as u32 >= a.max_concurrent_tasks && !a.active.contains(&work.id) {
                refusals.push(Refusal::Full);
            }
            Verdict {
                id: a.id.clone(),
                name: a.handle.clone().unwrap_or_else(|| a.id.clone()),
                agent_type: a.agent_type.clone(),
                refusals,
            }
        })
        .collect();
    let targets = project
        .targets
        .iter()
        .map(|t| {
            let mut refusals = Vec::new();
            if !rule.allows(&t.agent_type) {
                refusals.push(Refusal::AgentTypeNotAllowed);
            }
            if !t.capabilities.contains(&work.capability) {
                refusals.push(Refusal::CapabilityMissing);
            }
            if !t.boundaries.contains(&work.boundary) {
                refusals.push(Refusal::BoundaryNotAllowed);
            }
            if t.status == TargetStatus::Disabled {
                refusals.push(Refusal::Disabled);
            }
            if t.health_status == HealthStatus::Unhealthy {
                refusals.push(Refusal::Unhealthy);
            }
            if routing::cooling_down(t, &settings.spin_up, now_ms) {
                refusals.push(Refusal::CoolingDown);
            }
            if t.spin_ups_live >= t.max_agents {
                refusals.push(Refusal::AtMaxAgents);
            }
            Verdict {
                id: t.id.clone(),
                name: t.name.clone(),
                agent_type: t.agent_type.clone(),
                refusals,
            }
        })
        .collect();
    let chosen_agent = routing::route(&settings.routing, project, work)
        .ok()
        .map(|(agent, _)| agent.id.clone());
    let spin_up =
        routing::will_spin_up(&settings.routing, &settings.spin_up, project, work, now_ms);
    let chosen_target = spin_up
        .then(|| {
            routing::choose_target(
                &settings.routing,
                &settings.spin_up,
                project,
                work,
                now_ms,
                &BTreeMap::new(),
            )
        })
        .flatten()
        .map(|t| t.id.clone());
    Explanation {
        rule: rule.text,
        agents,
        targets,
        chosen_agent,
        spin_up,
        chosen_target,
    }
}

/// [`explain`] for an item not submitted: validated as a submission would be, folded
/// into a copy of the project (cheap: its collections are persistent), nothing recorded.
pub fn explain_submission(
    settings: &Settings,
    project: &Project,
    submission: &crate::work::Submission,
    now_ms: u64,
) -> Result<Explanation, crate::Rejection> {
    let id = "dry-run";
    let submitted = crate::work::validate_submission(id, submission, &settings.retry)?;
    let mut scratch = project.clone();
    scratch.apply(
        u64::MAX,
        &events::Envelope {
            id: id.into(),
            project: String::new(),
            aggregate: events::AggregateKind::Work,
            aggregate_id: id.into(),
            schema_version: events::SCHEMA_VERSION,
            time_ms: now_ms,
            actor: events::SYSTEM_ACTOR.into(),
            correlation_id: None,
            causation_id: None,
            event: events::Event::WorkSubmitted(submitted),
        },
    );
    let work = scratch
        .work
        .get(id)
        .ok_or_else(|| crate::Rejection::NotFound("the dry run made no item".into()))?;
    Ok(explain(settings, &scratch, work, now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::World;

    #[test]
    fn every_agent_is_named_with_why_it_cannot_and_the_chosen_one_has_no_reason() {
        let mut w = World::default();
        w.agent("copilot", "copilot-cli", &["corporate"], 1);
        w.agent("claude", "claude-code", &["personal"], 1);
        w.agent("busy", "copilot-cli", &["corporate"], 1);
        w.submit("first", "corporate", 9);
        w.submit("job", "corporate", 5);
        // `first` (higher priority) takes one copilot slot.
        let assigned = w.assign_all();
        assert_eq!(assigned.len(), 2, "{assigned:?}");
        w.submit("third", "corporate", 1);
        let e = explain(&w.settings, w.project(), w.work("third"), w.now_ms);
        let reasons = |id: &str| {
            e.agents
                .iter()
                .find(|v| v.id == id)
                .map(|v| v.refusals.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            reasons("claude"),
            [Refusal::AgentTypeNotAllowed, Refusal::BoundaryNotAllowed],
            "corporate work is copilot-cli only, and claude may not see it"
        );
        assert_eq!(reasons("copilot"), [Refusal::Full]);
        assert_eq!(reasons("busy"), [Refusal::Full]);
        assert_eq!(e.chosen_agent, None);
        assert!(e.rule.contains("corporate"), "{}", e.rule);
        assert!(!e.spin_up, "no target could start one");

        // The same question before submitting: nothing is recorded.
        let submission = crate::work::Submission {
            description: "dry".into(),
            capability: "rust".into(),
            boundary: "personal".into(),
            ..Default::default()
        };
        let before = w.project().clone();
        let dry = explain_submission(&w.settings, w.project(), &submission, w.now_ms).unwrap();
        assert_eq!(dry.chosen_agent.as_deref(), Some("claude"));
        assert_eq!(w.project(), &before, "a dry run changes nothing");
    }
}
