//! Events of the spin-up target aggregate, and the mechanism settings they carry.
//!
//! Secrets never appear here: a target names the environment variable or file that holds
//! one (`tokenEnvVar`, `privateKeyPath`, `secretHeaders`, `hmacSecretEnvVar`), and the
//! spin-up mechanism reads it when it runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A target joined the fleet. Carries every setting, already validated and normalized.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetRegistered {
    pub target_id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub agent_type: String,
    pub capabilities: Vec<String>,
    pub boundaries: Vec<String>,
    pub config: MechanismConfig,
    #[serde(default)]
    pub health_check: Option<HealthCheckSettings>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// How many agents it may run at once (absent: 1).
    #[serde(default)]
    pub max_agents: Option<u32>,
    /// How the target was registered (`api`, `cli`, `agent`, `config`), as the original
    /// reported it; who registered it is the envelope's actor.
    pub registered_by: String,
}

/// Settings of a target changed. Only the fields present changed, and each carries its
/// new value in full (a partial `config` in the request was merged before deciding).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetUpdated {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    #[serde(default)]
    pub boundaries: Option<Vec<String>>,
    #[serde(default)]
    pub config: Option<MechanismConfig>,
    #[serde(default)]
    pub health_check: Option<HealthCheckSettings>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub max_agents: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetEnabled {}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetDisabled {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetRemoved {}

/// A target's health was checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetHealthChecked {
    pub healthy: bool,
    #[serde(default)]
    pub error: Option<String>,
    pub latency_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckSettings {
    pub enabled: bool,
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

/// How a target starts agents. Serialized externally tagged (`{"ssh": {...}}`), which is
/// the original's nested `config` layout without its redundant `mechanism` key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MechanismConfig {
    Ssh(SshConfig),
    GithubActions(GithubActionsConfig),
    Local(LocalConfig),
    Webhook(WebhookConfig),
    Kubernetes(KubernetesConfig),
}

impl MechanismConfig {
    pub fn mechanism(&self) -> Mechanism {
        match self {
            MechanismConfig::Ssh(_) => Mechanism::Ssh,
            MechanismConfig::GithubActions(_) => Mechanism::GithubActions,
            MechanismConfig::Local(_) => Mechanism::Local,
            MechanismConfig::Webhook(_) => Mechanism::Webhook,
            MechanismConfig::Kubernetes(_) => Mechanism::Kubernetes,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mechanism {
    Ssh,
    GithubActions,
    Local,
    Webhook,
    Kubernetes,
}

impl Mechanism {
    pub const ALL: [Mechanism; 5] = [
        Mechanism::Ssh,
        Mechanism::GithubActions,
        Mechanism::Local,
        Mechanism::Webhook,
        Mechanism::Kubernetes,
    ];

    /// The name used in `mechanism` fields and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Ssh => "ssh",
            Mechanism::GithubActions => "github-actions",
            Mechanism::Local => "local",
            Mechanism::Webhook => "webhook",
            Mechanism::Kubernetes => "kubernetes",
        }
    }

    /// The key under which the original's nested `config` layout keeps the settings.
    pub fn config_key(self) -> &'static str {
        match self {
            Mechanism::Ssh => "ssh",
            Mechanism::GithubActions => "githubActions",
            Mechanism::Local => "local",
            Mechanism::Webhook => "webhook",
            Mechanism::Kubernetes => "kubernetes",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == value)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshConfig {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub user: String,
    pub command: String,
    /// Path of the private key on Weft's machine; without it the ssh agent is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_path: Option<String>,
    /// A known_hosts file to verify the host key against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts_path: Option<String>,
    /// A pinned host public key (`ssh-ed25519 AAAA...`), checked instead of known_hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GithubActionsConfig {
    /// `owner/repo`.
    pub repo: String,
    /// Workflow file name or id (`workflowFile` is accepted as an alias on input).
    pub workflow: String,
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Name of the environment variable holding the token (default `GITHUB_TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env_var: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, String>,
    /// For GitHub Enterprise (default `https://api.github.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalConfig {
    /// Run through `sh -c` when `args` is empty, else executed directly with `args`.
    pub command: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detached: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookConfig {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Plain headers. Credentials go in `secretHeaders`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Header name -> name of the environment variable holding its value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_headers: BTreeMap<String, String>,
    /// With `{{spinUpId}}`, `{{workItemId}}`, `{{capability}}`, `{{boundary}}`, `{{targetName}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_template: Option<String>,
    /// Name of the environment variable holding the HMAC-SHA256 signing secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret_env_var: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub success_codes: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesConfig {
    pub namespace: String,
    pub image: String,
    /// Prefix of the Job names (default: the target's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<KubernetesResources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<u32>,
    /// A kubeconfig file; without it the in-cluster service account is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_path: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}
