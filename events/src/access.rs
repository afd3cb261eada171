//! Events of who may do what: API tokens with a role and a project scope, and the NATS
//! credentials Weft issues to agents. Only digests and public keys are recorded; a secret
//! is shown once, to whoever created it, and never written anywhere.

use serde::{Deserialize, Serialize};

/// The project that holds the records that belong to no one project (API tokens). A
/// leading `_` cannot start a project of the API, so no one's project is ever named so.
pub const ACCESS_PROJECT: &str = "_weft";

/// Whether a project is one of Weft's own, never shown as anyone's project.
pub fn is_reserved_project(project: &str) -> bool {
    project.starts_with('_')
}

/// What a token may do; each role may do everything the ones before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything in scope.
    Viewer,
    /// Also submit, cancel and retry work; shut down and resume agents.
    Operator,
    /// Also targets, budgets and tokens.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(value: &str) -> Option<Role> {
        Self::ALL.into_iter().find(|r| r.as_str() == value)
    }
}

/// An API token was created. Its aggregate id is the token's id (`tok_...`), which is
/// also the actor of everything done with it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenCreated {
    pub name: String,
    pub role: Role,
    /// The projects it may see; `None`: every project.
    #[serde(default)]
    pub projects: Option<Vec<String>>,
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
    /// SHA-256 of the secret, hex (secrets are 256 random bits: a slow hash adds nothing).
    pub hash: String,
}

/// An API token was revoked: from this event on it is refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRevoked {
    #[serde(default)]
    pub reason: Option<String>,
}

/// NATS credentials were issued to an agent of the project (aggregate id: the
/// credential's id). The agent holds the NKey seed; the log holds the public key, which
/// is what nats-server checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialIssued {
    /// The only agent id these credentials may register as.
    pub agent_id: String,
    pub public_key: String,
    #[serde(default)]
    pub spin_up_id: Option<String>,
    #[serde(default)]
    pub target_id: Option<String>,
}

/// Credentials were revoked: nats-server forgets them and disconnects whoever used them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialRevoked {
    #[serde(default)]
    pub reason: Option<String>,
}
