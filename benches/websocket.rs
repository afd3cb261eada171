//! WebSocket fan-out: 1,000 subscribers on the `work` topic, events published through the
//! API; latency from an event's time (when Weft decided it) to its arrival at each client,
//! and events delivered per second.
//!
//!     cargo bench --bench websocket                  # 1,000 subscribers, 200 events
//!     BENCH_SUBSCRIBERS=200 BENCH_EVENTS=500 cargo bench --bench websocket

mod support;

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

/// Milliseconds since the epoch of an RFC 3339 timestamp with milliseconds.
fn parse_ms(s: &str) -> Option<f64> {
    weft::registry::parse_time_ms(&serde_json::Value::from(s)).map(|ms| ms as f64)
}

#[tokio::main]
async fn main() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (subscribers, events) = (env("BENCH_SUBSCRIBERS", 1000), env("BENCH_EVENTS", 200));
    weft::mechanism::install_crypto_provider();
    let server = support::nats_server("default");
    let weft = support::start_weft(env!("CARGO_BIN_EXE_weft"), &server.url, &[]).await;
    let (port, base) = (weft.port, weft.base.clone());
    let http = reqwest::Client::new();

    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let mut clients = Vec::new();
    for _ in 0..subscribers {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/api/ws"))
            .await
            .expect("connect");
        ws.send(Message::Text(
            r#"{"type":"subscribe","topic":"work"}"#.into(),
        ))
        .await
        .expect("subscribe");
        let latencies = latencies.clone();
        clients.push(tokio::spawn(async move {
            let mut received = 0;
            while received < events {
                match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => {
                        let arrived = now_ms_f();
                        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                        if v["type"] == "event" {
                            if let Some(at) = v["timestamp"].as_str().and_then(parse_ms) {
                                latencies.lock().expect("lock").push(arrived - at);
                            }
                            received += 1;
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => break,
                }
            }
            received
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    for i in 0..events {
        let body = serde_json::json!({"description": format!("e{i}"), "capability": "x", "boundary": "personal"});
        let r = http
            .post(format!("{base}/api/work"))
            .json(&body)
            .send()
            .await
            .expect("submit");
        assert_eq!(r.status(), 201);
    }
    let mut delivered = 0;
    for c in clients {
        delivered += c.await.unwrap_or(0);
    }
    let elapsed = t.elapsed();
    let mut lat = latencies.lock().expect("lock").clone();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    println!("{subscribers} subscribers, {events} events each\n");
    println!(
        "{:<58} {:>10.0}/s",
        "events delivered to clients",
        delivered as f64 / elapsed.as_secs_f64()
    );
    println!(
        "{:<58} p50 {:>6.1} ms   p99 {:>6.1} ms   (millisecond clock)",
        "event time -> arrival at a client",
        pct(0.5),
        pct(0.99)
    );
    println!(
        "{:<58} {:>10}",
        "deliveries missing",
        subscribers * events - delivered
    );
    drop(weft);
}
