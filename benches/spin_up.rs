//! Time from "no agent can take this item" to the mechanism being called: items are
//! submitted one at a time with no agent anywhere, and a webhook target's stand-in
//! server (on 127.0.0.1, in this process) notes when each call arrives.
//!
//!     cargo bench --bench spin_up            # 300 items
//!     BENCH_ITEMS=1000 cargo bench --bench spin_up

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Arrivals = Arc<Mutex<HashMap<String, tokio::sync::oneshot::Sender<Instant>>>>;

#[tokio::main]
async fn main() {
    let items: usize = std::env::var("BENCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    weft::mechanism::install_crypto_provider();
    let server = support::nats_server("default");
    let arrivals: Arrivals = Arc::default();
    let hook_port = support::free_port();
    let waiting = arrivals.clone();
    let hook = poem::endpoint::make(move |mut req: poem::Request| {
        let waiting = waiting.clone();
        async move {
            let at = Instant::now();
            let body: serde_json::Value =
                serde_json::from_str(&req.take_body().into_string().await.unwrap_or_default())
                    .unwrap_or_default();
            if let Some(tx) = body["workItemId"]
                .as_str()
                .and_then(|w| waiting.lock().expect("lock").remove(w))
            {
                let _ = tx.send(at);
            }
            poem::Response::builder()
                .status(poem::http::StatusCode::ACCEPTED)
                .body("")
        }
    });
    tokio::spawn(
        poem::Server::new(poem::listener::TcpListener::bind(format!(
            "127.0.0.1:{hook_port}"
        )))
        .run(hook),
    );

    let weft = support::start_weft(
        env!("CARGO_BIN_EXE_weft"),
        &server.url,
        &[("WEFT_SPINUP_TIMEOUT_MS", "600000")],
    )
    .await;
    let base = weft.base.clone();
    let http = reqwest::Client::new();
    let target = serde_json::json!({
        "name": "hook", "agentType": "claude-code", "capabilities": ["bench"], "boundaries": ["personal"],
        "mechanism": "webhook", "maxAgents": 1000,
        "config": {"url": format!("http://127.0.0.1:{hook_port}/spin-up")}
    });
    let r = http
        .post(format!("{base}/api/targets"))
        .json(&target)
        .send()
        .await
        .expect("target");
    assert_eq!(r.status(), 201);

    let mut latencies = Vec::with_capacity(items);
    let t = Instant::now();
    for i in 0..items {
        let key = format!("spin-{i}");
        let id = weft::api::work::id_for_key("default", &key);
        let (tx, rx) = tokio::sync::oneshot::channel();
        arrivals.lock().expect("lock").insert(id, tx);
        let body =
            serde_json::json!({"description": "x", "capability": "bench", "boundary": "personal"});
        let start = Instant::now();
        let r = http
            .post(format!("{base}/api/work"))
            .header("Idempotency-Key", &key)
            .json(&body)
            .send()
            .await
            .expect("submit");
        assert_eq!(r.status(), 201);
        let called = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("webhook called in time")
            .expect("sender");
        latencies.push(called - start);
    }
    println!("{items} items, no agents, one webhook target\n");
    support::row(
        "submit -> spin-up mechanism called (webhook)",
        items,
        t.elapsed(),
        &mut latencies,
    );
    drop(weft);
}
