//! A real workload's events for the benchmarks that need a long log: an agent takes and
//! completes items (four events each), decided by the rules themselves.

use async_nats::jetstream;
use decide::{AgentCommand, Command, Settings, WorkCommand};
use events::{Envelope, SCHEMA_VERSION};
use projections::Project;

/// A workload's events, in log order: one agent, and items submitted, assigned, accepted
/// and completed one after another.
pub struct Workload {
    project: Project,
    sequence: u64,
    pub items: usize,
}

impl Workload {
    pub fn new() -> Self {
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
    pub fn next(&mut self, n: usize) -> Vec<Vec<u8>> {
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
                        workspace: None,
                        max_cost_usd: None,
                        resume_session: false,
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
                    workspace: None,
                    usage: None,
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
pub async fn publish_in_order(js: &jetstream::Context, events: Vec<Vec<u8>>) {
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
