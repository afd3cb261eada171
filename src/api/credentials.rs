//! `/api/credentials`: the NATS credentials Weft issues to agents of its embedded server.
//! The NKey seed is answered once; the log keeps the public key, which nats-server checks,
//! and revoking disconnects whoever uses them.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::error::ApiError;
use super::strict::Strict;
use super::{Actor, AppState, Tag};
use crate::time::rfc3339;
use decide::AccessCommand;

pub struct CredentialsApi;

#[derive(Object, serde::Deserialize, Clone, Debug)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialRequest {
    /// The only agent id they let in (`weft agent --agent-id`).
    #[oai(validator(pattern = r"^[A-Za-z0-9_-]{1,128}$"))]
    pub agent_id: String,
    /// Default: the default project.
    #[oai(validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$"))]
    pub project_id: Option<String>,
}

/// Credentials as listed: never the seed.
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct CredentialView {
    pub id: String,
    pub project_id: String,
    pub agent_id: String,
    /// What nats-server checks (not secret).
    pub public_key: String,
    #[oai(skip_serializing_if_is_none)]
    pub spin_up_id: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub target_id: Option<String>,
    pub issued_at: String,
    #[oai(skip_serializing_if_is_none)]
    pub revoked_at: Option<String>,
}

impl CredentialView {
    fn new(project: &str, c: &projections::Credential) -> Self {
        CredentialView {
            id: c.id.clone(),
            project_id: project.into(),
            agent_id: c.agent_id.clone(),
            public_key: c.public_key.clone(),
            spin_up_id: c.spin_up_id.clone(),
            target_id: c.target_id.clone(),
            issued_at: rfc3339(c.issued_ms),
            revoked_at: c.revoked_ms.map(rfc3339),
        }
    }
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct IssuedCredential {
    pub credential: CredentialView,
    /// The NKey seed: `weft agent --credentials <seed or a file holding it>`. Shown this
    /// once; Weft keeps only the public key.
    pub seed: String,
}

#[derive(ApiResponse)]
pub enum IssueResponse {
    #[oai(status = 201)]
    Created(Json<IssuedCredential>),
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct CredentialList {
    pub credentials: Vec<CredentialView>,
    pub count: usize,
}

impl AppState {
    fn credential(&self, actor: &Actor, id: &str) -> Result<CredentialView, ApiError> {
        self.read(actor, |s| {
            s.projects
                .iter()
                .find_map(|(name, p)| p.credentials.get(id).map(|c| CredentialView::new(name, c)))
        })
        .ok_or_else(|| ApiError::not_found(format!("Credential {id} not found")))
    }
}

#[OpenApi(tag = "Tag::Access")]
impl CredentialsApi {
    /// Issue NATS credentials to an agent of a project. Only for Weft's embedded
    /// nats-server (with NATS_URL, your server's configuration says who may connect).
    #[oai(
        path = "/api/credentials",
        method = "post",
        operation_id = "issueCredential"
    )]
    async fn issue(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        body: Json<Strict<CredentialRequest>>,
    ) -> Result<IssueResponse, ApiError> {
        let body = body.0 .0;
        if !app.coordinator.issues_credentials {
            return Err(ApiError::conflict(
                "Weft issues NATS credentials for its embedded nats-server only; with NATS_URL, \
                 your server's configuration says who may connect (see deploy/nats-server.conf)",
            ));
        }
        let project = app.project(actor.0, body.project_id.as_deref())?;
        let (id, seed) = app
            .coordinator
            .issue_credentials(&actor.context(), &project, &body.agent_id, None, None)
            .await?;
        Ok(IssueResponse::Created(Json(IssuedCredential {
            credential: app.credential(&actor, &id)?,
            seed,
        })))
    }

    /// The credentials issued to agents of the projects this token sees.
    #[oai(
        path = "/api/credentials",
        method = "get",
        operation_id = "listCredentials"
    )]
    async fn list(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        #[oai(
            name = "projectId",
            validator(pattern = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$")
        )]
        project_id: Query<Option<String>>,
    ) -> Result<Json<CredentialList>, ApiError> {
        let only = project_id
            .0
            .as_deref()
            .map(|p| app.project(actor.0, Some(p)))
            .transpose()?;
        let credentials: Vec<CredentialView> = app.read(actor.0, |s| {
            s.projects
                .iter()
                .filter(|(name, _)| only.as_ref().is_none_or(|o| o == *name))
                .flat_map(|(name, p)| {
                    p.credentials
                        .by_id
                        .values()
                        .map(move |c| CredentialView::new(name, c))
                })
                .collect()
        });
        Ok(Json(CredentialList {
            count: credentials.len(),
            credentials,
        }))
    }

    /// Revoke credentials: nats-server forgets them and disconnects whoever uses them.
    #[oai(
        path = "/api/credentials/:id",
        method = "delete",
        operation_id = "revokeCredential"
    )]
    async fn revoke(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        #[oai(validator(pattern = r"^cred_[0-9a-z]{26}$"))] id: Path<String>,
    ) -> Result<Json<CredentialView>, ApiError> {
        let found = app.credential(&actor, &id.0)?;
        app.commands
            .execute(
                &actor.context(),
                &found.project_id,
                AccessCommand::RevokeCredential {
                    id: id.0.clone(),
                    reason: None,
                },
            )
            .await?;
        Ok(Json(app.credential(&actor, &id.0)?))
    }
}
