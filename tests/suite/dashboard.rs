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
/// Runs `script` (in tests/dashboard) with `args` under node, off the runtime's threads,
/// and answers its stdout; fails the test with its output and Weft's log if it fails.
async fn run_script(script: &str, args: Vec<String>, weft: &Weft) -> String {
    let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard");
    assert!(
        script_dir.join("node_modules/playwright-core").exists(),
        "run `npm ci` in tests/dashboard (scripts/test.sh does)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "install Debian's chromium (scripts/test.sh does, as root)"
    );
    let script = script.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(&script_dir)
            .arg(&script)
            .args(args)
            .output()
            .expect("node runs")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "the dashboard check failed:\n{}\n{}\nweft log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        weft.log_text()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where a screenshot goes: `target/<name>`, any old one removed.
fn screenshot(name: &str) -> std::path::PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(name);
    let _ = std::fs::create_dir_all(path.parent().expect("dir"));
    let _ = std::fs::remove_file(&path);
    path
}

fn assert_screenshot(path: &Path) {
    assert!(
        path.metadata().is_ok_and(|m| m.len() > 10_000),
        "no screenshot at {}",
        path.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_agents_and_follows_work_live() {
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

    let shot = screenshot("dashboard.png");
    let args = vec![
        weft.url("/"),
        agent.id.clone(),
        go.display().to_string(),
        shot.display().to_string(),
    ];
    run_script("check.mjs", args, &weft).await;
    assert_screenshot(&shot);
    let (_, work) = common::call(common::client().get(weft.url("/api/work"))).await;
    assert_eq!(work["workItems"][0]["description"], "dashboard job");
    assert_eq!(work["workItems"][0]["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_items_detail_shows_its_output_routing_and_moving_charts() {
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

    let (detail, charts) = (screenshot("detail.png"), screenshot("charts.png"));
    let dir = detail.parent().expect("target").display().to_string();
    run_script(
        "detail.mjs",
        vec![weft.url("/"), id.clone(), other.id.clone(), dir],
        &weft,
    )
    .await;
    assert_screenshot(&detail);
    assert_screenshot(&charts);

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
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let client = async_nats::connect(nats.url()).await.expect("nats");
    for n in 0..100 {
        let id = format!("scale-agent-{n:03}");
        common::register(
            &client,
            "default",
            &common::registration(&id, "python", "personal"),
        )
        .await;
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

    let shot = screenshot("dashboard-scale.png");
    let args = vec![
        weft.url("/"),
        "task-0777".into(),
        shot.display().to_string(),
    ];
    println!("{}", run_script("scale.mjs", args, &weft).await);
    assert_screenshot(&shot);
}
