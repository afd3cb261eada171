//! Events of work items and agents.
//!
//! A change that touches several aggregates is one event that every affected projection
//! reads: `work.assigned` also fills the agent's slot, `agent.offline` also frees the
//! leases it held, so no crash can leave half of it behind.

use serde::{Deserialize, Serialize};

/// Work was submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkSubmitted {
    pub task_id: String,
    pub description: String,
    pub capability: String,
    pub boundary: String,
    pub priority: u8,
    #[serde(default)]
    pub preferred_agent_type: Option<String>,
    #[serde(default)]
    pub required_agent_type: Option<String>,
    /// RFC 3339, as given.
    #[serde(default)]
    pub deadline: Option<String>,
    /// Opaque JSON, stored as text so any shape survives the binary encoding.
    #[serde(default)]
    pub context_data: Option<String>,
    /// Attempts before the item is dead-lettered.
    pub max_attempts: u32,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Where the agent works on it: a git worktree of `repo` of its own.
    #[serde(default)]
    pub workspace: Option<WorkspaceSpec>,
    /// The most one attempt may cost (passed to CLIs that can stop at it).
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
    /// A retry on the agent that ran an earlier attempt resumes that attempt's CLI session.
    #[serde(default)]
    pub resume_session: bool,
}

/// The repository an item is worked on in, as submitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSpec {
    /// A git URL or a path the agent's machine can reach.
    pub repo: String,
    /// Branch, tag or commit to start from; the remote's default branch when absent.
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
    /// Push the item's branch to the repo's remote when the command ends.
    #[serde(default)]
    pub push: bool,
}

/// What an agent CLI reported an attempt cost (what it reports; absent fields stay
/// absent).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub premium_requests: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turns: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

impl Usage {
    /// Adds `other`: counts summed (a count either leaves out stays as the other has it);
    /// the model and session become `other`'s where it names them.
    pub fn add(&mut self, other: &Usage) {
        fn sum<T: std::ops::Add<Output = T> + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            }
        }
        self.cost_usd = sum(self.cost_usd, other.cost_usd);
        self.input_tokens = sum(self.input_tokens, other.input_tokens);
        self.output_tokens = sum(self.output_tokens, other.output_tokens);
        self.cache_read_tokens = sum(self.cache_read_tokens, other.cache_read_tokens);
        self.cache_write_tokens = sum(self.cache_write_tokens, other.cache_write_tokens);
        self.premium_requests = sum(self.premium_requests, other.premium_requests);
        self.turns = sum(self.turns, other.turns);
        self.duration_ms = sum(self.duration_ms, other.duration_ms);
        if other.model.is_some() {
            self.model = other.model.clone();
        }
        if other.session_id.is_some() {
            self.session_id = other.session_id.clone();
        }
    }
}

/// What an attempt left in its workspace: the branch it worked on and what it changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceOutcome {
    pub repo: String,
    /// The ref it started from, resolved (`main`, a tag, or the commit given).
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub base_commit: String,
    pub branch: String,
    pub head_commit: String,
    /// Commits on the branch since `base_commit`.
    pub commits: u32,
    pub files_changed: u32,
    pub insertions: u32,
    pub deletions: u32,
    pub pushed: bool,
}

/// Why an assignment went where it went.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingReason {
    /// The rule that decided, in words (e.g. `boundary corporate: copilot-cli only`).
    pub rule: String,
    /// Agents that could have taken it, best first.
    pub candidates: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkAssigned {
    pub agent_id: String,
    /// Fences reports: only the holder of the current lease may report.
    pub lease_id: String,
    pub attempt: u32,
    pub reason: RoutingReason,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkStarted {
    pub agent_id: String,
    pub lease_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkProgressed {
    pub agent_id: String,
    pub lease_id: String,
    #[serde(default)]
    pub progress: Option<u8>,
    /// A short line; the lines an agent prints are in the output stream, not here.
    pub message: String,
    /// What the attempt is doing, in a word or two (for example the tool it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkCompleted {
    pub agent_id: String,
    pub lease_id: String,
    pub summary: String,
    #[serde(default)]
    pub output: Option<String>,
    #[serde(default)]
    pub artifacts: Vec<String>,
    #[serde(default)]
    pub workspace: Option<WorkspaceOutcome>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// What happens to an item whose attempt ended without success.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum AfterFailure {
    /// Back to pending, not to be assigned before `at_ms`.
    Retry { at_ms: u64 },
    /// The last attempt failed.
    DeadLettered,
    /// The agent said retrying cannot help.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkFailed {
    pub agent_id: String,
    pub lease_id: String,
    pub error: String,
    pub recoverable: bool,
    pub then: AfterFailure,
    #[serde(default)]
    pub workspace: Option<WorkspaceOutcome>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// An assignment was taken back without a report: not accepted in time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkLeaseExpired {
    pub agent_id: String,
    pub lease_id: String,
    pub reason: String,
    pub then: AfterFailure,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkCancelled {
    #[serde(default)]
    pub reason: Option<String>,
}

/// A dead-lettered or failed item was put back in the queue, attempts reset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkRetried {}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRegistered {
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
    /// Set when Weft started this agent: links agent, target and the work that caused it.
    #[serde(default)]
    pub spin_up_id: Option<String>,
    #[serde(default)]
    pub target_id: Option<String>,
}

/// A lease the agent held when it went offline, and what became of the item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FreedLease {
    pub work_id: String,
    pub lease_id: String,
    pub then: AfterFailure,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentWentOffline {
    /// `heartbeat-missed`, `shutdown`, ...
    pub reason: String,
    /// Leases freed by this event. Only events recorded before each freed lease became a
    /// `work.lease-expired` of its own (in the same atomic commit) carry any; they stay
    /// readable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freed: Vec<FreedLease>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentShutdownRequested {
    /// `manual`, `idle-timeout`, `scaling-down`, `maintenance`, `error`.
    pub reason: String,
    pub graceful: bool,
}

/// A usage limit stopped the attempt: the item goes back to the queue without counting
/// the attempt. Committed with the agent's `agent.paused`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkParked {
    pub agent_id: String,
    pub lease_id: String,
    /// What the CLI said.
    pub reason: String,
    /// When the limit resets (absent: a person must resume the agent).
    #[serde(default)]
    pub until_ms: Option<u64>,
    #[serde(default)]
    pub workspace: Option<WorkspaceOutcome>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// Nothing more is routed to the agent until `until_ms` (absent: until a person resumes it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentPaused {
    pub reason: String,
    #[serde(default)]
    pub until_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentResumed {
    /// `limit-reset`, or who resumed it.
    pub reason: String,
}
