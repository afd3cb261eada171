//! Agents on demand with the `local` mechanism: Weft starts a real `weft agent` when work
//! is pending and nobody can take it, links it to the spin-up, and scales it down when idle.

use crate::common;

use std::time::Duration;

use common::{
    all_events, call, client, fast_env, of_type, poll_until, submit_body, NatsServer, Weft,
};
use serde_json::{json, Value};

fn agent_target(name: &str, agent_command: &str, max_agents: u32) -> Value {
    let command = format!(
        "{} agent --command '{agent_command}'",
        common::weft_binary().display()
    );
    json!({
        "name": name, "agentType": "claude-code", "capabilities": ["rust"], "boundaries": ["personal"],
        "mechanism": "local", "maxAgents": max_agents,
        // Tied to Weft's life, so no test leaves an agent behind (even after kill -9).
        "config": {"command": command, "detached": false, "env": {"LOG_LEVEL": "warn"}}
    })
}

fn local_target(name: &str, command: &str) -> Value {
    json!({
        "name": name, "agentType": "claude-code", "capabilities": ["rust"], "boundaries": ["personal"],
        "mechanism": "local", "config": {"command": command, "detached": false}
    })
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

fn spin_up_pid(events: &[Value], spin_up: &str) -> u64 {
    of_type(events, "spin-up.started")
        .into_iter()
        .find(|e| e["aggregateId"] == spin_up)
        .and_then(|e| e["data"]["pid"].as_u64())
        .expect("a pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_work_starts_an_agent_which_is_scaled_down_when_idle() {
    let nats = NatsServer::start();
    let mut env = fast_env(&nats);
    env.push(("IDLE_TIMEOUT_MS", "1500".into()));
    env.push(("WEFT_SCALEDOWN_GRACE_MS", "10000".into()));
    let weft = Weft::start(&env);
    let http = client();
    let (status, target) = call(http.post(weft.url("/api/targets")).json(&agent_target(
        "laptop",
        "echo done: {description}",
        1,
    )))
    .await;
    assert_eq!(status, 201, "{target}");

    let (status, created) = call(http.post(weft.url("/api/work")).json(&submit_body(
        "the thing",
        "rust",
        "personal",
        5,
    )))
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (
            created["spinUpTriggered"].as_bool(),
            created["estimatedWaitSeconds"].as_u64()
        ),
        (Some(true), Some(30))
    );
    let id = created["id"].as_str().expect("id").to_string();
    let done = poll_until(
        &weft,
        &format!("/api/work/{id}"),
        Duration::from_secs(30),
        |w| w["status"] == "completed",
    )
    .await;
    assert!(
        done["result"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("done: the thing")),
        "{done}"
    );

    // Idle: asked to shut down, leaves, and what it ran on is stopped.
    poll_until(&weft, "/api/targets/laptop", Duration::from_secs(30), |t| {
        t["status"] == "available"
    })
    .await;
    let events = all_events(&weft).await;
    let triggered = of_type(&events, "spin-up.triggered");
    assert_eq!(triggered.len(), 1, "{triggered:?}");
    let spin_up = triggered[0]["aggregateId"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(triggered[0]["data"]["reason"], "work-pending");
    assert_eq!(triggered[0]["data"]["workId"], id.as_str());
    // Causes are recorded: the work item caused the spin-up, which caused the registration.
    assert_eq!(triggered[0]["causationId"], id.as_str());
    let registered = of_type(&events, "agent.registered");
    assert_eq!(registered[0]["data"]["spinUpId"], spin_up.as_str());
    assert_eq!(registered[0]["data"]["targetId"], target["id"]);
    assert_eq!(registered[0]["causationId"], spin_up.as_str());
    let agent = registered[0]["aggregateId"]
        .as_str()
        .expect("agent")
        .to_string();
    let completed = of_type(&events, "spin-up.completed");
    assert_eq!(completed[0]["data"]["agentId"], agent.as_str());
    assert_eq!(
        of_type(&events, "agent.shutdown-requested")[0]["data"]["reason"],
        "idle-timeout"
    );
    assert_eq!(
        of_type(&events, "agent.offline")[0]["data"]["reason"],
        "shutdown"
    );
    assert_eq!(
        of_type(&events, "spin-up.stopped")[0]["aggregateId"],
        spin_up.as_str()
    );
    let order: Vec<&str> = events
        .iter()
        .filter_map(|e| e["type"].as_str())
        .filter(|t| !t.starts_with("target."))
        .collect();
    let position = |t: &str| {
        order
            .iter()
            .position(|x| *x == t)
            .unwrap_or_else(|| panic!("{t} missing from {order:?}"))
    };
    assert!(position("work.submitted") < position("spin-up.triggered"));
    assert!(position("spin-up.triggered") < position("spin-up.started"));
    assert!(position("spin-up.triggered") < position("agent.registered"));
    assert!(position("agent.registered") < position("work.assigned"));
    assert!(position("work.completed") < position("agent.shutdown-requested"));
    assert!(position("agent.offline") < position("spin-up.stopped"));
    let pid = spin_up_pid(&events, &spin_up);
    common::wait_until(
        "the spun-up process to be gone",
        Duration::from_secs(10),
        || !alive(pid),
    );
    let (_, target) = call(http.get(weft.url("/api/targets/laptop"))).await;
    assert_eq!(target["useCount"], 1);
    assert!(target["lastUsedAt"].is_string());

    // The metrics for dashboards outside Weft: spin-ups by mechanism and outcome, their
    // latency as the log recorded it, and the queue by capability.
    let millis = |e: &serde_json::Value| {
        e["time"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_millisecond())
            .expect("event time")
    };
    let latency = (millis(completed[0]) - millis(triggered[0])) as f64 / 1000.0;
    let (status, _) = call(http.post(weft.url("/api/work")).json(&submit_body(
        "nobody serves cobol",
        "cobol",
        "personal",
        5,
    )))
    .await;
    assert_eq!(status, 201);
    let metrics = common::metrics_text(&weft).await;
    for line in [
        "weft_spin_ups{project=\"default\",mechanism=\"local\",outcome=\"stopped\"} 1".to_string(),
        "weft_spin_ups{project=\"default\",mechanism=\"ssh\",outcome=\"completed\"} 0".to_string(),
        "weft_spin_up_seconds_count{mechanism=\"local\"} 1".to_string(),
        format!("weft_spin_up_seconds_sum{{mechanism=\"local\"}} {latency}"),
        "weft_queue_depth{project=\"default\",capability=\"cobol\"} 1".to_string(),
    ] {
        assert!(metrics.contains(&line), "no `{line}` in:\n{metrics}");
    }
    assert!(
        !metrics.contains("weft_agent_task_slots{"),
        "no agent is online: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_items_and_a_target_for_three_agents_make_exactly_three_spin_ups() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let http = client();
    let (status, _) = call(http.post(weft.url("/api/targets")).json(&agent_target(
        "pool",
        "sleep 0.1; echo ok",
        3,
    )))
    .await;
    assert_eq!(status, 201);
    for i in 0..20 {
        let (status, _) = call(http.post(weft.url("/api/work")).json(&submit_body(
            &format!("job {i}"),
            "rust",
            "personal",
            5,
        )))
        .await;
        assert_eq!(status, 201);
    }
    poll_until(
        &weft,
        "/api/work?status=completed",
        Duration::from_secs(60),
        |b| b["total"] == 20,
    )
    .await;
    let events = all_events(&weft).await;
    assert_eq!(of_type(&events, "spin-up.triggered").len(), 3);
    assert_eq!(of_type(&events, "spin-up.completed").len(), 3);
    let (_, target) = call(http.get(weft.url("/api/targets/pool"))).await;
    assert_eq!(
        (target["status"].as_str(), target["useCount"].as_u64()),
        (Some("in-use"), Some(3))
    );
    // Cleanup: ask them to leave.
    let (status, _) = call(
        http.post(weft.url("/api/agents/shutdown-batch"))
            .json(&json!({"filter": {"status": "online"}})),
    )
    .await;
    assert_eq!(status, 200);
    poll_until(
        &weft,
        "/api/agents?status=offline",
        Duration::from_secs(20),
        |b| b["total"] == 3,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_silent_spin_ups_fail_over_to_the_next_target() {
    let nats = NatsServer::start();
    let mut env = fast_env(&nats);
    env.push(("WEFT_SPINUP_TIMEOUT_MS", "2000".into()));
    let weft = Weft::start(&env);
    let http = client();
    for body in [
        local_target("broken", "exit 7"),
        local_target("silent", "exec sleep 60"),
        agent_target("good", "echo rescued", 1),
    ] {
        let (status, created) = call(http.post(weft.url("/api/targets")).json(&body)).await;
        assert_eq!(status, 201, "{created}");
    }
    let (_, created) = call(
        http.post(weft.url("/api/work"))
            .json(&submit_body("x", "rust", "personal", 5)),
    )
    .await;
    let id = created["id"].as_str().expect("id").to_string();
    poll_until(
        &weft,
        &format!("/api/work/{id}"),
        Duration::from_secs(30),
        |w| w["status"] == "completed",
    )
    .await;
    let events = all_events(&weft).await;
    let triggered: Vec<&str> = of_type(&events, "spin-up.triggered")
        .iter()
        .filter_map(|e| e["data"]["targetName"].as_str())
        .collect();
    assert_eq!(triggered, ["broken", "silent", "good"]);
    let failed = of_type(&events, "spin-up.failed");
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[0]["data"]["stage"], "start");
    assert!(failed[0]["data"]["error"]
        .as_str()
        .is_some_and(|e| e.contains("exited at start")));
    assert_eq!(failed[1]["data"]["stage"], "registration");
    let silent = failed[1]["aggregateId"].as_str().expect("id");
    let pid = spin_up_pid(&events, silent);
    common::wait_until(
        "the silent process to be stopped",
        Duration::from_secs(10),
        || !alive(pid),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_are_real_and_manual_spin_ups_work() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let http = client();
    call(
        http.post(weft.url("/api/targets"))
            .json(&local_target("missing", "no-such-agent-program --serve")),
    )
    .await;
    call(
        http.post(weft.url("/api/targets"))
            .json(&agent_target("fine", "true", 1)),
    )
    .await;
    let (status, result) = call(http.post(weft.url("/api/targets/missing/test"))).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["healthy"], false);
    assert!(result["error"]
        .as_str()
        .is_some_and(|e| e.contains("no-such-agent-program")));
    let (_, target) = call(http.get(weft.url("/api/targets/missing"))).await;
    assert_eq!(target["healthStatus"], "unhealthy");
    assert!(target["lastHealthCheck"].is_string());
    let (_, result) = call(http.post(weft.url("/api/targets/fine/test"))).await;
    assert_eq!(result["healthy"], true);

    let (status, started) = call(http.post(weft.url("/api/targets/fine/spin-up"))).await;
    assert_eq!(status, 200, "{started}");
    // Registered already, or about to: either way the mechanism started it.
    assert!(
        started["status"] == "started" || started["status"] == "completed",
        "{started}"
    );
    assert_eq!(started["success"], true);
    let operation = started["operationId"].as_str().expect("id").to_string();
    let agents = poll_until(&weft, "/api/agents", Duration::from_secs(20), |b| {
        b["total"] == 1
    })
    .await;
    assert_eq!(agents["agents"][0]["spinUpId"], operation.as_str());
    // The target allows one agent: a second manual spin-up is refused.
    let (status, refused) = call(http.post(weft.url("/api/targets/fine/spin-up"))).await;
    assert_eq!(status, 409, "{refused}");
    call(http.post(weft.url("/api/targets/fine/disable"))).await;
    let (status, _) = call(http.post(weft.url("/api/targets/missing/spin-up"))).await;
    assert_eq!(
        status, 200,
        "an unhealthy target can still be tried by hand"
    );
    let (status, _) = call(
        http.post(weft.url("/api/agents/shutdown-batch"))
            .json(&json!({"filter": {}})),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_spin_up_survives_kill_9_and_is_resolved() {
    let nats = NatsServer::start();
    let mut env = fast_env(&nats);
    env.push(("WEFT_SPINUP_TIMEOUT_MS", "3000".into()));
    let mut weft = Weft::start(&env);
    let http = client();
    call(
        http.post(weft.url("/api/targets"))
            .json(&local_target("slowpoke", "exec sleep 60")),
    )
    .await;
    call(
        http.post(weft.url("/api/work"))
            .json(&submit_body("x", "rust", "personal", 5)),
    )
    .await;
    let events = loop {
        let events = all_events(&weft).await;
        if !of_type(&events, "spin-up.started").is_empty() {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let spin_up = of_type(&events, "spin-up.started")[0]["aggregateId"]
        .as_str()
        .expect("id")
        .to_string();
    let pid = spin_up_pid(&events, &spin_up);
    weft.kill9();
    let weft = Weft::start(&env);
    poll_until(
        &weft,
        "/api/events?type=spin-up.failed",
        Duration::from_secs(20),
        |b| b["count"] == 1,
    )
    .await;
    let events = all_events(&weft).await;
    let failed = of_type(&events, "spin-up.failed");
    assert_eq!(failed[0]["aggregateId"], spin_up.as_str());
    assert_eq!(failed[0]["data"]["stage"], "registration");
    common::wait_until(
        "the process started before the crash to be stopped",
        Duration::from_secs(10),
        || !alive(pid),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_health_checks_keep_unhealthy_targets_out_of_use() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let http = client();
    let mut sick = local_target("sick", "no-such-agent-program");
    sick["healthCheck"] = json!({"enabled": true, "intervalMs": 1000, "timeoutMs": 500});
    let (status, created) = call(http.post(weft.url("/api/targets")).json(&sick)).await;
    assert_eq!(status, 201, "{created}");
    poll_until(&weft, "/api/targets/sick", Duration::from_secs(10), |t| {
        t["healthStatus"] == "unhealthy"
    })
    .await;
    poll_until(
        &weft,
        "/api/events?type=target.health-checked",
        Duration::from_secs(10),
        |b| b["count"].as_u64().is_some_and(|n| n >= 2),
    )
    .await;
    // Unhealthy: pending work will not start anything there, as the submission says (the
    // rule itself is a unit test of decide::routing).
    let (_, item) = call(
        http.post(weft.url("/api/work"))
            .json(&submit_body("x", "rust", "personal", 5)),
    )
    .await;
    assert_eq!(item["spinUpTriggered"], false, "{item}");
    let (_, triggered) = call(http.get(weft.url("/api/events?type=spin-up.triggered"))).await;
    assert_eq!(triggered["count"], 0);
}
