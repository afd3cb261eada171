//! `/metrics` in the OpenMetrics text format Prometheus scrapes: histograms this process
//! observes as it works, and gauges and the spin-up histogram read from the projected state
//! at each scrape, so every instance shows the same fleet and a restart loses nothing. A
//! scrape walks the pending items and the spin-ups; everything else is a kept counter.
//! `deploy/grafana-dashboard.json` charts them.

use projections::{AgentStatus, SpinUpStatus, State, WorkStatus};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the latency histograms' buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

const SPIN_UP_OUTCOMES: [SpinUpStatus; 5] = [
    SpinUpStatus::Triggered,
    SpinUpStatus::Started,
    SpinUpStatus::Completed,
    SpinUpStatus::Failed,
    SpinUpStatus::Stopped,
];

pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByStatus {
    project: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByOutcome {
    project: String,
    mechanism: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByCapability {
    project: String,
    capability: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByAgentType {
    project: String,
    agent_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByMechanism {
    mechanism: String,
}

/// Upper bounds (seconds) of the spin-up latency buckets: a local process registers in a
/// second, a Kubernetes Job or a GitHub Actions runner in minutes.
const SPIN_UP_BUCKETS: [f64; 11] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// What a scrape shows besides the state.
pub struct Observed<'a> {
    /// Commits of a writer's rounds to the log, answered or not.
    pub commit_seconds: &'a Histogram,
    /// From an item being offered (submitted, or back in the queue) to its assignment.
    pub assignment_seconds: &'a Histogram,
    pub websocket_clients: usize,
    /// The last background verification of the log, if one has finished.
    pub audit: Option<crate::audit::LastAudit>,
}

pub fn render(state: &State, observed: Observed) -> String {
    let mut registry = Registry::default();
    let work = Family::<ByStatus, Gauge>::default();
    let agents = Family::<ByStatus, Gauge>::default();
    let spin_ups = Family::<ByOutcome, Gauge>::default();
    let queue = Family::<ByCapability, Gauge>::default();
    let slots = Family::<ByAgentType, Gauge>::default();
    let running = Family::<ByAgentType, Gauge>::default();
    let spin_up_seconds =
        Family::<ByMechanism, Histogram>::new_with_constructor(|| Histogram::new(SPIN_UP_BUCKETS));
    for (project, p) in &state.projects {
        let by = |status: &str| ByStatus {
            project: project.clone(),
            status: status.into(),
        };
        for status in WorkStatus::ALL {
            work.get_or_create(&by(status.as_str()))
                .set(p.work.count(status) as i64);
        }
        for status in ["online", "busy", "paused", "offline"] {
            let n = p
                .agents
                .count_by_shown_status()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, n)| n);
            agents.get_or_create(&by(status)).set(n as i64);
        }
        for (route, pending) in p.work.pending_by_route() {
            let (capability, _boundary) = route;
            queue
                .get_or_create(&ByCapability {
                    project: project.clone(),
                    capability: capability.clone(),
                })
                .inc_by(pending.count() as i64);
        }
        for agent in p.agents.iter().filter(|a| a.status == AgentStatus::Online) {
            let by = ByAgentType {
                project: project.clone(),
                agent_type: agent.agent_type.clone(),
            };
            slots
                .get_or_create(&by)
                .inc_by(i64::from(agent.max_concurrent_tasks));
            running.get_or_create(&by).inc_by(agent.active.len() as i64);
        }
        // Every mechanism and outcome has a series (zero included), so a rate or a ratio
        // never meets a missing one.
        let mechanism_of = |s: &projections::SpinUp| {
            s.mechanism
                .or_else(|| p.targets.get(&s.target_id).map(|t| t.config.mechanism()))
                .map_or("unknown", |m| m.as_str())
        };
        for mechanism in events::target::Mechanism::ALL {
            for status in SPIN_UP_OUTCOMES {
                let _ = spin_ups.get_or_create(&ByOutcome {
                    project: project.clone(),
                    mechanism: mechanism.as_str().into(),
                    outcome: status.as_str().into(),
                });
            }
        }
        for spin_up in p.spin_ups.iter() {
            let mechanism = mechanism_of(spin_up);
            spin_ups
                .get_or_create(&ByOutcome {
                    project: project.clone(),
                    mechanism: mechanism.into(),
                    outcome: spin_up.status.as_str().into(),
                })
                .inc();
            if let Some(completed) = spin_up.completed_at_ms {
                let seconds = completed.saturating_sub(spin_up.triggered_at_ms) as f64 / 1000.0;
                spin_up_seconds
                    .get_or_create(&ByMechanism {
                        mechanism: mechanism.into(),
                    })
                    .observe(seconds);
            }
        }
    }
    registry.register("weft_work_items", "Work items by project and status", work);
    registry.register("weft_agents", "Agents by project and status", agents);
    registry.register(
        "weft_spin_ups",
        "Spin-ups by project, mechanism and outcome",
        spin_ups,
    );
    registry.register(
        "weft_queue_depth",
        "Work items waiting for an agent (pending), by project and capability",
        queue,
    );
    registry.register(
        "weft_agent_task_slots",
        "Tasks the online agents can run at once, by project and agent type",
        slots,
    );
    registry.register(
        "weft_agent_tasks_running",
        "Tasks the online agents hold now (utilisation: running / slots)",
        running,
    );
    registry.register(
        "weft_spin_up_seconds",
        "From a spin-up's trigger to its agent's registration, by mechanism, over the spin-ups the log holds",
        spin_up_seconds,
    );
    registry.register(
        "weft_assignment_latency_seconds",
        "Time from an item being offered to its assignment, as this instance assigned them",
        observed.assignment_seconds.clone(),
    );
    registry.register(
        "weft_event_commit_seconds",
        "Commits of a round of commands to the event log, answered or not",
        observed.commit_seconds.clone(),
    );
    let sequence = Gauge::<i64>::default();
    sequence.set(state.sequence as i64);
    registry.register(
        "weft_event_log_sequence",
        "Last event folded into the live state",
        sequence,
    );
    let clients = Gauge::<i64>::default();
    clients.set(observed.websocket_clients as i64);
    registry.register(
        "weft_websocket_clients",
        "Open WebSocket connections",
        clients,
    );
    if let Some(audit) = observed.audit {
        let ok = Gauge::<i64>::default();
        ok.set(i64::from(audit.failed.is_empty()));
        registry.register(
            "weft_audit_ok",
            "Whether the last background verification of the log held (1) or not (0)",
            ok,
        );
        let failed = Gauge::<i64>::default();
        failed.set(audit.failed.len() as i64);
        registry.register(
            "weft_audit_failed_checks",
            "Checks that did not hold in the last background verification",
            failed,
        );
        let finished = Gauge::<i64>::default();
        finished.set((audit.finished_ms / 1000) as i64);
        registry.register(
            "weft_audit_last_run_timestamp_seconds",
            "When the last background verification finished (Unix time)",
            finished,
        );
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}
