use events::spin_up::{SpinUpStarted, SpinUpTriggered};
use events::target::{HealthCheckSettings, LocalConfig, MechanismConfig, TargetRegistered};
use events::Event;
use projections::{AgentStatus, SpinUpStatus, WorkStatus};

use super::*;
use crate::testing::World;

fn liveness_since(ms: u64) -> Liveness {
    Liveness {
        last_heard_ms: HashMap::new(),
        listening_since_ms: ms,
    }
}

fn offline_ids(w: &World, liveness: &Liveness) -> Vec<String> {
    silent_agents(w.project(), liveness, &w.settings.timing, w.now_ms)
        .into_iter()
        .map(|c| match c {
            AgentCommand::GoOffline { agent_id, .. } => agent_id,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn an_agent_that_registered_after_the_last_sweep_is_never_offline() {
    let mut w = World::default();
    // This instance has listened for far longer than the agent timeout before it joins.
    let liveness = liveness_since(w.now_ms);
    w.after_ms(10 * w.settings.timing.agent_timeout_ms);
    w.agent("late", "claude-code", &["personal"], 1);
    assert!(offline_ids(&w, &liveness).is_empty(), "just registered");
    w.after_ms(w.settings.timing.agent_timeout_ms);
    assert!(
        offline_ids(&w, &liveness).is_empty(),
        "a full window from its registration"
    );
    w.after_ms(1);
    assert_eq!(offline_ids(&w, &liveness), ["late"]);
}

#[test]
fn heartbeats_keep_an_agent_online_and_silence_after_them_counts() {
    let mut w = World::default();
    let mut liveness = liveness_since(w.now_ms);
    w.agent("a", "claude-code", &["personal"], 1);
    let timeout = w.settings.timing.agent_timeout_ms;
    for _ in 0..10 {
        w.after_ms(timeout / 2);
        liveness.heard("a", w.now_ms);
        assert!(offline_ids(&w, &liveness).is_empty());
    }
    w.after_ms(timeout + 1);
    assert_eq!(offline_ids(&w, &liveness), ["a"]);
}

#[test]
fn an_instance_that_just_started_listening_gives_every_agent_a_fresh_window() {
    let mut w = World::default();
    w.agent("a", "claude-code", &["personal"], 1);
    let timeout = w.settings.timing.agent_timeout_ms;
    // Weft reconnects to NATS long after the agent's last heartbeat it heard.
    w.after_ms(5 * timeout);
    let mut liveness = liveness_since(w.now_ms);
    liveness
        .last_heard_ms
        .insert("a".into(), w.now_ms - 5 * timeout);
    assert!(offline_ids(&w, &liveness).is_empty());
    w.after_ms(timeout + 1);
    assert_eq!(offline_ids(&w, &liveness), ["a"]);
}

#[test]
fn offline_agents_are_not_swept_again_and_a_rejoin_starts_a_new_window() {
    let mut w = World::default();
    let liveness = liveness_since(w.now_ms);
    w.agent("a", "claude-code", &["personal"], 1);
    w.after_ms(w.settings.timing.agent_timeout_ms + 1);
    let events = w.run_due(&liveness);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::AgentWentOffline(_))));
    assert_eq!(
        w.project().agents.get("a").unwrap().status,
        AgentStatus::Offline
    );
    assert!(offline_ids(&w, &liveness).is_empty());
    w.agent("a", "claude-code", &["personal"], 1);
    assert!(offline_ids(&w, &liveness).is_empty(), "rejoined just now");
}

#[test]
fn an_assignment_is_taken_back_exactly_when_its_accept_window_passed() {
    let mut w = World::default();
    w.agent("a", "claude-code", &["personal"], 1);
    w.submit("job", "personal", 5);
    w.assign_all();
    let window = w.settings.timing.accept_timeout_ms;
    w.after_ms(window);
    assert!(
        unaccepted_assignments(w.project(), &w.settings.timing, w.now_ms).is_empty(),
        "the window is still open at its last millisecond"
    );
    w.after_ms(1);
    let due = unaccepted_assignments(w.project(), &w.settings.timing, w.now_ms);
    assert_eq!(due.len(), 1);
    for c in due {
        w.when(c).unwrap();
    }
    assert_eq!(w.work("job").status, WorkStatus::Pending);
    assert_eq!(
        w.work("job").error.as_ref().unwrap().message,
        "lease expired: not accepted in time"
    );
}

#[test]
fn an_accepted_assignment_is_never_taken_back_for_the_accept_window() {
    let mut w = World::default();
    w.agent("a", "claude-code", &["personal"], 1);
    w.submit("job", "personal", 5);
    w.assign_all();
    let lease = w.lease("job");
    w.when(crate::WorkCommand::Accept { lease }).unwrap();
    w.after_ms(10 * w.settings.timing.accept_timeout_ms);
    assert!(unaccepted_assignments(w.project(), &w.settings.timing, w.now_ms).is_empty());
}

#[test]
fn an_agent_holding_a_lease_is_never_asked_to_scale_down() {
    let mut w = World::default();
    w.agent("busy", "claude-code", &["personal"], 1);
    w.agent("idle", "claude-code", &["personal"], 1);
    w.submit("job", "personal", 5);
    w.settings.routing = Default::default();
    let assigned = w.assign_all();
    assert_eq!(assigned.len(), 1);
    let holder = assigned[0].1.clone();
    w.after_ms(100 * w.settings.timing.idle_timeout_ms);
    let asked: Vec<String> = idle_agents(w.project(), &w.settings.timing, w.now_ms)
        .into_iter()
        .map(|c| match c {
            AgentCommand::RequestShutdown { agent_id, .. } => agent_id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(!asked.contains(&holder), "{asked:?}");
    assert_eq!(asked.len(), 1, "the other one is idle");
}

#[test]
fn idle_means_longer_than_the_agents_own_timeout_and_zero_means_never() {
    let mut w = World::default();
    w.agent("a", "claude-code", &["personal"], 1);
    let timeout = w.settings.timing.idle_timeout_ms;
    w.after_ms(timeout);
    assert!(idle_agents(w.project(), &w.settings.timing, w.now_ms).is_empty());
    w.after_ms(1);
    assert_eq!(
        idle_agents(w.project(), &w.settings.timing, w.now_ms).len(),
        1
    );
    // An agent that says 0 is never idle.
    let registration = events::work::AgentRegistered {
        agent_type: "claude-code".into(),
        capabilities: vec!["rust".into()],
        boundaries: vec!["personal".into()],
        max_concurrent_tasks: 1,
        idle_timeout_ms: Some(0),
        hostname: None,
        handle: None,
        spin_up_id: None,
        target_id: None,
    };
    w.when(AgentCommand::Register {
        agent_id: "a".into(),
        registration,
        now_ms: w.now_ms,
    })
    .unwrap();
    w.after_ms(1000 * timeout);
    assert!(idle_agents(w.project(), &w.settings.timing, w.now_ms).is_empty());
}

fn local_target(w: &mut World, id: &str, max_agents: u32) {
    w.given(
        id,
        Event::TargetRegistered(TargetRegistered {
            target_id: id.into(),
            name: format!("{id}-name"),
            description: None,
            agent_type: "claude-code".into(),
            capabilities: vec!["rust".into()],
            boundaries: vec!["personal".into()],
            config: MechanismConfig::Local(LocalConfig {
                command: "weft agent".into(),
                ..Default::default()
            }),
            health_check: Some(HealthCheckSettings {
                enabled: true,
                interval_ms: 60_000,
                timeout_ms: 1_000,
            }),
            tags: vec![],
            max_agents: Some(max_agents),
            registered_by: "api".into(),
        }),
    );
}

fn triggers(duties: &[Duty]) -> usize {
    duties
        .iter()
        .filter(|d| matches!(d, Duty::Decide(c) if matches!(**c, Command::SpinUp(SpinUpCommand::Trigger { .. }))))
        .count()
}

#[test]
fn spin_ups_in_flight_count_as_capacity_and_max_agents_holds() {
    let mut w = World::default();
    local_target(&mut w, "t", 3);
    for i in 0..20 {
        w.submit(&format!("job{i}"), "personal", 5);
    }
    let liveness = liveness_since(w.now_ms);
    assert_eq!(
        triggers(&w.due(&liveness)),
        3,
        "three agents' worth, not twenty"
    );
    w.run_due(&liveness);
    assert_eq!(w.project().spin_ups.iter().count(), 3);
    assert_eq!(
        triggers(&w.due(&liveness)),
        0,
        "in flight counts as capacity"
    );
}

#[test]
fn a_spin_up_whose_agent_never_registers_fails_and_the_target_cools_down() {
    let mut w = World::default();
    local_target(&mut w, "t", 1);
    w.submit("job", "personal", 5);
    let liveness = liveness_since(w.now_ms);
    w.run_due(&liveness);
    let id = w.project().spin_ups.iter().next().unwrap().id.clone();
    w.given(
        &id,
        Event::SpinUpStarted(SpinUpStarted {
            detail: "pid 1".into(),
            pid: Some(1),
        }),
    );
    let timeout = w.settings.timing.spin_up_timeout_ms;
    w.after_ms(timeout);
    assert!(overdue_spin_ups(w.project(), &w.settings.timing, w.now_ms).is_empty());
    w.after_ms(1);
    assert_eq!(
        overdue_spin_ups(w.project(), &w.settings.timing, w.now_ms).len(),
        1
    );
    w.run_due(&liveness);
    assert_eq!(
        w.project().spin_ups.get(&id).unwrap().status,
        SpinUpStatus::Failed
    );
    assert_eq!(triggers(&w.due(&liveness)), 0, "cooling down");
    w.after_ms(w.settings.spin_up.cooldown_ms);
    assert_eq!(
        triggers(&w.due(&liveness)),
        1,
        "tried again after the cooldown"
    );
}

#[test]
fn what_a_spin_up_started_is_stopped_once_its_agent_is_gone_or_overstays() {
    let mut w = World::default();
    local_target(&mut w, "t", 2);
    for (spin_up, agent) in [("s1", "a1"), ("s2", "a2")] {
        w.given(
            spin_up,
            Event::SpinUpTriggered(SpinUpTriggered {
                target_id: "t".into(),
                target_name: "t-name".into(),
                agent_type: "claude-code".into(),
                reason: "manual".into(),
                work_id: None,
                capability: None,
                boundary: None,
            }),
        );
        let registration = events::work::AgentRegistered {
            agent_type: "claude-code".into(),
            capabilities: vec!["rust".into()],
            boundaries: vec!["personal".into()],
            max_concurrent_tasks: 1,
            idle_timeout_ms: None,
            hostname: None,
            handle: None,
            spin_up_id: Some(spin_up.into()),
            target_id: Some("t".into()),
        };
        let events = w
            .when(AgentCommand::Register {
                agent_id: agent.into(),
                registration,
                now_ms: w.now_ms,
            })
            .unwrap();
        assert_eq!(events.len(), 2, "registration completes the spin-up");
    }
    let timing = w.settings.timing.clone();
    assert!(spin_ups_to_stop(w.project(), &timing, w.now_ms).is_empty());
    w.when(AgentCommand::GoOffline {
        agent_id: "a1".into(),
        reason: "shutdown".into(),
        now_ms: w.now_ms,
    })
    .unwrap();
    w.when(AgentCommand::RequestShutdown {
        agent_id: "a2".into(),
        reason: "idle-timeout".into(),
        graceful: true,
    })
    .unwrap();
    let stop = |w: &World| -> Vec<Duty> { spin_ups_to_stop(w.project(), &timing, w.now_ms) };
    assert_eq!(
        stop(&w),
        vec![Duty::StopSpinUp {
            spin_up_id: "s1".into(),
            reason: "agent offline".into()
        }]
    );
    w.after_ms(timing.scale_down_grace_ms + 1);
    assert_eq!(stop(&w).len(), 2, "a2 overstayed its shutdown request");
}

#[test]
fn health_checks_are_due_at_each_targets_interval() {
    let mut w = World::default();
    local_target(&mut w, "t", 1);
    assert_eq!(
        health_checks_due(w.project(), w.now_ms).len(),
        1,
        "never checked yet"
    );
    w.when(crate::TargetCommand::RecordHealth {
        key: "t".into(),
        healthy: true,
        error: None,
        latency_ms: 3,
    })
    .unwrap();
    w.after_ms(59_999);
    assert!(health_checks_due(w.project(), w.now_ms).is_empty());
    w.after_ms(1);
    assert_eq!(health_checks_due(w.project(), w.now_ms).len(), 1);
}

#[test]
fn timer_settings_that_would_mark_live_agents_offline_are_refused() {
    let mut timing = Timing {
        heartbeat_interval_ms: 5_000,
        agent_timeout_ms: 14_999,
        ..Default::default()
    };
    assert!(timing.check().is_err());
    timing.agent_timeout_ms = 15_000;
    assert!(timing.check().is_ok());
}

#[test]
fn work_no_agent_can_take_waits_and_starts_nothing_without_a_target() {
    let mut w = World::default();
    w.agent("copilot", "copilot-cli", &["corporate"], 1);
    w.submit("personal-job", "personal", 5);
    let mut liveness = liveness_since(w.now_ms);
    for _ in 0..5 {
        liveness.heard("copilot", w.now_ms);
        assert!(w.run_due(&liveness).is_empty(), "nothing to do");
        w.after_ms(10_000);
    }
    assert_eq!(w.work("personal-job").status, WorkStatus::Pending);
}

#[test]
fn an_unhealthy_or_cooling_target_starts_nothing_and_submissions_say_so() {
    let mut w = World::default();
    local_target(&mut w, "t", 5);
    w.submit("job", "personal", 5);
    let will_spin_up = |w: &World| {
        crate::routing::will_spin_up(
            &w.settings.routing,
            &w.settings.spin_up,
            w.project(),
            w.work("job"),
            w.now_ms,
        )
    };
    assert!(will_spin_up(&w));
    w.when(crate::TargetCommand::RecordHealth {
        key: "t".into(),
        healthy: false,
        error: Some("no such program".into()),
        latency_ms: 1,
    })
    .unwrap();
    let liveness = liveness_since(w.now_ms);
    assert_eq!(triggers(&w.due(&liveness)), 0, "unhealthy");
    assert!(!will_spin_up(&w));
    w.when(crate::TargetCommand::RecordHealth {
        key: "t".into(),
        healthy: true,
        error: None,
        latency_ms: 1,
    })
    .unwrap();
    w.run_due(&liveness);
    let id = w.project().spin_ups.iter().next().unwrap().id.clone();
    w.when(SpinUpCommand::Fail {
        spin_up_id: id,
        stage: "start".into(),
        error: "HTTP 403".into(),
    })
    .unwrap();
    assert_eq!(triggers(&w.due(&liveness)), 0, "cooling down");
    assert!(!will_spin_up(&w));
    w.after_ms(w.settings.spin_up.cooldown_ms);
    assert_eq!(triggers(&w.due(&liveness)), 1);
}

#[test]
fn credentials_of_a_spin_up_are_revoked_once_it_has_ended() {
    let mut w = World::default();
    local_target(&mut w, "t", 1);
    w.submit("job", "personal", 5);
    let liveness = liveness_since(w.now_ms);
    w.run_due(&liveness);
    let id = w.project().spin_ups.iter().next().unwrap().id.clone();
    let issue = crate::AccessCommand::IssueCredential {
        id: "cred_1".into(),
        agent_id: id.clone(),
        public_key: format!("U{}", "A".repeat(55)),
        spin_up_id: Some(id.clone()),
        target_id: Some("t".into()),
    };
    w.when(issue).unwrap();
    w.given(
        &id,
        Event::SpinUpStarted(SpinUpStarted {
            detail: "pid 1".into(),
            pid: Some(1),
        }),
    );
    assert!(
        ended_spin_ups_credentials(w.project()).is_empty(),
        "a spin-up still going keeps its credentials"
    );
    w.after_ms(w.settings.timing.spin_up_timeout_ms + 1);
    w.run_due(&liveness);
    assert_eq!(
        w.project().spin_ups.get(&id).unwrap().status,
        SpinUpStatus::Failed
    );
    w.run_due(&liveness);
    assert_eq!(
        w.project().credentials.valid().count(),
        0,
        "revoked once it failed"
    );
    assert!(
        ended_spin_ups_credentials(w.project()).is_empty(),
        "and only once"
    );
}
