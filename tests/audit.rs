//! `weft audit verify` against a real log: a healthy log passes every check; a snapshot
//! that does not match the replay fails it, with a report that says which.

mod common;

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
        .save_snapshot(sequence, &projections::State::default().to_snapshot())
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
