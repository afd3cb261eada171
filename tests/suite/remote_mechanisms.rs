//! The `webhook` and `github-actions` mechanisms against real HTTP servers on 127.0.0.1
//! that implement the calls used, check them (body, auth, HMAC signature), and then do
//! what the real side would: start a `weft agent` for the spin-up.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    all_events, call, client, fast_env, poll_until, submit_body, AgentProcess, NatsServer, Seen,
    Weft,
};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// A stand-in that answers `status(method, path)` with an empty JSON object.
fn stand_in(
    status: impl Fn(&str, &str) -> u16 + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    common::stand_in(move |r| (status(&r.method, &r.path), "{}".to_string()))
}

/// Plays the remote side: starts an agent for each spin-up that reaches it.
fn start_agents_for(nats: &NatsServer, spin_up_ids: &[String]) -> Vec<AgentProcess> {
    spin_up_ids
        .iter()
        .map(|id| {
            AgentProcess::start_with(
                nats,
                "claude-code",
                "rust",
                "personal",
                1,
                "echo remote done",
                &[("WEFT_SPINUP_ID", id.as_str())],
            )
        })
        .collect()
}

fn target(name: &str, mechanism: &str, config: Value) -> Value {
    json!({"name": name, "agentType": "claude-code", "capabilities": ["rust"], "boundaries": ["personal"], "mechanism": mechanism, "config": config})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_templated_and_fail_over() {
    let nats = NatsServer::start();
    let (broken, _) = stand_in(|_, _| 500);
    let (hook, seen) = stand_in(|_, _| 202);
    let mut env = fast_env(&nats);
    env.push(("HOOK_TOKEN", "Bearer hook-token".into()));
    env.push(("HOOK_SECRET", "s3cret".into()));
    let weft = Weft::start(&env);
    let http = client();
    let template = r#"{"spinUp":"{{spinUpId}}","work":"{{workItemId}}","capability":"{{capability}}","boundary":"{{boundary}}","target":"{{targetName}}"}"#;
    for body in [
        target("down", "webhook", json!({"url": format!("{broken}/hook")})),
        target(
            "hook",
            "webhook",
            json!({
                "url": format!("{hook}/start"), "bodyTemplate": template, "headers": {"X-Team": "agents"},
                "secretHeaders": {"Authorization": "HOOK_TOKEN"}, "hmacSecretEnvVar": "HOOK_SECRET"
            }),
        ),
    ] {
        let (status, created) = call(http.post(weft.url("/api/targets")).json(&body)).await;
        assert_eq!(status, 201, "{created}");
        assert!(
            !created.to_string().contains("hook-token") && !created.to_string().contains("s3cret")
        );
    }
    let (status, health) = call(http.post(weft.url("/api/targets/hook/test"))).await;
    assert_eq!(
        (status, health["healthy"].as_bool()),
        (200, Some(true)),
        "{health}"
    );

    let (_, created) = call(
        http.post(weft.url("/api/work"))
            .json(&submit_body("ship it", "rust", "personal", 5)),
    )
    .await;
    let id = created["id"].as_str().expect("id").to_string();
    poll_until(
        &weft,
        "/api/events?type=spin-up.started",
        Duration::from_secs(20),
        |b| b["count"] == 1,
    )
    .await;
    let request = seen
        .lock()
        .expect("lock")
        .iter()
        .find(|s| s.method == "POST")
        .cloned()
        .expect("the webhook was called");
    assert_eq!(request.path, "/start");
    assert_eq!(request.headers["authorization"], "Bearer hook-token");
    assert_eq!(request.headers["x-team"], "agents");
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").expect("key");
    mac.update(request.body.as_bytes());
    assert_eq!(
        request.headers["x-weft-signature"],
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
    let body: Value = serde_json::from_str(&request.body).expect("the template renders JSON");
    assert_eq!(
        (
            body["work"].as_str(),
            body["capability"].as_str(),
            body["boundary"].as_str(),
            body["target"].as_str()
        ),
        (
            Some(id.as_str()),
            Some("rust"),
            Some("personal"),
            Some("hook")
        )
    );

    let _agents = start_agents_for(&nats, &[body["spinUp"].as_str().expect("id").to_string()]);
    poll_until(
        &weft,
        &format!("/api/work/{id}"),
        Duration::from_secs(30),
        |w| w["status"] == "completed",
    )
    .await;
    let events = all_events(&weft).await;
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "spin-up.failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]["data"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 500")),
        "{}",
        failed[0]
    );
    let completed: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "spin-up.completed")
        .collect();
    assert_eq!(completed[0]["aggregateId"], body["spinUp"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_workflows_are_dispatched_with_the_spin_up_as_input() {
    let nats = NatsServer::start();
    let (api, seen) = stand_in(|method, path| match (method, path) {
        ("GET", "/repos/acme/agents/actions/workflows/agent.yml") => 200,
        ("POST", "/repos/acme/agents/actions/workflows/agent.yml/dispatches") => 204,
        _ => 404,
    });
    let mut env = fast_env(&nats);
    env.push(("GH_TOKEN", "ghp_test".into()));
    let weft = Weft::start(&env);
    let http = client();
    let config = json!({"repo": "acme/agents", "workflowFile": "agent.yml", "ref": "release", "tokenEnvVar": "GH_TOKEN", "apiBaseUrl": api, "inputs": {"model": "opus"}});
    let (status, created) = call(http.post(weft.url("/api/targets")).json(&target(
        "gh",
        "github-actions",
        config.clone(),
    )))
    .await;
    assert_eq!(status, 201, "{created}");
    let (_, health) = call(http.post(weft.url("/api/targets/gh/test"))).await;
    assert_eq!(health["healthy"], true, "{health}");
    let mut wrong = config;
    wrong["workflow"] = json!("missing.yml");
    wrong.as_object_mut().map(|o| o.remove("workflowFile"));
    let (status, created) = call(http.post(weft.url("/api/targets")).json(&target(
        "gh-missing",
        "github-actions",
        wrong,
    )))
    .await;
    assert_eq!(status, 201, "{created}");
    let (_, health) = call(http.post(weft.url("/api/targets/gh-missing/test"))).await;
    assert_eq!(health["healthy"], false);
    assert!(
        health["error"].as_str().is_some_and(|e| e.contains("404")),
        "{health}"
    );

    let (_, created) = call(http.post(weft.url("/api/work")).json(&submit_body(
        "via actions",
        "rust",
        "personal",
        5,
    )))
    .await;
    let id = created["id"].as_str().expect("id").to_string();
    poll_until(
        &weft,
        "/api/events?type=spin-up.started",
        Duration::from_secs(20),
        |b| b["count"] == 1,
    )
    .await;
    let dispatch = seen
        .lock()
        .expect("lock")
        .iter()
        .find(|s| s.method == "POST")
        .cloned()
        .expect("dispatched");
    assert_eq!(dispatch.headers["authorization"], "Bearer ghp_test");
    let body: Value = serde_json::from_str(&dispatch.body).expect("json");
    assert_eq!(body["ref"], "release");
    assert_eq!(body["inputs"]["model"], "opus");
    assert_eq!(body["inputs"]["workItemId"], id.as_str());
    assert_eq!(body["inputs"]["capability"], "rust");
    let _agents = start_agents_for(
        &nats,
        &[body["inputs"]["spinUpId"].as_str().expect("id").to_string()],
    );
    poll_until(
        &weft,
        &format!("/api/work/{id}"),
        Duration::from_secs(30),
        |w| w["status"] == "completed",
    )
    .await;
}
