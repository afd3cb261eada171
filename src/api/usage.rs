//! `/api/usage`: the cost ledger, what the agents' CLIs reported each attempt cost, totalled
//! per project, agent, target or day from the items' recorded usage.

use std::collections::BTreeMap;
use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};

use super::error::ApiError;
use super::work::UsageView;
use super::{Actor, AppState, Tag};
use crate::time::rfc3339;

pub struct UsageApi;

/// What the ledger is totalled by.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum UsageGroupBy {
    Project,
    Agent,
    /// The target that started the agent (`none` for agents started by hand).
    Target,
    /// The UTC day the attempt ended, `YYYY-MM-DD`.
    Day,
}

/// One line of the ledger.
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct UsageLine {
    pub key: String,
    /// Items with at least one attempt here that reported usage.
    pub items: usize,
    /// Attempts that reported usage.
    pub attempts: usize,
    pub usage: UsageView,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct UsageReport {
    pub group_by: String,
    pub lines: Vec<UsageLine>,
    pub total: UsageLine,
}

#[derive(Default)]
struct Sum {
    items: std::collections::BTreeSet<String>,
    attempts: usize,
    usage: Option<events::work::Usage>,
}

impl Sum {
    fn add(&mut self, item: &str, usage: &events::work::Usage) {
        self.items.insert(item.to_string());
        self.attempts += 1;
        match &mut self.usage {
            Some(total) => total.add(usage),
            None => self.usage = Some(usage.clone()),
        }
    }

    fn line(self, key: String) -> UsageLine {
        UsageLine {
            key,
            items: self.items.len(),
            attempts: self.attempts,
            usage: self.usage.unwrap_or_default().into(),
        }
    }
}

#[OpenApi(tag = "Tag::Work")]
impl UsageApi {
    /// The cost ledger: what every attempt's CLI reported (cost, tokens, premium requests,
    /// turns, time), totalled by project (default), agent, target or day.
    #[oai(path = "/api/usage", method = "get", operation_id = "getUsage")]
    async fn usage(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        /// Only this project (default: every project).
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
        #[oai(name = "groupBy")] group_by: Query<Option<UsageGroupBy>>,
    ) -> Result<Json<UsageReport>, ApiError> {
        let group_by = group_by.0.unwrap_or(UsageGroupBy::Project);
        let only = project_id
            .0
            .as_deref()
            .map(|p| app.project(actor.0, Some(p)))
            .transpose()?;
        let (lines, total) = app.read(actor.0, |s| {
            let mut lines: BTreeMap<String, Sum> = BTreeMap::new();
            let mut total = Sum::default();
            for (name, p) in s
                .projects
                .iter()
                .filter(|(name, _)| only.as_ref().is_none_or(|o| o == *name))
            {
                for w in p.work.iter() {
                    for attempt in &w.usage {
                        let key = match group_by {
                            UsageGroupBy::Project => name.clone(),
                            UsageGroupBy::Agent => attempt.agent_id.clone(),
                            UsageGroupBy::Target => p
                                .agents
                                .get(&attempt.agent_id)
                                .and_then(|a| a.target_id.clone())
                                .unwrap_or_else(|| "none".into()),
                            UsageGroupBy::Day => rfc3339(attempt.at_ms)[..10].to_string(),
                        };
                        let id = format!("{name}/{}", w.id);
                        lines.entry(key).or_default().add(&id, &attempt.usage);
                        total.add(&id, &attempt.usage);
                    }
                }
            }
            (lines, total)
        });
        Ok(Json(UsageReport {
            group_by: format!("{group_by:?}").to_lowercase(),
            lines: lines.into_iter().map(|(k, s)| s.line(k)).collect(),
            total: total.line("total".into()),
        }))
    }
}
