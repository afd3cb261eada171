//! The agent protocol on NATS, shared by Weft and `weft agent`. JSON, so agents can be
//! written in any language; `docs/agent-protocol.md` describes it for people.
//!
//! Agent -> Weft (request/reply, queue group `weft`): `weft.rpc.<project>.<operation>.<agentId>`
//! (the agent id last, so nats-server can confine an agent's credentials to its own
//! requests; Weft refuses a body that names another agent). `weft.rpc.<project>.<operation>`
//! without it is still answered, for agents of before (only where NATS has no authorization).
//! Weft -> agent (push): `weft.agent.<project>.<agentId>.{assign,cancel,shutdown}`.
//! Pushes are a shortcut: every heartbeat reply repeats what the agent should be running,
//! so a push lost in a reconnect loses nothing.

use serde::{Deserialize, Serialize};

pub const RPC_QUEUE_GROUP: &str = "weft";

pub fn rpc_subject(project: &str, operation: &str, agent_id: &str) -> String {
    format!("weft.rpc.{project}.{operation}.{agent_id}")
}

/// What an agent's NATS credentials may publish: its own requests, any operation.
pub fn rpc_subjects_of(project: &str, agent_id: &str) -> String {
    format!("weft.rpc.{project}.*.*.{agent_id}")
}

/// What an agent's NATS credentials may subscribe to: its pushes.
pub fn agent_subjects_of(project: &str, agent_id: &str) -> String {
    format!("weft.agent.{project}.{agent_id}.>")
}

/// The inbox prefix of an agent's replies, its own so no other agent can read them.
pub fn inbox_prefix(agent_id: &str) -> String {
    format!("_INBOX_{agent_id}")
}

pub fn agent_subject(project: &str, agent_id: &str, message: &str) -> String {
    format!("weft.agent.{project}.{agent_id}.{message}")
}

/// One request of the agent protocol, answered within `timeout`. A timeout or an
/// unreadable answer is an `Err`; Weft's refusals are in the [`Reply`].
pub async fn call<B: Serialize, R: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    project: &str,
    operation: &str,
    agent_id: &str,
    body: &B,
    timeout: std::time::Duration,
) -> Result<Reply<R>, String> {
    let payload = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(
        timeout,
        client.request(rpc_subject(project, operation, agent_id), payload.into()),
    )
    .await
    .map_err(|_| format!("no answer from Weft within {} ms", timeout.as_millis()))?
    .map_err(|e| e.to_string())?;
    serde_json::from_slice(&response.payload).map_err(|e| format!("unreadable answer: {e}"))
}

pub const REGISTER: &str = "agent.register";
pub const HEARTBEAT: &str = "agent.heartbeat";
pub const DEREGISTER: &str = "agent.deregister";
pub const ACCEPT: &str = "work.accept";
pub const PROGRESS: &str = "work.progress";
pub const COMPLETE: &str = "work.complete";
pub const FAIL: &str = "work.fail";
/// A usage limit stopped the attempt (not a failure): the item goes back to the queue
/// without counting it, and the agent is paused until `untilMs`.
pub const PARK: &str = "work.park";
/// Lines the attempt printed, for the output stream (not the audit log).
pub const OUTPUT: &str = "work.output";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    pub agent_id: String,
    pub agent_type: String,
    pub capabilities: Vec<String>,
    pub boundaries: Vec<String>,
    pub max_concurrent_tasks: u32,
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub handle: Option<String>,
    #[serde(default)]
    pub spin_up_id: Option<String>,
    #[serde(default)]
    pub target_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterReply {
    pub heartbeat_interval_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatRequest {
    pub agent_id: String,
    /// Work items the agent is running now.
    #[serde(default)]
    pub running: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatReply {
    /// False when Weft does not know the agent as online (it was marked offline): register again.
    pub registered: bool,
    /// Everything assigned to the agent now; start what is not running yet.
    pub assignments: Vec<Assignment>,
    /// Items the agent runs that are no longer its own (cancelled, or the lease was taken
    /// away): stop them.
    pub cancel: Vec<String>,
    #[serde(default)]
    pub shutdown: Option<ShutdownRequest>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    pub work_id: String,
    pub lease_id: String,
    pub task_id: String,
    pub description: String,
    pub capability: String,
    pub boundary: String,
    pub priority: u8,
    pub attempt: u32,
    #[serde(default)]
    pub deadline: Option<String>,
    #[serde(default)]
    pub context_data: Option<serde_json::Value>,
    /// Work on it in a git worktree of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<events::work::WorkspaceSpec>,
    /// The most the attempt may cost (`WEFT_MAX_COST_USD` for the command; Claude's
    /// `--max-budget-usd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    /// The CLI session an earlier attempt on this agent left, to resume
    /// (`WEFT_RESUME_SESSION`; Claude's `--resume`), when the item asks for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_session_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelRequest {
    pub work_id: String,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShutdownRequest {
    pub graceful: bool,
    pub reason: String,
}

/// `work.accept`, `work.progress`, `work.complete`, `work.fail` all name the lease.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkReport {
    pub agent_id: String,
    pub work_id: String,
    pub lease_id: String,
    #[serde(default)]
    pub progress: Option<u8>,
    /// Progress message, completion summary, or failure error.
    #[serde(default)]
    pub message: Option<String>,
    /// For `work.progress`: what the attempt is doing, in a word or two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default)]
    pub output: Option<String>,
    #[serde(default)]
    pub artifacts: Vec<String>,
    /// For `work.fail`: whether another attempt could succeed.
    #[serde(default)]
    pub recoverable: Option<bool>,
    /// For `work.complete` and `work.fail`: what the attempt left in its workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<events::work::WorkspaceOutcome>,
    /// For `work.complete` and `work.fail`: what the agent CLI reported the attempt cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<events::work::Usage>,
    /// For `work.park`: when the limit resets (absent: a person must resume the agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
}

/// `work.output`: lines the attempt printed since its last report, numbered from
/// `firstLine` (1 for the attempt's first line).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputReport {
    pub agent_id: String,
    pub work_id: String,
    pub lease_id: String,
    pub first_line: u64,
    pub lines: Vec<String>,
}

impl WorkReport {
    /// A report on the item `lease` names, saying nothing yet.
    pub fn on(agent_id: &str, work_id: &str, lease_id: &str) -> Self {
        WorkReport {
            agent_id: agent_id.into(),
            work_id: work_id.into(),
            lease_id: lease_id.into(),
            progress: None,
            message: None,
            phase: None,
            output: None,
            artifacts: vec![],
            recoverable: None,
            workspace: None,
            usage: None,
            until_ms: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeregisterRequest {
    pub agent_id: String,
}

/// Every reply: `{"ok": true, ...}` or `{"ok": false, "code": ..., "error": ...}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reply<T> {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
}

/// Codes of failed replies: one per kind of [`decide::Rejection`], plus `unavailable`.
pub mod codes {
    /// The request is malformed: do not retry it.
    pub const INVALID: &str = "invalid";
    /// The agent's lease on the item is gone (cancelled, reassigned): stop working on it.
    pub const LEASE_LOST: &str = "lease-lost";
    pub const NOT_FOUND: &str = "not-found";
    /// The aggregate's state does not allow it (an offline agent, a finished item).
    pub const WRONG_STATE: &str = "wrong-state";
    pub const NAME_TAKEN: &str = "name-taken";
    /// Weft could not record it now: retry.
    pub const UNAVAILABLE: &str = "unavailable";
}

impl<T> Reply<T> {
    pub fn ok(data: T) -> Self {
        Reply {
            ok: true,
            code: None,
            error: None,
            data: Some(data),
        }
    }

    pub fn err(code: &str, error: impl Into<String>) -> Self {
        Reply {
            ok: false,
            code: Some(code.into()),
            error: Some(error.into()),
            data: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::codes;
    use decide::{FieldError, Rejection};

    #[test]
    fn every_kind_of_rejection_has_a_documented_code() {
        let documented = [
            codes::INVALID,
            codes::LEASE_LOST,
            codes::NOT_FOUND,
            codes::WRONG_STATE,
            codes::NAME_TAKEN,
        ];
        let text = include_str!("../docs/agent-protocol.md");
        for r in [
            Rejection::Invalid(vec![FieldError {
                field: "f".into(),
                message: "m".into(),
            }]),
            Rejection::NotFound("x".into()),
            Rejection::NameTaken("x".into()),
            Rejection::LeaseLost("x".into()),
            Rejection::WrongState("x".into()),
        ] {
            assert!(documented.contains(&r.code()), "{}", r.code());
            assert!(
                text.contains(&format!("`{}`", r.code())),
                "{} undocumented",
                r.code()
            );
        }
    }
}
