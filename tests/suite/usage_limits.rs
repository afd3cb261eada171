//! Usage limits are not failures, and what the CLI reports becomes the item's result and
//! cost: a stand-in `claude` on PATH speaks Claude Code's stream-json (one account at its
//! limit, one not). The limit parks the item (attempts unchanged) and pauses the agent; the
//! item completes on the other agent with its usage recorded; no dead-letter; a person
//! resumes the paused agent.

use crate::common;

use std::time::Duration;

use common::{all_events, call, client, fast_env, poll_until, AgentProcess, NatsServer, Weft};
use serde_json::Value;

/// Claude Code's stream-json, as `agent-clis.md` records it: limited or successful.
const STAND_IN: &str = r#"#!/bin/sh
echo '{"type":"system","subtype":"init","session_id":"sess-1","model":"claude-sonnet-4-5","cwd":"'"$PWD"'"}'
if [ "$STAND_IN_MODE" = limited ]; then
  reset=$(( $(date +%s) + 3600 ))
  echo '{"type":"assistant","message":{"content":[{"type":"text","text":"Starting"}]}}'
  echo '{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":'$reset',"rateLimitType":"five_hour"}}'
  echo '{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"result":"You'"'"'ve hit your limit · resets 1pm (Europe/Lisbon)","total_cost_usd":0}'
  exit 1
fi
echo '{"type":"assistant","message":{"content":[{"type":"text","text":"Reading the parser"},{"type":"tool_use","id":"t1","name":"Read","input":{}}]}}'
echo '{"type":"rate_limit_event","rate_limit_info":{"status":"allowed"}}'
echo '{"type":"result","subtype":"success","is_error":false,"duration_ms":22631,"num_turns":3,"result":"Fixed the parser.","session_id":"sess-1","total_cost_usd":0.0745,"usage":{"input_tokens":6,"cache_creation_input_tokens":8982,"cache_read_input_tokens":42853,"output_tokens":583},"modelUsage":{"claude-sonnet-4-5-20250929":{}}}'
"#;

/// A folder with the stand-in `claude`, and the folder's path for PATH.
fn stand_in_bin() -> (tempfile::TempDir, String) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("temp dir");
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let claude = bin.join("claude");
    std::fs::write(&claude, STAND_IN).expect("stand-in");
    std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let bin = bin.display().to_string();
    (tmp, bin)
}

fn agent(nats: &NatsServer, bin: &str, mode: &str) -> AgentProcess {
    let path = format!("{bin}:{}", std::env::var("PATH").unwrap_or_default());
    AgentProcess::start_with(
        nats,
        "claude-code",
        "rust",
        "personal",
        1,
        "claude -p {description} --output-format stream-json --verbose",
        &[
            ("PATH", path.as_str()),
            ("AGENT_OUTPUT_FORMAT", "claude-stream-json"),
            ("STAND_IN_MODE", mode),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usage_limit_parks_the_item_pauses_the_agent_and_another_finishes_it() {
    let (tmp, bin) = stand_in_bin();

    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let limited = agent(&nats, &bin, "limited");
    poll_until(&weft, "/api/agents", Duration::from_secs(20), |b| {
        b["total"].as_u64() == Some(1)
    })
    .await;
    let http = client();
    let (status, created) = call(http.post(weft.url("/api/work")).json(&common::submit_body(
        "fix the parser",
        "rust",
        "personal",
        5,
    )))
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["workItemId"].as_str().expect("id").to_string();

    let paused = poll_until(
        &weft,
        &format!("/api/agents/{}", limited.id),
        Duration::from_secs(30),
        |a| a["status"] == "paused",
    )
    .await;
    let until = paused["pausedUntil"]
        .as_str()
        .expect("a reset time")
        .to_string();
    let now = weft::time::rfc3339(weft::time::now_ms() + 3_500_000);
    let later = weft::time::rfc3339(weft::time::now_ms() + 3_700_000);
    assert!(
        until > now && until < later,
        "about an hour from now: {until}"
    );
    assert!(
        paused["pausedReason"]
            .as_str()
            .is_some_and(|r| r.contains("hit your limit")),
        "{paused}"
    );
    let item = poll_until(
        &weft,
        &format!("/api/work/{id}"),
        Duration::from_secs(10),
        |w| w["status"] == "pending" && w["parked"].is_object(),
    )
    .await;
    assert_eq!(item["attempts"], 0, "the attempt is not counted: {item}");
    assert_eq!(item["parked"]["until"], until.as_str());
    let metrics = common::metrics_text(&weft).await;
    assert!(
        metrics.lines().any(|l| l.starts_with("weft_agents{")
            && l.contains("status=\"paused\"")
            && l.ends_with(" 1")),
        "{metrics}"
    );

    // Another account takes it and finishes it; what the CLI reported is recorded.
    let _fresh = agent(&nats, &bin, "ok");
    let done = poll_until(
        &weft,
        &format!("/api/work/{id}"),
        Duration::from_secs(30),
        |w| w["status"] == "completed",
    )
    .await;
    assert_eq!(done["attempts"], 1, "{done}");
    assert_ne!(done["assignedTo"], limited.id.as_str());
    assert_eq!(done["result"]["summary"], "Fixed the parser.");
    let usage = &done["usage"];
    assert_eq!(usage["costUsd"], 0.0745, "{done}");
    assert_eq!(usage["inputTokens"], 6);
    assert_eq!(usage["outputTokens"], 583);
    assert_eq!(usage["cacheReadTokens"], 42853);
    assert_eq!(usage["cacheWriteTokens"], 8982);
    assert_eq!(usage["turns"], 3);
    assert_eq!(usage["durationMs"], 22631);
    assert_eq!(usage["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(usage["sessionId"], "sess-1");
    assert!(
        usage.get("premiumRequests").is_none(),
        "absent stays absent"
    );

    let events = all_events(&weft).await;
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(
        types.contains(&"work.parked") && types.contains(&"agent.paused"),
        "{types:?}"
    );
    assert!(
        !types.contains(&"work.failed"),
        "a limit is not a failure: {types:?}"
    );
    // What the structured output showed is the item's output.
    let (status, output) = call(http.get(weft.url(&format!("/api/work/{id}/output")))).await;
    assert_eq!(status, 200, "{output}");
    assert!(
        output["lines"]
            .as_array()
            .is_some_and(|lines| lines.iter().any(|l| l["text"] == "tool: Read")),
        "structured output is output: {output}"
    );

    // The ledger: its totals are the items' sums, by agent and by day.
    let (status, by_agent) = call(http.get(weft.url("/api/usage?groupBy=agent"))).await;
    assert_eq!(status, 200, "{by_agent}");
    assert_eq!(
        by_agent["total"]["usage"]["costUsd"], done["usage"]["costUsd"],
        "{by_agent}"
    );
    assert_eq!(by_agent["total"]["items"], 1);
    let lines = by_agent["lines"].as_array().expect("lines");
    let cost_of = |agent: &str| {
        lines
            .iter()
            .find(|l| l["key"] == agent)
            .and_then(|l| l["usage"]["costUsd"].as_f64())
    };
    assert_eq!(
        cost_of(&limited.id),
        Some(0.0),
        "the limited attempt cost nothing: {by_agent}"
    );
    let fresh_id = done["assignedTo"].as_str().expect("agent");
    assert_eq!(cost_of(fresh_id), Some(0.0745));
    let (_, by_day) = call(http.get(weft.url("/api/usage?groupBy=day"))).await;
    let today = &weft::time::rfc3339(weft::time::now_ms())[..10];
    assert_eq!(by_day["lines"][0]["key"], today, "{by_day}");
    assert_eq!(by_day["lines"][0]["attempts"], 2);
    let (status, bad) = call(http.get(weft.url("/api/usage?groupBy=color"))).await;
    assert_eq!(status, 400, "{bad}");
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_shuttle"))
        .args(["usage", "--group-by", "agent"])
        .env("WEFT_API_URL", weft.url(""))
        .env_remove("WEFT_API_TOKEN")
        .env("HOME", tmp.path())
        .output()
        .expect("shuttle runs");
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.status.success(), "{text}");
    assert!(text.contains("$0.0745") && text.contains("total"), "{text}");

    // A person resumes the paused agent.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shuttle"))
        .args(["agents", "resume", &limited.id])
        .env("WEFT_API_URL", weft.url(""))
        .env_remove("WEFT_API_TOKEN")
        .env("HOME", tmp.path())
        .output()
        .expect("shuttle runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, resumed) = call(http.get(weft.url(&format!("/api/agents/{}", limited.id)))).await;
    assert_eq!(resumed["status"], "online", "{resumed}");
    assert!(resumed.get("pausedUntil").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_holds_new_work_at_its_limit_and_releases_it_when_raised() {
    let (_tmp, bin) = stand_in_bin();
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let http = client();

    for bad in [
        serde_json::json!({"maxCostUsdPerDay": -1}),
        serde_json::json!({"maxCostUsdPerDay": 1, "warnAtFraction": 2}),
        serde_json::json!({"maxCostUsd": 1}),
    ] {
        let (status, answer) = call(
            http.put(weft.url("/api/projects/default/budget"))
                .json(&bad),
        )
        .await;
        assert_eq!(status, 400, "{bad}: {answer}");
    }
    // Each item costs 0.0745: the second reaches 0.10.
    let (status, budget) = call(
        http.put(weft.url("/api/projects/default/budget"))
            .json(&serde_json::json!({"maxCostUsdPerDay": 0.1, "warnAtFraction": 0.5})),
    )
    .await;
    assert_eq!(status, 200, "{budget}");
    assert_eq!(budget["reached"], false);
    let _agent = agent(&nats, &bin, "ok");
    let submit = |n: usize| common::submit_body(&format!("item {n}"), "rust", "personal", 5);
    let mut ids = Vec::new();
    for n in 0..2 {
        let (_, created) = call(http.post(weft.url("/api/work")).json(&submit(n))).await;
        let id = created["workItemId"].as_str().expect("id").to_string();
        poll_until(
            &weft,
            &format!("/api/work/{id}"),
            Duration::from_secs(30),
            |w| w["status"] == "completed",
        )
        .await;
        ids.push(id);
    }
    let (_, budget) = call(http.get(weft.url("/api/projects/default/budget"))).await;
    assert_eq!(budget["reached"], true, "{budget}");
    assert!((budget["spentTodayUsd"].as_f64().expect("spent") - 0.149).abs() < 1e-9);

    // New work waits (not failed) while the budget is reached...
    let (_, created) = call(http.post(weft.url("/api/work")).json(&submit(2))).await;
    let held = created["workItemId"].as_str().expect("id").to_string();
    for _ in 0..20 {
        let (_, item) = call(http.get(weft.url(&format!("/api/work/{held}")))).await;
        assert_eq!(item["status"], "pending", "held at the budget: {item}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...and goes on once it is raised.
    let (status, _) = call(
        http.put(weft.url("/api/projects/default/budget"))
            .json(&serde_json::json!({"maxCostUsdPerDay": 1.0})),
    )
    .await;
    assert_eq!(status, 200);
    poll_until(
        &weft,
        &format!("/api/work/{held}"),
        Duration::from_secs(30),
        |w| w["status"] == "completed",
    )
    .await;
    ids.push(held);

    let events = all_events(&weft).await;
    let warned: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "budget.warned")
        .collect();
    assert_eq!(warned.len(), 1, "one warning a day: {warned:?}");
    assert_eq!(warned[0]["data"]["maxCostUsdPerDay"], 0.1);

    // The ledger's total is the sum of the items'.
    let mut sum = 0.0;
    for id in &ids {
        let (_, item) = call(http.get(weft.url(&format!("/api/work/{id}")))).await;
        sum += item["usage"]["costUsd"].as_f64().expect("cost");
    }
    let (_, ledger) = call(http.get(weft.url("/api/usage"))).await;
    let total = ledger["total"]["usage"]["costUsd"].as_f64().expect("total");
    assert!((total - sum).abs() < 1e-9, "{total} != {sum}: {ledger}");
    assert_eq!(ledger["total"]["items"], 3);
}
