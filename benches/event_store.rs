//! The event store next to raw JetStream, in the same run on the same server: appends
//! (sequential and concurrent, with their optimistic-concurrency checks) and a full replay
//! into the projections. Prints figures and ratios; asserts nothing.
//!
//!     cargo bench --bench event_store            # 20,000 events
//!     BENCH_EVENTS=100000 cargo bench --bench event_store
//!     BENCH_SYNC=always cargo bench --bench event_store   # fsync on every write

mod support;

use std::time::Instant;

use async_nats::jetstream::{self, consumer, stream};
use decide::Expect;
use events::target::{LocalConfig, MechanismConfig, TargetRegistered};
use events::{AggregateKind, Envelope, Event, SCHEMA_VERSION};
use futures::StreamExt;
use weft::store::{Entry, EventStore};

fn envelope(i: usize) -> Envelope {
    Envelope {
        id: ulid::Ulid::generate().to_string(),
        project: "bench".into(),
        aggregate: AggregateKind::Target,
        aggregate_id: format!("t{i}"),
        schema_version: SCHEMA_VERSION,
        time_ms: 1_700_000_000_000 + i as u64,
        actor: "bench".into(),
        correlation_id: None,
        causation_id: None,
        event: Event::TargetRegistered(TargetRegistered {
            target_id: format!("t{i}"),
            name: format!("target-{i}"),
            description: None,
            agent_type: "claude-code".into(),
            capabilities: vec!["rust".into()],
            boundaries: vec!["personal".into()],
            config: MechanismConfig::Local(LocalConfig {
                command: "weft agent".into(),
                ..Default::default()
            }),
            health_check: None,
            tags: vec![],
            max_agents: None,
            registered_by: "api".into(),
        }),
    }
}

async fn raw_stream(js: &jetstream::Context, name: &str) -> stream::Stream {
    js.create_stream(stream::Config {
        name: name.into(),
        subjects: vec![format!("{}.>", name.to_lowercase())],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("raw stream")
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let sync = std::env::var("BENCH_SYNC").unwrap_or_else(|_| "default".into());
    let server = support::nats_server(&sync);
    let client = async_nats::connect(&server.url).await.expect("connect");
    migrations::apply(&client, "bench").await.expect("migrate");
    let js = jetstream::new(client.clone());
    let store = EventStore::new(client.clone());
    let encoded: Vec<Vec<u8>> = (0..n).map(|i| envelope(i).encode()).collect();
    println!(
        "{n} events of ~{} bytes, nats-server sync: {sync}, {} cores\n",
        encoded.iter().map(Vec::len).sum::<usize>() / n.max(1),
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );

    // Sequential: one round trip per event.
    let half = n / 2;
    raw_stream(&js, "RAWSEQ").await;
    let mut lat = Vec::with_capacity(half);
    let t = Instant::now();
    for (i, bytes) in encoded.iter().take(half).enumerate() {
        let s = Instant::now();
        js.publish(format!("rawseq.t{i}"), bytes.clone().into())
            .await
            .expect("publish")
            .await
            .expect("ack");
        lat.push(s.elapsed());
    }
    let raw_seq = support::row(
        "raw JetStream publish+ack, sequential",
        half,
        t.elapsed(),
        &mut lat,
    );
    let mut lat = Vec::with_capacity(half);
    let t = Instant::now();
    for i in 0..half {
        let e = envelope(i);
        let s = Instant::now();
        store
            .append(
                &[Entry {
                    envelope: &e,
                    expect: &Expect::AggregateAt(0),
                }],
                None,
            )
            .await
            .expect("append");
        lat.push(s.elapsed());
    }
    let store_seq = support::row(
        "store.append (msg id + expected seq), sequential",
        half,
        t.elapsed(),
        &mut lat,
    );
    println!(
        "{:<58} {:>10.2}\n",
        "  ratio store / raw",
        store_seq / raw_seq
    );

    // Concurrent: 128 writers on disjoint aggregates.
    let writers = 128;
    raw_stream(&js, "RAWPAR").await;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let js = js.clone();
        let mine: Vec<(usize, Vec<u8>)> = encoded
            .iter()
            .cloned()
            .enumerate()
            .skip(w)
            .step_by(writers)
            .collect();
        tasks.push(tokio::spawn(async move {
            for (i, bytes) in mine {
                js.publish(format!("rawpar.t{i}"), bytes.into())
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
    let raw_par = support::row(
        &format!("raw JetStream publish+ack, {writers} concurrent writers"),
        n,
        t.elapsed(),
        &mut [],
    );
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(writers) {
                let mut e = envelope(i);
                e.aggregate_id = format!("c{i}");
                store
                    .append(
                        &[Entry {
                            envelope: &e,
                            expect: &Expect::AggregateAt(0),
                        }],
                        None,
                    )
                    .await
                    .expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let store_par = support::row(
        &format!("store.append, {writers} concurrent writers"),
        n,
        t.elapsed(),
        &mut [],
    );
    println!(
        "{:<58} {:>10.2}\n",
        "  ratio store / raw",
        store_par / raw_par
    );

    // Replay: read everything back.
    let total = half + n;
    let raw = js.get_stream("RAWPAR").await.expect("stream");
    let t = Instant::now();
    let mut messages = raw
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .expect("consumer")
        .messages()
        .await
        .expect("messages");
    for _ in 0..n {
        let m = messages.next().await.expect("message").expect("ok");
        std::hint::black_box(m.payload.len());
    }
    let raw_read = support::row(
        "raw JetStream ordered consumer read",
        n,
        t.elapsed(),
        &mut [],
    );
    let t = Instant::now();
    let projection = weft::projector::start(
        store.clone(),
        0,
        weft::nats::connections(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("replay");
    let replay = support::row(
        "replay: read + decode + fold into projections",
        total,
        t.elapsed(),
        &mut [],
    );
    println!(
        "{:<58} {:>10.2}",
        "  ratio replay / raw read",
        replay / raw_read
    );
    let targets = projection.read(|s| s.projects.values().map(|p| p.targets.len()).sum::<usize>());
    println!(
        "\nprojected {targets} targets at sequence {}",
        projection.sequence()
    );
}
