//! Agents authenticate on NATS: the embedded nats-server lets in Weft and the agents Weft
//! issued credentials to, each confined to its own subjects; revoking disconnects; a
//! spun-up agent joins on its own. And the sample `deploy/nats-server.conf` for `NATS_URL`,
//! run as is.

use std::time::Duration;

use crate::common;
use common::{call, client, free_port, submit_body, AgentProcess, NatsServer, Weft};
use serde_json::{json, Value};

const ADMIN: &str = "admin-of-the-nats-test";

struct Embedded {
    weft: Weft,
    nats_url: String,
    _data: tempfile::TempDir,
}

fn start_embedded(extra: &[(&str, String)]) -> Embedded {
    let data = tempfile::tempdir().expect("dir");
    let port = free_port();
    let mut env = vec![
        ("WEFT_DATA_DIR", data.path().display().to_string()),
        ("WEFT_NATS_PORT", port.to_string()),
        ("API_TOKENS", ADMIN.to_string()),
        ("WEFT_HEARTBEAT_INTERVAL_MS", "300".into()),
        ("WEFT_AGENT_TIMEOUT_MS", "2000".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    Embedded {
        weft: Weft::start(&env),
        nats_url: format!("nats://127.0.0.1:{port}"),
        _data: data,
    }
}

async fn admin(
    weft: &Weft,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client()
        .request(method, weft.url(path))
        .header("authorization", format!("Bearer {ADMIN}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    call(request).await
}

/// A client with an agent's credentials, and every error the server sends it.
async fn as_agent(
    url: &str,
    seed: &str,
    agent_id: &str,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (sender, events) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .nkey(seed.to_string())
        .custom_inbox_prefix(weft::protocol::inbox_prefix(agent_id))
        .event_callback(move |event| {
            let sender = sender.clone();
            async move {
                let _ = sender.send(event.to_string());
            }
        })
        .connect(url)
        .await
        .expect("an agent with credentials connects");
    (client, events)
}

async fn next_matching(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    needle: &str,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) if event.to_lowercase().contains(needle) => return event,
            Ok(Some(_)) => continue,
            _ => panic!("no client event with {needle:?} within 10 s"),
        }
    }
}

fn register(agent_id: &str) -> weft::protocol::RegisterRequest {
    common::registration(agent_id, "rust", "personal")
}

#[tokio::test(flavor = "multi_thread")]
async fn only_weft_and_its_agents_get_in_and_each_agent_only_to_its_own_subjects() {
    let fleet = start_embedded(&[]);
    let weft = &fleet.weft;

    // Without credentials: refused.
    let plain = async_nats::connect(&fleet.nats_url).await;
    assert!(plain.is_err(), "a client without credentials was let in");

    // An admin issues credentials for agent a1; the seed is answered once.
    let (status, issued) = admin(
        weft,
        reqwest::Method::POST,
        "/api/credentials",
        Some(json!({"agentId": "a1"})),
    )
    .await;
    assert_eq!(status, 201, "{issued}");
    let seed = issued["seed"].as_str().expect("seed").to_string();
    let credential = issued["credential"]["id"].as_str().expect("id").to_string();
    let (_, listed) = admin(weft, reqwest::Method::GET, "/api/credentials", None).await;
    assert!(listed.to_string().contains("a1") && !listed.to_string().contains(&seed));

    // The gate is reloaded when the credential is recorded: connect when it is.
    let mut connected = None;
    for _ in 0..100 {
        let attempt = async_nats::ConnectOptions::new()
            .nkey(seed.clone())
            .custom_inbox_prefix(weft::protocol::inbox_prefix("a1"))
            .connect(&fleet.nats_url)
            .await;
        if attempt.is_ok() {
            connected = Some(());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        connected.is_some(),
        "the issued credentials were never let in"
    );
    let (agent, mut errors) = as_agent(&fleet.nats_url, &seed, "a1").await;

    // Its own registration works...
    let reply: weft::protocol::Reply<Value> = weft::protocol::call(
        &agent,
        "default",
        weft::protocol::REGISTER,
        "a1",
        &register("a1"),
        Duration::from_secs(10),
    )
    .await
    .expect("an answer");
    assert!(reply.ok, "{:?}", reply.error);
    // ...speaking for another agent on its own subject is refused by Weft...
    let reply: weft::protocol::Reply<Value> = weft::protocol::call(
        &agent,
        "default",
        weft::protocol::REGISTER,
        "a1",
        &register("a2"),
        Duration::from_secs(10),
    )
    .await
    .expect("an answer");
    assert!(!reply.ok && reply.error.unwrap_or_default().contains("a2"));
    // ...and on another agent's subject it is refused by nats-server.
    let other = weft::protocol::call::<_, Value>(
        &agent,
        "default",
        weft::protocol::REGISTER,
        "a2",
        &register("a2"),
        Duration::from_secs(3),
    )
    .await;
    assert!(other.is_err(), "{other:?}");
    next_matching(&mut errors, "permissions violation").await;

    // The log: nothing but Weft writes to it.
    agent
        .publish("weft.ev.default.work.forged", "forged".into())
        .await
        .expect("queued");
    agent.flush().await.expect("flushed");
    next_matching(&mut errors, "permissions violation").await;
    // Other agents' pushes and other projects are out of reach too.
    let _ = agent.subscribe("weft.agent.default.a2.>").await;
    next_matching(&mut errors, "permissions violation").await;
    let _ = agent.subscribe("weft.agent.other.a1.>").await;
    next_matching(&mut errors, "permissions violation").await;
    // Had the forged message been stored, a read of its subject would pass its sequence
    // (it does not decode, so it is skipped, but the page moves past it).
    let (_, forged_page) = admin(
        weft,
        reqwest::Method::GET,
        "/api/events?projectId=default&aggregate=work&aggregateId=forged",
        None,
    )
    .await;
    assert_eq!(
        forged_page["nextAfter"], 0,
        "the forged event is in the log: {forged_page}"
    );

    // A real agent with the credentials does work.
    let agent_process = AgentProcess::start_on(
        "claude-code",
        "rust",
        "personal",
        1,
        "echo done: {description}",
        &[
            ("NATS_URL", fleet.nats_url.as_str()),
            ("WEFT_AGENT_ID", "a1"),
            ("WEFT_AGENT_CREDENTIALS", seed.as_str()),
        ],
    );
    let (status, item) = admin(
        weft,
        reqwest::Method::POST,
        "/api/work",
        Some(submit_body("with credentials", "rust", "personal", 5)),
    )
    .await;
    assert_eq!(status, 201, "{item}");
    let id = item["id"].as_str().expect("id").to_string();
    let path = format!("/api/work/{id}");
    let done = poll_admin(weft, &path, |w| w["status"] == "completed").await;
    assert_eq!(done["assignedTo"], "a1", "{done}");

    // Revoked: disconnected, and not let back in.
    let (status, revoked) = admin(
        weft,
        reqwest::Method::DELETE,
        &format!("/api/credentials/{credential}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revokedAt"].is_string());
    next_matching(&mut errors, "disconnected").await;
    drop(agent_process);
    let again = tokio::time::timeout(
        Duration::from_secs(10),
        async_nats::ConnectOptions::new()
            .nkey(seed.clone())
            .connect(&fleet.nats_url),
    )
    .await;
    assert!(
        matches!(again, Ok(Err(_))),
        "revoked credentials were let in again"
    );
    // The seed is in no event and no answer after its creation.
    let (_, log) = admin(weft, reqwest::Method::GET, "/api/events?limit=1000", None).await;
    assert!(!log.to_string().contains(&seed) && !weft.log_text().contains(&seed));
}

async fn poll_admin(weft: &Weft, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..300 {
        let (status, answer) = admin(weft, reqwest::Method::GET, path, None).await;
        if status == 200 && done(&answer) {
            return answer;
        }
        last = answer;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never got there: {last}\n{}", weft.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spun_up_agent_is_given_credentials_and_joins_on_its_own() {
    let fleet = start_embedded(&[]);
    // No shell syntax in the command, so the agent itself is Weft's child and goes with it
    // (through a shell, only the shell would get the kernel's SIGTERM).
    let command = format!("{} agent", common::weft_binary().display());
    let target = json!({
        "name": "laptop", "agentType": "claude-code", "capabilities": ["rust"], "boundaries": ["personal"],
        "mechanism": "local", "maxAgents": 1,
        "config": {"command": command, "detached": false,
                   "env": {"LOG_LEVEL": "warn", "AGENT_COMMAND": "echo done: {description}"}}
    });
    let (status, answer) = admin(
        &fleet.weft,
        reqwest::Method::POST,
        "/api/targets",
        Some(target),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let (status, item) = admin(
        &fleet.weft,
        reqwest::Method::POST,
        "/api/work",
        Some(submit_body("spun up", "rust", "personal", 5)),
    )
    .await;
    assert_eq!(status, 201, "{item}");
    let path = format!("/api/work/{}", item["id"].as_str().expect("id"));
    let done = poll_admin(&fleet.weft, &path, |w| w["status"] == "completed").await;
    let agent = done["assignedTo"].as_str().expect("agent").to_string();
    let (_, credentials) = admin(&fleet.weft, reqwest::Method::GET, "/api/credentials", None).await;
    let issued = credentials["credentials"].as_array().expect("list");
    assert!(
        issued
            .iter()
            .any(|c| c["agentId"] == agent.as_str() && c["spinUpId"] == agent.as_str()),
        "the spun-up agent {agent} used credentials issued for its spin-up: {credentials}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_nats_url_no_credentials_are_issued() {
    let nats = NatsServer::start();
    let weft = Weft::start(&[("NATS_URL", nats.url()), ("API_TOKENS", ADMIN.into())]);
    let (status, answer) = admin(
        &weft,
        reqwest::Method::POST,
        "/api/credentials",
        Some(json!({"agentId": "a1"})),
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["message"]
        .as_str()
        .is_some_and(|m| m.contains("deploy/nats-server.conf")));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sample_server_config_lets_weft_and_its_agent_work_and_nothing_else() {
    let sample = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/nats-server.conf"
    ))
    .expect("deploy/nats-server.conf");
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let config = sample
        .replace("listen: 0.0.0.0:4222", &format!("listen: 127.0.0.1:{port}"))
        .replace("/var/lib/nats", &dir.path().display().to_string());
    assert_ne!(
        config, sample,
        "the sample's listen and store_dir lines are where the test expects"
    );
    let path = dir.path().join("nats-server.conf");
    std::fs::write(&path, config).expect("config");
    let mut server = std::process::Command::new(
        std::env::var("WEFT_NATS_SERVER").unwrap_or_else(|_| "nats-server".into()),
    )
    .arg("-c")
    .arg(&path)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("nats-server starts");
    let url = format!("nats://127.0.0.1:{port}");
    common::wait_until("nats-server listens", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let weft = Weft::start(&[
        ("NATS_URL", url.clone()),
        ("NATS_USER", "weft".into()),
        ("NATS_PASS", "change-me-weft".into()),
        ("API_TOKENS", ADMIN.into()),
        ("WEFT_HEARTBEAT_INTERVAL_MS", "300".into()),
    ]);
    let agent = AgentProcess::start_on(
        "claude-code",
        "rust",
        "personal",
        1,
        "echo done: {description}",
        &[
            ("NATS_URL", url.as_str()),
            ("NATS_USER", "agent-1"),
            ("NATS_PASS", "change-me-agent-1"),
            ("WEFT_AGENT_ID", "agent-1"),
        ],
    );
    let (status, item) = admin(
        &weft,
        reqwest::Method::POST,
        "/api/work",
        Some(submit_body("on the sample config", "rust", "personal", 5)),
    )
    .await;
    assert_eq!(status, 201, "{item}");
    let path = format!("/api/work/{}", item["id"].as_str().expect("id"));
    let done = poll_admin(&weft, &path, |w| w["status"] == "completed").await;
    assert_eq!(done["assignedTo"], "agent-1");
    // The agent's user cannot write the log.
    let (sender, mut errors) = tokio::sync::mpsc::unbounded_channel();
    let user = async_nats::ConnectOptions::with_user_and_password(
        "agent-1".into(),
        "change-me-agent-1".into(),
    )
    .event_callback(move |event| {
        let sender = sender.clone();
        async move {
            let _ = sender.send(event.to_string());
        }
    })
    .connect(&url)
    .await
    .expect("agent-1 connects");
    user.publish("weft.ev.default.work.forged", "x".into())
        .await
        .expect("queued");
    user.flush().await.expect("flushed");
    next_matching(&mut errors, "permissions violation").await;
    drop(agent);
    drop(weft);
    let _ = server.kill();
    let _ = server.wait();
}
