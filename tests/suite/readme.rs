//! The README's CLI examples run against a real Weft, so they cannot drift from the code.

use crate::common;

use std::process::Command;

use common::{NatsServer, Weft};

#[test]
fn the_readme_cli_examples_work() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let marker = "<!-- The block below is run by tests/suite/readme.rs against a real Weft. -->";
    let block = readme
        .split(marker)
        .nth(1)
        .expect("the tested block is marked in the README");
    let lines: Vec<&str> = block
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block after the marker")
        .lines()
        .filter(|l| l.starts_with("shuttle "))
        .collect();
    assert!(lines.len() >= 5, "the examples went missing");
    let nats = NatsServer::start();
    let weft = Weft::start(&[("NATS_URL", nats.url())]);
    let home = tempfile::tempdir().expect("home");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_shuttle"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut outputs = String::new();
    for line in lines {
        let line = line.replace("http://localhost:3000", &weft.url(""));
        let out = Command::new("sh")
            .arg("-c")
            .arg(&line)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("HOME", home.path())
            .env("PATH", &path)
            .env_remove("WEFT_API_URL")
            .output()
            .expect("sh runs");
        assert!(
            out.status.success(),
            "README example failed: {line}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    assert!(
        outputs.contains("home-server") && outputs.contains("disabled"),
        "{outputs}"
    );
    assert!(
        outputs.contains("Write the release notes") && outputs.contains("work.submitted"),
        "{outputs}"
    );
}
