//! An item's output, the lines its agents printed: `GET /api/work/{id}/output` pages them
//! (`after` a chunk's sequence), `GET /api/work/{id}/output/stream` follows them as
//! Server-Sent Events (`id:` the chunk's sequence, so `Last-Event-ID` resumes). They live
//! in the output stream, not the audit log (see `crate::output`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use poem::web::sse::{Event, SSE};
use poem::web::Data;
use poem::{handler, IntoResponse, Request};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::error::ApiError;
use super::{Actor, AppState, Tag};
use crate::output::Stored;

pub struct OutputApi;

/// One line an agent printed.
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct OutputLine {
    /// The sequence of the chunk the line came in (lines of one report share it).
    pub sequence: u64,
    pub attempt: u32,
    /// Its number within the attempt, from 1. A gap means lines were dropped: by the
    /// agent while Weft was unreachable, or by the stream's limits.
    pub line: u64,
    pub text: String,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct WorkOutput {
    pub work_id: String,
    pub lines: Vec<OutputLine>,
    /// Pass as `after` to continue; equals the request's `after` when nothing was read.
    pub next_after: u64,
    pub has_more: bool,
}

fn lines_of(stored: &Stored) -> impl Iterator<Item = OutputLine> + '_ {
    stored
        .chunk
        .lines
        .iter()
        .enumerate()
        .map(|(i, text)| OutputLine {
            sequence: stored.sequence,
            attempt: stored.chunk.attempt,
            line: stored.chunk.first_line + i as u64,
            text: text.clone(),
        })
}

#[OpenApi(tag = "Tag::Work")]
impl OutputApi {
    /// The lines the item's agents printed, oldest first, in whole chunks of at least
    /// `limit` lines. Kept within the output stream's limits (per item and by age), apart
    /// from the audit log; follow them live with `/api/work/{id}/output/stream` (SSE) or
    /// the WebSocket's `output` topic.
    #[oai(
        path = "/api/work/:id/output",
        method = "get",
        operation_id = "getWorkOutput"
    )]
    async fn output(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        id: Path<String>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
        /// A chunk sequence from an earlier page's `nextAfter`.
        #[oai(default)]
        after: Query<u64>,
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "10000"))
        )]
        limit: Query<usize>,
    ) -> Result<Json<WorkOutput>, ApiError> {
        let (project, _) = app.find_work(actor.0, project_id.0.as_deref(), &id.0)?;
        let page = app
            .coordinator
            .output
            .page(&project, &id.0, after.0, limit.0)
            .await
            .map_err(ApiError::unavailable)?;
        Ok(Json(WorkOutput {
            work_id: id.0,
            lines: page.chunks.iter().flat_map(lines_of).collect(),
            next_after: page.chunks.last().map_or(after.0, |c| c.sequence),
            has_more: page.more,
        }))
    }
}

fn default_limit() -> usize {
    1000
}

/// A chunk as an SSE message and a WebSocket event's data: the chunk with its sequence.
pub fn chunk_json(stored: &Stored) -> serde_json::Value {
    let mut value = serde_json::to_value(&stored.chunk).unwrap_or_default();
    value["sequence"] = stored.sequence.into();
    value
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StreamQuery {
    project_id: Option<String>,
    after: Option<u64>,
}

#[handler]
pub async fn stream(
    req: &Request,
    app: Data<&Arc<AppState>>,
    actor: Data<&Actor>,
    poem::web::Path(id): poem::web::Path<String>,
) -> Result<poem::Response, poem::Error> {
    let query: StreamQuery = req
        .params()
        .map_err(|e| ApiError::validation("query", e.to_string()))?;
    let (project, _) = app.find_work(actor.0, query.project_id.as_deref(), &id)?;
    // `Last-Event-ID` (a reconnecting EventSource) wins over `after`.
    let resume = match req.headers().get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::validation("Last-Event-ID", "must be a sequence this stream sent")
                })?,
        ),
        None => query.after,
    };
    let chunks = app
        .coordinator
        .output
        .follow(&project, &id, resume.unwrap_or(0))
        .await
        .map_err(ApiError::unavailable)?;
    let events = chunks.map(|stored| {
        Event::message(chunk_json(&stored).to_string())
            .event_type("output")
            .id(stored.sequence.to_string())
    });
    Ok(SSE::new(events)
        .keep_alive(Duration::from_secs(15))
        .into_response())
}
