//! `/api/agents`: Weft's own agents (registered through the agent protocol) and agents that
//! speak Warp (from the shared `agent-registry` bucket), in the original's shape.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use projections::{Agent, AgentStatus};
use serde_json::Value;

use super::batch::BatchOutcome;
use super::error::ApiError;
use super::pagination::{self, filter_hash};
use super::strict::{OptionalBody, Strict};
use super::{Actor, AppState, Tag};
use crate::registry::{parse_time_ms, STALE_AFTER_MS};
use crate::time::{now_ms, rfc3339};
use decide::AgentCommand;

pub struct AgentsApi;

/// An agent, in the original's `RegisteredAgent` field order.
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct AgentView {
    pub guid: String,
    #[oai(skip_serializing_if_is_none)]
    pub handle: Option<String>,
    pub agent_type: String,
    /// online, busy (no free slot) or offline.
    pub status: String,
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
}

impl AgentView {
    fn native(app: &AppState, project: &str, a: &Agent) -> Self {
        let status = match a.status {
            AgentStatus::Offline => "offline",
            AgentStatus::Online if a.free_slots() == 0 => "busy",
            AgentStatus::Online => "online",
        };
        Self {
            guid: a.id.clone(),
            handle: a.handle.clone(),
            agent_type: a.agent_type.clone(),
            status: status.into(),
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
        }
    }

    /// Both registry shapes: Warp 1.0's (top-level `agentType`, `scope`) and the one the
    /// original expected (`metadata.agentType`, `metadata.boundaries`, `visibility`).
    /// `natsUrl` is never shown: Warp may have stored credentials in it.
    fn warp(key: &str, e: &Value) -> Self {
        let text = |v: &Value| v.as_str().map(String::from);
        let list = |v: &Value| -> Option<Vec<String>> {
            v.as_array().map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
        };
        let last_heartbeat = parse_time_ms(&e["lastHeartbeat"]);
        let stale = last_heartbeat.is_none_or(|t| now_ms().saturating_sub(t) > STALE_AFTER_MS);
        let stored = text(&e["status"]).unwrap_or_else(|| "offline".into());
        Self {
            guid: text(&e["guid"]).unwrap_or_else(|| key.into()),
            handle: text(&e["handle"]),
            agent_type: text(&e["metadata"]["agentType"])
                .or_else(|| text(&e["agentType"]))
                .unwrap_or_else(|| "claude-code".into()),
            status: if stale { "offline".into() } else { stored },
            capabilities: list(&e["capabilities"]).unwrap_or_default(),
            boundaries: list(&e["metadata"]["boundaries"])
                .unwrap_or_else(|| vec!["default".into()]),
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
    pub next_cursor: Option<String>,
    pub prev_cursor: Option<String>,
}

#[derive(Object, serde::Deserialize, Clone, Debug, Default)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShutdownBody {
    /// Finish running work first (default true).
    pub graceful: Option<bool>,
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
    pub status: Option<String>,
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
    /// manual, scaling-down, maintenance or error.
    pub reason: Option<String>,
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

const SHUTDOWN_REASONS: [&str; 4] = ["manual", "scaling-down", "maintenance", "error"];

impl AppState {
    /// Every agent, Weft's first, optionally of one project.
    fn agents(&self, project: Option<&str>) -> Vec<AgentView> {
        let mut views: Vec<AgentView> = self.commands.projection().read(|s| {
            s.projects
                .iter()
                .filter(|(name, _)| project.is_none_or(|p| p == *name))
                .flat_map(|(name, p)| p.agents.iter().map(move |a| (name, a)))
                .map(|(name, a)| AgentView::native(self, name, a))
                .collect()
        });
        views.extend(
            self.registry
                .all()
                .iter()
                .map(|(k, e)| AgentView::warp(k, e))
                .filter(|v| project.is_none_or(|p| v.project_id == p)),
        );
        views
    }

    fn find_agent(&self, guid: &str) -> Result<AgentView, ApiError> {
        self.agents(None)
            .into_iter()
            .find(|a| a.guid == guid)
            .ok_or_else(|| ApiError::not_found(format!("Agent with GUID {guid} not found")))
    }

    async fn shutdown_agent(
        &self,
        actor: &Actor,
        agent: &AgentView,
        graceful: bool,
        reason: &str,
    ) -> Result<(), ApiError> {
        if agent.source == "warp" {
            // Warp agents listen (if at all) where the original published.
            let subject = format!("loom.{}.agents.{}.shutdown", agent.project_id, agent.guid);
            let body = serde_json::json!({"graceful": graceful, "reason": reason}).to_string();
            return self
                .client
                .publish(subject, body.into())
                .await
                .map_err(|e| ApiError::unavailable(e.to_string()));
        }
        if !graceful && agent.current_task_count > 0 {
            return Err(ApiError::Conflict(Json(super::error::ErrorBody {
                error: "Conflict".into(),
                message: "Agent currently processing work (use graceful: true)".into(),
                details: None,
            })));
        }
        // Recording the request pushes it to the agent.
        self.coordinator
            .run(
                &actor.context(),
                &agent.project_id,
                AgentCommand::RequestShutdown {
                    agent_id: agent.guid.clone(),
                    reason: reason.into(),
                    graceful,
                },
            )
            .await?;
        Ok(())
    }
}

#[OpenApi(tag = "Tag::Agents")]
impl AgentsApi {
    /// List agents: Weft's and Warp's, every project unless `projectId` is given.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/api/agents", method = "get")]
    async fn list(
        &self,
        app: Data<&Arc<AppState>>,
        #[oai(name = "type")] agent_type: Query<Option<String>>,
        /// online, busy or offline.
        status: Query<Option<String>>,
        capability: Query<Option<String>>,
        #[oai(name = "projectId")] project_id: Query<Option<String>>,
        cursor: Query<Option<String>>,
        limit: Query<Option<i64>>,
    ) -> Result<Json<AgentList>, ApiError> {
        if let Some(s) = status.0.as_deref() {
            if !["online", "busy", "offline"].contains(&s) {
                return Err(ApiError::validation(
                    "status",
                    "must be one of online, busy, offline",
                ));
            }
        }
        let project = project_id
            .0
            .as_deref()
            .map(|p| app.project(Some(p)))
            .transpose()?;
        let hash = filter_hash(&[
            ("agentType", agent_type.0.as_deref()),
            ("status", status.0.as_deref()),
            ("capability", capability.0.as_deref()),
            ("projectId", project.as_deref()),
        ]);
        let page = pagination::page(cursor.0.as_deref(), limit.0, &hash)?;
        let matching: Vec<AgentView> = app
            .agents(project.as_deref())
            .into_iter()
            .filter(|a| agent_type.0.as_ref().is_none_or(|t| &a.agent_type == t))
            .filter(|a| status.0.as_ref().is_none_or(|s| &a.status == s))
            .filter(|a| {
                capability
                    .0
                    .as_ref()
                    .is_none_or(|c| a.capabilities.contains(c))
            })
            .collect();
        let total = matching.len();
        let agents: Vec<AgentView> = matching
            .into_iter()
            .skip(page.offset)
            .take(page.limit)
            .collect();
        let links = pagination::links(page, agents.len(), total, &hash);
        Ok(Json(AgentList {
            count: agents.len(),
            agents,
            total,
            has_more: links.has_more,
            next_cursor: links.next_cursor,
            prev_cursor: links.prev_cursor,
        }))
    }

    /// Get an agent by GUID (a UUID, or Warp's 32-hex identity).
    #[oai(path = "/api/agents/:guid", method = "get")]
    async fn get(
        &self,
        app: Data<&Arc<AppState>>,
        guid: Path<String>,
    ) -> Result<Json<AgentView>, ApiError> {
        Ok(Json(app.find_agent(&guid.0)?))
    }

    /// Ask an agent to shut down: gracefully (finish its work first, the default) or not.
    #[oai(path = "/api/agents/:guid/shutdown", method = "post")]
    async fn shutdown(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        guid: Path<String>,
        body: OptionalBody<ShutdownBody>,
    ) -> Result<Json<ShutdownResponse>, ApiError> {
        let graceful = body.0.and_then(|b| b.graceful).unwrap_or(true);
        let agent = app.find_agent(&guid.0)?;
        app.shutdown_agent(&actor, &agent, graceful, "manual")
            .await?;
        Ok(Json(ShutdownResponse {
            success: true,
            message: format!("Shutdown request sent to agent {}", guid.0),
            graceful,
        }))
    }

    /// Ask several agents to shut down, by GUID or by filter.
    #[oai(path = "/api/agents/shutdown-batch", method = "post")]
    async fn shutdown_batch(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        body: Json<Strict<ShutdownBatchRequest>>,
    ) -> Result<Json<ShutdownBatchResponse>, ApiError> {
        let body = body.0 .0;
        let graceful = body.graceful.unwrap_or(true);
        let reason = body.reason.clone().unwrap_or_else(|| "manual".into());
        if !SHUTDOWN_REASONS.contains(&reason.as_str()) {
            return Err(ApiError::validation(
                "reason",
                format!("must be one of {}", SHUTDOWN_REASONS.join(", ")),
            ));
        }
        let project = body
            .project_id
            .as_deref()
            .map(|p| app.project(Some(p)))
            .transpose()?;
        let all = app.agents(project.as_deref());
        let selected: Vec<(String, Option<AgentView>)> = match (&body.agent_guids, &body.filter) {
            (None, None) => {
                return Err(ApiError::bad_request(
                    "Either filter or agentGuids must be provided",
                ))
            }
            (Some(guids), _) => guids
                .iter()
                .map(|g| (g.clone(), all.iter().find(|a| &a.guid == g).cloned()))
                .collect(),
            (None, Some(f)) => {
                let now = now_ms();
                all.iter()
                    .filter(|a| a.status != "offline")
                    .filter(|a| f.status.as_ref().is_none_or(|s| &a.status == s))
                    .filter(|a| f.agent_type.as_ref().is_none_or(|t| &a.agent_type == t))
                    .filter(|a| f.boundary.as_ref().is_none_or(|b| a.boundaries.contains(b)))
                    .filter(|a| {
                        f.capability
                            .as_ref()
                            .is_none_or(|c| a.capabilities.contains(c))
                    })
                    .filter(|a| {
                        f.idle_time_ms.is_none_or(|idle| {
                            let last = a
                                .last_activity
                                .as_ref()
                                .and_then(|t| parse_time_ms(&Value::from(t.as_str())))
                                .unwrap_or(0);
                            a.current_task_count == 0 && now.saturating_sub(last) >= idle
                        })
                    })
                    .map(|a| (a.guid.clone(), Some(a.clone())))
                    .collect()
            }
        };
        let mut outcome = BatchOutcome::default();
        for (guid, agent) in selected {
            let result = match &agent {
                None => Err("Agent not found".to_string()),
                Some(agent) => app
                    .shutdown_agent(&actor, agent, graceful, &reason)
                    .await
                    .map_err(ApiError::into_message),
            };
            match result {
                Ok(()) => outcome.succeeded(guid),
                Err(message) => outcome.failed(guid, message),
            }
        }
        let outcome = outcome.finish();
        Ok(Json(ShutdownBatchResponse {
            shutdown_agents: outcome.success.clone(),
            outcome,
            graceful,
        }))
    }
}
