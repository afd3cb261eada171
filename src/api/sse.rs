//! `GET /api/events/stream`: the live view as Server-Sent Events, for `curl -N` and a
//! browser's `EventSource`. Each event is the WebSocket's `event` message as `data:`, with
//! its log sequence as `id:`; a client that reconnects with `Last-Event-ID` (browsers do
//! by themselves) first gets every event it missed, once, then live ones. Filters are the
//! WebSocket's: `topic` (comma-separated; default every topic but `stats`), `projectId`,
//! and each topic's own (`status`, `capability`, `agentType`, ...).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use poem::web::Data;
use poem::{handler, Request};
use serde_json::{Map, Value};
use tokio::sync::broadcast::error::RecvError;

use super::error::ApiError;
use super::ws::{event_text, missed_events, next_batch};
use super::{Actor, AppState};
use crate::live::{self, TOPICS};

/// Query parameters that are not filters.
const NOT_FILTERS: [&str; 3] = ["topic", "after", "token"];

#[handler]
pub async fn stream(
    req: &Request,
    app: Data<&Arc<AppState>>,
    actor: Data<&Actor>,
) -> Result<poem::Response, poem::Error> {
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let value_of = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let topics: Vec<&'static str> = match value_of("topic") {
        None => TOPICS.iter().copied().filter(|t| *t != "stats").collect(),
        Some(list) => list
            .split(',')
            .map(|t| {
                TOPICS
                    .iter()
                    .copied()
                    .find(|known| *known == t.trim() && *known != "stats")
                    .ok_or_else(|| {
                        ApiError::validation(
                            "topic",
                            format!("unknown topic {t}; topics: work, agents, targets"),
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    let filter: Map<String, Value> = query
        .iter()
        .filter(|(k, _)| !NOT_FILTERS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    if let Some(project) = filter.get("projectId").and_then(Value::as_str) {
        app.project(actor.0, Some(project))?;
    }
    // `Last-Event-ID` (a reconnecting EventSource) wins over `after`.
    let resume = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| value_of("after"));
    let after = resume
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                ApiError::validation("Last-Event-ID", "must be a sequence this stream sent")
            })
        })
        .transpose()?;
    let access = actor.0.access.clone();
    // Subscribed before the backlog is read, so nothing falls between the two.
    let live = app.live.feed.subscribe();
    let (backlog, up_to) = match after {
        Some(after) => {
            let wanted = |topic: &str, data: &Value| {
                topics.contains(&topic) && live::matches(topic, &filter, data)
            };
            missed_events(&app, &access, &wanted, after)
                .await
                .map_err(ApiError::unavailable)?
        }
        None => (Vec::new(), app.commands.projection().sequence()),
    };
    let missed = futures::stream::iter(
        backlog
            .into_iter()
            .map(|(sequence, topic, data)| message(sequence, &event_text(topic, &data))),
    );
    // Live events are written as they were serialized once for every client, several to a
    // write when they are waiting.
    // A comment every 15 s, busy or not: one timer for the stream's life (a timeout
    // around every wait would set and clear a timer per event per client).
    let mut quiet = tokio::time::interval(KEEP_ALIVE);
    quiet.reset();
    let following = futures::stream::unfold(Some((live, quiet)), move |state| {
        let (topics, filter, access) = (topics.clone(), filter.clone(), access.clone());
        async move {
            let (mut live, mut quiet) = state?;
            loop {
                let (events, error) = tokio::select! {
                    batch = next_batch(&mut live) => batch,
                    _ = quiet.tick() => {
                        return Some((Bytes::from_static(b": keep-alive\n\n"), Some((live, quiet))));
                    }
                };
                let mut out = Vec::new();
                for event in events {
                    let wanted = event.sequence > up_to
                        && access.sees(&event.project)
                        && topics.contains(&event.topic)
                        && live::matches(event.topic, &filter, &event.data);
                    if wanted {
                        out.extend_from_slice(&event.sse);
                    }
                }
                match error {
                    None if out.is_empty() => continue,
                    None => return Some((out.into(), Some((live, quiet)))),
                    // Too slow: say so and end; the client resumes from its last id.
                    Some(RecvError::Lagged(missed)) => {
                        out.extend_from_slice(format!(
                            "event: error\ndata: {{\"type\":\"error\",\"error\":\"too slow: {missed} events were dropped; reconnect with Last-Event-ID\"}}\n\n"
                        ).as_bytes());
                        return Some((out.into(), None));
                    }
                    Some(RecvError::Closed) if out.is_empty() => return None,
                    Some(RecvError::Closed) => return Some((out.into(), None)),
                }
            }
        }
    });
    let body = missed.chain(following).map(Ok::<_, std::io::Error>);
    Ok(poem::Response::builder()
        .content_type("text/event-stream")
        .header("cache-control", "no-cache")
        .body(poem::Body::from_bytes_stream(body)))
}

/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One event as SSE text: `id:` the log sequence, `data:` the WebSocket's event message.
pub(super) fn message(sequence: u64, text: &str) -> Bytes {
    format!("id: {sequence}\ndata: {text}\n\n").into()
}
