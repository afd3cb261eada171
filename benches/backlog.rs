//! Costs as the backlog grows: the submission rate, one-row list pages, stats and target
//! registration with 0, 10k and 100k items pending (no agent serves them) and as targets
//! grow to 10k, with Weft's RSS at each step, next to raw concurrent JetStream appends
//! measured on the same server. Prints figures; asserts nothing.
//!
//!     cargo bench --bench backlog
//!     BENCH_BACKLOG=0,10000,100000 BENCH_CLIENTS=64 cargo bench --bench backlog

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// `total` requests from `clients` concurrent clients; requests per second.
async fn rate<F, Fut>(clients: usize, total: usize, request: F) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, request) = (next.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= total {
                    break;
                }
                request(i).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("client");
    }
    total as f64 / t.elapsed().as_secs_f64()
}

fn list(var: &str, default: &str) -> Vec<usize> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

#[tokio::main]
async fn main() {
    let levels = list("BENCH_BACKLOG", "0,10000,100000");
    let clients = list("BENCH_CLIENTS", "64")[0];
    let server = support::nats_server("default");
    let weft = support::start_weft(
        env!("CARGO_BIN_EXE_weft"),
        &server.url,
        &[("WEFT_SNAPSHOT_EVERY", "0"), ("LOG_LEVEL", "error")],
    )
    .await;
    let http = reqwest::Client::new();
    let base = weft.base.clone();
    println!(
        "backlog: {clients} clients, {} cores; nobody serves the items, so they stay pending\n",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    let submit = {
        let (http, base) = (http.clone(), base.clone());
        move |i: usize| {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let r = http
                    .post(format!("{base}/api/work"))
                    .json(&serde_json::json!({
                        "description": format!("backlog item {i}"),
                        "capability": "nobody-has-this",
                        "boundary": "personal",
                    }))
                    .send()
                    .await
                    .expect("submit");
                assert_eq!(r.status(), 201);
            }
        }
    };
    let get = |path: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        move |_: usize| {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let r = http.get(format!("{base}{path}")).send().await.expect("get");
                assert_eq!(r.status(), 200);
                std::hint::black_box(r.bytes().await.expect("body"));
            }
        }
    };
    println!(
        "{:>9}  {:>14}  {:>16}  {:>12}  {:>8}",
        "pending", "POST /api/work", "GET ?limit=1", "GET /stats", "RSS"
    );
    let mut pending = 0;
    let mut first = None;
    for level in levels {
        if level > pending {
            rate(clients, level - pending, submit.clone()).await;
            pending = level;
        }
        // Long enough to even out this machine's noise.
        let submitted = rate(clients, 5000, submit.clone()).await;
        pending += 5000;
        let page = rate(16, 1000, get("/api/work?limit=1&status=pending")).await;
        let stats = rate(16, 1000, get("/api/stats")).await;
        first.get_or_insert(submitted);
        println!(
            "{level:>9}  {submitted:>12.0}/s  {page:>14.0}/s  {stats:>10.0}/s  {:>5.0} MB   rate {:.2}× of the first",
            support::rss_mb(weft.pid()),
            submitted / first.unwrap_or(submitted)
        );
    }

    // Targets: registration at 0 and after 10k.
    let register = {
        let (http, base) = (http.clone(), base.clone());
        move |i: usize| {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let r = http
                    .post(format!("{base}/api/targets"))
                    .json(&serde_json::json!({
                        "name": format!("target-{i}"),
                        "agentType": "claude-code",
                        "capabilities": ["elsewhere"],
                        "mechanism": "local",
                        "config": {"mechanism": "local", "command": "weft agent"},
                    }))
                    .send()
                    .await
                    .expect("register");
                assert_eq!(r.status(), 201);
            }
        }
    };
    let empty = rate(16, 1000, register.clone()).await;
    rate(clients, 9000, {
        let register = register.clone();
        move |i| register(1000 + i)
    })
    .await;
    let full = rate(16, 1000, {
        let register = register.clone();
        move |i| register(10_000 + i)
    })
    .await;
    println!(
        "\nPOST /api/targets, 16 clients: {empty:.0}/s with none, {full:.0}/s with 10k ({:.2}×)",
        full / empty
    );

    println!();
    let client = async_nats::connect(&server.url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    support::raw_appends(&js, 10_000, &[7u8; 340]).await;
    drop(weft);
}
