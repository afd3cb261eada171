//! The dashboard, opened in headless Chromium (Debian's, driven by playwright-core),
//! shows an agent, takes a submission through its form and follows the item live until it
//! completes. Writes a screenshot to target/dashboard.png.
//! `scripts/test.sh` installs Chromium (as root) and the script's npm packages.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{fast_env, poll_until, AgentProcess, NatsServer, Weft};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_agents_and_follows_work_live() {
    let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard");
    assert!(
        script_dir.join("node_modules/playwright-core").exists(),
        "run `npm ci` in tests/dashboard (scripts/test.sh does)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "install Debian's chromium (scripts/test.sh does, as root)"
    );
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
