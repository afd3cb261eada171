//! The shapes of `/api/targets`: what clients send and what they get back.

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};
use projections::Target;

pub use crate::api::names::{HealthStatusName, MechanismName, SpinUpStatusName, TargetStatusName};

use crate::api::batch::BatchOutcome;
use crate::time::rfc3339;
use decide::target::HealthCheckInput;

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct HealthCheckView {
    pub enabled: bool,
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

/// A spin-up target, in the original's field order. `config` uses the nested layout
/// (`{"mechanism": "ssh", "ssh": {...}}`) and never contains a secret.
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct TargetView {
    pub id: String,
    pub name: String,
    #[oai(skip_serializing_if_is_none)]
    pub description: Option<String>,
    pub agent_type: String,
    pub capabilities: Vec<String>,
    pub boundaries: Vec<String>,
    pub mechanism: MechanismName,
    pub config: serde_json::Value,
    pub status: TargetStatusName,
    #[oai(skip_serializing_if_is_none)]
    pub current_agent_guid: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub health_check: Option<HealthCheckView>,
    pub health_status: HealthStatusName,
    #[oai(skip_serializing_if_is_none)]
    pub last_health_check: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub last_error: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub disabled_reason: Option<String>,
    /// How it was registered (`api`, `cli`, `agent`, `config`).
    pub registered_by: String,
    /// Who registered it (the token's name, or `anonymous` without auth).
    pub registered_by_actor: String,
    pub registered_at: String,
    pub updated_at: String,
    #[oai(skip_serializing_if_is_none)]
    pub last_used_at: Option<String>,
    pub use_count: u64,
    pub tags: Vec<String>,
    /// How many agents it may run at once.
    pub max_agents: u32,
    pub project_id: String,
}

impl TargetView {
    pub fn new(project: &str, t: &Target) -> Self {
        let mechanism = t.config.mechanism();
        let mut config = serde_json::Map::new();
        config.insert("mechanism".into(), mechanism.as_str().into());
        if let Ok(serde_json::Value::Object(outer)) = serde_json::to_value(&t.config) {
            config.extend(outer);
        }
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            description: t.description.clone(),
            agent_type: t.agent_type.clone(),
            capabilities: t.capabilities.clone(),
            boundaries: t.boundaries.clone(),
            mechanism: mechanism.into(),
            config: serde_json::Value::Object(config),
            status: t.status.into(),
            current_agent_guid: t.current_agent_guid.clone(),
            health_check: t.health_check.as_ref().map(|h| HealthCheckView {
                enabled: h.enabled,
                interval_ms: h.interval_ms,
                timeout_ms: h.timeout_ms,
            }),
            health_status: t.health_status.into(),
            last_health_check: t.last_health_check_ms.map(rfc3339),
            last_error: t.last_error.clone(),
            disabled_reason: t.disabled_reason.clone(),
            registered_by: t.registered_by.clone(),
            registered_by_actor: t.registered_by_actor.clone(),
            registered_at: rfc3339(t.registered_at_ms),
            updated_at: rfc3339(t.updated_at_ms),
            last_used_at: t.last_used_at_ms.map(rfc3339),
            use_count: t.use_count,
            tags: t.tags.clone(),
            max_agents: t.max_agents,
            project_id: project.to_string(),
        }
    }
}

#[derive(Object, serde::Deserialize, Clone, Debug)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckRequest {
    pub enabled: bool,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
}

impl From<HealthCheckRequest> for HealthCheckInput {
    fn from(h: HealthCheckRequest) -> Self {
        HealthCheckInput {
            enabled: h.enabled,
            interval_ms: h.interval_ms,
            timeout_ms: h.timeout_ms,
        }
    }
}

/// A target to register. `config` may be nested (`{"mechanism":"ssh","ssh":{"host":...}}`)
/// or flat (`{"mechanism":"ssh","host":...}`); secrets are referenced, never sent.
#[derive(Object, serde::Deserialize, Clone, Debug)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRegisterRequest {
    pub name: String,
    pub description: Option<String>,
    /// `claude-code`, `copilot-cli`, or another agent type.
    pub agent_type: String,
    pub capabilities: Vec<String>,
    /// Default: corporate, corporate-adjacent, personal, open-source.
    pub boundaries: Option<Vec<String>>,
    /// `ssh`, `github-actions`, `local`, `webhook` or `kubernetes`.
    pub mechanism: String,
    pub config: serde_json::Value,
    pub health_check: Option<HealthCheckRequest>,
    pub tags: Option<Vec<String>>,
    /// How many agents it may run at once (default 1).
    pub max_agents: Option<i64>,
    /// The project (default `LOOMINAL_PROJECT_ID`).
    pub project_id: Option<String>,
}

/// Fields to change; absent ones stay. `config` is merged key by key (null removes one).
#[derive(Object, serde::Deserialize, Clone, Debug)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetUpdateRequest {
    pub description: Option<String>,
    pub capabilities: Option<Vec<String>>,
    pub boundaries: Option<Vec<String>>,
    pub config: Option<serde_json::Value>,
    pub health_check: Option<HealthCheckRequest>,
    pub tags: Option<Vec<String>>,
    pub max_agents: Option<i64>,
    pub project_id: Option<String>,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct TargetList {
    pub targets: Vec<TargetView>,
    pub count: usize,
    pub total: usize,
    pub has_more: bool,
    pub next_cursor: Option<String>,
    pub prev_cursor: Option<String>,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct TargetChanged {
    pub success: bool,
    pub message: String,
    /// The target as it is now (absent after removal).
    #[oai(skip_serializing_if_is_none)]
    pub target: Option<TargetView>,
}

#[derive(Object, serde::Deserialize, Clone, Debug, Default)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisableBatchFilter {
    pub agent_type: Option<String>,
    pub status: Option<TargetStatusName>,
    pub mechanism: Option<MechanismName>,
}

#[derive(Object, serde::Deserialize, Clone, Debug)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisableBatchRequest {
    pub filter: Option<DisableBatchFilter>,
    /// Ids or names.
    pub target_ids: Option<Vec<String>>,
    /// Accepted for compatibility: a disabled target is never used for spin-ups anyway.
    pub prevent_spin_up: Option<bool>,
    pub reason: Option<String>,
    pub project_id: Option<String>,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct DisableBatchResponse {
    #[oai(flatten)]
    pub outcome: BatchOutcome,
    pub disabled_targets: Vec<String>,
    pub already_disabled: Vec<String>,
}

/// The result of a health check (the original answered `{healthy, latencyMs}`).
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct HealthCheckResult {
    pub target_id: String,
    pub healthy: bool,
    pub latency_ms: u64,
    pub timestamp: String,
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<String>,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct SpinUpResponse {
    /// The spin-up's id.
    pub operation_id: String,
    pub target_name: String,
    /// `started` (waiting for the agent to register) or `failed`.
    pub status: SpinUpStatusName,
    pub success: bool,
    #[oai(skip_serializing_if_is_none)]
    pub detail: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<String>,
}

#[derive(ApiResponse)]
pub enum ListResponse {
    #[oai(status = 200)]
    Ok(
        Json<TargetList>,
        /// Set when the deprecated `classification` parameter was used.
        #[oai(header = "X-Deprecated-Param")]
        Option<String>,
    ),
}

#[derive(ApiResponse)]
pub enum CreatedResponse {
    #[oai(status = 201)]
    Created(Json<TargetView>),
}
