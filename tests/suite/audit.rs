//! `weft audit verify` against a real log: a healthy log passes every check; a snapshot
//! that does not match the replay, and events written to NATS behind Weft's back (a copy
//! of an event, one on another aggregate's subject, bytes that are no event) fail it, with
//! a report that says which. The same check in the background shows in `/health` and
//! `/metrics`.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{call, client, submit_body, NatsServer, Weft};

fn verify(nats: &NatsServer, weft: &Weft) -> (bool, String) {
    let out = Command::new(common::weft_binary())
        .args(["audit", "verify", "--nats-url", &nats.url()])
        .args(["--api-url", &weft.url("")])
        .env_remove("WEFT_API_TOKEN")
        .output()
        .expect("weft runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_on_a_healthy_log_and_names_a_snapshot_that_differs() {
    let nats = NatsServer::start();
    let weft = Weft::start(&[
        ("NATS_URL", nats.url()),
        ("WEFT_SNAPSHOT_EVERY", "5".into()),
    ]);
    let http = client();
    for i in 0..12 {
        let body = submit_body(&format!("audited-{i}"), "rust", "personal", 5);
        let (status, answer) = call(http.post(weft.url("/api/work")).json(&body)).await;
        assert_eq!(status, 201, "{answer}");
    }
    common::wait_until("a snapshot", Duration::from_secs(20), || {
        weft.log_text().contains("snapshot saved")
    });

    let (ok, report) = verify(&nats, &weft);
    assert!(ok, "{report}");
    for line in [
        "ok   sequences 1..",
        "events readable by this binary",
        ": equal to the replay",
        "ok   live state at",
    ] {
        assert!(report.contains(line), "{line} missing from:\n{report}");
    }
    assert!(report.contains("ok   snapshot at"), "{report}");

    // A snapshot that is not what the log says.
    let (_, state) = call(http.get(weft.url("/api/state"))).await;
    let sequence = state["sequence"].as_u64().expect("sequence");
    let nats_client = async_nats::connect(nats.url()).await.expect("connect");
    weft::store::EventStore::new(nats_client)
        .save_snapshot(sequence, &projections::State::default().to_snapshot(), 24)
        .await
        .expect("snapshot saved");
    let (ok, report) = verify(&nats, &weft);
    assert!(!ok, "{report}");
    assert!(
        report.contains(&format!(
            "FAIL snapshot at {sequence}: DIFFERS from the replay"
        )),
        "{report}"
    );
    assert!(report.contains("ok   live state at"), "{report}");
}

/// Writes to the log behind Weft's back: a copy of event 1, event 1's envelope on another
/// aggregate's subject, and bytes that are no event.
async fn tamper(nats: &NatsServer) {
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("WEFT_EVENTS").await.expect("stream");
    let first = stream.get_raw_message(1).await.expect("event 1");
    for (subject, payload) in [
        (first.subject.to_string(), first.payload.clone()),
        (
            "weft.ev.default.work.forged".to_string(),
            first.payload.clone(),
        ),
        (
            "weft.ev.default.work.garbage".to_string(),
            "not an event".into(),
        ),
    ] {
        js.publish(subject, payload)
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_behind_wefts_back_fail_verify_and_the_background_check() {
    let nats = NatsServer::start();
    let weft = Weft::start(&[
        ("NATS_URL", nats.url()),
        ("WEFT_AUDIT_INTERVAL_MS", "200".into()),
    ]);
    let http = client();
    for i in 0..3 {
        let body = submit_body(&format!("audited-{i}"), "rust", "personal", 5);
        let (status, answer) = call(http.post(weft.url("/api/work")).json(&body)).await;
        assert_eq!(status, 201, "{answer}");
    }
    let health = common::poll_until(&weft, "/health", Duration::from_secs(20), |h| {
        h["audit"]["ok"] == true
    })
    .await;
    assert!(health["audit"]["checks"].as_u64() >= Some(5), "{health}");
    let metrics = common::metrics_text(&weft).await;
    assert!(metrics.contains("weft_audit_ok 1"), "{metrics}");

    tamper(&nats).await;
    let (ok, report) = verify(&nats, &weft);
    assert!(!ok, "{report}");
    for needle in [
        "FAIL 1 events unreadable",
        "FAIL 1 events on a subject their envelope does not name",
        "FAIL 2 events repeat an earlier id",
    ] {
        assert!(report.contains(needle), "{needle} in:\n{report}");
    }
    // A run that began before the last write saw fewer; the next sees all three.
    let health = common::poll_until(&weft, "/health", Duration::from_secs(20), |h| {
        h["audit"]["ok"] == false && h["audit"]["failed"].as_array().map(Vec::len) == Some(3)
    })
    .await;
    let failed = health["audit"]["failed"].to_string();
    assert!(failed.contains("unreadable"), "{health}");
    let metrics = common::metrics_text(&weft).await;
    assert!(metrics.contains("weft_audit_ok 0"), "{metrics}");
    assert!(metrics.contains("weft_audit_failed_checks 3"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_log_imported_into_an_empty_one_gives_the_same_state() {
    let source = NatsServer::start();
    let weft = Weft::start(&[("NATS_URL", source.url())]);
    let http = client();
    for i in 0..5 {
        let body = submit_body(&format!("moved-{i}"), "rust", "personal", 5);
        let (status, answer) = call(http.post(weft.url("/api/work")).json(&body)).await;
        assert_eq!(status, 201, "{answer}");
    }
    // No targets and no agents: nothing is scheduled, so the log stays as it is.
    let (_, before) = call(http.get(weft.url("/api/state"))).await;

    let export = Command::new(common::weft_binary())
        .args(["events", "export", "--nats-url", &source.url()])
        .output()
        .expect("weft runs");
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let lines = String::from_utf8_lossy(&export.stdout).lines().count() as u64;
    assert_eq!(
        Some(lines),
        before["sequence"].as_u64(),
        "one line per event"
    );
    let file = source.dir.path().join("log.jsonl");
    std::fs::write(&file, &export.stdout).expect("export written");

    let target = NatsServer::start();
    let import = |path: &std::path::Path| {
        Command::new(common::weft_binary())
            .args(["events", "import", "--nats-url", &target.url()])
            .arg(path)
            .output()
            .expect("weft runs")
    };
    let imported = import(&file);
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    // Only into an empty log.
    let again = import(&file);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("empty"));

    let moved = Weft::start(&[("NATS_URL", target.url())]);
    let (_, after) = call(http.get(moved.url("/api/state"))).await;
    assert_eq!(after["sequence"], before["sequence"]);
    assert_eq!(after["digest"], before["digest"], "{before} {after}");
}
