//! The write path against real servers: the fence every append carries (a writer replaced
//! by a newer election cannot append), group commits that land all or none, a second
//! process writing to the same project, concurrent commands on one aggregate, `kill -9`
//! in the middle of group commits, and replay equal to the live state after all of it.

use crate::common;

use std::time::Duration;

use common::{
    all_events, call, client, local_target, of_type, poll_until, submit_body, AgentProcess,
    NatsServer, Weft,
};
use serde_json::{json, Value};
use weft::store::{CommitMode, EventStore, Fence, Outcome};

fn event(project: &str, id: &str, event: events::Event) -> events::Envelope {
    events::Envelope {
        id: ulid::Ulid::generate().to_string(),
        project: project.into(),
        aggregate: event.aggregate_kind(),
        aggregate_id: id.into(),
        schema_version: events::SCHEMA_VERSION,
        time_ms: 1,
        actor: "test".into(),
        correlation_id: None,
        causation_id: None,
        event,
    }
}

fn removed(project: &str, id: &str) -> events::Envelope {
    event(
        project,
        id,
        events::Event::TargetRemoved(Default::default()),
    )
}

fn election(project: &str, instance: &str) -> events::Envelope {
    event(
        project,
        events::writer::WRITER_ID,
        events::Event::WriterElected(events::writer::WriterElected {
            instance: instance.into(),
        }),
    )
}

async fn elect(store: &EventStore, project: &str, instance: &str, previous: u64) -> Outcome {
    let fence = Fence {
        subject: events::subject::writer(project),
        sequence: previous,
    };
    let mut outcomes = store
        .commit(
            &[&[election(project, instance)]],
            &fence,
            CommitMode::Pipelined,
        )
        .await;
    outcomes.remove(0)
}

fn stored(outcome: &Outcome) -> Vec<u64> {
    match outcome {
        Outcome::Stored(sequences) => sequences.clone(),
        other => panic!("expected stored, got {other:?}"),
    }
}

/// Every append expects the project's writer subject at the writer's own election: once
/// another writer is elected, the old one's appends are refused, in both commit modes,
/// and a refused group stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_writer_cannot_append() {
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.expect("connect");
    migrations::apply(&client, "test", &Default::default())
        .await
        .expect("migrate");
    let store = EventStore::new(client);
    let subject = events::subject::writer("p");

    let first = stored(&elect(&store, "p", "a", 0).await)[0];
    // A second election on the same view of the log loses.
    assert_eq!(elect(&store, "p", "b", 0).await, Outcome::Refused);
    let fence_a = Fence {
        subject: subject.clone(),
        sequence: first,
    };
    for mode in [CommitMode::Pipelined, CommitMode::Grouped] {
        let outcomes = store
            .commit(
                &[
                    &[removed("p", "x")],
                    &[removed("p", "y"), removed("p", "z")],
                ],
                &fence_a,
                mode,
            )
            .await;
        let sequences: Vec<Vec<u64>> = outcomes.iter().map(stored).collect();
        assert_eq!(sequences[0].len(), 1);
        // A command's events are stored together, in order.
        assert_eq!(sequences[1].len(), 2);
        assert_eq!(sequences[1][1], sequences[1][0] + 1, "{mode:?}");
    }

    let second = stored(&elect(&store, "p", "b", first).await)[0];
    let before = store.last_sequence().await.expect("last");
    for mode in [CommitMode::Pipelined, CommitMode::Grouped] {
        let outcomes = store
            .commit(
                &[
                    &[removed("p", "x")],
                    &[removed("p", "y"), removed("p", "z")],
                ],
                &fence_a,
                mode,
            )
            .await;
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, Outcome::Refused | Outcome::NotSent)),
            "{mode:?}: {outcomes:?}"
        );
        assert!(matches!(outcomes[0], Outcome::Refused), "{outcomes:?}");
    }
    assert_eq!(
        store.last_sequence().await.expect("last"),
        before,
        "nothing stored"
    );

    let fence_b = Fence {
        subject,
        sequence: second,
    };
    stored(
        &store
            .commit(&[&[removed("p", "x")]], &fence_b, CommitMode::Grouped)
            .await[0],
    );
    // Another project has its own writer subject.
    stored(&elect(&store, "q", "a", 0).await);
}

async fn submit_many(weft: &Weft, prefix: &str, total: usize, clients: usize) {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, url, prefix) = (client(), weft.url("/api/work"), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            for i in (c..total).step_by(clients) {
                let body = submit_body(&format!("{prefix}-{i}"), "rust", "personal", 5);
                let (status, answer) = call(http.post(&url).json(&body)).await;
                assert_eq!(status, 201, "{answer}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
}

async fn state(weft: &Weft) -> Value {
    let (status, state) = call(client().get(weft.url("/api/state"))).await;
    assert_eq!(status, 200, "{state}");
    state
}

/// Two processes on one log and one project: one holds the project's writer lease, the
/// other sends it its commands. Every submission, through either, lands exactly once,
/// there is one election, and both end with the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_log_have_one_writer_and_lose_nothing() {
    let nats = NatsServer::start();
    let env = [
        ("NATS_URL", nats.url()),
        ("WEFT_SNAPSHOT_EVERY", "0".to_string()),
        // Long enough that the lease is not handed over (to the instance the projects'
        // spread prefers) while the test runs.
        ("WEFT_WRITER_LEASE_MS", "60000".to_string()),
    ];
    let a = Weft::start(&env);
    let b = Weft::start(&env);
    // In turns first, then both at once.
    submit_many(&a, "a-first", 10, 2).await;
    submit_many(&b, "b-first", 10, 2).await;
    submit_many(&a, "a-again", 10, 2).await;
    // Then both at once.
    tokio::join!(
        submit_many(&a, "a-both", 100, 8),
        submit_many(&b, "b-both", 100, 8)
    );

    let events = all_events(&a).await;
    let submitted = of_type(&events, "work.submitted");
    assert_eq!(submitted.len(), 230, "lost or duplicated submissions");
    let mut descriptions: Vec<&str> = submitted
        .iter()
        .filter_map(|e| e["data"]["description"].as_str())
        .collect();
    descriptions.sort();
    descriptions.dedup();
    assert_eq!(descriptions.len(), 230, "a submission recorded twice");
    let elections = of_type(&events, "writer.elected");
    assert_eq!(elections.len(), 1, "{elections:?}");
    let writer = elections[0]["data"]["instance"].as_str().expect("instance");
    let (_, health_a) = call(client().get(a.url("/health"))).await;
    let (_, health_b) = call(client().get(b.url("/health"))).await;
    let writes = |h: &Value| h["writer"]["projects"] == serde_json::json!(["default"]);
    assert!(
        writes(&health_a) != writes(&health_b),
        "exactly one writes: {health_a} {health_b}"
    );
    let holder = if writes(&health_a) {
        &health_a
    } else {
        &health_b
    };
    assert_eq!(holder["writer"]["instance"], writer);

    // Both converge on the same state.
    let head = events
        .last()
        .and_then(|e| e["sequence"].as_u64())
        .unwrap_or(0);
    for weft in [&a, &b] {
        poll_until(weft, "/api/state", Duration::from_secs(10), |s| {
            s["sequence"].as_u64() >= Some(head)
        })
        .await;
    }
    let (sa, sb) = (state(&a).await, state(&b).await);
    assert_eq!(sa["digest"], sb["digest"]);
    let (_, list) = call(client().get(b.url("/api/work?limit=1"))).await;
    assert_eq!(list["total"], 230);
}

/// Commands on one aggregate are decided one after another against the state the ones
/// before them left, so concurrent ones conflict as they should.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_on_one_aggregate_conflict_correctly() {
    let nats = NatsServer::start();
    let weft = Weft::start(&[("NATS_URL", nats.url())]);
    let statuses = |requests: Vec<reqwest::RequestBuilder>| async move {
        let answers =
            futures::future::join_all(requests.into_iter().map(|r| async move { call(r).await.0 }))
                .await;
        let mut counts = std::collections::BTreeMap::new();
        for status in answers {
            *counts.entry(status).or_insert(0) += 1;
        }
        counts
    };
    let http = client();

    // One name, twenty registrations: one is taken, the others are told the name is.
    let registrations = (0..20)
        .map(|_| {
            http.post(weft.url("/api/targets"))
                .json(&local_target("one-name"))
        })
        .collect();
    let counts = statuses(registrations).await;
    assert_eq!(counts.get(&201), Some(&1), "{counts:?}");
    assert_eq!(counts.get(&409), Some(&19), "{counts:?}");

    // Twenty removals of it: one removes it, the others find nothing.
    let removals = (0..20)
        .map(|_| http.delete(weft.url("/api/targets/one-name")))
        .collect();
    let counts = statuses(removals).await;
    assert_eq!(counts.get(&200), Some(&1), "{counts:?}");
    assert_eq!(counts.get(&404), Some(&19), "{counts:?}");

    // Twenty cancels of one item: all succeed (cancelling twice changes nothing), one
    // records it.
    let (status, item) = call(http.post(weft.url("/api/work")).json(&submit_body(
        "cancel me",
        "rust",
        "personal",
        5,
    )))
    .await;
    assert_eq!(status, 201, "{item}");
    let id = item["id"].as_str().expect("id").to_string();
    let cancels = (0..20)
        .map(|_| http.post(weft.url(&format!("/api/work/{id}/cancel"))))
        .collect();
    let counts = statuses(cancels).await;
    assert_eq!(counts.get(&200), Some(&20), "{counts:?}");

    let events = all_events(&weft).await;
    assert_eq!(of_type(&events, "target.registered").len(), 1);
    assert_eq!(of_type(&events, "target.removed").len(), 1);
    assert_eq!(of_type(&events, "work.cancelled").len(), 1);
}

/// `kill -9` while rounds of two-event commands are being committed: every command's
/// events are in the log together or not at all, and every acknowledged one is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_group_commits_leaves_whole_commands() {
    for mode in ["grouped", "pipelined"] {
        let nats = NatsServer::start();
        let env = [
            ("NATS_URL", nats.url()),
            ("WEFT_COMMIT_MODE", mode.to_string()),
        ];
        let mut weft = Weft::start(&env);
        let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let mut tasks = Vec::new();
        for c in 0..16 {
            let (http, url, acknowledged) =
                (client(), weft.url("/api/targets"), acknowledged.clone());
            tasks.push(tokio::spawn(async move {
                // Each registration of a disabled target is two events in one commit.
                for i in 0..1000 {
                    let name = format!("t-{c}-{i}");
                    let mut body = local_target(&name);
                    body["enabled"] = json!(false);
                    match http.post(&url).json(&body).send().await {
                        Ok(r) if r.status() == 201 => acknowledged.lock().expect("lock").push(name),
                        Ok(r) => panic!("registration refused: {}", r.status()),
                        Err(_) => return, // weft is gone
                    }
                }
            }));
        }
        // Kill it once commits are flowing.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while acknowledged.lock().expect("lock").len() < 200 {
            assert!(std::time::Instant::now() < deadline, "no registrations");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        weft.kill9();
        for t in tasks {
            t.await.expect("client task");
        }
        let acknowledged = acknowledged.lock().expect("lock").clone();

        let weft = Weft::start(&env);
        let events = all_events(&weft).await;
        let targets: Vec<&Value> = events
            .iter()
            .filter(|e| e["aggregate"] == "target")
            .collect();
        // Pairs, back to back in the log: registered then disabled, same target.
        assert_eq!(targets.len() % 2, 0, "{mode}: half a command in the log");
        for pair in targets.chunks(2) {
            assert_eq!(pair[0]["type"], "target.registered", "{mode}: {pair:?}");
            assert_eq!(pair[1]["type"], "target.disabled", "{mode}: {pair:?}");
            assert_eq!(pair[0]["aggregateId"], pair[1]["aggregateId"]);
            assert_eq!(
                pair[1]["sequence"].as_u64(),
                pair[0]["sequence"].as_u64().map(|s| s + 1),
                "{mode}: a command's events apart"
            );
        }
        let recorded: std::collections::HashSet<&str> = targets
            .iter()
            .filter_map(|e| e["data"]["name"].as_str())
            .collect();
        for name in &acknowledged {
            assert!(
                recorded.contains(name.as_str()),
                "{mode}: acknowledged {name} lost"
            );
        }
        let (_, list) = call(client().get(weft.url("/api/targets?limit=1&status=disabled"))).await;
        assert_eq!(
            list["total"].as_u64(),
            Some(recorded.len() as u64),
            "{mode}"
        );
    }
}

/// After many agents, submitters and registrations at once, folding the log from zero
/// gives exactly the live state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_equals_the_live_state_after_a_high_concurrency_run() {
    let nats = NatsServer::start();
    let env = [
        ("NATS_URL", nats.url()),
        ("WEFT_SNAPSHOT_EVERY", "0".to_string()),
    ];
    let mut weft = Weft::start(&env);
    let agents: Vec<AgentProcess> = (0..3)
        .map(|_| AgentProcess::start(&nats, "claude-code", "rust", "personal", 4, "echo ok"))
        .collect();
    poll_until(&weft, "/api/agents", Duration::from_secs(20), |a| {
        a["total"] == 3
    })
    .await;
    let registrations = async {
        let http = client();
        for i in 0..50 {
            let (status, _) = call(
                http.post(weft.url("/api/targets"))
                    .json(&local_target(&format!("t-{i}"))),
            )
            .await;
            assert_eq!(status, 201);
        }
    };
    tokio::join!(submit_many(&weft, "busy", 300, 32), registrations);
    poll_until(&weft, "/api/stats", Duration::from_secs(120), |s| {
        s["totals"]["completedWork"] == 300
    })
    .await;
    drop(agents);
    let live = state(&weft).await;
    weft.kill9();

    let client = async_nats::connect(nats.url()).await.expect("connect");
    let store = EventStore::new(client);
    let replayed = weft::projector::start(
        store,
        weft::projector::SnapshotPolicy::NEVER,
        weft::nats::connections(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("replay");
    let (sequence, digest) = replayed.read(|s| (s.sequence, s.digest()));
    assert_eq!(Some(sequence), live["sequence"].as_u64());
    assert_eq!(digest, live["digest"].as_str().unwrap_or_default());
}
