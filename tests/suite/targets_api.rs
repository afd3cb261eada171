//! Target CRUD, filters, pagination, enable/disable and batches over HTTP, against a real
//! nats-server and a real `weft serve`.

use crate::common;

use common::{call, client, local_target, NatsServer, Weft};
use serde_json::{json, Value};

fn names(list: &Value) -> Vec<String> {
    list["targets"]
        .as_array()
        .expect("targets array")
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_crud_filters_pagination_and_batches() {
    let nats = NatsServer::start();
    let weft = Weft::start(&[("NATS_URL", nats.url())]);
    let http = client();
    let url = |p: &str| weft.url(p);

    // Flat config, as the Shuttle CLI sends it.
    let (status, ssh) = call(http.post(url("/api/targets")).json(&json!({
        "name": "home-server", "agentType": "claude-code", "capabilities": ["typescript", "rust"],
        "boundaries": ["personal"], "mechanism": "ssh",
        "config": {"mechanism": "ssh", "host": "127.0.0.1", "user": "agent", "command": "weft agent", "privateKeyPath": "/keys/id"},
        "healthCheck": {"enabled": true}, "tags": ["home"]
    })))
    .await;
    assert_eq!(status, 201, "{ssh}");
    assert_eq!(
        ssh["config"],
        json!({"mechanism": "ssh", "ssh": {"host": "127.0.0.1", "user": "agent", "command": "weft agent", "privateKeyPath": "/keys/id"}})
    );
    assert_eq!(ssh["status"], "available");
    assert_eq!(ssh["healthStatus"], "unknown");
    assert_eq!(
        ssh["healthCheck"],
        json!({"enabled": true, "intervalMs": 300000, "timeoutMs": 10000})
    );
    assert_eq!(ssh["useCount"], 0);
    assert_eq!(ssh["registeredBy"], "api");
    let ssh_id = ssh["id"].as_str().expect("id").to_string();

    // Nested config, as the original's executors read it; workflowFile alias.
    let (status, gh) = call(http.post(url("/api/targets")).json(&json!({
        "name": "gh-runner", "agentType": "copilot-cli", "capabilities": ["typescript"],
        "boundaries": ["corporate"], "mechanism": "github-actions",
        "config": {"mechanism": "github-actions", "githubActions": {"repo": "acme/agents", "workflowFile": "agent.yml", "tokenEnvVar": "GH_TOKEN"}}
    })))
    .await;
    assert_eq!(status, 201, "{gh}");
    assert_eq!(gh["config"]["githubActions"]["workflow"], "agent.yml");
    assert_eq!(gh["mechanism"], "github-actions");

    for i in 0..5 {
        let (status, body) = call(
            http.post(url("/api/targets"))
                .json(&local_target(&format!("local-{i}"))),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        // Default boundaries are the original's legacy set.
        assert_eq!(
            body["boundaries"],
            json!(["corporate", "corporate-adjacent", "personal", "open-source"])
        );
    }

    // Get by id and by name.
    let (status, by_id) = call(http.get(url(&format!("/api/targets/{ssh_id}")))).await;
    assert_eq!((status, by_id["name"].as_str()), (200, Some("home-server")));
    let (status, by_name) = call(http.get(url("/api/targets/gh-runner"))).await;
    assert_eq!(
        (status, by_name["agentType"].as_str()),
        (200, Some("copilot-cli"))
    );
    let (status, missing) = call(http.get(url("/api/targets/nope"))).await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"], "NotFound");

    // Duplicate names conflict.
    let (status, dup) = call(
        http.post(url("/api/targets"))
            .json(&local_target("local-0")),
    )
    .await;
    assert_eq!((status, dup["error"].as_str()), (409, Some("Conflict")));

    // Filters.
    let (_, list) = call(http.get(url("/api/targets?type=copilot-cli"))).await;
    assert_eq!(names(&list), vec!["gh-runner"]);
    let (_, list) = call(http.get(url("/api/targets?capability=typescript"))).await;
    assert_eq!(names(&list), vec!["home-server", "gh-runner"]);
    let (_, list) = call(http.get(url("/api/targets?boundary=corporate&mechanism=local"))).await;
    assert_eq!(list["total"], 5);
    let (_, list) = call(http.get(url("/api/targets?tag=home"))).await;
    assert_eq!(names(&list), vec!["home-server"]);
    let response = http
        .get(url("/api/targets?classification=personal"))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        response
            .headers()
            .get("x-deprecated-param")
            .and_then(|v| v.to_str().ok()),
        Some("classification (use boundary instead)")
    );
    let list: Value = response.json().await.expect("json");
    assert_eq!(
        names(&list)[..2],
        ["home-server".to_string(), "local-0".to_string()]
    );
    let (status, _) = call(http.get(url("/api/targets?status=sleeping"))).await;
    assert_eq!(status, 400);

    // Pagination: 7 targets in pages of 3, in registration order, cursors chained.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/api/targets?limit=3".to_string(),
            Some(c) => format!("/api/targets?cursor={c}"),
        };
        let (status, page) = call(http.get(url(&path))).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total"], 7);
        assert_eq!(page["count"].as_u64(), Some(names(&page).len() as u64));
        assert_eq!(page["prevCursor"].is_null(), pages == 0);
        seen.extend(names(&page));
        pages += 1;
        match page["nextCursor"].as_str() {
            Some(next) => {
                assert_eq!(page["hasMore"], true);
                cursor = Some(next.to_string());
            }
            None => {
                assert_eq!(page["hasMore"], false);
                break;
            }
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    let mut expected = vec!["home-server".to_string(), "gh-runner".to_string()];
    expected.extend((0..5).map(|i| format!("local-{i}")));
    assert_eq!(seen, expected);
    // A cursor made for other filters is refused.
    let (_, first) = call(http.get(url("/api/targets?limit=3"))).await;
    let next = first["nextCursor"].as_str().expect("cursor").to_string();
    let (status, body) =
        call(http.get(url(&format!("/api/targets?cursor={next}&type=claude-code")))).await;
    assert_eq!(status, 400, "{body}");

    // Update merges config and keeps the rest.
    let (status, updated) = call(http.put(url("/api/targets/home-server")).json(&json!({
        "description": "the box under the desk", "config": {"port": 2222}, "capabilities": ["rust"]
    })))
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["config"]["ssh"]["port"], 2222);
    assert_eq!(updated["config"]["ssh"]["host"], "127.0.0.1");
    assert_eq!(updated["capabilities"], json!(["rust"]));
    assert_eq!(updated["description"], "the box under the desk");
    assert_eq!(updated["name"], "home-server");

    // Disable / enable.
    let (status, body) =
        call(http.post(url("/api/targets/local-0/disable?reason=maintenance"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["target"]["status"], "disabled");
    assert_eq!(body["target"]["disabledReason"], "maintenance");
    let (_, list) = call(http.get(url("/api/targets?status=disabled"))).await;
    assert_eq!(names(&list), vec!["local-0"]);
    let (status, body) = call(http.post(url("/api/targets/local-0/enable"))).await;
    assert_eq!(
        (status, body["target"]["status"].as_str()),
        (200, Some("available"))
    );

    // Batch disable by ids (one unknown, one already disabled) and by filter.
    call(http.post(url("/api/targets/local-1/disable"))).await;
    let (status, batch) = call(http.post(url("/api/targets/disable-batch")).json(&json!({
        "targetIds": ["local-1", "local-2", "ghost"]
    })))
    .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["success"], json!(["local-1", "local-2"]));
    assert_eq!(batch["failed"], json!(["ghost"]));
    assert_eq!(batch["alreadyDisabled"], json!(["local-1"]));
    assert_eq!(batch["disabledTargets"], json!(["local-2"]));
    assert_eq!(batch["count"], 2);
    assert_eq!(batch["totalProcessed"], 3);
    assert!(batch["errors"]["ghost"]
        .as_str()
        .is_some_and(|m| m.contains("not found")));
    let (status, batch) = call(http.post(url("/api/targets/disable-batch")).json(&json!({
        "filter": {"mechanism": "local", "status": "available"}
    })))
    .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["disabledTargets"].as_array().map(Vec::len), Some(3));
    let (status, _) = call(
        http.post(url("/api/targets/disable-batch"))
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 400);

    // Delete; the history stays in the log.
    let (status, body) = call(http.delete(url("/api/targets/gh-runner"))).await;
    assert_eq!((status, body["success"].as_bool()), (200, Some(true)));
    let (status, _) = call(http.get(url("/api/targets/gh-runner"))).await;
    assert_eq!(status, 404);
    let (status, _) = call(http.delete(url("/api/targets/gh-runner"))).await;
    assert_eq!(status, 404);

    // The audit log shows every change, in order, with who made it.
    let (status, log) = call(http.get(url("/api/events?aggregate=target&limit=1000"))).await;
    assert_eq!(status, 200, "{log}");
    let types: Vec<&str> = log["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(
        types.iter().filter(|t| **t == "target.registered").count(),
        7
    );
    for t in [
        "target.updated",
        "target.disabled",
        "target.enabled",
        "target.removed",
    ] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    // What the API did was done by its caller; the periodic health check of the target
    // with `healthCheck.enabled` is Weft's own.
    for e in log["events"].as_array().expect("events") {
        let expected = if e["type"] == "target.health-checked" {
            "system"
        } else {
            "anonymous"
        };
        assert_eq!(e["actor"], expected, "{e}");
    }
    let (_, removed) = call(http.get(url("/api/events?type=target.removed"))).await;
    assert_eq!(removed["count"], 1);
    assert_eq!(removed["events"][0]["data"], json!({}));
    // A request's X-Request-Id becomes the correlation id of the events it causes.
    let (status, _) = call(
        http.post(url("/api/targets/local-3/enable"))
            .header("x-request-id", "req-42"),
    )
    .await;
    assert_eq!(status, 200);
    let (_, enabled) = call(http.get(url("/api/events?type=target.enabled"))).await;
    let last = enabled["events"]
        .as_array()
        .and_then(|e| e.last())
        .cloned()
        .expect("an enable event");
    assert_eq!(last["correlationId"], "req-42");
    let (_, paged) = call(http.get(url("/api/events?limit=2"))).await;
    assert_eq!(
        (paged["count"].as_u64(), paged["hasMore"].as_bool()),
        (Some(2), Some(true))
    );
    let after = paged["nextAfter"].as_u64().expect("nextAfter");
    let (_, rest) = call(http.get(url(&format!("/api/events?after={after}&limit=1000")))).await;
    assert_eq!(rest["events"][0]["sequence"].as_u64(), Some(after + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_are_separate_tenants() {
    let nats = NatsServer::start();
    let weft = Weft::start(&[
        ("NATS_URL", nats.url()),
        ("LOOMINAL_PROJECT_ID", "home".into()),
    ]);
    let http = client();
    let mut in_work = local_target("shared-name");
    in_work["projectId"] = json!("work");
    let (status, work) = call(http.post(weft.url("/api/targets")).json(&in_work)).await;
    assert_eq!(status, 201, "{work}");
    assert_eq!(work["projectId"], "work");
    // The same name is free in the default project.
    let (status, home) = call(
        http.post(weft.url("/api/targets"))
            .json(&local_target("shared-name")),
    )
    .await;
    assert_eq!(status, 201, "{home}");
    assert_eq!(home["projectId"], "home");

    let (_, list) = call(http.get(weft.url("/api/targets"))).await;
    assert_eq!(list["total"], 1);
    let (_, list) = call(http.get(weft.url("/api/targets?projectId=work"))).await;
    assert_eq!(list["targets"][0]["id"], work["id"]);
    // By name: the project asked for; by id: found in any project.
    let (_, found) = call(http.get(weft.url("/api/targets/shared-name?projectId=work"))).await;
    assert_eq!(found["id"], work["id"]);
    let (status, found) = call(http.get(weft.url(&format!(
        "/api/targets/{}",
        work["id"].as_str().unwrap_or_default()
    ))))
    .await;
    assert_eq!((status, &found["projectId"]), (200, &json!("work")));
    let (_, events) = call(http.get(weft.url("/api/events?projectId=work&aggregate=target"))).await;
    assert_eq!(events["count"], 1);
    let (status, _) = call(http.get(weft.url("/api/targets?projectId=a.b"))).await;
    assert_eq!(status, 400);
}

#[test]
fn weft_events_prints_the_log_in_the_terminal() {
    let nats = NatsServer::start();
    let weft = Weft::start(&[("NATS_URL", nats.url())]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (status, _) = call(
            client()
                .post(weft.url("/api/targets"))
                .json(&local_target("printed")),
        )
        .await;
        assert_eq!(status, 201);
    });
    let out = std::process::Command::new(common::weft_binary())
        .args(["events", "--api-url", &weft.url("")])
        .output()
        .expect("weft events runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .next()
            .is_some_and(|h| h.contains("TYPE") && h.contains("ACTOR")),
        "{text}"
    );
    assert!(
        text.contains("target.registered")
            && text.contains("anonymous")
            && text.contains("printed"),
        "{text}"
    );

    let json = std::process::Command::new(common::weft_binary())
        .args([
            "events",
            "--json",
            "--type",
            "target.registered",
            "--api-url",
            &weft.url(""),
        ])
        .output()
        .expect("weft events runs");
    let line: Value = serde_json::from_slice(
        json.stdout
            .split(|b| *b == b'\n')
            .next()
            .unwrap_or_default(),
    )
    .expect("a JSON line");
    assert_eq!(line["data"]["name"], "printed");

    let unreachable = std::process::Command::new(common::weft_binary())
        .args([
            "events",
            "--api-url",
            &format!("http://127.0.0.1:{}", common::free_port()),
        ])
        .output()
        .expect("weft events runs");
    assert!(!unreachable.status.success());
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach Weft"));
}
