//! `weft mcp`: an MCP server on stdio through which an interactive agent session (Claude
//! Code, Copilot CLI, Codex) joins the fleet as one agent of the agent protocol while it
//! runs. It registers, heartbeats in the background and deregisters when the session
//! ends; the tools take work (`weft_next_work`), report on it (`weft_progress`,
//! `weft_complete`, `weft_fail`) and hand sub-tasks to the fleet (`weft_submit`,
//! `weft_status`). Leases, fencing and idempotency are the agent protocol's: a report
//! names the lease the session accepted, and an item the session no longer holds is
//! refused with the reason.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Content, Implementation, ServerCapabilities, ServerInfo};
use rmcp::{schemars, tool, tool_handler, tool_router, ErrorData, ServerHandler, ServiceExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::agent::Membership;
use crate::protocol::{self, codes, Assignment, Reply, WorkReport};

#[derive(clap::Args, Clone, Debug)]
pub struct McpConfig {
    #[command(flatten)]
    pub member: Membership,
    /// Weft's REST API, for `weft_submit` and `weft_status`.
    #[arg(long, env = "WEFT_API_URL", default_value = "http://127.0.0.1:3000")]
    pub api_url: String,
    #[arg(long, env = "WEFT_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

/// How long a report waits for Weft's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// The longest `weft_next_work` waits.
const MAX_WAIT_SECONDS: u64 = 300;

/// The session's standing with Weft: what Weft assigned it, and what it took.
struct Session {
    client: async_nats::Client,
    member: Membership,
    id: String,
    heartbeat_ms: AtomicU64,
    /// Assigned by Weft and not yet taken, oldest first.
    offered: Mutex<VecDeque<Assignment>>,
    /// Taken (accepted): work id -> its assignment, whose lease every report names.
    taken: Mutex<HashMap<String, Assignment>>,
    /// Why an item the session took is no longer its own (cancelled, reassigned).
    withdrawn: Mutex<HashMap<String, String>>,
    arrived: Notify,
    shutdown_requested: Mutex<Option<String>>,
}

impl Session {
    async fn call<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        operation: &str,
        body: &B,
    ) -> Result<Reply<R>, String> {
        protocol::call(
            &self.client,
            &self.member.project,
            operation,
            &self.id,
            body,
            ANSWER_WITHIN,
        )
        .await
    }

    async fn register(&self) -> Result<(), String> {
        let request = self.member.registration(&self.id, None, None);
        let reply: Reply<protocol::RegisterReply> = self.call(protocol::REGISTER, &request).await?;
        match (reply.ok, reply.data) {
            (true, Some(settings)) => {
                self.heartbeat_ms
                    .store(settings.heartbeat_interval_ms.max(100), Ordering::SeqCst);
                Ok(())
            }
            _ => Err(format!(
                "Weft refused the registration: {}",
                reply.error.unwrap_or_default()
            )),
        }
    }

    fn offer(&self, assignment: Assignment) {
        if self
            .taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&assignment.work_id)
        {
            return;
        }
        let mut offered = self.offered.lock().unwrap_or_else(|e| e.into_inner());
        if offered.iter().any(|a| a.work_id == assignment.work_id) {
            return;
        }
        offered.push_back(assignment);
        drop(offered);
        self.arrived.notify_one();
    }

    /// Weft took the item away (cancelled, or reassigned after the accept window).
    fn withdraw(&self, work_id: &str, why: &str) {
        self.offered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|a| a.work_id != work_id);
        if self
            .taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(work_id)
            .is_some()
        {
            self.withdrawn
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(work_id.to_string(), why.to_string());
        }
    }

    fn heard(&self, reply: protocol::HeartbeatReply) {
        // What Weft no longer assigns to us is not ours to take.
        let assigned: Vec<&str> = reply
            .assignments
            .iter()
            .map(|a| a.work_id.as_str())
            .collect();
        self.offered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|a| assigned.contains(&a.work_id.as_str()));
        for id in &reply.cancel {
            self.withdraw(id, "cancelled, or given to another agent");
        }
        for assignment in reply.assignments {
            self.offer(assignment);
        }
        if let Some(shutdown) = reply.shutdown {
            *self
                .shutdown_requested
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(shutdown.reason);
        }
    }

    async fn keep_alive(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let interval = Duration::from_millis(self.heartbeat_ms.load(Ordering::SeqCst));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let running = self
                .taken
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .cloned()
                .collect();
            let request = protocol::HeartbeatRequest {
                agent_id: self.id.clone(),
                running,
            };
            match self
                .call::<_, protocol::HeartbeatReply>(protocol::HEARTBEAT, &request)
                .await
            {
                Ok(Reply {
                    ok: true,
                    data: Some(reply),
                    ..
                }) => {
                    let registered = reply.registered;
                    self.heard(reply);
                    if !registered {
                        if let Err(e) = self.register().await {
                            tracing::warn!("registering again: {e}");
                        }
                    }
                }
                Ok(reply) => {
                    tracing::warn!("heartbeat refused: {}", reply.error.unwrap_or_default())
                }
                Err(e) => tracing::warn!("heartbeat: {e}"),
            }
        }
    }

    async fn listen(self: Arc<Self>, mut pushes: async_nats::Subscriber) {
        while let Some(message) = pushes.next().await {
            let kind = message.subject.rsplit('.').next().unwrap_or_default();
            match kind {
                "assign" => {
                    if let Ok(assignment) = serde_json::from_slice(&message.payload) {
                        self.offer(assignment);
                    }
                }
                "cancel" => {
                    if let Ok(cancel) =
                        serde_json::from_slice::<protocol::CancelRequest>(&message.payload)
                    {
                        let why = cancel.reason.unwrap_or_else(|| "cancelled".into());
                        self.withdraw(&cancel.work_id, &why);
                    }
                }
                "shutdown" => {
                    if let Ok(shutdown) =
                        serde_json::from_slice::<protocol::ShutdownRequest>(&message.payload)
                    {
                        *self
                            .shutdown_requested
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = Some(shutdown.reason);
                    }
                }
                _ => {}
            }
        }
    }

    fn report(&self, work_id: &str) -> Result<WorkReport, String> {
        let taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let Some(assignment) = taken.get(work_id) else {
            let withdrawn = self.withdrawn.lock().unwrap_or_else(|e| e.into_inner());
            return Err(match withdrawn.get(work_id) {
                Some(why) => format!("work item {work_id} is no longer this session's: {why}"),
                None => format!(
                    "work item {work_id} is not one this session took (take one with weft_next_work)"
                ),
            });
        };
        Ok(WorkReport::on(
            &self.id,
            &assignment.work_id,
            &assignment.lease_id,
        ))
    }

    /// Sends a report on a taken item; `ends` when it finishes the item.
    async fn send(&self, operation: &str, report: WorkReport, ends: bool) -> Result<(), String> {
        let work_id = report.work_id.clone();
        let reply: Reply<Value> = self.call(operation, &report).await?;
        if reply.ok {
            if ends {
                self.taken
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&work_id);
            }
            return Ok(());
        }
        let code = reply.code.unwrap_or_default();
        let error = reply.error.unwrap_or_default();
        if code == codes::LEASE_LOST || code == codes::WRONG_STATE {
            self.withdraw(&work_id, &error);
        }
        Err(format!("Weft refused it ({code}): {error}"))
    }

    /// Accepts the oldest offered item Weft still gives us, waiting up to `wait`.
    async fn take(&self, wait: Duration) -> Result<Option<Assignment>, String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = self
                .offered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            if let Some(assignment) = next {
                let report = WorkReport::on(&self.id, &assignment.work_id, &assignment.lease_id);
                let reply: Reply<Value> = self.call(protocol::ACCEPT, &report).await?;
                if reply.ok {
                    self.taken
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(assignment.work_id.clone(), assignment.clone());
                    return Ok(Some(assignment));
                }
                if reply.code.as_deref() == Some(codes::UNAVAILABLE) {
                    self.offered
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_front(assignment);
                    return Err(format!(
                        "Weft cannot record the acceptance now: {}",
                        reply.error.unwrap_or_default()
                    ));
                }
                // Gone meanwhile (reassigned, cancelled): look for the next.
                continue;
            }
            if tokio::time::timeout_at(deadline, self.arrived.notified())
                .await
                .is_err()
            {
                return Ok(None);
            }
        }
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NextWork {
    /// How long to wait for an assignment, in seconds (0-300, default 30).
    #[serde(default)]
    pub wait_seconds: Option<u64>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Progress {
    /// The item, as `weft_next_work` returned it (`workId`).
    pub work_id: String,
    /// How far along, 0-100.
    #[serde(default)]
    pub percent: Option<u8>,
    /// What is happening now, in a line.
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Complete {
    pub work_id: String,
    /// What was done, in a sentence or two.
    pub summary: String,
    /// The full result (the item's `result`), if longer than the summary.
    #[serde(default)]
    pub result: Option<String>,
    /// Paths or URLs of what was produced.
    #[serde(default)]
    pub artifacts: Vec<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fail {
    pub work_id: String,
    /// What went wrong.
    pub error: String,
    /// Whether another attempt (by this or another agent) could succeed (default true).
    #[serde(default)]
    pub retryable: Option<bool>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Submit {
    /// What to do.
    pub description: String,
    /// What the agent must be able to do (e.g. `rust`).
    pub capability: String,
    /// The data classification: `corporate`, `corporate-adjacent`, `personal` or
    /// `open-source`.
    pub boundary: String,
    /// 1 (lowest) to 10 (highest), default 5.
    #[serde(default)]
    pub priority: Option<u8>,
    /// Your own id for the sub-task.
    #[serde(default)]
    pub task_id: Option<String>,
    /// Only agents of this type may take it (`claude-code`, `copilot-cli`, ...).
    #[serde(default)]
    pub required_agent_type: Option<String>,
    /// Anything the agent taking it should know.
    #[serde(default)]
    pub context_data: Option<Value>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Status {
    /// An item's id; without one, the fleet's summary.
    #[serde(default)]
    pub work_id: Option<String>,
}

#[derive(Clone)]
pub struct WeftTools {
    session: Arc<Session>,
    http: reqwest::Client,
    api_url: String,
    api_token: Option<String>,
}

fn answer(value: Value) -> Result<CallToolResult, ErrorData> {
    Ok(CallToolResult::success(vec![Content::text(
        value.to_string(),
    )]))
}

fn refused(message: impl Into<String>) -> Result<CallToolResult, ErrorData> {
    Ok(CallToolResult::error(vec![Content::text(message.into())]))
}

#[tool_router]
impl WeftTools {
    fn new(session: Arc<Session>, config: &McpConfig) -> Result<Self, String> {
        crate::mechanism::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(ANSWER_WITHIN)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(WeftTools {
            session,
            http,
            api_url: config.api_url.trim_end_matches('/').to_string(),
            api_token: config.api_token.clone(),
        })
    }

    /// A REST call to Weft for the tools that act as a client of the fleet.
    async fn api(&self, request: reqwest::RequestBuilder) -> Result<CallToolResult, ErrorData> {
        let request = match &self.api_token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return refused(format!("cannot reach Weft at {}: {e}", self.api_url)),
        };
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            answer(body)
        } else {
            refused(format!(
                "Weft answered {}: {}",
                status.as_u16(),
                body["message"].as_str().unwrap_or("(no message)")
            ))
        }
    }

    #[tool(
        description = "Wait for the next work item Weft assigns to this session (up to waitSeconds), take it and return it: workId, description, capability, boundary, priority, attempt, deadline, contextData. Report on it with weft_progress, then weft_complete or weft_fail. Returns work: null when nothing came in time."
    )]
    async fn weft_next_work(
        &self,
        Parameters(p): Parameters<NextWork>,
    ) -> Result<CallToolResult, ErrorData> {
        let wait = p.wait_seconds.unwrap_or(30);
        if wait > MAX_WAIT_SECONDS {
            return Err(ErrorData::invalid_params(
                format!("waitSeconds must be at most {MAX_WAIT_SECONDS}"),
                None,
            ));
        }
        if let Some(reason) = self
            .session
            .shutdown_requested
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return refused(format!(
                "Weft asked this agent to stop taking work ({reason}); finish what you hold"
            ));
        }
        match self.session.take(Duration::from_secs(wait)).await {
            Ok(Some(a)) => answer(json!({"work": {
                "workId": a.work_id, "taskId": a.task_id, "description": a.description,
                "capability": a.capability, "boundary": a.boundary, "priority": a.priority,
                "attempt": a.attempt, "deadline": a.deadline, "contextData": a.context_data,
            }})),
            Ok(None) => answer(json!({
                "work": null,
                "message": format!("nothing was assigned within {wait} s; ask again"),
            })),
            Err(e) => refused(e),
        }
    }

    #[tool(
        description = "Report progress on a work item this session took: percent (0-100) and/or a one-line message."
    )]
    async fn weft_progress(
        &self,
        Parameters(p): Parameters<Progress>,
    ) -> Result<CallToolResult, ErrorData> {
        if p.percent.is_some_and(|v| v > 100) {
            return Err(ErrorData::invalid_params("percent must be 0-100", None));
        }
        let mut report = match self.session.report(&p.work_id) {
            Ok(r) => r,
            Err(e) => return refused(e),
        };
        report.progress = p.percent;
        report.message = p.message;
        match self.session.send(protocol::PROGRESS, report, false).await {
            Ok(()) => answer(json!({"recorded": true})),
            Err(e) => refused(e),
        }
    }

    #[tool(
        description = "Finish a work item this session took, with a summary (and the full result if longer)."
    )]
    async fn weft_complete(
        &self,
        Parameters(p): Parameters<Complete>,
    ) -> Result<CallToolResult, ErrorData> {
        let mut report = match self.session.report(&p.work_id) {
            Ok(r) => r,
            Err(e) => return refused(e),
        };
        report.message = Some(p.summary);
        report.output = p.result;
        report.artifacts = p.artifacts;
        match self.session.send(protocol::COMPLETE, report, true).await {
            Ok(()) => answer(json!({"completed": p.work_id})),
            Err(e) => refused(e),
        }
    }

    #[tool(
        description = "Give up on a work item this session took: the error, and whether another attempt could succeed (retryable, default true)."
    )]
    async fn weft_fail(
        &self,
        Parameters(p): Parameters<Fail>,
    ) -> Result<CallToolResult, ErrorData> {
        let mut report = match self.session.report(&p.work_id) {
            Ok(r) => r,
            Err(e) => return refused(e),
        };
        report.message = Some(p.error);
        report.recoverable = Some(p.retryable.unwrap_or(true));
        match self.session.send(protocol::FAIL, report, true).await {
            Ok(()) => answer(json!({"failed": p.work_id})),
            Err(e) => refused(e),
        }
    }

    #[tool(
        description = "Hand a sub-task to the fleet: Weft routes it by boundary and capability to another agent. Returns its id (follow it with weft_status)."
    )]
    async fn weft_submit(
        &self,
        Parameters(p): Parameters<Submit>,
    ) -> Result<CallToolResult, ErrorData> {
        let body = json!({
            "description": p.description, "capability": p.capability, "boundary": p.boundary,
            "priority": p.priority, "taskId": p.task_id,
            "requiredAgentType": p.required_agent_type, "contextData": p.context_data,
            "projectId": self.session.member.project,
        });
        let body: serde_json::Map<String, Value> = body
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.api(
            self.http
                .post(format!("{}/api/work", self.api_url))
                .json(&body),
        )
        .await
    }

    #[tool(
        description = "A work item's status and result (workId), or without one the fleet's summary: agents, pending, active, completed and failed work per project."
    )]
    async fn weft_status(
        &self,
        Parameters(p): Parameters<Status>,
    ) -> Result<CallToolResult, ErrorData> {
        let url = match &p.work_id {
            Some(id)
                if !id.is_empty()
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
            {
                format!("{}/api/work/{id}", self.api_url)
            }
            Some(_) => {
                return Err(ErrorData::invalid_params(
                    "workId must be letters, digits, '-' or '_'",
                    None,
                ))
            }
            None => format!("{}/api/stats", self.api_url),
        };
        self.api(self.http.get(url)).await
    }
}

#[tool_handler]
impl ServerHandler for WeftTools {
    fn get_info(&self) -> ServerInfo {
        ServerInfo::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("weft", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "This session is agent {} of the Weft fleet (project {}). Take work with \
                 weft_next_work, report with weft_progress, finish with weft_complete or \
                 weft_fail; hand sub-tasks to other agents with weft_submit and follow them \
                 with weft_status.",
                self.session.id, self.session.member.project
            ))
    }
}

/// Joins the fleet, serves MCP on stdio until the client closes it, then leaves (work the
/// session still holds goes back to the queue).
pub async fn run(config: McpConfig) -> Result<(), String> {
    let id = config.member.checked_id()?;
    let client = config.member.connect(&id).await?;
    let pushes = client
        .subscribe(protocol::agent_subject(&config.member.project, &id, ">"))
        .await
        .map_err(|e| format!("cannot subscribe: {e}"))?;
    let session = Arc::new(Session {
        client,
        member: config.member.clone(),
        id,
        heartbeat_ms: AtomicU64::new(5_000),
        offered: Mutex::new(VecDeque::new()),
        taken: Mutex::new(HashMap::new()),
        withdrawn: Mutex::new(HashMap::new()),
        arrived: Notify::new(),
        shutdown_requested: Mutex::new(None),
    });
    session
        .register()
        .await
        .map_err(|e| format!("cannot join the fleet: {e}"))?;
    tracing::info!(
        agent = session.id,
        project = session.member.project,
        "joined the fleet"
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(session.clone().keep_alive(shutdown.clone()));
    tokio::spawn(session.clone().listen(pushes));

    let tools = WeftTools::new(session.clone(), &config)?;
    let service = tools
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("MCP session did not start: {e}"))?;
    let ended = service.waiting().await;
    tracing::info!(
        agent = session.id,
        "MCP session ended ({ended:?}); leaving the fleet"
    );
    shutdown.cancel();
    let leave = protocol::DeregisterRequest {
        agent_id: session.id.clone(),
    };
    if let Err(e) = session.call::<_, Value>(protocol::DEREGISTER, &leave).await {
        tracing::warn!("could not leave the fleet ({e}); Weft will notice the silence");
    }
    Ok(())
}
