//! The dashboard, opened in headless Chromium (Debian's, driven by playwright-core),
//! shows an agent, takes a submission through its form and follows the item live until it
//! completes (target/dashboard.png); and an item's detail shows its live output, the
//! routing explanation and the charts moving (target/detail.png, target/charts.png).
//! `scripts/test.sh` installs Chromium (as root) and the script's npm packages.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{fast_env, poll_until, AgentProcess, NatsServer, Weft};

/// The directory of the browser scripts, once playwright-core and Chromium are there.
fn script_dir() -> std::path::PathBuf {
    let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard");
    assert!(
        script_dir.join("node_modules/playwright-core").exists(),
        "run `npm ci` in tests/dashboard (scripts/test.sh does)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "install Debian's chromium (scripts/test.sh does, as root)"
    );
    script_dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_agents_and_follows_work_live() {
    let script_dir = script_dir();
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let dir = tempfile::tempdir().expect("temp dir");
    let go = dir.path().join("go");
    let command = format!(
        "while [ ! -f {} ]; do sleep 0.1; done; echo finished",
        go.display()
    );
    let agent = AgentProcess::start(&nats, "claude-code", "rust", "personal", 1, &command);
    poll_until(&weft, "/api/agents", Duration::from_secs(20), |b| {
        b["total"] == 1
    })
    .await;

    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard.png");
    let _ = std::fs::create_dir_all(screenshot.parent().expect("dir"));
    let _ = std::fs::remove_file(&screenshot);
    let out = tokio::task::spawn_blocking({
        let (url, go, shot, id) = (
            weft.url("/"),
            go.clone(),
            screenshot.clone(),
            agent.id.clone(),
        );
        move || {
            Command::new("node")
                .current_dir(&script_dir)
                .arg("check.mjs")
                .args([
                    url,
                    id,
                    go.display().to_string(),
                    shot.display().to_string(),
                ])
                .output()
                .expect("node runs")
        }
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "the dashboard check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        screenshot.metadata().is_ok_and(|m| m.len() > 10_000),
        "no screenshot"
    );
    let (_, work) = common::call(common::client().get(weft.url("/api/work"))).await;
    assert_eq!(work["workItems"][0]["description"], "dashboard job");
    assert_eq!(work["workItems"][0]["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_items_detail_shows_its_output_routing_and_moving_charts() {
    let script_dir = script_dir();
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let dir = tempfile::tempdir().expect("temp dir");
    let go = dir.path().join("go");
    // Prints numbered lines slowly, then holds the item in progress until `go` exists.
    let command = format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; sleep 0.3; done; \
         while [ ! -f {} ]; do sleep 0.1; done; echo finished",
        go.display()
    );
    let _runner = AgentProcess::start(&nats, "claude-code", "rust", "personal", 1, &command);
    // Same type and boundary, another capability: routing turns it down for that alone.
    let other = AgentProcess::start(&nats, "claude-code", "python", "personal", 1, "echo no");
    poll_until(&weft, "/api/agents", Duration::from_secs(20), |b| {
        b["total"] == 2
    })
    .await;

    let http = common::client();
    let body = common::submit_body("detail job", "rust", "personal", 5);
    let (status, submitted) = common::call(http.post(weft.url("/api/work")).json(&body)).await;
    assert_eq!(status, 201, "{submitted}");
    let id = submitted["id"].as_str().expect("id").to_string();
    poll_until(
        &weft,
        &format!("/api/work/{id}"),
        Duration::from_secs(20),
        |w| w["status"] == "in-progress",
    )
    .await;

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let _ = std::fs::create_dir_all(&shots);
    let (detail, charts) = (shots.join("detail.png"), shots.join("charts.png"));
    let _ = std::fs::remove_file(&detail);
    let _ = std::fs::remove_file(&charts);
    let out = tokio::task::spawn_blocking({
        let (url, id, rejected, shots) = (
            weft.url("/"),
            id.clone(),
            other.id.clone(),
            shots.display().to_string(),
        );
        move || {
            Command::new("node")
                .current_dir(&script_dir)
                .arg("detail.mjs")
                .args([url, id, rejected, shots])
                .output()
                .expect("node runs")
        }
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "the dashboard detail check failed:\n{}\n{}\nweft log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        weft.log_text()
    );
    for shot in [&detail, &charts] {
        assert!(
            shot.metadata().is_ok_and(|m| m.len() > 10_000),
            "no screenshot at {}",
            shot.display()
        );
    }

    std::fs::write(&go, "go").expect("go file");
    poll_until(
        &weft,
        &format!("/api/work/{id}"),
        Duration::from_secs(20),
        |w| w["status"] == "completed",
    )
    .await;
}

/// 1,000 items and 100 agents: the page renders one page of each table, pages on, and
/// finds one item by its task id. The script prints its render figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_pages_a_thousand_items_and_a_hundred_agents() {
    let script_dir = script_dir();
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let client = async_nats::connect(nats.url()).await.expect("nats");
    for n in 0..100 {
        let id = format!("scale-agent-{n:03}");
        let request = weft::protocol::RegisterRequest {
            agent_id: id.clone(),
            agent_type: "claude-code".into(),
            capabilities: vec!["python".into()],
            boundaries: vec!["personal".into()],
            max_concurrent_tasks: 1,
            idle_timeout_ms: None,
            hostname: None,
            handle: None,
            spin_up_id: None,
            target_id: None,
        };
        let reply: weft::protocol::Reply<serde_json::Value> = weft::protocol::call(
            &client,
            "default",
            weft::protocol::REGISTER,
            &id,
            &request,
            Duration::from_secs(10),
        )
        .await
        .expect("registered");
        assert!(reply.ok, "{:?}", reply.error);
    }
    // No agent has the capability, so all of them wait.
    let http = common::client();
    for batch in 0..20 {
        let submits = (0..50).map(|i| {
            let mut body = common::submit_body(
                &format!("scale item {}", batch * 50 + i),
                "rust",
                "personal",
                5,
            );
            body["taskId"] = format!("task-{:04}", batch * 50 + i).into();
            common::call(http.post(weft.url("/api/work")).json(&body))
        });
        for (status, answer) in futures::future::join_all(submits).await {
            assert_eq!(status, 201, "{answer}");
        }
    }
    poll_until(&weft, "/api/stats", Duration::from_secs(30), |s| {
        s["totals"]["pendingWork"] == 1000
    })
    .await;

    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-scale.png");
    let _ = std::fs::remove_file(&screenshot);
    let out = tokio::task::spawn_blocking({
        let (url, shot) = (weft.url("/"), screenshot.display().to_string());
        move || {
            Command::new("node")
                .current_dir(&script_dir)
                .args(["scale.mjs", &url, "task-0777", &shot])
                .output()
                .expect("node runs")
        }
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "the dashboard scale check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        screenshot.metadata().is_ok_and(|m| m.len() > 10_000),
        "no screenshot"
    );
}
