//! The Warp bridge with a stand-in Warp agent speaking Warp's wire format over NATS: its
//! registry entry, a claim from the capability work queue, and reports in Weft's inbox.
//! An item submitted over REST is routed to it, claimed and completed through the bridge,
//! and its events name the Warp agent; a report on an item it does not hold is rejected
//! in its own inbox.

use crate::common;

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use common::{all_events, call, client, fast_env, poll_until, NatsServer, Weft};
use futures::StreamExt;
use serde_json::{json, Value};

const GUID: &str = "5a1b2c3d4e5f60718293a4b5c6d7e8f9";
const PROJECT: &str = "0123456789abcdef";

async fn registry(js: &jetstream::Context) -> kv::Store {
    for _ in 0..50 {
        if let Ok(store) = js.get_key_value("agent-registry").await {
            return store;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("Weft creates the agent-registry bucket");
}

/// An inbox message as Warp sends it: the payload is JSON in `content`.
async fn send(js: &jetstream::Context, to: &str, kind: &str, content: Value) {
    let message = json!({
        "id": uuid::Uuid::new_v4().to_string(), "senderGuid": GUID, "senderHandle": "stand-in",
        "recipientGuid": to, "messageType": kind, "content": content.to_string(),
        "timestamp": weft::time::rfc3339(weft::time::now_ms()),
    });
    js.publish(format!("global.agent.{to}"), message.to_string().into())
        .await
        .expect("publish")
        .await
        .expect("stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warp_agent_claims_and_completes_an_item_through_the_bridge() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let nc = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(nc);

    // The stand-in registers the way Warp 1.0 does (plus the boundaries it may see).
    let bucket = registry(&js).await;
    let now = weft::time::rfc3339(weft::time::now_ms());
    let entry = json!({
        "guid": GUID, "agentType": "developer", "handle": "stand-in", "hostname": "laptop",
        "projectId": PROJECT, "natsUrl": nats.url(), "capabilities": ["typescript"],
        "scope": "team", "status": "online", "currentTaskCount": 0,
        "registeredAt": now, "lastHeartbeat": now, "metadata": {"boundaries": ["personal"]},
    });
    bucket
        .put(GUID, entry.to_string().into())
        .await
        .expect("registered");
    poll_until(
        &weft,
        &format!("/api/agents/{GUID}"),
        Duration::from_secs(20),
        |a| a["status"] == "online" && a["source"] == "warp",
    )
    .await;

    // Weft is in the registry as the coordinator, with an inbox.
    let mut coordinator = None;
    for _ in 0..100 {
        let mut keys = bucket.keys().await.expect("keys");
        while let Some(key) = keys.next().await {
            let key = key.expect("key");
            if let Ok(Some(value)) = bucket.get(&key).await {
                let e: Value = serde_json::from_slice(&value).unwrap_or_default();
                if e["agentType"] == "coordinator" {
                    coordinator = e["guid"].as_str().map(String::from);
                }
            }
        }
        if coordinator.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let coordinator = coordinator.expect("Weft's registry entry");

    let http = client();
    let (status, submitted) = call(http.post(weft.url("/api/work")).json(&json!({
        "description": "port the parser", "capability": "typescript", "boundary": "personal",
        "projectId": PROJECT, "taskId": "warp-task-1",
    })))
    .await;
    assert_eq!(status, 201, "{submitted}");
    let id = submitted["workItemId"].as_str().expect("id").to_string();

    // The stand-in claims from the capability's work queue, as warp_work_claim does.
    let mut queue = None;
    for _ in 0..200 {
        if let Ok(s) = js.get_stream("WORKQUEUE_TYPESCRIPT").await {
            queue = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut queue = queue.unwrap_or_else(|| {
        panic!(
            "the work queue is created when first needed\nweft log:\n{}",
            weft.log_text()
        )
    });
    let info = queue.info().await.expect("info");
    assert_eq!(info.config.retention, stream::RetentionPolicy::WorkQueue);
    assert_eq!(info.config.subjects, ["global.workqueue.typescript"]);
    let worker: consumer::PullConsumer = queue
        .get_or_create_consumer(
            "worker-TYPESCRIPT",
            consumer::pull::Config {
                durable_name: Some("worker-TYPESCRIPT".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(300),
                max_deliver: 3,
                ..Default::default()
            },
        )
        .await
        .expect("consumer");
    let mut batch = worker
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(20))
        .messages()
        .await
        .expect("fetch");
    let message = batch.next().await.expect("a work item").expect("message");
    message.ack().await.expect("ack");
    let item: Value = serde_json::from_slice(&message.payload).expect("JSON");
    assert_eq!(item["id"], id.as_str(), "{item}");
    assert_eq!(item["taskId"], "warp-task-1");
    assert_eq!(item["description"], "port the parser");
    assert_eq!(item["offeredBy"], coordinator.as_str());
    assert_eq!(item["attempts"], 0);

    // A report on an item it does not hold is rejected in its own inbox.
    let mine = js
        .get_or_create_stream(stream::Config {
            name: format!("INBOX_{GUID}"),
            subjects: vec![format!("global.agent.{GUID}")],
            ..Default::default()
        })
        .await
        .expect("the stand-in's inbox");
    send(
        &js,
        &coordinator,
        "progress-update",
        json!({"workItemId": "not-assigned", "progress": 10}),
    )
    .await;

    send(
        &js,
        &coordinator,
        "work-claim",
        json!({"workItemId": id, "claimerCapabilities": ["typescript"]}),
    )
    .await;
    poll_until(
        &weft,
        &format!("/api/work/{id}?projectId={PROJECT}"),
        Duration::from_secs(20),
        |w| w["status"] == "in-progress",
    )
    .await;
    send(
        &js,
        &coordinator,
        "progress-update",
        json!({"workItemId": id, "progress": 50, "message": "halfway"}),
    )
    .await;
    send(
        &js,
        &coordinator,
        "work-complete",
        json!({"workItemId": id, "summary": "parser ported", "result": {"files": 3}}),
    )
    .await;
    let done = poll_until(
        &weft,
        &format!("/api/work/{id}?projectId={PROJECT}"),
        Duration::from_secs(20),
        |w| w["status"] == "completed",
    )
    .await;
    assert_eq!(done["assignedTo"], GUID, "{done}");

    let events = all_events(&weft).await;
    let of_item: Vec<&Value> = events
        .iter()
        .filter(|e| e["aggregateId"] == id.as_str())
        .collect();
    let actor = format!("agent:{GUID}");
    for kind in ["work.started", "work.progressed", "work.completed"] {
        let event = of_item
            .iter()
            .find(|e| e["type"] == kind)
            .unwrap_or_else(|| panic!("{kind} in {of_item:?}"));
        assert_eq!(event["actor"], actor.as_str(), "{event}");
    }
    let completed = of_item
        .iter()
        .find(|e| e["type"] == "work.completed")
        .expect("completed");
    assert_eq!(completed["data"]["summary"], "parser ported");

    // Listed once, as Warp's.
    let (_, agents) = call(http.get(weft.url("/api/agents"))).await;
    let listed: Vec<&Value> = agents["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter(|a| a["guid"] == GUID)
        .collect();
    assert_eq!(listed.len(), 1, "{agents}");
    assert!(
        !agents.to_string().contains(&coordinator),
        "Weft's own entry is not an agent"
    );

    let mut rejected = None;
    let reader: consumer::PullConsumer = mine
        .create_consumer(consumer::pull::Config::default())
        .await
        .expect("reader");
    let mut batch = reader
        .fetch()
        .max_messages(5)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .expect("fetch");
    while let Some(Ok(m)) = batch.next().await {
        let v: Value = serde_json::from_slice(&m.payload).unwrap_or_default();
        if v["messageType"] == "work-reject" {
            rejected = Some(v);
        }
    }
    let rejected = rejected.expect("a work-reject in the stand-in's inbox");
    let content: Value =
        serde_json::from_str(rejected["content"].as_str().expect("content")).expect("JSON");
    assert_eq!(content["workItemId"], "not-assigned");
}
