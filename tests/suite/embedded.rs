//! The embedded default: `weft serve` without NATS_URL runs its own nats-server, keeps
//! state across restarts, and leaves no server behind, however it stops.

use crate::common;

use std::time::Duration;

use common::{call, client, free_port, local_target, processes_mentioning, wait_until, Weft};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_nats_serves_persists_and_is_cleaned_up() {
    let data = tempfile::tempdir().expect("temp dir");
    let env = [
        ("WEFT_DATA_DIR", data.path().display().to_string()),
        ("WEFT_NATS_PORT", free_port().to_string()),
    ];
    let config = data.path().join("nats").join("nats-server.conf");

    let mut weft = Weft::start(&env);
    assert_eq!(
        processes_mentioning(&config).len(),
        1,
        "exactly one embedded nats-server"
    );
    assert!(weft.log_text().contains("agents can join at this URL"));
    let (status, _) = call(
        client()
            .post(weft.url("/api/targets"))
            .json(&local_target("kept")),
    )
    .await;
    assert_eq!(status, 201);
    let status = weft.terminate();
    assert!(
        status.success(),
        "weft exited with {status}:\n{}",
        weft.log_text()
    );
    assert!(
        processes_mentioning(&config).is_empty(),
        "nats-server left behind after SIGTERM"
    );

    // The targets are still there after a restart.
    let mut weft = Weft::start(&env);
    let (status, target) = call(client().get(weft.url("/api/targets/kept"))).await;
    assert_eq!((status, target["name"].as_str()), (200, Some("kept")));

    // kill -9 of weft: the kernel tells nats-server to stop (PDEATHSIG).
    weft.kill9();
    wait_until(
        "the orphaned nats-server to exit",
        Duration::from_secs(20),
        || processes_mentioning(&config).is_empty(),
    );

    // And it comes back on the same data.
    let mut weft = Weft::start(&env);
    let (_, list) = call(client().get(weft.url("/api/targets"))).await;
    assert_eq!(list["total"], 1);
    assert!(weft.terminate().success());
    assert!(processes_mentioning(&config).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_embedded_server_is_restarted() {
    let data = tempfile::tempdir().expect("temp dir");
    let env = [
        ("WEFT_DATA_DIR", data.path().display().to_string()),
        ("WEFT_NATS_PORT", free_port().to_string()),
    ];
    let config = data.path().join("nats").join("nats-server.conf");
    let weft = Weft::start(&env);
    let first = processes_mentioning(&config);
    assert_eq!(first.len(), 1);
    // SAFETY: killing the test's own grandchild.
    unsafe { libc::kill(first[0] as libc::pid_t, libc::SIGKILL) };
    wait_until("a new nats-server", Duration::from_secs(20), || {
        let now = processes_mentioning(&config);
        now.len() == 1 && now != first
    });
    // Serving again, including writes.
    let mut created = false;
    for _ in 0..100 {
        let (status, _) = call(
            client()
                .post(weft.url("/api/targets"))
                .json(&local_target("after")),
        )
        .await;
        if status == 201 {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(created, "no writes after the restart:\n{}", weft.log_text());
}
