//! What both benchmarks need: a nats-server of their own, and raw JetStream figures to
//! print next to Weft's.

#![allow(dead_code)]

pub mod workload;

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};

pub fn free_port() -> u16 {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct Server {
    pub url: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A nats-server on loopback; `sync` is `default` or a `sync_interval` value (`always`).
pub fn nats_server(sync: &str) -> Server {
    let binary =
        weft::embedded::find_binary().expect("nats-server (scripts/install-nats-server.sh)");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let sync_line = if sync == "default" {
        String::new()
    } else {
        format!("sync_interval: {sync}")
    };
    let config = dir.path().join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\njetstream {{ store_dir: {:?}\n{sync_line} }}\n",
            dir.path().join("js")
        ),
    )
    .expect("config");
    let child = std::process::Command::new(binary)
        .arg("-c")
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nats-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        url: format!("nats://127.0.0.1:{port}"),
        child,
        _dir: dir,
    }
}

pub fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

pub fn row(name: &str, n: usize, elapsed: Duration, latencies: &mut [Duration]) -> f64 {
    latencies.sort();
    let rate = n as f64 / elapsed.as_secs_f64();
    if latencies.is_empty() {
        println!("{name:<58} {rate:>10.0}/s");
    } else {
        println!(
            "{name:<58} {rate:>10.0}/s   p50 {:>7.0} µs   p99 {:>7.0} µs",
            percentile_us(latencies, 0.5),
            percentile_us(latencies, 0.99)
        );
    }
    rate
}

/// Raw appends on a scratch stream: `n` sequential, then `n` from 128 concurrent writers.
pub async fn raw_appends(js: &jetstream::Context, n: usize, payload: &[u8]) -> (f64, f64) {
    let name = format!("RAW{}", free_port());
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{}.>", name.to_lowercase())],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("raw stream");
    let prefix = name.to_lowercase();
    let mut lat = Vec::with_capacity(n);
    let t = Instant::now();
    for i in 0..n {
        let s = Instant::now();
        js.publish(format!("{prefix}.s{i}"), payload.to_vec().into())
            .await
            .expect("publish")
            .await
            .expect("ack");
        lat.push(s.elapsed());
    }
    let sequential = row(
        "raw JetStream publish+ack, sequential",
        n,
        t.elapsed(),
        &mut lat,
    );
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..128 {
        let js = js.clone();
        let (prefix, payload) = (prefix.clone(), payload.to_vec());
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(128) {
                js.publish(format!("{prefix}.c{i}"), payload.clone().into())
                    .await
                    .expect("publish")
                    .await
                    .expect("ack");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let concurrent = row(
        "raw JetStream publish+ack, 128 concurrent writers",
        n,
        t.elapsed(),
        &mut [],
    );
    (sequential, concurrent)
}

/// Raw atomic batches of `size` messages, one batch in flight at a time, on a scratch
/// stream that allows them: the ceiling of a grouped commit. Returns messages per second.
pub async fn raw_atomic_batches(
    js: &jetstream::Context,
    n: usize,
    size: usize,
    payload: &[u8],
) -> f64 {
    use async_nats::header::{NATS_BATCH_COMMIT, NATS_BATCH_ID, NATS_BATCH_SEQUENCE};
    let name = format!("RAWBATCH{}", free_port());
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{}.>", name.to_lowercase())],
        storage: stream::StorageType::File,
        allow_atomic_publish: true,
        ..Default::default()
    })
    .await
    .expect("raw batch stream");
    let prefix = name.to_lowercase();
    let client = js.client();
    let t = Instant::now();
    let mut sent = 0;
    while sent < n {
        let count = size.min(n - sent);
        let batch = format!("b{sent}");
        for i in 0..count {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(NATS_BATCH_ID, batch.as_str());
            headers.insert(NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
            let subject = format!("{prefix}.b{}", sent + i);
            if i + 1 < count {
                client
                    .publish_with_headers(subject, headers, payload.to_vec().into())
                    .await
                    .expect("publish");
            } else {
                headers.insert(NATS_BATCH_COMMIT, "1");
                js.publish_with_headers(subject, headers, payload.to_vec().into())
                    .await
                    .expect("publish")
                    .await
                    .expect("batch ack");
            }
        }
        sent += count;
    }
    row(
        &format!("raw JetStream atomic batches of {size}, one in flight"),
        n,
        t.elapsed(),
        &mut [],
    )
}

/// A `weft serve` of its own, on a free loopback port; stopped when dropped.
pub struct WeftProcess {
    pub port: u16,
    pub base: String,
    child: std::process::Child,
}

impl WeftProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for WeftProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `weft serve` (the binary is passed in: only benchmarks know its path) against
/// `nats_url` with `env`, and waits until it is healthy.
pub async fn start_weft(binary: &str, nats_url: &str, env: &[(&str, &str)]) -> WeftProcess {
    weft::mechanism::install_crypto_provider();
    let port = free_port();
    let child = std::process::Command::new(binary)
        .arg("serve")
        .env("NATS_URL", nats_url)
        .env("API_HOST", "127.0.0.1")
        .env("API_PORT", port.to_string())
        .env("LOG_LEVEL", "warn")
        .envs(env.iter().copied())
        .spawn()
        .expect("weft serve");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("{base}/health"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "weft did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    WeftProcess { port, base, child }
}

/// Resident memory of process `pid`, in MB (0 when it cannot be read).
pub fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The ceiling for replays: reading the first `n` messages of `stream` with an ordered
/// consumer, touching each payload and nothing more.
pub async fn raw_read(js: &jetstream::Context, stream: &str, n: u64) -> Duration {
    use futures::StreamExt;
    let stream = js.get_stream(stream).await.expect("stream");
    let t = Instant::now();
    let mut messages = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("consumer")
        .messages()
        .await
        .expect("messages");
    for _ in 0..n {
        let m = messages.next().await.expect("message").expect("ok");
        std::hint::black_box(m.payload.len());
    }
    t.elapsed()
}
