//! The spec as a contract: a Python client generated from `openapi.yaml` (with
//! openapi-python-client, pinned in tests/python/requirements.txt) drives a real Weft
//! through its typed functions only, and every response parses into its model.

use crate::common;

use std::time::Duration;

use common::{fast_env, poll_until, AgentProcess, NatsServer, Weft};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_python_client_drives_weft_and_every_response_parses() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let agent = AgentProcess::start(&nats, "claude-code", "rust", "personal", 1, "echo hello");
    poll_until(&weft, "/api/agents", Duration::from_secs(20), |b| {
        b["total"] == 1
    })
    .await;
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
    let work = tempfile::tempdir().expect("temp dir");
    let base = weft.url("");
    let workdir = work.path().to_string_lossy().to_string();
    let id = agent.id.clone();
    let (ok, output) = tokio::task::spawn_blocking(move || {
        common::run_python("generated_client.py", &[spec, &base, &workdir, &id])
    })
    .await
    .expect("joined");
    assert!(ok, "{output}");
    assert!(
        output.contains("every response documented and parsed"),
        "{output}"
    );
    println!("{output}");
}
