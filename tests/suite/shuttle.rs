//! `shuttle` against a real weft: every command, tables and --json, exit codes, config
//! precedence, and `work submit --wait`.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{fast_env, poll_until, AgentProcess, NatsServer, Weft};
use serde_json::Value;

fn shuttle(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shuttle"))
        .args(args)
        .env("HOME", home)
        .env_remove("WEFT_API_URL")
        .env_remove("WEFT_API_TOKEN")
        .envs(env.iter().copied())
        .output()
        .expect("shuttle runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).expect("JSON output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_against_a_real_weft() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let home = tempfile::tempdir().expect("home");
    let h = home.path();
    let url = weft.url("");
    ok(&shuttle(h, &[], &["config", "set", "apiUrl", &url]));
    assert_eq!(
        ok(&shuttle(h, &[], &["config", "get", "apiUrl"])).trim(),
        url
    );
    ok(&shuttle(
        h,
        &[],
        &["config", "set", "defaultBoundary", "personal"],
    ));
    assert!(ok(&shuttle(h, &[], &["config", "list"])).contains("defaultBoundary=personal"));
    let run = |args: &[&str]| shuttle(h, &[], args);

    // Work, followed live to its end.
    let _agent = AgentProcess::start(&nats, "claude-code", "rust", "personal", 1, "case \"$WEFT_WORK_DESCRIPTION\" in *fail*) exit 4;; esac; echo step; sleep 1.2; echo all done");
    poll_until(&weft, "/api/agents", Duration::from_secs(20), |b| {
        b["total"] == 1
    })
    .await;
    let done = run(&["work", "submit", "build the thing", "-c", "rust", "--wait"]);
    let text = ok(&done);
    assert!(text.contains("completed: all done"), "{text}");
    assert!(
        String::from_utf8_lossy(&done.stderr).contains("step"),
        "progress is shown"
    );
    let failed = run(&["work", "submit", "fail hard", "-c", "rust", "--wait"]);
    assert_eq!(
        failed.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("dead-lettered")
            || String::from_utf8_lossy(&failed.stderr).contains("failed")
    );

    let list = ok(&run(&["work", "list"]));
    assert!(
        list.lines()
            .next()
            .is_some_and(|h| h.starts_with("ID") && h.contains("STATUS")),
        "{list}"
    );
    assert!(list.contains("build the thing") && list.contains("completed"));
    let items = json(&run(&["--json", "work", "list", "--status", "completed"]));
    assert_eq!(items["total"], 1);
    let id = items["workItems"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(
        json(&run(&["--json", "work", "show", &id]))["status"],
        "completed"
    );
    let pending = json(&run(&[
        "--json",
        "work",
        "submit",
        "nobody can",
        "-c",
        "cobol",
    ]));
    let pending_id = pending["id"].as_str().expect("id").to_string();
    assert!(ok(&run(&["work", "cancel", &pending_id])).contains("cancelled"));
    let dead = json(&run(&[
        "--json",
        "work",
        "list",
        "--status",
        "dead-lettered",
    ]));
    let dead_id = dead["workItems"][0]["id"]
        .as_str()
        .expect("a dead-lettered item")
        .to_string();
    assert!(ok(&run(&["work", "retry", &dead_id])).contains("queued again"));

    // Agents.
    let agents = ok(&run(&["agents", "list"]));
    assert!(
        agents.contains("claude-code") && agents.contains("online"),
        "{agents}"
    );
    let agent_list = json(&run(&["--json", "agents", "list", "--type", "claude-code"]));
    let guid = agent_list["agents"][0]["guid"]
        .as_str()
        .expect("guid")
        .to_string();
    assert_eq!(
        json(&run(&["--json", "agents", "show", &guid]))["guid"],
        guid.as_str()
    );

    // Targets, with the original README's flags.
    let target = json(&run(&[
        "--json",
        "targets",
        "add",
        "--name",
        "box",
        "--type",
        "claude-code",
        "--mechanism",
        "ssh",
        "--host",
        "127.0.0.1",
        "--user",
        "agent",
        "--key",
        "/keys/id",
        "--command",
        "weft agent",
        "--capabilities",
        "rust,go",
        "--boundaries",
        "personal",
    ]));
    assert_eq!(target["config"]["ssh"]["host"], "127.0.0.1");
    assert_eq!(target["capabilities"], serde_json::json!(["rust", "go"]));
    ok(&run(&[
        "targets",
        "add",
        "--name",
        "here",
        "--type",
        "claude-code",
        "--mechanism",
        "local",
        "--command",
        "true",
        "--capabilities",
        "rust",
    ]));
    assert!(ok(&run(&["targets", "list"])).contains("box"));
    assert_eq!(
        json(&run(&[
            "--json",
            "targets",
            "update",
            "box",
            "--description",
            "the box"
        ]))["description"],
        "the box"
    );
    assert!(ok(&run(&["targets", "disable", "box"])).contains("disabled"));
    assert!(ok(&run(&["targets", "enable", "box"])).contains("enabled"));
    assert!(ok(&run(&["targets", "test", "here"])).contains("healthy"));
    let unhealthy = run(&["targets", "test", "box"]);
    assert_eq!(
        unhealthy.status.code(),
        Some(1),
        "an unhealthy target is a failure for scripts"
    );
    assert!(ok(&run(&["targets", "show", "box"])).contains("ssh"));
    assert!(ok(&run(&["targets", "remove", "box"])).contains("removed"));
    assert!(ok(&run(&["targets", "spin-up", "here"])).contains("spin-up"));

    // Overview commands.
    let stats = ok(&run(&["stats"]));
    assert!(stats.contains("PROJECTS") && stats.contains("COMPLETED"));
    assert_eq!(
        json(&run(&["--json", "projects"]))["projects"],
        serde_json::json!(["default"])
    );
    assert!(ok(&run(&["events", "--type", "work.completed"])).contains("work.completed"));
    for shell in ["bash", "zsh", "fish"] {
        assert!(ok(&run(&["completions", shell])).contains("shuttle"));
    }

    // Exit codes: refused 1, usage 2, unreachable 3.
    let missing = run(&["work", "show", "no-such-item"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
    assert_eq!(
        run(&["config", "set", "colour", "blue"]).status.code(),
        Some(2)
    );
    assert_eq!(run(&["work", "submit"]).status.code(), Some(2));
    let unreachable = shuttle(h, &[("WEFT_API_URL", "http://127.0.0.1:9")], &["stats"]);
    assert_eq!(unreachable.status.code(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_precedence_flag_over_env_over_file() {
    let nats = NatsServer::start();
    let weft = Weft::start(&[
        ("NATS_URL", nats.url()),
        ("API_TOKENS", "right-token".into()),
    ]);
    let home = tempfile::tempdir().expect("home");
    let h = home.path();
    let dead = "http://127.0.0.1:9";
    ok(&shuttle(h, &[], &["config", "set", "apiUrl", dead]));
    ok(&shuttle(h, &[], &["config", "set", "token", "wrong-token"]));
    assert!(
        ok(&shuttle(h, &[], &["config", "list"])).contains("token=********"),
        "tokens are not printed"
    );
    // File only: wrong URL.
    assert_eq!(shuttle(h, &[], &["stats"]).status.code(), Some(3));
    // Env over file: right URL, but the file's token is wrong.
    let env = [("WEFT_API_URL", weft.url(""))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = shuttle(h, &env, &["stats"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Invalid authentication token"));
    let mut with_token = env.clone();
    with_token.push(("WEFT_API_TOKEN", "right-token"));
    ok(&shuttle(h, &with_token, &["stats"]));
    // Flag over env.
    assert_eq!(
        shuttle(h, &with_token, &["--token", "wrong-again", "stats"])
            .status
            .code(),
        Some(1)
    );
    ok(&shuttle(
        h,
        &[("WEFT_API_URL", dead)],
        &[
            "--api-url",
            &weft.url(""),
            "--token",
            "right-token",
            "stats",
        ],
    ));
    // A bad config file is a clear error.
    std::fs::write(h.join(".loominal/config.json"), "{not json").expect("write");
    let bad = shuttle(h, &with_token, &["stats"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not valid JSON"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_shows_events_and_counts_as_they_happen() {
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let home = tempfile::tempdir().expect("home");
    let out_path = home.path().join("watch.out");
    let out = std::fs::File::create(&out_path).expect("out");
    let mut watch = Command::new(env!("CARGO_BIN_EXE_shuttle"))
        .args(["--api-url", &weft.url(""), "watch"])
        .env("HOME", home.path())
        .stdout(out)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("watch runs");
    common::wait_until("watch to print counts", Duration::from_secs(10), || {
        std::fs::read_to_string(&out_path).is_ok_and(|s| s.contains("-- agents 0"))
    });
    ok(&shuttle(
        home.path(),
        &[("WEFT_API_URL", weft.url("").as_str())],
        &["work", "submit", "watched", "-c", "rust"],
    ));
    common::wait_until("watch to show the event", Duration::from_secs(10), || {
        std::fs::read_to_string(&out_path)
            .is_ok_and(|s| s.contains("work:submitted") && s.contains("pending 1"))
    });
    let _ = watch.kill();
    let _ = watch.wait();
}
