//! The agent wrappers under test, with stand-in `claude` and `copilot` commands on PATH:
//! each agent registers with the documented type, capabilities and boundaries and
//! completes a submitted item; register-target.sh registers an ssh target via shuttle.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{call, client, poll_until, submit_body, NatsServer, Weft};

fn wrappers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("agent-wrappers")
}

/// A directory with stand-in CLIs that answer in the structured output the wrappers ask
/// for (Claude's stream-json result record, Copilot's JSON lines), and refuse to run
/// without the unattended flags the wrappers pass.
fn stand_ins() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("dir");
    for (name, needs, answer) in [
        (
            "claude",
            "--output-format stream-json --verbose --permission-mode acceptEdits",
            r#"printf '{"type":"result","subtype":"success","is_error":false,"result":"claude did: %s","total_cost_usd":0.01}\n' "$2""#,
        ),
        (
            "copilot",
            "--output-format json --no-ask-user --allow-tool write",
            r#"printf '{"type":"assistant.message","data":{"content":"copilot did: %s"}}\n{"type":"result","sessionId":"s","exitCode":0,"usage":{"premiumRequests":1}}\n' "$2""#,
        ),
    ] {
        let path = dir.path().join(name);
        let args_log = dir.path().join(format!("{name}.args"));
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\n# $1 is -p, $2 the prompt\necho \"$*\" >> {}\ncase \"$*\" in *\"{needs}\"*) ;; *) echo \"missing flags: $*\" >&2; exit 3;; esac\n{answer}\n",
                args_log.display()
            ),
        )
        .expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bootstrap(script: &str, nats: &NatsServer, bin: &Path, env: &[(&str, &str)]) -> Killed {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Killed(
        Command::new(wrappers().join(script))
            .env("PATH", path)
            .env("NATS_URL", nats.url())
            .env("WEFT_BIN", common::weft_binary())
            .env("LOG_LEVEL", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("wrapper starts"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_and_copilot_wrappers_join_and_work() {
    let nats = NatsServer::start();
    let weft = Weft::start(&common::fast_env(&nats));
    let bin = stand_ins();
    let _claude = bootstrap(
        "claude-code/bootstrap.sh",
        &nats,
        bin.path(),
        &[
            ("AGENT_CAPABILITIES", "rust,typescript"),
            ("AGENT_BOUNDARIES", "personal"),
        ],
    );
    let _copilot = bootstrap(
        "copilot-cli/bootstrap.sh",
        &nats,
        bin.path(),
        &[
            ("AGENT_CAPABILITIES", "rust"),
            ("LOOM_PROJECT_ID", "default"),
        ],
    );
    let agents = poll_until(&weft, "/api/agents", Duration::from_secs(20), |b| {
        b["total"] == 2
    })
    .await;
    let find = |t: &str| {
        agents["agents"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["agentType"] == t))
            .cloned()
            .expect("agent")
    };
    let claude = find("claude-code");
    assert_eq!(
        (claude["capabilities"].clone(), claude["boundaries"].clone()),
        (
            serde_json::json!(["rust", "typescript"]),
            serde_json::json!(["personal"])
        )
    );
    let copilot = find("copilot-cli");
    assert_eq!(
        copilot["boundaries"],
        serde_json::json!(["corporate", "corporate-adjacent"])
    );

    let http = client();
    let mut docs = submit_body("write the docs", "typescript", "personal", 5);
    docs["maxCostUsd"] = serde_json::json!(0.5);
    let (_, personal) = call(http.post(weft.url("/api/work")).json(&docs)).await;
    let (_, corporate) = call(http.post(weft.url("/api/work")).json(&submit_body(
        "fix the 'payroll' bug",
        "rust",
        "corporate",
        5,
    )))
    .await;
    for (item, cli, prompt) in [
        (personal, "claude", "write the docs"),
        (corporate, "copilot", "fix the 'payroll' bug"),
    ] {
        let id = item["id"].as_str().expect("id");
        let done = poll_until(
            &weft,
            &format!("/api/work/{id}"),
            Duration::from_secs(30),
            |w| w["status"] == "completed",
        )
        .await;
        assert_eq!(done["result"]["summary"], format!("{cli} did: {prompt}"));
        assert!(
            done["usage"].is_object(),
            "the structured output's usage: {done}"
        );
    }
    // The item's maxCostUsd reached Claude as its budget flag.
    let claude_args = std::fs::read_to_string(bin.path().join("claude.args")).expect("args");
    assert!(
        claude_args.contains("--max-budget-usd 0.5"),
        "{claude_args}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_target_adds_this_machine_as_an_ssh_target() {
    let nats = NatsServer::start();
    let weft = Weft::start(&[("NATS_URL", nats.url())]);
    let home = tempfile::tempdir().expect("home");
    let out = Command::new(wrappers().join("register-target.sh"))
        .env("HOME", home.path())
        .env("SHUTTLE_BIN", env!("CARGO_BIN_EXE_shuttle"))
        .env("WEFT_API_URL", weft.url(""))
        .env("SSH_KEY_PATH", "/keys/weft")
        .env("TARGET_NAME", "workstation")
        .env("TARGET_HOST", "127.0.0.1")
        .env("AGENT_CAPABILITIES", "rust")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, target) = call(client().get(weft.url("/api/targets/workstation"))).await;
    assert_eq!(status, 200, "{target}");
    assert_eq!(target["mechanism"], "ssh");
    assert_eq!(target["config"]["ssh"]["privateKeyPath"], "/keys/weft");
    assert!(target["config"]["ssh"]["command"]
        .as_str()
        .is_some_and(|c| c.ends_with("agent-wrappers/claude-code/bootstrap.sh")));
    assert_eq!(target["capabilities"], serde_json::json!(["rust"]));
}
