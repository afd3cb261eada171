//! Takeover: two `weft serve` on one NATS, the writer of the project killed with SIGKILL,
//! and the time until the standby accepts the next command. Two cases, several runs each:
//! a client waiting with a command (the standby finds the writer's subject without
//! responders and takes the lease at once), and nobody asking (the lease lapses after
//! `WEFT_WRITER_LEASE_MS`, and the standby takes it for its timers). Prints figures next
//! to the lease time; asserts nothing.
//!
//!     cargo bench --bench takeover
//!     BENCH_RUNS=10 BENCH_LEASE_MS=2000 cargo bench --bench takeover

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn item(description: &str) -> Value {
    json!({"description": description, "capability": "rust", "boundary": "personal"})
}

async fn writes_default(http: &reqwest::Client, base: &str) -> bool {
    let health: Value = match http.get(format!("{base}/health")).send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => return false,
    };
    health["writer"]["projects"]
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p == "default"))
}

/// One run: the time from killing the writer to the standby accepting a command (`asking`)
/// or holding the project's lease (nobody asking).
async fn run(asking: bool, lease_ms: u64) -> Duration {
    let nats = support::nats_server("default");
    let lease = lease_ms.to_string();
    let env = |id: &'static str| {
        vec![
            ("WEFT_INSTANCE_ID", id),
            ("WEFT_WRITER_LEASE_MS", lease.as_str()),
        ]
    };
    let mut a = Some(support::start_weft(WEFT, &nats.url, &env("weft-a")).await);
    let http = reqwest::Client::new();
    let base_a = a.as_ref().map(|w| w.base.clone()).unwrap_or_default();
    let submitted = http
        .post(format!("{base_a}/api/work"))
        .json(&item("first"))
        .send()
        .await
        .expect("submit");
    assert_eq!(submitted.status(), 201);
    let mut b = Some(support::start_weft(WEFT, &nats.url, &env("weft-b")).await);
    let base_b = b.as_ref().map(|w| w.base.clone()).unwrap_or_default();
    let (writer, standby) = if writes_default(&http, &base_a).await {
        (a.take(), base_b)
    } else {
        (b.take(), base_a)
    };
    let killed = Instant::now();
    drop(writer);
    let deadline = killed + Duration::from_secs(60);
    if asking {
        loop {
            let answer = http
                .post(format!("{standby}/api/work"))
                .json(&item("after"))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status() == 201) {
                break;
            }
            assert!(Instant::now() < deadline, "no takeover within 60 s");
        }
    } else {
        while !writes_default(&http, &standby).await {
            assert!(Instant::now() < deadline, "no takeover within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    killed.elapsed()
}

fn print(name: &str, times: &mut [Duration]) {
    times.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let all: Vec<String> = times.iter().map(|t| format!("{:.0}", ms(t))).collect();
    println!(
        "{name:<58} min {:>6.0} ms   max {:>6.0} ms   runs: {}",
        times.first().map(ms).unwrap_or(0.0),
        times.last().map(ms).unwrap_or(0.0),
        all.join(", ")
    );
}

#[tokio::main]
async fn main() {
    let runs = env_or("BENCH_RUNS", 5) as usize;
    let lease_ms = env_or("BENCH_LEASE_MS", 5000);
    println!(
        "takeover after SIGKILL of the writer, {runs} runs each, writer lease {lease_ms} ms, {} cores\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut asking = Vec::new();
    let mut idle = Vec::new();
    for _ in 0..runs {
        asking.push(run(true, lease_ms).await);
        idle.push(run(false, lease_ms).await);
    }
    print(
        "writer killed -> next command accepted (a client asking)",
        &mut asking,
    );
    print(
        "writer killed -> standby holds the lease (nobody asking)",
        &mut idle,
    );
    println!(
        "{:<58} {lease_ms:>6} ms",
        "the lease time (the bound when nobody asks)"
    );
}
