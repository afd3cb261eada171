//! `/api/agents`: Weft's own agents (registered through the agent protocol) and agents that
//! speak Warp (from the shared `agent-registry` bucket), in the original's shape.

mod types;

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;
use serde_json::Value;

use crate::api::at::{AtResponse, Seen};
use crate::api::batch::BatchOutcome;
use crate::api::error::ApiError;
use crate::api::events::EventPage;
use crate::api::pagination::{self, filter_hash};
use crate::api::strict::{OptionalBody, Strict};
use crate::api::{Actor, AppState, Tag};
use crate::registry::parse_time_ms;
use crate::time::now_ms;
use decide::AgentCommand;

pub use types::*;

pub struct AgentsApi;

impl AppState {
    /// Every agent `actor` may see, Weft's first, optionally of one project.
    fn agents(&self, actor: &Actor, project: Option<&str>) -> Vec<AgentView> {
        let mut views: Vec<AgentView> = self.read(actor, |s| {
            s.projects
                .iter()
                .filter(|(name, _)| project.is_none_or(|p| p == *name))
                .flat_map(|(name, p)| p.agents.iter().map(move |a| (name, a)))
                .map(|(name, a)| AgentView::native(self, name, a))
                .collect()
        });
        // A Warp agent the bridge speaks for is in the log too: listed once, as Warp's.
        let warp: Vec<AgentView> = self
            .registry
            .all()
            .iter()
            .map(|(k, e)| AgentView::warp(k, e))
            .filter(|v| actor.access.sees(&v.project_id))
            .filter(|v| project.is_none_or(|p| v.project_id == p))
            .collect();
        for view in &mut views {
            if let Some(w) = warp.iter().find(|w| w.guid == view.guid) {
                // What only Warp's entry knows.
                view.source = "warp".into();
                view.visibility = w.visibility.clone();
                view.username = w.username.clone();
            }
        }
        let bridged: Vec<String> = views.iter().map(|v| v.guid.clone()).collect();
        views.extend(warp.into_iter().filter(|w| !bridged.contains(&w.guid)));
        views
    }

    fn find_agent(&self, actor: &Actor, guid: &str) -> Result<AgentView, ApiError> {
        self.agents(actor, None)
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
            return Err(ApiError::Conflict(Json(crate::api::error::ErrorBody {
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
    #[oai(path = "/api/agents", method = "get", operation_id = "listAgents")]
    async fn list(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        #[oai(name = "type")] agent_type: Query<Option<String>>,
        status: Query<Option<AgentStatusName>>,
        capability: Query<Option<String>>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
        cursor: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] limit: Query<Option<i64>>,
    ) -> Result<Json<AgentList>, ApiError> {
        let project = project_id
            .0
            .as_deref()
            .map(|p| app.project(actor.0, Some(p)))
            .transpose()?;
        let hash = filter_hash(&[
            ("agentType", agent_type.0.as_deref()),
            ("status", status.0.map(AgentStatusName::as_str)),
            ("capability", capability.0.as_deref()),
            ("projectId", project.as_deref()),
        ]);
        let page = pagination::page(cursor.0.as_deref(), limit.0, &hash)?;
        let matching: Vec<AgentView> = app
            .agents(actor.0, project.as_deref())
            .into_iter()
            .filter(|a| agent_type.0.as_ref().is_none_or(|t| &a.agent_type == t))
            .filter(|a| status.0.is_none_or(|s| a.status == s))
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
        let links = pagination::links(&page, agents.len(), total, &hash, None);
        Ok(Json(AgentList {
            count: agents.len(),
            agents,
            total,
            has_more: links.has_more,
            next_cursor: links.next_cursor,
            prev_cursor: links.prev_cursor,
        }))
    }

    /// Get an agent by GUID (a UUID, or Warp's 32-hex identity): as it is, or with `at` (a
    /// sequence) or `asOf` (an RFC 3339 time) as it was then (the `Weft-Sequence` header
    /// names the point used). The past knows Weft's own agents only, and without
    /// `lastHeartbeat` (heartbeats are not events).
    #[oai(path = "/api/agents/:guid", method = "get", operation_id = "getAgent")]
    async fn get(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        guid: Path<String>,
        /// The agent as it was after the event at this sequence (or the last one before it).
        at: Query<Option<u64>>,
        /// The agent as it was after the last event recorded at or before this time.
        #[oai(name = "asOf")]
        as_of: Query<Option<String>>,
    ) -> Result<AtResponse<AgentView>, ApiError> {
        let seen = app.seen(at.0, as_of.0.as_deref()).await?;
        let live = matches!(seen, Seen::Live);
        let (sequence, native) = app.read_seen(actor.0, &seen, |s| {
            s.projects.iter().find_map(|(name, p)| {
                p.agents.get(&guid.0).map(|a| {
                    let mut view = AgentView::native(&app, name, a);
                    if !live {
                        view.last_heartbeat = None;
                    }
                    view
                })
            })
        });
        let view = match native {
            Some(view) => view,
            None if live => app.find_agent(actor.0, &guid.0)?,
            None => {
                return Err(ApiError::not_found(format!(
                    "Agent with GUID {} not found",
                    guid.0
                )))
            }
        };
        Ok(AtResponse::Ok(Json(view), sequence))
    }

    /// An agent's history: its events in order (registrations, shutdown requests, going
    /// offline), with time, actor and what each changed. Warp agents have none.
    #[oai(
        path = "/api/agents/:guid/history",
        method = "get",
        operation_id = "getAgentHistory"
    )]
    async fn history(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        guid: Path<String>,
        /// Only events after this sequence.
        after: Query<Option<u64>>,
        /// At most this many events (1-1000, default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<i64>>,
    ) -> Result<Json<EventPage>, ApiError> {
        let agent = app.find_agent(actor.0, &guid.0)?;
        app.history(
            &agent.project_id,
            events::AggregateKind::Agent,
            &guid.0,
            after.0,
            limit.0,
        )
        .await
    }

    /// Ask an agent to shut down: gracefully (finish its work first, the default) or not.
    #[oai(
        path = "/api/agents/:guid/shutdown",
        method = "post",
        operation_id = "shutdownAgent"
    )]
    async fn shutdown(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        guid: Path<String>,
        body: OptionalBody<ShutdownBody>,
    ) -> Result<Json<ShutdownResponse>, ApiError> {
        let graceful = body.0.and_then(|b| b.graceful).unwrap_or(true);
        let agent = app.find_agent(actor.0, &guid.0)?;
        app.shutdown_agent(&actor, &agent, graceful, "manual")
            .await?;
        Ok(Json(ShutdownResponse {
            success: true,
            message: format!("Shutdown request sent to agent {}", guid.0),
            graceful,
        }))
    }

    /// Route work to an agent a usage limit paused again, now (one paused without a reset
    /// time waits for this). Resuming an agent that is not paused changes nothing.
    #[oai(
        path = "/api/agents/:guid/resume",
        method = "post",
        operation_id = "resumeAgent"
    )]
    async fn resume(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        guid: Path<String>,
    ) -> Result<Json<AgentView>, ApiError> {
        let agent = app.find_agent(actor.0, &guid.0)?;
        if agent.source == "warp" && agent.paused_reason.is_none() {
            return Ok(Json(agent));
        }
        app.coordinator
            .run(
                &actor.context(),
                &agent.project_id,
                AgentCommand::Resume {
                    agent_id: agent.guid.clone(),
                    reason: format!("resumed by {}", actor.name),
                },
            )
            .await?;
        Ok(Json(app.find_agent(actor.0, &guid.0)?))
    }

    /// Ask several agents to shut down, by GUID or by filter.
    #[oai(
        path = "/api/agents/shutdown-batch",
        method = "post",
        operation_id = "shutdownAgents"
    )]
    async fn shutdown_batch(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        body: Json<Strict<ShutdownBatchRequest>>,
    ) -> Result<Json<ShutdownBatchResponse>, ApiError> {
        let body = body.0 .0;
        let graceful = body.graceful.unwrap_or(true);
        let reason = body.reason.unwrap_or(ShutdownReason::Manual).as_str();
        let project = body
            .project_id
            .as_deref()
            .map(|p| app.project(actor.0, Some(p)))
            .transpose()?;
        let all = app.agents(actor.0, project.as_deref());
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
                    .filter(|a| a.status != AgentStatusName::Offline)
                    .filter(|a| f.status.is_none_or(|s| a.status == s))
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
                    .shutdown_agent(&actor, agent, graceful, reason)
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
