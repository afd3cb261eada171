//! The shapes of `/api/agents`: what clients send and what they get back.

use poem_openapi::Object;
use projections::{Agent, AgentStatus};
use serde_json::Value;

use crate::api::batch::BatchOutcome;
pub use crate::api::names::{AgentStatusName, ShutdownReason};
use crate::api::AppState;
use crate::registry::{parse_time_ms, WarpAgent, STALE_AFTER_MS};
use crate::time::{now_ms, rfc3339};

/// An agent, in the original's `RegisteredAgent` field order.
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct AgentView {
    pub guid: String,
    #[oai(skip_serializing_if_is_none)]
    pub handle: Option<String>,
    pub agent_type: String,
    pub status: AgentStatusName,
    pub capabilities: Vec<String>,
    pub boundaries: Vec<String>,
    #[oai(skip_serializing_if_is_none)]
    pub hostname: Option<String>,
    pub project_id: String,
    #[oai(skip_serializing_if_is_none)]
    pub username: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub visibility: Option<String>,
    pub current_task_count: u64,
    #[oai(skip_serializing_if_is_none)]
    pub max_concurrent_tasks: Option<u64>,
    #[oai(skip_serializing_if_is_none)]
    pub spindown_after_idle_ms: Option<u64>,
    #[oai(skip_serializing_if_is_none)]
    pub last_heartbeat: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub last_activity: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub registered_at: Option<String>,
    /// `weft` (agent protocol) or `warp` (agent-registry bucket).
    pub source: String,
    /// Work items it holds a lease on (Weft agents).
    pub active_work: Vec<String>,
    #[oai(skip_serializing_if_is_none)]
    pub spin_up_id: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub target_id: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub shutdown_requested: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub offline_reason: Option<String>,
    /// Paused by a usage limit until then; a paused agent without it waits for
    /// `POST /api/agents/{guid}/resume`.
    #[oai(skip_serializing_if_is_none)]
    pub paused_until: Option<String>,
    /// What paused it (the CLI's words).
    #[oai(skip_serializing_if_is_none)]
    pub paused_reason: Option<String>,
}

impl AgentView {
    pub(crate) fn native(app: &AppState, project: &str, a: &Agent) -> Self {
        let status = match a.status {
            AgentStatus::Offline => AgentStatusName::Offline,
            AgentStatus::Online if a.paused_until_ms.is_some() => AgentStatusName::Paused,
            AgentStatus::Online if a.free_slots() == 0 => AgentStatusName::Busy,
            AgentStatus::Online => AgentStatusName::Online,
        };
        Self {
            guid: a.id.clone(),
            handle: a.handle.clone(),
            agent_type: a.agent_type.clone(),
            status,
            capabilities: a.capabilities.clone(),
            boundaries: a.boundaries.clone(),
            hostname: a.hostname.clone(),
            project_id: project.into(),
            username: None,
            visibility: None,
            current_task_count: a.active.len() as u64,
            max_concurrent_tasks: Some(a.max_concurrent_tasks.into()),
            spindown_after_idle_ms: a.idle_timeout_ms,
            last_heartbeat: app
                .coordinator
                .last_heartbeat_ms(project, &a.id)
                .map(rfc3339),
            last_activity: Some(rfc3339(a.last_activity_ms)),
            registered_at: Some(rfc3339(a.registered_at_ms)),
            source: "weft".into(),
            active_work: a.active.iter().cloned().collect(),
            spin_up_id: a.spin_up_id.clone(),
            target_id: a.target_id.clone(),
            shutdown_requested: a.shutdown_requested.clone(),
            offline_reason: (a.status == AgentStatus::Offline)
                .then(|| a.offline_reason.clone())
                .flatten(),
            paused_until: a
                .paused_until_ms
                .filter(|until| *until != u64::MAX)
                .map(rfc3339),
            paused_reason: a.paused_reason.clone(),
        }
    }

    /// Both registry shapes: Warp 1.0's (top-level `agentType`, `scope`) and the one the
    /// original expected (`metadata.agentType`, `metadata.boundaries`, `visibility`).
    /// `natsUrl` is never shown: Warp may have stored credentials in it.
    pub(super) fn warp(key: &str, e: &Value) -> Self {
        let text = |v: &Value| v.as_str().map(String::from);
        let parsed = WarpAgent::parse(key, e);
        let last_heartbeat = parse_time_ms(&e["lastHeartbeat"]);
        let stale = last_heartbeat.is_none_or(|t| now_ms().saturating_sub(t) > STALE_AFTER_MS);
        // A status Warp may write that we do not know reads as offline: never routed to.
        let stored =
            serde_json::from_value(e["status"].clone()).unwrap_or(AgentStatusName::Offline);
        let (guid, agent_type, capabilities, boundaries) = match parsed {
            Some(a) => (a.guid, a.agent_type, a.capabilities, a.boundaries),
            None => (
                key.into(),
                "claude-code".into(),
                vec![],
                vec!["default".into()],
            ),
        };
        Self {
            guid,
            handle: text(&e["handle"]),
            agent_type,
            status: if stale {
                AgentStatusName::Offline
            } else {
                stored
            },
            capabilities,
            boundaries,
            hostname: text(&e["hostname"]),
            project_id: text(&e["projectId"]).unwrap_or_default(),
            username: text(&e["username"]),
            visibility: text(&e["visibility"]).or_else(|| text(&e["scope"])),
            current_task_count: e["currentTaskCount"].as_u64().unwrap_or(0),
            max_concurrent_tasks: e["maxConcurrentTasks"].as_u64(),
            spindown_after_idle_ms: e["spindownAfterIdleMs"].as_u64(),
            last_heartbeat: last_heartbeat.map(rfc3339),
            last_activity: parse_time_ms(&e["lastActivity"]).map(rfc3339),
            registered_at: parse_time_ms(&e["registeredAt"]).map(rfc3339),
            source: "warp".into(),
            active_work: vec![],
            spin_up_id: None,
            target_id: None,
            shutdown_requested: None,
            offline_reason: None,
            paused_until: None,
            paused_reason: None,
        }
    }
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct AgentList {
    pub agents: Vec<AgentView>,
    pub count: usize,
    pub total: usize,
    pub has_more: bool,
    /// Absent (null) on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
    /// Absent (null) on the first page.
    #[oai(nullable)]
    pub prev_cursor: Option<String>,
}

#[derive(Object, serde::Deserialize, Clone, Debug, Default)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShutdownBody {
    /// Finish running work first (default true).
    pub graceful: Option<bool>,
    #[oai(validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$"))]
    pub project_id: Option<String>,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct ShutdownResponse {
    pub success: bool,
    pub message: String,
    pub graceful: bool,
}

#[derive(Object, serde::Deserialize, Clone, Debug, Default)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShutdownBatchFilter {
    pub status: Option<AgentStatusName>,
    /// Only agents idle at least this long.
    pub idle_time_ms: Option<u64>,
    pub agent_type: Option<String>,
    pub boundary: Option<String>,
    pub capability: Option<String>,
}

#[derive(Object, serde::Deserialize, Clone, Debug)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShutdownBatchRequest {
    pub filter: Option<ShutdownBatchFilter>,
    pub agent_guids: Option<Vec<String>>,
    pub graceful: Option<bool>,
    pub grace_period_ms: Option<u64>,
    pub reason: Option<ShutdownReason>,
    #[oai(validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$"))]
    pub project_id: Option<String>,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct ShutdownBatchResponse {
    #[oai(flatten)]
    pub outcome: BatchOutcome,
    /// The agents asked to shut down (the same as `success`).
    pub shutdown_agents: Vec<String>,
    pub graceful: bool,
}
