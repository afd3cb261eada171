//! Agents' output lives in its own stream: an agent printing 100,000 lines grows the audit
//! log by a bounded number of events while `/api/work/{id}/output` returns every line in
//! order; output is followed live over SSE (resuming with `Last-Event-ID`) and the
//! WebSocket's `output` topic; `shuttle work logs` prints it.

use std::time::Duration;

use crate::common;
use common::{call, client, fast_env, poll_until, AgentProcess, NatsServer, SseStream, Weft};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};

fn millis(time: &Value) -> i64 {
    time.as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_millisecond())
        .unwrap_or_else(|| panic!("not a time: {time}"))
}

/// Every line of an item's output, paging with `after`.
async fn all_lines(weft: &Weft, id: &str) -> Vec<Value> {
    let mut lines = Vec::new();
    let mut after = 0;
    for _ in 0..1000 {
        let (status, page) = call(
            client().get(weft.url(&format!("/api/work/{id}/output?after={after}&limit=10000"))),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        lines.extend(page["lines"].as_array().cloned().unwrap_or_default());
        after = page["nextAfter"].as_u64().expect("nextAfter");
        if page["hasMore"] != true {
            return lines;
        }
    }
    panic!("the output did not end within 1000 pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_lines_go_to_the_output_stream_not_the_audit_log() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let _agent = AgentProcess::start(&nats, "claude-code", "rust", "personal", 1, "seq 1 100000");
    let id = common::submit(&weft, "chatty").await;
    poll_until(
        &weft,
        &format!("/api/work/{id}"),
        Duration::from_secs(120),
        |w| w["status"] == "completed",
    )
    .await;

    let lines = all_lines(&weft, &id).await;
    assert_eq!(lines.len(), 100_000, "every line is kept");
    for (i, line) in lines.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(line["text"], n.to_string(), "line {n} in order");
        assert_eq!(
            (line["line"].as_u64(), line["attempt"].as_u64()),
            (Some(n), Some(1))
        );
    }

    // The audit log got the item's life and coarse progress at a bounded rate: at most one
    // `work.progressed` per interval of the attempt's own recorded time.
    let (_, history) =
        call(client().get(weft.url(&format!("/api/work/{id}/history?limit=1000")))).await;
    let events = history["events"].as_array().expect("events");
    let of = |kind: &str| {
        events
            .iter()
            .filter(|e| e["type"] == kind)
            .collect::<Vec<_>>()
    };
    let started = millis(&of("work.started")[0]["time"]);
    let completed = millis(&of("work.completed")[0]["time"]);
    let allowed = (completed - started) / decide::work::PROGRESS_EVERY_MS as i64 + 1;
    let progressed = of("work.progressed");
    assert!(
        progressed.len() as i64 <= allowed,
        "{} progress events in {} ms",
        progressed.len(),
        completed - started
    );
    assert!(
        events.len() as i64 <= 4 + allowed,
        "submitted, assigned, started, completed and progress only: {history}"
    );
    for p in progressed {
        let message = p["data"]["message"].as_str().unwrap_or_default();
        assert!(
            message.chars().count() <= decide::work::PROGRESS_MESSAGE_CHARS,
            "{message}"
        );
    }
    // The whole log, agents included, stays small.
    let all = common::all_events(&weft).await;
    assert!(
        all.len() < 40,
        "{} events for one item of 100,000 lines",
        all.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_followed_live_and_resumed_over_sse_and_the_websocket() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let dir = tempfile::tempdir().expect("temp dir");
    let go = dir.path().join("go");
    let command = format!(
        "for i in 1 2 3; do echo line $i; sleep 0.3; done; while [ ! -f {} ]; do sleep 0.1; done; echo after go",
        go.display()
    );
    let _agent = AgentProcess::start(&nats, "claude-code", "rust", "personal", 1, &command);
    let id = common::submit(&weft, "live output").await;

    // SSE from the start: the lines arrive as the agent prints them.
    let path = format!("/api/work/{id}/output/stream");
    let mut sse = SseStream::open(&weft, &path, None).await;
    let mut seen = Vec::new();
    let mut last_id = 0;
    while seen.len() < 3 {
        let (sequence, chunk) = sse.next().await;
        assert!(sequence > last_id, "chunks in order");
        last_id = sequence;
        assert_eq!(chunk["workId"], id.as_str());
        assert_eq!(chunk["sequence"], sequence);
        let first = chunk["firstLine"].as_u64().expect("firstLine");
        assert_eq!(first, seen.len() as u64 + 1, "numbered without gaps");
        for line in chunk["lines"].as_array().expect("lines") {
            seen.push(line.as_str().expect("text").to_string());
        }
    }
    assert_eq!(seen, ["line 1", "line 2", "line 3"]);
    drop(sse);

    // The WebSocket's output topic: from the start, then live.
    let ws_url = weft.url("/api/ws").replace("http://", "ws://");
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.expect("ws");
    let subscribe = json!({"type": "subscribe", "topic": "output", "filter": {"workId": id}});
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        subscribe.to_string().into(),
    ))
    .await
    .expect("send");
    let mut ws_lines = Vec::new();
    let mut acked = false;
    // Resuming SSE after the last id it saw gets only what came later.
    let mut resumed = SseStream::open(&weft, &path, Some(&last_id.to_string())).await;
    std::fs::write(&go, "go").expect("go");
    let (sequence, chunk) = resumed.next().await;
    assert!(sequence > last_id);
    assert_eq!(
        chunk["lines"],
        json!(["after go"]),
        "nothing again, nothing missed"
    );
    assert_eq!(chunk["firstLine"], 4);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ws_lines.len() < 4 {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("ws output within 20 s")
            .expect("open")
            .expect("message");
        let Ok(text) = message.to_text() else {
            continue;
        };
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        match value["type"].as_str() {
            Some("ack") => acked = value["subscribed"] == "output",
            Some("event") => {
                assert_eq!(
                    (&value["topic"], &value["event"]),
                    (&json!("output"), &json!("work:output"))
                );
                for line in value["data"]["lines"].as_array().expect("lines") {
                    ws_lines.push(line.as_str().expect("text").to_string());
                }
            }
            _ => panic!("unexpected {value}"),
        }
    }
    assert!(acked);
    assert_eq!(ws_lines, ["line 1", "line 2", "line 3", "after go"]);

    // Subscribing needs an item that exists.
    let bad = json!({"type": "subscribe", "topic": "output", "filter": {"workId": "nope"}});
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        bad.to_string().into(),
    ))
    .await
    .expect("send");
    let answer = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("answer")
        .expect("open")
        .expect("message");
    let answer: Value = serde_json::from_str(answer.to_text().expect("text")).expect("json");
    assert_eq!(answer["type"], "error", "{answer}");

    poll_until(
        &weft,
        &format!("/api/work/{id}"),
        Duration::from_secs(30),
        |w| w["status"] == "completed",
    )
    .await;
    // shuttle prints the lines, and with --follow stops at a finished item.
    for args in [
        vec!["work", "logs", id.as_str()],
        vec!["work", "logs", id.as_str(), "--follow"],
    ] {
        let home = tempfile::tempdir().expect("home");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shuttle"))
            .args(&args)
            .env("HOME", home.path())
            .env("WEFT_API_URL", weft.url(""))
            .env_remove("WEFT_API_TOKEN")
            .output()
            .expect("shuttle runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "line 1\nline 2\nline 3\nafter go\n"
        );
    }
    // An unknown item's output is a 404, and a bad Last-Event-ID a 400.
    let (status, _) = call(client().get(weft.url("/api/work/nope/output"))).await;
    assert_eq!(status, 404);
    let bad = client()
        .get(weft.url(&path))
        .header("last-event-id", "x")
        .send()
        .await
        .expect("answer");
    assert_eq!(bad.status(), 400);
}
