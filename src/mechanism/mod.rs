//! The ways Weft starts agents. Each mechanism starts an agent for a spin-up, checks that
//! it could (the health check), and stops what it started; all five sit behind
//! [`Mechanism`], and [`Mechanisms`] holds what they share.

mod github_actions;
mod kubernetes;
mod local;
mod ssh;
mod webhook;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Mutex;

use events::target::MechanismConfig;
use projections::{SpinUp, Target};

pub use kubernetes::job_name;

/// What an agent started for a spin-up is told (as environment variables), so that it
/// registers linked to the spin-up, its target and its project.
pub struct Launch<'a> {
    pub spin_up_id: &'a str,
    pub target: &'a Target,
    pub project: &'a str,
    pub nats_url: &'a str,
    pub work_id: Option<&'a str>,
    pub capability: Option<&'a str>,
    pub boundary: Option<&'a str>,
    /// The agent id and NATS credentials (NKey seed) Weft issued for this spin-up, when
    /// its NATS has authorization.
    pub credentials: Option<(&'a str, &'a str)>,
}

impl Launch<'_> {
    /// What a started agent is told: the target's type, capabilities and boundaries as
    /// defaults (the target's own `env` may override them), then what links it to this
    /// spin-up, which nothing overrides.
    pub fn agent_env(
        &self,
        target_env: &std::collections::BTreeMap<String, String>,
    ) -> Vec<(String, String)> {
        let t = self.target;
        let mut env: Vec<(String, String)> = vec![
            ("AGENT_TYPE".into(), t.agent_type.clone()),
            ("AGENT_CAPABILITIES".into(), t.capabilities.join(",")),
            ("AGENT_BOUNDARIES".into(), t.boundaries.join(",")),
        ];
        env.extend(target_env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend([
            ("WEFT_SPINUP_ID".into(), self.spin_up_id.to_string()),
            ("WEFT_TARGET_ID".into(), t.id.clone()),
            (
                "WEFT_WORK_ID".into(),
                self.work_id.unwrap_or_default().to_string(),
            ),
            ("NATS_URL".into(), self.nats_url.to_string()),
            ("LOOMINAL_PROJECT_ID".into(), self.project.to_string()),
        ]);
        if let Some((agent_id, seed)) = self.credentials {
            env.extend([
                ("WEFT_AGENT_ID".into(), agent_id.to_string()),
                ("WEFT_AGENT_CREDENTIALS".into(), seed.to_string()),
            ]);
        }
        env
    }
}

/// What a mechanism reports once it has started something.
pub struct Started {
    /// For people: `pid 1234`, `job weft-x-1 in namespace agents`, `HTTP 202 from ...`.
    pub detail: String,
    /// A process group to stop later (local and ssh).
    pub pid: Option<u32>,
}

/// Why a mechanism could not do what it was asked, in kinds a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum MechanismError {
    /// The target's settings cannot work as given.
    #[error("{0}")]
    Config(String),
    /// A secret the target names (an environment variable, a key file) is not there.
    #[error("{0}")]
    MissingSecret(String),
    /// Nothing answered at the address.
    #[error("{0}")]
    Unreachable(String),
    /// The other side answered, and said no (an HTTP status, a refused authentication).
    #[error("{message}")]
    Refused {
        status: Option<u16>,
        message: String,
    },
    /// No answer in time.
    #[error("{0}")]
    Timeout(String),
    /// It ran and failed (an exit status, a broken session).
    #[error("{0}")]
    Failed(String),
}

impl MechanismError {
    /// A stable name of the kind, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            MechanismError::Config(_) => "config",
            MechanismError::MissingSecret(_) => "missing-secret",
            MechanismError::Unreachable(_) => "unreachable",
            MechanismError::Refused { .. } => "refused",
            MechanismError::Timeout(_) => "timeout",
            MechanismError::Failed(_) => "failed",
        }
    }

    fn refused(status: u16, message: String) -> Self {
        MechanismError::Refused {
            status: Some(status),
            message,
        }
    }
}

/// One way of starting agents. Implemented by each mechanism's settings.
pub trait Mechanism {
    /// Starts an agent for a spin-up.
    fn start(
        &self,
        shared: &Mechanisms,
        launch: &Launch<'_>,
    ) -> impl Future<Output = Result<Started, MechanismError>> + Send;

    /// Whether it could start one now (what `POST /api/targets/{id}/test` runs).
    fn check(&self, shared: &Mechanisms)
        -> impl Future<Output = Result<(), MechanismError>> + Send;

    /// Stops what `start` started for `spin_up`.
    fn stop(
        &self,
        shared: &Mechanisms,
        target: &Target,
        spin_up: &SpinUp,
    ) -> impl Future<Output = Result<(), MechanismError>> + Send;
}

/// What the mechanisms share: an HTTP client, and the processes Weft owns (local targets
/// with `detached: false`), which are stopped when Weft stops.
pub struct Mechanisms {
    owned: Mutex<HashSet<u32>>,
    http: reqwest::Client,
}

impl Default for Mechanisms {
    fn default() -> Self {
        install_crypto_provider();
        Mechanisms {
            owned: Mutex::default(),
            http: reqwest::Client::new(),
        }
    }
}

/// Installs the one TLS crypto provider Weft uses (ring); reqwest clients cannot be built
/// before. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Mechanisms {
    pub async fn start(&self, launch: &Launch<'_>) -> Result<Started, MechanismError> {
        match &launch.target.config {
            MechanismConfig::Local(c) => c.start(self, launch).await,
            MechanismConfig::Webhook(c) => c.start(self, launch).await,
            MechanismConfig::GithubActions(c) => c.start(self, launch).await,
            MechanismConfig::Ssh(c) => c.start(self, launch).await,
            MechanismConfig::Kubernetes(c) => c.start(self, launch).await,
        }
    }

    pub async fn check(&self, config: &MechanismConfig) -> Result<(), MechanismError> {
        match config {
            MechanismConfig::Local(c) => c.check(self).await,
            MechanismConfig::Webhook(c) => c.check(self).await,
            MechanismConfig::GithubActions(c) => c.check(self).await,
            MechanismConfig::Ssh(c) => c.check(self).await,
            MechanismConfig::Kubernetes(c) => c.check(self).await,
        }
    }

    pub async fn stop(&self, target: &Target, spin_up: &SpinUp) -> Result<(), MechanismError> {
        match &target.config {
            MechanismConfig::Local(c) => c.stop(self, target, spin_up).await,
            MechanismConfig::Webhook(c) => c.stop(self, target, spin_up).await,
            MechanismConfig::GithubActions(c) => c.stop(self, target, spin_up).await,
            MechanismConfig::Ssh(c) => c.stop(self, target, spin_up).await,
            MechanismConfig::Kubernetes(c) => c.stop(self, target, spin_up).await,
        }
    }

    /// Stops every process Weft owns; called when Weft stops.
    pub async fn stop_owned(&self) {
        let owned: Vec<u32> = self
            .owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for pid in owned {
            local::stop_group(pid).await;
        }
    }
}

/// Reads a secret from the environment variable a target names.
fn secret(var: &str, what: &str) -> Result<String, MechanismError> {
    std::env::var(var).map_err(|_| {
        MechanismError::MissingSecret(format!(
            "environment variable {var} ({what}) is not set on Weft's machine"
        ))
    })
}

fn http_error(e: reqwest::Error) -> MechanismError {
    if e.is_timeout() {
        MechanismError::Timeout("timed out".into())
    } else if e.is_connect() {
        MechanismError::Unreachable(format!("cannot connect: {e}"))
    } else {
        MechanismError::Failed(e.to_string())
    }
}

/// The first 300 characters of a refusal's body, for the error message.
async fn body_excerpt(response: reqwest::Response) -> String {
    response
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}
