//! Work that flows end to end with real processes: a real nats-server, `weft serve`, and
//! `weft agent`s running real commands.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::{
    all_events, call, client, fast_env, of_type, poll_until, submit_body, AgentProcess, NatsServer,
    Weft,
};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_items_over_four_agents_respect_boundaries_capacity_and_policy() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let run = "sleep 0.1; echo did $WEFT_TASK_ID";
    let agents = [
        AgentProcess::start(
            &nats,
            "claude-code",
            "rust,python",
            "personal,open-source",
            2,
            run,
        ),
        AgentProcess::start(
            &nats,
            "copilot-cli",
            "rust",
            "corporate,corporate-adjacent",
            2,
            run,
        ),
        AgentProcess::start(
            &nats,
            "copilot-cli",
            "python",
            "personal,corporate-adjacent",
            1,
            run,
        ),
        // A claude agent that lists `corporate`: policy still keeps corporate work from it.
        AgentProcess::start(
            &nats,
            "claude-code",
            "rust",
            "open-source,corporate",
            3,
            run,
        ),
    ];
    poll_until(&weft, "/api/agents", Duration::from_secs(20), |b| {
        b["total"] == 4
    })
    .await;

    let kinds = [
        ("rust", "personal"),
        ("python", "personal"),
        ("rust", "corporate"),
        ("rust", "corporate-adjacent"),
        ("python", "corporate-adjacent"),
        ("rust", "open-source"),
    ];
    let http = client();
    for i in 0..60 {
        let (capability, boundary) = kinds[i % kinds.len()];
        let body = submit_body(
            &format!("item {i}"),
            capability,
            boundary,
            (i % 10 + 1) as u8,
        );
        let (status, created) = call(http.post(weft.url("/api/work")).json(&body)).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["id"], created["workItemId"]);
    }
    let done = poll_until(
        &weft,
        "/api/work?status=completed&limit=100",
        Duration::from_secs(90),
        |b| b["total"] == 60,
    )
    .await;
    assert_eq!(done["total"], 60);

    let agent_info: HashMap<String, (String, Vec<String>, Vec<String>, u64)> = {
        let (_, list) = call(http.get(weft.url("/api/agents"))).await;
        let texts = |v: &Value| {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        list["agents"]
            .as_array()
            .expect("agents")
            .iter()
            .map(|a| {
                (
                    a["guid"].as_str().unwrap_or_default().to_string(),
                    (
                        a["agentType"].as_str().unwrap_or_default().to_string(),
                        texts(&a["capabilities"]),
                        texts(&a["boundaries"]),
                        a["maxConcurrentTasks"].as_u64().unwrap_or(0),
                    ),
                )
            })
            .collect()
    };
    for item in done["workItems"].as_array().expect("items") {
        let agent = item["assignedTo"].as_str().expect("assigned");
        let (agent_type, caps, bounds, _) = &agent_info[agent];
        let boundary = item["boundary"].as_str().unwrap_or_default();
        assert!(
            caps.contains(&item["capability"].as_str().unwrap_or_default().to_string()),
            "{item}"
        );
        assert!(
            bounds.contains(&boundary.to_string()),
            "boundary violated: {item}"
        );
        if boundary == "corporate" {
            assert_eq!(
                agent_type, "copilot-cli",
                "corporate work on a {agent_type}: {item}"
            );
        }
        assert!(
            item["result"]["summary"]
                .as_str()
                .is_some_and(|s| s.contains("did")),
            "{item}"
        );
        assert!(item["routing"]["rule"].is_string());
    }

    // maxConcurrentTasks is never exceeded, judged from the log itself.
    let events = all_events(&weft).await;
    let mut held: HashMap<String, u64> = HashMap::new();
    let mut holder: HashMap<String, String> = HashMap::new();
    for e in &events {
        let work = e["aggregateId"].as_str().unwrap_or_default().to_string();
        match e["type"].as_str() {
            Some("work.assigned") => {
                let agent = e["data"]["agentId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let n = held.entry(agent.clone()).or_default();
                *n += 1;
                assert!(
                    *n <= agent_info[&agent].3,
                    "agent {agent} over capacity at sequence {}",
                    e["sequence"]
                );
                holder.insert(work, agent);
            }
            Some("work.completed" | "work.failed" | "work.lease-expired") => {
                if let Some(agent) = holder.remove(&work) {
                    *held.entry(agent).or_default() -= 1;
                }
            }
            _ => {}
        }
    }
    assert_eq!(
        of_type(&events, "work.completed").len(),
        60,
        "exactly one completion per item"
    );
    // Every step shows who caused it.
    assert!(of_type(&events, "work.started")
        .iter()
        .all(|e| e["actor"].as_str().is_some_and(|a| a.starts_with("agent:"))));
    assert!(of_type(&events, "work.assigned")
        .iter()
        .all(|e| e["actor"] == "system"));
    drop(agents);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_goes_first_and_work_waits_for_a_matching_agent() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let http = client();
    let mut ids = BTreeMap::new();
    for (name, priority) in [("p2", 2), ("p9", 9), ("p5", 5), ("p9-later", 9)] {
        let (status, created) = call(http.post(weft.url("/api/work")).json(&submit_body(
            name,
            "go",
            "open-source",
            priority,
        )))
        .await;
        assert_eq!(status, 201);
        assert_eq!(created["status"], "pending");
        // No agent and no target: nothing will start one.
        assert_eq!(created["spinUpTriggered"], false);
        assert!(created.get("estimatedWaitSeconds").is_none());
        ids.insert(created["id"].as_str().unwrap_or_default().to_string(), name);
    }
    // Nobody can take it yet (the rule is a unit test of decide::schedule): all pending.
    let (_, pending) = call(http.get(weft.url("/api/work?status=pending"))).await;
    assert_eq!(pending["total"], 4);
    // The moment a matching agent registers, work flows, highest priority first, FIFO within.
    let _agent = AgentProcess::start(&nats, "claude-code", "go", "open-source", 1, "true");
    poll_until(
        &weft,
        "/api/work?status=completed",
        Duration::from_secs(30),
        |b| b["total"] == 4,
    )
    .await;
    let order: Vec<&str> = of_type(&all_events(&weft).await, "work.assigned")
        .iter()
        .map(|e| ids[e["aggregateId"].as_str().unwrap_or_default()])
        .collect();
    assert_eq!(order, ["p9", "p9-later", "p5", "p2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agents_work_is_retried_elsewhere_and_failures_dead_letter() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let http = client();
    let mut doomed = AgentProcess::start(
        &nats,
        "claude-code",
        "slow",
        "personal",
        1,
        "sleep 5; echo slow",
    );
    poll_until(&weft, "/api/agents", Duration::from_secs(20), |b| {
        b["total"] == 1
    })
    .await;
    let (_, created) = call(
        http.post(weft.url("/api/work"))
            .json(&submit_body("long job", "slow", "personal", 5)),
    )
    .await;
    let id = created["id"].as_str().expect("id").to_string();
    poll_until(
        &weft,
        &format!("/api/work/{id}"),
        Duration::from_secs(20),
        |w| w["status"] == "in-progress",
    )
    .await;
    doomed.kill9();
    let rescuer = AgentProcess::start(&nats, "claude-code", "slow", "personal", 1, "echo rescued");
    let done = poll_until(
        &weft,
        &format!("/api/work/{id}"),
        Duration::from_secs(30),
        |w| w["status"] == "completed",
    )
    .await;
    assert_eq!(done["assignedTo"], rescuer.id.as_str());
    assert_eq!(done["attempts"], 2);
    let events = all_events(&weft).await;
    let offline = of_type(&events, "agent.offline");
    assert_eq!(offline.len(), 1);
    assert_eq!(offline[0]["aggregateId"], doomed.id.as_str());
    assert_eq!(offline[0]["data"]["reason"], "heartbeat-missed");
    // Its lease ended on the item itself, in the same atomic commit, just before.
    let expired: Vec<_> = of_type(&events, "work.lease-expired")
        .into_iter()
        .filter(|e| e["aggregateId"] == id.as_str())
        .collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        expired[0]["data"]["reason"],
        format!("agent {} went offline: heartbeat-missed", doomed.id).as_str()
    );
    assert_eq!(
        expired[0]["sequence"].as_u64().map(|s| s + 1),
        offline[0]["sequence"].as_u64()
    );
    let completions: Vec<_> = of_type(&events, "work.completed")
        .into_iter()
        .filter(|e| e["aggregateId"] == id.as_str())
        .collect();
    assert_eq!(completions.len(), 1);

    // An item that always fails is dead-lettered after its last attempt, and can be retried.
    let _failing = AgentProcess::start(
        &nats,
        "claude-code",
        "broken",
        "personal",
        1,
        "echo nope >&2; exit 3",
    );
    let mut body = submit_body("always fails", "broken", "personal", 5);
    body["maxAttempts"] = json!(2);
    let (_, created) = call(http.post(weft.url("/api/work")).json(&body)).await;
    let bad = created["id"].as_str().expect("id").to_string();
    let dead = poll_until(
        &weft,
        &format!("/api/work/{bad}"),
        Duration::from_secs(30),
        |w| w["status"] == "dead-lettered",
    )
    .await;
    assert_eq!(dead["attempts"], 2);
    assert!(
        dead["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("exit") && m.contains("nope")),
        "{dead}"
    );
    let (_, listed) = call(http.get(weft.url("/api/work?status=dead-lettered"))).await;
    assert_eq!(listed["workItems"][0]["id"], bad.as_str());
    let (status, retried) = call(http.post(weft.url(&format!("/api/work/{bad}/retry")))).await;
    assert_eq!(status, 200, "{retried}");
    // Counted afresh; by the time of the answer the scheduler may have assigned it again.
    assert!(
        retried["workItem"]["attempts"].as_u64() <= Some(1)
            && retried["workItem"]["status"] != "dead-lettered",
        "{retried}"
    );
    poll_until(
        &weft,
        &format!("/api/work/{bad}"),
        Duration::from_secs(30),
        |w| w["status"] == "dead-lettered" && w["attempts"] == 2,
    )
    .await;
    let (status, _) = call(http.post(weft.url(&format!("/api/work/{id}/retry")))).await;
    assert_eq!(status, 409, "completed work cannot be retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_killed_mid_flow_loses_nothing_and_completes_each_item_once() {
    let nats = NatsServer::start();
    let env = fast_env(&nats);
    let mut weft = Weft::start(&env);
    let mut agents = [
        AgentProcess::start(
            &nats,
            "claude-code",
            "rust",
            "personal",
            2,
            "sleep 0.3; echo ok",
        ),
        AgentProcess::start(
            &nats,
            "claude-code",
            "rust",
            "personal",
            2,
            "sleep 0.3; echo ok",
        ),
    ];
    let pids: Vec<u32> = agents.iter().map(AgentProcess::pid).collect();
    poll_until(&weft, "/api/agents", Duration::from_secs(20), |b| {
        b["total"] == 2
    })
    .await;
    let http = client();
    for i in 0..24 {
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
        Duration::from_secs(30),
        |b| b["total"].as_u64().is_some_and(|n| n >= 4),
    )
    .await;
    weft.kill9();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let weft = Weft::start(&env);
    poll_until(
        &weft,
        "/api/work?status=completed&limit=100",
        Duration::from_secs(60),
        |b| b["total"] == 24,
    )
    .await;
    let events = all_events(&weft).await;
    let mut completions: HashMap<String, usize> = HashMap::new();
    for e in of_type(&events, "work.completed") {
        *completions
            .entry(e["aggregateId"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    assert_eq!(completions.len(), 24);
    assert!(
        completions.values().all(|n| *n == 1),
        "a completion was recorded twice: {completions:?}"
    );
    // The agents carried on: same processes, never re-registered from scratch.
    for (agent, pid) in agents.iter_mut().zip(pids) {
        assert!(agent.is_running(), "agent died:\n{}", agent.log_text());
        assert_eq!(agent.pid(), pid);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_running_work_kills_its_command() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let dir = tempfile::tempdir().expect("temp dir");
    let pid_file = dir.path().join("pid");
    let command = format!("echo $$ > {}; exec sleep 60", pid_file.display());
    let agent = AgentProcess::start(&nats, "claude-code", "rust", "personal", 1, &command);
    let http = client();
    let (_, created) = call(
        http.post(weft.url("/api/work"))
            .json(&submit_body("forever", "rust", "personal", 5)),
    )
    .await;
    let id = created["id"].as_str().expect("id").to_string();
    poll_until(
        &weft,
        &format!("/api/work/{id}"),
        Duration::from_secs(20),
        |w| w["status"] == "in-progress",
    )
    .await;
    common::wait_until("the command to start", Duration::from_secs(10), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|p| !p.trim().is_empty())
    });
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid")
        .trim()
        .parse()
        .expect("a pid");
    let alive = |pid: i32| {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
    };
    assert!(alive(pid));

    let (status, cancelled) = call(http.post(weft.url(&format!("/api/work/{id}/cancel")))).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["workItem"]["status"], "cancelled");
    common::wait_until("the command to be killed", Duration::from_secs(15), || {
        !alive(pid)
    });
    // Cancelling again is a no-op; the agent is free for more work.
    let (status, again) = call(http.post(weft.url(&format!("/api/work/{id}/cancel")))).await;
    assert_eq!((status, again["success"].as_bool()), (200, Some(true)));
    poll_until(
        &weft,
        &format!("/api/agents/{}", agent.id),
        Duration::from_secs(10),
        |a| a["currentTaskCount"] == 0,
    )
    .await;
    let events = all_events(&weft).await;
    assert!(
        of_type(&events, "work.completed").is_empty() && of_type(&events, "work.failed").is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_gives_one_item_even_concurrently() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let url = weft.url("/api/work");
        tasks.push(tokio::spawn(async move {
            call(
                client()
                    .post(url)
                    .header("Idempotency-Key", "order-42")
                    .json(&submit_body("once", "rust", "personal", 5)),
            )
            .await
        }));
    }
    let mut ids = Vec::new();
    let mut created = 0;
    for t in tasks {
        let (status, body) = t.await.expect("task");
        assert!(status == 201 || status == 200, "{status}: {body}");
        created += usize::from(status == 201);
        ids.push(body["id"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(created, 1, "exactly one request created the item");
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    let (_, list) = call(client().get(weft.url("/api/work"))).await;
    assert_eq!(list["total"], 1);
    // Another key is another item.
    let (status, other) = call(
        client()
            .post(weft.url("/api/work"))
            .header("Idempotency-Key", "order-43")
            .json(&submit_body("once", "rust", "personal", 5)),
    )
    .await;
    assert_eq!(status, 201);
    assert_ne!(other["id"].as_str(), Some(ids[0].as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_request_drains_the_agent_which_then_exits() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let mut agent = AgentProcess::start(
        &nats,
        "claude-code",
        "rust",
        "personal",
        1,
        "sleep 1; echo finished",
    );
    let http = client();
    poll_until(&weft, "/api/agents", Duration::from_secs(20), |b| {
        b["total"] == 1
    })
    .await;
    let (_, created) = call(
        http.post(weft.url("/api/work"))
            .json(&submit_body("last job", "rust", "personal", 5)),
    )
    .await;
    let id = created["id"].as_str().expect("id").to_string();
    poll_until(
        &weft,
        &format!("/api/work/{id}"),
        Duration::from_secs(20),
        |w| w["status"] == "in-progress",
    )
    .await;
    let (status, body) = call(
        http.post(weft.url(&format!("/api/agents/{}/shutdown", agent.id)))
            .json(&json!({"graceful": true})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        agent.wait_exit(Duration::from_secs(20)).success(),
        "{}",
        agent.log_text()
    );
    // Drained: the running item finished first.
    let (_, work) = call(http.get(weft.url(&format!("/api/work/{id}")))).await;
    assert_eq!(work["status"], "completed");
    let view = poll_until(
        &weft,
        &format!("/api/agents/{}", agent.id),
        Duration::from_secs(10),
        |a| a["status"] == "offline",
    )
    .await;
    assert_eq!(view["offlineReason"], "shutdown");
    let events = all_events(&weft).await;
    assert_eq!(of_type(&events, "agent.shutdown-requested").len(), 1);
    let (status, _) = call(http.post(weft.url("/api/agents/not-an-agent/shutdown"))).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_requests_are_validated() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let http = client();
    let cases = [
        json!({"capability": "rust", "boundary": "personal"}),
        json!({"description": "x", "boundary": "personal"}),
        json!({"description": "x", "capability": "rust"}),
        json!({"description": "x", "capability": "rust", "boundary": "personal", "priority": 11}),
        json!({"description": "x", "capability": "rust", "boundary": "personal", "priority": "high"}),
        json!({"description": "x", "capability": "rust", "boundary": "personal", "requiredAgentType": "Big Agent"}),
        json!({"description": "x", "capability": "rust", "boundary": "personal", "deadline": "soon"}),
        json!({"description": "x", "capability": "rust", "boundary": "personal", "contextData": [1]}),
        json!({"description": "x", "capability": "rust", "boundary": "personal", "colour": "red"}),
    ];
    for body in cases {
        let (status, error) = call(http.post(weft.url("/api/work")).json(&body)).await;
        assert_eq!(status, 400, "{body} -> {error}");
        assert_eq!(error["error"], "ValidationError");
    }
    // Legacy forms: no taskId, `classification` instead of `boundary`.
    let (status, created) = call(
        http.post(weft.url("/api/work"))
            .json(&json!({"description": "x", "capability": "rust", "classification": "personal"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (_, item) = call(http.get(weft.url(&format!(
        "/api/work/{}",
        created["id"].as_str().unwrap_or_default()
    ))))
    .await;
    assert_eq!(item["boundary"], "personal");
    assert!(item["taskId"].as_str().is_some_and(|t| !t.is_empty()));
    let response = http
        .get(weft.url("/api/work?classification=personal"))
        .send()
        .await
        .expect("sent");
    assert!(response.headers().contains_key("x-deprecated-param"));
    let (status, _) = call(http.get(weft.url("/api/work?status=sleeping"))).await;
    assert_eq!(status, 400);
    let (status, _) = call(http.get(weft.url("/api/work/nope"))).await;
    assert_eq!(status, 404);
    let (status, batch) = call(
        http.post(weft.url("/api/work/cancel-batch"))
            .json(&json!({"workItemIds": [created["id"], "ghost"]})),
    )
    .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["cancelledItems"], json!([created["id"]]));
    assert_eq!(batch["failed"], json!(["ghost"]));
    let (status, _) = call(
        http.post(weft.url("/api/work/cancel-batch"))
            .json(&json!({"workItemIds": [], "reason": "boredom"})),
    )
    .await;
    assert_eq!(status, 400);
}
