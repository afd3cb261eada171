//! `/api/events` and the aggregates' histories: the audit log, read from the event
//! stream itself.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::error::ApiError;
use super::{AppState, Tag};
use crate::time::rfc3339;

pub struct EventsApi;

/// One recorded event.
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct EventView {
    /// Position in the log; pass it as `after` to read on from here.
    pub sequence: u64,
    pub id: String,
    #[oai(rename = "type")]
    pub event_type: String,
    pub project_id: String,
    pub aggregate: String,
    pub aggregate_id: String,
    pub schema_version: u32,
    pub time: String,
    /// Who caused it: a token's name, `anonymous` (auth off), an agent id, or `system`.
    pub actor: String,
    #[oai(skip_serializing_if_is_none)]
    pub correlation_id: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub causation_id: Option<String>,
    pub data: serde_json::Value,
    /// In an aggregate's history: the fields of its view (as `GET` shows it) this event
    /// changed, with their values before and after.
    #[oai(skip_serializing_if_is_none)]
    pub changes: Option<Vec<FieldChange>>,
}

/// One field of an aggregate's view that an event changed (absent: not there).
#[derive(Object, Clone, Debug, PartialEq)]
#[oai(rename_all = "camelCase")]
pub struct FieldChange {
    pub field: String,
    #[oai(skip_serializing_if_is_none)]
    pub before: Option<serde_json::Value>,
    #[oai(skip_serializing_if_is_none)]
    pub after: Option<serde_json::Value>,
}

/// The fields whose values differ between two views of an aggregate, in field order.
pub fn changes(
    before: Option<&serde_json::Value>,
    after: Option<&serde_json::Value>,
) -> Vec<FieldChange> {
    let empty = serde_json::Map::new();
    let fields =
        |v: Option<&serde_json::Value>| v.and_then(|v| v.as_object()).unwrap_or(&empty).clone();
    let (before, after) = (fields(before), fields(after));
    let names: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter(|name| before.get(*name) != after.get(*name))
        .map(|name| FieldChange {
            field: name.clone(),
            before: before.get(name).cloned(),
            after: after.get(name).cloned(),
        })
        .collect()
}

impl EventView {
    pub fn new(sequence: u64, e: &events::Envelope) -> Self {
        let data = match serde_json::to_value(&e.event) {
            Ok(serde_json::Value::Object(mut tagged)) => tagged.remove("data").unwrap_or_default(),
            _ => serde_json::Value::Null,
        };
        Self {
            sequence,
            id: e.id.clone(),
            event_type: e.event.type_name().into(),
            project_id: e.project.clone(),
            aggregate: e.aggregate.as_str().into(),
            aggregate_id: e.aggregate_id.clone(),
            schema_version: e.schema_version,
            time: rfc3339(e.time_ms),
            actor: e.actor.clone(),
            correlation_id: e.correlation_id.clone(),
            causation_id: e.causation_id.clone(),
            data,
            changes: None,
        }
    }
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct EventPage {
    pub events: Vec<EventView>,
    pub count: usize,
    /// Pass as `after` to continue; equals the request's `after` when nothing was read.
    pub next_after: u64,
    pub has_more: bool,
}

/// How many events one request looks at when filtering by what the subject cannot say
/// (type, actor, correlation id).
const SCAN_LIMIT: usize = 5_000;

impl AppState {
    /// A page of the events on subjects `filter` matches after `after`, those `wanted`
    /// keeps; at most `limit`, looking at more when `selective` (the filter is not all).
    pub async fn read_events(
        &self,
        filter: &str,
        after: u64,
        limit: usize,
        selective: bool,
        wanted: impl Fn(&events::Envelope) -> bool,
    ) -> Result<EventPage, ApiError> {
        let scan = if selective { SCAN_LIMIT } else { limit };
        let (raw, remaining) = self
            .store
            .read(after, filter, scan)
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        let mut page = EventPage {
            events: Vec::new(),
            count: 0,
            next_after: after,
            has_more: remaining > 0,
        };
        for (i, (sequence, bytes)) in raw.iter().enumerate() {
            let envelope = match migrations::decode(bytes) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(sequence, "event not readable by this binary: {e}");
                    page.next_after = *sequence;
                    continue;
                }
            };
            if wanted(&envelope) {
                page.events.push(EventView::new(*sequence, &envelope));
            }
            page.next_after = *sequence;
            if page.events.len() == limit {
                page.has_more |= i + 1 < raw.len();
                break;
            }
        }
        page.count = page.events.len();
        Ok(page)
    }

    /// One aggregate's events in order: what happened to it, when, by whom, from which
    /// request, and what each changed in its view. The aggregate's events are folded from
    /// its first, so each event's change is known however the page starts.
    pub async fn history(
        &self,
        project: &str,
        kind: events::AggregateKind,
        id: &str,
        after: Option<u64>,
        limit: Option<i64>,
    ) -> Result<Json<EventPage>, ApiError> {
        let filter = events::subject::filter(Some(project), Some(kind), Some(id));
        let limit = limit.unwrap_or(100).clamp(1, 1000) as usize;
        let mut page = self
            .read_events(&filter, after.unwrap_or(0), limit, false, |_| true)
            .await?;
        let Some(last) = page.events.last().map(|e| e.sequence) else {
            return Ok(Json(page));
        };
        // A work item's events need the agents they name to be folded (an assignment to
        // an agent the fold does not know changes nothing).
        let mut filters = vec![filter.clone()];
        if kind == events::AggregateKind::Work {
            let mut agents = std::collections::BTreeSet::new();
            for (_, bytes) in self.read_until(&[filter], last).await? {
                if let Ok(envelope) = migrations::decode(&bytes) {
                    if let Some(agent) = EventView::new(0, &envelope).data["agentId"].as_str() {
                        agents.insert(agent.to_string());
                    }
                }
            }
            filters.extend(agents.iter().map(|agent| {
                events::subject::filter(
                    Some(project),
                    Some(events::AggregateKind::Agent),
                    Some(agent),
                )
            }));
        }
        let mut folded = projections::Project::default();
        let mut changed = std::collections::HashMap::new();
        for (sequence, bytes) in self.read_until(&filters, last).await? {
            let Ok(envelope) = migrations::decode(&bytes) else {
                continue;
            };
            let before = self.view_of(kind, project, &folded, id);
            folded.apply(sequence, &envelope);
            let after = self.view_of(kind, project, &folded, id);
            changed.insert(sequence, changes(before.as_ref(), after.as_ref()));
        }
        for event in &mut page.events {
            event.changes = changed.remove(&event.sequence);
        }
        Ok(Json(page))
    }

    /// Every event on subjects `filters` match, from the first up to sequence `last`.
    async fn read_until(
        &self,
        filters: &[String],
        last: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, ApiError> {
        let mut out = Vec::new();
        let mut after = 0;
        while after < last {
            let (raw, _) = self
                .store
                .read_any(after, filters, 10_000)
                .await
                .map_err(|e| ApiError::unavailable(e.to_string()))?;
            if raw.is_empty() {
                break;
            }
            for (sequence, bytes) in raw {
                if sequence > last {
                    return Ok(out);
                }
                after = sequence;
                out.push((sequence, bytes));
            }
        }
        Ok(out)
    }

    /// An aggregate's view as its `GET` shows it, in `folded` (heartbeats are not events,
    /// so an agent's is left out).
    fn view_of(
        &self,
        kind: events::AggregateKind,
        project: &str,
        folded: &projections::Project,
        id: &str,
    ) -> Option<serde_json::Value> {
        use poem_openapi::types::ToJSON;
        match kind {
            events::AggregateKind::Work => folded
                .work
                .get(id)
                .and_then(|w| super::work::WorkView::new(project, folded, w).to_json()),
            events::AggregateKind::Target => folded
                .targets
                .get(id)
                .and_then(|t| super::targets::TargetView::new(project, t).to_json()),
            events::AggregateKind::Agent => folded.agents.get(id).and_then(|a| {
                let mut view = super::agents::AgentView::native(self, project, a);
                view.last_heartbeat = None;
                view.to_json()
            }),
            events::AggregateKind::SpinUp
            | events::AggregateKind::Writer
            | events::AggregateKind::Budget
            | events::AggregateKind::Token
            | events::AggregateKind::Credential => None,
        }
    }
}

#[OpenApi(tag = "Tag::Events")]
impl EventsApi {
    /// Read the event log, oldest first.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/api/events", method = "get", operation_id = "listEvents")]
    async fn list(
        &self,
        app: Data<&Arc<AppState>>,
        caller: Data<&crate::api::Actor>,
        /// Only this project (default: all projects).
        #[oai(name = "projectId", validator(pattern = r"^[A-Za-z0-9_-]{1,128}$"))]
        project_id: Query<Option<String>>,
        aggregate: Query<Option<crate::api::names::AggregateName>>,
        #[oai(name = "aggregateId", validator(pattern = r"^[A-Za-z0-9_-]{1,128}$"))]
        aggregate_id: Query<Option<String>>,
        /// Event type, e.g. `target.registered`.
        #[oai(name = "type")]
        event_type: Query<Option<String>>,
        /// Only events caused by this actor (a token's name, `agent:<id>`, `system`...).
        #[oai(validator(min_length = 1, max_length = 256))]
        actor: Query<Option<String>>,
        /// Only events of the request with this `X-Request-Id`.
        #[oai(name = "correlationId", validator(min_length = 1, max_length = 256))]
        correlation_id: Query<Option<String>>,
        /// Only events after this sequence.
        after: Query<Option<u64>>,
        /// At most this many events (1-1000, default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<i64>>,
    ) -> Result<Json<EventPage>, ApiError> {
        let limit = limit.0.unwrap_or(100) as usize;
        let kind = aggregate.0.map(events::AggregateKind::from);
        let project = match project_id.0.as_deref() {
            // Weft's own records (tokens) are asked for by name, by admins of every project.
            Some(p) if events::access::is_reserved_project(p) && caller.access.sees(p) => {
                Some(p.to_string())
            }
            Some(p) => Some(app.project(caller.0, Some(p))?),
            None => None,
        };
        let filter = events::subject::filter(project.as_deref(), kind, aggregate_id.0.as_deref());
        let scoped = caller.access.projects.is_some();
        let selective =
            event_type.0.is_some() || actor.0.is_some() || correlation_id.0.is_some() || scoped;
        let wanted = |e: &events::Envelope| {
            caller.access.sees(&e.project)
                && event_type
                    .0
                    .as_deref()
                    .is_none_or(|t| t == e.event.type_name())
                && actor.0.as_deref().is_none_or(|a| a == e.actor)
                && correlation_id
                    .0
                    .as_deref()
                    .is_none_or(|c| e.correlation_id.as_deref() == Some(c))
        };
        let page = app
            .read_events(&filter, after.0.unwrap_or(0), limit, selective, wanted)
            .await?;
        Ok(Json(page))
    }
}
