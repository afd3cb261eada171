//! `/api/targets`: spin-up targets, every change recorded as an event.

mod types;

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;
use projections::{HealthStatus, Target, TargetStatus};

use crate::api::at::AtResponse;
use crate::api::batch::BatchOutcome;
use crate::api::error::ApiError;
use crate::api::events::EventPage;
use crate::api::pagination::{self, filter_hash};
use crate::api::strict::Strict;
use crate::api::{Actor, AppState, Tag};
use crate::time::rfc3339;
use decide::target::{NewTarget, TargetPatch};
use decide::TargetCommand;

pub use types::*;

/// How long a manual spin-up waits for the mechanism's answer before it answers itself.
const MECHANISM_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

pub struct TargetsApi;

fn changed(project: &str, app: &AppState, key: &str, message: String) -> TargetChanged {
    // Read right after the request changed it, in a project it may see.
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
    #[oai(path = "/api/targets", method = "get", operation_id = "listTargets")]
    async fn list(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        /// Agent type.
        #[oai(name = "type")]
        agent_type: Query<Option<String>>,
        status: Query<Option<TargetStatusName>>,
        capability: Query<Option<String>>,
        boundary: Query<Option<String>>,
        /// Deprecated alias of `boundary`.
        classification: Query<Option<String>>,
        mechanism: Query<Option<MechanismName>>,
        #[oai(name = "healthStatus")] health_status: Query<Option<HealthStatusName>>,
        tag: Query<Option<String>>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
        cursor: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] limit: Query<Option<i64>>,
    ) -> Result<ListResponse, ApiError> {
        let project = app.project(actor.0, project_id.0.as_deref())?;
        let deprecated = (classification.0.is_some() && boundary.0.is_none())
            .then(|| "classification (use boundary instead)".to_string());
        let boundary = boundary.0.or(classification.0);
        let status = status.0.map(TargetStatus::from);
        let health = health_status.0.map(HealthStatus::from);
        let mechanism = mechanism.0.map(events::target::Mechanism::from);
        let hash = filter_hash(&[
            ("agentType", agent_type.0.as_deref()),
            ("status", status.map(TargetStatus::as_str)),
            ("capability", capability.0.as_deref()),
            ("boundary", boundary.as_deref()),
            ("mechanism", mechanism.map(|m| m.as_str())),
            ("healthStatus", health.map(HealthStatus::as_str)),
            ("tag", tag.0.as_deref()),
        ]);
        let page = pagination::page(cursor.0.as_deref(), limit.0, &hash)?;
        let contains =
            |list: &[String], v: &Option<String>| v.as_ref().is_none_or(|v| list.contains(v));
        let after = match page.after.as_deref() {
            Some(a) => Some(a.parse::<u64>().map_err(|_| {
                ApiError::validation(
                    "cursor",
                    "is not a cursor returned by this API; start a new query without it",
                )
            })?),
            None => None,
        };
        let (targets, total, last) = app.read(actor.0, |s| {
            let Some(p) = s.project(&project) else {
                return (Vec::new(), 0, None);
            };
            let matches = |t: &&Target| {
                agent_type.0.as_ref().is_none_or(|a| &t.agent_type == a)
                    && status.is_none_or(|s| t.status == s)
                    && health.is_none_or(|h| t.health_status == h)
                    && mechanism.is_none_or(|m| t.config.mechanism() == m)
                    && contains(&t.capabilities, &capability.0)
                    && contains(&t.boundaries, &boundary)
                    && contains(&t.tags, &tag.0)
            };
            let only_status = agent_type.0.is_none()
                && health.is_none()
                && mechanism.is_none()
                && capability.0.is_none()
                && boundary.is_none()
                && tag.0.is_none();
            // The counters give the total; only other filters need a pass.
            let total = match (only_status, status) {
                (true, None) => p.targets.len(),
                (true, Some(s)) => p.targets.count(s),
                (false, _) => p.targets.iter().filter(matches).count(),
            };
            let skip = if after.is_some() { 0 } else { page.offset };
            let rows: Vec<&Target> = p
                .targets
                .listed(after)
                .filter(matches)
                .skip(skip)
                .take(page.limit)
                .collect();
            let last = rows.last().map(|t| t.registered_sequence.to_string());
            let views = rows
                .into_iter()
                .map(|t| TargetView::new(&project, t))
                .collect::<Vec<_>>();
            (views, total, last)
        });
        let links = pagination::links(&page, targets.len(), total, &hash, last);
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
    #[oai(
        path = "/api/targets",
        method = "post",
        operation_id = "registerTarget"
    )]
    async fn register(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
        body: Json<RegisterBody>,
    ) -> Result<CreatedResponse, ApiError> {
        let body = body.0 .0;
        if body.boundaries.is_some() && body.classifications.is_some() {
            return Err(ApiError::validation(
                "classifications",
                "give boundaries or its alias classifications, not both",
            ));
        }
        let project = app.project(
            actor.0,
            body.project_id.as_deref().or(project_id.0.as_deref()),
        )?;
        let target_id = uuid::Uuid::new_v4().to_string();
        let command = TargetCommand::Register {
            target_id: target_id.clone(),
            target: NewTarget {
                name: body.name,
                description: body.description,
                agent_type: body.agent_type,
                capabilities: body.capabilities,
                boundaries: body.boundaries.or(body.classifications),
                mechanism: events::target::Mechanism::from(body.mechanism)
                    .as_str()
                    .into(),
                config: serde_json::Value::Object(body.config.into_iter().collect()),
                health_check: body.health_check.map(Into::into),
                tags: body.tags,
                max_agents: body.max_agents,
                enabled: body.enabled,
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

    /// Get a target by id or name: as it is, or with `at` (a sequence) or `asOf` (an
    /// RFC 3339 time) as it was then (the `Weft-Sequence` header names the point used).
    #[oai(path = "/api/targets/:id", method = "get", operation_id = "getTarget")]
    async fn get(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        id: Path<String>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
        /// The target as it was after the event at this sequence (or the last one before it).
        at: Query<Option<u64>>,
        /// The target as it was after the last event recorded at or before this time.
        #[oai(name = "asOf")]
        as_of: Query<Option<String>>,
    ) -> Result<AtResponse<TargetView>, ApiError> {
        let seen = app.seen(at.0, as_of.0.as_deref()).await?;
        let (sequence, (_, view)) =
            app.find_target_seen(actor.0, &seen, project_id.0.as_deref(), &id.0)?;
        Ok(AtResponse::Ok(Json(view), sequence))
    }

    /// A target's history: its events in order (registration, changes, health checks),
    /// with time, actor, correlation and causation ids, and what each changed.
    #[oai(
        path = "/api/targets/:id/history",
        method = "get",
        operation_id = "getTargetHistory"
    )]
    async fn history(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        id: Path<String>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
        /// Only events after this sequence.
        after: Query<Option<u64>>,
        /// At most this many events (1-1000, default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<i64>>,
    ) -> Result<Json<EventPage>, ApiError> {
        let (project, view) = app.find_target(actor.0, project_id.0.as_deref(), &id.0)?;
        app.history(
            &project,
            events::AggregateKind::Target,
            &view.id,
            after.0,
            limit.0,
        )
        .await
    }

    /// Change a target's settings.
    #[oai(
        path = "/api/targets/:id",
        method = "put",
        operation_id = "updateTarget"
    )]
    async fn update(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        id: Path<String>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
        body: Json<Strict<TargetUpdateRequest>>,
    ) -> Result<Json<TargetView>, ApiError> {
        let body = body.0 .0;
        let (project, _) = app.find_target(
            actor.0,
            body.project_id.as_deref().or(project_id.0.as_deref()),
            &id.0,
        )?;
        let patch = TargetPatch {
            description: body.description,
            capabilities: body.capabilities,
            boundaries: body.boundaries,
            config: body
                .config
                .map(|c| serde_json::Value::Object(c.into_iter().collect())),
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
    #[oai(
        path = "/api/targets/:id",
        method = "delete",
        operation_id = "removeTarget"
    )]
    async fn remove(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        id: Path<String>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
    ) -> Result<Json<TargetChanged>, ApiError> {
        let (project, _) = app.find_target(actor.0, project_id.0.as_deref(), &id.0)?;
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
    #[oai(
        path = "/api/targets/:id/enable",
        method = "post",
        operation_id = "enableTarget"
    )]
    async fn enable(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        id: Path<String>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
    ) -> Result<Json<TargetChanged>, ApiError> {
        let (project, _) = app.find_target(actor.0, project_id.0.as_deref(), &id.0)?;
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
    #[oai(
        path = "/api/targets/:id/disable",
        method = "post",
        operation_id = "disableTarget"
    )]
    async fn disable(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        id: Path<String>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
        /// Why, recorded in the event and shown as `disabledReason`.
        reason: Query<Option<String>>,
    ) -> Result<Json<TargetChanged>, ApiError> {
        let (project, _) = app.find_target(actor.0, project_id.0.as_deref(), &id.0)?;
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
    #[oai(
        path = "/api/targets/:id/test",
        method = "post",
        operation_id = "testTarget"
    )]
    async fn test(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        id: Path<String>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
    ) -> Result<Json<HealthCheckResult>, ApiError> {
        let (project, view) = app.find_target(actor.0, project_id.0.as_deref(), &id.0)?;
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
    #[oai(
        path = "/api/targets/:id/spin-up",
        method = "post",
        operation_id = "spinUpTarget"
    )]
    async fn spin_up(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        id: Path<String>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
    ) -> Result<Json<SpinUpResponse>, ApiError> {
        let (project, view) = app.find_target(actor.0, project_id.0.as_deref(), &id.0)?;
        let operation = app
            .coordinator
            .spin_up_by_hand(&actor.context(), &project, &view.id)
            .await?
            .ok_or_else(|| ApiError::unavailable("the spin-up was not recorded; retry"))?;
        // The writer's instance calls the mechanism; answer with what it said.
        let spin_up = app
            .commands
            .projection()
            .wait_until(MECHANISM_PATIENCE, |s| {
                let spin_up = s.project(&project)?.spin_ups.get(&operation)?;
                (spin_up.status != projections::SpinUpStatus::Triggered).then(|| spin_up.clone())
            })
            .await
            .ok_or_else(|| {
                ApiError::unavailable(
                    "recorded, but the mechanism has not answered yet; follow the spin-up with GET /api/targets/{id}",
                )
            })?;
        Ok(Json(SpinUpResponse {
            operation_id: operation,
            target_name: view.name,
            status: spin_up.status.into(),
            success: spin_up.status != projections::SpinUpStatus::Failed,
            detail: spin_up.detail,
            error: spin_up.error,
        }))
    }

    /// Disable several targets, by ids/names or by a filter.
    #[oai(
        path = "/api/targets/disable-batch",
        method = "post",
        operation_id = "disableTargets"
    )]
    async fn disable_batch(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
        body: Json<Strict<DisableBatchRequest>>,
    ) -> Result<Json<DisableBatchResponse>, ApiError> {
        let body = body.0 .0;
        let project = app.project(
            actor.0,
            body.project_id.as_deref().or(project_id.0.as_deref()),
        )?;
        let keys: Vec<String> = match (&body.target_ids, &body.filter) {
            (None, None) => {
                return Err(ApiError::bad_request(
                    "Either filter or targetIds must be provided",
                ))
            }
            (Some(ids), _) => ids.clone(),
            (None, Some(filter)) => {
                let status = filter.status.map(TargetStatus::from);
                let mechanism = filter.mechanism.map(events::target::Mechanism::from);
                app.read(actor.0, |s| {
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
                            .filter(|t| mechanism.is_none_or(|m| t.config.mechanism() == m))
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
