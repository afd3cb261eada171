//! Live-view fan-out: 1,000 subscribers of the `work` topic over the WebSocket, then over
//! SSE, with the clients in a process of their own (this bench, run again as `clients`),
//! so they do not share the server's runtime. Items are submitted through the API one
//! after another; each client measures from the event's time (when Weft decided it) to its
//! arrival, reading only the `timestamp` field. Next to them, in the same run: raw
//! JetStream publish+ack, and nats-server itself fanning one message out to the same
//! number of subscribers in the same clients process (the ceiling of a fan-out here).
//!
//!     cargo bench --bench websocket                  # 1,000 subscribers, 200 events
//!     BENCH_SUBSCRIBERS=200 BENCH_EVENTS=500 cargo bench --bench websocket

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn now_ms_f() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// The event time of a live-view message, read without parsing the rest of it.
fn event_time_ms(text: &str) -> Option<f64> {
    let start = text.find("\"timestamp\":\"")? + 13;
    let end = start + text[start..].find('"')?;
    let at: jiff::Timestamp = text[start..end].parse().ok()?;
    Some(at.as_millisecond() as f64)
}

fn env(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn main() {
    weft::mechanism::install_crypto_provider();
    let mut args = std::env::args().skip_while(|a| a != "clients");
    if args.next().is_some() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(env("BENCH_CLIENT_THREADS", 2))
            .enable_all()
            .build()
            .expect("runtime");
        let (kind, target) = (args.next().expect("kind"), args.next().expect("url"));
        let (subscribers, events) = (env("BENCH_SUBSCRIBERS", 1000), env("BENCH_EVENTS", 200));
        runtime.block_on(clients(&kind, &target, subscribers, events));
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(coordinate());
}

/// What one clients process measured.
struct Measured {
    delivered: usize,
    latencies: Vec<f64>,
}

/// The clients process: `subscribers` clients of `kind` (`ws`, `sse`, `nats`) on `target`;
/// prints `ready` once all are subscribed, then, when each has `events` messages (or
/// went 30 s without one), a line `delivered <n>` and one line of latencies.
async fn clients(kind: &str, target: &str, subscribers: usize, events: usize) {
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let mut tasks = Vec::new();
    let nats = if kind == "nats" {
        Some(async_nats::connect(target).await.expect("nats"))
    } else {
        None
    };
    let http = reqwest::Client::new();
    for _ in 0..subscribers {
        let latencies = latencies.clone();
        // Each kind yields message texts; the counting below is the same for all.
        let mut texts: futures::stream::BoxStream<'static, String> = match kind {
            "ws" => {
                // tungstenite zeroes its whole read buffer (128 KiB by default) on every
                // read; with messages of about 1 KiB that was a tenth of the machine.
                let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                    .read_buffer_size(8192);
                let (mut ws, _) =
                    tokio_tungstenite::connect_async_with_config(target, Some(config), false)
                        .await
                        .expect("connect");
                ws.send(Message::Text(
                    r#"{"type":"subscribe","topic":"work"}"#.into(),
                ))
                .await
                .expect("subscribe");
                // The ack: subscribed before `ready`.
                let _ = ws.next().await;
                ws.filter_map(|m| async move {
                    match m {
                        Ok(Message::Text(text)) => Some(text.to_string()),
                        _ => None,
                    }
                })
                .boxed()
            }
            "sse" => {
                let response = http.get(target).send().await.expect("stream");
                assert_eq!(response.status(), 200);
                // All complete events of each chunk at once: a chunk may hold hundreds.
                futures::stream::unfold(
                    (response, String::new()),
                    |(mut response, mut buffer)| async move {
                        loop {
                            if let Some(end) = buffer.rfind("\n\n") {
                                let rest = buffer.split_off(end + 2);
                                let texts: Vec<String> = buffer
                                    .split("\n\n")
                                    .filter_map(|block| {
                                        block.lines().find_map(|l| l.strip_prefix("data:"))
                                    })
                                    .map(str::to_string)
                                    .collect();
                                buffer = rest;
                                return Some((futures::stream::iter(texts), (response, buffer)));
                            }
                            let chunk = response.chunk().await.ok()??;
                            buffer.push_str(std::str::from_utf8(&chunk).ok()?);
                        }
                    },
                )
                .flatten()
                .boxed()
            }
            _ => {
                let subscription = nats
                    .as_ref()
                    .expect("nats")
                    .subscribe("bench.fanout")
                    .await
                    .expect("subscribe");
                subscription
                    .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
                    .boxed()
            }
        };
        let is_nats = kind == "nats";
        tasks.push(tokio::spawn(async move {
            let mut received = 0;
            while received < events {
                let Ok(Some(text)) =
                    tokio::time::timeout(Duration::from_secs(30), texts.next()).await
                else {
                    break;
                };
                let arrived = now_ms_f();
                let at = if is_nats {
                    text.parse::<f64>().ok()
                } else if text.contains("\"type\":\"event\"") {
                    event_time_ms(&text)
                } else {
                    continue;
                };
                if let Some(at) = at {
                    latencies.lock().expect("lock").push(arrived - at);
                }
                received += 1;
            }
            received
        }));
    }
    if let Some(nats) = &nats {
        nats.flush().await.expect("flush");
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut delivered = 0;
    for task in tasks {
        delivered += task.await.unwrap_or(0);
    }
    println!("delivered {delivered}");
    let latencies = latencies.lock().expect("lock");
    let text: Vec<String> = latencies.iter().map(|l| format!("{l:.2}")).collect();
    println!("{}", text.join(" "));
}

/// Starts a clients process and waits until its clients are subscribed.
fn spawn_clients(
    kind: &str,
    target: &str,
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().expect("this bench"))
        .args(["clients", kind, target])
        .stdout(Stdio::piped())
        .spawn()
        .expect("clients process");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("ready line");
    assert_eq!(
        line.trim(),
        "ready",
        "the clients process did not get ready"
    );
    (child, out)
}

fn collect(
    mut child: std::process::Child,
    mut out: BufReader<std::process::ChildStdout>,
) -> Measured {
    let mut text = String::new();
    let mut line = String::new();
    while out.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
        text.push_str(&line);
        line.clear();
    }
    let _ = child.wait();
    let mut lines = text.lines();
    let delivered = lines
        .next()
        .and_then(|l| l.strip_prefix("delivered "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut latencies: Vec<f64> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    Measured {
        delivered,
        latencies,
    }
}

fn report(name: &str, measured: &Measured, expected: usize, elapsed: Duration) {
    let pct = |p: f64| {
        let lat = &measured.latencies;
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "{name:<44} {:>9.0}/s   p50 {:>6.1} ms   p99 {:>6.1} ms   missing {}",
        measured.delivered as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        expected.saturating_sub(measured.delivered)
    );
}

async fn coordinate() {
    let (subscribers, events) = (env("BENCH_SUBSCRIBERS", 1000), env("BENCH_EVENTS", 200));
    let server = support::nats_server("default");
    let client = async_nats::connect(&server.url).await.expect("nats");
    let js = async_nats::jetstream::new(client.clone());
    println!("{subscribers} subscribers in a process of their own, {events} events each\n");
    support::raw_appends(&js, 2000, &[0u8; 512]).await;

    // The ceiling: nats-server fanning each message out to every subscriber.
    let (child, out) = spawn_clients("nats", &server.url);
    let t = Instant::now();
    for _ in 0..events {
        client
            .publish("bench.fanout", format!("{:.3}", now_ms_f()).into())
            .await
            .expect("publish");
        client.flush().await.expect("flush");
        // About the pace of the API's submissions, so the two are comparable.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let measured = collect(child, out);
    report(
        "raw NATS fan-out (core, no JetStream)",
        &measured,
        subscribers * events,
        t.elapsed(),
    );

    let weft = support::start_weft(env!("CARGO_BIN_EXE_weft"), &server.url, &[]).await;
    let http = reqwest::Client::new();
    for (name, kind, target) in [
        (
            "Weft WebSocket: event time -> client",
            "ws",
            format!("ws://127.0.0.1:{}/api/ws", weft.port),
        ),
        (
            "Weft SSE: event time -> client",
            "sse",
            format!("{}/api/events/stream?topic=work", weft.base),
        ),
    ] {
        let (child, out) = spawn_clients(kind, &target);
        let t = Instant::now();
        for i in 0..events {
            let body = serde_json::json!({"description": format!("e{i}"), "capability": "x", "boundary": "personal"});
            let r = http
                .post(format!("{}/api/work", weft.base))
                .json(&body)
                .send()
                .await
                .expect("submit");
            assert_eq!(r.status(), 201);
        }
        let measured = collect(child, out);
        report(name, &measured, subscribers * events, t.elapsed());
    }
    drop(weft);
}
