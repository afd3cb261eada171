//! Replaying the log from zero and advancing live state event by event (with snapshots
//! taken and restored, and redelivered events, at random points) must reach the same state.

use events::target::*;
use events::{AggregateKind, Envelope, Event, SCHEMA_VERSION};
use proptest::prelude::*;

use crate::State;

#[derive(Clone, Debug)]
enum Op {
    Register {
        id: u8,
        name: u8,
    },
    Update {
        id: u8,
        caps: u8,
    },
    Enable {
        id: u8,
    },
    Disable {
        id: u8,
        with_reason: bool,
    },
    Remove {
        id: u8,
    },
    AgentJoins {
        agent: u8,
        slots: u8,
    },
    AgentLeaves {
        agent: u8,
        freeing: u8,
        lease: u8,
    },
    Submit {
        work: u8,
        priority: u8,
    },
    Assign {
        work: u8,
        agent: u8,
        lease: u8,
    },
    Start {
        work: u8,
        agent: u8,
        lease: u8,
    },
    Complete {
        work: u8,
        agent: u8,
        lease: u8,
    },
    Fail {
        work: u8,
        agent: u8,
        lease: u8,
        dead: bool,
    },
    Cancel {
        work: u8,
    },
    Retry {
        work: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    // Small pools so ids and names collide often: that is where folds go wrong.
    prop_oneof![
        (0u8..6, 0u8..4).prop_map(|(id, name)| Op::Register { id, name }),
        (0u8..6, 0u8..4).prop_map(|(id, caps)| Op::Update { id, caps }),
        (0u8..6).prop_map(|id| Op::Enable { id }),
        (0u8..6, any::<bool>()).prop_map(|(id, with_reason)| Op::Disable { id, with_reason }),
        (0u8..6).prop_map(|id| Op::Remove { id }),
        (0u8..2, 1u8..3).prop_map(|(agent, slots)| Op::AgentJoins { agent, slots }),
        (0u8..3, 0u8..2, 0u8..2).prop_map(|(agent, freeing, lease)| Op::AgentLeaves {
            agent,
            freeing,
            lease
        }),
        (0u8..3, 1u8..10).prop_map(|(work, priority)| Op::Submit { work, priority }),
        (0u8..3, 0u8..2, 0u8..2).prop_map(|(work, agent, lease)| Op::Assign { work, agent, lease }),
        (0u8..3, 0u8..2, 0u8..2).prop_map(|(work, agent, lease)| Op::Start { work, agent, lease }),
        (0u8..3, 0u8..2, 0u8..2).prop_map(|(work, agent, lease)| Op::Complete {
            work,
            agent,
            lease
        }),
        (0u8..3, 0u8..2, 0u8..2, any::<bool>()).prop_map(|(work, agent, lease, dead)| Op::Fail {
            work,
            agent,
            lease,
            dead
        }),
        (0u8..3).prop_map(|work| Op::Cancel { work }),
        (0u8..3).prop_map(|work| Op::Retry { work }),
    ]
}

fn envelope(i: usize, project: &str, op: &Op) -> Envelope {
    let (id, event) = match op {
        Op::Register { id, name } => (
            *id,
            Event::TargetRegistered(TargetRegistered {
                target_id: format!("t{id}"),
                name: format!("name-{name}"),
                description: i.is_multiple_of(2).then(|| format!("d{i}")),
                agent_type: "claude-code".into(),
                capabilities: vec!["rust".into()],
                boundaries: vec!["personal".into(), "open-source".into()],
                config: MechanismConfig::Local(LocalConfig {
                    command: format!("agent {i}"),
                    ..Default::default()
                }),
                health_check: i.is_multiple_of(3).then_some(HealthCheckSettings {
                    enabled: true,
                    interval_ms: 300_000,
                    timeout_ms: 10_000,
                }),
                tags: vec![],
                max_agents: None,
                registered_by: "api".into(),
            }),
        ),
        Op::Update { id, caps } => (
            *id,
            Event::TargetUpdated(TargetUpdated {
                capabilities: Some((0..*caps).map(|c| format!("cap{c}")).collect()),
                tags: caps.is_multiple_of(2).then(|| vec!["t".into()]),
                ..Default::default()
            }),
        ),
        Op::Enable { id } => (*id, Event::TargetEnabled(TargetEnabled {})),
        Op::Disable { id, with_reason } => (
            *id,
            Event::TargetDisabled(TargetDisabled {
                reason: with_reason.then(|| "maintenance".into()),
            }),
        ),
        Op::Remove { id } => (*id, Event::TargetRemoved(TargetRemoved {})),
        other => return work_envelope(i, project, other),
    };
    Envelope {
        id: format!("ev{i}"),
        project: project.into(),
        aggregate: AggregateKind::Target,
        aggregate_id: format!("t{id}"),
        schema_version: SCHEMA_VERSION,
        time_ms: 1_000 * i as u64,
        actor: "test".into(),
        correlation_id: None,
        causation_id: None,
        event,
    }
}

/// Work and agent events, including ones that do not fit the state (a lease nobody holds,
/// an agent that never joined): the fold must treat those the same live and in a replay.
fn work_envelope(i: usize, project: &str, op: &Op) -> Envelope {
    use events::work::*;
    let lease = |l: &u8| format!("lease{l}");
    let agent = |a: &u8| format!("agent{a}");
    let (kind, id, event) = match op {
        Op::AgentJoins { agent: a, slots } => (
            AggregateKind::Agent,
            agent(a),
            Event::AgentRegistered(AgentRegistered {
                agent_type: "claude-code".into(),
                capabilities: vec!["rust".into()],
                boundaries: vec!["personal".into()],
                max_concurrent_tasks: u32::from(*slots),
                idle_timeout_ms: None,
                hostname: None,
                handle: None,
                spin_up_id: None,
                target_id: None,
            }),
        ),
        Op::AgentLeaves {
            agent: a,
            freeing,
            lease: l,
        } => (
            AggregateKind::Agent,
            agent(a),
            Event::AgentWentOffline(AgentWentOffline {
                reason: "heartbeat-missed".into(),
                freed: vec![FreedLease {
                    work_id: format!("w{freeing}"),
                    lease_id: lease(l),
                    then: AfterFailure::Retry { at_ms: 99 },
                }],
            }),
        ),
        Op::Submit { work, priority } => (
            AggregateKind::Work,
            format!("w{work}"),
            Event::WorkSubmitted(WorkSubmitted {
                task_id: format!("task{work}"),
                description: "d".into(),
                capability: "rust".into(),
                boundary: "personal".into(),
                priority: *priority,
                preferred_agent_type: None,
                required_agent_type: None,
                deadline: None,
                context_data: Some(r#"{"k":[1,2]}"#.into()),
                max_attempts: 3,
                idempotency_key: None,
                workspace: None,
                max_cost_usd: None,
                resume_session: false,
            }),
        ),
        Op::Assign {
            work,
            agent: a,
            lease: l,
        } => (
            AggregateKind::Work,
            format!("w{work}"),
            Event::WorkAssigned(WorkAssigned {
                agent_id: agent(a),
                lease_id: lease(l),
                attempt: 1,
                reason: RoutingReason {
                    rule: "r".into(),
                    candidates: vec![agent(a)],
                },
            }),
        ),
        Op::Start {
            work,
            agent: a,
            lease: l,
        } => (
            AggregateKind::Work,
            format!("w{work}"),
            Event::WorkStarted(WorkStarted {
                agent_id: agent(a),
                lease_id: lease(l),
            }),
        ),
        Op::Complete {
            work,
            agent: a,
            lease: l,
        } => (
            AggregateKind::Work,
            format!("w{work}"),
            Event::WorkCompleted(WorkCompleted {
                agent_id: agent(a),
                lease_id: lease(l),
                summary: "s".into(),
                output: None,
                artifacts: vec![],
                workspace: None,
                usage: None,
            }),
        ),
        Op::Fail {
            work,
            agent: a,
            lease: l,
            dead,
        } => (
            AggregateKind::Work,
            format!("w{work}"),
            Event::WorkFailed(WorkFailed {
                agent_id: agent(a),
                lease_id: lease(l),
                error: "e".into(),
                recoverable: true,
                then: if *dead {
                    AfterFailure::DeadLettered
                } else {
                    AfterFailure::Retry { at_ms: 5 }
                },
                workspace: None,
                usage: None,
            }),
        ),
        Op::Cancel { work } => (
            AggregateKind::Work,
            format!("w{work}"),
            Event::WorkCancelled(Default::default()),
        ),
        Op::Retry { work } => (
            AggregateKind::Work,
            format!("w{work}"),
            Event::WorkRetried(Default::default()),
        ),
        target_op => unreachable!("{target_op:?} is a target operation"),
    };
    Envelope {
        id: format!("ev{i}"),
        project: project.into(),
        aggregate: kind,
        aggregate_id: id,
        schema_version: SCHEMA_VERSION,
        time_ms: 1_000 * i as u64,
        actor: "test".into(),
        correlation_id: None,
        causation_id: None,
        event,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn live_state_with_snapshots_equals_replay_from_zero(
        ops in prop::collection::vec((op(), any::<bool>()), 0..120),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        redeliveries in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let log: Vec<(u64, Envelope)> = ops
            .iter()
            .enumerate()
            .map(|(i, (op, second_project))| {
                let project = if *second_project { "p2" } else { "p1" };
                // Sequences have gaps, as they do when other streams' subjects interleave.
                (3 * i as u64 + 1, envelope(i, project, op))
            })
            .collect();

        let mut replayed = State::default();
        for (seq, e) in &log {
            replayed.apply(*seq, e);
        }

        let cut_points: Vec<usize> = cuts.iter().map(|c| c.index(log.len() + 1)).collect();
        let redeliver_at: Vec<usize> = redeliveries.iter().map(|c| c.index(log.len() + 1)).collect();
        let mut live = State::default();
        for (i, (seq, e)) in log.iter().enumerate() {
            if cut_points.contains(&i) {
                live = State::from_snapshot(&live.to_snapshot()).expect("own snapshot reads back");
            }
            if redeliver_at.contains(&i) && i > 0 {
                let (old_seq, old) = &log[i / 2];
                prop_assert_eq!(live.apply(*old_seq, old), crate::Applied::AlreadyApplied);
            }
            live.apply(*seq, e);
        }

        prop_assert_eq!(live.digest(), replayed.digest());
        prop_assert_eq!(&live, &replayed);

        // Invariants of the work fold, whatever the history.
        for project in live.projects.values() {
            for agent in project.agents.iter() {
                for id in &agent.active {
                    let item = project.work.get(id);
                    prop_assert!(item.is_some_and(|w| w.status.is_leased() && w.assigned_to.as_deref() == Some(agent.id.as_str())));
                }
            }
            for work in project.work.iter() {
                let in_queue = project.work.queue().any(|q| q.id == work.id);
                prop_assert_eq!(in_queue, work.status == crate::WorkStatus::Pending);
            }
            // Every index agrees with a recount of what it indexes.
            for status in crate::WorkStatus::ALL {
                let counted = project.work.iter().filter(|w| w.status == status).count();
                prop_assert_eq!(project.work.count(status), counted);
                prop_assert_eq!(project.work.listed(Some(status), None).count(), counted);
            }
            prop_assert_eq!(project.work.listed(None, None).count(), project.work.len());
            let by_route: usize = project.work.pending_by_route().map(|(route, items)| {
                items.filter(|w| &w.route() == route).count()
            }).sum();
            prop_assert_eq!(by_route, project.work.count(crate::WorkStatus::Pending));
            for agent in project.agents.iter() {
                for cap in &agent.capabilities {
                    for boundary in &agent.boundaries {
                        let route = (cap.clone(), boundary.clone());
                        let listed = project.agents.available_for(&route).any(|a| a.id == agent.id);
                        prop_assert_eq!(listed, agent.is_available());
                    }
                }
            }
            let shown: usize = project.agents.count_by_shown_status().map(|(_, n)| n).sum();
            prop_assert_eq!(shown, project.agents.len());
            for status in [crate::TargetStatus::Available, crate::TargetStatus::InUse, crate::TargetStatus::Disabled] {
                let counted = project.targets.iter().filter(|t| t.status == status).count();
                prop_assert_eq!(project.targets.count(status), counted);
            }
            for target in project.targets.iter() {
                for cap in &target.capabilities {
                    for boundary in &target.boundaries {
                        let route = (cap.clone(), boundary.clone());
                        prop_assert!(project.targets.serving(&route).any(|t| t.id == target.id));
                    }
                }
            }
            let routes: std::collections::BTreeSet<(String, String)> = project.targets.iter()
                .flat_map(|t| t.capabilities.iter().flat_map(move |c| t.boundaries.iter().map(move |b| (c.clone(), b.clone()))))
                .collect();
            for route in &routes {
                let counted = project.targets.iter().filter(|t| t.capabilities.contains(&route.0) && t.boundaries.contains(&route.1)).count();
                prop_assert_eq!(project.targets.serving(route).count(), counted);
            }
        }
    }
}

#[test]
fn digest_changes_with_state() {
    let mut state = State::default();
    let empty = state.digest();
    state.apply(1, &envelope(0, "p", &Op::Register { id: 1, name: 1 }));
    let one = state.digest();
    assert_ne!(empty, one);
    state.apply(
        2,
        &envelope(
            1,
            "p",
            &Op::Disable {
                id: 1,
                with_reason: false,
            },
        ),
    );
    assert_ne!(one, state.digest());
}

#[test]
fn names_are_unique_and_reusable_after_removal() {
    let mut state = State::default();
    state.apply(1, &envelope(0, "p", &Op::Register { id: 1, name: 7 }));
    // A second registration with the same name is not trusted.
    state.apply(2, &envelope(1, "p", &Op::Register { id: 2, name: 7 }));
    let targets = &state.project("p").unwrap().targets;
    assert_eq!(targets.len(), 1);
    assert_eq!(targets.by_name("name-7").unwrap().id, "t1");

    state.apply(3, &envelope(2, "p", &Op::Remove { id: 1 }));
    state.apply(4, &envelope(3, "p", &Op::Register { id: 2, name: 7 }));
    let targets = &state.project("p").unwrap().targets;
    assert_eq!(targets.get_by_id_or_name("name-7").unwrap().id, "t2");
    assert!(targets.get("t1").is_none());
}

#[test]
fn a_foreign_snapshot_format_is_ignored() {
    assert!(State::from_snapshot(b"not a snapshot").is_none());
    #[derive(serde::Serialize)]
    struct Future {
        format: u32,
        state: State,
    }
    let future = rmp_serde::to_vec_named(&Future {
        format: 99,
        state: State::default(),
    })
    .unwrap();
    assert!(State::from_snapshot(&future).is_none());
}
