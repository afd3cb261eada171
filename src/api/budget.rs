//! `/api/projects/{project}/budget`: a project's spending budget and where the day stands.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::error::ApiError;
use super::strict::Strict;
use super::{Actor, AppState, Tag};
use crate::time::{day, now_ms};
use decide::BudgetCommand;

pub struct BudgetApi;

/// The budget to set. `maxCostUsdPerDay: null` (or absent) removes it.
#[derive(Object, serde::Deserialize, Clone, Debug)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetRequest {
    /// At this much reported cost in a UTC day, new work of the project waits in the
    /// queue (not failed) until the next day or a raised budget.
    #[oai(validator(minimum(value = "0")))]
    pub max_cost_usd_per_day: Option<f64>,
    /// A `budget.warned` event is recorded (once a day) at this fraction (default 0.8).
    #[oai(validator(minimum(value = "0", exclusive = true), maximum(value = "1")))]
    pub warn_at_fraction: Option<f64>,
}

/// A project's budget and today's spending against it.
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct BudgetView {
    pub project_id: String,
    #[oai(skip_serializing_if_is_none)]
    pub max_cost_usd_per_day: Option<f64>,
    #[oai(skip_serializing_if_is_none)]
    pub warn_at_fraction: Option<f64>,
    /// Today, UTC.
    pub day: String,
    /// What the agents' CLIs reported the project's work cost today.
    pub spent_today_usd: f64,
    /// New work waits: today's cost reached the budget.
    pub reached: bool,
}

impl AppState {
    fn budget_view(&self, project: &str) -> BudgetView {
        let now = now_ms();
        self.commands.projection().read(|s| {
            let p = s.project(project);
            let budget = p.and_then(|p| p.budget.clone());
            BudgetView {
                project_id: project.to_string(),
                max_cost_usd_per_day: budget.as_ref().map(|b| b.max_cost_usd_per_day),
                warn_at_fraction: budget.as_ref().map(|b| b.warn_at_fraction),
                day: day(now),
                spent_today_usd: p.map_or(0.0, |p| p.spent_on(now)),
                reached: p.is_some_and(|p| p.budget_reached(now)),
            }
        })
    }
}

#[OpenApi(tag = "Tag::Work")]
impl BudgetApi {
    /// A project's spending budget and today's reported cost against it.
    #[oai(
        path = "/api/projects/:project/budget",
        method = "get",
        operation_id = "getBudget"
    )]
    async fn get(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        #[oai(validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$"))] project: Path<String>,
    ) -> Result<Json<BudgetView>, ApiError> {
        let project = app.project(actor.0, Some(&project.0))?;
        Ok(Json(app.budget_view(&project)))
    }

    /// Set (or remove) a project's daily budget. At it, new work waits in the queue until
    /// the next UTC day or a raised budget; work already running goes on.
    #[oai(
        path = "/api/projects/:project/budget",
        method = "put",
        operation_id = "setBudget"
    )]
    async fn set(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        #[oai(validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$"))] project: Path<String>,
        body: Json<Strict<BudgetRequest>>,
    ) -> Result<Json<BudgetView>, ApiError> {
        let body = body.0 .0;
        let project = app.project(actor.0, Some(&project.0))?;
        app.coordinator
            .run(
                &actor.context(),
                &project,
                BudgetCommand::Set {
                    max_cost_usd_per_day: body.max_cost_usd_per_day,
                    warn_at_fraction: body.warn_at_fraction,
                },
            )
            .await?;
        Ok(Json(app.budget_view(&project)))
    }
}
