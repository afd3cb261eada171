//! Routing as policy data: which agents and which targets may take an item, in which order,
//! and why. Whatever the policy says, an agent only ever gets work whose boundary it lists
//! and whose capability it has; corporate work never lands elsewhere.

use std::collections::BTreeMap;

use events::work::RoutingReason;
use projections::{Agent, AgentStatus, HealthStatus, Project, Target, TargetStatus, Work};
use serde::{Deserialize, Serialize};

/// How work of one boundary may be routed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BoundaryRule {
    /// Only these agent types may take the work (absent: any).
    #[serde(default)]
    pub allowed_agent_types: Option<Vec<String>>,
    /// Tried first, in this order.
    #[serde(default)]
    pub preferred_agent_types: Vec<String>,
}

/// A rule per boundary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutingPolicy {
    pub boundaries: BTreeMap<String, BoundaryRule>,
}

impl Default for RoutingPolicy {
    /// The original's documented table.
    fn default() -> Self {
        let rule = |allowed: Option<&[&str]>, preferred: &[&str]| BoundaryRule {
            allowed_agent_types: allowed.map(|a| a.iter().map(|s| s.to_string()).collect()),
            preferred_agent_types: preferred.iter().map(|s| s.to_string()).collect(),
        };
        RoutingPolicy {
            boundaries: BTreeMap::from([
                (
                    "corporate".to_string(),
                    rule(Some(&["copilot-cli"]), &["copilot-cli"]),
                ),
                (
                    "corporate-adjacent".to_string(),
                    rule(None, &["copilot-cli"]),
                ),
                ("personal".to_string(), rule(None, &["claude-code"])),
                ("open-source".to_string(), rule(None, &[])),
            ]),
        }
    }
}

impl RoutingPolicy {
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("routing policy: {e}"))
    }

    /// What the policy says about one item: the agent types that may take it, the order
    /// to prefer them in, and the rule in words (recorded with every assignment).
    pub fn rule_for(&self, work: &Work) -> ItemRule {
        let rule = self
            .boundaries
            .get(&work.boundary)
            .cloned()
            .unwrap_or_default();
        let mut allowed = rule.allowed_agent_types.clone();
        let mut text = match &allowed {
            Some(types) => format!("boundary {}: {} only", work.boundary, types.join(" or ")),
            None => format!("boundary {}: any agent type", work.boundary),
        };
        if let Some(required) = &work.required_agent_type {
            allowed = Some(match allowed {
                Some(types) => types.into_iter().filter(|t| t == required).collect(),
                None => vec![required.clone()],
            });
            text.push_str(&format!("; {required} required"));
        }
        let mut preferred = Vec::new();
        if let Some(p) = &work.preferred_agent_type {
            preferred.push(p.clone());
            text.push_str(&format!("; {p} preferred by the submitter"));
        } else if !rule.preferred_agent_types.is_empty() {
            text.push_str(&format!(
                "; {} preferred",
                rule.preferred_agent_types.join(", ")
            ));
        }
        preferred.extend(rule.preferred_agent_types.iter().cloned());
        ItemRule {
            allowed,
            preferred,
            text,
        }
    }
}

/// The policy applied to one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemRule {
    /// Agent types that may take it; `None`: any.
    pub allowed: Option<Vec<String>>,
    /// Agent types to try first, best first.
    pub preferred: Vec<String>,
    /// The rule in words.
    pub text: String,
}

impl ItemRule {
    pub fn allows(&self, agent_type: &str) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|a| a.iter().any(|t| t == agent_type))
    }

    /// 0 for the most preferred type; types not preferred come after all that are.
    fn rank(&self, agent_type: &str) -> usize {
        self.preferred
            .iter()
            .position(|p| p == agent_type)
            .unwrap_or(self.preferred.len())
    }

    /// Whether `agent` may ever take `work` (capacity aside).
    pub fn admits(&self, agent: &Agent, work: &Work) -> bool {
        agent.status == AgentStatus::Online
            && agent.shutdown_requested.is_none()
            && agent.paused_until_ms.is_none()
            && agent.capabilities.contains(&work.capability)
            && agent.boundaries.contains(&work.boundary)
            && self.allows(&agent.agent_type)
    }

    /// Whether an agent started on `target` could take `work`.
    pub fn served_by(&self, target: &Target, work: &Work) -> bool {
        target.capabilities.contains(&work.capability)
            && target.boundaries.contains(&work.boundary)
            && self.allows(&target.agent_type)
    }
}

/// The agents that may take `work` now (free capacity), best first: preferred types, then
/// the least loaded, then a stable order. `used` counts slots already promised this round.
/// Only the agents with room for the item's route are looked at.
pub fn candidates<'a>(
    policy: &RoutingPolicy,
    project: &'a Project,
    work: &Work,
    used: &BTreeMap<String, u32>,
) -> (Vec<&'a Agent>, ItemRule) {
    let rule = policy.rule_for(work);
    let load = |a: &Agent| a.active.len() as u32 + used.get(&a.id).copied().unwrap_or(0);
    let mut agents: Vec<&Agent> = project
        .agents
        .available_for(&work.route())
        .filter(|a| rule.admits(a, work) && load(a) < a.max_concurrent_tasks)
        .collect();
    agents.sort_by_key(|a| (rule.rank(&a.agent_type), load(a), a.id.clone()));
    (agents, rule)
}

/// The best agent with free capacity for `work`, and why; `Err` says why there is none.
pub fn route<'a>(
    policy: &RoutingPolicy,
    project: &'a Project,
    work: &Work,
) -> Result<(&'a Agent, RoutingReason), String> {
    let (agents, rule) = candidates(policy, project, work, &BTreeMap::new());
    match agents.first() {
        Some(best) => Ok((
            best,
            RoutingReason {
                rule: rule.text,
                candidates: agents.iter().map(|a| a.id.clone()).collect(),
            },
        )),
        None => Err(rule.text),
    }
}

/// Whether any online agent could take `work` (now or when it frees up).
pub fn has_eligible_agent(policy: &RoutingPolicy, project: &Project, work: &Work) -> bool {
    let rule = policy.rule_for(work);
    project.agents.iter().any(|a| rule.admits(a, work))
}

/// The agent type an item is expected to land on: the submit response's `targetAgentType`.
pub fn expected_agent_type(policy: &RoutingPolicy, project: &Project, work: &Work) -> String {
    let rule = policy.rule_for(work);
    let mut types: Vec<&str> = project
        .agents
        .iter()
        .filter(|a| rule.admits(a, work))
        .map(|a| a.agent_type.as_str())
        .collect();
    types.sort_by_key(|t| (rule.rank(t), *t));
    types
        .first()
        .map(|t| t.to_string())
        .or_else(|| rule.preferred.iter().find(|p| rule.allows(p)).cloned())
        .or_else(|| rule.allowed.as_ref().and_then(|a| a.first().cloned()))
        .unwrap_or_else(|| "claude-code".to_string())
}

/// Spin-up rules that are settings rather than data.
#[derive(Clone, Debug)]
pub struct SpinUpPolicy {
    /// A target whose spin-up failed is not used again for this long.
    pub cooldown_ms: u64,
}

impl Default for SpinUpPolicy {
    fn default() -> Self {
        SpinUpPolicy {
            cooldown_ms: 30_000,
        }
    }
}

/// Whether a spin-up on `target` failed less than the cooldown ago.
pub fn cooling_down(target: &Target, policy: &SpinUpPolicy, now_ms: u64) -> bool {
    target
        .last_spin_up_failure_ms
        .is_some_and(|failed| failed + policy.cooldown_ms > now_ms)
}

/// Whether `target` can start another agent at all now: enabled, not unhealthy, not cooling
/// down, below `maxAgents` (counting `extra` spin-ups promised this round).
pub fn can_start(target: &Target, policy: &SpinUpPolicy, now_ms: u64, extra: u32) -> bool {
    target.status != TargetStatus::Disabled
        && target.health_status != HealthStatus::Unhealthy
        && target.spin_ups_live + extra < target.max_agents
        && !cooling_down(target, policy, now_ms)
}

/// The best target to start an agent for `work` on: one that [`can_start`] and whose
/// agents could take the item; preferred agent types first, then the least used.
pub fn choose_target<'a>(
    policy: &RoutingPolicy,
    spin_up: &SpinUpPolicy,
    project: &'a Project,
    work: &Work,
    now_ms: u64,
    promised: &BTreeMap<String, u32>,
) -> Option<&'a Target> {
    let rule = policy.rule_for(work);
    let mut targets: Vec<&Target> = project
        .targets
        .serving(&work.route())
        .filter(|t| rule.served_by(t, work))
        .filter(|t| {
            can_start(
                t,
                spin_up,
                now_ms,
                promised.get(&t.id).copied().unwrap_or(0),
            )
        })
        .collect();
    targets.sort_by_key(|t| (rule.rank(&t.agent_type), t.use_count, t.registered_at_ms));
    targets.into_iter().next()
}

/// The targets a spin-up in flight will give an agent to, one entry per spin-up.
pub fn in_flight_targets(project: &Project) -> Vec<&Target> {
    project
        .spin_ups
        .in_flight()
        .filter_map(|s| project.targets.get(&s.target_id))
        .collect()
}

/// Whether Weft will start an agent for `work`: no online agent could take it, and a
/// spin-up for it is in flight or a target can start one. The submit response's
/// `spinUpTriggered`, decided by the same rules as the spin-ups themselves.
pub fn will_spin_up(
    policy: &RoutingPolicy,
    spin_up: &SpinUpPolicy,
    project: &Project,
    work: &Work,
    now_ms: u64,
) -> bool {
    if has_eligible_agent(policy, project, work) {
        return false;
    }
    let rule = policy.rule_for(work);
    let covered = in_flight_targets(project)
        .into_iter()
        .any(|t| rule.served_by(t, work));
    covered || choose_target(policy, spin_up, project, work, now_ms, &BTreeMap::new()).is_some()
}
