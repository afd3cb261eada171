//! The spec as a contract, tried by a fuzzer: schemathesis (pinned in
//! tests/python/requirements.txt) runs every one of its checks against a real Weft with
//! tokens on, and finds nothing. What it is told beyond the spec is in
//! tests/python/schemathesis.toml, each with its reason.

use crate::common;

use common::{NatsServer, Weft};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_with_every_check() {
    let nats = NatsServer::start();
    let weft = Weft::start(&[
        ("NATS_URL", nats.url()),
        ("API_TOKENS", "fuzz-token".into()),
        // Fuzzed targets must not start anything or reach any address: none is allowed.
        ("WEFT_MECHANISMS", "none".into()),
    ]);
    let root = env!("CARGO_MANIFEST_DIR");
    let base = weft.url("");
    // schemathesis keeps a cache in its working directory: not in the project.
    let scratch = tempfile::tempdir().expect("temp dir");
    let cwd = scratch.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(common::test_python())
            .current_dir(cwd)
            .args(["-m", "schemathesis.cli", "--config-file"])
            .arg(format!("{root}/tests/python/schemathesis.toml"))
            .arg("run")
            .arg(format!("{root}/openapi.yaml"))
            .args(["--url", &base])
            .args(["--header", "Authorization: Bearer fuzz-token"])
            .args(["--checks", "all"])
            // Bounded, so the suite stays quick: a few thousand requests in all.
            .args(["--max-examples", "15", "--seed", "1", "--workers", "1"])
            .args(["--generation-database", "none", "--no-color"])
            .output()
            .expect("schemathesis runs")
    })
    .await
    .expect("joined");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("passed"), "{text}");
}
