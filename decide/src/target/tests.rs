use events::target::SshConfig;
use serde_json::json;

use super::*;
use crate::testing::World;

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
    let register = |id: &str| TargetCommand::Register {
        target_id: id.into(),
        target: new_target("box", "local", json!({"command":"x"})),
    };
    let mut w = World::default();
    w.when(register("t1")).unwrap();
    assert!(matches!(
        w.when(register("t2")),
        Err(Rejection::NameTaken(_))
    ));
    // Another project is another world: the name is free there.
    let mut other = World::default();
    assert_eq!(other.when(register("t2")).unwrap().len(), 1);
}

#[test]
fn updates_merge_config_shallowly_and_revalidate() {
    let mut w = World::default();
    w.when(TargetCommand::Register {
        target_id: "t1".into(),
        target: new_target(
            "box",
            "ssh",
            json!({"host":"h","user":"u","command":"c","port":2222}),
        ),
    })
    .unwrap();
    let update = |key: &str, config: Value| TargetCommand::Update {
        key: key.into(),
        patch: TargetPatch {
            config: Some(config),
            ..Default::default()
        },
    };
    let events = w
        .when(update("box", json!({"host":"h2","port":null})))
        .unwrap();
    match events.as_slice() {
        [Event::TargetUpdated(TargetUpdated {
            config:
                Some(MechanismConfig::Ssh(SshConfig {
                    host, user, port, ..
                })),
            ..
        })] => assert_eq!((host.as_str(), user.as_str(), *port), ("h2", "u", None)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        w.when(update("t1", json!({"user":""}))),
        Err(Rejection::Invalid(_))
    ));
    assert!(matches!(
        w.when(update("nope", json!({"host":"h3"}))),
        Err(Rejection::NotFound(_))
    ));
}

#[test]
fn enabling_and_disabling_are_idempotent() {
    let mut w = World::default();
    w.when(TargetCommand::Register {
        target_id: "t1".into(),
        target: new_target("box", "local", json!({"command":"x"})),
    })
    .unwrap();
    let enable = || TargetCommand::Enable { key: "box".into() };
    let disable = || TargetCommand::Disable {
        key: "box".into(),
        reason: None,
    };
    assert!(w.when(enable()).unwrap().is_empty());
    assert_eq!(w.when(disable()).unwrap().len(), 1);
    assert!(w.when(disable()).unwrap().is_empty());
    assert_eq!(w.when(enable()).unwrap().len(), 1);
    assert!(matches!(
        w.when(TargetCommand::Remove { key: "zzz".into() }),
        Err(Rejection::NotFound(_))
    ));
}

#[test]
fn every_event_on_a_target_moves_the_scope_registrations_expect() {
    let mut w = World::default();
    w.when(TargetCommand::Register {
        target_id: "t1".into(),
        target: new_target("box", "local", json!({"command":"x"})),
    })
    .unwrap();
    // A health check is folded by another fold, but it is on the target's subject too: the
    // world checks the next registration's scope expectation the way JetStream would.
    w.when(TargetCommand::RecordHealth {
        key: "box".into(),
        healthy: true,
        error: None,
        latency_ms: 3,
    })
    .unwrap();
    let events = w
        .when(TargetCommand::Register {
            target_id: "t2".into(),
            target: new_target("other", "local", json!({"command":"x"})),
        })
        .unwrap();
    assert_eq!(events.len(), 1);
}
