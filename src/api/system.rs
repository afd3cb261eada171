//! `/health`, `/ready` and `/api/state`.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::{AppState, Tag};
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

    /// The state digest.
    #[oai(path = "/api/state", method = "get", operation_id = "getState")]
    async fn state(&self, app: Data<&Arc<AppState>>) -> Json<StateDigest> {
        Json(app.commands.projection().read(|s| StateDigest {
            sequence: s.sequence,
            digest: s.digest(),
            projects: s.projects.len(),
            targets: s.projects.values().map(|p| p.targets.len()).sum(),
        }))
    }
}
