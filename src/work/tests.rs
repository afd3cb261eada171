use events::work::*;
use events::{Envelope, Event};

use super::*;
use crate::store::Expect;

/// State plus the server's side of optimistic concurrency: the last sequence per subject.
struct World {
    state: State,
    seq: u64,
    subjects: std::collections::HashMap<String, u64>,
}

impl World {
    fn new() -> Self {
        World {
            state: State::default(),
            seq: 0,
            subjects: Default::default(),
        }
    }

    /// Appends like JetStream would: the decision's expectation must hold.
    fn record(&mut self, decision: Option<Decision>) {
        let d = decision.expect("a decision");
        let subject = format!("{}/{}", d.event.aggregate_kind().as_str(), d.aggregate_id);
        if let Expect::AggregateAt(expected) = d.expect {
            let actual = self.subjects.get(&subject).copied().unwrap_or(0);
            assert_eq!(
                expected,
                actual,
                "{} would conflict on {subject}",
                d.event.type_name()
            );
        }
        self.seq += 1;
        self.subjects.insert(subject, self.seq);
        self.state.apply(
            self.seq,
            &Envelope {
                id: format!("e{}", self.seq),
                project: "p".into(),
                aggregate: d.event.aggregate_kind(),
                aggregate_id: d.aggregate_id,
                schema_version: 1,
                time_ms: 1_000 * self.seq,
                actor: "test".into(),
                correlation_id: None,
                causation_id: None,
                event: d.event,
            },
        );
    }

    fn agent(&mut self, id: &str, agent_type: &str, boundaries: &[&str], capacity: u32) {
        let r = AgentRegistered {
            agent_type: agent_type.into(),
            capabilities: vec!["rust".into()],
            boundaries: boundaries.iter().map(|b| b.to_string()).collect(),
            max_concurrent_tasks: capacity,
            idle_timeout_ms: None,
            hostname: None,
            handle: None,
            spin_up_id: None,
            target_id: None,
        };
        let d = decide_register_agent(&self.state, "p", id, &r).unwrap();
        self.record(d);
    }

    fn submit(&mut self, id: &str, boundary: &str, priority: i64) {
        let submitted = validate_submit(
            SubmitRequest {
                description: format!("do {id}"),
                capability: "rust".into(),
                boundary: boundary.into(),
                priority: Some(priority),
                ..Default::default()
            },
            &WorkSettings::default(),
        )
        .unwrap();
        let d = decide_submit(&self.state, "p", id, &submitted).unwrap();
        self.record(d);
    }

    /// Assigns everything assignable; returns (work, agent) in order.
    fn assign_all(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Some(d) = decide_next_assignment(
            &self.state,
            "p",
            &RoutingPolicy::default(),
            u64::MAX,
            &format!("lease{}", self.seq),
        ) {
            if let Event::WorkAssigned(a) = &d.event {
                out.push((d.aggregate_id.clone(), a.agent_id.clone()));
            }
            self.record(Some(d));
        }
        out
    }

    fn work(&self, id: &str) -> &Work {
        self.state.project("p").unwrap().work.get(id).unwrap()
    }

    fn lease(&self, id: &str) -> (String, String) {
        let w = self.work(id);
        (w.assigned_to.clone().unwrap(), w.lease_id.clone().unwrap())
    }
}

#[test]
fn corporate_work_only_reaches_copilot_agents_that_list_corporate() {
    let mut w = World::new();
    w.agent("claude", "claude-code", &["corporate", "personal"], 5);
    w.agent("copilot-personal", "copilot-cli", &["personal"], 5);
    w.submit("secret", "corporate", 5);
    assert!(
        w.assign_all().is_empty(),
        "no agent may take corporate work yet"
    );
    assert_eq!(w.work("secret").status, WorkStatus::Pending);
    w.agent("copilot-corp", "copilot-cli", &["corporate"], 1);
    assert_eq!(
        w.assign_all(),
        vec![("secret".to_string(), "copilot-corp".to_string())]
    );
    let routing = w.work("secret").routing.clone().unwrap();
    assert!(
        routing.rule.contains("corporate: copilot-cli only"),
        "{}",
        routing.rule
    );
    assert_eq!(routing.candidates, vec!["copilot-corp"]);
}

#[test]
fn preference_capacity_priority_and_fifo() {
    let mut w = World::new();
    w.agent("copilot", "copilot-cli", &["personal"], 1);
    w.agent("claude", "claude-code", &["personal"], 2);
    w.submit("low", "personal", 1);
    w.submit("high-1", "personal", 9);
    w.submit("high-2", "personal", 9);
    w.submit("mid", "personal", 5);
    let assigned = w.assign_all();
    // Personal prefers claude-code; claude has room for 2, then copilot takes one.
    assert_eq!(
        assigned,
        vec![
            ("high-1".to_string(), "claude".to_string()),
            ("high-2".to_string(), "claude".to_string()),
            ("mid".to_string(), "copilot".to_string()),
        ]
    );
    assert_eq!(w.work("low").status, WorkStatus::Pending);
    let p = w.state.project("p").unwrap();
    assert!(p
        .agents
        .iter()
        .all(|a| a.active.len() as u32 <= a.max_concurrent_tasks));
}

#[test]
fn failures_back_off_then_dead_letter_and_can_be_retried() {
    let mut w = World::new();
    w.agent("a", "claude-code", &["personal"], 1);
    w.submit("job", "personal", 5);
    let settings = WorkSettings::default();
    for attempt in 1..=3 {
        assert_eq!(w.assign_all().len(), 1, "attempt {attempt}");
        let (agent, lease) = w.lease("job");
        let by = LeaseRef {
            work_id: "job",
            agent_id: &agent,
            lease_id: &lease,
        };
        let d = decide_fail(&w.state, "p", by, "boom", true, &settings, 10_000).unwrap();
        match (&d, attempt) {
            (
                Some(Decision {
                    event: Event::WorkFailed(f),
                    ..
                }),
                1,
            ) => assert_eq!(f.then, AfterFailure::Retry { at_ms: 11_000 }),
            (
                Some(Decision {
                    event: Event::WorkFailed(f),
                    ..
                }),
                2,
            ) => assert_eq!(f.then, AfterFailure::Retry { at_ms: 12_000 }),
            (
                Some(Decision {
                    event: Event::WorkFailed(f),
                    ..
                }),
                3,
            ) => assert_eq!(f.then, AfterFailure::DeadLettered),
            other => panic!("{other:?}"),
        }
        w.record(d);
    }
    assert_eq!(w.work("job").status, WorkStatus::DeadLettered);
    assert!(w.assign_all().is_empty());
    let d = decide_retry(&w.state, "p", "job").unwrap();
    w.record(d);
    assert_eq!(
        (w.work("job").status, w.work("job").attempts),
        (WorkStatus::Pending, 0)
    );
    assert!(matches!(
        decide_retry(&w.state, "p", "job"),
        Err(Rejection::Conflict(_))
    ));
}

#[test]
fn backoff_holds_items_until_their_time() {
    let mut w = World::new();
    w.agent("a", "claude-code", &["personal"], 1);
    w.submit("job", "personal", 5);
    w.assign_all();
    let (agent, lease) = w.lease("job");
    let by = LeaseRef {
        work_id: "job",
        agent_id: &agent,
        lease_id: &lease,
    };
    let d = decide_fail(
        &w.state,
        "p",
        by,
        "flaky",
        true,
        &WorkSettings::default(),
        50_000,
    )
    .unwrap();
    w.record(d);
    assert!(
        decide_next_assignment(&w.state, "p", &RoutingPolicy::default(), 50_500, "l").is_none()
    );
    assert!(
        decide_next_assignment(&w.state, "p", &RoutingPolicy::default(), 51_000, "l").is_some()
    );
}

#[test]
fn reports_are_fenced_by_lease_and_completion_is_idempotent() {
    let mut w = World::new();
    w.agent("a", "claude-code", &["personal"], 1);
    w.agent("b", "claude-code", &["personal"], 1);
    w.submit("job", "personal", 5);
    w.assign_all();
    let (agent, lease) = w.lease("job");
    let other = if agent == "a" { "b" } else { "a" };
    let stolen = LeaseRef {
        work_id: "job",
        agent_id: other,
        lease_id: &lease,
    };
    assert!(matches!(
        decide_accept(&w.state, "p", stolen),
        Err(Rejection::Conflict(_))
    ));
    let old = LeaseRef {
        work_id: "job",
        agent_id: &agent,
        lease_id: "old-lease",
    };
    assert!(matches!(
        decide_complete(&w.state, "p", old, "s", None, vec![]),
        Err(Rejection::Conflict(_))
    ));

    let by = LeaseRef {
        work_id: "job",
        agent_id: &agent,
        lease_id: &lease,
    };
    let d = decide_accept(&w.state, "p", by).unwrap();
    w.record(d);
    assert!(
        decide_accept(&w.state, "p", by).unwrap().is_none(),
        "accepting twice records nothing"
    );
    let d = decide_complete(&w.state, "p", by, "done", None, vec![]).unwrap();
    w.record(d);
    assert_eq!(w.work("job").status, WorkStatus::Completed);
    assert!(
        decide_complete(&w.state, "p", by, "done", None, vec![])
            .unwrap()
            .is_none(),
        "a repeated completion records nothing"
    );
    assert!(w
        .state
        .project("p")
        .unwrap()
        .agents
        .get(&agent)
        .unwrap()
        .active
        .is_empty());
}

#[test]
fn an_agent_going_offline_frees_its_leases() {
    let mut w = World::new();
    w.agent("a", "claude-code", &["personal"], 2);
    w.submit("j1", "personal", 5);
    w.submit("j2", "personal", 5);
    w.assign_all();
    let d = decide_agent_offline(
        &w.state,
        "p",
        "a",
        "heartbeat-missed",
        &WorkSettings::default(),
        5_000,
    )
    .unwrap();
    match &d {
        Some(Decision {
            event: Event::AgentWentOffline(e),
            ..
        }) => assert_eq!(e.freed.len(), 2),
        other => panic!("{other:?}"),
    }
    w.record(d);
    for id in ["j1", "j2"] {
        assert_eq!(w.work(id).status, WorkStatus::Pending);
        assert!(w.work(id).assigned_to.is_none());
    }
    assert!(
        decide_agent_offline(&w.state, "p", "a", "again", &WorkSettings::default(), 6_000)
            .unwrap()
            .is_none()
    );
    assert!(w.assign_all().is_empty(), "offline agents get nothing");
    // Another agent picks the freed items up: their versions still match their subjects.
    w.agent("b", "claude-code", &["personal"], 2);
    assert_eq!(w.assign_all().len(), 2);
    assert_eq!(w.work("j1").attempts, 2);
}

#[test]
fn cancel_rules() {
    let mut w = World::new();
    w.submit("job", "personal", 5);
    let d = decide_cancel(&w.state, "p", "job", None).unwrap();
    w.record(d);
    assert_eq!(w.work("job").status, WorkStatus::Cancelled);
    assert!(decide_cancel(&w.state, "p", "job", None).unwrap().is_none());
    assert!(matches!(
        decide_cancel(&w.state, "p", "nope", None),
        Err(Rejection::NotFound(_))
    ));
}

#[test]
fn submissions_are_validated_and_keys_give_stable_ids() {
    let bad = validate_submit(
        SubmitRequest {
            description: " ".into(),
            capability: "".into(),
            boundary: "x".into(),
            priority: Some(11),
            deadline: Some("tomorrow".into()),
            ..Default::default()
        },
        &WorkSettings::default(),
    );
    match bad {
        Err(Rejection::Invalid(e)) => {
            let fields: Vec<&str> = e.iter().map(|f| f.field.as_str()).collect();
            assert_eq!(
                fields,
                ["description", "capability", "priority", "deadline"]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(id_for_key("p", "k"), id_for_key("p", "k"));
    assert_ne!(id_for_key("p", "k"), id_for_key("q", "k"));
}

#[test]
fn a_policy_file_replaces_the_default_table() {
    let policy = RoutingPolicy::from_json(
        r#"{"boundaries": {"personal": {"allowedAgentTypes": ["codex"], "preferredAgentTypes": ["codex"]}}}"#,
    )
    .unwrap();
    let mut w = World::new();
    w.agent("claude", "claude-code", &["personal"], 1);
    w.submit("job", "personal", 5);
    assert!(decide_next_assignment(&w.state, "p", &policy, u64::MAX, "l").is_none());
    w.agent("codex", "codex", &["personal"], 1);
    let d = decide_next_assignment(&w.state, "p", &policy, u64::MAX, "l").unwrap();
    match d.event {
        Event::WorkAssigned(a) => {
            assert_eq!(a.agent_id, "codex");
            assert!(a.reason.rule.contains("codex only"), "{}", a.reason.rule);
        }
        other => panic!("{other:?}"),
    }
    let typo = RoutingPolicy::from_json(r#"{"boundaries": {"personal": {"allowed": ["codex"]}}}"#);
    assert!(typo.is_err_and(|e| e.contains("unknown field")));
}
