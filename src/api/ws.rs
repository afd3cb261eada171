//! `/api/ws`: the original's WebSocket protocol (subscribe / unsubscribe / ping; ack /
//! event / stats / error / pong), fed from the event log. Extensions: every event carries
//! its `sequence`, a subscription may give `after: <sequence>` to receive what it missed
//! first (no gap, no duplicate), and `projectId` filters on every topic.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, SelectAll};
use futures::{SinkExt, StreamExt};
use poem::web::websocket::{Message, WebSocket, WebSocketStream};
use poem::web::Data;
use poem::{handler, IntoResponse};
use serde_json::{json, Map, Value};
use tokio::sync::broadcast::error::RecvError;

use super::error::ApiError;
use super::{Actor, AppState};
use crate::access::Access;
use crate::live::{self, TOPICS};
use crate::time::{now_ms, rfc3339};

/// Events a resuming client may be behind at most; further back, it should reload.
const MAX_RESUME: u64 = 100_000;

/// An event in the live view's shape, mapped and serialized once for every client.
pub struct LiveEvent {
    pub sequence: u64,
    /// Whose it is: a session sees only its token's projects.
    pub project: String,
    pub topic: &'static str,
    pub data: Value,
    /// The WebSocket's `event` message.
    pub text: String,
    /// The same message as one Server-Sent Event (`id:` the sequence), ready to write.
    pub sse: bytes::Bytes,
}

/// Clients send little (subscriptions, pings), and tungstenite zeroes its whole read
/// buffer on every read attempt, even one that finds nothing: with the default 128 KiB, a
/// session paid a 128 KiB memset per batch it sent (half the server's time at 1,000
/// subscribers). A larger frame still gets the room it needs.
fn socket_config() -> poem::web::websocket::WebSocketConfig {
    poem::web::websocket::WebSocketConfig::default().read_buffer_size(4096)
}

/// Most events one client is sent in one write.
const MAX_BATCH: usize = 256;

/// The next events for one client: waits for one, then takes those already waiting (at
/// most [`MAX_BATCH`]), so a client that fell behind catches up in few writes instead of a
/// write (and a wake-up) per event. An error met after some events comes second.
pub(super) async fn next_batch(
    live: &mut tokio::sync::broadcast::Receiver<Arc<LiveEvent>>,
) -> (Vec<Arc<LiveEvent>>, Option<RecvError>) {
    use tokio::sync::broadcast::error::TryRecvError;
    let mut batch = match live.recv().await {
        Ok(event) => vec![event],
        Err(e) => return (Vec::new(), Some(e)),
    };
    while batch.len() < MAX_BATCH {
        match live.try_recv() {
            Ok(event) => batch.push(event),
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Lagged(missed)) => return (batch, Some(RecvError::Lagged(missed))),
            Err(TryRecvError::Closed) => return (batch, Some(RecvError::Closed)),
        }
    }
    (batch, None)
}

/// Maps each folded event once and hands it to every WebSocket session.
pub async fn run_feed(app: Arc<AppState>, shutdown: tokio_util::sync::CancellationToken) {
    let mut folded = app.commands.projection().live();
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = folded.recv() => next,
        };
        match next {
            // Nobody listening: nothing to map (sessions that join later start from the log).
            Ok(_) if app.live.feed.receiver_count() == 0 => {}
            Ok(applied) => {
                let (sequence, envelope) = (applied.0, &applied.1);
                let mapped = app
                    .commands
                    .projection()
                    .read(|s| live::coordinator_event(s, sequence, envelope));
                if let Some((topic, data)) = mapped {
                    let text = event_text(topic, &data);
                    let sse = super::sse::message(sequence, &text);
                    let _ = app.live.feed.send(Arc::new(LiveEvent {
                        sequence,
                        project: envelope.project.clone(),
                        topic,
                        data,
                        text,
                        sse,
                    }));
                }
            }
            // Lagging here would mean the fold outpaces the mapping; sessions resume by sequence.
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "live feed fell behind the fold")
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// A client that stops reading must not hold its session (and the events queued for it)
/// forever: a send that takes longer than this ends the session.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

async fn deliver<S: futures::Sink<Message> + Unpin>(sink: &mut S, message: Message) -> bool {
    deliver_all(sink, std::iter::once(message)).await
}

/// Sends `messages` with one flush (one write, when they fit the socket's buffer).
async fn deliver_all<S: futures::Sink<Message> + Unpin>(
    sink: &mut S,
    messages: impl Iterator<Item = Message>,
) -> bool {
    let sent = async {
        for message in messages {
            sink.feed(message).await?;
        }
        sink.flush().await
    };
    matches!(tokio::time::timeout(SEND_TIMEOUT, sent).await, Ok(Ok(())))
}

struct Subscription {
    filter: Map<String, Value>,
    /// Events up to here were sent already (by a resume).
    delivered_up_to: u64,
}

#[handler]
pub async fn upgrade(
    ws: WebSocket,
    app: Data<&Arc<AppState>>,
    actor: Data<&Actor>,
) -> impl IntoResponse {
    let (app, actor) = (app.0.clone(), actor.0.clone());
    // Browsers offer `bearer, <token>` as subprotocols; the server must pick one.
    ws.protocols(vec!["bearer"])
        .config(socket_config())
        .on_upgrade(move |socket| async move { session(app, actor, socket).await })
}

fn now() -> String {
    rfc3339(now_ms())
}

fn error(text: impl Into<String>) -> Message {
    Message::Text(json!({"type": "error", "error": text.into(), "timestamp": now()}).to_string())
}

pub fn stats_message(app: &AppState, project: &str, subscriptions: usize) -> Value {
    let stats = super::stats::ProjectStats::new(app, project, subscriptions);
    let timestamp = stats.timestamp.clone();
    json!({"type": "stats", "data": stats, "timestamp": timestamp, "projectId": project})
}

pub(super) fn event_text(topic: &str, data: &Value) -> String {
    json!({
        "type": "event",
        "topic": topic,
        "event": data["type"],
        "data": data,
        "timestamp": data["timestamp"],
        "projectId": data["projectId"],
        "sequence": data["sequence"],
    })
    .to_string()
}

fn event_message(topic: &str, data: &Value) -> Message {
    Message::Text(event_text(topic, data))
}

/// The `output` topic's follows: one item's chunks each, as the messages to send.
type Outputs = SelectAll<BoxStream<'static, Message>>;

async fn session(app: Arc<AppState>, actor: Actor, socket: WebSocketStream) {
    app.live.connections.fetch_add(1, Ordering::Relaxed);
    let access = &actor.access;
    let (mut sink, mut stream) = socket.split();
    let mut live = app.live.feed.subscribe();
    let mut subscriptions: HashMap<String, Subscription> = HashMap::new();
    let mut outputs = Outputs::new();
    let mut ping = tokio::time::interval(Duration::from_secs(30));
    let mut stats = tokio::time::interval(app.live.stats_interval);
    let mut answered_ping = true;
    'session: loop {
        tokio::select! {
            incoming = stream.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Pong(_))) => { answered_ping = true; continue; }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                for reply in handle(&app, &actor, &text, &mut subscriptions, &mut outputs).await {
                    if !deliver(&mut sink, reply).await {
                        break 'session;
                    }
                }
            }
            (events, ended) = next_batch(&mut live) => {
                let wanted = events.iter().filter(|event| {
                    subscriptions.get(event.topic).is_some_and(|sub| {
                        access.sees(&event.project)
                            && event.sequence > sub.delivered_up_to
                            && live::matches(event.topic, &sub.filter, &event.data)
                    })
                });
                if !deliver_all(&mut sink, wanted.map(|event| Message::Text(event.text.clone()))).await {
                    break;
                }
                match ended {
                None => {}
                Some(RecvError::Lagged(missed)) => {
                    // Cut off rather than slow everyone down; it can resume with `after`.
                    let _ = deliver(&mut sink, error(format!("too slow: {missed} events were dropped; reconnect and subscribe with after=<last sequence>"))).await;
                    let _ = deliver(&mut sink, Message::Close(Some((poem::web::websocket::CloseCode::Policy, "too slow".into())))).await;
                    break;
                }
                Some(RecvError::Closed) => break,
                }
            }
            Some(message) = outputs.next(), if !outputs.is_empty() => {
                if !deliver(&mut sink, message).await {
                    break;
                }
            }
            _ = ping.tick() => {
                if !answered_ping {
                    break;
                }
                answered_ping = false;
                if !deliver(&mut sink, Message::Ping(Vec::new())).await {
                    break;
                }
            }
            _ = stats.tick() => {
                if let Some(sub) = subscriptions.get("stats") {
                    let project = sub.filter.get("projectId").and_then(Value::as_str).unwrap_or(&app.default_project).to_string();
                    let message = stats_message(&app, &project, subscriptions.len());
                    if !deliver(&mut sink, Message::Text(message.to_string())).await {
                        break;
                    }
                }
            }
        }
    }
    app.live.connections.fetch_sub(1, Ordering::Relaxed);
}

async fn handle(
    app: &AppState,
    actor: &Actor,
    text: &str,
    subscriptions: &mut HashMap<String, Subscription>,
    outputs: &mut Outputs,
) -> Vec<Message> {
    let access = &actor.access;
    let Ok(message) = serde_json::from_str::<Value>(text) else {
        return vec![error("Invalid message format")];
    };
    let kind = message["type"].as_str().unwrap_or_default();
    match kind {
        "ping" => vec![Message::Text(
            json!({"type": "pong", "timestamp": now()}).to_string(),
        )],
        "subscribe" if message["topic"] == OUTPUT_TOPIC => {
            match follow_output(app, actor, &message).await {
                Ok(follow) => {
                    outputs.push(follow);
                    subscriptions.insert(
                        OUTPUT_TOPIC.into(),
                        Subscription {
                            filter: Map::new(),
                            delivered_up_to: 0,
                        },
                    );
                    vec![Message::Text(
                        json!({"type": "ack", "subscribed": OUTPUT_TOPIC, "timestamp": now()})
                            .to_string(),
                    )]
                }
                Err(e) => vec![error(e)],
            }
        }
        "subscribe" => {
            let topic = message["topic"].as_str().unwrap_or_default().to_string();
            if !TOPICS.contains(&topic.as_str()) {
                return vec![error(format!(
                    "Invalid topic: {topic}. Topics: {}, {OUTPUT_TOPIC}",
                    TOPICS.join(", ")
                ))];
            }
            let filter = message["filter"].as_object().cloned().unwrap_or_default();
            if let Some(project) = filter.get("projectId").and_then(Value::as_str) {
                if !access.sees(project) {
                    return vec![error(format!("Project {project} not found"))];
                }
            } else if topic == "stats" && !access.sees(&app.default_project) {
                return vec![error("stats need a projectId this token may see")];
            }
            let mut replies = vec![Message::Text(
                json!({"type": "ack", "subscribed": topic, "timestamp": now()}).to_string(),
            )];
            let mut delivered_up_to = 0;
            if let Some(after) = message.get("after").and_then(Value::as_u64) {
                let wanted = |t: &str, data: &Value| t == topic && live::matches(t, &filter, data);
                match missed_events(app, access, &wanted, after).await {
                    Ok((events, up_to)) => {
                        replies.extend(events.iter().map(|(_, t, data)| event_message(t, data)));
                        delivered_up_to = up_to;
                    }
                    Err(e) => return vec![error(e)],
                }
            }
            subscriptions.insert(
                topic,
                Subscription {
                    filter,
                    delivered_up_to,
                },
            );
            replies
        }
        "unsubscribe" => {
            let topic = message["topic"].as_str().unwrap_or_default();
            if topic == OUTPUT_TOPIC {
                *outputs = Outputs::new();
            }
            if subscriptions.remove(topic).is_some() {
                vec![Message::Text(
                    json!({"type": "ack", "unsubscribed": topic, "timestamp": now()}).to_string(),
                )]
            } else {
                vec![error(format!("Not subscribed to topic: {topic}"))]
            }
        }
        other => vec![error(format!("Unknown message type: {other}"))],
    }
}

/// Not an event topic: an item's output lines (`filter.workId`, optionally
/// `filter.projectId`; `after` a chunk sequence), from the output stream. Each subscription
/// adds an item; unsubscribing ends them all.
const OUTPUT_TOPIC: &str = "output";

async fn follow_output(
    app: &AppState,
    actor: &Actor,
    message: &Value,
) -> Result<BoxStream<'static, Message>, String> {
    let filter = &message["filter"];
    let work_id = filter["workId"]
        .as_str()
        .ok_or("the output topic needs filter.workId")?;
    let (project, _) = app
        .find_work(actor, filter["projectId"].as_str(), work_id)
        .map_err(ApiError::into_message)?;
    let after = message["after"].as_u64().unwrap_or(0);
    let chunks = app
        .coordinator
        .output
        .follow(&project, work_id, after)
        .await?;
    Ok(chunks
        .map(move |stored| {
            // Its `sequence` is the chunk's, in `data`: not a place in the event log.
            let text = json!({
                "type": "event",
                "topic": OUTPUT_TOPIC,
                "event": "work:output",
                "data": super::output::chunk_json(&stored),
                "timestamp": rfc3339(stored.chunk.at_ms),
                "projectId": project,
            });
            Message::Text(text.to_string())
        })
        .boxed())
}

/// The events after `after` that `wanted` keeps (by topic and mapped data), with their
/// sequence and topic, read from the log up to what is folded in now (also returned);
/// live events after that come through the broadcast. Shared by the WebSocket's and the
/// SSE stream's resume.
pub(super) async fn missed_events(
    app: &AppState,
    access: &Access,
    wanted: &(dyn Fn(&str, &Value) -> bool + Sync),
    after: u64,
) -> Result<(Vec<(u64, &'static str, Value)>, u64), String> {
    let up_to = app.commands.projection().sequence();
    if up_to.saturating_sub(after) > MAX_RESUME {
        return Err(format!("cannot resume more than {MAX_RESUME} events back; reload the state over REST and subscribe without after"));
    }
    let mut out = Vec::new();
    let mut position = after;
    while position < up_to {
        let (page, _) = app
            .store
            .read(position, events::subject::ALL, 1000)
            .await
            .map_err(|e| format!("cannot read the event log: {e}"))?;
        if page.is_empty() {
            break;
        }
        for (sequence, bytes) in page {
            if sequence > up_to {
                return Ok((out, up_to));
            }
            position = sequence;
            let Ok(envelope) = migrations::decode(&bytes) else {
                continue;
            };
            if !access.sees(&envelope.project) {
                continue;
            }
            let mapped = app
                .commands
                .projection()
                .read(|s| live::coordinator_event(s, sequence, &envelope));
            if let Some((topic, data)) = mapped {
                if wanted(topic, &data) {
                    out.push((sequence, topic, data));
                }
            }
        }
    }
    Ok((out, up_to))
}
