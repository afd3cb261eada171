//! Replaying the log from zero and advancing live state event by event (with snapshots
//! taken and restored, and redelivered events, at random points) must reach the same state.

use events::target::*;
use events::{AggregateKind, Envelope, Event, SCHEMA_VERSION};
use proptest::prelude::*;

use crate::State;

#[derive(Clone, Debug)]
enum Op {
    Register { id: u8, name: u8 },
    Update { id: u8, caps: u8 },
    Enable { id: u8 },
    Disable { id: u8, with_reason: bool },
    Remove { id: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    // Small pools so ids and names collide often: that is where folds go wrong.
    prop_oneof![
        (0u8..6, 0u8..4).prop_map(|(id, name)| Op::Register { id, name }),
        (0u8..6, 0u8..4).prop_map(|(id, caps)| Op::Update { id, caps }),
        (0u8..6).prop_map(|id| Op::Enable { id }),
        (0u8..6, any::<bool>()).prop_map(|(id, with_reason)| Op::Disable { id, with_reason }),
        (0u8..6).prop_map(|id| Op::Remove { id }),
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn live_state_with_snapshots_equals_replay_from_zero(
        ops in prop::collection::vec((op(), any::<bool>()), 0..80),
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
    assert_eq!(targets.last_sequence, 4);
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
