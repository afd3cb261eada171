//! Nothing acknowledged is lost: `kill -9` of weft (with and without snapshots), and a
//! nats-server that dies and comes back while weft runs.

use crate::common;

use std::time::Duration;

use common::{call, client, local_target, NatsServer, Weft};
use serde_json::Value;

async fn state(weft: &Weft) -> Value {
    let (status, state) = call(client().get(weft.url("/api/state"))).await;
    assert_eq!(status, 200, "{state}");
    state
}

async fn register_concurrently(weft: &Weft, prefix: &str, total: usize, clients: usize) {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let http = client();
        let url = weft.url("/api/targets");
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            for i in (c..total).step_by(clients) {
                let (status, body) = call(
                    http.post(&url)
                        .json(&local_target(&format!("{prefix}-{i}"))),
                )
                .await;
                assert_eq!(status, 201, "{body}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
}

async fn crash_and_compare(snapshot_every: u64) -> (Value, String) {
    let nats = NatsServer::start();
    let env = [
        ("NATS_URL", nats.url()),
        ("WEFT_SNAPSHOT_EVERY", snapshot_every.to_string()),
    ];
    let mut weft = Weft::start(&env);
    register_concurrently(&weft, "t", 200, 20).await;
    // Changes after the last snapshot too.
    for i in 0..15 {
        let (status, _) =
            call(client().post(weft.url(&format!("/api/targets/t-{i}/disable")))).await;
        assert_eq!(status, 200);
    }
    let before = state(&weft).await;
    assert_eq!(before["targets"], 200);
    weft.kill9();

    let weft = Weft::start(&env);
    let after = state(&weft).await;
    assert_eq!(
        after["digest"], before["digest"],
        "state differs after kill -9 and restart"
    );
    assert_eq!(after["sequence"], before["sequence"]);
    let (_, list) = call(client().get(weft.url("/api/targets?limit=100&status=disabled"))).await;
    assert_eq!(list["total"], 15);
    let (_, all) = call(client().get(weft.url("/api/targets?limit=1"))).await;
    assert_eq!(all["total"], 200);
    (before, weft.log_text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_replay_from_zero_restores_every_target() {
    let (_, log) = crash_and_compare(0).await;
    assert!(
        !log.contains("loaded snapshot"),
        "no snapshot should exist:\n{log}"
    );
    assert!(
        // 200 registrations, 15 disables, and the writer's election.
        log.contains("replayed=216"),
        "expected a full replay:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_snapshot_plus_tail_restores_every_target() {
    let (_, log) = crash_and_compare(70).await;
    // Snapshots are saved in the background; any of them (70, 140, 210) will do, as long as
    // the restart used one and replayed what came after it.
    let loaded = log
        .lines()
        .find(|l| l.contains("loaded snapshot"))
        .unwrap_or_else(|| panic!("no snapshot loaded:\n{log}"));
    assert!(loaded.contains("sequence="), "{loaded}");
    assert!(
        !log.contains("replayed=216"),
        "the snapshot was not used:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_rides_out_a_nats_restart() {
    let mut nats = NatsServer::start();
    let env = [("NATS_URL", nats.url())];
    let mut weft = Weft::start(&env);
    register_concurrently(&weft, "before", 10, 2).await;

    nats.kill();
    let http = client();
    common::wait_until("weft to notice the outage", Duration::from_secs(20), || {
        weft.health_status() == 503
    });
    // Writes fail cleanly while NATS is gone; reads are served from memory.
    let mut saw_unavailable = false;
    for _ in 0..50 {
        let (status, body) = call(
            http.post(weft.url("/api/targets"))
                .json(&local_target("during")),
        )
        .await;
        if status == 503 {
            assert_eq!(body["error"], "ServiceUnavailable");
            saw_unavailable = true;
            break;
        }
        assert_ne!(status, 201, "a write was acknowledged with NATS down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_unavailable, "writes never reported the outage");
    let (status, list) = call(http.get(weft.url("/api/targets"))).await;
    assert_eq!((status, &list["total"]), (200, &Value::from(10)));

    nats.restart();
    weft.wait_healthy(Duration::from_secs(30));
    // The first writes after a reconnect may race the consumer's recovery: retry briefly.
    for i in 0..10 {
        let mut created = false;
        for _ in 0..100 {
            let (status, _) = call(
                http.post(weft.url("/api/targets"))
                    .json(&local_target(&format!("after-{i}"))),
            )
            .await;
            if status == 201 {
                created = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            created,
            "weft did not accept writes after NATS came back:\n{}",
            weft.log_text()
        );
    }
    let live = state(&weft).await;
    assert_eq!(live["targets"], 20);
    let (_, log) = call(http.get(weft.url("/api/events?aggregate=target&limit=1000"))).await;
    assert_eq!(log["count"], 20, "events lost or duplicated: {log}");

    // And the live state equals a replay from zero.
    weft.kill9();
    let weft = Weft::start(&env);
    assert_eq!(state(&weft).await["digest"], live["digest"]);
}
