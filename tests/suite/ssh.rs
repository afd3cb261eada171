//! The `ssh` mechanism against a real sshd on 127.0.0.1 (Debian's openssh-server, which
//! `scripts/test.sh` installs), with keys made for the test.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    all_events, call, client, fast_env, free_port, poll_until, submit_body, wait_until, NatsServer,
    Weft,
};
use serde_json::{json, Value};

struct Sshd {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
}

fn sshd() -> Sshd {
    assert!(
        Path::new("/usr/sbin/sshd").exists(),
        "these tests need a real sshd: install openssh-server (scripts/test.sh does, as root)"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let d = dir.path();
    keygen(&d.join("host_key"));
    keygen(&d.join("client_key"));
    keygen(&d.join("stranger_key"));
    std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).expect("authorized_keys");
    // sshd's privilege separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let config = d.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {keys}\nPidFile {pid}\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin yes\n",
            host = d.join("host_key").display(),
            keys = d.join("authorized_keys").display(),
            pid = d.join("sshd.pid").display(),
        ),
    )
    .expect("config");
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sshd starts");
    wait_until("sshd to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Sshd { port, dir, child }
}

fn user() -> String {
    String::from_utf8(Command::new("id").arg("-un").output().expect("id").stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

fn ssh_target(name: &str, server: &Sshd, key: &str, command: &str) -> Value {
    let host_key =
        std::fs::read_to_string(server.dir.path().join("host_key.pub")).expect("host key");
    json!({
        "name": name, "agentType": "claude-code", "capabilities": ["rust"], "boundaries": ["personal"],
        "mechanism": "ssh",
        "config": {
            "host": "127.0.0.1", "port": server.port, "user": user(), "command": command,
            "privateKeyPath": server.dir.path().join(key).display().to_string(),
            "hostKey": host_key.split_whitespace().take(2).collect::<Vec<_>>().join(" "),
            "env": {"LOG_LEVEL": "warn"}
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_spin_ups_start_agents_that_do_the_work() {
    let server = sshd();
    let nats = NatsServer::start();
    let mut env = fast_env(&nats);
    env.push(("IDLE_TIMEOUT_MS", "1500".into()));
    env.push(("WEFT_SCALEDOWN_GRACE_MS", "3000".into()));
    let weft = Weft::start(&env);
    let http = client();
    let agent = format!(
        "{} agent --command 'echo over ssh: {{description}}'",
        common::weft_binary().display()
    );
    let (status, created) = call(http.post(weft.url("/api/targets")).json(&ssh_target(
        "box",
        &server,
        "client_key",
        &agent,
    )))
    .await;
    assert_eq!(status, 201, "{created}");
    let (_, health) = call(http.post(weft.url("/api/targets/box/test"))).await;
    assert_eq!(health["healthy"], true, "{health}");

    let (_, item) = call(http.post(weft.url("/api/work")).json(&submit_body(
        "remote job",
        "rust",
        "personal",
        5,
    )))
    .await;
    let id = item["id"].as_str().expect("id").to_string();
    let done = poll_until(
        &weft,
        &format!("/api/work/{id}"),
        Duration::from_secs(40),
        |w| w["status"] == "completed",
    )
    .await;
    assert!(
        done["result"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("over ssh: remote job")),
        "{done}"
    );
    let events = all_events(&weft).await;
    let started = events
        .iter()
        .find(|e| e["type"] == "spin-up.started")
        .expect("started");
    let pid = started["data"]["pid"].as_u64().expect("the remote pid");
    assert!(started["data"]["detail"]
        .as_str()
        .is_some_and(|d| d.contains("127.0.0.1")));
    // Idle, asked to leave, and the remote process group is stopped.
    poll_until(
        &weft,
        "/api/events?type=spin-up.stopped",
        Duration::from_secs(30),
        |b| b["count"] == 1,
    )
    .await;
    wait_until(
        "the remote agent to be gone",
        Duration::from_secs(15),
        || !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_or_host_key_fails_the_health_check_clearly() {
    let server = sshd();
    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let http = client();
    let (status, _) = call(http.post(weft.url("/api/targets")).json(&ssh_target(
        "stranger",
        &server,
        "stranger_key",
        "true",
    )))
    .await;
    assert_eq!(status, 201);
    let (_, health) = call(http.post(weft.url("/api/targets/stranger/test"))).await;
    assert_eq!(health["healthy"], false);
    assert!(
        health["error"]
            .as_str()
            .is_some_and(|e| e.contains("authentication") && e.contains("refused")),
        "{health}"
    );

    let mut spoofed = ssh_target("spoofed", &server, "client_key", "true");
    let other = std::fs::read_to_string(server.dir.path().join("stranger_key.pub")).expect("key");
    spoofed["config"]["hostKey"] = json!(other
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "));
    call(http.post(weft.url("/api/targets")).json(&spoofed)).await;
    let (_, health) = call(http.post(weft.url("/api/targets/spoofed/test"))).await;
    assert_eq!(health["healthy"], false);
    assert!(
        health["error"]
            .as_str()
            .is_some_and(|e| e.contains("host key") && e.contains("not trusted")),
        "{health}"
    );
    let (_, target) = call(http.get(weft.url("/api/targets/spoofed"))).await;
    assert_eq!(target["healthStatus"], "unhealthy");
}
