//! Weft replicas on a three-node NATS cluster (real processes on 127.0.0.1): one writer per
//! project, standbys that pass commands on and take over when the writer is killed or
//! stops, and writes that resume when a NATS node (the stream's leader) dies.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::{call, client, submit_body, AgentProcess, NatsCluster, Weft};
use serde_json::Value;

fn replica_env(cluster: &NatsCluster, instance: &str) -> Vec<(&'static str, String)> {
    vec![
        ("NATS_URL", cluster.url()),
        ("WEFT_REPLICAS", "3".into()),
        ("WEFT_INSTANCE_ID", instance.into()),
        ("WEFT_WRITER_LEASE_MS", "2000".into()),
        ("WEFT_HEARTBEAT_INTERVAL_MS", "300".into()),
        ("WEFT_AGENT_TIMEOUT_MS", "3000".into()),
        ("WEFT_RETRY_BACKOFF_MS", "100".into()),
        ("WEFT_ACCEPT_TIMEOUT_MS", "5000".into()),
        ("WEFT_SNAPSHOT_EVERY", "0".into()),
    ]
}

fn agents(cluster: &NatsCluster, count: usize) -> Vec<AgentProcess> {
    let url = cluster.url();
    (0..count)
        .map(|_| {
            AgentProcess::start_on(
                "claude-code",
                "rust",
                "personal",
                4,
                "sleep 0.2; echo done",
                &[("NATS_URL", url.as_str())],
            )
        })
        .collect()
}

async fn health(weft: &Weft) -> Value {
    call(client().get(weft.url("/health"))).await.1
}

/// Which of `wefts` writes for the default project (waits for one to).
async fn writer_of(wefts: &[&Weft]) -> usize {
    for _ in 0..200 {
        for (i, weft) in wefts.iter().enumerate() {
            let h = health(weft).await;
            if h["writer"]["projects"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p == "default"))
            {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no instance became the default project's writer");
}

/// Submits `description` through `weft`; the item's id.
async fn submit(weft: &Weft, description: &str) -> String {
    submit_for(weft, description, "rust").await
}

async fn submit_for(weft: &Weft, description: &str, capability: &str) -> String {
    let body = submit_body(description, capability, "personal", 5);
    let (status, answer) = call(client().post(weft.url("/api/work")).json(&body)).await;
    assert_eq!(status, 201, "{description}: {answer}\n{}", weft.log_text());
    answer["workItemId"].as_str().expect("an id").to_string()
}

async fn events_of(weft: &Weft) -> Vec<Value> {
    common::all_events(weft).await
}

/// Every acknowledged item completes, once, and no item is ever held by two agents at
/// once: each `work.assigned` comes while the item has no holder.
fn assert_each_completed_once_by_one_holder(events: &[Value], ids: &[String]) {
    let mut holder: HashMap<&str, Option<&str>> = HashMap::new();
    let mut completed: HashMap<&str, usize> = HashMap::new();
    for e in events {
        let id = e["aggregateId"].as_str().unwrap_or_default();
        match e["type"].as_str().unwrap_or_default() {
            "work.assigned" => {
                let agent = e["data"]["agentId"].as_str();
                let before = holder.insert(id, agent).flatten();
                assert!(
                    before.is_none(),
                    "{id} assigned to {agent:?} while {before:?} held it"
                );
            }
            "work.completed" => {
                *completed.entry(id).or_default() += 1;
                holder.insert(id, None);
            }
            "work.failed" | "work.lease-expired" | "work.cancelled" => {
                holder.insert(id, None);
            }
            _ => {}
        }
    }
    for id in ids {
        let its: Vec<&str> = events
            .iter()
            .filter(|e| e["aggregateId"] == id.as_str())
            .filter_map(|e| e["type"].as_str())
            .collect();
        assert_eq!(
            completed.get(id.as_str()).copied().unwrap_or(0),
            1,
            "{id} did not complete exactly once: {its:?}"
        );
    }
}

async fn wait_all_completed(weft: &Weft, count: usize) {
    common::poll_until(
        weft,
        "/api/work?status=completed&limit=1",
        Duration::from_secs(60),
        |b| b["total"].as_u64() == Some(count as u64),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_writer_is_killed_and_nothing_is_lost() {
    let cluster = NatsCluster::start();
    let a = Weft::start(&replica_env(&cluster, "weft-a"));
    let b = Weft::start(&replica_env(&cluster, "weft-b"));
    let _agents = agents(&cluster, 2);
    // `python` items have no agent: the writer starts one on this target for them.
    let command = format!(
        "{} agent --command 'echo done'",
        common::weft_binary().display()
    );
    let target = serde_json::json!({
        "name": "on-demand", "agentType": "claude-code", "capabilities": ["python"],
        "boundaries": ["personal"], "mechanism": "local", "maxAgents": 2,
        "config": {"command": command, "detached": false, "env": {"LOG_LEVEL": "warn"}}
    });
    let (status, created) = call(client().post(b.url("/api/targets")).json(&target)).await;
    assert_eq!(status, 201, "{created}");
    let mut ids = Vec::new();
    // Through both instances: the standby passes its commands to the writer.
    for i in 0..20 {
        let weft = if i % 2 == 0 { &a } else { &b };
        ids.push(submit(weft, &format!("before-{i}")).await);
    }
    for i in 0..3 {
        ids.push(submit_for(&b, &format!("python-before-{i}"), "python").await);
    }
    let mut wefts = [Some(a), Some(b)];
    let writer = {
        let both: Vec<&Weft> = wefts.iter().flatten().collect();
        writer_of(&both).await
    };
    let mut killed = wefts[writer].take().expect("the writer");
    killed.kill9();
    let survivor = wefts[1 - writer].take().expect("the standby");
    // Acknowledged while the lease passes: each waits for the new writer, none fails.
    for i in 0..20 {
        ids.push(submit(&survivor, &format!("after-{i}")).await);
    }
    for i in 0..3 {
        ids.push(submit_for(&survivor, &format!("python-after-{i}"), "python").await);
    }
    assert_eq!(writer_of(&[&survivor]).await, 0);
    wait_all_completed(&survivor, ids.len()).await;

    let events = events_of(&survivor).await;
    assert_each_completed_once_by_one_holder(&events, &ids);
    // No spin-up launched twice: each started one agent process (an agent registers with
    // the id of the spin-up that started it; one process may register again, with its id).
    assert!(
        !common::of_type(&events, "spin-up.triggered").is_empty(),
        "no spin-up happened"
    );
    let mut launched: HashMap<&str, std::collections::HashSet<&str>> = HashMap::new();
    for e in common::of_type(&events, "agent.registered") {
        if let Some(spin_up) = e["data"]["spinUpId"].as_str() {
            launched
                .entry(spin_up)
                .or_default()
                .insert(e["aggregateId"].as_str().unwrap_or_default());
        }
    }
    assert!(!launched.is_empty(), "no agent came from a spin-up");
    assert!(
        launched.values().all(|agents| agents.len() == 1),
        "{launched:?}\n{}",
        survivor.log_text()
    );
    let elections: Vec<&str> = common::of_type(&events, "writer.elected")
        .iter()
        .filter_map(|e| e["data"]["instance"].as_str())
        .collect();
    assert!(
        elections.len() >= 2 && elections.last() != elections.first(),
        "the standby was not elected after the writer died: {elections:?}\n{}",
        survivor.log_text()
    );
    let (status, ready) = call(client().get(survivor.url("/ready"))).await;
    assert_eq!(
        (status, &ready["caughtUp"]),
        (200, &Value::Bool(true)),
        "{ready}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_projects_over_with_no_failed_request() {
    let cluster = NatsCluster::start();
    let a = Weft::start(&replica_env(&cluster, "weft-a"));
    let b = Weft::start(&replica_env(&cluster, "weft-b"));
    let mut ids = vec![submit(&a, "first").await];
    let mut wefts = [Some(a), Some(b)];
    let writer = {
        let both: Vec<&Weft> = wefts.iter().flatten().collect();
        writer_of(&both).await
    };
    let mut leaving = wefts[writer].take().expect("the writer");
    let standby = wefts[1 - writer].take().expect("the standby");
    // Clients keep submitting through the standby while the writer stops.
    let url = standby.url("/api/work");
    let submitting = tokio::spawn(async move {
        let http = client();
        let mut ids = Vec::new();
        for i in 0..60 {
            let body = submit_body(&format!("during-{i}"), "rust", "personal", 5);
            let (status, answer) = call(http.post(&url).json(&body)).await;
            assert_eq!(status, 201, "during-{i}: {answer}");
            ids.push(answer["workItemId"].as_str().expect("id").to_string());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ids
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = tokio::task::spawn_blocking(move || {
        let status = leaving.terminate();
        (status, leaving.log_text())
    })
    .await
    .expect("terminate");
    assert!(status.0.success(), "{}", status.1);
    assert!(status.1.contains("writer lease released"), "{}", status.1);
    ids.extend(submitting.await.expect("every submission answered 201"));
    assert_eq!(writer_of(&[&standby]).await, 0);
    let (_, list) = call(client().get(standby.url("/api/work?limit=1"))).await;
    assert_eq!(list["total"], ids.len() as u64, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_when_the_streams_leader_node_dies() {
    let mut cluster = NatsCluster::start();
    let weft = Weft::start(&replica_env(&cluster, "weft-a"));
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(submit(&weft, &format!("before-{i}")).await);
    }
    let urls = cluster.url();
    let nats = async_nats::connect(urls.split(',').collect::<Vec<_>>())
        .await
        .expect("connect");
    let js = async_nats::jetstream::new(nats);
    // Kill the leader once the followers hold everything, as in a cluster at rest.
    let mut leader = None;
    for _ in 0..150 {
        let info = js
            .get_stream(events::STREAM)
            .await
            .expect("the event stream")
            .info()
            .await
            .expect("stream info")
            .clone();
        assert_eq!(info.config.num_replicas, 3, "the event log is not R3");
        let cluster_info = info.cluster.expect("a clustered stream");
        if cluster_info.replicas.len() == 2 && cluster_info.replicas.iter().all(|r| r.current) {
            leader = cluster_info.leader;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let leader = leader.expect("the stream's replicas did not become current");
    cluster.kill(&leader);
    // JetStream elects a new leader; until then a write may be refused (503), never lost.
    let http = client();
    let mut accepted_after = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for attempt in 0.. {
        if std::time::Instant::now() > deadline {
            break;
        }
        let body = submit_body(&format!("after-{attempt}"), "rust", "personal", 5);
        let (status, answer) = call(http.post(weft.url("/api/work")).json(&body)).await;
        if status == 201 {
            ids.push(answer["workItemId"].as_str().expect("id").to_string());
            accepted_after = Some(attempt);
            break;
        }
        assert_eq!(status, 503, "{answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        accepted_after.is_some(),
        "no write accepted within 60 s of losing the leader:\n{}",
        weft.log_text()
    );
    for i in 0..10 {
        ids.push(submit(&weft, &format!("later-{i}")).await);
    }
    let (_, list) = call(client().get(weft.url("/api/work?limit=1"))).await;
    assert_eq!(list["total"], ids.len() as u64, "{list}");
    let events = events_of(&weft).await;
    let submitted: Vec<&str> = common::of_type(&events, "work.submitted")
        .iter()
        .filter_map(|e| e["aggregateId"].as_str())
        .collect();
    for id in &ids {
        assert_eq!(
            submitted.iter().filter(|s| *s == id).count(),
            1,
            "{id} not recorded exactly once"
        );
    }
}

#[test]
fn more_replicas_than_servers_is_refused_with_a_message_that_says_so() {
    let nats = common::NatsServer::start();
    let out = std::process::Command::new(common::weft_binary())
        .arg("serve")
        .env("NATS_URL", nats.url())
        .env("WEFT_REPLICAS", "3")
        .env("API_HOST", "127.0.0.1")
        .env("API_PORT", common::free_port().to_string())
        .output()
        .expect("weft runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot place 3 replicas") && stderr.contains("WEFT_REPLICAS"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_the_replicas_updates_the_streams_in_place() {
    let cluster = NatsCluster::start();
    let mut env = replica_env(&cluster, "weft-a");
    env.retain(|(k, _)| *k != "WEFT_REPLICAS");
    let mut weft = Weft::start(&env);
    let id = submit(&weft, "kept").await;
    weft.terminate();
    let weft = Weft::start(&replica_env(&cluster, "weft-a"));
    let urls = cluster.url();
    let nats = async_nats::connect(urls.split(',').collect::<Vec<_>>())
        .await
        .expect("connect");
    let js = async_nats::jetstream::new(nats);
    for name in [
        events::STREAM.to_string(),
        format!("KV_{}", migrations::SNAPSHOT_BUCKET),
        format!("KV_{}", migrations::META_BUCKET),
        format!("KV_{}", migrations::WRITER_BUCKET),
    ] {
        let info = js
            .get_stream(&name)
            .await
            .expect("stream")
            .info()
            .await
            .expect("info")
            .clone();
        assert_eq!(info.config.num_replicas, 3, "{name}");
    }
    assert!(
        weft.log_text().contains("every replica is current"),
        "{}",
        weft.log_text()
    );
    let (status, item) = call(client().get(weft.url(&format!("/api/work/{id}")))).await;
    assert_eq!(status, 200, "{item}");
}
