//! Events of spin-ups: Weft starting an agent on a target.

use serde::{Deserialize, Serialize};

/// Weft decided to start an agent on a target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpinUpTriggered {
    pub target_id: String,
    pub target_name: String,
    pub agent_type: String,
    /// `work-pending` (automatic) or `manual`.
    pub reason: String,
    /// The item that needed an agent, for automatic spin-ups.
    #[serde(default)]
    pub work_id: Option<String>,
    #[serde(default)]
    pub capability: Option<String>,
    #[serde(default)]
    pub boundary: Option<String>,
}

/// The mechanism accepted the request: the agent is starting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpinUpStarted {
    /// What the mechanism reports (`pid 1234`, `job weft-x-1`, `HTTP 202`).
    pub detail: String,
    /// For `local`: the process (group) started, so it can be stopped after a restart too.
    #[serde(default)]
    pub pid: Option<u32>,
}

/// The agent it started registered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpinUpCompleted {
    pub agent_id: String,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpinUpFailed {
    pub error: String,
    /// `start` (the mechanism failed) or `registration` (no agent registered in time).
    pub stage: String,
}

/// What the spin-up started was stopped (scale-down, or cleanup after a failure).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpinUpStopped {
    pub reason: String,
}
