//! The state as of a sequence or a time: answers read live during a scenario (a target, a
//! spin-up that starts a real agent, work it completes) are asked again later with `at` and
//! must come back equal; `asOf` picks the last event recorded at or before the time; the
//! points fold from the kept snapshots (several are taken, fewer kept).

use crate::common;

use std::time::Duration;

use common::{all_events, client, fast_env, poll_until, submit_body, NatsServer, Weft};
use serde_json::{json, Value};

/// A live answer, and the sequence (`Weft-Sequence`) it was read at.
async fn read(http: &reqwest::Client, url: &str) -> (u16, u64, Value) {
    let response = http.get(url).send().await.expect("request");
    let status = response.status().as_u16();
    let sequence = response
        .headers()
        .get("weft-sequence")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    let body = response.json().await.unwrap_or(Value::Null);
    (status, sequence, body)
}

/// What may differ between a live answer and the same point read later: the time of the
/// answer itself, and heartbeats (which are not events).
fn comparable(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("timestamp");
        o.remove("lastHeartbeat");
    }
    v
}

fn agent_target(name: &str) -> Value {
    // No shell syntax, so the agent is Weft's child and dies with it.
    let command = format!(
        "{} agent --command 'echo done'",
        common::weft_binary().display()
    );
    json!({
        "name": name, "agentType": "claude-code", "capabilities": ["rust"], "boundaries": ["personal"],
        "mechanism": "local", "maxAgents": 1,
        "config": {"command": command, "detached": false, "env": {"LOG_LEVEL": "warn"}}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_at_a_sequence_equal_the_live_answers_given_then() {
    let nats = NatsServer::start();
    let mut env = fast_env(&nats);
    // Many snapshots, few kept: some points fold from one, older ones from the start.
    env.push(("WEFT_SNAPSHOT_EVERY", "3".into()));
    env.push(("WEFT_SNAPSHOTS_KEPT", "2".into()));
    let weft = Weft::start(&env);
    let http = client();
    // (path, sequence it was read at, answer)
    let mut seen: Vec<(String, u64, Value)> = Vec::new();
    let record = |path: String, read: (u16, u64, Value)| {
        assert_eq!(read.0, 200, "{path}: {}", read.2);
        assert_ne!(read.1, u64::MAX, "{path} names its sequence");
        (path, read.1, read.2)
    };

    let state = record(
        "/api/state".into(),
        read(&http, &weft.url("/api/state")).await,
    );
    assert_eq!(state.1, state.2["sequence"].as_u64().expect("sequence"));
    seen.push(state);
    let response = http
        .post(weft.url("/api/targets"))
        .json(&agent_target("laptop"))
        .send()
        .await
        .expect("register");
    assert_eq!(response.status(), 201);
    for path in ["/api/targets/laptop", "/api/stats", "/api/state"] {
        seen.push(record(path.into(), read(&http, &weft.url(path)).await));
    }

    let mut items = Vec::new();
    for n in 0..2 {
        let response = http
            .post(weft.url("/api/work"))
            .json(&submit_body(&format!("item {n}"), "rust", "personal", 5))
            .send()
            .await
            .expect("submit");
        assert_eq!(response.status(), 201);
        let created: Value = response.json().await.expect("json");
        let id = created["workItemId"].as_str().expect("id").to_string();
        let path = format!("/api/work/{id}");
        seen.push(record(path.clone(), read(&http, &weft.url(&path)).await));
        poll_until(&weft, &path, Duration::from_secs(30), |w| {
            w["status"] == "completed"
        })
        .await;
        seen.push(record(path.clone(), read(&http, &weft.url(&path)).await));
        for path in ["/api/targets/laptop", "/api/stats", "/api/state"] {
            seen.push(record(path.into(), read(&http, &weft.url(path)).await));
        }
        items.push(id);
    }
    let (_, _, agents) = read(&http, &weft.url("/api/agents")).await;
    let guid = agents["agents"][0]["guid"]
        .as_str()
        .expect("the spun-up agent")
        .to_string();
    let path = format!("/api/agents/{guid}");
    seen.push(record(path.clone(), read(&http, &weft.url(&path)).await));

    let events = all_events(&weft).await;
    let head = events
        .last()
        .and_then(|e| e["sequence"].as_u64())
        .expect("events");
    assert!(
        events.iter().any(|e| e["type"] == "spin-up.completed"),
        "the scenario has a spin-up"
    );
    assert!(head >= 12, "enough events for several snapshots ({head})");

    // Every answer, asked again at the sequence it was read at.
    let mut distinct = std::collections::BTreeSet::new();
    for (path, sequence, live) in &seen {
        let url = format!("{}?at={sequence}", weft.url(path));
        let (status, used, past) = read(&http, &url).await;
        assert_eq!(status, 200, "{url}: {past}");
        assert_eq!(used, *sequence, "{url} names the point used");
        assert_eq!(
            comparable(past),
            comparable(live.clone()),
            "{path} at {sequence} differs from what was answered then"
        );
        distinct.insert(*sequence);
    }
    assert!(
        distinct.len() >= 6,
        "points along the scenario: {distinct:?}"
    );

    // Before it existed, an item is not there.
    let (status, _, _) = read(&http, &weft.url(&format!("/api/work/{}?at=1", items[1]))).await;
    assert_eq!(status, 404);

    // asOf: the last event recorded at or before the time.
    let times: Vec<(u64, String)> = events
        .iter()
        .filter_map(|e| Some((e["sequence"].as_u64()?, e["time"].as_str()?.to_string())))
        .collect();
    for (_, time) in times.iter().step_by(3) {
        let expected = times
            .iter()
            .filter(|(_, t)| t <= time)
            .map(|(s, _)| *s)
            .max()
            .expect("at least this one");
        let (status, used, body) =
            read(&http, &format!("{}?asOf={time}", weft.url("/api/state"))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(used, expected, "asOf {time}");
        assert_eq!(body["sequence"].as_u64(), Some(expected));
    }
    // Other offsets are the same instant; before the first event the state is empty.
    let (first_seq, first_time) = &times[0];
    let shifted = first_time.replace('Z', "+00:00");
    let (_, used, _) = read(&http, &format!("{}?asOf={shifted}", weft.url("/api/state"))).await;
    assert!(used >= *first_seq);
    let (_, used, empty) = read(
        &http,
        &format!("{}?asOf=2000-01-01T00:00:00Z", weft.url("/api/stats")),
    )
    .await;
    assert_eq!(used, 0);
    assert_eq!(empty["totalProjects"], 0, "{empty}");

    // Bad points are told apart.
    for (query, expected, needle) in [
        (format!("at={}", head + 1000), 404, "the log ends at"),
        ("at=1&asOf=2025-01-01T00:00:00Z".into(), 400, "not both"),
        ("asOf=yesterday".into(), 400, "RFC 3339"),
    ] {
        let (status, _, body) = read(&http, &format!("{}?{query}", weft.url("/api/state"))).await;
        assert_eq!(status, expected, "{query}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains(needle)),
            "{query}: {body}"
        );
    }
}
