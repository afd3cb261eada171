//! `/api/work`: submit, list, inspect, cancel and retry work items.

mod types;

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;
use projections::{Work, WorkStatus};

use crate::api::at::{AtResponse, Seen};
use crate::api::batch::BatchOutcome;
use crate::api::error::ApiError;
use crate::api::events::EventPage;
use crate::api::pagination::{self, filter_hash};
use crate::api::strict::Strict;
use crate::api::{Actor, AppState, Tag};
use decide::routing;
use decide::work::{Submission, WorkCommand};

pub use types::*;

pub struct WorkApi;

impl AppState {
    /// Finds a work item by id: in the named project, or in any (ids are unique).
    pub fn find_work(
        &self,
        actor: &Actor,
        requested: Option<&str>,
        id: &str,
    ) -> Result<(String, WorkView), ApiError> {
        self.find_work_seen(actor, &Seen::Live, requested, id)
            .map(|(_, found)| found)
    }

    /// [`Self::find_work`] in the state `seen` names, with that state's sequence.
    pub fn find_work_seen(
        &self,
        actor: &Actor,
        seen: &Seen,
        requested: Option<&str>,
        id: &str,
    ) -> Result<(u64, (String, WorkView)), ApiError> {
        let only = requested
            .map(|p| self.project(actor, Some(p)))
            .transpose()?;
        let (sequence, found) = self.read_seen(actor, seen, |s| {
            s.projects
                .iter()
                .filter(|(name, _)| only.as_ref().is_none_or(|o| o == *name))
                .find_map(|(name, p)| {
                    p.work
                        .get(id)
                        .map(|w| (name.clone(), WorkView::new(name, p, w)))
                })
        });
        found
            .map(|found| (sequence, found))
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

/// What a submit body asks for, as the rules read it (also what a dry run explains).
fn submission(body: WorkSubmitRequest, key: Option<String>) -> Result<Submission, ApiError> {
    let Some(boundary) = body.boundary.or(body.classification) else {
        return Err(ApiError::validation(
            "boundary",
            "boundary (or classification) is required",
        ));
    };
    Ok(Submission {
        task_id: body.task_id,
        description: body.description,
        capability: body.capability,
        boundary,
        priority: body.priority,
        preferred_agent_type: body.preferred_agent_type,
        required_agent_type: body.required_agent_type,
        deadline: body.deadline,
        context_data: body
            .context_data
            .map(|c| serde_json::Value::Object(c.into_iter().collect())),
        max_attempts: body.max_attempts,
        idempotency_key: key,
        workspace: body.workspace.map(|w| events::work::WorkspaceSpec {
            repo: w.repo,
            git_ref: w.git_ref,
            push: w.push.unwrap_or(false),
        }),
        max_cost_usd: body.max_cost_usd,
        resume_session: body.resume_session.unwrap_or(false),
    })
}

fn routing_view(e: decide::explain::Explanation) -> RoutingExplanation {
    let verdict = |v: decide::explain::Verdict| CandidateView {
        eligible: v.eligible(),
        reasons: v.refusals.iter().map(|r| r.as_str().to_string()).collect(),
        id: v.id,
        name: v.name,
        agent_type: v.agent_type,
    };
    RoutingExplanation {
        rule: e.rule,
        agents: e.agents.into_iter().map(verdict).collect(),
        targets: e.targets.into_iter().map(verdict).collect(),
        chosen_agent: e.chosen_agent,
        spin_up: e.spin_up,
        chosen_target: e.chosen_target,
        assigned_to: None,
        status: None,
    }
}

/// A row's place in list order, as a cursor carries it: `priority.sequence`.
fn position((priority, sequence): projections::OrderKey) -> String {
    format!("{}.{sequence}", priority.0)
}

fn parse_position(text: &str) -> Result<projections::OrderKey, ApiError> {
    text.split_once('.')
        .and_then(|(p, s)| Some((std::cmp::Reverse(p.parse().ok()?), s.parse().ok()?)))
        .ok_or_else(|| {
            ApiError::validation(
                "cursor",
                "is not a cursor returned by this API; start a new query without it",
            )
        })
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
    #[oai(path = "/api/work", method = "post", operation_id = "submitWork")]
    async fn submit(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        #[oai(name = "Idempotency-Key", validator(max_length = 256, pattern = r"\S"))]
        idempotency_key: Header<Option<String>>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
        body: Json<Strict<WorkSubmitRequest>>,
    ) -> Result<SubmitResponse, ApiError> {
        let body = body.0 .0;
        let project = app.project(
            actor.0,
            body.project_id.as_deref().or(project_id.0.as_deref()),
        )?;
        let key = idempotency_key.0;
        let id = match &key {
            Some(k) => id_for_key(&project, k),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let submission = submission(body, key)?;
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
                    status: w.status.into(),
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
    #[oai(path = "/api/work", method = "get", operation_id = "listWork")]
    async fn list(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        status: Query<Option<WorkStatusName>>,
        boundary: Query<Option<String>>,
        /// Deprecated alias of `boundary`.
        classification: Query<Option<String>>,
        capability: Query<Option<String>>,
        #[oai(name = "assignedTo")] assigned_to: Query<Option<String>>,
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
        let status = status.0.map(WorkStatus::from);
        let hash = filter_hash(&[
            ("status", status.map(WorkStatus::as_str)),
            ("boundary", boundary.as_deref()),
            ("capability", capability.0.as_deref()),
            ("assignedTo", assigned_to.0.as_deref()),
        ]);
        let page = pagination::page(cursor.0.as_deref(), limit.0, &hash)?;
        let after = page.after.as_deref().map(parse_position).transpose()?;
        let (items, total, last) = app.read(actor.0, |s| {
            let Some(p) = s.project(&project) else {
                return (Vec::new(), 0, None);
            };
            let other_filters =
                boundary.is_some() || capability.0.is_some() || assigned_to.0.is_some();
            let matches = |w: &&Work| {
                boundary.as_ref().is_none_or(|b| &w.boundary == b)
                    && capability.0.as_ref().is_none_or(|c| &w.capability == c)
                    && assigned_to
                        .0
                        .as_ref()
                        .is_none_or(|a| w.assigned_to.as_ref() == Some(a))
            };
            // The status index gives the order and the count; only the other filters
            // need a pass over the items of that status.
            let total = if other_filters {
                p.work.listed(status, None).filter(matches).count()
            } else {
                status.map_or(p.work.len(), |st| p.work.count(st))
            };
            let skip = if after.is_some() { 0 } else { page.offset };
            let rows: Vec<&Work> = p
                .work
                .listed(status, after)
                .filter(matches)
                .skip(skip)
                .take(page.limit)
                .collect();
            let last = rows.last().map(|w| position(w.order()));
            let views = rows
                .into_iter()
                .map(|w| WorkView::new(&project, p, w))
                .collect::<Vec<_>>();
            (views, total, last)
        });
        let links = pagination::links(&page, items.len(), total, &hash, last);
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

    /// Get a work item: as it is, or with `at` (a sequence) or `asOf` (an RFC 3339 time)
    /// as it was then (the `Weft-Sequence` header names the point used).
    #[oai(path = "/api/work/:id", method = "get", operation_id = "getWork")]
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
        /// The item as it was after the event at this sequence (or the last one before it).
        at: Query<Option<u64>>,
        /// The item as it was after the last event recorded at or before this time.
        #[oai(name = "asOf")]
        as_of: Query<Option<String>>,
    ) -> Result<AtResponse<WorkView>, ApiError> {
        let seen = app.seen(at.0, as_of.0.as_deref()).await?;
        let (sequence, (_, view)) =
            app.find_work_seen(actor.0, &seen, project_id.0.as_deref(), &id.0)?;
        Ok(AtResponse::Ok(Json(view), sequence))
    }

    /// A work item's history: its events in order, with time, actor, correlation and
    /// causation ids, and what each changed.
    #[oai(
        path = "/api/work/:id/history",
        method = "get",
        operation_id = "getWorkHistory"
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
        let (project, _) = app.find_work(actor.0, project_id.0.as_deref(), &id.0)?;
        app.history(
            &project,
            events::AggregateKind::Work,
            &id.0,
            after.0,
            limit.0,
        )
        .await
    }

    /// Cancel a work item; an agent running it is told to stop. Completed work cannot be
    /// cancelled (409); cancelling twice is a no-op.
    #[oai(
        path = "/api/work/:id/cancel",
        method = "post",
        operation_id = "cancelWork"
    )]
    async fn cancel(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        id: Path<String>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
    ) -> Result<Json<WorkChanged>, ApiError> {
        let (project, _) = app.find_work(actor.0, project_id.0.as_deref(), &id.0)?;
        let changed = app
            .cancel_one(&actor, &project, &id.0, Some("user-requested".into()))
            .await?;
        let (_, view) = app.find_work(actor.0, Some(&project), &id.0)?;
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
    #[oai(
        path = "/api/work/:id/retry",
        method = "post",
        operation_id = "retryWork"
    )]
    async fn retry(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        id: Path<String>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
    ) -> Result<Json<WorkChanged>, ApiError> {
        let (project, _) = app.find_work(actor.0, project_id.0.as_deref(), &id.0)?;
        app.commands
            .execute(
                &actor.context(),
                &project,
                WorkCommand::Retry {
                    work_id: id.0.clone(),
                },
            )
            .await?;
        let (_, view) = app.find_work(actor.0, Some(&project), &id.0)?;
        Ok(Json(WorkChanged {
            success: true,
            message: format!("Work item {} queued again", id.0),
            work_item: Some(view),
        }))
    }

    /// Cancel several work items, by id or by filter.
    #[oai(
        path = "/api/work/cancel-batch",
        method = "post",
        operation_id = "cancelWorkBatch"
    )]
    async fn cancel_batch(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
        body: Json<Strict<CancelBatchRequest>>,
    ) -> Result<Json<CancelBatchResponse>, ApiError> {
        let body = body.0 .0;
        let project = app.project(
            actor.0,
            body.project_id.as_deref().or(project_id.0.as_deref()),
        )?;
        let ids: Vec<String> = match (&body.work_item_ids, &body.filter) {
            (None, None) => {
                return Err(ApiError::bad_request(
                    "Either filter or workItemIds must be provided",
                ))
            }
            (Some(ids), _) => ids.clone(),
            (None, Some(f)) => {
                let status = f.status.map(WorkStatus::from);
                app.read(actor.0, |s| {
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
                .cancel_one(
                    &actor,
                    &project,
                    &id,
                    body.reason.map(|r| r.as_str().into()),
                )
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

    /// Why an item went, or would go, where it goes: every agent and target of its project,
    /// eligible or not and why, the rule, and whether a spin-up would start.
    #[oai(
        path = "/api/work/:id/routing",
        method = "get",
        operation_id = "getWorkRouting"
    )]
    async fn routing(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        id: Path<String>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
    ) -> Result<Json<RoutingExplanation>, ApiError> {
        let (project, view) = app.find_work(actor.0, project_id.0.as_deref(), &id.0)?;
        let settings = app.commands.settings();
        let now = crate::time::now_ms();
        let explained = app.read(actor.0, |s| {
            let p = s.project(&project)?;
            let w = p.work.get(&id.0)?;
            Some(decide::explain::explain(settings, p, w, now))
        });
        let explained = explained
            .ok_or_else(|| ApiError::not_found(format!("Work item with ID {} not found", id.0)))?;
        let mut answer = routing_view(explained);
        answer.assigned_to = view.assigned_to;
        answer.status = Some(view.status);
        Ok(Json(answer))
    }

    /// A dry run of submit (the same body): how the item would be routed now. Nothing is
    /// recorded.
    #[oai(
        path = "/api/work/explain",
        method = "post",
        operation_id = "explainWork"
    )]
    async fn explain(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
        body: Json<Strict<WorkSubmitRequest>>,
    ) -> Result<Json<RoutingExplanation>, ApiError> {
        let body = body.0 .0;
        let project = app.project(
            actor.0,
            body.project_id.as_deref().or(project_id.0.as_deref()),
        )?;
        let submission = submission(body, None)?;
        let settings = app.commands.settings();
        let now = crate::time::now_ms();
        let explained = app.read(actor.0, |s| {
            decide::explain::explain_submission(
                settings,
                s.project_or_empty(&project),
                &submission,
                now,
            )
        })?;
        Ok(Json(routing_view(explained)))
    }
}
