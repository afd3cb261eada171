//! `/api/targets`: spin-up targets, every change recorded as an event.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use projections::{HealthStatus, Target, TargetStatus};

use super::batch::BatchOutcome;
use super::error::ApiError;
use super::pagination::{self, filter_hash};
use super::strict::Strict;
use super::{Actor, AppState, Tag};
use crate::time::rfc3339;
use decide::target::{HealthCheckInput, NewTarget, TargetPatch};
use decide::TargetCommand;

pub struct TargetsApi;

#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "kebab-case")]
pub enum TargetStatusName {
    Available,
    InUse,
    Disabled,
    Error,
}

impl From<TargetStatus> for TargetStatusName {
    fn from(s: TargetStatus) -> Self {
        match s {
            TargetStatus::Available => Self::Available,
            TargetStatus::InUse => Self::InUse,
            TargetStatus::Disabled => Self::Disabled,
            TargetStatus::Error => Self::Error,
        }
    }
}

#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "kebab-case")]
pub enum HealthStatusName {
    Healthy,
    Unhealthy,
    Unknown,
}

impl From<HealthStatus> for HealthStatusName {
    fn from(s: HealthStatus) -> Self {
        match s {
            HealthStatus::Healthy => Self::Healthy,
            HealthStatus::Unhealthy => Self::Unhealthy,
            HealthStatus::Unknown => Self::Unknown,
        }
    }
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct HealthCheckView {
    pub enabled: bool,
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

/// A spin-up target, in the original's field order. `config` uses the nested layout
/// (`{"mechanism": "ssh", "ssh": {...}}`) and never contains a secret.
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct TargetView {
    pub id: String,
    pub name: String,
    #[oai(skip_serializing_if_is_none)]
    pub description: Option<String>,
    pub agent_type: String,
    pub capabilities: Vec<String>,
    pub boundaries: Vec<String>,
    pub mechanism: String,
    pub config: serde_json::Value,
    pub status: TargetStatusName,
    #[oai(skip_serializing_if_is_none)]
    pub current_agent_guid: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub health_check: Option<HealthCheckView>,
    pub health_status: HealthStatusName,
    #[oai(skip_serializing_if_is_none)]
    pub last_health_check: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub last_error: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub disabled_reason: Option<String>,
    /// How it was registered (`api`, `cli`, `agent`, `config`).
    pub registered_by: String,
    /// Who registered it (the token's name, or `anonymous` without auth).
    pub registered_by_actor: String,
    pub registered_at: String,
    pub updated_at: String,
    #[oai(skip_serializing_if_is_none)]
    pub last_used_at: Option<String>,
    pub use_count: u64,
    pub tags: Vec<String>,
    /// How many agents it may run at once.
    pub max_agents: u32,
    pub project_id: String,
}

impl TargetView {
    pub fn new(project: &str, t: &Target) -> Self {
        let mechanism = t.config.mechanism();
        let mut config = serde_json::Map::new();
        config.insert("mechanism".into(), mechanism.as_str().into());
        if let Ok(serde_json::Value::Object(outer)) = serde_json::to_value(&t.config) {
            config.extend(outer);
        }
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            description: t.description.clone(),
            agent_type: t.agent_type.clone(),
            capabilities: t.capabilities.clone(),
            boundaries: t.boundaries.clone(),
            mechanism: mechanism.as_str().into(),
            config: serde_json::Value::Object(config),
            status: t.status.into(),
            current_agent_guid: t.current_agent_guid.clone(),
            health_check: t.health_check.as_ref().map(|h| HealthCheckView {
                enabled: h.enabled,
                interval_ms: h.interval_ms,
                timeout_ms: h.timeout_ms,
            }),
            health_status: t.health_status.into(),
            last_health_check: t.last_health_check_ms.map(rfc3339),
            last_error: t.last_error.clone(),
            disabled_reason: t.disabled_reason.clone(),
            registered_by: t.registered_by.clone(),
            registered_by_actor: t.registered_by_actor.clone(),
            registered_at: rfc3339(t.registered_at_ms),
            updated_at: rfc3339(t.updated_at_ms),
            last_used_at: t.last_used_at_ms.map(rfc3339),
            use_count: t.use_count,
            tags: t.tags.clone(),
            max_agents: t.max_agents,
            project_id: project.to_string(),
        }
    }
}

#[derive(Object, serde::Deserialize, Clone, Debug)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckRequest {
    pub enabled: bool,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
}

impl From<HealthCheckRequest> for HealthCheckInput {
    fn from(h: HealthCheckRequest) -> Self {
        HealthCheckInput {
            enabled: h.enabled,
            interval_ms: h.interval_ms,
            timeout_ms: h.timeout_ms,
        }
    }
}

/// A target to register. `config` may be nested (`{"mechanism":"ssh","ssh":{"host":...}}`)
/// or flat (`{"mechanism":"ssh","host":...}`); secrets are referenced, never sent.
#[derive(Object, serde::Deserialize, Clone, Debug)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRegisterRequest {
    pub name: String,
    pub description: Option<String>,
    /// `claude-code`, `copilot-cli`, or another agent type.
    pub agent_type: String,
    pub capabilities: Vec<String>,
    /// Default: corporate, corporate-adjacent, personal, open-source.
    pub boundaries: Option<Vec<String>>,
    /// `ssh`, `github-actions`, `local`, `webhook` or `kubernetes`.
    pub mechanism: String,
    pub config: serde_json::Value,
    pub health_check: Option<HealthCheckRequest>,
    pub tags: Option<Vec<String>>,
    /// How many agents it may run at once (default 1).
    pub max_agents: Option<i64>,
    /// The project (default `LOOMINAL_PROJECT_ID`).
    pub project_id: Option<String>,
}

/// Fields to change; absent ones stay. `config` is merged key by key (null removes one).
#[derive(Object, serde::Deserialize, Clone, Debug)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetUpdateRequest {
    pub description: Option<String>,
    pub capabilities: Option<Vec<String>>,
    pub boundaries: Option<Vec<String>>,
    pub config: Option<serde_json::Value>,
    pub health_check: Option<HealthCheckRequest>,
    pub tags: Option<Vec<String>>,
    pub max_agents: Option<i64>,
    pub project_id: Option<String>,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct TargetList {
    pub targets: Vec<TargetView>,
    pub count: usize,
    pub total: usize,
    pub has_more: bool,
    pub next_cursor: Option<String>,
    pub prev_cursor: Option<String>,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct TargetChanged {
    pub success: bool,
    pub message: String,
    /// The target as it is now (absent after removal).
    #[oai(skip_serializing_if_is_none)]
    pub target: Option<TargetView>,
}

#[derive(Object, serde::Deserialize, Clone, Debug, Default)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisableBatchFilter {
    pub agent_type: Option<String>,
    pub status: Option<String>,
    pub mechanism: Option<String>,
}

#[derive(Object, serde::Deserialize, Clone, Debug)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisableBatchRequest {
    pub filter: Option<DisableBatchFilter>,
    /// Ids or names.
    pub target_ids: Option<Vec<String>>,
    /// Accepted for compatibility: a disabled target is never used for spin-ups anyway.
    pub prevent_spin_up: Option<bool>,
    pub reason: Option<String>,
    pub project_id: Option<String>,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct DisableBatchResponse {
    #[oai(flatten)]
    pub outcome: BatchOutcome,
    pub disabled_targets: Vec<String>,
    pub already_disabled: Vec<String>,
}

/// The result of a health check (the original answered `{healthy, latencyMs}`).
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct HealthCheckResult {
    pub target_id: String,
    pub healthy: bool,
    pub latency_ms: u64,
    pub timestamp: String,
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<String>,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct SpinUpResponse {
    /// The spin-up's id.
    pub operation_id: String,
    pub target_name: String,
    /// started (waiting for the agent to register) or failed.
    pub status: String,
    pub success: bool,
    #[oai(skip_serializing_if_is_none)]
    pub detail: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<String>,
}

#[derive(ApiResponse)]
pub enum ListResponse {
    #[oai(status = 200)]
    Ok(
        Json<TargetList>,
        /// Set when the deprecated `classification` parameter was used.
        #[oai(header = "X-Deprecated-Param")]
        Option<String>,
    ),
}

#[derive(ApiResponse)]
pub enum CreatedResponse {
    #[oai(status = 201)]
    Created(Json<TargetView>),
}

fn mechanism_filter(value: Option<&str>) -> Result<(), ApiError> {
    match value {
        Some(m) if events::target::Mechanism::parse(m).is_none() => Err(ApiError::validation(
            "mechanism",
            "must be one of ssh, github-actions, local, webhook, kubernetes",
        )),
        _ => Ok(()),
    }
}

fn status_filter(value: Option<&str>) -> Result<Option<TargetStatus>, ApiError> {
    value
        .map(|s| match s {
            "available" => Ok(TargetStatus::Available),
            "in-use" => Ok(TargetStatus::InUse),
            "disabled" => Ok(TargetStatus::Disabled),
            "error" => Ok(TargetStatus::Error),
            _ => Err(ApiError::validation(
                "status",
                "must be one of available, in-use, disabled, error",
            )),
        })
        .transpose()
}

fn health_filter(value: Option<&str>) -> Result<Option<HealthStatus>, ApiError> {
    value
        .map(|s| match s {
            "healthy" => Ok(HealthStatus::Healthy),
            "unhealthy" => Ok(HealthStatus::Unhealthy),
            "unknown" => Ok(HealthStatus::Unknown),
            _ => Err(ApiError::validation(
                "healthStatus",
                "must be one of healthy, unhealthy, unknown",
            )),
        })
        .transpose()
}

fn changed(project: &str, app: &AppState, key: &str, message: String) -> TargetChanged {
    let target = app.commands.projection().read(|s| {
        s.project(project)
            .and_then(|p| p.targets.get_by_id_or_name(key))
            .map(|t| TargetView::new(project, t))
    });
    TargetChanged {
        success: true,
        message,
        target,
    }
}

#[OpenApi(tag = "Tag::Targets")]
impl TargetsApi {
    /// List targets (disabled ones included), in registration order.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/api/targets", method = "get")]
    async fn list(
        &self,
        app: Data<&Arc<AppState>>,
        /// Agent type.
        #[oai(name = "type")]
        agent_type: Query<Option<String>>,
        status: Query<Option<String>>,
        capability: Query<Option<String>>,
        boundary: Query<Option<String>>,
        /// Deprecated alias of `boundary`.
        classification: Query<Option<String>>,
        mechanism: Query<Option<String>>,
        #[oai(name = "healthStatus")] health_status: Query<Option<String>>,
        tag: Query<Option<String>>,
        #[oai(name = "projectId")] project_id: Query<Option<String>>,
        cursor: Query<Option<String>>,
        limit: Query<Option<i64>>,
    ) -> Result<ListResponse, ApiError> {
        let project = app.project(project_id.0.as_deref())?;
        let deprecated = (classification.0.is_some() && boundary.0.is_none())
            .then(|| "classification (use boundary instead)".to_string());
        let boundary = boundary.0.or(classification.0);
        let status = status_filter(status.0.as_deref())?;
        let health = health_filter(health_status.0.as_deref())?;
        mechanism_filter(mechanism.0.as_deref())?;
        let hash = filter_hash(&[
            ("agentType", agent_type.0.as_deref()),
            ("status", status.map(TargetStatus::as_str)),
            ("capability", capability.0.as_deref()),
            ("boundary", boundary.as_deref()),
            ("mechanism", mechanism.0.as_deref()),
            ("healthStatus", health.map(HealthStatus::as_str)),
            ("tag", tag.0.as_deref()),
        ]);
        let page = pagination::page(cursor.0.as_deref(), limit.0, &hash)?;
        let contains =
            |list: &[String], v: &Option<String>| v.as_ref().is_none_or(|v| list.contains(v));
        let (targets, total) = app.commands.projection().read(|s| {
            let Some(p) = s.project(&project) else {
                return (Vec::new(), 0);
            };
            let matching: Vec<&Target> = p
                .targets
                .iter()
                .filter(|t| agent_type.0.as_ref().is_none_or(|a| &t.agent_type == a))
                .filter(|t| status.is_none_or(|s| t.status == s))
                .filter(|t| health.is_none_or(|h| t.health_status == h))
                .filter(|t| {
                    mechanism
                        .0
                        .as_ref()
                        .is_none_or(|m| t.config.mechanism().as_str() == m)
                })
                .filter(|t| contains(&t.capabilities, &capability.0))
                .filter(|t| contains(&t.boundaries, &boundary))
                .filter(|t| contains(&t.tags, &tag.0))
                .collect();
            let total = matching.len();
            let views = matching
                .into_iter()
                .skip(page.offset)
                .take(page.limit)
                .map(|t| TargetView::new(&project, t))
                .collect::<Vec<_>>();
            (views, total)
        });
        let links = pagination::links(page, targets.len(), total, &hash);
        Ok(ListResponse::Ok(
            Json(TargetList {
                count: targets.len(),
                targets,
                total,
                has_more: links.has_more,
                next_cursor: links.next_cursor,
                prev_cursor: links.prev_cursor,
            }),
            deprecated,
        ))
    }

    /// Register a target.
    #[oai(path = "/api/targets", method = "post")]
    async fn register(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        #[oai(name = "projectId")] project_id: Query<Option<String>>,
        body: Json<Strict<TargetRegisterRequest>>,
    ) -> Result<CreatedResponse, ApiError> {
        let body = body.0 .0;
        let project = app.project(body.project_id.as_deref().or(project_id.0.as_deref()))?;
        let target_id = uuid::Uuid::new_v4().to_string();
        let command = TargetCommand::Register {
            target_id: target_id.clone(),
            target: NewTarget {
                name: body.name,
                description: body.description,
                agent_type: body.agent_type,
                capabilities: body.capabilities,
                boundaries: body.boundaries,
                mechanism: body.mechanism,
                config: body.config,
                health_check: body.health_check.map(Into::into),
                tags: body.tags,
                max_agents: body.max_agents,
            },
        };
        app.commands
            .execute(&actor.context(), &project, command)
            .await?;
        let view = app
            .commands
            .projection()
            .read(|s| {
                s.project(&project)
                    .and_then(|p| p.targets.get(&target_id))
                    .map(|t| TargetView::new(&project, t))
            })
            .ok_or_else(|| {
                ApiError::unavailable("recorded, but not yet visible; retry the read")
            })?;
        Ok(CreatedResponse::Created(Json(view)))
    }

    /// Get a target by id or name.
    #[oai(path = "/api/targets/:id", method = "get")]
    async fn get(
        &self,
        app: Data<&Arc<AppState>>,
        id: Path<String>,
        #[oai(name = "projectId")] project_id: Query<Option<String>>,
    ) -> Result<Json<TargetView>, ApiError> {
        let (_, view) = app.find_target(project_id.0.as_deref(), &id.0)?;
        Ok(Json(view))
    }

    /// Change a target's settings.
    #[oai(path = "/api/targets/:id", method = "put")]
    async fn update(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        id: Path<String>,
        #[oai(name = "projectId")] project_id: Query<Option<String>>,
        body: Json<Strict<TargetUpdateRequest>>,
    ) -> Result<Json<TargetView>, ApiError> {
        let body = body.0 .0;
        let (project, _) = app.find_target(
            body.project_id.as_deref().or(project_id.0.as_deref()),
            &id.0,
        )?;
        let patch = TargetPatch {
            description: body.description,
            capabilities: body.capabilities,
            boundaries: body.boundaries,
            config: body.config,
            health_check: body.health_check.map(Into::into),
            tags: body.tags,
            max_agents: body.max_agents,
        };
        let recorded = app
            .commands
            .execute(
                &actor.context(),
                &project,
                TargetCommand::Update {
                    key: id.0.clone(),
                    patch,
                },
            )
            .await?;
        let key = recorded
            .first()
            .map_or(id.0.clone(), |r| r.envelope.aggregate_id.clone());
        changed(&project, &app, &key, String::new())
            .target
            .map(Json)
            .ok_or_else(|| {
                ApiError::not_found(format!("Target with ID or name {} not found", id.0))
            })
    }

    /// Remove a target. Its history stays in the event log.
    #[oai(path = "/api/targets/:id", method = "delete")]
    async fn remove(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        id: Path<String>,
        #[oai(name = "projectId")] project_id: Query<Option<String>>,
    ) -> Result<Json<TargetChanged>, ApiError> {
        let (project, _) = app.find_target(project_id.0.as_deref(), &id.0)?;
        app.commands
            .execute(
                &actor.context(),
                &project,
                TargetCommand::Remove { key: id.0.clone() },
            )
            .await?;
        Ok(Json(TargetChanged {
            success: true,
            message: format!("Target {} removed", id.0),
            target: None,
        }))
    }

    /// Enable a target (no change when it already is).
    #[oai(path = "/api/targets/:id/enable", method = "post")]
    async fn enable(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        id: Path<String>,
        #[oai(name = "projectId")] project_id: Query<Option<String>>,
    ) -> Result<Json<TargetChanged>, ApiError> {
        let (project, _) = app.find_target(project_id.0.as_deref(), &id.0)?;
        let recorded = app
            .commands
            .execute(
                &actor.context(),
                &project,
                TargetCommand::Enable { key: id.0.clone() },
            )
            .await?;
        let key = recorded
            .first()
            .map_or(id.0.clone(), |r| r.envelope.aggregate_id.clone());
        Ok(Json(changed(
            &project,
            &app,
            &key,
            format!("Target {} enabled", id.0),
        )))
    }

    /// Disable a target: it is not used for spin-ups until enabled again.
    #[oai(path = "/api/targets/:id/disable", method = "post")]
    async fn disable(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        id: Path<String>,
        #[oai(name = "projectId")] project_id: Query<Option<String>>,
        /// Why, recorded in the event and shown as `disabledReason`.
        reason: Query<Option<String>>,
    ) -> Result<Json<TargetChanged>, ApiError> {
        let (project, _) = app.find_target(project_id.0.as_deref(), &id.0)?;
        let recorded = app
            .commands
            .execute(
                &actor.context(),
                &project,
                TargetCommand::Disable {
                    key: id.0.clone(),
                    reason: reason.0.clone(),
                },
            )
            .await?;
        let key = recorded
            .first()
            .map_or(id.0.clone(), |r| r.envelope.aggregate_id.clone());
        Ok(Json(changed(
            &project,
            &app,
            &key,
            format!("Target {} disabled", id.0),
        )))
    }

    /// Check that the target can start agents (for `local`: the program exists and may run).
    /// The result is recorded as a `target.health-checked` event; unhealthy targets are not
    /// used for spin-ups.
    #[oai(path = "/api/targets/:id/test", method = "post")]
    async fn test(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        id: Path<String>,
        #[oai(name = "projectId")] project_id: Query<Option<String>>,
    ) -> Result<Json<HealthCheckResult>, ApiError> {
        let (project, view) = app.find_target(project_id.0.as_deref(), &id.0)?;
        let outcome = app
            .coordinator
            .check_health(&actor.context(), &project, &view.id)
            .await?;
        Ok(Json(HealthCheckResult {
            target_id: outcome.target_id,
            healthy: outcome.healthy,
            latency_ms: outcome.latency_ms,
            timestamp: rfc3339(crate::time::now_ms()),
            error: outcome.error,
        }))
    }

    /// Start an agent on this target now. Answers once the mechanism has answered; the
    /// agent's registration follows (see the spin-up's events).
    #[oai(path = "/api/targets/:id/spin-up", method = "post")]
    async fn spin_up(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        id: Path<String>,
        #[oai(name = "projectId")] project_id: Query<Option<String>>,
    ) -> Result<Json<SpinUpResponse>, ApiError> {
        let (project, view) = app.find_target(project_id.0.as_deref(), &id.0)?;
        let operation = app
            .coordinator
            .spin_up_by_hand(&actor.context(), &project, &view.id)
            .await?
            .ok_or_else(|| ApiError::unavailable("the spin-up was not recorded; retry"))?;
        let spin_up = app
            .commands
            .projection()
            .read(|s| {
                s.project(&project)
                    .and_then(|p| p.spin_ups.get(&operation))
                    .cloned()
            })
            .ok_or_else(|| {
                ApiError::unavailable("recorded, but not yet visible; retry the read")
            })?;
        Ok(Json(SpinUpResponse {
            operation_id: operation,
            target_name: view.name,
            status: spin_up.status.as_str().into(),
            success: spin_up.status != projections::SpinUpStatus::Failed,
            detail: spin_up.detail,
            error: spin_up.error,
        }))
    }

    /// Disable several targets, by ids/names or by a filter.
    #[oai(path = "/api/targets/disable-batch", method = "post")]
    async fn disable_batch(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        #[oai(name = "projectId")] project_id: Query<Option<String>>,
        body: Json<Strict<DisableBatchRequest>>,
    ) -> Result<Json<DisableBatchResponse>, ApiError> {
        let body = body.0 .0;
        let project = app.project(body.project_id.as_deref().or(project_id.0.as_deref()))?;
        let keys: Vec<String> = match (&body.target_ids, &body.filter) {
            (None, None) => {
                return Err(ApiError::bad_request(
                    "Either filter or targetIds must be provided",
                ))
            }
            (Some(ids), _) => ids.clone(),
            (None, Some(filter)) => {
                let status = status_filter(filter.status.as_deref())?;
                mechanism_filter(filter.mechanism.as_deref())?;
                app.commands.projection().read(|s| {
                    s.project(&project).map_or_else(Vec::new, |p| {
                        p.targets
                            .iter()
                            .filter(|t| {
                                filter
                                    .agent_type
                                    .as_ref()
                                    .is_none_or(|a| &t.agent_type == a)
                            })
                            .filter(|t| status.is_none_or(|st| t.status == st))
                            .filter(|t| {
                                filter
                                    .mechanism
                                    .as_ref()
                                    .is_none_or(|m| t.config.mechanism().as_str() == m)
                            })
                            .map(|t| t.id.clone())
                            .collect()
                    })
                })
            }
        };
        let mut outcome = BatchOutcome::default();
        let (mut disabled, mut already) = (Vec::new(), Vec::new());
        let ctx = actor.context();
        for key in keys {
            let result = app
                .commands
                .execute(
                    &ctx,
                    &project,
                    TargetCommand::Disable {
                        key: key.clone(),
                        reason: body.reason.clone(),
                    },
                )
                .await;
            match result {
                Ok(recorded) if !recorded.is_empty() => {
                    disabled.push(key.clone());
                    outcome.succeeded(key);
                }
                Ok(_) => {
                    already.push(key.clone());
                    outcome.succeeded(key);
                }
                Err(e) => outcome.failed(key, ApiError::from(e).into_message()),
            }
        }
        let response = DisableBatchResponse {
            outcome: outcome.finish(),
            disabled_targets: disabled,
            already_disabled: already,
        };
        Ok(Json(response))
    }
}
