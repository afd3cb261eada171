//! Work through Weft end to end, next to raw JetStream appends in the same run: a real
//! nats-server, the real `weft serve`, and in-process agents that speak the agent protocol
//! and finish each item at once (so the figures are Weft's, not a command's).
//!
//!     cargo bench --bench work_flow                 # 2,000 items
//!     BENCH_ITEMS=10000 cargo bench --bench work_flow
//!     BENCH_SYNC=always cargo bench --bench work_flow   # fsync on every write

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use weft::protocol::{self, Assignment, Reply};

type Waiters = Arc<Mutex<HashMap<String, tokio::sync::oneshot::Sender<Instant>>>>;

/// An agent that accepts and completes every assignment immediately.
async fn agent(
    client: async_nats::Client,
    id: String,
    capacity: u32,
    done: Arc<AtomicUsize>,
    assigned: Waiters,
) {
    let register = protocol::RegisterRequest {
        agent_id: id.clone(),
        agent_type: "claude-code".into(),
        capabilities: vec!["bench".into()],
        boundaries: vec!["personal".into()],
        max_concurrent_tasks: capacity,
        idle_timeout_ms: None,
        hostname: None,
        handle: None,
        spin_up_id: None,
        target_id: None,
    };
    let mut pushes = client
        .subscribe(format!("weft.agent.default.{id}.assign"))
        .await
        .expect("subscribe");
    let reply = client
        .request(
            protocol::rpc_subject("default", protocol::REGISTER, &id),
            serde_json::to_vec(&register).expect("json").into(),
        )
        .await
        .expect("register");
    let reply: Reply<protocol::RegisterReply> =
        serde_json::from_slice(&reply.payload).expect("reply");
    assert!(reply.ok, "registration refused");
    let beat = {
        let (client, id) = (client.clone(), id.clone());
        tokio::spawn(async move {
            loop {
                let hb = protocol::HeartbeatRequest {
                    agent_id: id.clone(),
                    running: vec![],
                };
                let _ = client
                    .request(
                        protocol::rpc_subject("default", protocol::HEARTBEAT, &id),
                        serde_json::to_vec(&hb).expect("json").into(),
                    )
                    .await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    while let Some(message) = pushes.next().await {
        let Ok(a) = serde_json::from_slice::<Assignment>(&message.payload) else {
            continue;
        };
        if let Some(waiter) = assigned.lock().expect("lock").remove(&a.work_id) {
            let _ = waiter.send(Instant::now());
        }
        let (client, id, done) = (client.clone(), id.clone(), done.clone());
        tokio::spawn(async move {
            let mut report = protocol::WorkReport::on(&id, &a.work_id, &a.lease_id);
            let _ = client
                .request(
                    protocol::rpc_subject("default", protocol::ACCEPT, &id),
                    serde_json::to_vec(&report).expect("json").into(),
                )
                .await;
            report.message = Some("done".into());
            let r = client
                .request(
                    protocol::rpc_subject("default", protocol::COMPLETE, &id),
                    serde_json::to_vec(&report).expect("json").into(),
                )
                .await;
            if r.is_ok() {
                done.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    beat.abort();
}

fn body(i: usize) -> serde_json::Value {
    serde_json::json!({"description": format!("item {i}"), "capability": "bench", "boundary": "personal"})
}

#[tokio::main]
async fn main() {
    let items: usize = std::env::var("BENCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let sync = std::env::var("BENCH_SYNC").unwrap_or_else(|_| "default".into());
    // Slots per agent: items in flight at once are agents × capacity.
    let capacity: u32 = std::env::var("BENCH_CAPACITY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);

    let server = support::nats_server(&sync);
    // An external server's fsync policy is not visible to Weft: say so.
    let mode = if sync == "always" {
        "grouped"
    } else {
        "pipelined"
    };
    let weft = support::start_weft(
        env!("CARGO_BIN_EXE_weft"),
        &server.url,
        &[("WEFT_SNAPSHOT_EVERY", "0"), ("WEFT_COMMIT_MODE", mode)],
    )
    .await;
    let base = weft.base.clone();
    let http = reqwest::Client::new();
    let client = async_nats::connect(&server.url).await.expect("connect");
    println!(
        "{items} items, nats-server sync: {sync}, commit mode {mode}, {} cores, 4 agents × {capacity} slots\n",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );

    let done = Arc::new(AtomicUsize::new(0));
    let waiters: Waiters = Arc::default();
    let agents = 4;
    for a in 0..agents {
        tokio::spawn(agent(
            client.clone(),
            format!("bench-agent-{a}"),
            capacity,
            done.clone(),
            waiters.clone(),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r: serde_json::Value = http
            .get(format!("{base}/api/agents"))
            .send()
            .await
            .expect("agents")
            .json()
            .await
            .expect("json");
        if r["total"] == agents {
            break;
        }
        assert!(Instant::now() < deadline, "agents did not register");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Latency: one item at a time with idle agents present, from the request leaving to
    // the assignment arriving at the agent.
    let samples = 300;
    let mut latencies = Vec::with_capacity(samples);
    let t = Instant::now();
    for i in 0..samples {
        let key = format!("latency-{i}");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let id = weft::api::work::id_for_key("default", &key);
        waiters.lock().expect("lock").insert(id, tx);
        let start = Instant::now();
        let response = http
            .post(format!("{base}/api/work"))
            .header("Idempotency-Key", &key)
            .json(&body(i))
            .send()
            .await
            .expect("submit");
        assert_eq!(response.status(), 201);
        let arrived = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("assigned in time")
            .expect("sender");
        latencies.push(arrived - start);
    }
    support::row(
        "submit -> assignment at the agent (one at a time)",
        samples,
        t.elapsed(),
        &mut latencies,
    );

    // Throughput: many submitters, until every item is completed. Every 20th item is
    // timed from submission to its assignment at the agent, under the load.
    let before = done.load(Ordering::SeqCst);
    let submitted = Arc::new(AtomicUsize::new(0));
    let under_load = Arc::new(Mutex::new(Vec::new()));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (http, base, submitted, waiters, under_load) = (
            http.clone(),
            base.clone(),
            submitted.clone(),
            waiters.clone(),
            under_load.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = submitted.fetch_add(1, Ordering::SeqCst);
                if i >= items {
                    break;
                }
                let mut request = http.post(format!("{base}/api/work")).json(&body(i));
                let mut timed = None;
                if i % 20 == 0 {
                    let key = format!("load-{i}");
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let id = weft::api::work::id_for_key("default", &key);
                    waiters.lock().expect("lock").insert(id, tx);
                    request = request.header("Idempotency-Key", key);
                    timed = Some((Instant::now(), rx));
                }
                let r = request.send().await.expect("submit");
                assert_eq!(r.status(), 201);
                if let Some((start, rx)) = timed {
                    let under_load = under_load.clone();
                    tokio::spawn(async move {
                        if let Ok(Ok(arrived)) =
                            tokio::time::timeout(Duration::from_secs(60), rx).await
                        {
                            under_load.lock().expect("lock").push(arrived - start);
                        }
                    });
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("submitter");
    }
    let submit_time = t.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while done.load(Ordering::SeqCst) - before < items {
        assert!(Instant::now() < deadline, "items did not complete");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total = t.elapsed();
    support::row(
        "submissions accepted (HTTP, 32 clients)",
        items,
        submit_time,
        &mut [],
    );
    let e2e = support::row(
        "items end to end (submit, assign, accept, complete)",
        items,
        total,
        &mut [],
    );
    println!("{:<58} {:>10}", "  events per item", 4);
    let mut under_load = under_load.lock().expect("lock").clone();
    support::row(
        "submit -> assignment at the agent, during the run above",
        under_load.len(),
        total,
        &mut under_load,
    );

    // The ceiling, on the same server: raw appends of a ~340-byte message.
    println!();
    let js = async_nats::jetstream::new(client.clone());
    let (_, raw_concurrent) = support::raw_appends(&js, 10_000, &[7u8; 340]).await;
    println!(
        "{:<58} {:>10.2}",
        "  events/s of the end-to-end run / raw concurrent appends",
        e2e * 4.0 / raw_concurrent
    );
    drop(weft);
}
