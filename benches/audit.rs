//! The log as evidence, at size: `weft events export`, `weft events import` into an empty
//! server and `weft audit verify` over a log of 100k events (a real workload's), each as
//! events/s next to a raw ordered JetStream read of the same stream in the same run. The
//! imported log's state digest must equal the source's. Prints figures; asserts nothing
//! about time.
//!
//!     cargo bench --bench audit
//!     BENCH_AUDIT_EVENTS=300000 cargo bench --bench audit

mod support;

use std::process::{Command, Stdio};
use std::time::Instant;

use async_nats::jetstream;
use weft::store::EventStore;

fn weft(args: &[&str], stdout: Stdio) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .expect("weft runs")
}

async fn digest(nats_url: &str) -> String {
    let client = async_nats::connect(nats_url).await.expect("connect");
    let projection = weft::projector::start(
        EventStore::new(client),
        weft::projector::SnapshotPolicy::NEVER,
        weft::nats::connections(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("replay");
    projection.read(|s| s.digest())
}

fn row(name: &str, n: u64, seconds: f64) {
    println!(
        "  {name:<40} {seconds:>8.2} s   {:>9.0} events/s",
        n as f64 / seconds
    );
}

#[tokio::main]
async fn main() {
    let size: usize = std::env::var("BENCH_AUDIT_EVENTS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100_000);
    let source = support::nats_server("default");
    let client = async_nats::connect(&source.url).await.expect("connect");
    migrations::apply(&client, "bench", &Default::default())
        .await
        .expect("migrate");
    let js = jetstream::new(client.clone());
    let mut workload = support::workload::Workload::new();
    support::workload::publish_in_order(&js, workload.next(size)).await;
    let n = EventStore::new(client.clone())
        .last_sequence()
        .await
        .expect("last");
    println!(
        "export, import and verify of {n} events ({} work items), {} cores\n",
        workload.items,
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    let raw = support::raw_read(&js, events::STREAM, n).await;
    row("raw JetStream ordered read", n, raw.as_secs_f64());

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("log.jsonl");
    let t = Instant::now();
    let out = std::fs::File::create(&file).expect("export file");
    let export = weft(&["events", "export", "--nats-url", &source.url], out.into());
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    row("weft events export", n, t.elapsed().as_secs_f64());
    let megabytes = std::fs::metadata(&file).map_or(0.0, |m| m.len() as f64 / 1e6);

    let target = support::nats_server("default");
    let path = file.to_string_lossy().to_string();
    let t = Instant::now();
    let import = weft(
        &["events", "import", "--nats-url", &target.url, &path],
        Stdio::null(),
    );
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    row(
        "weft events import (empty server)",
        n,
        t.elapsed().as_secs_f64(),
    );

    let t = Instant::now();
    let verify = weft(
        &["audit", "verify", "--nats-url", &target.url],
        Stdio::piped(),
    );
    row(
        "weft audit verify (imported log)",
        n,
        t.elapsed().as_secs_f64(),
    );
    println!(
        "\n  export file {megabytes:.1} MB; verify {}; digests {}",
        if verify.status.success() {
            "passed"
        } else {
            "FAILED"
        },
        if digest(&source.url).await == digest(&target.url).await {
            "equal"
        } else {
            "DIFFER"
        }
    );
}
