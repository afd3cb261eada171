//! The target aggregate: where and how Weft starts agents. Validating what clients send,
//! and deciding which event each command records.

use events::target::{
    HealthCheckSettings, Mechanism, MechanismConfig, TargetDisabled, TargetEnabled,
    TargetHealthChecked, TargetRegistered, TargetRemoved, TargetUpdated,
};
use events::Event;
use projections::{Project, Target, TargetStatus};
use serde_json::{Map, Value};

use crate::rejection::{is_agent_type, is_env_name, Rejection, Validation};
use crate::Decision;

/// Boundaries of a target registered without any: the original's legacy classification set.
pub const DEFAULT_BOUNDARIES: [&str; 4] =
    ["corporate", "corporate-adjacent", "personal", "open-source"];
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 300_000;
pub const DEFAULT_HEALTH_TIMEOUT_MS: u64 = 10_000;

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HealthCheckInput {
    pub enabled: bool,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
}

/// A registration as the client sent it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewTarget {
    pub name: String,
    pub description: Option<String>,
    pub agent_type: String,
    pub capabilities: Vec<String>,
    pub boundaries: Option<Vec<String>>,
    pub mechanism: String,
    pub config: Value,
    pub health_check: Option<HealthCheckInput>,
    pub tags: Option<Vec<String>>,
    pub max_agents: Option<i64>,
    /// `Some(false)`: register it disabled.
    pub enabled: Option<bool>,
}

/// An update as the client sent it; absent fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TargetPatch {
    pub description: Option<String>,
    pub capabilities: Option<Vec<String>>,
    pub boundaries: Option<Vec<String>>,
    pub config: Option<Value>,
    pub health_check: Option<HealthCheckInput>,
    pub tags: Option<Vec<String>>,
    pub max_agents: Option<i64>,
}

fn check_max_agents(errors: &mut Validation, value: Option<i64>) {
    if value.is_some_and(|m| !(1..=1000).contains(&m)) {
        errors.add("maxAgents", "must be between 1 and 1000");
    }
}

fn check_health(errors: &mut Validation, input: &HealthCheckInput) -> HealthCheckSettings {
    let interval_ms = input.interval_ms.unwrap_or(DEFAULT_HEALTH_INTERVAL_MS);
    let timeout_ms = input.timeout_ms.unwrap_or(DEFAULT_HEALTH_TIMEOUT_MS);
    if interval_ms < 1_000 {
        errors.add("healthCheck.intervalMs", "must be at least 1000");
    }
    if !(100..=interval_ms.max(100)).contains(&timeout_ms) {
        errors.add(
            "healthCheck.timeoutMs",
            "must be at least 100 and at most intervalMs",
        );
    }
    HealthCheckSettings {
        enabled: input.enabled,
        interval_ms,
        timeout_ms,
    }
}

/// Keys that would put a secret into the log; each names what to use instead.
const SECRET_KEYS: [(&str, &str); 8] = [
    ("token", "tokenEnvVar"),
    ("githubToken", "tokenEnvVar"),
    ("password", "privateKeyPath (or an ssh agent)"),
    ("privateKey", "privateKeyPath"),
    ("passphrase", "an ssh agent"),
    ("secret", "hmacSecretEnvVar"),
    ("hmacSecret", "hmacSecretEnvVar"),
    ("apiKey", "secretHeaders"),
];

/// Headers that carry credentials: they must be given through `secretHeaders`.
const SECRET_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "x-auth-token",
];

fn required_keys(mechanism: Mechanism) -> &'static [&'static str] {
    match mechanism {
        Mechanism::Ssh => &["host", "user", "command"],
        Mechanism::GithubActions => &["repo", "workflow"],
        Mechanism::Local => &["command"],
        Mechanism::Webhook => &["url"],
        Mechanism::Kubernetes => &["namespace", "image"],
    }
}

/// Separates the mechanism's settings from a `config` in either layout: nested
/// (`{"mechanism":"ssh","ssh":{...}}`) or flat (`{"mechanism":"ssh","host":...}`).
fn settings_of(mechanism: Mechanism, config: &Value) -> Result<Map<String, Value>, Rejection> {
    let Value::Object(config) = config else {
        return Err(Rejection::invalid("config", "must be an object"));
    };
    if let Some(inner) = config.get("mechanism") {
        if inner.as_str() != Some(mechanism.as_str()) {
            return Err(Rejection::invalid(
                "config.mechanism",
                format!(
                    "config.mechanism must match top-level mechanism ({})",
                    mechanism.as_str()
                ),
            ));
        }
    }
    let key = mechanism.config_key();
    let mut settings = match config.get(key) {
        Some(Value::Object(nested)) => {
            if let Some(other) = config.keys().find(|k| *k != "mechanism" && *k != key) {
                return Err(Rejection::invalid(
                    format!("config.{other}"),
                    format!(
                        "unexpected beside the nested config.{key}: use one layout, nested or flat"
                    ),
                ));
            }
            nested.clone()
        }
        Some(_) => {
            return Err(Rejection::invalid(
                format!("config.{key}"),
                "must be an object",
            ))
        }
        None => {
            let mut flat = config.clone();
            flat.remove("mechanism");
            flat
        }
    };
    if mechanism == Mechanism::GithubActions {
        if let Some(alias) = settings.remove("workflowFile") {
            if settings.contains_key("workflow") {
                return Err(Rejection::invalid(
                    "config.workflowFile",
                    "give workflow or its alias workflowFile, not both",
                ));
            }
            settings.insert("workflow".into(), alias);
        }
    }
    Ok(settings)
}

/// Parses and checks a mechanism's settings into their typed form.
pub fn parse_config(
    mechanism: Mechanism,
    settings: Map<String, Value>,
) -> Result<MechanismConfig, Rejection> {
    let mut errors = Validation::default();
    for (key, instead) in SECRET_KEYS {
        if settings.contains_key(key) {
            errors.add(
                format!("config.{key}"),
                format!("secrets are never stored: keep it in the environment or a file and reference it with {instead}"),
            );
        }
    }
    for key in required_keys(mechanism) {
        match settings.get(*key) {
            None | Some(Value::Null) => errors.add(
                format!("config.{key}"),
                format!("is required for the {} mechanism", mechanism.as_str()),
            ),
            Some(Value::String(s)) if s.trim().is_empty() => {
                errors.add(format!("config.{key}"), "must be a non-empty string")
            }
            _ => {}
        }
    }
    if !errors.is_empty() {
        return Err(errors.into_rejection());
    }
    let value = Value::Object(settings);
    let mut unknown = Vec::new();
    let parsed = {
        let record = |path: serde_ignored::Path| unknown.push(path.to_string());
        match mechanism {
            Mechanism::Ssh => serde_ignored::deserialize(value, record).map(MechanismConfig::Ssh),
            Mechanism::GithubActions => {
                serde_ignored::deserialize(value, record).map(MechanismConfig::GithubActions)
            }
            Mechanism::Local => {
                serde_ignored::deserialize(value, record).map(MechanismConfig::Local)
            }
            Mechanism::Webhook => {
                serde_ignored::deserialize(value, record).map(MechanismConfig::Webhook)
            }
            Mechanism::Kubernetes => {
                serde_ignored::deserialize(value, record).map(MechanismConfig::Kubernetes)
            }
        }
    };
    let config = match parsed {
        Ok(config) => config,
        Err(e) => return Err(Rejection::invalid("config", e.to_string())),
    };
    for path in unknown {
        errors.add(
            format!("config.{path}"),
            format!("is not a setting of the {} mechanism", mechanism.as_str()),
        );
    }
    check_settings(&mut errors, &config);
    errors.finish(config)
}

fn check_env_refs<'a>(
    errors: &mut Validation,
    field: &str,
    names: impl IntoIterator<Item = &'a String>,
) {
    for name in names {
        if !is_env_name(name) {
            errors.add(
                field,
                format!("'{name}' is not a valid environment variable name"),
            );
        }
    }
}

fn check_settings(errors: &mut Validation, config: &MechanismConfig) {
    match config {
        MechanismConfig::Ssh(c) => {
            check_env_refs(errors, "config.env", c.env.keys());
            if c.port == Some(0) {
                errors.add("config.port", "must be between 1 and 65535");
            }
        }
        MechanismConfig::GithubActions(c) => {
            let parts: Vec<&str> = c.repo.split('/').collect();
            if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
                errors.add("config.repo", "must be owner/repo");
            }
            check_env_refs(errors, "config.tokenEnvVar", c.token_env_var.iter());
            if let Some(url) = &c.api_base_url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    errors.add("config.apiBaseUrl", "must be an http:// or https:// URL");
                }
            }
        }
        MechanismConfig::Local(c) => check_env_refs(errors, "config.env", c.env.keys()),
        MechanismConfig::Webhook(c) => {
            if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
                errors.add("config.url", "must be an http:// or https:// URL");
            }
            if let Some(method) = &c.method {
                if !["GET", "POST", "PUT", "PATCH"].contains(&method.to_ascii_uppercase().as_str())
                {
                    errors.add("config.method", "must be GET, POST, PUT or PATCH");
                }
            }
            for name in c.headers.keys() {
                if SECRET_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                    errors.add(
                        format!("config.headers.{name}"),
                        "carries a credential: name the environment variable holding it in secretHeaders",
                    );
                }
            }
            check_env_refs(errors, "config.secretHeaders", c.secret_headers.values());
            check_env_refs(
                errors,
                "config.hmacSecretEnvVar",
                c.hmac_secret_env_var.iter(),
            );
            if c.success_codes
                .iter()
                .any(|code| !(100..=599).contains(code))
            {
                errors.add("config.successCodes", "must be HTTP status codes (100-599)");
            }
        }
        MechanismConfig::Kubernetes(c) => {
            let label_ok = c.namespace.len() <= 63
                && c.namespace
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !label_ok {
                errors.add(
                    "config.namespace",
                    "must be a Kubernetes namespace name (lowercase letters, digits, '-')",
                );
            }
            check_env_refs(errors, "config.env", c.env.keys());
        }
    }
}

/// Validates a registration into the event that records it.
pub fn validate_new(target_id: String, new: NewTarget) -> Result<TargetRegistered, Rejection> {
    let mut errors = Validation::default();
    errors.text("name", &new.name, 128);
    if let Some(d) = &new.description {
        if d.chars().count() > 2048 {
            errors.add("description", "must be at most 2048 characters");
        }
    }
    if !is_agent_type(&new.agent_type) {
        errors.add("agentType", "must be an agent type such as claude-code or copilot-cli (lowercase letters, digits, '-')");
    }
    let capabilities = errors.names("capabilities", &new.capabilities, 1);
    let boundaries = match &new.boundaries {
        Some(b) => errors.names("boundaries", b, 1),
        None => DEFAULT_BOUNDARIES.iter().map(|b| b.to_string()).collect(),
    };
    let tags = new
        .tags
        .as_ref()
        .map(|t| errors.names("tags", t, 0))
        .unwrap_or_default();
    let health_check = new
        .health_check
        .as_ref()
        .map(|h| check_health(&mut errors, h));
    check_max_agents(&mut errors, new.max_agents);
    let config = match Mechanism::parse(&new.mechanism) {
        None => {
            errors.add(
                "mechanism",
                "must be one of ssh, github-actions, local, webhook, kubernetes",
            );
            None
        }
        Some(mechanism) => errors
            .absorb(settings_of(mechanism, &new.config).and_then(|s| parse_config(mechanism, s)))?,
    };
    let Some(config) = config else {
        // Every path that leaves `config` empty has recorded why.
        return Err(errors.into_rejection());
    };
    errors.finish(TargetRegistered {
        target_id,
        name: new.name.trim().to_string(),
        description: new.description,
        agent_type: new.agent_type,
        capabilities,
        boundaries,
        config,
        health_check,
        tags,
        max_agents: new.max_agents.map(|m| m as u32),
        registered_by: "api".into(),
    })
}

/// What can be asked of a target. `key` is an id or a name (the original's lookup rule).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum TargetCommand {
    Register {
        target_id: String,
        target: NewTarget,
    },
    Update {
        key: String,
        patch: TargetPatch,
    },
    Enable {
        key: String,
    },
    Disable {
        key: String,
        reason: Option<String>,
    },
    /// The outcome of a health check (run by the API or the scheduler).
    RecordHealth {
        key: String,
        healthy: bool,
        error: Option<String>,
        latency_ms: u64,
    },
    Remove {
        key: String,
    },
}

fn find<'a>(project: &'a Project, key: &str) -> Result<&'a Target, Rejection> {
    project
        .targets
        .get_by_id_or_name(key)
        .ok_or_else(|| Rejection::NotFound(format!("Target with ID or name {key} not found")))
}

pub fn decide(
    command: &TargetCommand,
    project: &Project,
    settings: &crate::Settings,
) -> Result<Vec<Decision>, Rejection> {
    match command {
        TargetCommand::Register { target_id, target } => {
            let registered = validate_new(target_id.clone(), target.clone())?;
            let mechanism = registered.config.mechanism();
            if !settings.mechanisms.contains(&mechanism) {
                let allowed: Vec<&str> = settings.mechanisms.iter().map(|m| m.as_str()).collect();
                return Err(Rejection::invalid(
                    "mechanism",
                    format!(
                        "{} is not allowed here (WEFT_MECHANISMS: {})",
                        mechanism.as_str(),
                        if allowed.is_empty() {
                            "none".into()
                        } else {
                            allowed.join(", ")
                        }
                    ),
                ));
            }
            if project.targets.by_name(&registered.name).is_some() {
                return Err(Rejection::NameTaken(format!(
                    "Target with name '{}' already exists",
                    registered.name
                )));
            }
            let mut decisions = vec![Decision::new(
                &registered.target_id,
                Event::TargetRegistered(registered.clone()),
            )];
            if target.enabled == Some(false) {
                // Registered disabled: both in one commit, so it is never usable in between.
                decisions.push(Decision::new(
                    target_id,
                    Event::TargetDisabled(TargetDisabled {
                        reason: Some("registered disabled".into()),
                    }),
                ));
            }
            Ok(decisions)
        }
        TargetCommand::Update { key, patch } => {
            let target = find(project, key)?;
            let event = validate_patch(target, patch)?;
            Ok(vec![Decision::new(&target.id, Event::TargetUpdated(event))])
        }
        TargetCommand::Enable { key } => {
            let target = find(project, key)?;
            if target.status != TargetStatus::Disabled {
                return Ok(vec![]);
            }
            Ok(vec![Decision::new(
                &target.id,
                Event::TargetEnabled(TargetEnabled {}),
            )])
        }
        TargetCommand::Disable { key, reason } => {
            let target = find(project, key)?;
            if target.status == TargetStatus::Disabled {
                return Ok(vec![]);
            }
            Ok(vec![Decision::new(
                &target.id,
                Event::TargetDisabled(TargetDisabled {
                    reason: reason.clone(),
                }),
            )])
        }
        TargetCommand::RecordHealth {
            key,
            healthy,
            error,
            latency_ms,
        } => {
            let target = find(project, key)?;
            Ok(vec![Decision::new(
                &target.id,
                Event::TargetHealthChecked(TargetHealthChecked {
                    healthy: *healthy,
                    error: error.clone(),
                    latency_ms: *latency_ms,
                }),
            )])
        }
        TargetCommand::Remove { key } => {
            let target = find(project, key)?;
            Ok(vec![Decision::new(
                &target.id,
                Event::TargetRemoved(TargetRemoved {}),
            )])
        }
    }
}

fn settings_json(config: &MechanismConfig) -> Map<String, Value> {
    match serde_json::to_value(config) {
        Ok(Value::Object(mut outer)) => match outer.values_mut().next().map(Value::take) {
            Some(Value::Object(settings)) => settings,
            _ => Map::new(),
        },
        _ => Map::new(),
    }
}

/// Validates an update against the target as it is; absent fields stay as they are.
fn validate_patch(target: &Target, patch: &TargetPatch) -> Result<TargetUpdated, Rejection> {
    let mut errors = Validation::default();
    let mut event = TargetUpdated::default();
    if let Some(d) = &patch.description {
        if d.chars().count() > 2048 {
            errors.add("description", "must be at most 2048 characters");
        }
        event.description = Some(d.clone());
    }
    if let Some(c) = &patch.capabilities {
        event.capabilities = Some(errors.names("capabilities", c, 1));
    }
    if let Some(b) = &patch.boundaries {
        event.boundaries = Some(errors.names("boundaries", b, 1));
    }
    if let Some(t) = &patch.tags {
        event.tags = Some(errors.names("tags", t, 0));
    }
    check_max_agents(&mut errors, patch.max_agents);
    event.max_agents = patch.max_agents.map(|m| m as u32);
    if let Some(h) = &patch.health_check {
        // Merged with what the target has, as the original did.
        let current = target.health_check.clone();
        let merged = HealthCheckInput {
            enabled: h.enabled,
            interval_ms: h.interval_ms.or(current.as_ref().map(|c| c.interval_ms)),
            timeout_ms: h.timeout_ms.or(current.as_ref().map(|c| c.timeout_ms)),
        };
        event.health_check = Some(check_health(&mut errors, &merged));
    }
    if let Some(config) = &patch.config {
        let mechanism = target.config.mechanism();
        if let Some(changes) = errors.absorb(settings_of(mechanism, config))? {
            // A shallow merge, as the original's `{...old, ...new}`; null removes a key.
            let mut merged = settings_json(&target.config);
            for (k, v) in changes {
                if v.is_null() {
                    merged.remove(&k);
                } else {
                    merged.insert(k, v);
                }
            }
            event.config = errors.absorb(parse_config(mechanism, merged))?;
        }
    }
    errors.finish(event)
}

#[cfg(test)]
mod tests;
