//! The event store next to raw JetStream, in the same run on the same server: appends
//! (sequential, concurrent, atomic batches), a project's writer deciding and committing
//! concurrent commands in both commit modes, and a full replay into the projections.
//! Prints figures and ratios; asserts nothing.
//!
//!     cargo bench --bench event_store            # 20,000 events
//!     BENCH_EVENTS=100000 cargo bench --bench event_store
//!     BENCH_SYNC=always cargo bench --bench event_store   # fsync on every write

mod support;

use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream::{self, stream};
use events::target::{LocalConfig, MechanismConfig, TargetRegistered};
use events::{AggregateKind, Envelope, Event, SCHEMA_VERSION};
use weft::commands::{CommandContext, Commands};
use weft::store::{CommitMode, EventStore, Fence, Outcome};

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

fn submit(i: usize) -> decide::Command {
    decide::WorkCommand::Submit {
        id: format!("w{i}-{}", ulid::Ulid::generate()),
        submission: decide::work::Submission {
            task_id: None,
            description: format!("item {i}"),
            capability: "bench".into(),
            boundary: "personal".into(),
            priority: None,
            preferred_agent_type: None,
            required_agent_type: None,
            deadline: None,
            context_data: None,
            max_attempts: None,
            idempotency_key: None,
            workspace: None,
            max_cost_usd: None,
            resume_session: false,
        },
    }
    .into()
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

/// Elects a writer for `project`: the fence its appends carry.
async fn elect(store: &EventStore, project: &str) -> Fence {
    let subject = events::subject::writer(project);
    let mut election = envelope(0);
    election.project = project.into();
    election.aggregate = AggregateKind::Writer;
    election.aggregate_id = events::writer::WRITER_ID.into();
    election.event = Event::WriterElected(events::writer::WriterElected {
        instance: "bench".into(),
    });
    let expected = Fence {
        subject: subject.clone(),
        sequence: 0,
    };
    match store
        .commit(&[&[election]], &expected, CommitMode::Pipelined)
        .await
        .remove(0)
    {
        Outcome::Stored(s) => Fence {
            subject,
            sequence: s[0],
        },
        other => panic!("election: {other:?}"),
    }
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
    migrations::apply(&client, "bench", &Default::default())
        .await
        .expect("migrate");
    let js = jetstream::new(client.clone());
    let store = EventStore::new(client.clone());
    let encoded: Vec<Vec<u8>> = (0..n).map(|i| envelope(i).encode()).collect();
    println!(
        "{n} events of ~{} bytes, nats-server sync: {sync}, {} cores\n",
        encoded.iter().map(Vec::len).sum::<usize>() / n.max(1),
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    let fence = elect(&store, "bench").await;

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
        let s = Instant::now();
        let outcome = store
            .commit(&[&[envelope(i)]], &fence, CommitMode::Pipelined)
            .await;
        assert!(matches!(outcome[0], Outcome::Stored(_)), "{outcome:?}");
        lat.push(s.elapsed());
    }
    let store_seq = support::row(
        "store.commit of one event (fenced), sequential",
        half,
        t.elapsed(),
        &mut lat,
    );
    println!(
        "{:<58} {:>10.2}\n",
        "  ratio store / raw",
        store_seq / raw_seq
    );

    // The ceilings: 128 concurrent publishers, and atomic batches of 100 one at a time.
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
    let raw_batch = support::raw_atomic_batches(&js, n, 100, &encoded[0]).await;

    // A project's writer: 128 concurrent callers, each command decided, committed in
    // rounds, folded in and answered.
    for mode in [CommitMode::Pipelined, CommitMode::Grouped] {
        let project = format!("{mode:?}").to_lowercase();
        let projection = weft::projector::start(
            store.clone(),
            weft::projector::SnapshotPolicy::NEVER,
            weft::nats::connections(),
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .expect("projection");
        let commands = Arc::new(Commands::new(
            store.clone(),
            projection,
            Arc::new(decide::Settings::default()),
            "bench".into(),
            mode,
            None,
        ));
        let ctx = CommandContext {
            actor: "bench".into(),
            correlation_id: None,
            causation_id: None,
        };
        let t = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (commands, ctx, project) = (commands.clone(), ctx.clone(), project.clone());
            tasks.push(tokio::spawn(async move {
                for i in (w..n).step_by(writers) {
                    commands
                        .execute(&ctx, &project, submit(i))
                        .await
                        .expect("recorded");
                }
            }));
        }
        for task in tasks {
            task.await.expect("caller");
        }
        let ours = support::row(
            &format!("writer: submissions, {writers} callers, {project}"),
            n,
            t.elapsed(),
            &mut [],
        );
        println!(
            "{:<58} {:>10.2}   / raw atomic batches {:.2}\n",
            "  ratio writer / raw concurrent",
            ours / raw_par,
            ours / raw_batch
        );
    }

    // Replay: read everything back.
    let total = store.last_sequence().await.expect("last") as usize;
    let raw_elapsed = support::raw_read(&js, "RAWPAR", n as u64).await;
    let raw_read = support::row(
        "raw JetStream ordered consumer read",
        n,
        raw_elapsed,
        &mut [],
    );
    let t = Instant::now();
    let projection = weft::projector::start(
        store.clone(),
        weft::projector::SnapshotPolicy::NEVER,
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
    let (targets, work) = projection.read(|s| {
        s.projects
            .values()
            .map(|p| (p.targets.len(), p.work.len()))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    println!(
        "\nprojected {targets} targets and {work} work items at sequence {}",
        projection.sequence()
    );
}
