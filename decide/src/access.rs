//! Who may do what: API tokens are created and revoked (in the access project), NATS
//! credentials are issued to and revoked from a project's agents. The secrets are made
//! outside (they are random); only their digests and public keys come in here.

use events::access::{CredentialIssued, CredentialRevoked, Role, TokenCreated, TokenRevoked};
use events::Event;
use projections::Project;

use crate::rejection::{Rejection, Validation};
use crate::Decision;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum AccessCommand {
    CreateToken {
        id: String,
        name: String,
        role: Role,
        projects: Option<Vec<String>>,
        expires_at_ms: Option<u64>,
        hash: String,
        now_ms: u64,
    },
    RevokeToken {
        id: String,
        reason: Option<String>,
    },
    IssueCredential {
        id: String,
        agent_id: String,
        public_key: String,
        spin_up_id: Option<String>,
        target_id: Option<String>,
    },
    RevokeCredential {
        id: String,
        reason: Option<String>,
    },
}

pub fn decide(command: &AccessCommand, project: &Project) -> Result<Vec<Decision>, Rejection> {
    match command {
        AccessCommand::CreateToken {
            id,
            name,
            role,
            projects,
            expires_at_ms,
            hash,
            now_ms,
        } => {
            let mut errors = Validation::default();
            errors.check(
                !name.trim().is_empty() && name.len() <= 128,
                "name",
                "must be 1-128 characters",
            );
            if let Some(projects) = projects {
                errors.check(
                    !projects.is_empty(),
                    "projects",
                    "must name a project, or be left out for every project",
                );
                errors.check(
                    projects.iter().all(|p| {
                        events::subject::is_valid_token(p)
                            && !events::access::is_reserved_project(p)
                    }),
                    "projects",
                    "must be project ids: 1-128 letters, digits, '-' or '_', not starting with '_'",
                );
            }
            if let Some(at) = expires_at_ms {
                errors.check(*at > *now_ms, "expiresAt", "must be in the future");
            }
            errors.finish(())?;
            if project.tokens.get(id).is_some() || project.tokens.by_hash(hash).is_some() {
                return Err(Rejection::NameTaken(format!("token {id} exists")));
            }
            Ok(vec![Decision::new(
                id.clone(),
                Event::TokenCreated(TokenCreated {
                    name: name.trim().to_string(),
                    role: *role,
                    projects: projects.clone(),
                    expires_at_ms: *expires_at_ms,
                    hash: hash.clone(),
                }),
            )])
        }
        AccessCommand::RevokeToken { id, reason } => {
            let token = project
                .tokens
                .get(id)
                .ok_or_else(|| Rejection::NotFound(format!("Token {id} not found")))?;
            Ok(if token.revoked_ms.is_some() {
                vec![]
            } else {
                vec![Decision::new(
                    id.clone(),
                    Event::TokenRevoked(TokenRevoked {
                        reason: reason.clone(),
                    }),
                )]
            })
        }
        AccessCommand::IssueCredential {
            id,
            agent_id,
            public_key,
            spin_up_id,
            target_id,
        } => {
            let mut errors = Validation::default();
            errors.check(
                events::subject::is_valid_token(agent_id),
                "agentId",
                "must be 1-128 letters, digits, '-' or '_'",
            );
            errors.check(
                public_key.len() == 56 && public_key.starts_with('U'),
                "publicKey",
                "must be an NKey user public key",
            );
            errors.finish(())?;
            if project.credentials.get(id).is_some() {
                return Err(Rejection::NameTaken(format!("credential {id} exists")));
            }
            Ok(vec![Decision::new(
                id.clone(),
                Event::CredentialIssued(CredentialIssued {
                    agent_id: agent_id.clone(),
                    public_key: public_key.clone(),
                    spin_up_id: spin_up_id.clone(),
                    target_id: target_id.clone(),
                }),
            )])
        }
        AccessCommand::RevokeCredential { id, reason } => {
            let credential = project
                .credentials
                .get(id)
                .ok_or_else(|| Rejection::NotFound(format!("Credential {id} not found")))?;
            Ok(if credential.revoked_ms.is_some() {
                vec![]
            } else {
                vec![Decision::new(
                    id.clone(),
                    Event::CredentialRevoked(CredentialRevoked {
                        reason: reason.clone(),
                    }),
                )]
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::{AggregateKind, Envelope};

    fn fold(project: &mut Project, decisions: &[Decision]) {
        for (n, d) in decisions.iter().enumerate() {
            project.apply(
                n as u64 + 1,
                &Envelope {
                    id: format!("e{n}"),
                    project: events::access::ACCESS_PROJECT.into(),
                    aggregate: d.event.aggregate_kind(),
                    aggregate_id: d.aggregate_id.clone(),
                    schema_version: events::SCHEMA_VERSION,
                    time_ms: 1_000,
                    actor: "token:admin".into(),
                    correlation_id: None,
                    causation_id: None,
                    event: d.event.clone(),
                },
            );
        }
    }

    fn create(id: &str, hash: &str) -> AccessCommand {
        AccessCommand::CreateToken {
            id: id.into(),
            name: "ci".into(),
            role: Role::Operator,
            projects: Some(vec!["alpha".into()]),
            expires_at_ms: Some(2_000),
            hash: hash.into(),
            now_ms: 1_000,
        }
    }

    #[test]
    fn a_token_is_created_once_found_by_its_digest_and_revoked_once() {
        let mut project = Project::default();
        let created = decide(&create("tok_1", "h1"), &project).unwrap();
        assert_eq!(created[0].event.aggregate_kind(), AggregateKind::Token);
        fold(&mut project, &created);
        let token = project.tokens.by_hash("h1").unwrap();
        assert_eq!((token.id.as_str(), token.role), ("tok_1", Role::Operator));
        assert!(token.is_valid(1_999) && !token.is_valid(2_000), "expiry");
        assert!(matches!(
            decide(&create("tok_1", "h2"), &project),
            Err(Rejection::NameTaken(_))
        ));
        assert!(matches!(
            decide(&create("tok_2", "h1"), &project),
            Err(Rejection::NameTaken(_))
        ));
        let revoke = AccessCommand::RevokeToken {
            id: "tok_1".into(),
            reason: None,
        };
        let revoked = decide(&revoke, &project).unwrap();
        fold(&mut project, &revoked);
        assert!(!project.tokens.get("tok_1").unwrap().is_valid(1_500));
        assert!(
            decide(&revoke, &project).unwrap().is_empty(),
            "revoking twice records nothing"
        );
        let unknown = AccessCommand::RevokeToken {
            id: "tok_9".into(),
            reason: None,
        };
        assert!(matches!(
            decide(&unknown, &project),
            Err(Rejection::NotFound(_))
        ));
    }

    #[test]
    fn bad_tokens_name_every_field_at_fault() {
        let command = AccessCommand::CreateToken {
            id: "tok_1".into(),
            name: " ".into(),
            role: Role::Viewer,
            projects: Some(vec!["_weft".into()]),
            expires_at_ms: Some(5),
            hash: "h".into(),
            now_ms: 10,
        };
        let Err(Rejection::Invalid(errors)) = decide(&command, &Project::default()) else {
            panic!("accepted");
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "projects", "expiresAt"]);
    }

    #[test]
    fn credentials_are_issued_for_one_agent_and_revoked() {
        let mut project = Project::default();
        let issue = AccessCommand::IssueCredential {
            id: "cred_1".into(),
            agent_id: "agent-1".into(),
            public_key: format!("U{}", "A".repeat(55)),
            spin_up_id: None,
            target_id: None,
        };
        let issued = decide(&issue, &project).unwrap();
        fold(&mut project, &issued);
        assert_eq!(project.credentials.valid().count(), 1);
        let revoke = AccessCommand::RevokeCredential {
            id: "cred_1".into(),
            reason: None,
        };
        let revoked = decide(&revoke, &project).unwrap();
        fold(&mut project, &revoked);
        assert_eq!(project.credentials.valid().count(), 0);
        let bad = AccessCommand::IssueCredential {
            id: "cred_2".into(),
            agent_id: "a.b".into(),
            public_key: "SUAAA".into(),
            spin_up_id: None,
            target_id: None,
        };
        assert!(matches!(decide(&bad, &project), Err(Rejection::Invalid(e)) if e.len() == 2));
    }
}
