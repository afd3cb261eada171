//! The agents of one project, with an index of who has room for what (so routing looks at
//! the agents that could take an item, not at all of them) and counts for the stats.

use std::collections::BTreeSet;
use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

use crate::work::Route;

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
    /// Paused by a usage limit: nothing is routed to it until then (`u64::MAX`: until a
    /// person resumes it).
    #[serde(default)]
    pub paused_until_ms: Option<u64>,
    #[serde(default)]
    pub paused_reason: Option<String>,
}

impl Agent {
    pub fn free_slots(&self) -> u32 {
        self.max_concurrent_tasks
            .saturating_sub(self.active.len() as u32)
    }

    /// Online, not leaving, with a free slot: it can take work now.
    pub fn is_available(&self) -> bool {
        self.status == AgentStatus::Online
            && self.shutdown_requested.is_none()
            && self.paused_until_ms.is_none()
            && self.free_slots() > 0
    }

    /// How the API shows it: `online`, `busy` (online, every slot taken), `paused` (online,
    /// held back by a usage limit) or `offline`.
    pub fn shown_status(&self) -> &'static str {
        match self.status {
            AgentStatus::Offline => "offline",
            AgentStatus::Online if self.paused_until_ms.is_some() => "paused",
            AgentStatus::Online if self.free_slots() == 0 => "busy",
            AgentStatus::Online => "online",
        }
    }

    fn routes(&self) -> impl Iterator<Item = Route> + '_ {
        self.capabilities
            .iter()
            .flat_map(|c| self.boundaries.iter().map(move |b| (c.clone(), b.clone())))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Agents {
    agents: OrdMap<String, Arc<Agent>>,
    /// Available agents by the routes they serve.
    available: OrdMap<Route, OrdSet<String>>,
    by_type: OrdMap<String, usize>,
    by_shown_status: OrdMap<String, usize>,
}

impl Agents {
    pub fn get(&self, id: &str) -> Option<&Agent> {
        self.agents.get(id).map(|a| a.as_ref())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Agent> {
        self.agents.values().map(|a| a.as_ref())
    }

    pub fn len(&self) -> usize {
        self.agents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Agents that can take an item of `route` now (online, not leaving, a slot free).
    pub fn available_for<'a>(&'a self, route: &Route) -> impl Iterator<Item = &'a Agent> + 'a {
        self.available
            .get(route)
            .into_iter()
            .flat_map(|ids| ids.iter())
            .filter_map(|id| self.get(id))
    }

    /// Whether any agent can take an item of `route` now.
    pub fn any_available_for(&self, route: &Route) -> bool {
        self.available.get(route).is_some_and(|ids| !ids.is_empty())
    }

    /// Agents by type, every agent counted.
    pub fn count_by_type(&self) -> impl Iterator<Item = (&str, usize)> {
        self.by_type.iter().map(|(t, n)| (t.as_str(), *n))
    }

    /// Agents by how the API shows them: online, busy, offline.
    pub fn count_by_shown_status(&self) -> impl Iterator<Item = (&str, usize)> {
        self.by_shown_status.iter().map(|(s, n)| (s.as_str(), *n))
    }

    fn unindex(&mut self, a: &Agent) {
        if a.is_available() {
            for route in a.routes() {
                if let Some(ids) = self.available.get_mut(&route) {
                    ids.remove(&a.id);
                    if ids.is_empty() {
                        self.available.remove(&route);
                    }
                }
            }
        }
        for (map, key) in [
            (&mut self.by_type, a.agent_type.clone()),
            (&mut self.by_shown_status, a.shown_status().to_string()),
        ] {
            if let Some(n) = map.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
    }

    fn index(&mut self, a: &Agent) {
        if a.is_available() {
            for route in a.routes() {
                self.available
                    .entry(route)
                    .or_default()
                    .insert(a.id.clone());
            }
        }
        *self.by_type.entry(a.agent_type.clone()).or_default() += 1;
        *self
            .by_shown_status
            .entry(a.shown_status().to_string())
            .or_default() += 1;
    }

    /// Changes an agent (creating it with `new` when it does not exist and `new` gives one),
    /// keeping the indexes in step. `false` when there is no such agent.
    pub(crate) fn upsert(
        &mut self,
        id: &str,
        new: impl FnOnce() -> Option<Agent>,
        change: impl FnOnce(&mut Agent),
    ) -> bool {
        let mut entry = match self.agents.remove(id) {
            Some(existing) => {
                self.unindex(&existing);
                existing
            }
            None => match new() {
                Some(agent) => Arc::new(agent),
                None => return false,
            },
        };
        change(Arc::make_mut(&mut entry));
        self.index(&entry);
        self.agents.insert(id.to_string(), entry);
        true
    }

    pub(crate) fn update(&mut self, id: &str, change: impl FnOnce(&mut Agent)) -> bool {
        self.upsert(id, || None, change)
    }
}
