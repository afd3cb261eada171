//! Histories from the log: an item's, a target's and an agent's events in order, the
//! event log filtered by actor and by request, and `shuttle work history`.

use crate::common;

use std::time::Duration;

use common::{call, client, fast_env, local_target, poll_until, AgentProcess, NatsServer, Weft};
use serde_json::{json, Value};

fn types(page: &Value) -> Vec<&str> {
    page["events"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["type"].as_str()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_aggregate_has_its_history_and_the_log_filters_by_actor_and_request() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let agent = AgentProcess::start(&nats, "claude-code", "rust", "personal", 1, "echo done");
    poll_until(&weft, "/api/agents", Duration::from_secs(20), |b| {
        b["total"].as_u64() == Some(1)
    })
    .await;
    let http = client();
    let body = common::submit_body("history", "rust", "personal", 5);
    let (status, submitted) = call(
        http.post(weft.url("/api/work"))
            .header("X-Request-Id", "req-history-1")
            .json(&body),
    )
    .await;
    assert_eq!(status, 201, "{submitted}");
    let id = submitted["workItemId"].as_str().expect("id").to_string();
    poll_until(
        &weft,
        &format!("/api/work/{id}"),
        Duration::from_secs(20),
        |w| w["status"] == "completed",
    )
    .await;

    let (status, history) = call(http.get(weft.url(&format!("/api/work/{id}/history")))).await;
    assert_eq!(status, 200, "{history}");
    let kinds: Vec<&str> = types(&history)
        .into_iter()
        .filter(|t| *t != "work.progressed")
        .collect();
    assert_eq!(
        kinds,
        [
            "work.submitted",
            "work.assigned",
            "work.started",
            "work.completed"
        ]
    );
    let events = history["events"].as_array().expect("events");
    assert!(events.iter().all(|e| e["aggregateId"] == id.as_str()));
    assert!(events.iter().all(|e| e["time"].is_string()));
    let sequences: Vec<u64> = events
        .iter()
        .filter_map(|e| e["sequence"].as_u64())
        .collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    assert_eq!(events[0]["correlationId"], "req-history-1");
    // What each changed: the item appears with its first event, and completes with its last.
    let change = |event: &Value, field: &str| -> Option<(Value, Value)> {
        event["changes"]
            .as_array()?
            .iter()
            .find_map(|c| (c["field"] == field).then(|| (c["before"].clone(), c["after"].clone())))
    };
    assert_eq!(
        change(&events[0], "status"),
        Some((Value::Null, json!("pending"))),
        "{}",
        events[0]
    );
    assert_eq!(
        change(events.last().expect("last"), "status").map(|(_, after)| after),
        Some(json!("completed")),
        "{history}"
    );
    assert!(
        events
            .iter()
            .all(|e| e["changes"].as_array().is_some_and(|c| !c.is_empty())),
        "every event of the item changed something: {history}"
    );
    // A page that starts later still knows what came before.
    let second = events[1]["sequence"].as_u64().expect("sequence");
    let (_, later) =
        call(http.get(weft.url(&format!("/api/work/{id}/history?after={second}&limit=1")))).await;
    assert_eq!(
        later["events"][0]["changes"], events[2]["changes"],
        "{later}"
    );
    assert_eq!(events[0]["data"]["description"], "history");
    let agent_actor = format!("agent:{}", agent.id);
    assert_eq!(
        events.last().expect("completed")["actor"],
        agent_actor.as_str()
    );

    // The log by request and by actor.
    let (_, by_request) = call(http.get(weft.url("/api/events?correlationId=req-history-1"))).await;
    assert_eq!(types(&by_request), ["work.submitted"], "{by_request}");
    let (_, by_agent) = call(
        http.get(weft.url("/api/events"))
            .query(&[("actor", agent_actor.as_str())]),
    )
    .await;
    let actors: Vec<&Value> = by_agent["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| &e["actor"])
        .collect();
    assert!(actors.len() >= 3, "{by_agent}");
    assert!(actors.iter().all(|a| **a == agent_actor.as_str()));

    // A target's and an agent's.
    let (status, _) = call(
        http.post(weft.url("/api/targets"))
            .json(&local_target("history-target")),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = call(
        http.put(weft.url("/api/targets/history-target"))
            .json(&json!({"description": "changed"})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, target) = call(http.get(weft.url("/api/targets/history-target/history"))).await;
    assert_eq!(
        types(&target),
        ["target.registered", "target.updated"],
        "{target}"
    );
    let description = target["events"][1]["changes"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["field"] == "description"))
        .cloned();
    assert_eq!(
        description.map(|c| c["after"].clone()),
        Some(json!("changed")),
        "{target}"
    );
    let (_, agent_history) =
        call(http.get(weft.url(&format!("/api/agents/{}/history", agent.id)))).await;
    assert_eq!(
        types(&agent_history)[0],
        "agent.registered",
        "{agent_history}"
    );
    let (status, missing) = call(http.get(weft.url("/api/work/no-such-item/history"))).await;
    assert_eq!(status, 404, "{missing}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shuttle"))
        .args(["work", "history", &id])
        .env("WEFT_API_URL", weft.url(""))
        .env_remove("WEFT_API_TOKEN")
        .env("HOME", nats.dir.path())
        .output()
        .expect("shuttle runs");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    let order: Vec<usize> = ["work.submitted", "work.assigned", "work.completed"]
        .iter()
        .map(|t| {
            printed
                .find(t)
                .unwrap_or_else(|| panic!("{t} in {printed}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{printed}");
}
