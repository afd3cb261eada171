//! `/api/tokens`: API tokens with a role and a project scope. The secret is answered once,
//! at creation; the log keeps its digest, so revocation survives restarts and is audited.

use std::sync::Arc;

use events::access::ACCESS_PROJECT;
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::error::ApiError;
use super::names::RoleName;
use super::strict::Strict;
use super::{Actor, AppState, Tag};
use crate::time::{now_ms, rfc3339};
use decide::AccessCommand;

pub struct TokensApi;

#[derive(Object, serde::Deserialize, Clone, Debug)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRequest {
    /// For people: who or what uses it (`ci-deploy`, `alice's laptop`).
    #[oai(validator(min_length = 1, max_length = 128, pattern = r"\S"))]
    pub name: String,
    pub role: RoleName,
    /// The projects it may see and change; absent: every project. Only a token of every
    /// project may create one of every project, and only for projects it sees.
    #[oai(validator(min_items = 1, max_items = 100))]
    pub projects: Option<Vec<String>>,
    /// When it stops working (RFC 3339); absent: never.
    #[oai(validator(max_length = 64))]
    pub expires_at: Option<String>,
}

/// A token as listed: never its secret.
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct TokenView {
    /// Also the actor of every event its requests cause.
    pub id: String,
    pub name: String,
    pub role: RoleName,
    /// Absent: every project.
    #[oai(skip_serializing_if_is_none)]
    pub projects: Option<Vec<String>>,
    #[oai(skip_serializing_if_is_none)]
    pub expires_at: Option<String>,
    pub created_at: String,
    pub created_by: String,
    #[oai(skip_serializing_if_is_none)]
    pub revoked_at: Option<String>,
    /// `active`, `revoked` or `expired`.
    pub status: String,
}

impl TokenView {
    fn new(t: &projections::Token, now_ms: u64) -> Self {
        let status = if t.revoked_ms.is_some() {
            "revoked"
        } else if !t.is_valid(now_ms) {
            "expired"
        } else {
            "active"
        };
        TokenView {
            id: t.id.clone(),
            name: t.name.clone(),
            role: t.role.into(),
            projects: t.projects.clone(),
            expires_at: t.expires_at_ms.map(rfc3339),
            created_at: rfc3339(t.created_ms),
            created_by: t.created_by.clone(),
            revoked_at: t.revoked_ms.map(rfc3339),
            status: status.into(),
        }
    }
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct CreatedToken {
    pub token: TokenView,
    /// The bearer secret. Shown this once: Weft keeps only its digest.
    pub secret: String,
}

#[derive(ApiResponse)]
pub enum CreateTokenResponse {
    #[oai(status = 201)]
    Created(Json<CreatedToken>),
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
    pub count: usize,
}

impl AppState {
    /// The token `id`, if `actor` may manage it (its scope covers the token's).
    fn token(&self, actor: &Actor, id: &str) -> Result<projections::Token, ApiError> {
        self.commands
            .projection()
            .read(|s| {
                s.project(ACCESS_PROJECT)
                    .and_then(|p| p.tokens.get(id))
                    .filter(|t| actor.access.covers(t.projects.as_deref()))
                    .cloned()
            })
            .ok_or_else(|| ApiError::not_found(format!("Token {id} not found")))
    }
}

#[OpenApi(tag = "Tag::Access")]
impl TokensApi {
    /// Create a token with a role and a project scope. Needs API_TOKENS set: without it
    /// the API is open to everyone and a token would restrict nothing.
    #[oai(path = "/api/tokens", method = "post", operation_id = "createToken")]
    async fn create(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        body: Json<Strict<TokenRequest>>,
    ) -> Result<CreateTokenResponse, ApiError> {
        let body = body.0 .0;
        if !app.authentication {
            return Err(ApiError::conflict(
                "authentication is off (API_TOKENS is not set): tokens would restrict nothing",
            ));
        }
        let mut projects = body.projects;
        if let Some(p) = &mut projects {
            p.sort();
            p.dedup();
        }
        if !actor.access.covers(projects.as_deref()) {
            return Err(ApiError::forbidden(
                "a token can only be given projects its creator may see",
            ));
        }
        let expires_at_ms = body
            .expires_at
            .as_deref()
            .map(|t| {
                t.parse::<jiff::Timestamp>()
                    .map(|t| u64::try_from(t.as_millisecond()).unwrap_or(0))
                    .map_err(|e| {
                        ApiError::validation("expiresAt", format!("not an RFC 3339 time: {e}"))
                    })
            })
            .transpose()?;
        let (id, secret) = (crate::access::new_token_id(), crate::access::new_secret());
        app.commands
            .execute(
                &actor.context(),
                ACCESS_PROJECT,
                AccessCommand::CreateToken {
                    id: id.clone(),
                    name: body.name,
                    role: body.role.into(),
                    projects,
                    expires_at_ms,
                    hash: crate::access::digest(&secret),
                    now_ms: now_ms(),
                },
            )
            .await?;
        let token = app.token(&actor, &id)?;
        Ok(CreateTokenResponse::Created(Json(CreatedToken {
            token: TokenView::new(&token, now_ms()),
            secret,
        })))
    }

    /// The tokens this token may manage (those within its scope), without secrets.
    #[oai(path = "/api/tokens", method = "get", operation_id = "listTokens")]
    async fn list(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
    ) -> Result<Json<TokenList>, ApiError> {
        let now = now_ms();
        let tokens: Vec<TokenView> = app.commands.projection().read(|s| {
            s.project(ACCESS_PROJECT).map_or_else(Vec::new, |p| {
                p.tokens
                    .by_id
                    .values()
                    .filter(|t| actor.access.covers(t.projects.as_deref()))
                    .map(|t| TokenView::new(t, now))
                    .collect()
            })
        });
        Ok(Json(TokenList {
            count: tokens.len(),
            tokens,
        }))
    }

    /// Revoke a token: from now on it is refused (also after restarts).
    #[oai(
        path = "/api/tokens/:id",
        method = "delete",
        operation_id = "revokeToken"
    )]
    async fn revoke(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        #[oai(validator(pattern = r"^tok_[0-9a-z]{26}$"))] id: Path<String>,
    ) -> Result<Json<TokenView>, ApiError> {
        app.token(&actor, &id.0)?;
        app.commands
            .execute(
                &actor.context(),
                ACCESS_PROJECT,
                AccessCommand::RevokeToken {
                    id: id.0.clone(),
                    reason: None,
                },
            )
            .await?;
        let token = app.token(&actor, &id.0)?;
        Ok(Json(TokenView::new(&token, now_ms())))
    }
}
