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
    /// Spin-ups on it whose agent has not registered yet (it is `in-use` once one has).
    pub spin_ups_in_flight: u32,
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
            spin_ups_in_flight: t.spin_ups_in_flight,
            project_id: project.to_string(),
        }
    }
}

#[derive(Object, serde::Deserialize, Clone, Debug)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckRequest {
    pub enabled: bool,
    /// At least 1000 (default 300000).
    #[oai(validator(minimum(value = "1000")))]
    pub interval_ms: Option<u64>,
    /// At least 100, at most `intervalMs` (default 10000).
    #[oai(validator(minimum(value = "100")))]
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
    #[oai(validator(
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
    ))]
    pub name: String,
    #[oai(validator(max_length = 2048))]
    pub description: Option<String>,
    /// `claude-code`, `copilot-cli`, or another agent type.
    #[oai(validator(pattern = r"^[a-z0-9-]{1,64}$"))]
    pub agent_type: String,
    #[oai(validator(
        min_items = 1,
        max_items = 100,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
    ))]
    pub capabilities: Vec<String>,
    /// Default: corporate, corporate-adjacent, personal, open-source.
    #[oai(validator(
        min_items = 1,
        max_items = 100,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
    ))]
    pub boundaries: Option<Vec<String>>,
    /// Deprecated alias of `boundaries`.
    #[oai(validator(
        min_items = 1,
        max_items = 100,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
    ))]
    pub classifications: Option<Vec<String>>,
    pub mechanism: MechanismName,
    /// The mechanism's settings; which are required depends on the mechanism.
    pub config: std::collections::BTreeMap<String, serde_json::Value>,
    pub health_check: Option<HealthCheckRequest>,
    #[oai(validator(
        min_items = 0,
        max_items = 100,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
    ))]
    pub tags: Option<Vec<String>>,
    /// How many agents it may run at once (default 1).
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    pub max_agents: Option<i64>,
    /// `false` registers it disabled (default `true`).
    pub enabled: Option<bool>,
    /// The project (default `LOOMINAL_PROJECT_ID`).
    #[oai(validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$"))]
    pub project_id: Option<String>,
}

/// The fields of [`TargetRegisterRequest`], as a list, for the original's flat layout.
const REGISTER_FIELDS: [&str; 13] = [
    "name",
    "description",
    "agentType",
    "capabilities",
    "boundaries",
    "classifications",
    "mechanism",
    "config",
    "healthCheck",
    "tags",
    "maxAgents",
    "enabled",
    "projectId",
];

/// A registration body in either layout. The original's clients may leave `config` out and
/// put the mechanism's settings at the top level (`{"mechanism": "local", "command":
/// "echo test"}`): those become `config`, and are then checked as settings of the mechanism
/// like any other, so a genuinely unknown field is still refused.
pub struct RegisterBody(pub TargetRegisterRequest);

impl poem_openapi::types::Type for RegisterBody {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> std::borrow::Cow<'static, str> {
        TargetRegisterRequest::name()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        TargetRegisterRequest::schema_ref()
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        TargetRegisterRequest::register(registry)
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl poem_openapi::types::ParseFromJSON for RegisterBody {
    fn parse_from_json(value: Option<serde_json::Value>) -> poem_openapi::types::ParseResult<Self> {
        let mut value = value.unwrap_or_default();
        if let Some(body) = value.as_object_mut() {
            if !body.contains_key("config") {
                let keys: Vec<String> = body
                    .keys()
                    .filter(|k| !REGISTER_FIELDS.contains(&k.as_str()))
                    .cloned()
                    .collect();
                let settings: serde_json::Map<String, serde_json::Value> = keys
                    .into_iter()
                    .filter_map(|k| body.remove(&k).map(|v| (k, v)))
                    .collect();
                body.insert("config".into(), settings.into());
            }
        }
        crate::api::strict::Strict::<TargetRegisterRequest>::parse_from_json(Some(value))
            .map(|s| RegisterBody(s.0))
            .map_err(poem_openapi::types::ParseError::propagate)
    }
}

/// Fields to change; absent ones stay. `config` is merged key by key (null removes one).
#[derive(Object, serde::Deserialize, Clone, Debug)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetUpdateRequest {
    #[oai(validator(max_length = 2048))]
    pub description: Option<String>,
    #[oai(validator(
        min_items = 1,
        max_items = 100,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
    ))]
    pub capabilities: Option<Vec<String>>,
    #[oai(validator(
        min_items = 1,
        max_items = 100,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
    ))]
    pub boundaries: Option<Vec<String>>,
    /// Settings to change; `null` removes one.
    pub config: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    pub health_check: Option<HealthCheckRequest>,
    #[oai(validator(
        min_items = 0,
        max_items = 100,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
    ))]
    pub tags: Option<Vec<String>>,
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    pub max_agents: Option<i64>,
    #[oai(validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$"))]
    pub project_id: Option<String>,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct TargetList {
    pub targets: Vec<TargetView>,
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

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct TargetChanged {
    pub success: bool,
    pub message: String,
    // Undocumented on purpose: a description beside a reference makes generators emit a
    // second copy of the target model. It is the target as it is now, absent after removal.
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
    #[oai(validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$"))]
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
