//! Routing explained: for an item, and for a dry run of a submission, every agent and
//! target of the project with whether it could take the item and why not.

use std::time::Duration;

use crate::common;
use common::{call, client, NatsServer, Weft};
use serde_json::{json, Value};

async fn join(nats: &async_nats::Client, id: &str, agent_type: &str, boundary: &str) {
    let request = weft::protocol::RegisterRequest {
        agent_id: id.into(),
        agent_type: agent_type.into(),
        capabilities: vec!["rust".into()],
        boundaries: vec![boundary.into()],
        max_concurrent_tasks: 1,
        idle_timeout_ms: None,
        hostname: None,
        handle: None,
        spin_up_id: None,
        target_id: None,
    };
    let reply: weft::protocol::Reply<Value> = weft::protocol::call(
        nats,
        "default",
        weft::protocol::REGISTER,
        id,
        &request,
        Duration::from_secs(10),
    )
    .await
    .expect("answer");
    assert!(reply.ok, "{:?}", reply.error);
}

fn reasons<'a>(list: &'a Value, id: &str) -> Vec<&'a str> {
    list.as_array()
        .and_then(|l| l.iter().find(|c| c["id"] == id))
        .and_then(|c| c["reasons"].as_array())
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_else(|| panic!("{id} not in {list}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_item_and_a_dry_run_name_every_candidate_and_why_not() {
    let server = NatsServer::start();
    let weft = Weft::start(&[
        ("NATS_URL", server.url()),
        ("WEFT_AGENT_TIMEOUT_MS", "600000".into()),
    ]);
    let nats = async_nats::connect(server.url()).await.expect("nats");
    join(&nats, "copilot-1", "copilot-cli", "corporate").await;
    join(&nats, "claude-1", "claude-code", "personal").await;
    let http = client();
    let target = json!({"name": "off", "agentType": "copilot-cli", "capabilities": ["rust"],
        "boundaries": ["corporate"], "mechanism": "webhook",
        "config": {"mechanism": "webhook", "url": "http://127.0.0.1:9/hook"}});
    let (status, created) = call(http.post(weft.url("/api/targets")).json(&target)).await;
    assert_eq!(status, 201, "{created}");
    let target_id = created["id"].as_str().expect("id").to_string();
    let (status, _) = call(http.post(weft.url(&format!("/api/targets/{target_id}/disable")))).await;
    assert_eq!(status, 200);

    let item = json!({"description": "secret work", "capability": "rust", "boundary": "corporate"});
    let (status, submitted) = call(http.post(weft.url("/api/work")).json(&item)).await;
    assert_eq!(status, 201, "{submitted}");
    let id = submitted["id"].as_str().expect("id").to_string();
    let mut explained = Value::Null;
    for _ in 0..100 {
        let (status, answer) = call(http.get(weft.url(&format!("/api/work/{id}/routing")))).await;
        assert_eq!(status, 200, "{answer}");
        explained = answer;
        if explained["assignedTo"] == "copilot-1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(explained["assignedTo"], "copilot-1", "{explained}");
    assert!(explained["rule"]
        .as_str()
        .is_some_and(|r| r.contains("corporate")));
    assert_eq!(
        reasons(&explained["agents"], "claude-1"),
        ["agent-type-not-allowed", "boundary-not-allowed"]
    );
    assert!(
        reasons(&explained["agents"], "copilot-1").is_empty(),
        "it holds the item"
    );
    assert_eq!(reasons(&explained["targets"], &target_id), ["disabled"]);

    // A dry run of a second corporate item: the one copilot is busy; nothing is recorded.
    let (_, before) = call(http.get(weft.url("/api/events?limit=1000"))).await;
    let (status, dry) = call(http.post(weft.url("/api/work/explain")).json(&item)).await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(reasons(&dry["agents"], "copilot-1"), ["full"]);
    assert!(
        dry.get("chosenAgent").is_none() && dry["spinUp"] == false,
        "{dry}"
    );
    let (_, after) = call(http.get(weft.url("/api/events?limit=1000"))).await;
    assert_eq!(before["count"], after["count"], "a dry run records nothing");
    let (status, _) = call(
        http.post(weft.url("/api/work/explain"))
            .json(&json!({"description": "x"})),
    )
    .await;
    assert_eq!(status, 400);

    // shuttle says the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shuttle"))
        .args(["work", "explain", &id])
        .env("HOME", tempfile::tempdir().expect("home").path())
        .env("WEFT_API_URL", weft.url(""))
        .output()
        .expect("shuttle");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("boundary-not-allowed") && text.contains("disabled"),
        "{text}"
    );
}
