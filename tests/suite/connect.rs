//! Connecting to a NATS of your own: credentials in the URL or in NATS_USER/NATS_PASS,
//! the WebSocket transport, and wrong credentials retried rather than fatal.

use crate::common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, wait_until, Weft};

struct AuthServer {
    port: u16,
    ws_port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn auth_server() -> AuthServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let (port, ws_port) = (free_port(), free_port());
    let config = dir.path().join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nauthorization {{ user: weft, password: \"p@ss word\" }}\n\
             websocket {{ listen: \"127.0.0.1:{ws_port}\", no_tls: true }}\n\
             jetstream {{ store_dir: {:?} }}\n",
            dir.path().join("js")
        ),
    )
    .expect("config");
    let child = Command::new(weft::embedded::find_binary().expect("nats-server"))
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server");
    let reachable = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
    wait_until("nats-server", Duration::from_secs(15), || {
        reachable(port) && reachable(ws_port)
    });
    AuthServer {
        port,
        ws_port,
        child,
        _dir: dir,
    }
}

#[test]
fn credentials_from_the_environment_and_websocket_transport() {
    let server = auth_server();
    let weft = Weft::start(&[
        ("NATS_URL", format!("nats://127.0.0.1:{}", server.port)),
        ("NATS_USER", "weft".into()),
        ("NATS_PASS", "p@ss word".into()),
    ]);
    assert_eq!(weft.health_status(), 200);
    drop(weft);

    // Credentials in the URL (percent-encoded), over NATS-over-WebSocket.
    let weft = Weft::start(&[(
        "NATS_URL",
        format!("ws://weft:p%40ss%20word@127.0.0.1:{}", server.ws_port),
    )]);
    assert_eq!(weft.health_status(), 200);
    assert!(
        !weft.log_text().contains("p%40ss"),
        "the password reached the log"
    );
}

#[test]
fn wrong_credentials_are_retried_and_reported() {
    let server = auth_server();
    let mut child = Command::new(common::weft_binary())
        .arg("serve")
        .env("NATS_URL", format!("nats://127.0.0.1:{}", server.port))
        .env("NATS_USER", "weft")
        .env("NATS_PASS", "wrong")
        .env("API_PORT", free_port().to_string())
        .env_remove("API_TOKENS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weft runs");
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().expect("wait").is_none(), "weft gave up");
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NATS is not reachable yet")
            && stderr.to_lowercase().contains("authorization"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong"),
        "the password reached the log: {stderr}"
    );
}
