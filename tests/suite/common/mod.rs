//! Real parts for integration tests: a nats-server per test on its own port and temp
//! dir, the real `weft` binary, and a real HTTP client. Everything listens on 127.0.0.1
//! and every wait is bounded.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn free_port() -> u16 {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(100),
    )
    .is_ok()
}

pub struct NatsServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    pub fn start() -> Self {
        let mut server = NatsServer {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port and storage.
    pub fn restart(&mut self) {
        let binary = weft::embedded::find_binary()
            .expect("nats-server (run scripts/install-nats-server.sh)");
        let child = Command::new(binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let port = self.port;
        wait_until("nats-server to listen", Duration::from_secs(15), || {
            listening(port)
        });
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A three-node nats-server cluster with JetStream, each node on its own client, route
/// and monitoring ports and its own store, all on 127.0.0.1.
pub struct NatsCluster {
    pub nodes: Vec<ClusterNode>,
}

pub struct ClusterNode {
    pub name: String,
    pub port: u16,
    pub monitor: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsCluster {
    /// Starts the three nodes and waits until JetStream is ready on each. Ports are picked
    /// free and then bound by the servers, so another test may take one in between: a
    /// node that exits, or a cluster not ready in time, is started again on new ports.
    pub fn start() -> Self {
        for _ in 0..3 {
            let mut cluster = Self::spawn();
            if cluster.ready(Duration::from_secs(40)) {
                return cluster;
            }
            let names: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
            for name in names {
                cluster.kill(&name);
            }
        }
        panic!("a three-node nats-server cluster did not become ready in three tries");
    }

    fn spawn() -> Self {
        let binary = weft::embedded::find_binary()
            .expect("nats-server (run scripts/install-nats-server.sh)");
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_list = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let node = ClusterNode {
                name: format!("n{}", i + 1),
                port: free_port(),
                monitor: free_port(),
                dir: tempfile::tempdir().expect("temp dir"),
                child: None,
            };
            let child = Command::new(&binary)
                .args(["-js", "-a", "127.0.0.1", "-p", &node.port.to_string()])
                .args(["-m", &node.monitor.to_string(), "-n", &node.name])
                .args(["--cluster_name", "weft-test"])
                .args(["--cluster", &format!("nats://127.0.0.1:{route}")])
                .args(["--routes", &route_list, "-sd"])
                .arg(node.dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server starts");
            nodes.push(ClusterNode {
                child: Some(child),
                ..node
            });
        }
        NatsCluster { nodes }
    }

    /// Whether every node answers its JetStream health check within `timeout`; false at
    /// once when a node has exited.
    fn ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let exited = self.nodes.iter_mut().any(|n| {
                n.child
                    .as_mut()
                    .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
            });
            if exited {
                return false;
            }
            let healthy = self.nodes.iter().all(|n| {
                let url = format!("http://127.0.0.1:{}/healthz", n.monitor);
                reqwest::blocking_get(&url).is_ok_and(|s| s == 200)
            });
            if healthy {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Every node's client URL, comma-separated, as `NATS_URL` takes them.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `kill -9` of the node named `name`.
    pub fn kill(&mut self, name: &str) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.name == name) {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        for name in names {
            self.kill(&name);
        }
    }
}

pub fn weft_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weft"))
}

pub struct Weft {
    pub port: u16,
    pub log: PathBuf,
    child: Option<Child>,
    _log_dir: tempfile::TempDir,
}

impl Weft {
    /// Starts `weft serve` with `env` and waits until `/health` answers 200.
    pub fn start(env: &[(&str, String)]) -> Self {
        let port = free_port();
        let log_dir = tempfile::tempdir().expect("temp dir");
        let log = log_dir.path().join("weft.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(weft_binary());
        command
            .arg("serve")
            .env_remove("NATS_URL")
            .env_remove("API_TOKENS")
            .env("API_HOST", "127.0.0.1")
            .env("API_PORT", port.to_string())
            .env("LOG_LEVEL", "info")
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("weft starts");
        let mut weft = Weft {
            port,
            log,
            child: Some(child),
            _log_dir: log_dir,
        };
        weft.wait_healthy(Duration::from_secs(30));
        weft
    }

    pub fn wait_healthy(&mut self, timeout: Duration) {
        let url = self.url("/health");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "weft exited ({status}) before it was healthy:\n{}",
                        self.log_text()
                    );
                }
            }
            if let Ok(r) = reqwest::blocking_get(&url) {
                if r == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("weft not healthy within {timeout:?}:\n{}", self.log_text());
    }

    /// Status of `/health` (0 when it does not answer).
    pub fn health_status(&self) -> u16 {
        reqwest::blocking_get(&self.url("/health")).unwrap_or(0)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and the exit status once it has stopped.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("weft is running");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("weft did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Weft {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Minimal blocking HTTP for health polling, so the harness needs no runtime.
mod reqwest {
    pub fn blocking_get(url: &str) -> std::io::Result<u16> {
        use std::io::{Read, Write};
        let rest = url.trim_start_matches("http://");
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut stream = std::net::TcpStream::connect(host)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
        write!(
            stream,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    }
}

pub fn client() -> ::reqwest::Client {
    weft::mechanism::install_crypto_provider();
    ::reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// `/metrics` as Prometheus scrapes it.
pub async fn metrics_text(weft: &Weft) -> String {
    client()
        .get(weft.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// Sends a request and returns the status and JSON body (Null when there is none). Every
/// answer of every test passes here, so here it is checked for secrets: a token secret,
/// an NKey seed, a private key or a password the tests use appear only where the API
/// answers a secret it just made (`secret` of a created token, `seed` of issued
/// credentials), never anywhere else.
pub async fn call(request: ::reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_no_secret(&body, &text);
    (status, body)
}

/// Secrets the suite's scenarios use, and the shapes of those Weft makes.
pub fn assert_no_secret(body: &Value, text: &str) {
    let mut shown = body.clone();
    if let Some(object) = shown.as_object_mut() {
        object.remove("secret");
        object.remove("seed");
    }
    let rest = if body.is_null() {
        text.to_string()
    } else {
        shown.to_string()
    };
    // Every place a shape could start, not just the first.
    let shaped = |prefix: &str, len: usize, ok: fn(char) -> bool| {
        rest.match_indices(prefix).any(|(at, _)| {
            let tail: Vec<char> = rest[at + prefix.len()..].chars().take(len).collect();
            tail.len() == len && tail.into_iter().all(ok)
        })
    };
    let token = shaped("weft_", 64, |c| c.is_ascii_hexdigit());
    let seed = shaped("SU", 56, |c| {
        c.is_ascii_uppercase() || ('2'..='7').contains(&c)
    });
    for (what, found) in [
        ("a token secret", token),
        ("an NKey seed", seed),
        ("a private key", rest.contains("PRIVATE KEY-----")),
        (
            "a webhook secret of the tests",
            rest.contains("s3cret") || rest.contains("hook-token"),
        ),
    ] {
        assert!(!found, "an API answer shows {what}: {rest}");
    }
}

pub fn local_target(name: &str) -> Value {
    serde_json::json!({
        "name": name,
        "agentType": "claude-code",
        "capabilities": ["rust"],
        "mechanism": "local",
        "config": {"mechanism": "local", "command": "weft agent"}
    })
}

/// The Python of the test tools' venv (tests/python/requirements.txt), which
/// `scripts/test.sh` installs and names in `WEFT_TEST_PYTHON`.
pub fn test_python() -> PathBuf {
    if let Some(python) = std::env::var_os("WEFT_TEST_PYTHON") {
        return python.into();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-test-tools.sh");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/install-test-tools.sh runs");
    assert!(
        out.status.success(),
        "the Python test tools could not be installed: run scripts/install-test-tools.sh"
    );
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    PathBuf::from(last)
}

/// Runs one of `tests/python/*.py` with the test tools' Python; its output and whether it
/// succeeded.
pub fn run_python(script: &str, args: &[&str]) -> (bool, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let out = Command::new(test_python())
        .arg(&path)
        .args(args)
        .output()
        .expect("python runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                found.push(pid);
            }
        }
    }
    found
}

/// Settings that make liveness and retries fast enough for tests.
pub fn fast_env(nats: &NatsServer) -> Vec<(&'static str, String)> {
    vec![
        ("NATS_URL", nats.url()),
        ("WEFT_HEARTBEAT_INTERVAL_MS", "300".into()),
        ("WEFT_AGENT_TIMEOUT_MS", "2000".into()),
        ("WEFT_RETRY_BACKOFF_MS", "100".into()),
        ("WEFT_ACCEPT_TIMEOUT_MS", "5000".into()),
    ]
}

/// A real `weft agent` process.
pub struct AgentProcess {
    pub id: String,
    pub log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl AgentProcess {
    /// `args`: (type, capabilities, boundaries, max concurrent, command).
    pub fn start(
        nats: &NatsServer,
        agent_type: &str,
        capabilities: &str,
        boundaries: &str,
        max: u32,
        command: &str,
    ) -> Self {
        Self::start_with(
            nats,
            agent_type,
            capabilities,
            boundaries,
            max,
            command,
            &[],
        )
    }

    /// Like `start`, with extra environment variables.
    pub fn start_with(
        nats: &NatsServer,
        agent_type: &str,
        capabilities: &str,
        boundaries: &str,
        max: u32,
        command: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let url = nats.url();
        let mut all = vec![("NATS_URL", url.as_str())];
        all.extend_from_slice(env);
        Self::start_on(agent_type, capabilities, boundaries, max, command, &all)
    }

    /// An agent joining at the `NATS_URL` given in `env` (a cluster's list, say).
    pub fn start_on(
        agent_type: &str,
        capabilities: &str,
        boundaries: &str,
        max: u32,
        command: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let id = uuid::Uuid::new_v4().to_string();
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("agent.log");
        let file = std::fs::File::create(&log).expect("log");
        let child = Command::new(weft_binary())
            .arg("agent")
            .env("WEFT_AGENT_ID", &id)
            .env("AGENT_TYPE", agent_type)
            .env("AGENT_CAPABILITIES", capabilities)
            .env("AGENT_BOUNDARIES", boundaries)
            .env("AGENT_MAX_CONCURRENT_TASKS", max.to_string())
            .env("AGENT_COMMAND", command)
            .env("LOG_LEVEL", "info")
            .envs(env.iter().copied())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("weft agent starts");
        AgentProcess {
            id,
            log,
            child: Some(child),
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not exit within {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `GET path` until `done` holds for its JSON, or panics after `timeout`.
pub async fn poll_until(
    weft: &Weft,
    path: &str,
    timeout: Duration,
    mut done: impl FnMut(&Value) -> bool,
) -> Value {
    let http = client();
    let deadline = Instant::now() + timeout;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let (status, body) = call(http.get(weft.url(path))).await;
        if status == 200 && done(&body) {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "timed out after {timeout:?} polling {path}; last answer: {last}\nweft log:\n{}",
        weft.log_text()
    );
}

/// Every event of the log, oldest first.
pub async fn all_events(weft: &Weft) -> Vec<Value> {
    let http = client();
    let mut after = 0;
    let mut events = Vec::new();
    for _ in 0..1000 {
        let (status, page) =
            call(http.get(weft.url(&format!("/api/events?after={after}&limit=1000")))).await;
        assert_eq!(status, 200, "{page}");
        events.extend(page["events"].as_array().cloned().unwrap_or_default());
        after = page["nextAfter"].as_u64().unwrap_or(after);
        if page["hasMore"] != true {
            break;
        }
    }
    events
}

/// The events of one type, in log order.
pub fn of_type<'a>(events: &'a [Value], event_type: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == event_type).collect()
}

pub fn submit_body(description: &str, capability: &str, boundary: &str, priority: u8) -> Value {
    serde_json::json!({
        "description": description,
        "capability": capability,
        "boundary": boundary,
        "priority": priority,
    })
}

/// A request a stand-in server received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: std::collections::HashMap<String, String>,
    pub body: String,
}

/// An HTTP server on 127.0.0.1 standing in for GitHub, a webhook receiver or the
/// Kubernetes API: it records every request and answers `respond(request)` = (status, JSON).
pub fn stand_in(
    respond: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Seen>>>) {
    let seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>> = Default::default();
    let port = free_port();
    let (recorded, respond) = (seen.clone(), std::sync::Arc::new(respond));
    let app = poem::endpoint::make(move |mut req: poem::Request| {
        let (recorded, respond) = (recorded.clone(), respond.clone());
        async move {
            let request = Seen {
                method: req.method().to_string(),
                path: req.uri().path().to_string(),
                headers: req
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_string(),
                            v.to_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect(),
                body: req.take_body().into_string().await.unwrap_or_default(),
            };
            let (code, body) = respond(&request);
            recorded.lock().expect("lock").push(request);
            poem::Response::builder()
                .status(poem::http::StatusCode::from_u16(code).expect("status"))
                .content_type("application/json")
                .body(body)
        }
    });
    tokio::spawn(
        poem::Server::new(poem::listener::TcpListener::bind(format!(
            "127.0.0.1:{port}"
        )))
        .run(app),
    );
    wait_until("the stand-in server", Duration::from_secs(5), || {
        listening(port)
    });
    (format!("http://127.0.0.1:{port}"), seen)
}

/// One SSE connection, parsed as events arrive.
pub struct SseStream {
    response: ::reqwest::Response,
    buffer: String,
}

impl SseStream {
    /// Opens `path` (with its query) as an event stream; it must answer 200 with one.
    pub async fn open(weft: &Weft, path: &str, last_event_id: Option<&str>) -> SseStream {
        let mut request = client().get(weft.url(path));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("stream");
        assert_eq!(response.status(), 200);
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        SseStream {
            response,
            buffer: String::new(),
        }
    }

    /// The next event's id and data (keep-alive comments are skipped).
    pub async fn next(&mut self) -> (u64, Value) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(&format!("{name}:")))
                        .map(|v| v.trim().to_string())
                };
                if let (Some(id), Some(data)) = (field("id"), field("data")) {
                    let data = serde_json::from_str(&data).expect("json data");
                    return (id.parse().expect("numeric id"), data);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("an event within 10 s")
                .expect("bytes")
                .expect("the stream goes on");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// Submits an item (`rust`, `personal`, priority 5) and answers its id.
pub async fn submit(weft: &Weft, description: &str) -> String {
    let body = submit_body(description, "rust", "personal", 5);
    let (status, item) = call(client().post(weft.url("/api/work")).json(&body)).await;
    assert_eq!(status, 201, "{item}");
    item["id"].as_str().expect("id").to_string()
}

/// A registration of a `claude-code` agent with one capability and one boundary, one task
/// at a time.
pub fn registration(
    agent_id: &str,
    capability: &str,
    boundary: &str,
) -> weft::protocol::RegisterRequest {
    weft::protocol::RegisterRequest {
        agent_id: agent_id.into(),
        agent_type: "claude-code".into(),
        capabilities: vec![capability.into()],
        boundaries: vec![boundary.into()],
        max_concurrent_tasks: 1,
        idle_timeout_ms: None,
        hostname: None,
        handle: None,
        spin_up_id: None,
        target_id: None,
    }
}

/// Registers an agent over the agent protocol, as an agent would; panics if Weft refuses.
pub async fn register(
    nats: &async_nats::Client,
    project: &str,
    request: &weft::protocol::RegisterRequest,
) {
    let reply: weft::protocol::Reply<Value> = weft::protocol::call(
        nats,
        project,
        weft::protocol::REGISTER,
        &request.agent_id,
        request,
        Duration::from_secs(10),
    )
    .await
    .expect("registered");
    assert!(reply.ok, "{:?}", reply.error);
}
