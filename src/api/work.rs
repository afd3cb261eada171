//! `/api/work`: submit, list, inspect, cancel and retry work items.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use projections::{Project, Work, WorkStatus};

use super::batch::BatchOutcome;
use super::error::ApiError;
use super::pagination::{self, filter_hash};
use super::strict::Strict;
use super::{Actor, AppState, Tag};
use crate::time::rfc3339;
use decide::routing;
use decide::work::{Submission, WorkCommand};

pub struct WorkApi;

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct AgentSummary {
    pub guid: String,
    pub agent_type: String,
    #[oai(skip_serializing_if_is_none)]
    pub hostname: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub handle: Option<String>,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct WorkResultView {
    pub summary: String,
    #[oai(skip_serializing_if_is_none)]
    pub output: Option<String>,
    pub artifacts: Vec<String>,
    pub completed_at: String,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct WorkErrorView {
    pub message: String,
    pub recoverable: bool,
    pub occurred_at: String,
}

/// Why an item went to the agent it went to.
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct RoutingView {
    pub rule: String,
    /// Agents that could have taken it, best first.
    pub candidates: Vec<String>,
}

/// A work item, in the original's field order, with the lifecycle Weft adds.
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct WorkView {
    pub id: String,
    pub task_id: String,
    pub description: String,
    pub capability: String,
    pub priority: u8,
    #[oai(skip_serializing_if_is_none)]
    pub deadline: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub context_data: Option<serde_json::Value>,
    pub boundary: String,
    /// pending, assigned, in-progress, completed, failed, cancelled, dead-lettered.
    pub status: String,
    pub offered_by: String,
    pub offered_at: String,
    /// Who submitted it (token fingerprint or `anonymous`).
    pub submitted_by: String,
    pub attempts: u32,
    pub max_attempts: u32,
    #[oai(skip_serializing_if_is_none)]
    pub preferred_agent_type: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub required_agent_type: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub assigned_to: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub assigned_to_agent: Option<AgentSummary>,
    #[oai(skip_serializing_if_is_none)]
    pub assigned_at: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub started_at: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub progress: Option<u8>,
    #[oai(skip_serializing_if_is_none)]
    pub progress_message: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub routing: Option<RoutingView>,
    /// Not assigned again before this time (backoff after a failed attempt).
    #[oai(skip_serializing_if_is_none)]
    pub retry_after: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub result: Option<WorkResultView>,
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<WorkErrorView>,
    #[oai(skip_serializing_if_is_none)]
    pub cancelled_at: Option<String>,
    pub updated_at: String,
    pub project_id: String,
}

impl WorkView {
    pub fn new(project_id: &str, project: &Project, w: &Work) -> Self {
        let agent = w.assigned_to.as_deref().and_then(|a| project.agents.get(a));
        Self {
            id: w.id.clone(),
            task_id: w.task_id.clone(),
            description: w.description.clone(),
            capability: w.capability.clone(),
            priority: w.priority,
            deadline: w.deadline.clone(),
            context_data: w
                .context_data
                .as_deref()
                .and_then(|c| serde_json::from_str(c).ok()),
            boundary: w.boundary.clone(),
            status: w.status.as_str().into(),
            offered_by: "coordinator".into(),
            offered_at: rfc3339(w.offered_at_ms),
            submitted_by: w.submitted_by.clone(),
            attempts: w.attempts,
            max_attempts: w.max_attempts,
            preferred_agent_type: w.preferred_agent_type.clone(),
            required_agent_type: w.required_agent_type.clone(),
            assigned_to: w.assigned_to.clone(),
            assigned_to_agent: agent.map(|a| AgentSummary {
                guid: a.id.clone(),
                agent_type: a.agent_type.clone(),
                hostname: a.hostname.clone(),
                handle: a.handle.clone(),
            }),
            assigned_at: w.assigned_at_ms.map(rfc3339),
            started_at: w.started_at_ms.map(rfc3339),
            progress: w.progress,
            progress_message: w.progress_message.clone(),
            routing: w.routing.as_ref().map(|r| RoutingView {
                rule: r.rule.clone(),
                candidates: r.candidates.clone(),
            }),
            retry_after: w
                .not_before_ms
                .filter(|_| w.status == WorkStatus::Pending)
                .map(rfc3339),
            result: w.result.as_ref().map(|r| WorkResultView {
                summary: r.summary.clone(),
                output: r.output.clone(),
                artifacts: r.artifacts.clone(),
                completed_at: rfc3339(r.completed_at_ms),
            }),
            error: w.error.as_ref().map(|e| WorkErrorView {
                message: e.message.clone(),
                recoverable: e.recoverable,
                occurred_at: rfc3339(e.occurred_at_ms),
            }),
            cancelled_at: w.cancelled_at_ms.map(rfc3339),
            updated_at: rfc3339(w.updated_at_ms),
            project_id: project_id.into(),
        }
    }
}

/// Work to do. `taskId` is generated when absent; `classification` is the deprecated name
/// of `boundary`.
#[derive(Object, serde::Deserialize, Clone, Debug)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkSubmitRequest {
    pub task_id: Option<String>,
    pub description: String,
    pub capability: String,
    pub boundary: Option<String>,
    /// Deprecated alias of `boundary`.
    pub classification: Option<String>,
    /// 1 (lowest) to 10 (highest), default 5.
    pub priority: Option<i64>,
    pub preferred_agent_type: Option<String>,
    pub required_agent_type: Option<String>,
    /// RFC 3339.
    pub deadline: Option<String>,
    pub context_data: Option<serde_json::Value>,
    /// Attempts before the item is dead-lettered (default 3).
    pub max_attempts: Option<i64>,
    pub project_id: Option<String>,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct WorkSubmitResponse {
    pub id: String,
    /// Same as `id`, for older clients.
    pub work_item_id: String,
    pub target_agent_type: String,
    /// No online agent can take it, and an enabled target can start one that can.
    pub spin_up_triggered: bool,
    /// 5 when an agent that can take it is online; absent otherwise.
    #[oai(skip_serializing_if_is_none)]
    pub estimated_wait_seconds: Option<u32>,
    pub status: String,
    /// Why it goes where it goes (once assigned, the item's `routing` says where it went).
    pub routing_rule: String,
}

#[derive(ApiResponse)]
pub enum SubmitResponse {
    /// Created.
    #[oai(status = 201)]
    Created(Json<WorkSubmitResponse>),
    /// An earlier submission with the same Idempotency-Key: the same item.
    #[oai(status = 200)]
    Existing(Json<WorkSubmitResponse>),
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct WorkList {
    pub work_items: Vec<WorkView>,
    pub count: usize,
    pub total: usize,
    pub has_more: bool,
    pub next_cursor: Option<String>,
    pub prev_cursor: Option<String>,
}

#[derive(ApiResponse)]
pub enum ListResponse {
    #[oai(status = 200)]
    Ok(
        Json<WorkList>,
        /// Set when the deprecated `classification` parameter was used.
        #[oai(header = "X-Deprecated-Param")]
        Option<String>,
    ),
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct WorkChanged {
    pub success: bool,
    pub message: String,
    #[oai(skip_serializing_if_is_none)]
    pub work_item: Option<WorkView>,
}

#[derive(Object, serde::Deserialize, Clone, Debug, Default)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CancelBatchFilter {
    pub status: Option<String>,
    pub boundary: Option<String>,
    pub capability: Option<String>,
    pub min_priority: Option<i64>,
    pub assigned_to: Option<String>,
}

#[derive(Object, serde::Deserialize, Clone, Debug)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CancelBatchRequest {
    pub filter: Option<CancelBatchFilter>,
    /// Work item ids (`id`, not `taskId`).
    pub work_item_ids: Option<Vec<String>>,
    /// user-requested, deadline-passed, resource-constraint or system-shutdown.
    pub reason: Option<String>,
    /// Accepted for compatibility; cancelled work is not reassigned.
    pub reassign: Option<bool>,
    pub project_id: Option<String>,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct CancelBatchResponse {
    #[oai(flatten)]
    pub outcome: BatchOutcome,
    pub cancelled_items: Vec<String>,
    /// Always empty: cancelled work is not reassigned.
    pub reassigned_items: Vec<String>,
    pub not_cancellable: Vec<String>,
}

const CANCEL_REASONS: [&str; 4] = [
    "user-requested",
    "deadline-passed",
    "resource-constraint",
    "system-shutdown",
];

fn status_filter(value: Option<&str>) -> Result<Option<WorkStatus>, ApiError> {
    value
        .map(|s| {
            WorkStatus::parse(s).ok_or_else(|| {
                let all: Vec<&str> = WorkStatus::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::validation("status", format!("must be one of {}", all.join(", ")))
            })
        })
        .transpose()
}

impl AppState {
    /// Finds a work item by id: in the named project, or in any (ids are unique).
    pub fn find_work(
        &self,
        requested: Option<&str>,
        id: &str,
    ) -> Result<(String, WorkView), ApiError> {
        let only = requested.map(|p| self.project(Some(p))).transpose()?;
        self.commands
            .projection()
            .read(|s| {
                s.projects
                    .iter()
                    .filter(|(name, _)| only.as_ref().is_none_or(|o| o == *name))
                    .find_map(|(name, p)| {
                        p.work
                            .get(id)
                            .map(|w| (name.clone(), WorkView::new(name, p, w)))
                    })
            })
            .ok_or_else(|| ApiError::not_found(format!("Work item with ID {id} not found")))
    }

    async fn cancel_one(
        &self,
        actor: &Actor,
        project: &str,
        id: &str,
        reason: Option<String>,
    ) -> Result<bool, ApiError> {
        let holder = self.commands.projection().read(|s| {
            s.project(project)
                .and_then(|p| p.work.get(id))
                .filter(|w| w.status.is_leased())
                .and_then(|w| w.assigned_to.clone())
        });
        let recorded = self
            .commands
            .execute(
                &actor.context(),
                project,
                WorkCommand::Cancel {
                    work_id: id.into(),
                    reason: reason.clone(),
                },
            )
            .await?;
        if let (false, Some(agent)) = (recorded.is_empty(), holder) {
            self.coordinator
                .push_cancel(project, &agent, id, reason)
                .await;
        }
        Ok(!recorded.is_empty())
    }
}

/// The id of an item submitted with an idempotency key: the same key in the same project
/// is the same item, whoever asks and however often.
pub fn id_for_key(project: &str, key: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("weft:{project}:{key}").as_bytes(),
    )
    .to_string()
}

#[OpenApi(tag = "Tag::Work")]
impl WorkApi {
    /// Submit work. With an `Idempotency-Key`, repeating the request returns the same item.
    #[oai(path = "/api/work", method = "post")]
    async fn submit(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<String>>,
        #[oai(name = "projectId")] project_id: Query<Option<String>>,
        body: Json<Strict<WorkSubmitRequest>>,
    ) -> Result<SubmitResponse, ApiError> {
        let body = body.0 .0;
        let project = app.project(body.project_id.as_deref().or(project_id.0.as_deref()))?;
        let Some(boundary) = body.boundary.or(body.classification) else {
            return Err(ApiError::validation(
                "boundary",
                "boundary (or classification) is required",
            ));
        };
        let key = idempotency_key.0;
        let id = match &key {
            Some(k) => id_for_key(&project, k),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let submission = Submission {
            task_id: body.task_id,
            description: body.description,
            capability: body.capability,
            boundary,
            priority: body.priority,
            preferred_agent_type: body.preferred_agent_type,
            required_agent_type: body.required_agent_type,
            deadline: body.deadline,
            context_data: body.context_data,
            max_attempts: body.max_attempts,
            idempotency_key: key,
        };
        let recorded = app
            .commands
            .execute(
                &actor.context(),
                &project,
                WorkCommand::Submit {
                    id: id.clone(),
                    submission,
                },
            )
            .await?;
        let settings = app.commands.settings();
        let now = crate::time::now_ms();
        let response = app
            .commands
            .projection()
            .read(|s| {
                let p = s.project(&project)?;
                let w = p.work.get(&id)?;
                let available = routing::has_eligible_agent(&settings.routing, p, w);
                // The same rules the spin-ups follow: health, cooldown, maxAgents included.
                let spin_up = w.status == projections::WorkStatus::Pending
                    && routing::will_spin_up(&settings.routing, &settings.spin_up, p, w, now);
                let rule = routing::route(&settings.routing, p, w)
                    .map_or_else(|why| why, |(_, reason)| reason.rule);
                Some(WorkSubmitResponse {
                    id: w.id.clone(),
                    work_item_id: w.id.clone(),
                    target_agent_type: w
                        .assigned_to
                        .as_deref()
                        .and_then(|a| p.agents.get(a))
                        .map(|a| a.agent_type.clone())
                        .unwrap_or_else(|| routing::expected_agent_type(&settings.routing, p, w)),
                    spin_up_triggered: spin_up,
                    // The original's estimates: an agent is there, or one is being started.
                    estimated_wait_seconds: if available {
                        Some(5)
                    } else if spin_up {
                        Some(30)
                    } else {
                        None
                    },
                    status: w.status.as_str().into(),
                    routing_rule: w.routing.as_ref().map_or(rule, |r| r.rule.clone()),
                })
            })
            .ok_or_else(|| {
                ApiError::unavailable("recorded, but not yet visible; retry the read")
            })?;
        Ok(if recorded.is_empty() {
            SubmitResponse::Existing(Json(response))
        } else {
            SubmitResponse::Created(Json(response))
        })
    }

    /// List work items, highest priority first, then oldest first.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/api/work", method = "get")]
    async fn list(
        &self,
        app: Data<&Arc<AppState>>,
        status: Query<Option<String>>,
        boundary: Query<Option<String>>,
        /// Deprecated alias of `boundary`.
        classification: Query<Option<String>>,
        capability: Query<Option<String>>,
        #[oai(name = "assignedTo")] assigned_to: Query<Option<String>>,
        #[oai(name = "projectId")] project_id: Query<Option<String>>,
        cursor: Query<Option<String>>,
        limit: Query<Option<i64>>,
    ) -> Result<ListResponse, ApiError> {
        let project = app.project(project_id.0.as_deref())?;
        let deprecated = (classification.0.is_some() && boundary.0.is_none())
            .then(|| "classification (use boundary instead)".to_string());
        let boundary = boundary.0.or(classification.0);
        let status = status_filter(status.0.as_deref())?;
        let hash = filter_hash(&[
            ("status", status.map(WorkStatus::as_str)),
            ("boundary", boundary.as_deref()),
            ("capability", capability.0.as_deref()),
            ("assignedTo", assigned_to.0.as_deref()),
        ]);
        let page = pagination::page(cursor.0.as_deref(), limit.0, &hash)?;
        let (items, total) = app.commands.projection().read(|s| {
            let Some(p) = s.project(&project) else {
                return (Vec::new(), 0);
            };
            let mut matching: Vec<&Work> = p
                .work
                .iter()
                .filter(|w| status.is_none_or(|st| w.status == st))
                .filter(|w| boundary.as_ref().is_none_or(|b| &w.boundary == b))
                .filter(|w| capability.0.as_ref().is_none_or(|c| &w.capability == c))
                .filter(|w| {
                    assigned_to
                        .0
                        .as_ref()
                        .is_none_or(|a| w.assigned_to.as_ref() == Some(a))
                })
                .collect();
            matching.sort_by_key(|w| (std::cmp::Reverse(w.priority), w.submitted_sequence));
            let total = matching.len();
            let views = matching
                .into_iter()
                .skip(page.offset)
                .take(page.limit)
                .map(|w| WorkView::new(&project, p, w))
                .collect::<Vec<_>>();
            (views, total)
        });
        let links = pagination::links(page, items.len(), total, &hash);
        Ok(ListResponse::Ok(
            Json(WorkList {
                count: items.len(),
                work_items: items,
                total,
                has_more: links.has_more,
                next_cursor: links.next_cursor,
                prev_cursor: links.prev_cursor,
            }),
            deprecated,
        ))
    }

    /// Get a work item.
    #[oai(path = "/api/work/:id", method = "get")]
    async fn get(
        &self,
        app: Data<&Arc<AppState>>,
        id: Path<String>,
        #[oai(name = "projectId")] project_id: Query<Option<String>>,
    ) -> Result<Json<WorkView>, ApiError> {
        Ok(Json(app.find_work(project_id.0.as_deref(), &id.0)?.1))
    }

    /// Cancel a work item; an agent running it is told to stop. Completed work cannot be
    /// cancelled (409); cancelling twice is a no-op.
    #[oai(path = "/api/work/:id/cancel", method = "post")]
    async fn cancel(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        id: Path<String>,
        #[oai(name = "projectId")] project_id: Query<Option<String>>,
    ) -> Result<Json<WorkChanged>, ApiError> {
        let (project, _) = app.find_work(project_id.0.as_deref(), &id.0)?;
        let changed = app
            .cancel_one(&actor, &project, &id.0, Some("user-requested".into()))
            .await?;
        let (_, view) = app.find_work(Some(&project), &id.0)?;
        Ok(Json(WorkChanged {
            success: true,
            message: if changed {
                format!("Work item {} cancelled", id.0)
            } else {
                format!("Work item {} was already cancelled", id.0)
            },
            work_item: Some(view),
        }))
    }

    /// Put a dead-lettered or failed item back in the queue with its attempts reset.
    #[oai(path = "/api/work/:id/retry", method = "post")]
    async fn retry(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        id: Path<String>,
        #[oai(name = "projectId")] project_id: Query<Option<String>>,
    ) -> Result<Json<WorkChanged>, ApiError> {
        let (project, _) = app.find_work(project_id.0.as_deref(), &id.0)?;
        app.commands
            .execute(
                &actor.context(),
                &project,
                WorkCommand::Retry {
                    work_id: id.0.clone(),
                },
            )
            .await?;
        let (_, view) = app.find_work(Some(&project), &id.0)?;
        Ok(Json(WorkChanged {
            success: true,
            message: format!("Work item {} queued again", id.0),
            work_item: Some(view),
        }))
    }

    /// Cancel several work items, by id or by filter.
    #[oai(path = "/api/work/cancel-batch", method = "post")]
    async fn cancel_batch(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        #[oai(name = "projectId")] project_id: Query<Option<String>>,
        body: Json<Strict<CancelBatchRequest>>,
    ) -> Result<Json<CancelBatchResponse>, ApiError> {
        let body = body.0 .0;
        let project = app.project(body.project_id.as_deref().or(project_id.0.as_deref()))?;
        if let Some(reason) = &body.reason {
            if !CANCEL_REASONS.contains(&reason.as_str()) {
                return Err(ApiError::validation(
                    "reason",
                    format!(
                        "Invalid reason. Must be one of: {}",
                        CANCEL_REASONS.join(", ")
                    ),
                ));
            }
        }
        let ids: Vec<String> = match (&body.work_item_ids, &body.filter) {
            (None, None) => {
                return Err(ApiError::bad_request(
                    "Either filter or workItemIds must be provided",
                ))
            }
            (Some(ids), _) => ids.clone(),
            (None, Some(f)) => {
                let status = status_filter(f.status.as_deref())?;
                app.commands.projection().read(|s| {
                    s.project(&project).map_or_else(Vec::new, |p| {
                        p.work
                            .iter()
                            .filter(|w| status.is_none_or(|st| w.status == st))
                            .filter(|w| f.boundary.as_ref().is_none_or(|b| &w.boundary == b))
                            .filter(|w| f.capability.as_ref().is_none_or(|c| &w.capability == c))
                            .filter(|w| f.min_priority.is_none_or(|m| i64::from(w.priority) >= m))
                            .filter(|w| {
                                f.assigned_to
                                    .as_ref()
                                    .is_none_or(|a| w.assigned_to.as_ref() == Some(a))
                            })
                            .map(|w| w.id.clone())
                            .collect()
                    })
                })
            }
        };
        let mut outcome = BatchOutcome::default();
        let (mut cancelled, mut not_cancellable) = (Vec::new(), Vec::new());
        for id in ids {
            match app
                .cancel_one(&actor, &project, &id, body.reason.clone())
                .await
            {
                Ok(_) => {
                    cancelled.push(id.clone());
                    outcome.succeeded(id);
                }
                Err(e) => {
                    if matches!(e, ApiError::Conflict(_)) {
                        not_cancellable.push(id.clone());
                    }
                    outcome.failed(id, e.into_message());
                }
            }
        }
        Ok(Json(CancelBatchResponse {
            outcome: outcome.finish(),
            cancelled_items: cancelled,
            reassigned_items: vec![],
            not_cancellable,
        }))
    }
}
