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
