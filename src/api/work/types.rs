//! The shapes of `/api/work`: what clients send and what they get back.

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};
use projections::{Project, Work, WorkStatus};

use crate::api::batch::BatchOutcome;
pub use crate::api::names::{CancelReason, WorkStatusName};
use crate::time::rfc3339;

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct AgentSummary {
    pub guid: String,
    pub agent_type: String,
    #[oai(skip_serializing_if_is_none)]
    pub hostname: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub handle: Option<String>,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct WorkResultView {
    pub summary: String,
    #[oai(skip_serializing_if_is_none)]
    pub output: Option<String>,
    pub artifacts: Vec<String>,
    pub completed_at: String,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct WorkErrorView {
    pub message: String,
    pub recoverable: bool,
    pub occurred_at: String,
}

/// Work on an item in a git worktree of its own, on a branch named after it.
#[derive(Object, serde::Deserialize, Clone, Debug)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkspaceRequest {
    /// A git URL or a path the agent's machine can reach.
    #[oai(validator(max_length = 2048, pattern = r"^[^-\s]"))]
    pub repo: String,
    /// Branch, tag or commit to start from (default: the remote's default branch).
    #[oai(
        rename = "ref",
        validator(
            max_length = 256,
            pattern = r"^[^-\s\x00-\x1f\x7f~^:?*\[\\][^\s\x00-\x1f\x7f~^:?*\[\\]*$"
        )
    )]
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// Push the item's branch to the repo's remote when the agent is done (default false).
    pub push: Option<bool>,
}

/// The item's workspace: what was asked, and once an attempt ended, what it left.
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct WorkspaceView {
    pub repo: String,
    /// As asked, then as resolved (`main`, a tag, the commit given).
    #[oai(rename = "ref", skip_serializing_if_is_none)]
    pub git_ref: Option<String>,
    pub push: bool,
    #[oai(skip_serializing_if_is_none)]
    pub base_commit: Option<String>,
    /// `weft/<short id>-<slug of the description>`; it stays after the worktree is removed.
    #[oai(skip_serializing_if_is_none)]
    pub branch: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub head_commit: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub commits: Option<u32>,
    #[oai(skip_serializing_if_is_none)]
    pub files_changed: Option<u32>,
    #[oai(skip_serializing_if_is_none)]
    pub insertions: Option<u32>,
    #[oai(skip_serializing_if_is_none)]
    pub deletions: Option<u32>,
    #[oai(skip_serializing_if_is_none)]
    pub pushed: Option<bool>,
}

impl WorkspaceView {
    fn new(w: &Work) -> Option<Self> {
        let spec = w.workspace.as_ref()?;
        let outcome = w.workspace_outcome.as_ref();
        Some(WorkspaceView {
            repo: spec.repo.clone(),
            git_ref: outcome
                .map(|o| o.git_ref.clone())
                .or_else(|| spec.git_ref.clone()),
            push: spec.push,
            base_commit: outcome.map(|o| o.base_commit.clone()),
            branch: outcome.map(|o| o.branch.clone()),
            head_commit: outcome.map(|o| o.head_commit.clone()),
            commits: outcome.map(|o| o.commits),
            files_changed: outcome.map(|o| o.files_changed),
            insertions: outcome.map(|o| o.insertions),
            deletions: outcome.map(|o| o.deletions),
            pushed: outcome.map(|o| o.pushed),
        })
    }
}

/// What an item's attempts cost, as the agents' CLIs reported it (summed over attempts;
/// fields no CLI reported are absent).
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct UsageView {
    #[oai(skip_serializing_if_is_none)]
    pub cost_usd: Option<f64>,
    #[oai(skip_serializing_if_is_none)]
    pub input_tokens: Option<u64>,
    #[oai(skip_serializing_if_is_none)]
    pub output_tokens: Option<u64>,
    #[oai(skip_serializing_if_is_none)]
    pub cache_read_tokens: Option<u64>,
    #[oai(skip_serializing_if_is_none)]
    pub cache_write_tokens: Option<u64>,
    #[oai(skip_serializing_if_is_none)]
    pub premium_requests: Option<f64>,
    #[oai(skip_serializing_if_is_none)]
    pub turns: Option<u32>,
    #[oai(skip_serializing_if_is_none)]
    pub duration_ms: Option<u64>,
    #[oai(skip_serializing_if_is_none)]
    pub model: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub session_id: Option<String>,
}

impl From<events::work::Usage> for UsageView {
    fn from(u: events::work::Usage) -> Self {
        UsageView {
            cost_usd: u.cost_usd,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cache_read_tokens: u.cache_read_tokens,
            cache_write_tokens: u.cache_write_tokens,
            premium_requests: u.premium_requests,
            turns: u.turns,
            duration_ms: u.duration_ms,
            model: u.model,
            session_id: u.session_id,
        }
    }
}

/// The last time a usage limit sent the item back to the queue (the attempt not counted).
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct ParkedView {
    pub reason: String,
    /// When the limit resets; absent when a person must resume the agent.
    #[oai(skip_serializing_if_is_none)]
    pub until: Option<String>,
    pub at: String,
}

/// Why an item went to the agent it went to.
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct RoutingView {
    pub rule: String,
    /// Agents that could have taken it, best first.
    pub candidates: Vec<String>,
}

/// A work item, in the original's field order, with the lifecycle Weft adds.
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct WorkView {
    pub id: String,
    pub task_id: String,
    pub description: String,
    pub capability: String,
    pub priority: u8,
    #[oai(skip_serializing_if_is_none)]
    pub deadline: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub context_data: Option<serde_json::Value>,
    pub boundary: String,
    pub status: WorkStatusName,
    pub offered_by: String,
    pub offered_at: String,
    /// Who submitted it (token fingerprint or `anonymous`).
    pub submitted_by: String,
    pub attempts: u32,
    pub max_attempts: u32,
    #[oai(skip_serializing_if_is_none)]
    pub preferred_agent_type: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub required_agent_type: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub assigned_to: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub assigned_to_agent: Option<AgentSummary>,
    #[oai(skip_serializing_if_is_none)]
    pub assigned_at: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub started_at: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub progress: Option<u8>,
    #[oai(skip_serializing_if_is_none)]
    pub progress_message: Option<String>,
    /// What the attempt is doing, in a word or two (the tool in use), as its agent last said.
    #[oai(skip_serializing_if_is_none)]
    pub progress_phase: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub routing: Option<RoutingView>,
    /// Not assigned again before this time (backoff after a failed attempt).
    #[oai(skip_serializing_if_is_none)]
    pub retry_after: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub result: Option<WorkResultView>,
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<WorkErrorView>,
    #[oai(skip_serializing_if_is_none)]
    pub cancelled_at: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub workspace: Option<WorkspaceView>,
    #[oai(skip_serializing_if_is_none)]
    pub usage: Option<UsageView>,
    #[oai(skip_serializing_if_is_none)]
    pub parked: Option<ParkedView>,
    pub updated_at: String,
    pub project_id: String,
}

impl WorkView {
    pub fn new(project_id: &str, project: &Project, w: &Work) -> Self {
        let agent = w.assigned_to.as_deref().and_then(|a| project.agents.get(a));
        Self {
            id: w.id.clone(),
            task_id: w.task_id.clone(),
            description: w.description.clone(),
            capability: w.capability.clone(),
            priority: w.priority,
            deadline: w.deadline.clone(),
            context_data: w
                .context_data
                .as_deref()
                .and_then(|c| serde_json::from_str(c).ok()),
            boundary: w.boundary.clone(),
            status: w.status.into(),
            offered_by: "coordinator".into(),
            offered_at: rfc3339(w.offered_at_ms),
            submitted_by: w.submitted_by.clone(),
            attempts: w.attempts,
            max_attempts: w.max_attempts,
            preferred_agent_type: w.preferred_agent_type.clone(),
            required_agent_type: w.required_agent_type.clone(),
            assigned_to: w.assigned_to.clone(),
            assigned_to_agent: agent.map(|a| AgentSummary {
                guid: a.id.clone(),
                agent_type: a.agent_type.clone(),
                hostname: a.hostname.clone(),
                handle: a.handle.clone(),
            }),
            assigned_at: w.assigned_at_ms.map(rfc3339),
            started_at: w.started_at_ms.map(rfc3339),
            progress: w.progress,
            progress_message: w.progress_message.clone(),
            progress_phase: w.progress_phase.clone(),
            routing: w.routing.as_ref().map(|r| RoutingView {
                rule: r.rule.clone(),
                candidates: r.candidates.clone(),
            }),
            retry_after: w
                .not_before_ms
                .filter(|_| w.status == WorkStatus::Pending)
                .map(rfc3339),
            result: w.result.as_ref().map(|r| WorkResultView {
                summary: r.summary.clone(),
                output: r.output.clone(),
                artifacts: r.artifacts.clone(),
                completed_at: rfc3339(r.completed_at_ms),
            }),
            error: w.error.as_ref().map(|e| WorkErrorView {
                message: e.message.clone(),
                recoverable: e.recoverable,
                occurred_at: rfc3339(e.occurred_at_ms),
            }),
            cancelled_at: w.cancelled_at_ms.map(rfc3339),
            workspace: WorkspaceView::new(w),
            usage: w.usage_total().map(UsageView::from),
            parked: w.parked.as_ref().map(|p| ParkedView {
                reason: p.reason.clone(),
                until: p.until_ms.map(rfc3339),
                at: rfc3339(p.at_ms),
            }),
            updated_at: rfc3339(w.updated_at_ms),
            project_id: project_id.into(),
        }
    }
}

/// Work to do. `taskId` is generated when absent; `classification` is the deprecated name
/// of `boundary`.
#[derive(Object, serde::Deserialize, Clone, Debug)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkSubmitRequest {
    #[oai(validator(max_length = 256, pattern = r"\S"))]
    pub task_id: Option<String>,
    #[oai(validator(max_length = 100000, pattern = r"\S"))]
    pub description: String,
    #[oai(validator(max_length = 128, pattern = r"\S"))]
    pub capability: String,
    #[oai(validator(max_length = 128, pattern = r"\S"))]
    pub boundary: Option<String>,
    /// Deprecated alias of `boundary`.
    #[oai(validator(max_length = 128, pattern = r"\S"))]
    pub classification: Option<String>,
    /// 1 (lowest) to 10 (highest), default 5.
    #[oai(validator(minimum(value = "1"), maximum(value = "10")))]
    pub priority: Option<i64>,
    #[oai(validator(pattern = r"^[a-z0-9-]{1,64}$"))]
    pub preferred_agent_type: Option<String>,
    #[oai(validator(pattern = r"^[a-z0-9-]{1,64}$"))]
    pub required_agent_type: Option<String>,
    /// RFC 3339, such as `2026-01-31T12:00:00Z`.
    #[oai(validator(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
    ))]
    pub deadline: Option<String>,
    /// Any JSON object, handed to the agent as it is.
    pub context_data: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    /// Attempts before the item is dead-lettered (default 3).
    #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
    pub max_attempts: Option<i64>,
    #[oai(validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$"))]
    pub project_id: Option<String>,
    /// Work on it in a git worktree of its own (see `WorkspaceRequest`).
    pub workspace: Option<WorkspaceRequest>,
    /// The most one attempt may cost, in dollars (Claude stops at it: `--max-budget-usd`).
    #[oai(validator(minimum(value = "0", exclusive = true)))]
    pub max_cost_usd: Option<f64>,
    /// A retry on the agent that ran an earlier attempt resumes that attempt's CLI session
    /// (Claude's `--resume`; default false).
    pub resume_session: Option<bool>,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct WorkSubmitResponse {
    pub id: String,
    /// Same as `id`, for older clients.
    pub work_item_id: String,
    pub target_agent_type: String,
    /// No online agent can take it, and an enabled target can start one that can.
    pub spin_up_triggered: bool,
    /// 5 when an agent that can take it is online; absent otherwise.
    #[oai(skip_serializing_if_is_none)]
    pub estimated_wait_seconds: Option<u32>,
    pub status: WorkStatusName,
    /// Why it goes where it goes (once assigned, the item's `routing` says where it went).
    pub routing_rule: String,
}

#[derive(ApiResponse)]
pub enum SubmitResponse {
    /// Created.
    #[oai(status = 201)]
    Created(Json<WorkSubmitResponse>),
    /// An earlier submission with the same Idempotency-Key: the same item.
    #[oai(status = 200)]
    Existing(Json<WorkSubmitResponse>),
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct WorkList {
    pub work_items: Vec<WorkView>,
    pub count: usize,
    pub total: usize,
    pub has_more: bool,
    /// Absent (null) on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
    /// Absent (null) on the first page.
    #[oai(nullable)]
    pub prev_cursor: Option<String>,
}

#[derive(ApiResponse)]
pub enum ListResponse {
    #[oai(status = 200)]
    Ok(
        Json<WorkList>,
        /// Set when the deprecated `classification` parameter was used.
        #[oai(header = "X-Deprecated-Param")]
        Option<String>,
    ),
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct WorkChanged {
    pub success: bool,
    pub message: String,
    #[oai(skip_serializing_if_is_none)]
    pub work_item: Option<WorkView>,
}

#[derive(Object, serde::Deserialize, Clone, Debug, Default)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CancelBatchFilter {
    pub status: Option<WorkStatusName>,
    pub boundary: Option<String>,
    pub capability: Option<String>,
    pub min_priority: Option<i64>,
    pub assigned_to: Option<String>,
}

#[derive(Object, serde::Deserialize, Clone, Debug)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CancelBatchRequest {
    pub filter: Option<CancelBatchFilter>,
    /// Work item ids (`id`, not `taskId`).
    pub work_item_ids: Option<Vec<String>>,
    pub reason: Option<CancelReason>,
    /// Accepted for compatibility; cancelled work is not reassigned.
    pub reassign: Option<bool>,
    #[oai(validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$"))]
    pub project_id: Option<String>,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct CancelBatchResponse {
    #[oai(flatten)]
    pub outcome: BatchOutcome,
    pub cancelled_items: Vec<String>,
    /// Always empty: cancelled work is not reassigned.
    pub reassigned_items: Vec<String>,
    pub not_cancellable: Vec<String>,
}

/// An agent or a target, asked whether it could take the item.
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct CandidateView {
    pub id: String,
    /// A target's name; an agent's handle or id.
    pub name: String,
    pub agent_type: String,
    pub eligible: bool,
    /// Why not: `offline`, `shutting-down`, `paused`, `agent-type-not-allowed`,
    /// `capability-missing`, `boundary-not-allowed`, `full`, `disabled`, `unhealthy`,
    /// `cooling-down`, `at-max-agents`.
    pub reasons: Vec<String>,
}

/// How routing sees an item now.
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct RoutingExplanation {
    /// The routing rule in words, as recorded with an assignment.
    pub rule: String,
    pub agents: Vec<CandidateView>,
    pub targets: Vec<CandidateView>,
    /// The agent routing would give it to now, if any.
    #[oai(skip_serializing_if_is_none)]
    pub chosen_agent: Option<String>,
    /// Whether Weft would start an agent for it.
    pub spin_up: bool,
    #[oai(skip_serializing_if_is_none)]
    pub chosen_target: Option<String>,
    /// For an item: who holds it now.
    #[oai(skip_serializing_if_is_none)]
    pub assigned_to: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub status: Option<WorkStatusName>,
}
