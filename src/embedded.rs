//! The embedded default: without `NATS_URL`, Weft runs its own nats-server with JetStream
//! on a loopback port, with its data under `WEFT_DATA_DIR`, restarts it if it dies and
//! stops it on exit. If Weft itself is killed, the kernel sends the server SIGTERM
//! (`PR_SET_PDEATHSIG`), so no orphan keeps the port or the data directory.

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Finds a nats-server new enough for Weft: `WEFT_NATS_SERVER`, then `PATH`, then where
/// `scripts/install-nats-server.sh` puts one.
pub fn find_binary() -> Result<PathBuf, String> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(explicit) = std::env::var_os("WEFT_NATS_SERVER") {
        candidates.push(explicit.into());
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join("nats-server")));
    }
    let tools = std::env::var_os("WEFT_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/weft/tools")));
    if let Some(tools) = tools {
        if let Ok(entries) = fs::read_dir(&tools) {
            let mut installed: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path().join("bin/nats-server"))
                .collect();
            installed.sort();
            candidates.extend(installed.into_iter().rev());
        }
    }
    let mut seen_old = Vec::new();
    for candidate in candidates.into_iter().filter(|c| c.is_file()) {
        match binary_version(&candidate) {
            Some(v) if migrations::check_server_version(&v).is_ok() => return Ok(candidate),
            Some(v) => seen_old.push(format!("{} ({v})", candidate.display())),
            None => {}
        }
    }
    let mut message = String::from(
        "no nats-server 2.12 or newer found: run scripts/install-nats-server.sh, set WEFT_NATS_SERVER to one, or point NATS_URL at a running server",
    );
    if !seen_old.is_empty() {
        message.push_str(&format!("; too old: {}", seen_old.join(", ")));
    }
    Err(message)
}

fn binary_version(path: &Path) -> Option<String> {
    let out = Command::new(path).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()))
        .map(|w| w.trim_start_matches('v').to_string())
}

pub struct EmbeddedNats {
    url: String,
    /// Weft's own NKey seed for this run: only in memory, its public key in the config.
    seed: String,
    gate: Gate,
    pid: Arc<AtomicU32>,
    stopping: Arc<AtomicBool>,
    supervisor: Option<JoinHandle<()>>,
}

fn free_port() -> std::io::Result<u16> {
    Ok(
        TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port(),
    )
}

/// The file nats-server includes for its users: rewritten (then reloaded) whenever the
/// credentials Weft issued change.
const AUTHORIZATION_FILE: &str = "authorization.conf";

/// An agent nats-server lets in: its issued public key, confined to its own subjects.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AgentUser {
    pub project: String,
    pub agent_id: String,
    pub public_key: String,
}

/// The users block: Weft with every permission, each agent with its own subjects only
/// (its requests, its pushes, its own reply inbox), so none can publish to `weft.ev.>`,
/// read another agent's or project's subjects, or speak for another agent.
fn authorization(weft_key: &str, agents: &[AgentUser]) -> String {
    let mut out = String::from(
        "# Written by weft from the credentials it issued; edits are lost.\nauthorization {\n  users = [\n",
    );
    out.push_str(&format!("    {{nkey: {weft_key}}}\n"));
    for a in agents {
        out.push_str(&format!(
            "    {{nkey: {key}, permissions: {{publish: {{allow: [{rpc:?}]}}, subscribe: {{allow: [{pushes:?}, {inbox:?}]}}}}}}\n",
            key = a.public_key,
            rpc = crate::protocol::rpc_subjects_of(&a.project, &a.agent_id),
            pushes = crate::protocol::agent_subjects_of(&a.project, &a.agent_id),
            inbox = format!("{}.>", crate::protocol::inbox_prefix(&a.agent_id)),
        ));
    }
    out.push_str("  ]\n}\n");
    out
}

/// Lets Weft's own key and `agents` in, and no one else; a running server rereads it at
/// once (SIGHUP), disconnecting whoever is no longer allowed.
#[derive(Clone)]
pub struct Gate {
    path: PathBuf,
    weft_key: String,
    pid: Arc<AtomicU32>,
}

impl Gate {
    pub fn allow(&self, agents: &[AgentUser]) -> Result<(), String> {
        let text = authorization(&self.weft_key, agents);
        if fs::read_to_string(&self.path).ok().as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        let staged = self.path.with_extension("new");
        fs::write(&staged, &text)
            .and_then(|_| fs::rename(&staged, &self.path))
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        let pid = self.pid.load(Ordering::SeqCst);
        if pid != 0 {
            // SAFETY: signalling our own child's pid; SIGHUP makes nats-server reload.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
        }
        tracing::info!(agents = agents.len(), "NATS users reloaded");
        Ok(())
    }
}

/// Keeps the gate at the credentials the log holds: at start, then at every issue or
/// revocation (and after a lag, in case one was missed), until `shutdown`.
pub async fn keep_gate(
    gate: Gate,
    projection: Arc<crate::projector::Projection>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let users = || {
        projection.read(|s| {
            s.projects
                .iter()
                .flat_map(|(project, p)| {
                    p.credentials.valid().map(move |c| AgentUser {
                        project: project.clone(),
                        agent_id: c.agent_id.clone(),
                        public_key: c.public_key.clone(),
                    })
                })
                .collect::<Vec<_>>()
        })
    };
    let mut live = projection.live();
    let allow = |agents: Vec<AgentUser>| {
        if let Err(e) = gate.allow(&agents) {
            tracing::error!("{e}");
        }
    };
    allow(users());
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = live.recv() => next,
        };
        match next {
            Ok(applied) if applied.1.aggregate == events::AggregateKind::Credential => {
                allow(users())
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => allow(users()),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn write_config(dir: &Path, port: u16, sync: &str) -> std::io::Result<PathBuf> {
    let store = dir.join("jetstream");
    fs::create_dir_all(&store)?;
    let sync_line = if sync == "default" {
        String::new()
    } else {
        format!("  sync_interval: {sync}\n")
    };
    let config = format!(
        "# Written by weft at every start; edits are lost.\nlisten: 127.0.0.1:{port}\nserver_name: weft-embedded\njetstream {{\n  store_dir: {store:?}\n{sync_line}}}\ninclude {AUTHORIZATION_FILE:?}\n"
    );
    let path = dir.join("nats-server.conf");
    fs::write(&path, config)?;
    Ok(path)
}

fn spawn(binary: &Path, config: &Path, log: &Path) -> std::io::Result<std::process::Child> {
    let log_out = fs::OpenOptions::new().create(true).append(true).open(log)?;
    let log_err = log_out.try_clone()?;
    let mut command = Command::new(binary);
    command
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log_out)
        .stderr(log_err);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

fn wait_until_listening(
    port: u16,
    child: &mut std::process::Child,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into();
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("nats-server exited at start ({status})"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "nats-server did not listen on 127.0.0.1:{port} within {timeout:?}"
    ))
}

impl EmbeddedNats {
    pub fn start(data_dir: &Path, port: u16, sync: &str) -> Result<Self, String> {
        let binary = find_binary()?;
        let dir = data_dir.join("nats");
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let port = if port == 0 {
            free_port().map_err(|e| format!("no free loopback port: {e}"))?
        } else {
            port
        };
        let config = write_config(&dir, port, sync)
            .map_err(|e| format!("cannot write nats-server config: {e}"))?;
        let weft = nkeys::KeyPair::new_user();
        let seed = weft
            .seed()
            .map_err(|e| format!("cannot make Weft's NATS key: {e}"))?;
        let pid = Arc::new(AtomicU32::new(0));
        let gate = Gate {
            path: dir.join(AUTHORIZATION_FILE),
            weft_key: weft.public_key(),
            pid: pid.clone(),
        };
        // Until the log is read, only Weft itself.
        gate.allow(&[])?;
        let log = dir.join("nats-server.log");
        let url = format!("nats://127.0.0.1:{port}");

        let stopping = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let supervisor = {
            let (pid, stopping) = (pid.clone(), stopping.clone());
            // Every spawn happens on this thread, which lives until stop: PDEATHSIG fires
            // when the spawning *thread* exits, not the process.
            std::thread::Builder::new()
                .name("nats-supervisor".into())
                .spawn(move || {
                    let child = match first_start(&binary, &config, &log, port) {
                        Ok(child) => {
                            pid.store(child.id(), Ordering::SeqCst);
                            let _ = ready_tx.send(Ok(binary.clone()));
                            child
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    supervise(child, &binary, &config, &log, port, &pid, &stopping)
                })
                .map_err(|e| format!("cannot start the supervisor thread: {e}"))?
        };
        let binary = ready_rx
            .recv()
            .map_err(|_| "the nats-server supervisor stopped unexpectedly".to_string())??;
        tracing::info!(url, binary = %binary.display(), data = %dir.display(), "embedded nats-server started; agents can join at this URL with credentials from POST /api/credentials");
        Ok(Self {
            url,
            seed,
            gate,
            pid,
            stopping,
            supervisor: Some(supervisor),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// How Weft itself logs in.
    pub fn login(&self) -> crate::nats::Login {
        crate::nats::Login {
            nkey_seed: Some(self.seed.clone()),
            ..Default::default()
        }
    }

    /// Who else may log in.
    pub fn gate(&self) -> Gate {
        self.gate.clone()
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s) and waits for it to exit.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let Some(supervisor) = self.supervisor.take() else {
            return;
        };
        let signal = |sig| {
            let pid = self.pid.load(Ordering::SeqCst);
            if pid != 0 {
                // SAFETY: sending a signal to our own child's pid.
                unsafe { libc::kill(pid as libc::pid_t, sig) };
            }
        };
        signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !supervisor.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !supervisor.is_finished() {
            tracing::warn!("nats-server did not stop within 10 s; killing it");
            signal(libc::SIGKILL);
        }
        let _ = supervisor.join();
        tracing::info!("embedded nats-server stopped");
    }
}

impl Drop for EmbeddedNats {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the server, retrying for a while: one we left behind a moment ago (weft was
/// killed) may still be shutting down and holding the port.
fn first_start(
    binary: &Path,
    config: &Path,
    log: &Path,
    port: u16,
) -> Result<std::process::Child, String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last_error = String::new();
    while Instant::now() < deadline {
        let mut child = spawn(binary, config, log)
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        match wait_until_listening(port, &mut child, Duration::from_secs(10)) {
            Ok(()) => return Ok(child),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                last_error = e;
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }
    Err(format!("{last_error}; see {}", log.display()))
}

fn supervise(
    mut child: std::process::Child,
    binary: &Path,
    config: &Path,
    log: &Path,
    port: u16,
    pid: &AtomicU32,
    stopping: &AtomicBool,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let status = child.wait();
        pid.store(0, Ordering::SeqCst);
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        tracing::error!(?status, "embedded nats-server exited; restarting it");
        loop {
            std::thread::sleep(backoff);
            if stopping.load(Ordering::SeqCst) {
                return;
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            match spawn(binary, config, log) {
                Ok(mut c) => match wait_until_listening(port, &mut c, Duration::from_secs(10)) {
                    Ok(()) => {
                        pid.store(c.id(), Ordering::SeqCst);
                        tracing::info!(port, "embedded nats-server restarted");
                        backoff = Duration::from_millis(200);
                        child = c;
                        break;
                    }
                    Err(e) => {
                        let _ = c.kill();
                        let _ = c.wait();
                        tracing::error!("restarting nats-server failed: {e}");
                    }
                },
                Err(e) => tracing::error!("restarting nats-server failed: {e}"),
            }
        }
    }
}
