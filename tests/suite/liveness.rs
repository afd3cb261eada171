//! An agent is offline only when it has really gone silent: not because it joined a Weft
//! that had been idle for a while, not because one heartbeat was lost in a NATS restart.
//! And an agent Weft started does not outlive a Weft that is gone for good.

use crate::common;

use std::time::Duration;

use common::{
    all_events, call, client, fast_env, of_type, poll_until, submit_body, AgentProcess, NatsServer,
    Weft,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_joining_an_idle_weft_is_not_marked_offline() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    // Weft has been running, idle, for longer than the agent timeout (2 s).
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let agent = AgentProcess::start(&nats, "claude-code", "rust", "personal", 1, "echo ok");
    let (_, item) = call(
        client()
            .post(weft.url("/api/work"))
            .json(&submit_body("hello", "rust", "personal", 5)),
    )
    .await;
    let id = item["id"].as_str().expect("id").to_string();
    let done = poll_until(
        &weft,
        &format!("/api/work/{id}"),
        Duration::from_secs(20),
        |w| w["status"] == "completed",
    )
    .await;
    assert_eq!(done["assignedTo"], agent.id.as_str());
    let events = all_events(&weft).await;
    assert!(
        of_type(&events, "agent.offline").is_empty(),
        "a live agent was marked offline: {:?}",
        of_type(&events, "agent.offline")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_lost_in_a_nats_restart_does_not_mark_the_agent_offline() {
    let mut nats = NatsServer::start();
    let mut env = fast_env(&nats);
    // The shortest timeout Weft accepts: three heartbeat intervals (of a second, so a
    // loaded machine's scheduling delays stay well inside one).
    env.retain(|(k, _)| *k != "WEFT_AGENT_TIMEOUT_MS" && *k != "WEFT_HEARTBEAT_INTERVAL_MS");
    env.push(("WEFT_HEARTBEAT_INTERVAL_MS", "1000".into()));
    env.push(("WEFT_AGENT_TIMEOUT_MS", "3000".into()));
    let weft = Weft::start(&env);
    let agent = AgentProcess::start(&nats, "claude-code", "rust", "personal", 1, "echo ok");
    poll_until(&weft, "/api/agents", Duration::from_secs(20), |b| {
        b["agents"][0]["status"] == "online"
    })
    .await;
    for _ in 0..3 {
        nats.kill();
        tokio::time::sleep(Duration::from_millis(150)).await;
        nats.restart();
        // Both sides reconnect; heartbeats go out on their interval meanwhile.
        poll_until(&weft, "/health", Duration::from_secs(20), |h| {
            h["nats"]["connected"] == true
        })
        .await;
        tokio::time::sleep(Duration::from_millis(3_500)).await;
    }
    let (_, listed) = call(client().get(weft.url(&format!("/api/agents/{}", agent.id)))).await;
    assert_eq!(listed["status"], "online", "{listed}");
    let events = all_events(&weft).await;
    assert!(
        of_type(&events, "agent.offline").is_empty(),
        "{:?}",
        of_type(&events, "agent.offline")
    );
}

#[test]
fn weft_refuses_an_agent_timeout_under_three_heartbeats() {
    let out = std::process::Command::new(common::weft_binary())
        .arg("serve")
        .env("NATS_URL", "nats://127.0.0.1:1")
        .env("WEFT_HEARTBEAT_INTERVAL_MS", "5000")
        .env("WEFT_AGENT_TIMEOUT_MS", "10000")
        .output()
        .expect("weft runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("three heartbeat intervals"), "{stderr}");
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// Spins up a `weft agent` on a local target and returns its pid.
async fn spun_up_agent(weft: &Weft, name: &str, config: serde_json::Value) -> u32 {
    let http = client();
    let (status, created) = call(http.post(weft.url("/api/targets")).json(&json!({
        "name": name, "agentType": "claude-code", "capabilities": ["rust"],
        "boundaries": ["personal"], "mechanism": "local", "config": config
    })))
    .await;
    assert_eq!(status, 201, "{created}");
    let (_, spin_up) = call(http.post(weft.url(&format!("/api/targets/{name}/spin-up")))).await;
    let id = spin_up["operationId"]
        .as_str()
        .expect("a spin-up")
        .to_string();
    let linked = poll_until(weft, "/api/agents", Duration::from_secs(20), |b| {
        b["agents"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["spinUpId"] == id.as_str()))
    })
    .await;
    assert!(linked["total"].as_u64().is_some_and(|n| n >= 1));
    // A fast agent registers before the mechanism's answer (with the pid) is recorded.
    let started = |events: &[serde_json::Value]| {
        of_type(events, "spin-up.started")
            .into_iter()
            .find(|e| e["aggregateId"] == id.as_str())
            .and_then(|e| e["data"]["pid"].as_u64())
    };
    for _ in 0..100 {
        if let Some(pid) = started(&all_events(weft).await) {
            return pid as u32;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no spin-up.started with a pid for {id}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_weft_started_do_not_outlive_a_weft_that_is_gone() {
    let nats = NatsServer::start();
    let mut weft = Weft::start(&fast_env(&nats));
    // Each agent's command line carries a marker, so the test finds the agent processes
    // themselves, not only what the mechanism started first.
    let agent = |marker: &str| {
        format!(
            "{} agent --command 'echo {marker}'",
            common::weft_binary().display()
        )
    };
    let (tied_marker, detached_marker) = (
        format!("tied-{}", uuid::Uuid::new_v4()),
        format!("detached-{}", uuid::Uuid::new_v4()),
    );
    let running =
        |marker: &str| !common::processes_mentioning(std::path::Path::new(marker)).is_empty();
    // Tied to Weft's life: gone the moment Weft is, even on kill -9.
    let tied = spun_up_agent(
        &weft,
        "tied",
        json!({"command": agent(&tied_marker), "detached": false}),
    )
    .await;
    // Detached: it outlives a restart of Weft, and leaves once Weft has not answered for
    // its orphan timeout.
    let detached = spun_up_agent(
        &weft,
        "detached",
        json!({"command": agent(&detached_marker), "env": {"WEFT_AGENT_ORPHAN_TIMEOUT_MS": "2000"}}),
    )
    .await;
    // Tied, under a shell that stays (a compound command): the kernel's signal reaches
    // only the shell, so the agent watches Weft itself.
    let shelled_marker = format!("shelled-{}", uuid::Uuid::new_v4());
    spun_up_agent(
        &weft,
        "shelled",
        json!({"command": format!("{}; true", agent(&shelled_marker)), "detached": false}),
    )
    .await;
    assert!(alive(tied) && alive(detached));
    assert!(running(&tied_marker) && running(&detached_marker) && running(&shelled_marker));
    weft.kill9();
    common::wait_until("the tied agent to stop", Duration::from_secs(10), || {
        !alive(tied) && !running(&tied_marker)
    });
    common::wait_until(
        "the agent under a shell to stop",
        Duration::from_secs(10),
        || !running(&shelled_marker),
    );
    common::wait_until(
        "the detached agent to give up on Weft",
        Duration::from_secs(30),
        || !alive(detached) && !running(&detached_marker),
    );
}
