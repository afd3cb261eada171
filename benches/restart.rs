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
use decide::{AgentCommand, Command, Settings, WorkCommand};
use events::{Envelope, SCHEMA_VERSION};
use projections::Project;
use weft::store::EventStore;

/// A workload's events, in log order: one agent, and items submitted, assigned, accepted
/// and completed one after another.
struct Workload {
    project: Project,
    sequence: u64,
    items: usize,
}

impl Workload {
    fn new() -> Self {
        Workload {
            project: Project::default(),
            sequence: 0,
            items: 0,
        }
    }

    fn decide(&mut self, command: Command, out: &mut Vec<Vec<u8>>) {
        let decisions = decide::decide(&command, &self.project, &Settings::default())
            .expect("the workload's commands are valid");
        for d in decisions {
            self.sequence += 1;
            let envelope = Envelope {
                id: ulid::Ulid::generate().to_string(),
                project: "default".into(),
                aggregate: d.event.aggregate_kind(),
                aggregate_id: d.aggregate_id,
                schema_version: SCHEMA_VERSION,
                time_ms: 1_700_000_000_000 + self.sequence,
                actor: "bench".into(),
                correlation_id: None,
                causation_id: None,
                event: d.event,
            };
            self.project.apply(self.sequence, &envelope);
            out.push(envelope.encode());
        }
    }

    /// The next `n` events (whole items; the first call registers the agent).
    fn next(&mut self, n: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::with_capacity(n + 4);
        if self.sequence == 0 {
            self.decide(
                AgentCommand::Register {
                    agent_id: "agent-1".into(),
                    registration: events::work::AgentRegistered {
                        agent_type: "claude-code".into(),
                        capabilities: vec!["rust".into()],
                        boundaries: vec!["personal".into()],
                        max_concurrent_tasks: 4,
                        idle_timeout_ms: None,
                        hostname: None,
                        handle: None,
                        spin_up_id: None,
                        target_id: None,
                    },
                    now_ms: 1_700_000_000_000,
                }
                .into(),
                &mut out,
            );
        }
        while out.len() < n {
            self.items += 1;
            let work_id = format!("w{}", self.items);
            let lease = decide::work::Lease {
                work_id: work_id.clone(),
                agent_id: "agent-1".into(),
                lease_id: format!("l{}", self.items),
            };
            let commands: [Command; 4] = [
                WorkCommand::Submit {
                    id: work_id.clone(),
                    submission: decide::work::Submission {
                        task_id: None,
                        description: format!("item {} of the restart benchmark", self.items),
                        capability: "rust".into(),
                        boundary: "personal".into(),
                        priority: None,
                        preferred_agent_type: None,
                        required_agent_type: None,
                        deadline: None,
                        context_data: None,
                        max_attempts: None,
                        idempotency_key: None,
                    },
                }
                .into(),
                WorkCommand::Assign {
                    work_id: work_id.clone(),
                    agent_id: "agent-1".into(),
                    lease_id: lease.lease_id.clone(),
                    reason: events::work::RoutingReason {
                        rule: "bench".into(),
                        candidates: vec!["agent-1".into()],
                    },
                }
                .into(),
                WorkCommand::Accept {
                    lease: lease.clone(),
                }
                .into(),
                WorkCommand::Complete {
                    lease,
                    summary: "done".into(),
                    output: None,
                    artifacts: vec![],
                }
                .into(),
            ];
            for command in commands {
                self.decide(command, &mut out);
            }
        }
        out
    }
}

/// Publishes in order, many acknowledgements outstanding (one connection keeps order).
async fn publish_in_order(js: &jetstream::Context, events: Vec<Vec<u8>>) {
    let mut pending = std::collections::VecDeque::new();
    for bytes in events {
        let subject = migrations::decode(&bytes).expect("decodes").subject();
        pending.push_back(js.publish(subject, bytes.into()).await.expect("publish"));
        if pending.len() >= 2048 {
            pending.pop_front().expect("one").await.expect("ack");
        }
    }
    for ack in pending {
        ack.await.expect("ack");
    }
}

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
    let mut workload = Workload::new();
    for size in sizes {
        let have = store.last_sequence().await.expect("last") as usize;
        if size > have {
            publish_in_order(&js, workload.next(size - have)).await;
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
            0,
            weft::nats::connections(),
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .expect("replay");
        let (at, bytes) = projection.read(|s| (s.sequence, s.to_snapshot()));
        drop(projection);
        store.save_snapshot(at, &bytes).await.expect("snapshot");
        let (ready, rss) = weft_ready(&server.url).await;
        println!(
            "  {:<50} {:>8.2} s   RSS {rss:.0} MB",
            format!("weft serve, snapshot of {:.1} MB", bytes.len() as f64 / 1e6),
            ready.as_secs_f64(),
        );
    }
}
