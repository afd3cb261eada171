use serde_json::json;

use super::*;

fn new_target(name: &str, mechanism: &str, config: Value) -> NewTarget {
    NewTarget {
        name: name.into(),
        agent_type: "claude-code".into(),
        capabilities: vec!["rust".into()],
        mechanism: mechanism.into(),
        config,
        ..Default::default()
    }
}

fn fields(r: Result<TargetRegistered, Rejection>) -> Vec<String> {
    match r {
        Err(Rejection::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect(),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

fn state_with(registered: &TargetRegistered, project: &str) -> State {
    let mut state = State::default();
    state.apply(
        1,
        &events::Envelope {
            id: "e".into(),
            project: project.into(),
            aggregate: AggregateKind::Target,
            aggregate_id: registered.target_id.clone(),
            schema_version: 1,
            time_ms: 1,
            actor: "t".into(),
            correlation_id: None,
            causation_id: None,
            event: Event::TargetRegistered(registered.clone()),
        },
    );
    state
}

#[test]
fn flat_and_nested_configs_mean_the_same() {
    let flat = validate_new(
        "id".into(),
        new_target(
            "a",
            "ssh",
            json!({"mechanism":"ssh","host":"h","user":"u","command":"c"}),
        ),
    )
    .unwrap();
    let nested = validate_new(
        "id".into(),
        new_target(
            "a",
            "ssh",
            json!({"mechanism":"ssh","ssh":{"host":"h","user":"u","command":"c"}}),
        ),
    )
    .unwrap();
    assert_eq!(flat.config, nested.config);
    // No `mechanism` inside config is fine too.
    let bare = validate_new(
        "id".into(),
        new_target("a", "ssh", json!({"host":"h","user":"u","command":"c"})),
    )
    .unwrap();
    assert_eq!(bare.config, flat.config);
}

#[test]
fn workflow_file_is_an_alias_of_workflow() {
    let r = validate_new(
        "id".into(),
        new_target(
            "gh",
            "github-actions",
            json!({"repo":"o/r","workflowFile":"agent.yml"}),
        ),
    )
    .unwrap();
    match r.config {
        MechanismConfig::GithubActions(c) => assert_eq!(c.workflow, "agent.yml"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn required_settings_are_named_in_errors() {
    let f = fields(validate_new(
        "id".into(),
        new_target("a", "ssh", json!({"host":"h"})),
    ));
    assert_eq!(f, vec!["config.user", "config.command"]);
    let f = fields(validate_new(
        "id".into(),
        new_target("a", "kubernetes", json!({})),
    ));
    assert_eq!(f, vec!["config.namespace", "config.image"]);
}

#[test]
fn unknown_settings_and_literal_secrets_are_refused() {
    let f = fields(validate_new(
        "id".into(),
        new_target("a", "local", json!({"command":"x","colour":"blue"})),
    ));
    assert_eq!(f, vec!["config.colour"]);
    let f = fields(validate_new(
        "id".into(),
        new_target(
            "a",
            "github-actions",
            json!({"repo":"o/r","workflow":"w","token":"ghp_x"}),
        ),
    ));
    assert_eq!(f, vec!["config.token"]);
    let f = fields(validate_new(
        "id".into(),
        new_target(
            "a",
            "webhook",
            json!({"url":"http://127.0.0.1/x","headers":{"Authorization":"Bearer x"}}),
        ),
    ));
    assert_eq!(f, vec!["config.headers.Authorization"]);
}

#[test]
fn mismatched_mechanisms_and_layouts_are_refused() {
    let f = fields(validate_new(
        "id".into(),
        new_target("a", "local", json!({"mechanism":"ssh","command":"x"})),
    ));
    assert_eq!(f, vec!["config.mechanism"]);
    let f = fields(validate_new(
        "id".into(),
        new_target("a", "local", json!({"local":{"command":"x"},"command":"y"})),
    ));
    assert_eq!(f, vec!["config.command"]);
    let f = fields(validate_new(
        "id".into(),
        new_target("a", "teleport", json!({})),
    ));
    assert_eq!(f, vec!["mechanism"]);
}

#[test]
fn defaults_follow_the_original() {
    let mut t = new_target("a", "local", json!({"command":"x"}));
    t.health_check = Some(HealthCheckInput {
        enabled: true,
        ..Default::default()
    });
    let r = validate_new("id".into(), t).unwrap();
    assert_eq!(r.boundaries, DEFAULT_BOUNDARIES.map(String::from).to_vec());
    let h = r.health_check.unwrap();
    assert_eq!((h.interval_ms, h.timeout_ms), (300_000, 10_000));
    assert_eq!(r.registered_by, "api");
}

#[test]
fn duplicate_names_conflict_within_a_project_only() {
    let r = validate_new(
        "t1".into(),
        new_target("box", "local", json!({"command":"x"})),
    )
    .unwrap();
    let state = state_with(&r, "p1");
    let again = validate_new(
        "t2".into(),
        new_target("box", "local", json!({"command":"x"})),
    )
    .unwrap();
    assert!(matches!(
        decide_register(&state, "p1", &again),
        Err(Rejection::Conflict(_))
    ));
    let other = decide_register(&state, "p2", &again).unwrap().unwrap();
    assert_eq!(
        other.expect,
        Expect::ScopeAt {
            filter: "weft.ev.p2.target.*".into(),
            sequence: 0
        }
    );
    let d = decide_register(&State::default(), "p1", &again)
        .unwrap()
        .unwrap();
    assert_eq!(d.aggregate_id, "t2");
}

#[test]
fn updates_merge_config_shallowly_and_revalidate() {
    let r = validate_new(
        "t1".into(),
        new_target(
            "box",
            "ssh",
            json!({"host":"h","user":"u","command":"c","port":2222}),
        ),
    )
    .unwrap();
    let state = state_with(&r, "p");
    let patch = TargetPatch {
        config: Some(json!({"host":"h2","port":null})),
        ..Default::default()
    };
    let d = decide_update(&state, "p", "box", &patch).unwrap().unwrap();
    match d.event {
        Event::TargetUpdated(TargetUpdated {
            config: Some(MechanismConfig::Ssh(c)),
            ..
        }) => {
            assert_eq!(
                (c.host.as_str(), c.user.as_str(), c.port),
                ("h2", "u", None)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.expect, Expect::AggregateAt(1));
    let bad = TargetPatch {
        config: Some(json!({"user":""})),
        ..Default::default()
    };
    assert!(matches!(
        decide_update(&state, "p", "t1", &bad),
        Err(Rejection::Invalid(_))
    ));
    assert!(matches!(
        decide_update(&state, "p", "nope", &patch),
        Err(Rejection::NotFound(_))
    ));
}

#[test]
fn enabling_and_disabling_are_idempotent() {
    let r = validate_new(
        "t1".into(),
        new_target("box", "local", json!({"command":"x"})),
    )
    .unwrap();
    let state = state_with(&r, "p");
    assert!(decide_enable(&state, "p", "box").unwrap().is_none());
    assert!(decide_disable(&state, "p", "box", None).unwrap().is_some());
    assert!(matches!(
        decide_remove(&state, "p", "zzz"),
        Err(Rejection::NotFound(_))
    ));
}

#[test]
fn every_event_on_a_target_moves_the_scope_registrations_expect() {
    let r = validate_new(
        "t1".into(),
        new_target("box", "local", json!({"command":"x"})),
    )
    .unwrap();
    let mut state = state_with(&r, "p");
    // A health check is folded by another fold, but it is on the target's subject too.
    let checked = decide_health_checked(&state, "p", "box", true, None, 3)
        .unwrap()
        .unwrap();
    state.apply(
        2,
        &events::Envelope {
            id: "e2".into(),
            project: "p".into(),
            aggregate: AggregateKind::Target,
            aggregate_id: checked.aggregate_id,
            schema_version: 1,
            time_ms: 2,
            actor: "t".into(),
            correlation_id: None,
            causation_id: None,
            event: checked.event,
        },
    );
    let next = validate_new(
        "t2".into(),
        new_target("other", "local", json!({"command":"x"})),
    )
    .unwrap();
    let d = decide_register(&state, "p", &next).unwrap().unwrap();
    assert_eq!(
        d.expect,
        Expect::ScopeAt {
            filter: "weft.ev.p.target.*".into(),
            sequence: 2
        }
    );
}
