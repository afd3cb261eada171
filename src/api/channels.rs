//! `/api/channels`: Warp's channel streams (`<project>_<NAME>` on `<project>.<name>`), read
//! as they are, instead of the original's hard-coded list.

use std::sync::Arc;

use futures::StreamExt;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::error::ApiError;
use super::{Actor, AppState, Tag};
use crate::time::rfc3339;

pub struct ChannelsApi;

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct Channel {
    pub name: String,
    pub description: String,
    /// Messages the stream holds.
    pub messages: u64,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct ChannelList {
    pub channels: Vec<Channel>,
    pub count: usize,
    pub project_id: String,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct ChannelMessage {
    pub timestamp: String,
    pub handle: String,
    pub message: String,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct ChannelMessages {
    pub channel: String,
    pub messages: Vec<ChannelMessage>,
    pub count: usize,
    pub project_id: String,
}

/// Warp's stream name for a channel: `roadmap` in `p1` is `p1_ROADMAP`.
pub fn stream_name(project: &str, channel: &str) -> String {
    format!(
        "{project}_{}",
        channel.to_ascii_uppercase().replace('-', "_")
    )
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(format!("cannot read the channel streams: {e}"))
}

#[OpenApi(tag = "Tag::System")]
impl ChannelsApi {
    /// The project's Warp channels, from its streams.
    #[oai(path = "/api/channels", method = "get", operation_id = "listChannels")]
    async fn list(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
    ) -> Result<Json<ChannelList>, ApiError> {
        let project = app.project(actor.0, project_id.0.as_deref())?;
        let js = app.store.jetstream();
        let prefix = format!("{project}_");
        let mut names = js.stream_names();
        let mut channels = Vec::new();
        while let Some(name) = names.next().await {
            let name = name.map_err(unavailable)?;
            let Some(suffix) = name.strip_prefix(&prefix) else {
                continue;
            };
            let mut stream = js.get_stream(&name).await.map_err(unavailable)?;
            let info = stream.info().await.map_err(unavailable)?;
            channels.push(Channel {
                name: suffix.to_ascii_lowercase().replace('_', "-"),
                description: info.config.description.clone().unwrap_or_default(),
                messages: info.state.messages,
            });
        }
        channels.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Json(ChannelList {
            count: channels.len(),
            channels,
            project_id: project,
        }))
    }

    /// A channel's last messages, oldest first.
    #[oai(
        path = "/api/channels/:name/messages",
        method = "get",
        operation_id = "listChannelMessages"
    )]
    async fn messages(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        #[oai(validator(pattern = r"^[A-Za-z0-9_-]{1,128}$"))] name: Path<String>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
        /// 1-1000, default 50.
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<i64>>,
    ) -> Result<Json<ChannelMessages>, ApiError> {
        let project = app.project(actor.0, project_id.0.as_deref())?;
        let limit = limit.0.unwrap_or(50);
        let mut messages = Vec::new();
        // A channel nobody has written to has no stream yet: no messages.
        if let Ok(mut stream) = app
            .store
            .jetstream()
            .get_stream(stream_name(&project, &name.0))
            .await
        {
            let state = stream.info().await.map_err(unavailable)?.state.clone();
            let first = state
                .first_sequence
                .max(state.last_sequence.saturating_sub(limit as u64 - 1));
            for sequence in first..=state.last_sequence {
                // Gaps (deleted or expired messages) are skipped.
                let Ok(raw) = stream.get_raw_message(sequence).await else {
                    continue;
                };
                let stored_ms = (raw.time.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
                let text = String::from_utf8_lossy(&raw.payload).into_owned();
                let parsed: Option<serde_json::Value> = serde_json::from_str(&text).ok();
                let field = |k: &str| {
                    parsed
                        .as_ref()
                        .and_then(|v| v[k].as_str())
                        .map(String::from)
                };
                messages.push(ChannelMessage {
                    timestamp: field("timestamp").unwrap_or_else(|| rfc3339(stored_ms)),
                    handle: field("handle").unwrap_or_else(|| "unknown".into()),
                    message: field("message").unwrap_or(text),
                });
            }
        }
        Ok(Json(ChannelMessages {
            channel: name.0,
            count: messages.len(),
            messages,
            project_id: project,
        }))
    }
}
