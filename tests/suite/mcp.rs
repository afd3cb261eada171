//! `weft mcp` driven by the official Python MCP client over stdio: the tools are listed
//! with their schemas, an item submitted over REST is taken, reported on and completed,
//! and its events name the MCP agent; a sub-task handed to the fleet is recorded; a
//! second session killed mid-item gives its item back to the queue.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{all_events, call, client, fast_env, poll_until, submit_body, NatsServer, Weft};
use serde_json::Value;

fn session_args(nats: &NatsServer, weft: &Weft, agent_id: &str, handle: &str) -> Vec<String> {
    [
        "--nats-url",
        &nats.url(),
        "--api-url",
        &weft.url(""),
        "--agent-id",
        agent_id,
        "--handle",
        handle,
        "--type",
        "claude-code",
        "--capabilities",
        "rust",
        "--boundaries",
        "personal",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_session_takes_reports_and_completes_work_and_delegates() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let http = client();
    let (status, submitted) = call(http.post(weft.url("/api/work")).json(&submit_body(
        "write the docs",
        "rust",
        "personal",
        5,
    )))
    .await;
    assert_eq!(status, 201, "{submitted}");
    let id = submitted["workItemId"].as_str().expect("id").to_string();

    let binary = common::weft_binary();
    let mut args = vec!["work".to_string(), binary.display().to_string()];
    args.extend(session_args(&nats, &weft, "mcp-session-1", "alice-laptop"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = common::run_python("mcp_session.py", &args);
    assert!(ok, "{out}\nweft log:\n{}", weft.log_text());
    let report: Value = out
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("a JSON report in:\n{out}"));

    let tools: Vec<&str> = report["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        tools,
        [
            "weft_complete",
            "weft_fail",
            "weft_next_work",
            "weft_progress",
            "weft_status",
            "weft_submit"
        ]
    );
    let submit_schema = &report["schemas"]["weft_submit"];
    let required: Vec<&str> = submit_schema["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for field in ["description", "capability", "boundary"] {
        assert!(required.contains(&field), "{submit_schema}");
    }
    // Clear errors: an item the session never took, a percent out of range.
    assert_eq!(report["unknownItem"]["isError"], true, "{report}");
    assert!(
        report["unknownItem"]["body"]
            .as_str()
            .is_some_and(|m| m.contains("not one this session took")),
        "{report}"
    );
    assert!(
        report["badPercent"]["protocolError"].is_string()
            || report["badPercent"]["isError"] == true,
        "{report}"
    );

    assert_eq!(report["taken"]["body"]["work"]["workId"], id.as_str());
    assert_eq!(
        report["taken"]["body"]["work"]["description"],
        "write the docs"
    );
    assert_eq!(report["progress"]["isError"], false, "{report}");
    assert_eq!(report["completed"]["isError"], false, "{report}");
    assert_eq!(report["completedTwice"]["isError"], true, "{report}");
    assert!(report["nothingMore"]["body"]["work"].is_null(), "{report}");

    // The item is completed in the API, and its events name the MCP agent.
    let (_, item) = call(http.get(weft.url(&format!("/api/work/{id}")))).await;
    assert_eq!(item["status"], "completed", "{item}");
    let events = all_events(&weft).await;
    let of_item: Vec<&Value> = events
        .iter()
        .filter(|e| e["aggregateId"] == id.as_str())
        .collect();
    for kind in ["work.started", "work.progressed", "work.completed"] {
        let event = of_item
            .iter()
            .find(|e| e["type"] == kind)
            .unwrap_or_else(|| panic!("{kind} in {of_item:?}"));
        assert_eq!(event["actor"], "agent:mcp-session-1", "{event}");
    }
    let completed = of_item
        .iter()
        .find(|e| e["type"] == "work.completed")
        .expect("completed");
    assert_eq!(completed["data"]["summary"], "done over MCP");

    // The sub-task went to the fleet through the API.
    let sub_id = report["submitted"]["body"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(report["subStatus"]["body"]["id"], sub_id, "{report}");
    let (status, sub) = call(http.get(weft.url(&format!("/api/work/{sub_id}")))).await;
    assert_eq!(status, 200);
    assert_eq!(sub["capability"], "docs");
    assert!(report["fleet"]["body"]["totals"].is_object(), "{report}");

    // The session ended: the agent left the fleet.
    poll_until(
        &weft,
        "/api/agents/mcp-session-1",
        Duration::from_secs(10),
        |a| a["status"] == "offline",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_killed_mid_item_gives_it_back_to_the_queue() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let http = client();
    let (status, submitted) = call(http.post(weft.url("/api/work")).json(&submit_body(
        "held then dropped",
        "rust",
        "personal",
        5,
    )))
    .await;
    assert_eq!(status, 201, "{submitted}");
    let id = submitted["workItemId"].as_str().expect("id").to_string();

    let marker = tempfile::tempdir().expect("marker");
    let handle = marker.path().display().to_string();
    let binary = common::weft_binary();
    let mut python = Command::new(common::test_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/mcp_session.py"
        ))
        .arg("hold")
        .arg(&binary)
        .args(session_args(&nats, &weft, "mcp-session-2", &handle))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python runs");
    let stdout = python.stdout.take().expect("stdout");
    let (lines, taken) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let line = taken
        .recv_timeout(Duration::from_secs(40))
        .unwrap_or_else(|_| panic!("the session took nothing\nweft log:\n{}", weft.log_text()));
    assert_eq!(line, format!("TAKEN {id}"));
    let (_, item) = call(http.get(weft.url(&format!("/api/work/{id}")))).await;
    assert_eq!(item["status"], "in-progress", "{item}");

    // kill -9 of `weft mcp` itself: no goodbye, only silence.
    let sessions = common::processes_mentioning(marker.path());
    let mcp: Vec<u32> = sessions
        .into_iter()
        .filter(|pid| *pid != python.id())
        .collect();
    assert_eq!(mcp.len(), 1, "one weft mcp process: {mcp:?}");
    // SAFETY: signalling a process id we just read from /proc.
    unsafe {
        libc::kill(mcp[0] as i32, libc::SIGKILL);
    }
    poll_until(
        &weft,
        &format!("/api/work/{id}"),
        Duration::from_secs(20),
        |w| w["status"] == "pending",
    )
    .await;
    let events = all_events(&weft).await;
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "work.lease-expired" && e["aggregateId"] == id.as_str()),
        "the lease ended"
    );
    let _ = python.kill();
    let _ = python.wait();
}
