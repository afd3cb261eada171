//! `GET /api/events/stream`: the live view as Server-Sent Events, for `curl -N` and a
//! browser's `EventSource`. Each event is the WebSocket's `event` message as `data:`, with
//! its log sequence as `id:`; a client that reconnects with `Last-Event-ID` (browsers do
//! by themselves) first gets every event it missed, once, then live ones. Filters are the
//! WebSocket's: `topic` (comma-separated; default every topic but `stats`), `projectId`,
//! and each topic's own (`status`, `capability`, `agentType`, ...).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use poem::web::sse::{Event, SSE};
use poem::web::Data;
use poem::{handler, IntoResponse, Request};
use serde_json::{Map, Value};
use tokio::sync::broadcast::error::RecvError;

use super::error::ApiError;
use super::ws::{event_text, missed_events, LiveEvent};
use super::{Actor, AppState};
use crate::live::{self, TOPICS};

/// Query parameters that are not filters.
const NOT_FILTERS: [&str; 3] = ["topic", "after", "token"];

fn message(sequence: u64, topic: &str, data: &Value) -> Event {
    Event::message(event_text(topic, data)).id(sequence.to_string())
}

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
            .map(|(sequence, topic, data)| message(sequence, topic, &data)),
    );
    let following = futures::stream::unfold(Some(live), move |live| {
        let (topics, filter, access) = (topics.clone(), filter.clone(), access.clone());
        async move {
            let mut live = live?;
            loop {
                match live.recv().await {
                    Ok(event) => {
                        let event: Arc<LiveEvent> = event;
                        let wanted = event.sequence > up_to
                            && access.sees(&event.project)
                            && topics.contains(&event.topic)
                            && live::matches(event.topic, &filter, &event.data);
                        if wanted {
                            let next = message(event.sequence, event.topic, &event.data);
                            return Some((next, Some(live)));
                        }
                    }
                    // Too slow: say so and end; the client resumes from its last id.
                    Err(RecvError::Lagged(missed)) => {
                        let notice = Event::message(format!(
                            "{{\"type\":\"error\",\"error\":\"too slow: {missed} events were dropped; reconnect with Last-Event-ID\"}}"
                        ))
                        .event_type("error");
                        return Some((notice, None));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    Ok(SSE::new(missed.chain(following))
        .keep_alive(Duration::from_secs(15))
        .into_response())
}
