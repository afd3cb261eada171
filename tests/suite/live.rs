//! The WebSocket live view with a real WebSocket client: every one of the original's 19
//! event types from a scripted flow, filters, resume after a disconnect, auth at the
//! upgrade; and stats and /metrics agreeing with the state.

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{call, client, fast_env, poll_until, submit_body, NatsServer, Weft};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(weft: &Weft, query: &str) -> Socket {
    let url = format!("ws://127.0.0.1:{}/api/ws{query}", weft.port);
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connected")
        .0
}

async fn send(ws: &mut Socket, message: Value) {
    ws.send(Message::Text(message.to_string().into()))
        .await
        .expect("sent");
}

/// The next JSON message, skipping protocol frames; `None` after `wait` of silence.
async fn next(ws: &mut Socket, wait: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(&text).ok(),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

async fn subscribe(ws: &mut Socket, topic: &str, extra: Value) {
    let mut message = json!({"type": "subscribe", "topic": topic});
    if let (Some(m), Some(e)) = (message.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    send(ws, message).await;
    let ack = next(ws, Duration::from_secs(5)).await.expect("ack");
    assert_eq!(
        (ack["type"].as_str(), ack["subscribed"].as_str()),
        (Some("ack"), Some(topic)),
        "{ack}"
    );
}

/// Every event received until `until` holds for the set of types, or `deadline`.
async fn collect(
    ws: &mut Socket,
    deadline: Duration,
    until: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let end = Instant::now() + deadline;
    let mut events = Vec::new();
    while Instant::now() < end && !until(&events) {
        if let Some(m) = next(ws, Duration::from_millis(200)).await {
            if m["type"] == "event" {
                events.push(m);
            }
        }
    }
    events
}

const ALL_TYPES: [&str; 19] = [
    "agent:registered",
    "agent:updated",
    "agent:shutdown",
    "work:submitted",
    "work:assigned",
    "work:started",
    "work:progress",
    "work:completed",
    "work:failed",
    "work:cancelled",
    "target:registered",
    "target:updated",
    "target:disabled",
    "target:removed",
    "target:health-changed",
    "spin-up:triggered",
    "spin-up:started",
    "spin-up:completed",
    "spin-up:failed",
];

fn types(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .filter_map(|e| e["event"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_flow_shows_all_nineteen_event_types_in_order() {
    let nats = NatsServer::start();
    let mut env = fast_env(&nats);
    env.push(("IDLE_TIMEOUT_MS", "600000".into()));
    let weft = Weft::start(&env);
    let mut ws = connect(&weft, "").await;
    for topic in ["work", "agents", "targets"] {
        subscribe(&mut ws, topic, json!({})).await;
    }
    let http = client();
    let agent = format!(
        "{} agent --command 'case \"$WEFT_WORK_DESCRIPTION\" in *fail*) exit 3;; *slow*) sleep 30;; esac; echo step; sleep 1.3; echo done'",
        common::weft_binary().display()
    );
    let target = |name: &str, command: &str| {
        json!({
            "name": name, "agentType": "claude-code", "capabilities": ["rust"], "boundaries": ["personal"],
            "mechanism": "local", "config": {"command": command, "detached": false}
        })
    };
    call(
        http.post(weft.url("/api/targets"))
            .json(&target("broken", "exit 3")),
    )
    .await;
    call(
        http.post(weft.url("/api/targets"))
            .json(&target("good", &agent)),
    )
    .await;
    let (_, ok) = call(
        http.post(weft.url("/api/work"))
            .json(&submit_body("fine job", "rust", "personal", 5)),
    )
    .await;
    poll_until(
        &weft,
        &format!("/api/work/{}", ok["id"].as_str().unwrap_or_default()),
        Duration::from_secs(30),
        |w| w["status"] == "completed",
    )
    .await;
    let mut failing = submit_body("fail please", "rust", "personal", 5);
    failing["maxAttempts"] = json!(1);
    let (_, bad) = call(http.post(weft.url("/api/work")).json(&failing)).await;
    poll_until(
        &weft,
        &format!("/api/work/{}", bad["id"].as_str().unwrap_or_default()),
        Duration::from_secs(30),
        |w| w["status"] == "failed" || w["status"] == "dead-lettered",
    )
    .await;
    let (_, slow) = call(
        http.post(weft.url("/api/work"))
            .json(&submit_body("slow one", "rust", "personal", 5)),
    )
    .await;
    let slow_id = slow["id"].as_str().unwrap_or_default().to_string();
    poll_until(
        &weft,
        &format!("/api/work/{slow_id}"),
        Duration::from_secs(30),
        |w| w["status"] == "in-progress",
    )
    .await;
    call(http.post(weft.url(&format!("/api/work/{slow_id}/cancel")))).await;
    call(http.post(weft.url("/api/targets/broken/test"))).await;
    call(
        http.put(weft.url("/api/targets/broken"))
            .json(&json!({"description": "never works"})),
    )
    .await;
    call(http.post(weft.url("/api/targets/broken/disable"))).await;
    call(http.delete(weft.url("/api/targets/broken"))).await;
    let (status, _) = call(
        http.post(weft.url("/api/agents/shutdown-batch"))
            .json(&json!({"filter": {}})),
    )
    .await;
    assert_eq!(status, 200);

    let events = collect(&mut ws, Duration::from_secs(30), |e| {
        types(e).len() == ALL_TYPES.len()
    })
    .await;
    let seen = types(&events);
    let missing: Vec<&&str> = ALL_TYPES.iter().filter(|t| !seen.contains(**t)).collect();
    assert!(missing.is_empty(), "missing {missing:?}; got {seen:?}");
    assert_eq!(seen.len(), 19, "{seen:?}");
    // In log order, each with the documented envelope and fields.
    let sequences: Vec<u64> = events
        .iter()
        .filter_map(|e| e["sequence"].as_u64())
        .collect();
    assert_eq!(sequences.len(), events.len());
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    for e in &events {
        let d = &e["data"];
        assert_eq!(e["event"], d["type"]);
        assert!(
            d["timestamp"].is_string() && d["projectId"] == "default",
            "{e}"
        );
        let needs: &[&str] = match d["type"].as_str().unwrap_or_default() {
            "work:submitted" => &[
                "workId",
                "taskId",
                "capability",
                "boundary",
                "priority",
                "description",
            ],
            "work:assigned" => &[
                "workId",
                "taskId",
                "assignedTo",
                "assignedToAgent",
                "capability",
                "boundary",
            ],
            "work:started" => &["workId", "taskId", "assignedTo", "assignedToAgent"],
            "work:progress" => &["workId", "taskId", "assignedTo", "assignedToAgent"],
            "work:completed" => &["workId", "taskId", "summary"],
            "work:failed" => &["workId", "taskId", "errorMessage", "recoverable"],
            "work:cancelled" => &["workId", "taskId"],
            "agent:registered" => &["agent", "capabilities", "boundaries", "status"],
            "agent:updated" => &["agent", "newStatus", "currentTaskCount"],
            "agent:shutdown" => &["agent", "reason", "graceful"],
            "target:registered" => &[
                "targetId",
                "targetName",
                "agentType",
                "capabilities",
                "boundaries",
                "mechanism",
            ],
            "target:updated" => &["targetId", "targetName", "newStatus"],
            "target:disabled" => &["targetId", "targetName"],
            "target:removed" => &["targetId"],
            "target:health-changed" => &["targetId", "targetName", "newHealth"],
            "spin-up:triggered" => &["targetAgentType", "capability", "boundary", "workId"],
            "spin-up:started" => &["targetId", "targetName", "agentType"],
            "spin-up:completed" => &[
                "targetId",
                "targetName",
                "agentType",
                "agentGuid",
                "durationMs",
            ],
            "spin-up:failed" => &["targetId", "targetName", "agentType", "errorMessage"],
            other => panic!("unexpected event type {other}"),
        };
        for field in needs {
            assert!(!d[*field].is_null(), "{} lacks {field}: {d}", d["type"]);
        }
    }

    // Stats and metrics agree with the state.
    let (_, stats) = call(http.get(weft.url("/api/stats"))).await;
    let (_, work) = call(http.get(weft.url("/api/work?limit=100"))).await;
    let count = |status: &str| {
        work["workItems"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|w| w["status"] == status).count()) as u64
    };
    assert_eq!(
        stats["totals"]["completedWork"].as_u64(),
        Some(count("completed"))
    );
    assert_eq!(
        stats["totals"]["failedWork"].as_u64(),
        Some(count("failed") + count("dead-lettered") + count("cancelled"))
    );
    assert_eq!(stats["totals"]["targets"], 1);
    assert_eq!(stats["totalProjects"], 1);
    let metrics = common::metrics_text(&weft).await;
    assert!(
        metrics.contains(&format!(
            "weft_work_items{{project=\"default\",status=\"completed\"}} {}",
            count("completed")
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "weft_spin_ups{project=\"default\",mechanism=\"local\",outcome=\"failed\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("weft_websocket_clients 1"), "{metrics}");
    assert!(
        metrics.contains("weft_assignment_latency_seconds_count 3"),
        "{metrics}"
    );
    let (_, one) = call(http.get(weft.url("/api/projects/default/stats"))).await;
    assert_eq!(one["work"]["completed"].as_u64(), Some(count("completed")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_resume_and_protocol_errors() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let http = client();
    let mut filtered = connect(&weft, "").await;
    subscribe(
        &mut filtered,
        "work",
        json!({"filter": {"capability": "go", "status": "pending"}}),
    )
    .await;
    send(
        &mut filtered,
        json!({"type": "subscribe", "topic": "weather"}),
    )
    .await;
    assert!(next(&mut filtered, Duration::from_secs(5))
        .await
        .expect("error")["error"]
        .as_str()
        .is_some_and(|e| e.starts_with("Invalid topic")));
    send(
        &mut filtered,
        json!({"type": "unsubscribe", "topic": "agents"}),
    )
    .await;
    assert_eq!(
        next(&mut filtered, Duration::from_secs(5))
            .await
            .expect("error")["error"],
        "Not subscribed to topic: agents"
    );
    send(&mut filtered, json!({"type": "dance"})).await;
    assert_eq!(
        next(&mut filtered, Duration::from_secs(5))
            .await
            .expect("error")["error"],
        "Unknown message type: dance"
    );
    filtered
        .send(Message::Text("not json".into()))
        .await
        .expect("sent");
    assert_eq!(
        next(&mut filtered, Duration::from_secs(5))
            .await
            .expect("error")["error"],
        "Invalid message format"
    );
    send(&mut filtered, json!({"type": "ping"})).await;
    assert_eq!(
        next(&mut filtered, Duration::from_secs(5))
            .await
            .expect("pong")["type"],
        "pong"
    );

    let mut resuming = connect(&weft, "").await;
    subscribe(&mut resuming, "work", json!({})).await;
    call(
        http.post(weft.url("/api/work"))
            .json(&submit_body("first", "rust", "personal", 5)),
    )
    .await;
    let first = collect(&mut resuming, Duration::from_secs(10), |e| !e.is_empty()).await;
    let last = first[0]["sequence"].as_u64().expect("sequence");
    drop(resuming);

    for i in 0..500 {
        let capability = if i % 50 == 0 { "go" } else { "rust" };
        let (status, _) = call(http.post(weft.url("/api/work")).json(&submit_body(
            &format!("missed {i}"),
            capability,
            "personal",
            5,
        )))
        .await;
        assert_eq!(status, 201);
    }
    let mut back = connect(&weft, "").await;
    subscribe(&mut back, "work", json!({"after": last})).await;
    let missed = collect(&mut back, Duration::from_secs(20), |e| e.len() >= 500).await;
    assert_eq!(missed.len(), 500);
    let sequences: Vec<u64> = missed
        .iter()
        .filter_map(|e| e["sequence"].as_u64())
        .collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]) && sequences[0] > last,
        "out of order or duplicated"
    );
    // Then live, with no gap.
    call(
        http.post(weft.url("/api/work"))
            .json(&submit_body("live", "rust", "personal", 5)),
    )
    .await;
    let live = collect(&mut back, Duration::from_secs(10), |e| !e.is_empty()).await;
    assert_eq!(live[0]["data"]["description"], "live");
    assert!(live[0]["sequence"].as_u64() > sequences.last().copied());

    // The filtered client saw exactly the ten `go` items.
    let go = collect(&mut filtered, Duration::from_secs(3), |e| e.len() >= 11).await;
    assert_eq!(go.len(), 10, "{go:?}");
    assert!(go.iter().all(|e| e["data"]["capability"] == "go"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_auth_happens_at_the_upgrade() {
    let nats = NatsServer::start();
    let weft = Weft::start(&[
        ("NATS_URL", nats.url()),
        ("API_TOKENS", "secret-token".into()),
    ]);
    let url = format!("ws://127.0.0.1:{}/api/ws", weft.port);
    for refused in [url.clone(), format!("{url}?token=wrong")] {
        match tokio_tungstenite::connect_async(refused.as_str()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401)
            }
            other => panic!("{refused} was not refused: {:?}", other.map(|_| ())),
        }
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}?token=secret-token"))
        .await
        .expect("query token");
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(
        next(&mut ws, Duration::from_secs(5)).await.expect("pong")["type"],
        "pong"
    );
    let mut request = url.as_str().into_client_request().expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "bearer, secret-token".parse().expect("header"),
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("protocol token");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("bearer")
    );
    subscribe(&mut ws, "stats", json!({})).await;
    let mut request = url.as_str().into_client_request().expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "bearer, nope".parse().expect("header"),
    );
    assert!(tokio_tungstenite::connect_async(request).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_subscribers_get_periodic_stats() {
    let nats = NatsServer::start();
    let mut env = fast_env(&nats);
    env.push(("WEFT_WS_STATS_INTERVAL_MS", "300".into()));
    let weft = Weft::start(&env);
    call(
        client()
            .post(weft.url("/api/work"))
            .json(&submit_body("x", "rust", "personal", 5)),
    )
    .await;
    let mut ws = connect(&weft, "").await;
    subscribe(&mut ws, "stats", json!({})).await;
    let mut stats = None;
    for _ in 0..20 {
        match next(&mut ws, Duration::from_secs(2)).await {
            Some(m) if m["type"] == "stats" => {
                stats = Some(m);
                break;
            }
            _ => {}
        }
    }
    let stats = stats.expect("a stats message");
    assert_eq!(stats["projectId"], "default");
    assert_eq!(stats["data"]["work"]["pending"], 1);
    assert_eq!(stats["data"]["websocket"]["connections"], 1);
}
