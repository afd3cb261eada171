//! Restart to ready: how long `weft serve` takes from start to a healthy API when the log
//! holds 100k and then 1M events, without and with a snapshot, next to a raw ordered read
//! of the same stream on the same server. The events are a real workload's (an agent takes
//! and completes items: four events each), decided by the rules themselves. Prints figures;
//! asserts nothing.
//!
//!     cargo bench --bench restart
//!     BENCH_RESTART_EVENTS=100000,300000 cargo bench --bench restart

mod support;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use weft::store::EventStore;

async fn weft_ready(nats_url: &str) -> (Duration, f64) {
    let t = Instant::now();
    let weft = support::start_weft(
        env!("CARGO_BIN_EXE_weft"),
        nats_url,
        &[("WEFT_SNAPSHOT_EVERY", "0"), ("LOG_LEVEL", "error")],
    )
    .await;
    let ready = t.elapsed();
    (ready, support::rss_mb(weft.pid()))
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_RESTART_EVENTS")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let server = support::nats_server("default");
    let client = async_nats::connect(&server.url).await.expect("connect");
    migrations::apply(&client, "bench", &Default::default())
        .await
        .expect("migrate");
    let js = jetstream::new(client.clone());
    let store = EventStore::new(client.clone());
    let snapshots = js
        .get_key_value(migrations::SNAPSHOT_BUCKET)
        .await
        .expect("snapshot bucket");
    println!(
        "restart to ready (`weft serve` start to a healthy API), {} cores\n",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    let mut workload = support::workload::Workload::new();
    for size in sizes {
        let have = store.last_sequence().await.expect("last") as usize;
        if size > have {
            support::workload::publish_in_order(&js, workload.next(size - have)).await;
        }
        let n = store.last_sequence().await.expect("last");
        let raw = support::raw_read(&js, events::STREAM, n).await;
        println!("{n} events ({} work items)", workload.items);
        println!(
            "  {:<50} {:>8.2} s   {:>9.0} events/s",
            "raw JetStream ordered read",
            raw.as_secs_f64(),
            n as f64 / raw.as_secs_f64()
        );

        // Without a snapshot: the whole log is folded.
        let _ = snapshots.purge("head").await;
        let (ready, rss) = weft_ready(&server.url).await;
        println!(
            "  {:<50} {:>8.2} s   {:>9.0} events/s   {:.2}× raw read   RSS {rss:.0} MB",
            "weft serve, no snapshot",
            ready.as_secs_f64(),
            n as f64 / ready.as_secs_f64(),
            raw.as_secs_f64() / ready.as_secs_f64()
        );

        // With a snapshot at the end of the log.
        let projection = weft::projector::start(
            store.clone(),
            weft::projector::SnapshotPolicy::NEVER,
            weft::nats::connections(),
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .expect("replay");
        let (at, bytes) = projection.read(|s| (s.sequence, s.to_snapshot()));
        drop(projection);
        store.save_snapshot(at, &bytes, 1).await.expect("snapshot");
        let (ready, rss) = weft_ready(&server.url).await;
        println!(
            "  {:<50} {:>8.2} s   RSS {rss:.0} MB",
            format!("weft serve, snapshot of {:.1} MB", bytes.len() as f64 / 1e6),
            ready.as_secs_f64(),
        );
    }
}
