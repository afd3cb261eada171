//! The `kubernetes` mechanism against a stand-in Kubernetes API on 127.0.0.1 that
//! implements the Job calls Weft makes (and checks the bearer token); the test plays the
//! cluster by starting the agent the Job describes.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    all_events, call, client, fast_env, poll_until, submit_body, AgentProcess, NatsServer, Seen,
    Weft,
};
use serde_json::{json, Value};

/// A stand-in Kubernetes API: Job create, list and delete in namespace `agents`, 403 in
/// namespace `forbidden`, 401 without the right token.
fn stand_in_api() -> (String, Arc<Mutex<Vec<Seen>>>) {
    common::stand_in(|r| {
        let status = |code: u16, reason: &str| json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": if code < 400 { "Success" } else { "Failure" }, "reason": reason, "message": reason, "code": code});
        let authorization = r
            .headers
            .get("authorization")
            .map(String::as_str)
            .unwrap_or_default();
        let (code, answer) = if authorization != "Bearer k8s-token" {
            (401, status(401, "Unauthorized"))
        } else if r.path.starts_with("/apis/batch/v1/namespaces/forbidden/") {
            (403, status(403, "Forbidden"))
        } else if r.method == "POST" && r.path == "/apis/batch/v1/namespaces/agents/jobs" {
            let mut job: Value = serde_json::from_str(&r.body).unwrap_or_default();
            job["metadata"]["uid"] = json!("uid-1");
            (201, job)
        } else if r.method == "GET" && r.path == "/apis/batch/v1/namespaces/agents/jobs" {
            (
                200,
                json!({"kind": "JobList", "apiVersion": "batch/v1", "metadata": {}, "items": []}),
            )
        } else if r.method == "DELETE"
            && r.path.starts_with("/apis/batch/v1/namespaces/agents/jobs/")
        {
            (200, status(200, "Deleted"))
        } else {
            (404, status(404, "NotFound"))
        };
        (code, answer.to_string())
    })
}

fn kubeconfig(dir: &std::path::Path, server: &str) -> String {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\nusers:\n- name: test\n  user:\n    token: k8s-token\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\ncurrent-context: test\n"
        ),
    )
    .expect("kubeconfig");
    path.display().to_string()
}

fn job_target(name: &str, namespace: &str, kubeconfig: &str) -> Value {
    json!({
        "name": name, "agentType": "claude-code", "capabilities": ["rust"], "boundaries": ["personal"], "mechanism": "kubernetes",
        "config": {
            "namespace": namespace, "image": "registry.example/weft-agent:1", "jobNamePrefix": "Weft Agent",
            "command": ["weft", "agent"], "args": ["--command", "claude -p {description}"],
            "env": {"LOG_LEVEL": "info"}, "resources": {"cpu": "500m", "memory": "1Gi"},
            "serviceAccount": "agents", "imagePullSecret": "registry", "ttlSecondsAfterFinished": 600,
            "kubeconfigPath": kubeconfig
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_created_for_pending_work_and_deleted_on_scale_down() {
    let (api, seen) = stand_in_api();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = kubeconfig(dir.path(), &api);
    let nats = NatsServer::start();
    let mut env = fast_env(&nats);
    env.push(("IDLE_TIMEOUT_MS", "1500".into()));
    let weft = Weft::start(&env);
    let http = client();
    let (status, created) = call(
        http.post(weft.url("/api/targets"))
            .json(&job_target("cluster", "agents", &config)),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (_, health) = call(http.post(weft.url("/api/targets/cluster/test"))).await;
    assert_eq!(health["healthy"], true, "{health}");

    let (_, item) = call(
        http.post(weft.url("/api/work"))
            .json(&submit_body("k8s job", "rust", "personal", 5)),
    )
    .await;
    let id = item["id"].as_str().expect("id").to_string();
    poll_until(
        &weft,
        "/api/events?type=spin-up.started",
        Duration::from_secs(20),
        |b| b["count"] == 1,
    )
    .await;
    let create = seen
        .lock()
        .expect("lock")
        .iter()
        .find(|s| s.method == "POST")
        .cloned()
        .expect("a Job was created");
    assert_eq!(create.headers["authorization"], "Bearer k8s-token");
    let job: Value = serde_json::from_str(&create.body).expect("json");
    let name = job["metadata"]["name"].as_str().expect("name").to_string();
    assert!(
        name.starts_with("weft-agent-") && name.len() <= 63,
        "{name}"
    );
    let pod = &job["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        (
            container["image"].as_str(),
            pod["serviceAccountName"].as_str()
        ),
        (Some("registry.example/weft-agent:1"), Some("agents"))
    );
    assert_eq!(pod["imagePullSecrets"][0]["name"], "registry");
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(container["resources"]["limits"]["memory"], "1Gi");
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 600);
    let env_of = |key: &str| {
        container["env"]
            .as_array()
            .and_then(|e| e.iter().find(|v| v["name"] == key))
            .and_then(|v| v["value"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(env_of("WEFT_WORK_ID"), id);
    assert_eq!(env_of("NATS_URL"), nats.url());
    let spin_up = env_of("WEFT_SPINUP_ID");

    // The cluster runs the pod: an agent with the Job's spin-up id.
    let _agent = AgentProcess::start_with(
        &nats,
        "claude-code",
        "rust",
        "personal",
        1,
        "echo from the pod",
        &[("WEFT_SPINUP_ID", spin_up.as_str())],
    );
    poll_until(
        &weft,
        &format!("/api/work/{id}"),
        Duration::from_secs(30),
        |w| w["status"] == "completed",
    )
    .await;
    poll_until(
        &weft,
        "/api/events?type=spin-up.stopped",
        Duration::from_secs(30),
        |b| b["count"] == 1,
    )
    .await;
    let deleted = seen
        .lock()
        .expect("lock")
        .iter()
        .any(|s| s.method == "DELETE" && s.path.ends_with(&format!("/jobs/{name}")));
    assert!(deleted, "the Job was not deleted on scale-down");
    let events = all_events(&weft).await;
    let started = events
        .iter()
        .find(|e| e["type"] == "spin-up.started")
        .expect("started");
    assert!(started["data"]["detail"]
        .as_str()
        .is_some_and(|d| d.contains(&name)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_namespace_fails_spin_ups_and_checks_clearly() {
    let (api, _) = stand_in_api();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = kubeconfig(dir.path(), &api);
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let http = client();
    let (status, _) = call(http.post(weft.url("/api/targets")).json(&job_target(
        "locked",
        "forbidden",
        &config,
    )))
    .await;
    assert_eq!(status, 201);
    // Health unknown, so it is tried: the spin-up fails, as an event, and is not retried
    // during the target's cooldown.
    let (_, item) = call(
        http.post(weft.url("/api/work"))
            .json(&submit_body("x", "rust", "personal", 5)),
    )
    .await;
    assert!(item["id"].is_string());
    let failed = poll_until(
        &weft,
        "/api/events?type=spin-up.failed",
        Duration::from_secs(20),
        |b| b["count"] == 1,
    )
    .await;
    assert!(
        failed["events"][0]["data"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("403") && e.contains("Forbidden")),
        "{failed}"
    );
    // Cooling down: another item will not start anything there, as its submission says
    // (the rule itself is a unit test of decide::schedule).
    let (_, second) = call(
        http.post(weft.url("/api/work"))
            .json(&submit_body("y", "rust", "personal", 5)),
    )
    .await;
    assert_eq!(second["spinUpTriggered"], false, "{second}");
    let (_, triggered) = call(http.get(weft.url("/api/events?type=spin-up.triggered"))).await;
    assert_eq!(triggered["count"], 1, "retried during the cooldown");
    // The health check says the same.
    let (_, health) = call(http.post(weft.url("/api/targets/locked/test"))).await;
    assert_eq!(health["healthy"], false);
    assert!(
        health["error"].as_str().is_some_and(|e| e.contains("403")),
        "{health}"
    );
}
