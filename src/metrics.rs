//! `/metrics` in the OpenMetrics text format Prometheus scrapes: histograms this process
//! observes as it works, and gauges read from the projected state at each scrape (the
//! projections keep counters, so a scrape costs the same whatever the backlog).

use projections::{SpinUpStatus, State, WorkStatus};
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
    outcome: String,
}

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
        for status in [
            SpinUpStatus::Triggered,
            SpinUpStatus::Started,
            SpinUpStatus::Completed,
            SpinUpStatus::Failed,
            SpinUpStatus::Stopped,
        ] {
            spin_ups
                .get_or_create(&ByOutcome {
                    project: project.clone(),
                    outcome: status.as_str().into(),
                })
                .set(p.spin_ups.count(status) as i64);
        }
    }
    registry.register("weft_work_items", "Work items by project and status", work);
    registry.register("weft_agents", "Agents by project and status", agents);
    registry.register("weft_spin_ups", "Spin-ups by project and outcome", spin_ups);
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
