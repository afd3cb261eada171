//! `weft agent`: how a machine joins the fleet. It registers, heartbeats, runs a command
//! for each work item it is given, streams the command's output as progress, reports the
//! result, stops the command on cancel, and drains then exits on shutdown. Reports are
//! retried until Weft answers, so an outage of NATS or Weft delays them but loses nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{oneshot, Notify};

use crate::protocol::{self, codes, Assignment, Reply};

mod command;
pub mod output;
pub mod workspace;
pub use command::render_command;

/// Who an agent is in the fleet: what `weft agent` and `weft mcp` register as.
#[derive(clap::Args, Clone, Debug)]
pub struct Membership {
    /// Weft's NATS (the URL `weft serve` logs at start).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    #[arg(long, env = "NATS_USER")]
    pub nats_user: Option<String>,
    #[arg(long, env = "NATS_PASS", hide_env_values = true)]
    pub nats_pass: Option<String>,
    /// The NATS credentials Weft issued to this agent (`POST /api/credentials`; spun-up
    /// agents are given theirs): the NKey seed, or a file holding it. They are valid for
    /// the one agent id they were issued for: give it as `--agent-id`.
    #[arg(long, env = "WEFT_AGENT_CREDENTIALS", hide_env_values = true)]
    pub credentials: Option<String>,
    /// The project to work for.
    #[arg(
        long,
        short = 'p',
        env = "LOOMINAL_PROJECT_ID",
        default_value = "default"
    )]
    pub project: String,
    /// A stable id for this agent (default: a new UUID at every start).
    #[arg(long, env = "WEFT_AGENT_ID")]
    pub agent_id: Option<String>,
    /// claude-code, copilot-cli, or another agent type.
    #[arg(long = "type", env = "AGENT_TYPE", default_value = "claude-code")]
    pub agent_type: String,
    /// What it can do (comma-separated).
    #[arg(
        long,
        env = "AGENT_CAPABILITIES",
        value_delimiter = ',',
        default_value = "general"
    )]
    pub capabilities: Vec<String>,
    /// Which data it may see (comma-separated).
    #[arg(
        long,
        env = "AGENT_BOUNDARIES",
        value_delimiter = ',',
        default_value = "personal,open-source"
    )]
    pub boundaries: Vec<String>,
    /// Work items it runs at once.
    #[arg(long, env = "AGENT_MAX_CONCURRENT_TASKS", default_value_t = 1)]
    pub max_concurrent_tasks: u32,
    /// Idle time after which Weft may shut it down (default: Weft's IDLE_TIMEOUT_MS).
    #[arg(long, env = "AGENT_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    #[arg(long, env = "AGENT_HANDLE")]
    pub handle: Option<String>,
}

impl Membership {
    /// Connects to Weft's NATS as agent `id`: with its issued credentials when it has any.
    pub async fn connect(&self, id: &str) -> Result<async_nats::Client, String> {
        let mut login =
            crate::nats::Login::password(self.nats_user.as_deref(), self.nats_pass.as_deref());
        // Replies come to an inbox of its own, which a server can keep other agents from.
        login.inbox_prefix = Some(protocol::inbox_prefix(id));
        if let Some(given) = &self.credentials {
            let seed = if given.trim_start().starts_with("SU") {
                given.trim().to_string()
            } else {
                std::fs::read_to_string(given)
                    .map_err(|e| format!("cannot read the credentials file {given}: {e}"))?
                    .trim()
                    .to_string()
            };
            nkeys::KeyPair::from_seed(&seed)
                .map_err(|e| format!("the credentials are not an NKey user seed: {e}"))?;
            login.nkey_seed = Some(seed);
        }
        Ok(crate::nats::connect(&self.nats_url, &login, crate::nats::connections()).await)
    }

    /// The agent's id (`--agent-id`, else a new UUID), once checked with the project.
    pub fn checked_id(&self) -> Result<String, String> {
        if !events::subject::is_valid_token(&self.project) {
            return Err(format!(
                "project '{}' is not a valid project id",
                self.project
            ));
        }
        let id = self
            .agent_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if !events::subject::is_valid_token(&id) {
            return Err(format!(
                "agent id '{id}' must be letters, digits, '-' or '_'"
            ));
        }
        Ok(id)
    }

    pub fn registration(
        &self,
        id: &str,
        spin_up_id: Option<String>,
        target_id: Option<String>,
    ) -> protocol::RegisterRequest {
        protocol::RegisterRequest {
            agent_id: id.to_string(),
            agent_type: self.agent_type.clone(),
            capabilities: self.capabilities.clone(),
            boundaries: self.boundaries.clone(),
            max_concurrent_tasks: self.max_concurrent_tasks,
            idle_timeout_ms: self.idle_timeout_ms,
            hostname: std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string()),
            handle: self.handle.clone(),
            spin_up_id,
            target_id,
        }
    }
}

/// `weft agent`'s settings.
#[derive(clap::Args, Clone, Debug)]
pub struct AgentConfig {
    #[command(flatten)]
    pub member: Membership,
    /// Set by Weft when it started this agent.
    #[arg(long, env = "WEFT_SPINUP_ID")]
    pub spin_up_id: Option<String>,
    /// Set by Weft when it started this agent.
    #[arg(long, env = "WEFT_TARGET_ID")]
    pub target_id: Option<String>,
    /// Exit after Weft has not answered for this long (0: never). Default: 10 minutes for
    /// an agent Weft started (a spin-up), never for one started by hand; an agent Weft
    /// started must not outlive a Weft that is gone for good.
    #[arg(long, env = "WEFT_AGENT_ORPHAN_TIMEOUT_MS")]
    pub orphan_timeout_ms: Option<u64>,
    /// Set by Weft for an agent tied to its life (a `local` target, not detached): the
    /// agent leaves as soon as that process is gone. The kernel's signal at Weft's death
    /// reaches only Weft's direct child, which is a shell when the target's command needs one.
    #[arg(long, env = "WEFT_OWNER_PID", hide = true)]
    pub owner_pid: Option<u32>,
    /// The command run for each work item, through `sh -c`, e.g. `claude -p {description}`.
    /// `{description}`, `{taskId}`, `{workId}`, `{capability}`, `{boundary}` are replaced by
    /// shell-quoted values; the item also arrives in WEFT_* variables and on stdin.
    #[arg(long, env = "AGENT_COMMAND")]
    pub command: String,
    /// Where items with a `workspace` get their git mirror and worktree (default:
    /// `~/.local/share/weft/workspaces`). Agents may share it.
    #[arg(long, env = "WEFT_WORKSPACES")]
    pub workspaces: Option<std::path::PathBuf>,
    /// How to read the command's output: `text`, or the structured output of Claude Code
    /// (`claude-stream-json`: run it with `--output-format stream-json --verbose`), Copilot
    /// CLI (`copilot-json`) or Codex (`codex-json`, from `codex exec --json`).
    #[arg(long, env = "AGENT_OUTPUT_FORMAT", value_enum, default_value = "text")]
    pub output_format: output::OutputFormat,
    /// Most worktrees this agent holds at once.
    #[arg(long, env = "WEFT_MAX_WORKTREES", default_value_t = 8)]
    pub max_worktrees: usize,
    /// Run in each new worktree before the command (e.g. `npm ci`); its failure fails the
    /// attempt (it is retried).
    #[arg(long, env = "WEFT_SETUP_COMMAND")]
    pub setup_command: Option<String>,
}

impl AgentConfig {
    fn workspaces(&self) -> workspace::Workspaces {
        let root = self.workspaces.clone().unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
            std::path::Path::new(&home).join(".local/share/weft/workspaces")
        });
        workspace::Workspaces::new(root, self.max_worktrees, self.setup_command.clone())
    }
}

struct Running {
    lease_id: String,
    cancel: Option<oneshot::Sender<()>>,
}

struct Runtime {
    client: async_nats::Client,
    config: AgentConfig,
    workspaces: workspace::Workspaces,
    id: String,
    running: Mutex<HashMap<String, Running>>,
    draining: AtomicBool,
    heartbeat_ms: AtomicU64,
    /// A registration is under way (heartbeats that learn they must register again do not
    /// start a second one).
    registering: AtomicBool,
    /// When Weft last answered anything (milliseconds since the epoch).
    last_answer_ms: AtomicU64,
    changed: Notify,
}

/// Why a call to Weft did not go through.
enum CallFailure {
    /// Weft refused for good: do not send it again.
    Refused(String),
    /// Not answered, or Weft could not record it yet: send it again.
    Retry(String),
}

enum Outcome {
    Done,
    /// Weft refused for good (lease gone, invalid): stop trying.
    Refused(String),
}

impl Runtime {
    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        operation: &str,
        body: &B,
    ) -> Result<Reply<R>, String> {
        self.call_within(operation, body, Duration::from_secs(5))
            .await
    }

    async fn call_within<B: Serialize, R: DeserializeOwned>(
        &self,
        operation: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<Reply<R>, String> {
        let reply = protocol::call(
            &self.client,
            &self.config.member.project,
            operation,
            &self.id,
            body,
            timeout,
        )
        .await?;
        self.last_answer_ms
            .store(crate::time::now_ms(), Ordering::SeqCst);
        Ok(reply)
    }

    /// Sends until Weft answers, backing off; gives up only when Weft refuses.
    async fn call_until_answered<B: Serialize, R: DeserializeOwned>(
        &self,
        operation: &str,
        body: &B,
    ) -> Result<Option<R>, String> {
        use backon::Retryable;
        let attempt = || async {
            match self.call::<B, R>(operation, body).await {
                Ok(reply) if reply.ok => Ok(reply.data),
                Ok(reply) if reply.code.as_deref() != Some(codes::UNAVAILABLE) => {
                    Err(CallFailure::Refused(format!(
                        "{}: {}",
                        reply.code.unwrap_or_default(),
                        reply.error.unwrap_or_default()
                    )))
                }
                Ok(reply) => Err(CallFailure::Retry(format!(
                    "Weft cannot record it yet: {}",
                    reply.error.unwrap_or_default()
                ))),
                Err(e) => Err(CallFailure::Retry(e)),
            }
        };
        let forever = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times();
        attempt
            .retry(forever)
            .when(|f| matches!(f, CallFailure::Retry(_)))
            .notify(|f, wait| {
                if let CallFailure::Retry(why) = f {
                    tracing::warn!(operation, retry_in_ms = wait.as_millis() as u64, "{why}");
                }
            })
            .await
            .map_err(|f| match f {
                CallFailure::Refused(why) | CallFailure::Retry(why) => why,
            })
    }

    async fn register(&self) -> Result<(), String> {
        let request = self.config.member.registration(
            &self.id,
            self.config.spin_up_id.clone(),
            self.config.target_id.clone(),
        );
        let reply: protocol::RegisterReply = self
            .call_until_answered(protocol::REGISTER, &request)
            .await?
            .ok_or("Weft answered the registration without settings")?;
        self.heartbeat_ms
            .store(reply.heartbeat_interval_ms.max(100), Ordering::SeqCst);
        tracing::info!(
            agent = self.id,
            project = self.config.member.project,
            "registered"
        );
        Ok(())
    }

    fn running_ids(&self) -> Vec<String> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    fn cancel(&self, work_id: &str) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cancel) = running.get_mut(work_id).and_then(|r| r.cancel.take()) {
            tracing::info!(work = work_id, "stopping: the work is no longer ours");
            let _ = cancel.send(());
        }
    }

    fn cancel_all(&self) {
        for id in self.running_ids() {
            self.cancel(&id);
        }
    }

    fn start(self: &Arc<Self>, assignment: Assignment) {
        if self.draining.load(Ordering::SeqCst) {
            return;
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if running.contains_key(&assignment.work_id)
                || running.len() >= self.config.member.max_concurrent_tasks as usize
            {
                return;
            }
            running.insert(
                assignment.work_id.clone(),
                Running {
                    lease_id: assignment.lease_id.clone(),
                    cancel: Some(tx),
                },
            );
        }
        let this = self.clone();
        tokio::spawn(async move {
            let id = assignment.work_id.clone();
            match this.execute(&assignment, rx).await {
                Outcome::Done => {}
                Outcome::Refused(why) => {
                    tracing::warn!(work = id, "Weft refused the report: {why}")
                }
            }
            this.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            this.changed.notify_one();
        });
    }

    fn report(&self, a: &Assignment) -> protocol::WorkReport {
        protocol::WorkReport::on(&self.id, &a.work_id, &a.lease_id)
    }

    /// One heartbeat, answered within `within` (the interval: the next one is on its way).
    async fn heartbeat(self: &Arc<Self>, within: Duration) {
        let request = protocol::HeartbeatRequest {
            agent_id: self.id.clone(),
            running: self.running_ids(),
        };
        let reply: protocol::HeartbeatReply = match self
            .call_within(protocol::HEARTBEAT, &request, within)
            .await
        {
            Ok(Reply {
                ok: true,
                data: Some(d),
                ..
            }) => d,
            Ok(r) => return tracing::warn!("heartbeat refused: {}", r.error.unwrap_or_default()),
            Err(e) => return tracing::warn!("heartbeat not answered: {e}"),
        };
        for id in &reply.cancel {
            self.cancel(id);
        }
        if !reply.registered {
            if !self.registering.swap(true, Ordering::SeqCst) {
                tracing::warn!("Weft no longer knows this agent as online; registering again");
                if let Err(e) = self.register().await {
                    tracing::error!("registration refused: {e}");
                }
                self.registering.store(false, Ordering::SeqCst);
            }
            return;
        }
        // Leases we run under an old lease id are not ours any more.
        let current: HashMap<&str, &str> = reply
            .assignments
            .iter()
            .map(|a| (a.work_id.as_str(), a.lease_id.as_str()))
            .collect();
        let stale: Vec<String> = {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            running
                .iter()
                .filter(|(id, r)| {
                    current
                        .get(id.as_str())
                        .is_some_and(|lease| *lease != r.lease_id)
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in stale {
            self.cancel(&id);
        }
        for a in reply.assignments {
            self.start(a);
        }
        if let Some(shutdown) = reply.shutdown {
            self.shut_down(shutdown);
        }
    }

    fn shut_down(&self, request: protocol::ShutdownRequest) {
        if !self.draining.swap(true, Ordering::SeqCst) {
            tracing::info!(
                reason = request.reason,
                graceful = request.graceful,
                "shutting down"
            );
        }
        if !request.graceful {
            self.cancel_all();
        }
        self.changed.notify_one();
    }
}

pub async fn run(config: AgentConfig) -> Result<(), String> {
    if config.command.trim().is_empty() {
        return Err("the command to run (--command / AGENT_COMMAND) is empty".into());
    }
    let id = config.member.checked_id()?;
    let client = config.member.connect(&id).await?;
    let mut pushes = client
        .subscribe(protocol::agent_subject(&config.member.project, &id, ">"))
        .await
        .map_err(|e| format!("cannot subscribe: {e}"))?;
    let orphan_timeout_ms = config
        .orphan_timeout_ms
        .unwrap_or(if config.spin_up_id.is_some() {
            600_000
        } else {
            0
        });
    let owner_pid = config.owner_pid;
    let workspaces = config.workspaces();
    workspaces.prune().await;
    let runtime = Arc::new(Runtime {
        client,
        workspaces,
        config,
        id,
        running: Mutex::new(HashMap::new()),
        draining: AtomicBool::new(false),
        heartbeat_ms: AtomicU64::new(5_000),
        registering: AtomicBool::new(false),
        last_answer_ms: AtomicU64::new(crate::time::now_ms()),
        changed: Notify::new(),
    });
    runtime.register().await?;
    // A heartbeat goes out every interval, whatever became of the last one: one lost in a
    // NATS restart must not mean a silence long enough to be declared offline.
    let heartbeats = tokio::spawn({
        let runtime = runtime.clone();
        async move {
            loop {
                let every = Duration::from_millis(runtime.heartbeat_ms.load(Ordering::SeqCst));
                let beat = runtime.clone();
                tokio::spawn(async move { beat.heartbeat(every).await });
                tokio::time::sleep(every).await;
            }
        }
    });
    let mut orphan_check = tokio::time::interval(Duration::from_secs(1));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    loop {
        if runtime.draining.load(Ordering::SeqCst) && runtime.running_ids().is_empty() {
            break;
        }
        tokio::select! {
            Some(message) = pushes.next() => {
                let kind = message.subject.as_str().rsplit('.').next().unwrap_or_default().to_string();
                match kind.as_str() {
                    "assign" => match serde_json::from_slice::<Assignment>(&message.payload) {
                        Ok(a) => runtime.start(a),
                        Err(e) => tracing::warn!("unreadable assignment: {e}"),
                    },
                    "cancel" => match serde_json::from_slice::<protocol::CancelRequest>(&message.payload) {
                        Ok(c) => runtime.cancel(&c.work_id),
                        Err(e) => tracing::warn!("unreadable cancel: {e}"),
                    },
                    "shutdown" => match serde_json::from_slice::<protocol::ShutdownRequest>(&message.payload) {
                        Ok(s) => runtime.shut_down(s),
                        Err(e) => tracing::warn!("unreadable shutdown: {e}"),
                    },
                    other => tracing::debug!("ignoring push {other}"),
                }
            }
            _ = runtime.changed.notified() => {}
            _ = orphan_check.tick() => {
                let silent_ms = crate::time::now_ms().saturating_sub(runtime.last_answer_ms.load(Ordering::SeqCst));
                // Asked to stop, an agent waits for its reports only while Weft could still
                // take them: after three silent heartbeat intervals (the least Weft waits
                // before it counts an agent offline) they would be refused anyway.
                let patience_ms = if runtime.draining.load(Ordering::SeqCst) {
                    3 * runtime.heartbeat_ms.load(Ordering::SeqCst)
                } else {
                    orphan_timeout_ms
                };
                let owner_gone = owner_pid.is_some_and(|pid| {
                    // SAFETY: signal 0 only asks whether the process exists.
                    let asked = unsafe { libc::kill(pid as libc::pid_t, 0) };
                    asked != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
                });
                if owner_gone {
                    tracing::error!("the Weft that started this agent is gone; stopping");
                    runtime.cancel_all();
                    heartbeats.abort();
                    return Err("the Weft that started this agent is gone; exiting".into());
                }
                if patience_ms > 0 && silent_ms > patience_ms {
                    tracing::error!(silent_ms, "Weft has not answered for too long; stopping");
                    runtime.cancel_all();
                    heartbeats.abort();
                    return Err(format!("Weft has not answered for {} s; exiting", silent_ms / 1000));
                }
            }
            _ = tokio::signal::ctrl_c() => runtime.shut_down(protocol::ShutdownRequest { graceful: true, reason: "SIGINT".into() }),
            _ = term.recv() => runtime.shut_down(protocol::ShutdownRequest { graceful: true, reason: "SIGTERM".into() }),
        }
    }
    heartbeats.abort();
    let goodbye = protocol::DeregisterRequest {
        agent_id: runtime.id.clone(),
    };
    match runtime.call::<_, ()>(protocol::DEREGISTER, &goodbye).await {
        Ok(_) => tracing::info!("deregistered; bye"),
        Err(e) => tracing::warn!("could not deregister ({e}); Weft will notice the silence"),
    }
    Ok(())
}
