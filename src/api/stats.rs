//! `/api/stats` (the global shape every client of the original reads), per-project stats,
//! and `/metrics` in Prometheus text format. All derived from the projected state.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::at::AtResponse;
use super::error::ApiError;
use super::{Actor, AppState, Tag};
use crate::live;
use crate::time::{now_ms, rfc3339};

pub struct StatsApi;

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct Totals {
    pub agents: usize,
    pub pending_work: usize,
    pub active_work: usize,
    pub completed_work: usize,
    pub failed_work: usize,
    pub targets: usize,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct ProjectTotals {
    pub agents: usize,
    pub pending_work: usize,
    pub active_work: usize,
    pub completed_work: usize,
    pub failed_work: usize,
    pub targets: usize,
    /// When the project's latest event was recorded.
    pub last_activity: String,
}

/// Every agent and every target counts (disabled ones too); failed work includes
/// cancelled and dead-lettered items, as the original's `failed`.
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct GlobalStats {
    pub timestamp: String,
    pub total_projects: usize,
    pub totals: Totals,
    pub by_project: BTreeMap<String, ProjectTotals>,
}

#[derive(Object, Clone, Debug, serde::Serialize)]
#[oai(rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct AgentCounts {
    pub total: usize,
    pub by_type: BTreeMap<String, usize>,
    /// online, busy, offline.
    pub by_status: BTreeMap<String, usize>,
}

#[derive(Object, Clone, Debug, serde::Serialize)]
#[oai(rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct WorkCounts {
    pub pending: usize,
    /// Assigned or in progress.
    pub active: usize,
    pub completed: usize,
    /// Failed, cancelled or dead-lettered, as the original counted them.
    pub failed: usize,
}

#[derive(Object, Clone, Debug, serde::Serialize)]
#[oai(rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct TargetCounts {
    pub total: usize,
    pub available: usize,
    pub in_use: usize,
    pub disabled: usize,
}

#[derive(Object, Clone, Debug, serde::Serialize)]
#[oai(rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct WebSocketCounts {
    pub connections: usize,
    /// Topics the asking session subscribes to (0 over REST).
    pub subscriptions: usize,
}

/// One project's numbers: `GET /api/projects/{project}/stats`, and the `data` of the
/// WebSocket `stats` message.
#[derive(Object, Clone, Debug, serde::Serialize)]
#[oai(rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct ProjectStats {
    pub agents: AgentCounts,
    pub work: WorkCounts,
    pub targets: TargetCounts,
    pub websocket: WebSocketCounts,
    pub timestamp: String,
    pub project_id: String,
}

impl ProjectStats {
    /// For a project the caller may see (the handlers check before).
    pub fn new(app: &AppState, project: &str, subscriptions: usize) -> Self {
        let counts = app.commands.projection().read(|s| {
            s.project(project)
                .map(live::project_counts)
                .unwrap_or_default()
        });
        ProjectStats {
            agents: AgentCounts {
                total: counts.agents_total,
                by_type: counts.agents_by_type,
                by_status: counts.agents_by_status,
            },
            work: WorkCounts {
                pending: counts.pending,
                active: counts.active,
                completed: counts.completed,
                failed: counts.failed,
            },
            targets: TargetCounts {
                total: counts.targets_total,
                available: counts.targets_available,
                in_use: counts.targets_in_use,
                disabled: counts.targets_disabled,
            },
            websocket: WebSocketCounts {
                connections: app.live.connections.load(Ordering::Relaxed),
                subscriptions,
            },
            timestamp: rfc3339(now_ms()),
            project_id: project.into(),
        }
    }
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct ProjectList {
    pub timestamp: String,
    pub projects: Vec<String>,
    pub count: usize,
}

#[OpenApi(tag = "Tag::System")]
impl StatsApi {
    /// Counts over every project: now, or with `at` (a sequence) or `asOf` (an RFC 3339
    /// time) as they were then (the `Weft-Sequence` header names the point used).
    #[oai(path = "/api/stats", method = "get", operation_id = "getStats")]
    async fn stats(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        /// The state after the event at this sequence (or the last one before it).
        at: Query<Option<u64>>,
        /// The state after the last event recorded at or before this time.
        #[oai(name = "asOf")]
        as_of: Query<Option<String>>,
    ) -> Result<AtResponse<GlobalStats>, ApiError> {
        let seen = app.seen(at.0, as_of.0.as_deref()).await?;
        let (sequence, stats) = app.read_seen(actor.0, &seen, |s| {
            let by_project: BTreeMap<String, ProjectTotals> = s
                .projects
                .iter()
                .map(|(name, p)| {
                    let c = live::project_counts(p);
                    (
                        name.clone(),
                        ProjectTotals {
                            agents: c.agents_total,
                            pending_work: c.pending,
                            active_work: c.active,
                            completed_work: c.completed,
                            failed_work: c.failed,
                            targets: c.targets_total,
                            last_activity: rfc3339(c.last_activity_ms),
                        },
                    )
                })
                .collect();
            let sum = |f: fn(&ProjectTotals) -> usize| by_project.values().map(f).sum();
            GlobalStats {
                timestamp: rfc3339(now_ms()),
                total_projects: by_project.len(),
                totals: Totals {
                    agents: sum(|p| p.agents),
                    pending_work: sum(|p| p.pending_work),
                    active_work: sum(|p| p.active_work),
                    completed_work: sum(|p| p.completed_work),
                    failed_work: sum(|p| p.failed_work),
                    targets: sum(|p| p.targets),
                },
                by_project,
            }
        });
        Ok(AtResponse::Ok(Json(stats), sequence))
    }

    /// The projects Weft knows (every project with at least one event).
    #[oai(
        path = "/api/stats/projects",
        method = "get",
        operation_id = "listProjects"
    )]
    async fn projects(&self, app: Data<&Arc<AppState>>, actor: Data<&Actor>) -> Json<ProjectList> {
        let projects: Vec<String> = app.read(actor.0, |s| s.projects.keys().cloned().collect());
        Json(ProjectList {
            timestamp: rfc3339(now_ms()),
            count: projects.len(),
            projects,
        })
    }

    /// One project's stats, in the shape of the WebSocket `stats` message's `data`.
    #[oai(
        path = "/api/projects/:project/stats",
        method = "get",
        operation_id = "getProjectStats"
    )]
    async fn project(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        #[oai(validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$"))] project: Path<String>,
    ) -> Result<Json<ProjectStats>, ApiError> {
        let project = app.project(actor.0, Some(&project.0))?;
        Ok(Json(ProjectStats::new(&app, &project, 0)))
    }
}

/// `/metrics`: OpenMetrics text, as Prometheus scrapes it.
#[poem::handler]
pub fn metrics(app: Data<&Arc<AppState>>, actor: Data<&Actor>) -> poem::Response {
    let out = app.read(actor.0, |s| {
        crate::metrics::render(
            s,
            crate::metrics::Observed {
                commit_seconds: &app.store.commit_seconds,
                assignment_seconds: &app.coordinator.assignment_seconds,
                websocket_clients: app.live.connections.load(Ordering::Relaxed),
                audit: app.audits.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            },
        )
    });
    poem::Response::builder()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(out)
}
