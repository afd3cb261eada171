use events::work::AfterFailure;
use events::Event;
use projections::WorkStatus;

use super::*;
use crate::routing::RoutingPolicy;
use crate::testing::World;

fn fail(w: &mut World, id: &str, now_ms: u64) -> AfterFailure {
    let lease = w.lease(id);
    let events = w
        .when(WorkCommand::Fail {
            lease,
            error: "boom".into(),
            recoverable: true,
            now_ms,
            workspace: None,
            usage: None,
        })
        .expect("a failure is recorded");
    match events.as_slice() {
        [Event::WorkFailed(f)] => f.then.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn corporate_work_only_reaches_copilot_agents_that_list_corporate() {
    let mut w = World::default();
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
fn an_assignment_that_breaks_the_policy_is_refused_whoever_asks() {
    let mut w = World::default();
    w.agent("claude", "claude-code", &["corporate"], 5);
    w.submit("secret", "corporate", 5);
    let refused = w.when(WorkCommand::Assign {
        work_id: "secret".into(),
        agent_id: "claude".into(),
        lease_id: "l".into(),
        reason: Default::default(),
    });
    assert!(
        matches!(refused, Err(Rejection::WrongState(_))),
        "{refused:?}"
    );
}

#[test]
fn preference_capacity_priority_and_fifo() {
    let mut w = World::default();
    w.agent("copilot", "copilot-cli", &["personal"], 1);
    w.agent("claude", "claude-code", &["personal"], 2);
    w.submit("low", "personal", 1);
    w.submit("high-1", "personal", 9);
    w.submit("high-2", "personal", 9);
    w.submit("mid", "personal", 5);
    // Personal prefers claude-code; claude has room for 2, then copilot takes one.
    assert_eq!(
        w.assign_all(),
        vec![
            ("high-1".to_string(), "claude".to_string()),
            ("high-2".to_string(), "claude".to_string()),
            ("mid".to_string(), "copilot".to_string()),
        ]
    );
    assert_eq!(w.work("low").status, WorkStatus::Pending);
    assert!(w
        .project()
        .agents
        .iter()
        .all(|a| a.active.len() as u32 <= a.max_concurrent_tasks));
}

#[test]
fn failures_back_off_then_dead_letter_and_can_be_retried() {
    let mut w = World::default();
    w.agent("a", "claude-code", &["personal"], 1);
    w.submit("job", "personal", 5);
    let expected = [
        AfterFailure::Retry { at_ms: 11_000 },
        AfterFailure::Retry { at_ms: 12_000 },
        AfterFailure::DeadLettered,
    ];
    for (attempt, then) in expected.into_iter().enumerate() {
        w.now_ms = u64::MAX / 2;
        assert_eq!(w.assign_all().len(), 1, "attempt {}", attempt + 1);
        assert_eq!(fail(&mut w, "job", 10_000), then, "attempt {}", attempt + 1);
    }
    assert_eq!(w.work("job").status, WorkStatus::DeadLettered);
    assert!(w.assign_all().is_empty());
    w.when(WorkCommand::Retry {
        work_id: "job".into(),
    })
    .unwrap();
    assert_eq!(
        (w.work("job").status, w.work("job").attempts),
        (WorkStatus::Pending, 0)
    );
    assert!(matches!(
        w.when(WorkCommand::Retry {
            work_id: "job".into()
        }),
        Err(Rejection::WrongState(_))
    ));
}

#[test]
fn backoff_holds_items_until_their_time() {
    let mut w = World::default();
    w.agent("a", "claude-code", &["personal"], 1);
    w.submit("job", "personal", 5);
    w.assign_all();
    let now = w.now_ms;
    assert_eq!(
        fail(&mut w, "job", now),
        AfterFailure::Retry { at_ms: now + 1_000 }
    );
    w.after_ms(999);
    assert!(w.assign_all().is_empty(), "still backing off");
    w.after_ms(1);
    assert_eq!(w.assign_all().len(), 1, "due exactly at its time");
}

#[test]
fn reports_are_fenced_by_lease_and_completion_is_idempotent() {
    let mut w = World::default();
    w.agent("a", "claude-code", &["personal"], 1);
    w.agent("b", "claude-code", &["personal"], 1);
    w.submit("job", "personal", 5);
    w.assign_all();
    let lease = w.lease("job");
    let other = if lease.agent_id == "a" { "b" } else { "a" };
    let stolen = Lease {
        agent_id: other.into(),
        ..lease.clone()
    };
    assert!(matches!(
        w.when(WorkCommand::Accept { lease: stolen }),
        Err(Rejection::LeaseLost(_))
    ));
    let old = Lease {
        lease_id: "old-lease".into(),
        ..lease.clone()
    };
    let complete = |lease: &Lease| WorkCommand::Complete {
        lease: lease.clone(),
        summary: "done".into(),
        output: None,
        artifacts: vec![],
        workspace: None,
        usage: None,
    };
    assert!(matches!(
        w.when(complete(&old)),
        Err(Rejection::LeaseLost(_))
    ));
    assert_eq!(
        w.when(WorkCommand::Accept {
            lease: lease.clone()
        })
        .unwrap()
        .len(),
        1
    );
    assert!(
        w.when(WorkCommand::Accept {
            lease: lease.clone()
        })
        .unwrap()
        .is_empty(),
        "accepting twice records nothing"
    );
    assert_eq!(w.when(complete(&lease)).unwrap().len(), 1);
    assert_eq!(w.work("job").status, WorkStatus::Completed);
    assert!(
        w.when(complete(&lease)).unwrap().is_empty(),
        "a repeated completion records nothing"
    );
    assert!(w
        .project()
        .agents
        .get(&lease.agent_id)
        .unwrap()
        .active
        .is_empty());
}

#[test]
fn an_agent_going_offline_ends_its_leases_in_the_same_commit() {
    let mut w = World::default();
    w.agent("a", "claude-code", &["personal"], 2);
    w.submit("j1", "personal", 5);
    w.submit("j2", "personal", 5);
    w.assign_all();
    let events = w
        .when(crate::AgentCommand::GoOffline {
            agent_id: "a".into(),
            reason: "heartbeat-missed".into(),
            now_ms: 5_000,
        })
        .unwrap();
    let names: Vec<&str> = events.iter().map(Event::type_name).collect();
    assert_eq!(
        names,
        ["work.lease-expired", "work.lease-expired", "agent.offline"],
        "each lease ends on its own item, before the agent goes"
    );
    for id in ["j1", "j2"] {
        assert_eq!(w.work(id).status, WorkStatus::Pending);
        assert!(w.work(id).assigned_to.is_none());
    }
    let again = w.when(crate::AgentCommand::GoOffline {
        agent_id: "a".into(),
        reason: "again".into(),
        now_ms: 6_000,
    });
    assert!(again.unwrap().is_empty());
    w.now_ms = u64::MAX / 2;
    assert!(w.assign_all().is_empty(), "offline agents get nothing");
    // Another agent picks the freed items up: their versions still match their subjects.
    w.agent("b", "claude-code", &["personal"], 2);
    assert_eq!(w.assign_all().len(), 2);
    assert_eq!(w.work("j1").attempts, 2);
}

#[test]
fn cancel_rules() {
    let mut w = World::default();
    w.submit("job", "personal", 5);
    let cancel = |id: &str| WorkCommand::Cancel {
        work_id: id.into(),
        reason: None,
    };
    assert_eq!(w.when(cancel("job")).unwrap().len(), 1);
    assert_eq!(w.work("job").status, WorkStatus::Cancelled);
    assert!(w.when(cancel("job")).unwrap().is_empty());
    assert!(matches!(
        w.when(cancel("nope")),
        Err(Rejection::NotFound(_))
    ));
}

#[test]
fn submissions_are_validated_and_a_repeat_records_nothing() {
    let bad = validate_submission(
        "id",
        &Submission {
            description: " ".into(),
            capability: "".into(),
            boundary: "x".into(),
            priority: Some(11),
            deadline: Some("tomorrow".into()),
            ..Default::default()
        },
        &RetryPolicy::default(),
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
    let mut w = World::default();
    w.submit("job", "personal", 5);
    assert_eq!(
        w.work("job").task_id,
        "job",
        "the id is the task id when none is given"
    );
    let again = w.when(WorkCommand::Submit {
        id: "job".into(),
        submission: Submission {
            description: "other".into(),
            capability: "rust".into(),
            boundary: "personal".into(),
            ..Default::default()
        },
    });
    assert!(again.unwrap().is_empty());
}

#[test]
fn a_policy_file_replaces_the_default_table() {
    let mut w = World::default();
    w.settings.routing = RoutingPolicy::from_json(
        r#"{"boundaries": {"personal": {"allowedAgentTypes": ["codex"], "preferredAgentTypes": ["codex"]}}}"#,
    )
    .unwrap();
    w.agent("claude", "claude-code", &["personal"], 1);
    w.submit("job", "personal", 5);
    assert!(w.assign_all().is_empty());
    w.agent("codex", "codex", &["personal"], 1);
    assert_eq!(
        w.assign_all(),
        vec![("job".to_string(), "codex".to_string())]
    );
    assert!(w
        .work("job")
        .routing
        .as_ref()
        .unwrap()
        .rule
        .contains("codex only"));
    let typo = RoutingPolicy::from_json(r#"{"boundaries": {"personal": {"allowed": ["codex"]}}}"#);
    assert!(typo.is_err_and(|e| e.contains("unknown field")));
}

fn park(w: &mut World, id: &str, until_ms: Option<u64>) -> Vec<Event> {
    let lease = w.lease(id);
    w.when(WorkCommand::Park {
        lease,
        reason: "You've hit your limit".into(),
        until_ms,
        workspace: None,
        usage: None,
    })
    .expect("a usage limit is recorded")
}

#[test]
fn a_usage_limit_parks_the_item_without_counting_the_attempt_and_pauses_the_agent() {
    let mut w = World::default();
    w.agent("a", "claude-code", &["personal"], 1);
    w.submit("job", "personal", 5);
    w.assign_all();
    assert_eq!(w.work("job").attempts, 1);
    let until = w.now_ms + 3_600_000;
    let events = park(&mut w, "job", Some(until));
    assert!(
        matches!(events.as_slice(), [Event::WorkParked(p), Event::AgentPaused(a)]
            if p.until_ms == Some(until) && a.until_ms == Some(until)),
        "{events:?}"
    );
    let job = w.work("job");
    assert_eq!(job.status, WorkStatus::Pending);
    assert_eq!(job.attempts, 0, "the attempt is not counted");
    assert_eq!(
        w.project().agents.get("a").expect("a").paused_until_ms,
        Some(until)
    );

    // Nothing is routed to a paused agent; another takes the item.
    assert!(w.assign_all().is_empty(), "the paused agent gets nothing");
    w.agent("b", "claude-code", &["personal"], 1);
    assert_eq!(w.assign_all(), [("job".to_string(), "b".to_string())]);
    assert_eq!(w.work("job").attempts, 1);
}

#[test]
fn a_paused_agent_is_resumed_at_the_reset_or_by_a_person_when_there_is_none() {
    let mut w = World::default();
    w.agent("a", "claude-code", &["personal"], 1);
    w.submit("job", "personal", 5);
    w.assign_all();
    let until = w.now_ms + 60_000;
    park(&mut w, "job", Some(until));
    let liveness = decide_liveness(&w);
    w.after_ms(59_999);
    assert!(crate::schedule::limits_reset(w.project(), w.now_ms).is_empty());
    w.after_ms(1);
    let resumed = w.run_due(&liveness);
    assert!(
        resumed
            .iter()
            .any(|e| matches!(e, Event::AgentResumed(r) if r.reason == "limit-reset")),
        "{resumed:?}"
    );
    assert_eq!(
        w.project().agents.get("a").expect("a").paused_until_ms,
        None
    );
    // The item goes back to the agent now that it is free again.
    w.assign_all();
    assert_eq!(w.work("job").assigned_to.as_deref(), Some("a"));

    // A limit with no reset time waits for a person, however long.
    park(&mut w, "job", None);
    w.after_ms(365 * 86_400_000);
    assert!(crate::schedule::limits_reset(w.project(), w.now_ms).is_empty());
    let events = w
        .when(crate::AgentCommand::Resume {
            agent_id: "a".into(),
            reason: "resumed by a person".into(),
        })
        .expect("resumed");
    assert!(matches!(events.as_slice(), [Event::AgentResumed(_)]));
    assert!(
        w.when(crate::AgentCommand::Resume {
            agent_id: "a".into(),
            reason: "again".into(),
        })
        .expect("nothing to do")
        .is_empty(),
        "resuming an agent that is not paused records nothing"
    );
}

/// Every agent heard from now, so the liveness rule leaves them alone.
fn decide_liveness(w: &World) -> crate::schedule::Liveness {
    let mut l = crate::schedule::Liveness::default();
    for a in w.project().agents.iter() {
        l.heard(&a.id, w.now_ms + 365 * 86_400_000);
    }
    l
}

#[test]
fn at_the_days_budget_new_work_waits_until_the_next_day_and_one_warning_is_recorded() {
    use events::work::{Usage, WorkCompleted};
    let mut w = World::default();
    w.when(crate::BudgetCommand::Set {
        max_cost_usd_per_day: Some(1.0),
        warn_at_fraction: Some(0.5),
    })
    .expect("set");
    w.agent("a", "claude-code", &["personal"], 1);
    w.submit("first", "personal", 5);
    w.assign_all();
    let lease = w.lease("first");
    w.given(
        "first",
        Event::WorkCompleted(WorkCompleted {
            agent_id: lease.agent_id,
            lease_id: lease.lease_id,
            summary: "done".into(),
            output: None,
            artifacts: vec![],
            workspace: None,
            usage: Some(Usage {
                cost_usd: Some(1.25),
                ..Default::default()
            }),
        }),
    );
    w.submit("second", "personal", 5);
    let liveness = decide_liveness(&w);
    let events = w.run_due(&liveness);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::BudgetWarned(b) if b.spent_usd == 1.25)),
        "{events:?}"
    );
    assert_eq!(w.work("second").status, WorkStatus::Pending, "held");
    assert!(
        !w.run_due(&liveness)
            .iter()
            .any(|e| matches!(e, Event::BudgetWarned(_))),
        "warned once a day"
    );
    // The next UTC day starts from nothing.
    w.after_ms(86_400_000);
    w.run_due(&liveness);
    assert_eq!(w.work("second").assigned_to.as_deref(), Some("a"));
}

#[test]
fn a_retry_on_the_same_agent_resumes_its_session_when_the_item_asks() {
    use events::work::Usage;
    for asks in [true, false] {
        let mut w = World::default();
        w.agent("a", "claude-code", &["personal"], 1);
        let submission = Submission {
            description: "resume me".into(),
            capability: "rust".into(),
            boundary: "personal".into(),
            resume_session: asks,
            ..Default::default()
        };
        w.when(WorkCommand::Submit {
            id: "job".into(),
            submission,
        })
        .expect("submitted");
        w.assign_all();
        let lease = w.lease("job");
        w.when(WorkCommand::Park {
            lease,
            reason: "limit".into(),
            until_ms: Some(w.now_ms + 60_000),
            workspace: None,
            usage: Some(Usage {
                session_id: Some("sess-1".into()),
                ..Default::default()
            }),
        })
        .expect("parked");
        let job = w.work("job");
        assert_eq!(
            job.session_to_resume("a"),
            asks.then(|| "sess-1".to_string())
        );
        assert_eq!(
            job.session_to_resume("b"),
            None,
            "another agent starts afresh"
        );
    }
}

#[test]
fn progress_is_recorded_at_most_once_per_interval_and_kept_short() {
    let mut w = World::default();
    w.agent("a", "claude-code", &["personal"], 1);
    w.submit("job", "personal", 5);
    w.assign_all();
    let lease = w.lease("job");
    let progress = |w: &World, message: &str, percent: Option<u8>| WorkCommand::Progress {
        lease: lease.clone(),
        progress: percent,
        message: message.into(),
        phase: Some(format!("tool: {}", "Edit".repeat(20))),
        now_ms: w.now_ms,
    };
    let mut recorded = 0;
    // An agent reporting every 100 ms for a minute, with a long multi-line message.
    for tick in 0..600u64 {
        let long = format!(
            "{}\nlast line {tick} {}",
            "first\n".repeat(50),
            "x".repeat(500)
        );
        let events = w.when(progress(&w, &long, Some((tick / 6) as u8))).unwrap();
        if let [Event::WorkProgressed(p)] = events.as_slice() {
            recorded += 1;
            assert!(p.message.starts_with(&format!("last line {tick} ")));
            assert_eq!(p.message.chars().count(), PROGRESS_MESSAGE_CHARS);
            assert_eq!(
                p.phase.as_ref().map(|p| p.chars().count()),
                Some(PROGRESS_PHASE_CHARS)
            );
        } else {
            assert!(events.is_empty(), "{events:?}");
        }
        w.after_ms(100);
    }
    assert_eq!(recorded, 60_000 / PROGRESS_EVERY_MS as usize);
    assert!(w
        .work("job")
        .progress_message
        .as_deref()
        .is_some_and(|m| m.starts_with("last line 5")));

    // A new attempt starts its own interval.
    let now = w.now_ms;
    fail(&mut w, "job", now);
    w.after_ms(60_000);
    w.assign_all();
    let lease = w.lease("job");
    let again = w
        .when(WorkCommand::Progress {
            lease,
            progress: None,
            message: "again".into(),
            phase: None,
            now_ms: w.now_ms,
        })
        .unwrap();
    assert_eq!(again.len(), 1);
}
