//! `/metrics` for dashboards outside Weft: agent utilisation (slots and running tasks) and
//! the queue by capability, read from the state as it changes. Spin-up metrics are checked
//! where spin-ups run (`spin_up.rs`).

use std::time::Duration;

use crate::common;
use common::{call, client, fast_env, poll_until, submit_body, AgentProcess, NatsServer, Weft};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utilisation_and_queue_depth_follow_the_fleet() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let dir = tempfile::tempdir().expect("temp dir");
    let go = dir.path().join("go");
    let command = format!("while [ ! -f {} ]; do sleep 0.1; done", go.display());
    let _agent = AgentProcess::start(&nats, "claude-code", "rust", "personal", 2, &command);
    poll_until(&weft, "/api/agents", Duration::from_secs(20), |b| {
        b["total"] == 1
    })
    .await;
    let http = client();
    let submit = |capability: &'static str| {
        call(
            http.post(weft.url("/api/work"))
                .json(&submit_body("m", capability, "personal", 5)),
        )
    };
    let (status, running) = submit("rust").await;
    assert_eq!(status, 201);
    for _ in 0..3 {
        assert_eq!(submit("go").await.0, 201);
    }
    let id = running["id"].as_str().expect("id").to_string();
    poll_until(
        &weft,
        &format!("/api/work/{id}"),
        Duration::from_secs(20),
        |w| w["status"] == "in-progress",
    )
    .await;
    let metrics = common::metrics_text(&weft).await;
    for line in [
        "weft_agent_task_slots{project=\"default\",agent_type=\"claude-code\"} 2",
        "weft_agent_tasks_running{project=\"default\",agent_type=\"claude-code\"} 1",
        "weft_queue_depth{project=\"default\",capability=\"go\"} 3",
    ] {
        assert!(metrics.contains(line), "no `{line}` in:\n{metrics}");
    }
    assert!(
        !metrics.contains("weft_queue_depth{project=\"default\",capability=\"rust\"}"),
        "the rust item is running, not waiting: {metrics}"
    );

    std::fs::write(&go, "go").expect("go");
    poll_until(
        &weft,
        &format!("/api/work/{id}"),
        Duration::from_secs(20),
        |w| w["status"] == "completed",
    )
    .await;
    let metrics = common::metrics_text(&weft).await;
    assert!(
        metrics
            .contains("weft_agent_tasks_running{project=\"default\",agent_type=\"claude-code\"} 0"),
        "{metrics}"
    );
}

/// Every metric the example Grafana dashboard queries is one Weft exposes (a renamed
/// metric would leave a panel silently empty), and every panel has a query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_queries_only_metrics_weft_exposes() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana-dashboard.json"
    ))
    .expect("deploy/grafana-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    // A fleet with every series: an item waiting, and a spun-up agent holding another.
    let command = format!(
        "{} agent --command 'sleep 30'",
        common::weft_binary().display()
    );
    let target = serde_json::json!({
        "name": "laptop", "agentType": "claude-code", "capabilities": ["rust"], "boundaries": ["personal"],
        "mechanism": "local", "config": {"command": command, "detached": false, "env": {"LOG_LEVEL": "warn"}}
    });
    let (status, _) = call(client().post(weft.url("/api/targets")).json(&target)).await;
    assert_eq!(status, 201);
    for capability in ["rust", "cobol"] {
        let body = submit_body("m", capability, "personal", 5);
        let (status, _) = call(client().post(weft.url("/api/work")).json(&body)).await;
        assert_eq!(status, 201);
    }
    poll_until(
        &weft,
        "/api/work?status=in-progress",
        Duration::from_secs(30),
        |b| b["total"] == 1,
    )
    .await;
    let metrics = common::metrics_text(&weft).await;
    let exposed: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut queried = 0;
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !word.starts_with("weft_") {
                    continue;
                }
                let name = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| word.strip_suffix(s))
                    .unwrap_or(word);
                assert!(
                    exposed.contains(&name),
                    "panel {} queries {word}, which /metrics does not have: {exposed:?}",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 10, "{queried} metric references");
}
