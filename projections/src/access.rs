//! Read models of who may do what: the API tokens (in the access project) and the NATS
//! credentials issued to a project's agents.

use std::collections::BTreeMap;

use events::access::Role;
use events::{Envelope, Event};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Token {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// `None`: every project.
    pub projects: Option<Vec<String>>,
    pub expires_at_ms: Option<u64>,
    pub hash: String,
    pub created_ms: u64,
    /// Who created it (a token id, or `token:<fingerprint>` for one of `API_TOKENS`).
    pub created_by: String,
    pub revoked_ms: Option<u64>,
}

impl Token {
    /// Whether a request at `now_ms` may use it.
    pub fn is_valid(&self, now_ms: u64) -> bool {
        self.revoked_ms.is_none() && self.expires_at_ms.is_none_or(|at| now_ms < at)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tokens {
    pub by_id: BTreeMap<String, Token>,
    /// Secret digest -> id: a request's token is found without a scan.
    pub by_hash: BTreeMap<String, String>,
}

impl Tokens {
    pub fn get(&self, id: &str) -> Option<&Token> {
        self.by_id.get(id)
    }

    pub fn by_hash(&self, hash: &str) -> Option<&Token> {
        self.by_hash.get(hash).and_then(|id| self.by_id.get(id))
    }

    pub fn apply(&mut self, envelope: &Envelope) {
        let id = &envelope.aggregate_id;
        match &envelope.event {
            Event::TokenCreated(e) => {
                self.by_hash.insert(e.hash.clone(), id.clone());
                self.by_id.insert(
                    id.clone(),
                    Token {
                        id: id.clone(),
                        name: e.name.clone(),
                        role: e.role,
                        projects: e.projects.clone(),
                        expires_at_ms: e.expires_at_ms,
                        hash: e.hash.clone(),
                        created_ms: envelope.time_ms,
                        created_by: envelope.actor.clone(),
                        revoked_ms: None,
                    },
                );
            }
            Event::TokenRevoked(_) => {
                if let Some(t) = self.by_id.get_mut(id) {
                    t.revoked_ms.get_or_insert(envelope.time_ms);
                }
            }
            _ => {}
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    pub id: String,
    pub agent_id: String,
    pub public_key: String,
    pub spin_up_id: Option<String>,
    pub target_id: Option<String>,
    pub issued_ms: u64,
    pub revoked_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Credentials {
    pub by_id: BTreeMap<String, Credential>,
}

impl Credentials {
    pub fn get(&self, id: &str) -> Option<&Credential> {
        self.by_id.get(id)
    }

    /// Credentials nats-server should accept.
    pub fn valid(&self) -> impl Iterator<Item = &Credential> {
        self.by_id.values().filter(|c| c.revoked_ms.is_none())
    }

    pub fn apply(&mut self, envelope: &Envelope) {
        let id = &envelope.aggregate_id;
        match &envelope.event {
            Event::CredentialIssued(e) => {
                self.by_id.insert(
                    id.clone(),
                    Credential {
                        id: id.clone(),
                        agent_id: e.agent_id.clone(),
                        public_key: e.public_key.clone(),
                        spin_up_id: e.spin_up_id.clone(),
                        target_id: e.target_id.clone(),
                        issued_ms: envelope.time_ms,
                        revoked_ms: None,
                    },
                );
            }
            Event::CredentialRevoked(_) => {
                if let Some(c) = self.by_id.get_mut(id) {
                    c.revoked_ms.get_or_insert(envelope.time_ms);
                }
            }
            _ => {}
        }
    }
}
