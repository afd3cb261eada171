//! Migrations against a real nats-server: idempotent, recorded, and a newer schema is
//! refused.

use crate::common;

use async_nats::jetstream;
use common::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_and_record_their_version() {
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let first = migrations::apply(&client, "test", &Default::default())
        .await
        .expect("first run");
    assert_eq!(
        (first.previous, first.current),
        (0, migrations::latest_version())
    );
    let js = jetstream::new(client.clone());
    let before = js
        .get_stream(events::STREAM)
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .config
        .clone();
    assert!(before.deny_delete && before.deny_purge);
    assert_eq!(before.subjects, vec!["weft.ev.>".to_string()]);

    let second = migrations::apply(&client, "test", &Default::default())
        .await
        .expect("second run");
    assert_eq!(
        (second.previous, second.current),
        (migrations::latest_version(), migrations::latest_version())
    );
    let after = js
        .get_stream(events::STREAM)
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .config
        .clone();
    assert_eq!(before, after, "a second run changed the stream");
    let meta = js
        .get_key_value(migrations::META_BUCKET)
        .await
        .expect("meta bucket");
    let entry = meta.entry("schema").await.expect("read").expect("recorded");
    assert_eq!(entry.revision, 1, "a second run rewrote the record");
}

#[test]
fn a_newer_schema_on_the_server_is_refused() {
    let nats = NatsServer::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = async_nats::connect(nats.url()).await.expect("connect");
        migrations::record_version(&client, 99)
            .await
            .expect("record");
        let err = migrations::apply(&client, "test", &Default::default())
            .await
            .expect_err("must refuse");
        assert!(
            matches!(err, migrations::Error::NewerSchema { found: 99, .. }),
            "{err}"
        );
    });
    let out = std::process::Command::new(common::weft_binary())
        .arg("serve")
        .env("NATS_URL", nats.url())
        .env("API_PORT", common::free_port().to_string())
        .output()
        .expect("weft runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("schema v99") && stderr.contains("newer weft"),
        "{stderr}"
    );
}

#[test]
fn without_nats_weft_keeps_retrying_and_says_so() {
    let port = common::free_port();
    let mut child = std::process::Command::new(common::weft_binary())
        .arg("serve")
        .env("NATS_URL", format!("nats://127.0.0.1:{port}"))
        .env("API_PORT", common::free_port().to_string())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("weft runs");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "weft gave up instead of retrying"
    );
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.matches("NATS is not reachable yet").count() >= 2,
        "{stderr}"
    );
}

/// A log written before the output stream existed: its `work.progressed` events carried
/// the lines. Migration v4 copies them into the output stream, once, and leaves the
/// events as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_progress_lines_are_copied_into_the_output_stream_once() {
    use events::work::{RoutingReason, WorkAssigned, WorkProgressed};
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.expect("connect");
    migrations::apply(&client, "test", &Default::default())
        .await
        .expect("first run");
    let js = jetstream::new(client.clone());
    let envelope = |n: u64, event: events::Event| events::Envelope {
        id: format!("e{n}"),
        project: "p".into(),
        aggregate: events::AggregateKind::Work,
        aggregate_id: "w1".into(),
        schema_version: events::SCHEMA_VERSION,
        time_ms: 1_000 + n,
        actor: "a1".into(),
        correlation_id: None,
        causation_id: None,
        event,
    };
    let old = [
        events::Event::WorkAssigned(WorkAssigned {
            agent_id: "a1".into(),
            lease_id: "l1".into(),
            attempt: 1,
            reason: RoutingReason::default(),
        }),
        events::Event::WorkProgressed(WorkProgressed {
            agent_id: "a1".into(),
            lease_id: "l1".into(),
            progress: None,
            message: "compiling\nrunning tests".into(),
            phase: None,
        }),
        events::Event::WorkProgressed(WorkProgressed {
            agent_id: "a1".into(),
            lease_id: "l1".into(),
            progress: Some(50),
            message: "tests passed".into(),
            phase: None,
        }),
    ];
    for (n, event) in old.into_iter().enumerate() {
        js.publish(
            "weft.ev.p.work.w1",
            envelope(n as u64, event).encode().into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
    }
    // As a server at v3 would be: no output stream yet.
    js.delete_stream(events::output::STREAM)
        .await
        .expect("delete");
    migrations::record_version(&client, 3)
        .await
        .expect("record");
    for run in 0..2 {
        let outcome = migrations::apply(&client, "test", &Default::default())
            .await
            .expect("migrate");
        assert_eq!(outcome.current, migrations::latest_version());
        let output = weft::output::OutputStore::new(client.clone());
        let page = output.page("p", "w1", 0, 1000).await.expect("read");
        let lines: Vec<(u32, u64, Vec<String>)> = page
            .chunks
            .iter()
            .map(|c| (c.chunk.attempt, c.chunk.first_line, c.chunk.lines.clone()))
            .collect();
        assert_eq!(
            lines,
            [
                (
                    1,
                    1,
                    vec!["compiling".to_string(), "running tests".to_string()]
                ),
                (1, 3, vec!["tests passed".to_string()]),
            ],
            "run {run}: copied once, numbered"
        );
        // A rerun of v4 (a copy that stopped half way) adds nothing twice.
        migrations::record_version(&client, 3)
            .await
            .expect("record");
    }
    let log = js
        .get_stream(events::STREAM)
        .await
        .expect("log")
        .info()
        .await
        .expect("info")
        .state
        .messages;
    assert_eq!(log, 3, "the log is as it was");

    // The output stream's limits follow the configuration at every start, in place.
    let topology = migrations::Topology {
        output: migrations::OutputLimits {
            chunks_per_item: 5,
            max_age: std::time::Duration::from_secs(3600),
            max_bytes: 8 * 1024 * 1024,
        },
        ..Default::default()
    };
    migrations::apply(&client, "test", &topology)
        .await
        .expect("apply");
    let config = js
        .get_stream(events::output::STREAM)
        .await
        .expect("output")
        .info()
        .await
        .expect("info")
        .config
        .clone();
    assert_eq!(
        (
            config.max_messages_per_subject,
            config.max_age.as_secs(),
            config.max_bytes
        ),
        (5, 3600, 8 * 1024 * 1024)
    );
}
