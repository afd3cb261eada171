//! Who may do what, against a real Weft: every operation × role × a project in and out of
//! the token's scope answers what it should; nothing of a project outside the scope shows
//! in lists, stats, events, the WebSocket feed or `/metrics`; tokens are revoked for good;
//! rate limits answer 429 with `Retry-After` while other tokens are served; HTTPS.

use std::time::Duration;

use crate::common;
use common::{call, client, NatsServer, Weft};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};

const ADMIN: &str = "admin-secret-of-the-test";

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

/// What an operation needs made first, in the project it is asked about.
#[derive(Clone, Copy, Debug)]
enum Needs {
    Nothing,
    Work,
    CancelledWork,
    Agent,
    Target,
    Token,
}

struct Op {
    method: &'static str,
    /// `{id}` and `{p}` are filled in per cell.
    path: &'static str,
    needs: Needs,
    /// The body, with `{p}` and `{id}` filled in as strings.
    body: Option<Value>,
    role: &'static str,
    ok: u16,
}

fn op(method: &'static str, path: &'static str, needs: Needs, role: &'static str, ok: u16) -> Op {
    Op {
        method,
        path,
        needs,
        body: None,
        role,
        ok,
    }
}

fn with_body(mut op: Op, body: Value) -> Op {
    op.body = Some(body);
    op
}

fn operations() -> Vec<Op> {
    use Needs::*;
    let work = json!({"description": "d", "capability": "rust", "boundary": "open-source", "projectId": "{p}"});
    vec![
        op("GET", "/api/work?projectId={p}", Nothing, "viewer", 200),
        op("GET", "/api/work/{id}", Work, "viewer", 200),
        op("GET", "/api/work/{id}/history", Work, "viewer", 200),
        op("GET", "/api/work/{id}/routing", Work, "viewer", 200),
        op("GET", "/api/work/{id}/output", Work, "viewer", 200),
        with_body(
            op("POST", "/api/work/explain", Nothing, "operator", 200),
            json!({"description": "d", "capability": "rust", "boundary": "open-source", "projectId": "{p}"}),
        ),
        with_body(op("POST", "/api/work", Nothing, "operator", 201), work),
        op("POST", "/api/work/{id}/cancel", Work, "operator", 200),
        // A cancelled item cannot be retried: the 409 says role and scope let it through.
        op(
            "POST",
            "/api/work/{id}/retry",
            CancelledWork,
            "operator",
            409,
        ),
        with_body(
            op("POST", "/api/work/cancel-batch", Work, "operator", 200),
            json!({"projectId": "{p}", "workItemIds": ["{id}"]}),
        ),
        op("GET", "/api/agents?projectId={p}", Nothing, "viewer", 200),
        op("GET", "/api/agents/{id}", Agent, "viewer", 200),
        op("GET", "/api/agents/{id}/history", Agent, "viewer", 200),
        op("POST", "/api/agents/{id}/shutdown", Agent, "operator", 200),
        op("POST", "/api/agents/{id}/resume", Agent, "operator", 200),
        with_body(
            op("POST", "/api/agents/shutdown-batch", Agent, "operator", 200),
            json!({"projectId": "{p}", "agentGuids": ["{id}"]}),
        ),
        op("GET", "/api/targets?projectId={p}", Nothing, "viewer", 200),
        with_body(
            op("POST", "/api/targets?projectId={p}", Nothing, "admin", 201),
            json!({"name": "t-{id}", "agentType": "claude-code", "capabilities": ["fortran"], "mechanism": "webhook",
                   "config": {"mechanism": "webhook", "url": "http://127.0.0.1:9/hook"}}),
        ),
        op("GET", "/api/targets/{id}", Target, "viewer", 200),
        with_body(
            op("PUT", "/api/targets/{id}", Target, "admin", 200),
            json!({"description": "changed"}),
        ),
        op("DELETE", "/api/targets/{id}", Target, "admin", 200),
        op("GET", "/api/targets/{id}/history", Target, "viewer", 200),
        op("POST", "/api/targets/{id}/enable", Target, "admin", 200),
        op("POST", "/api/targets/{id}/disable", Target, "admin", 200),
        op("POST", "/api/targets/{id}/test", Target, "admin", 200),
        op("POST", "/api/targets/{id}/spin-up", Target, "admin", 200),
        with_body(
            op("POST", "/api/targets/disable-batch", Target, "admin", 200),
            json!({"projectId": "{p}", "targetIds": ["{id}"]}),
        ),
        op("GET", "/api/events?projectId={p}", Nothing, "viewer", 200),
        op("GET", "/api/channels?projectId={p}", Nothing, "viewer", 200),
        op("GET", "/api/usage?projectId={p}", Nothing, "viewer", 200),
        op("GET", "/api/projects/{p}/stats", Nothing, "viewer", 200),
        op("GET", "/api/projects/{p}/budget", Nothing, "viewer", 200),
        with_body(
            op("PUT", "/api/projects/{p}/budget", Nothing, "admin", 200),
            json!({"maxCostUsdPerDay": 10.0}),
        ),
        with_body(
            op("POST", "/api/tokens", Nothing, "admin", 201),
            json!({"name": "made in a cell", "role": "viewer", "projects": ["{p}"]}),
        ),
        op("DELETE", "/api/tokens/{id}", Token, "admin", 200),
    ]
}

fn fill(text: &str, project: &str, id: &str) -> String {
    text.replace("{p}", project).replace("{id}", id)
}

fn fill_value(value: &Value, project: &str, id: &str) -> Value {
    match value {
        Value::String(s) => Value::String(fill(s, project, id)),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| fill_value(v, project, id)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), fill_value(v, project, id)))
                .collect(),
        ),
        other => other.clone(),
    }
}

struct Fleet {
    weft: Weft,
    http: reqwest::Client,
    nats: async_nats::Client,
    made: std::sync::atomic::AtomicU32,
    _server: NatsServer,
}

impl Fleet {
    async fn start(extra: &[(&str, String)]) -> Fleet {
        let server = NatsServer::start();
        let mut env = vec![
            ("NATS_URL", server.url()),
            ("API_TOKENS", ADMIN.to_string()),
            ("WEFT_AGENT_TIMEOUT_MS", "600000".into()),
            ("WEFT_MECHANISMS", "webhook".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        let weft = Weft::start(&env);
        let nats = async_nats::connect(server.url()).await.expect("nats");
        Fleet {
            weft,
            http: client(),
            nats,
            made: Default::default(),
            _server: server,
        }
    }

    async fn as_(
        &self,
        secret: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .http
            .request(method, self.weft.url(path))
            .header("authorization", bearer(secret));
        if let Some(body) = body {
            request = request.json(body);
        }
        call(request).await
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.as_(ADMIN, method, path, body.as_ref()).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {answer}"
        );
        answer
    }

    async fn token(&self, role: &str, projects: Option<&[&str]>) -> (String, String) {
        let mut body = json!({"name": format!("{role} token"), "role": role});
        if let Some(p) = projects {
            body["projects"] = json!(p);
        }
        let created = self.admin("POST", "/api/tokens", Some(body)).await;
        let secret = created["secret"].as_str().expect("secret").to_string();
        (
            created["token"]["id"].as_str().expect("id").to_string(),
            secret,
        )
    }

    fn next(&self) -> u32 {
        self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    async fn make(&self, needs: Needs, project: &str) -> String {
        let n = self.next();
        match needs {
            Needs::Nothing => format!("n{n}"),
            Needs::Work | Needs::CancelledWork => {
                let body = json!({"description": format!("item {n}"), "capability": "rust",
                                  "boundary": "open-source", "projectId": project});
                let id = self.admin("POST", "/api/work", Some(body)).await["id"]
                    .as_str()
                    .expect("id")
                    .to_string();
                if matches!(needs, Needs::CancelledWork) {
                    self.admin("POST", &format!("/api/work/{id}/cancel"), None)
                        .await;
                }
                id
            }
            Needs::Agent => {
                let id = format!("agent-{project}-{n}");
                common::register(
                    &self.nats,
                    project,
                    &common::registration(&id, "python", "open-source"),
                )
                .await;
                id
            }
            Needs::Target => {
                let body = json!({"name": format!("target-{n}"), "agentType": "claude-code", "capabilities": ["fortran"],
                    "mechanism": "webhook", "config": {"mechanism": "webhook", "url": "http://127.0.0.1:9/hook"}});
                self.admin(
                    "POST",
                    &format!("/api/targets?projectId={project}"),
                    Some(body),
                )
                .await["id"]
                    .as_str()
                    .expect("id")
                    .to_string()
            }
            Needs::Token => self.token("viewer", Some(&[project])).await.0,
        }
    }
}

fn rank(role: &str) -> u8 {
    match role {
        "viewer" => 0,
        "operator" => 1,
        _ => 2,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_operation_answers_by_role_and_scope() {
    let fleet = Fleet::start(&[("WEFT_RATE_LIMIT_PER_SECOND", "0".into())]).await;
    let mut tokens = Vec::new();
    for role in ["viewer", "operator", "admin"] {
        tokens.push((role, fleet.token(role, Some(&["alpha"])).await.1));
    }
    let mut wrong = Vec::new();
    let mut cells = 0;
    for op in operations() {
        for (role, secret) in &tokens {
            for (project, in_scope) in [("alpha", true), ("beta", false)] {
                let id = fleet.make(op.needs, project).await;
                let path = fill(op.path, project, &id);
                let body = op.body.as_ref().map(|b| fill_value(b, project, &id));
                let expected = if rank(role) < rank(op.role) {
                    403
                } else if !in_scope && op.path == "/api/tokens" {
                    // Creating one for a project the creator does not see is refused as such.
                    403
                } else if !in_scope {
                    404
                } else {
                    op.ok
                };
                let (status, answer) = fleet.as_(secret, op.method, &path, body.as_ref()).await;
                cells += 1;
                if status != expected {
                    wrong.push(format!(
                        "{role} {} {path} ({project}): {status}, expected {expected}: {answer}",
                        op.method
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(cells, operations().len() * 6);

    // Without a token, or with a wrong one: 401 everywhere but the open paths.
    for path in ["/api/work", "/api/stats", "/metrics", "/api/tokens"] {
        let (status, _) = call(fleet.http.get(fleet.weft.url(path))).await;
        assert_eq!(status, 401, "{path}");
        let (status, _) = fleet.as_("weft_not-a-token", "GET", path, None).await;
        assert_eq!(status, 401, "{path}");
    }
    let (status, _) = call(fleet.http.get(fleet.weft.url("/health"))).await;
    assert_eq!(status, 200);

    // Nothing of beta in what a scoped token lists, counts or reads.
    let viewer = &tokens[0].1;
    let listed = [
        "/api/work",
        "/api/agents",
        "/api/targets",
        "/api/events?limit=1000",
        "/api/stats",
        "/api/stats/projects",
        "/api/usage?groupBy=project",
        "/api/state",
        "/api/channels",
    ];
    for path in listed {
        let (status, answer) = fleet.as_(viewer, "GET", path, None).await;
        assert_eq!(status, 200, "{path}: {answer}");
        let text = answer.to_string();
        assert!(!text.contains("beta"), "{path} shows beta: {text}");
        assert!(
            !text.contains("_weft"),
            "{path} shows Weft's own records: {text}"
        );
    }
    let (_, events) = fleet
        .as_(viewer, "GET", "/api/events?limit=1000", None)
        .await;
    assert!(
        events["events"].as_array().is_some_and(|e| !e.is_empty()),
        "alpha's events are listed: {events}"
    );
    let metrics = fleet
        .http
        .get(fleet.weft.url("/metrics"))
        .header("authorization", bearer(viewer))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("project=\"alpha\""), "{metrics}");
    assert!(
        !metrics.contains("beta") && !metrics.contains("_weft"),
        "{metrics}"
    );

    // Every event of a request names its token as the actor.
    let (operator_id, operator) = fleet.token("operator", Some(&["alpha"])).await;
    let body = json!({"description": "by operator", "capability": "rust", "boundary": "open-source", "projectId": "alpha"});
    let (status, item) = fleet.as_(&operator, "POST", "/api/work", Some(&body)).await;
    assert_eq!(status, 201, "{item}");
    let id = item["id"].as_str().expect("id");
    let (_, history) = fleet
        .as_(&operator, "GET", &format!("/api/work/{id}/history"), None)
        .await;
    assert_eq!(history["events"][0]["actor"], operator_id, "{history}");

    // No secret anywhere in the log or in what the API answers afterwards: every event
    // (as an admin of every project reads them) and every list.
    let mut secrets: Vec<String> = tokens.iter().map(|(_, s)| s.clone()).collect();
    secrets.extend([ADMIN.to_string(), operator]);
    let mut answers = Vec::new();
    let mut after = 0;
    for _ in 0..100 {
        let page = fleet
            .admin(
                "GET",
                &format!("/api/events?after={after}&limit=1000"),
                None,
            )
            .await;
        answers.push(page.to_string());
        after = page["nextAfter"].as_u64().unwrap_or(after);
        if page["hasMore"] != true {
            break;
        }
    }
    for path in listed.iter().chain(&["/api/tokens", "/api/state"]) {
        answers.push(fleet.admin("GET", path, None).await.to_string());
    }
    answers.push(fleet.weft.log_text());
    for secret in &secrets {
        for answer in &answers {
            assert!(
                !answer.contains(secret.as_str()),
                "a secret leaked: {answer}"
            );
        }
    }
    assert!(
        answers[0].contains("token.created"),
        "the scan read the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_and_expired_tokens_are_refused_also_after_a_restart() {
    let mut fleet = Fleet::start(&[]).await;
    let (id, secret) = fleet.token("viewer", None).await;
    let (status, _) = fleet.as_(&secret, "GET", "/api/work", None).await;
    assert_eq!(status, 200);
    let (_, listed) = fleet.as_(ADMIN, "GET", "/api/tokens", None).await;
    let text = listed.to_string();
    assert!(text.contains(&id) && !text.contains(&secret), "{text}");
    assert!(!text.contains("hash"), "no digest either: {text}");
    let revoked = fleet
        .admin("DELETE", &format!("/api/tokens/{id}"), None)
        .await;
    assert_eq!(revoked["status"], "revoked", "{revoked}");
    let (status, _) = fleet.as_(&secret, "GET", "/api/work", None).await;
    assert_eq!(status, 401);
    let expires = json!({"name": "soon", "role": "viewer", "expiresAt": "2000-01-01T00:00:00Z"});
    let (status, answer) = fleet
        .as_(ADMIN, "POST", "/api/tokens", Some(&expires))
        .await;
    assert_eq!(status, 400, "{answer}");
    let bad = json!({"name": "x", "role": "root"});
    let (status, _) = fleet.as_(ADMIN, "POST", "/api/tokens", Some(&bad)).await;
    assert_eq!(status, 400);

    // The log remembers: after a restart the token is still revoked.
    fleet.weft.terminate();
    let env = [
        ("NATS_URL", fleet._server.url()),
        ("API_TOKENS", ADMIN.to_string()),
    ];
    fleet.weft = Weft::start(&env);
    let (status, _) = fleet.as_(&secret, "GET", "/api/work", None).await;
    assert_eq!(status, 401);
    let events = fleet
        .as_(ADMIN, "GET", "/api/events?projectId=_weft&limit=1000", None)
        .await
        .1;
    let types: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(
        types.contains(&"token.created") && types.contains(&"token.revoked"),
        "{types:?}"
    );
    assert!(!events.to_string().contains(&secret));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_api_tokens_the_api_is_open_and_creates_no_tokens() {
    let server = NatsServer::start();
    let weft = Weft::start(&[("NATS_URL", server.url())]);
    let body = json!({"name": "x", "role": "viewer"});
    let (status, answer) = call(client().post(weft.url("/api/tokens")).json(&body)).await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["message"]
        .as_str()
        .is_some_and(|m| m.contains("API_TOKENS")));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_feed_shows_only_the_token_s_projects() {
    let fleet = Fleet::start(&[]).await;
    let (_, viewer) = fleet.token("viewer", Some(&["alpha"])).await;
    let url = format!("ws://127.0.0.1:{}/api/ws?token={viewer}", fleet.weft.port);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    let send = |v: Value| tokio_tungstenite::tungstenite::Message::Text(v.to_string().into());
    socket
        .send(send(
            json!({"type": "subscribe", "topic": "work", "filter": {"projectId": "beta"}}),
        ))
        .await
        .expect("send");
    socket
        .send(send(json!({"type": "subscribe", "topic": "work"})))
        .await
        .expect("send");
    for project in ["beta", "alpha"] {
        fleet.make(Needs::Work, project).await;
    }
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.iter().any(|m: &Value| m["type"] == "event") {
        let next = tokio::time::timeout_at(deadline, socket.next()).await;
        let Ok(Some(Ok(message))) = next else {
            panic!("no event within 10 s; got {seen:?}")
        };
        if let Ok(text) = message.to_text() {
            seen.push(serde_json::from_str(text).unwrap_or(Value::Null));
        }
    }
    let text = serde_json::to_string(&seen).expect("json");
    assert!(text.contains("Project beta not found"), "{text}");
    let events: Vec<&Value> = seen.iter().filter(|m| m["type"] == "event").collect();
    assert!(events.iter().all(|e| e["projectId"] == "alpha"), "{text}");
    // A socket without a token is refused before it upgrades.
    let url = format!("ws://127.0.0.1:{}/api/ws", fleet.weft.port);
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_over_its_rate_gets_429_and_others_are_still_served() {
    let fleet = Fleet::start(&[
        ("WEFT_RATE_LIMIT_PER_SECOND", "1".into()),
        ("WEFT_RATE_LIMIT_BURST", "5".into()),
    ])
    .await;
    let (_, runaway) = fleet.token("viewer", None).await;
    let (_, other) = fleet.token("viewer", None).await;
    let mut limited = None;
    for _ in 0..50 {
        let response = fleet
            .http
            .get(fleet.weft.url("/api/work"))
            .header("authorization", bearer(&runaway))
            .send()
            .await
            .expect("request");
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.expect("the runaway token was limited within 50 requests");
    let retry_after: u64 = limited
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1);
    let body: Value = limited.json().await.expect("json");
    assert_eq!(body["error"], "TooManyRequests");
    let (status, _) = fleet.as_(&other, "GET", "/api/work", None).await;
    assert_eq!(status, 200, "another token is served meanwhile");
    for _ in 0..20 {
        let (status, _) = fleet.as_(ADMIN, "GET", "/api/work", None).await;
        assert_eq!(status, 200, "API_TOKENS are not limited by default");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_certificate_the_api_speaks_https_only() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("certificate");
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("key");
    let server = NatsServer::start();
    let port = common::free_port();
    let log = dir.path().join("weft.log");
    let mut child = std::process::Command::new(common::weft_binary())
        .arg("serve")
        .env_remove("API_TOKENS")
        .env("NATS_URL", server.url())
        .env("API_HOST", "127.0.0.1")
        .env("API_PORT", port.to_string())
        .env("API_TLS_CERT", &cert)
        .env("API_TLS_KEY", &key)
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("weft starts");
    weft::mechanism::install_crypto_provider();
    let pinned = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).expect("pem");
    let https = reqwest::Client::builder()
        .add_root_certificate(pinned)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let url = format!("https://127.0.0.1:{port}/health");
    let mut status = None;
    for _ in 0..200 {
        if let Ok(response) = https.get(&url).send().await {
            status = Some(response.status().as_u16());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let plain = client()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        status,
        Some(200),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(plain.is_err(), "plain HTTP is not answered: {plain:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn shuttle_creates_lists_and_revokes_tokens() {
    let fleet = Fleet::start(&[]).await;
    let home = tempfile::tempdir().expect("home");
    let shuttle = |secret: &str, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shuttle"))
            .args(args)
            .env("HOME", home.path())
            .env("WEFT_API_URL", fleet.weft.url(""))
            .env("WEFT_API_TOKEN", secret)
            .output()
            .expect("shuttle runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (
            out.status.success(),
            text,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, text, err) = shuttle(
        ADMIN,
        &[
            "tokens",
            "create",
            "ci",
            "--role",
            "operator",
            "--projects",
            "alpha",
            "--json",
        ],
    );
    assert!(ok, "{text}{err}");
    let created: Value = serde_json::from_str(&text).expect("json");
    let (id, secret) = (
        created["token"]["id"].as_str().expect("id").to_string(),
        created["secret"].as_str().expect("secret").to_string(),
    );
    let (ok, table, _) = shuttle(ADMIN, &["tokens", "list"]);
    assert!(
        ok && table.contains(&id) && table.contains("operator") && table.contains("alpha"),
        "{table}"
    );
    assert!(!table.contains(&secret), "{table}");
    let (ok, _, err) = shuttle(&secret, &["tokens", "list"]);
    assert!(
        !ok && err.contains("admin"),
        "an operator may not list tokens: {err}"
    );
    let (ok, text, err) = shuttle(ADMIN, &["tokens", "revoke", &id]);
    assert!(ok && text.contains("revoked"), "{text}{err}");
    let (ok, _, err) = shuttle(&secret, &["work", "list"]);
    assert!(!ok, "a revoked token is refused: {err}");
}
