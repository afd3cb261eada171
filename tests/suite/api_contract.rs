//! What the API promises its clients, tried the way real clients behave: a large body sent
//! without `Expect: 100-continue`, a wrong method, the original's lenient target body, and
//! the meaning of a target's `in-use`.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{all_events, call, client, fast_env, poll_until, submit_body, NatsServer, Weft};
use serde_json::json;

/// Writes a whole request with a body over the limit, as Python's urllib and requests do
/// (no `Expect: 100-continue`), then reads the answer.
fn post_without_waiting(port: u16, path: &str, body_bytes: usize) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.set_write_timeout(Some(Duration::from_secs(20)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {body_bytes}\r\n\r\n"
    )?;
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < body_bytes {
        let n = chunk.len().min(body_bytes - sent);
        stream.write_all(&chunk[..n])?;
        sent += n;
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if answer.is_empty() => return Err(e),
            Err(_) => break,
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_large_gets_a_readable_413_even_without_expect_continue() {
    let nats = NatsServer::start();
    let weft = Weft::start(&[("NATS_URL", nats.url())]);
    let port = weft.port;
    let answer = tokio::task::spawn_blocking(move || {
        post_without_waiting(port, "/api/work", 5 * 1024 * 1024)
    })
    .await
    .expect("joined")
    .expect("the client could send its whole body and read an answer");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("PayloadTooLarge"), "{answer}");
    // The server still serves everyone else.
    assert_eq!(weft.health_status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_names_the_allowed_ones() {
    let nats = NatsServer::start();
    let weft = Weft::start(&[("NATS_URL", nats.url())]);
    let http = client();
    for (method, path, allowed) in [
        (reqwest::Method::PATCH, "/api/targets/x", "DELETE, GET, PUT"),
        (reqwest::Method::DELETE, "/api/work", "GET, POST"),
        (reqwest::Method::POST, "/api/stats", "GET"),
        (reqwest::Method::PUT, "/metrics", "GET"),
    ] {
        let response = http
            .request(method.clone(), weft.url(path))
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(
            response
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok()),
            Some(allowed),
            "{method} {path}"
        );
        let body: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(body["error"], "MethodNotAllowed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_originals_flat_target_body_is_accepted_and_stored_nested() {
    let nats = NatsServer::start();
    let weft = Weft::start(&[("NATS_URL", nats.url())]);
    let http = client();
    // What the original's scripts send: no `config`, settings at the top level,
    // `classifications` for boundaries, `enabled: false` to register it disabled.
    let (status, target) = call(http.post(weft.url("/api/targets")).json(&json!({
        "name": "legacy", "agentType": "claude-code", "capabilities": ["rust"],
        "classifications": ["personal"], "mechanism": "local", "command": "echo test",
        "enabled": false
    })))
    .await;
    assert_eq!(status, 201, "{target}");
    assert_eq!(target["config"]["local"]["command"], "echo test");
    assert_eq!(target["boundaries"], json!(["personal"]));
    assert_eq!(target["status"], "disabled");
    // Registered and disabled in one commit.
    let events = all_events(&weft).await;
    let seqs: Vec<(u64, &str)> = events
        .iter()
        .filter(|e| e["aggregateId"] == target["id"])
        .map(|e| {
            (
                e["sequence"].as_u64().unwrap_or(0),
                e["type"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(seqs.len(), 2);
    assert_eq!(
        (seqs[0].1, seqs[1].1),
        ("target.registered", "target.disabled")
    );
    assert_eq!(seqs[0].0 + 1, seqs[1].0);
    // Genuinely unknown fields are still refused, in either layout.
    for body in [
        json!({"name": "x", "agentType": "claude-code", "capabilities": ["rust"],
               "mechanism": "local", "command": "echo", "colour": "blue"}),
        json!({"name": "y", "agentType": "claude-code", "capabilities": ["rust"],
               "mechanism": "local", "config": {"command": "echo"}, "command": "echo"}),
    ] {
        let (status, refused) = call(http.post(weft.url("/api/targets")).json(&body)).await;
        assert_eq!(status, 400, "{refused}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_use_means_an_agent_is_there_and_spin_ups_in_flight_are_counted_apart() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let http = client();
    // A target whose agent never registers: its spin-up stays in flight.
    let (status, _) = call(http.post(weft.url("/api/targets")).json(&json!({
        "name": "slow", "agentType": "claude-code", "capabilities": ["rust"],
        "boundaries": ["personal"], "mechanism": "local",
        "config": {"command": "exec sleep 30", "detached": false}
    })))
    .await;
    assert_eq!(status, 201);
    call(http.post(weft.url("/api/work")).json(&submit_body(
        "needs an agent",
        "rust",
        "personal",
        5,
    )))
    .await;
    let target = poll_until(&weft, "/api/targets/slow", Duration::from_secs(10), |t| {
        t["spinUpsInFlight"] == 1
    })
    .await;
    assert_eq!(
        target["status"], "available",
        "no agent is there yet: {target}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_project_in_stats_says_when_it_was_last_active() {
    let nats = NatsServer::start();
    let weft = Weft::start(&[("NATS_URL", nats.url())]);
    let http = client();
    // A project with a target only: no agents, no work.
    let mut target = common::local_target("only-a-target");
    target["projectId"] = json!("quiet");
    let (status, _) = call(http.post(weft.url("/api/targets")).json(&target)).await;
    assert_eq!(status, 201);
    let (_, stats) = call(http.get(weft.url("/api/stats"))).await;
    let last = stats["byProject"]["quiet"]["lastActivity"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(last.ends_with('Z') && last.len() >= 20, "{stats}");
}
