//! Agents that speak Warp appear through the shared `agent-registry` bucket, in both
//! registry shapes, as they are written or deleted (the bucket is watched, not polled).

use crate::common;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use common::{call, client, NatsServer, Weft};
use serde_json::{json, Value};

async fn agents(weft: &Weft) -> Value {
    let (status, body) = call(client().get(weft.url("/api/agents"))).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls until `check` holds; the bound only ends a broken test (how fast a change shows
/// is not a test's to assert on a shared machine).
async fn eventually(weft: &Weft, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = agents(weft).await;
        if check(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not visible within 10 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn find<'a>(list: &'a Value, guid: &str) -> Option<&'a Value> {
    list["agents"]
        .as_array()?
        .iter()
        .find(|a| a["guid"] == guid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warp_and_original_registry_entries_are_listed() {
    let nats = NatsServer::start();
    let nc = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(nc);
    // Someone else created the bucket first, with settings of their own.
    let bucket = js
        .create_key_value(kv::Config {
            bucket: "agent-registry".into(),
            history: 5,
            max_age: Duration::from_secs(24 * 3600),
            ..Default::default()
        })
        .await
        .expect("bucket");
    let weft = Weft::start(&[("NATS_URL", nats.url())]);

    // An empty registry answers (the original hung here; the client's timeout bounds it).
    let empty = agents(&weft).await;
    assert_eq!(empty["total"], 0);

    let now = weft::time::rfc3339(weft::time::now_ms());
    let warp_guid = "3f2a9c1e5b7d4e6f8a9b0c1d2e3f4a5b";
    let warp = json!({
        "guid": warp_guid, "agentType": "developer", "handle": "developer", "hostname": "laptop",
        "projectId": "0123456789abcdef", "natsUrl": "nats://alice:s3cret@nats.internal:4222",
        "capabilities": ["typescript"], "scope": "team", "status": "online", "currentTaskCount": 0,
        "registeredAt": now, "lastHeartbeat": now
    });
    bucket
        .put(warp_guid, warp.to_string().into())
        .await
        .expect("put");
    let list = eventually(&weft, "the Warp entry", |b| find(b, warp_guid).is_some()).await;
    let entry = find(&list, warp_guid).expect("listed");
    assert_eq!(entry["agentType"], "developer");
    assert_eq!(entry["status"], "online");
    assert_eq!(entry["visibility"], "team");
    assert_eq!(entry["boundaries"], json!(["default"]));
    assert_eq!(entry["source"], "warp");
    assert!(
        entry.get("natsUrl").is_none(),
        "credentials leaked: {entry}"
    );
    assert!(!list.to_string().contains("s3cret"));

    let uuid = "6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f";
    let original = json!({
        "guid": uuid, "handle": "ts-agent", "hostname": "h1", "projectId": "default",
        "capabilities": ["typescript", "general"], "visibility": "project-only", "status": "online",
        "currentTaskCount": 1, "maxConcurrentTasks": 2, "spindownAfterIdleMs": 300000,
        "lastHeartbeat": now, "lastActivity": now, "registeredAt": now,
        "metadata": {"agentType": "copilot-cli", "boundaries": ["personal"]}
    });
    bucket
        .put(uuid, original.to_string().into())
        .await
        .expect("put");
    // Most fields missing; and one whose heartbeat is long past.
    bucket
        .put(
            "0000aaaa0000aaaa0000aaaa0000aaaa",
            json!({"status": "online"}).to_string().into(),
        )
        .await
        .expect("put");
    let stale_guid = "5e7c0d00-0000-4000-8000-000000000001";
    let stale = json!({"guid": stale_guid, "status": "online", "capabilities": [], "lastHeartbeat": "2025-01-01T00:00:00.000Z"});
    bucket
        .put(stale_guid, stale.to_string().into())
        .await
        .expect("put");
    bucket.put("garbage", "not json".into()).await.expect("put");
    let list = eventually(&weft, "all entries", |b| b["total"] == 4).await;
    let entry = find(&list, uuid).expect("listed");
    assert_eq!(entry["agentType"], "copilot-cli");
    assert_eq!(entry["boundaries"], json!(["personal"]));
    assert_eq!(entry["visibility"], "project-only");
    assert_eq!(
        (
            entry["currentTaskCount"].as_u64(),
            entry["maxConcurrentTasks"].as_u64()
        ),
        (Some(1), Some(2))
    );
    let minimal = find(&list, "0000aaaa0000aaaa0000aaaa0000aaaa").expect("listed by its key");
    assert_eq!(
        minimal["status"], "offline",
        "no heartbeat means not alive: {minimal}"
    );
    assert_eq!(minimal["agentType"], "claude-code");

    // Staleness comes from lastHeartbeat; offline agents stay readable by guid.
    let (status, one) = call(client().get(weft.url(&format!("/api/agents/{stale_guid}")))).await;
    assert_eq!((status, one["status"].as_str()), (200, Some("offline")));
    let (status, one) = call(client().get(weft.url(&format!("/api/agents/{warp_guid}")))).await;
    assert_eq!((status, one["handle"].as_str()), (200, Some("developer")));
    let (_, offline) = call(client().get(weft.url("/api/agents?status=offline"))).await;
    assert_eq!(offline["total"], 2);
    let (_, typed) = call(client().get(weft.url("/api/agents?type=copilot-cli"))).await;
    assert_eq!(typed["total"], 1);

    // A delete disappears as fast: the Warp entry is gone. If the bridge registered the
    // agent meanwhile (it does within its tick), the log keeps that agent, now offline.
    bucket.delete(warp_guid).await.expect("delete");
    let gone = |a: &Value| a["source"] == "weft" && a["status"] == "offline";
    // (A bridge tick that read the registry just before the delete may register it once
    // more; its next tick takes it offline again.)
    eventually(&weft, "the delete", |b| find(b, warp_guid).is_none_or(gone)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, one) = call(client().get(weft.url(&format!("/api/agents/{warp_guid}")))).await;
        if status == 404 || (status == 200 && gone(&one)) {
            break;
        }
        assert!(Instant::now() < deadline, "still bridged: {status} {one}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warp_channels_are_read_from_their_streams() {
    let nats = NatsServer::start();
    let nc = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(nc);
    for (stream, subject, description) in [
        (
            "p1_ROADMAP",
            "p1.roadmap",
            "Discussion about project roadmap and planning",
        ),
        ("p1_PARALLEL_WORK", "p1.parallel-work", "Coordination"),
    ] {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: stream.into(),
            subjects: vec![subject.into()],
            description: Some(description.into()),
            ..Default::default()
        })
        .await
        .expect("stream");
    }
    for m in [
        json!({"handle": "dev-1", "message": "first", "timestamp": "2025-12-11T05:00:00.000Z"})
            .to_string(),
        json!({"handle": "dev-2", "message": "second", "timestamp": "2025-12-11T05:01:00.000Z"})
            .to_string(),
        "plain text".to_string(),
    ] {
        js.publish("p1.roadmap", m.into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    let weft = Weft::start(&[("NATS_URL", nats.url())]);
    let (status, list) = call(client().get(weft.url("/api/channels?projectId=p1"))).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["count"], 2);
    assert_eq!(list["channels"][1]["name"], "roadmap");
    assert_eq!(list["channels"][1]["messages"], 3);
    assert_eq!(list["channels"][0]["name"], "parallel-work");
    let (_, messages) =
        call(client().get(weft.url("/api/channels/roadmap/messages?projectId=p1&limit=2"))).await;
    assert_eq!(messages["count"], 2);
    assert_eq!(messages["messages"][0]["handle"], "dev-2");
    assert_eq!(
        messages["messages"][1],
        json!({"timestamp": messages["messages"][1]["timestamp"], "handle": "unknown", "message": "plain text"})
    );
    let (status, empty) =
        call(client().get(weft.url("/api/channels/errors/messages?projectId=p1"))).await;
    assert_eq!((status, &empty["count"]), (200, &json!(0)));
    let (status, _) =
        call(client().get(weft.url("/api/channels/roadmap/messages?projectId=p1&limit=0"))).await;
    assert_eq!(status, 400);
    let (_, other) = call(client().get(weft.url("/api/channels?projectId=p2"))).await;
    assert_eq!(other["count"], 0);
}
