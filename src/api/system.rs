//! `/health`, `/ready` and `/api/state`.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::at::AtResponse;
use super::error::ApiError;
use super::{Actor, AppState, Tag};
use crate::time::{now_ms, rfc3339};

pub struct SystemApi;

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct WebSocketHealth {
    pub connections: usize,
    pub status: String,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct NatsHealth {
    pub connected: bool,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct EventLogHealth {
    /// Sequence of the last event folded into the live state.
    pub sequence: u64,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct WriterHealth {
    /// This instance's id (`WEFT_INSTANCE_ID`), as its writer elections record it.
    pub instance: String,
    /// The projects this instance writes for (holds the writer lease of); the others'
    /// commands go to their writers.
    pub projects: Vec<String>,
}

/// The last background verification of the log (`WEFT_AUDIT_INTERVAL_MS`).
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct AuditHealth {
    /// Whether every check held.
    pub ok: bool,
    pub finished_at: String,
    /// Sequence the replay reached.
    pub sequence: u64,
    pub checks: usize,
    /// The checks that did not hold.
    pub failed: Vec<String>,
}

#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct Health {
    /// `ok`, or `degraded` while NATS is unreachable (reads still work, writes do not).
    pub status: String,
    pub timestamp: String,
    pub documentation: String,
    pub websocket: WebSocketHealth,
    pub nats: NatsHealth,
    pub event_log: EventLogHealth,
    pub writer: WriterHealth,
    /// Whether this instance's state has caught up with the end of the event log.
    pub caught_up: bool,
    /// The last background verification of the log; absent when it is off or has not
    /// finished yet.
    #[oai(skip_serializing_if_is_none)]
    pub audit: Option<AuditHealth>,
}

#[derive(ApiResponse)]
pub enum HealthResponse {
    #[oai(status = 200)]
    Ok(Json<Health>),
    #[oai(status = 503)]
    Degraded(Json<Health>),
}

/// A fingerprint of everything Weft knows, to compare a live instance with a replay.
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub struct StateDigest {
    /// Sequence of the last event folded in.
    pub sequence: u64,
    /// SHA-256 of the canonical encoding of the whole projected state.
    pub digest: String,
    pub projects: usize,
    pub targets: usize,
}

/// How long `/ready` and `/health` give the state to reach the end of the log as it is
/// when asked (under a steady write rate it is always a little behind).
const CATCH_UP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

async fn health_now(app: &AppState) -> Health {
    let connected = app.client.connection_state() == async_nats::connection::State::Connected;
    let caught_up = connected
        && match app.store.last_sequence().await {
            Ok(head) => {
                app.commands
                    .projection()
                    .wait_for(head, CATCH_UP_GRACE)
                    .await
            }
            Err(_) => false,
        };
    Health {
        status: if connected { "ok" } else { "degraded" }.into(),
        timestamp: rfc3339(now_ms()),
        documentation: "/api/docs".into(),
        websocket: WebSocketHealth {
            connections: app
                .live
                .connections
                .load(std::sync::atomic::Ordering::Relaxed),
            status: "ok".into(),
        },
        nats: NatsHealth { connected },
        event_log: EventLogHealth {
            sequence: app.commands.projection().sequence(),
        },
        writer: WriterHealth {
            instance: app.commands.instance().to_string(),
            projects: app.commands.leases().map(|l| l.held()).unwrap_or_default(),
        },
        caught_up,
        audit: app
            .audits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|a| AuditHealth {
                ok: a.failed.is_empty(),
                finished_at: rfc3339(a.finished_ms),
                sequence: a.sequence,
                checks: a.checks,
                failed: a.failed.clone(),
            }),
    }
}

#[OpenApi(tag = "Tag::System")]
impl SystemApi {
    /// Liveness: 200 while the process runs and reaches NATS (503 `degraded` while it
    /// does not: reads still work, writes do not). Never requires a token.
    #[oai(path = "/health", method = "get", operation_id = "getHealth")]
    async fn health(&self, app: Data<&Arc<AppState>>) -> HealthResponse {
        let health = health_now(&app).await;
        if health.nats.connected {
            HealthResponse::Ok(Json(health))
        } else {
            HealthResponse::Degraded(Json(health))
        }
    }

    /// Readiness, for load balancers and Kubernetes probes: 200 only once this instance's
    /// state has caught up with the end of the event log. Never requires a token.
    #[oai(path = "/ready", method = "get", operation_id = "getReadiness")]
    async fn ready(&self, app: Data<&Arc<AppState>>) -> HealthResponse {
        let health = health_now(&app).await;
        if health.caught_up {
            HealthResponse::Ok(Json(health))
        } else {
            HealthResponse::Degraded(Json(health))
        }
    }

    /// The state digest: of the live state, or with `at` (a sequence) or `asOf` (an
    /// RFC 3339 time) of the state as it was then, rebuilt from the nearest kept snapshot
    /// and the events up to that point; `sequence` is the point actually used.
    #[oai(path = "/api/state", method = "get", operation_id = "getState")]
    async fn state(
        &self,
        app: Data<&Arc<AppState>>,
        actor: Data<&Actor>,
        /// The state after the event at this sequence (or the last one before it).
        at: Query<Option<u64>>,
        /// The state after the last event recorded at or before this time.
        #[oai(name = "asOf")]
        as_of: Query<Option<String>>,
    ) -> Result<AtResponse<StateDigest>, ApiError> {
        let seen = app.seen(at.0, as_of.0.as_deref()).await?;
        let (sequence, digest) = app.read_seen(actor.0, &seen, |s| StateDigest {
            sequence: s.sequence,
            digest: s.digest(),
            projects: s.projects.len(),
            targets: s.projects.values().map(|p| p.targets.len()).sum(),
        });
        Ok(AtResponse::Ok(Json(digest), sequence))
    }
}
