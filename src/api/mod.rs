//! The REST API: routes, authentication, error shapes and the OpenAPI spec.

pub mod agents;
pub mod at;
pub mod batch;
pub mod budget;
pub mod channels;
pub mod contract;

pub mod error;
pub mod events;
pub mod names;
pub mod pagination;
pub mod stats;

pub mod strict;
pub mod system;
pub mod targets;
pub mod usage;
pub mod work;
pub mod ws;

use std::sync::Arc;

use poem::{Endpoint, EndpointExt, IntoResponse, Request, Route};
use poem_openapi::{OpenApiService, Tags};
use sha2::{Digest, Sha256};

use crate::commands::{CommandContext, Commands};
use crate::store::EventStore;
use error::{to_json_response, ApiError};
use targets::TargetView;

#[derive(Tags)]
pub enum Tag {
    /// Health and state.
    System,
    /// Spin-up targets: where and how Weft starts agents.
    Targets,
    /// Work items: submit, follow, cancel, retry.
    Work,
    /// Agents: Weft's own and Warp's.
    Agents,
    /// The audit log.
    Events,
}

/// Who is calling: `token:<fingerprint>` for a bearer token, `anonymous` without auth.
/// Recorded as the actor of every event the request causes.
#[derive(Clone, Debug)]
pub struct Actor {
    pub name: String,
    /// The request's `X-Request-Id`, recorded as the correlation id of what it causes.
    pub request_id: Option<String>,
}

impl Actor {
    fn named(name: String) -> Self {
        Actor {
            name,
            request_id: None,
        }
    }

    pub fn context(&self) -> CommandContext {
        CommandContext {
            actor: self.name.clone(),
            correlation_id: self.request_id.clone(),
            causation_id: None,
        }
    }
}

/// Live view bookkeeping.
pub struct LiveState {
    pub connections: std::sync::atomic::AtomicUsize,
    /// Events in the live view's shape, for every WebSocket session.
    pub feed: tokio::sync::broadcast::Sender<Arc<ws::LiveEvent>>,
    /// How often `stats` subscribers get a `stats` message.
    pub stats_interval: std::time::Duration,
}

pub struct AppState {
    pub live: LiveState,
    pub commands: Arc<Commands>,
    pub coordinator: Arc<crate::coordinator::Coordinator>,
    pub registry: Arc<crate::registry::WarpRegistry>,
    pub store: EventStore,
    /// The state at past points of the log, for `at` and `asOf`.
    pub past: crate::past::Past,
    /// The last background verification of the log.
    pub audits: crate::audit::Audits,
    pub client: async_nats::Client,
    pub default_project: String,
}

impl AppState {
    /// The project a request means: the one it names, else the default.
    pub fn project(&self, requested: Option<&str>) -> Result<String, ApiError> {
        match requested {
            None => Ok(self.default_project.clone()),
            Some(p) if ::events::subject::is_valid_token(p) => Ok(p.to_string()),
            Some(_) => Err(ApiError::validation(
                "projectId",
                "must be 1-128 letters, digits, '-' or '_'",
            )),
        }
    }

    /// Finds a target by id or name in the named project; without one, in the default
    /// project, then by id in every project (ids are unique across projects).
    pub fn find_target(
        &self,
        requested: Option<&str>,
        key: &str,
    ) -> Result<(String, TargetView), ApiError> {
        self.find_target_seen(&at::Seen::Live, requested, key)
            .map(|(_, found)| found)
    }

    /// [`Self::find_target`] in the state `seen` names, with that state's sequence.
    pub fn find_target_seen(
        &self,
        seen: &at::Seen,
        requested: Option<&str>,
        key: &str,
    ) -> Result<(u64, (String, TargetView)), ApiError> {
        let project = self.project(requested)?;
        let (sequence, found) = self.read_seen(seen, |s| {
            let view = |p: &str| {
                s.project(p)
                    .and_then(|proj| proj.targets.get_by_id_or_name(key))
                    .map(|t| (p.to_string(), TargetView::new(p, t)))
            };
            view(&project).or_else(|| {
                if requested.is_some() {
                    return None;
                }
                s.projects.iter().find_map(|(name, proj)| {
                    proj.targets
                        .get(key)
                        .map(|t| (name.clone(), TargetView::new(name, t)))
                })
            })
        });
        found
            .map(|found| (sequence, found))
            .ok_or_else(|| ApiError::not_found(format!("Target with ID or name {key} not found")))
    }
}

pub type Service = OpenApiService<
    (
        system::SystemApi,
        stats::StatsApi,
        work::WorkApi,
        agents::AgentsApi,
        targets::TargetsApi,
        events::EventsApi,
        channels::ChannelsApi,
        usage::UsageApi,
        budget::BudgetApi,
    ),
    (),
>;

pub fn service() -> Service {
    OpenApiService::new(
        (
            system::SystemApi,
            stats::StatsApi,
            work::WorkApi,
            agents::AgentsApi,
            targets::TargetsApi,
            events::EventsApi,
            channels::ChannelsApi,
            usage::UsageApi,
            budget::BudgetApi,
        ),
        "Weft",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Coordinator for fleets of AI coding agents. Every change is an event in a NATS \
         JetStream log. When API_TOKENS is set, every /api route except /api/docs and \
         /api/openapi.json requires `Authorization: Bearer <token>`. Errors are \
         `{error, message, details?}`.",
    )
}

/// The spec with its refinements ([`contract`]), as served at `/api/openapi.json`.
pub fn spec() -> &'static serde_json::Value {
    static SPEC: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(|| {
        let mut spec: serde_json::Value =
            serde_json::from_str(&service().spec()).unwrap_or_default();
        contract::refine(&mut spec);
        spec
    });
    &SPEC
}

/// The spec as YAML: what `weft openapi` prints and `openapi.yaml` holds.
pub fn spec_yaml() -> String {
    serde_yaml::to_string(spec()).unwrap_or_default()
}

/// Swagger UI showing the refined spec.
fn docs(service: &Service) -> poem::Route {
    let html = service
        .swagger_ui_html()
        .replace(&service.spec(), &spec().to_string());
    poem::Route::new().at(
        "/",
        poem::endpoint::make_sync(move |_| poem::web::Html(html.clone())),
    )
}

fn fingerprint(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn is_open(path: &str) -> bool {
    !(path == "/api" || path.starts_with("/api/"))
        || path == "/api/openapi.json"
        || path == "/api/docs"
        || path.starts_with("/api/docs/")
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::Unauthorized(poem_openapi::payload::Json(error::ErrorBody {
        error: "Unauthorized".into(),
        message: message.into(),
        details: None,
    }))
}

/// The token of an `Authorization: Bearer <token>` header (scheme in any case).
fn bearer_header(req: &Request) -> Result<String, ApiError> {
    let header = req
        .headers()
        .get("authorization")
        .ok_or_else(|| unauthorized("Missing Authorization header"))?;
    let bad_format =
        || unauthorized("Invalid Authorization header format. Expected: Bearer <token>");
    let value = header.to_str().map_err(|_| bad_format())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(bad_format)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(bad_format());
    }
    Ok(token.trim().to_string())
}

/// Comparing digests rather than the tokens keeps the comparison's timing independent of
/// how much of a guessed token is right.
fn verify(token: &str, token_digests: &[String], rejection: &str) -> Result<Actor, ApiError> {
    let digest = fingerprint(token.trim());
    if token_digests.contains(&digest) {
        Ok(Actor::named(format!("token:{}", &digest[..8])))
    } else {
        Err(unauthorized(rejection))
    }
}

/// Checks the bearer token before anything else looks at the request, so a caller
/// without one learns nothing about validation rules. WebSocket clients (browsers)
/// cannot set headers: on `/api/ws` the token may also come as `?token=` or as
/// `Sec-WebSocket-Protocol: bearer, <token>`.
fn authenticate(req: &Request, token_digests: &[String]) -> Result<Actor, ApiError> {
    if req.uri().path() != "/api/ws" {
        return verify(
            &bearer_header(req)?,
            token_digests,
            "Invalid authentication token",
        );
    }
    let from_query = req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    let from_protocol = || {
        let offered: Vec<String> = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').map(|p| p.trim().to_string()).collect())
            .unwrap_or_default();
        let at = offered
            .iter()
            .position(|p| p.eq_ignore_ascii_case("bearer"))?;
        offered.get(at + 1).cloned()
    };
    match from_query.or_else(from_protocol) {
        Some(token) => verify(&token, token_digests, "Invalid token"),
        None if req.headers().contains_key("authorization") => {
            verify(&bearer_header(req)?, token_digests, "Invalid token")
        }
        None => Err(unauthorized("No token provided")),
    }
}

/// How much of a body that is too large is read (and dropped) before the 413 is sent, and
/// for how long: a client that does not wait for `100 Continue` is still sending, and most
/// only read the answer once they have sent everything. Beyond these the connection closes.
const DRAIN_BYTES: usize = 64 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads and drops the rest of a body, within [`DRAIN_BYTES`] and [`DRAIN_TIME`].
async fn drain(body: poem::Body, mut read: usize) {
    use futures::StreamExt;
    let mut stream = body.into_bytes_stream();
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    while read <= DRAIN_BYTES {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => read += chunk.len(),
            _ => return,
        }
    }
}

/// Refuses bodies over `max` bytes with 413, whether they announce their length or not,
/// after reading what the client is still sending so that it can read the answer.
async fn limit_body(req: &mut Request, max: usize) -> Result<(), poem::Error> {
    use futures::StreamExt;
    let too_large = || {
        poem::Error::from_string(
            format!("the request body exceeds {max} bytes"),
            poem::http::StatusCode::PAYLOAD_TOO_LARGE,
        )
    };
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match declared {
        Some(length) if length > max => {
            if length <= DRAIN_BYTES {
                drain(req.take_body(), 0).await;
            }
            Err(too_large())
        }
        Some(_) => Ok(()),
        None if req
            .headers()
            .contains_key(poem::http::header::TRANSFER_ENCODING) =>
        {
            let mut stream = req.take_body().into_bytes_stream();
            let mut bytes = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk =
                    chunk.map_err(|e| poem::Error::new(e, poem::http::StatusCode::BAD_REQUEST))?;
                bytes.extend_from_slice(&chunk);
                if bytes.len() > max {
                    drain(poem::Body::from_bytes_stream(stream), bytes.len()).await;
                    return Err(too_large());
                }
            }
            req.set_body(bytes);
            Ok(())
        }
        None => Ok(()),
    }
}

/// The dashboard: one static page that talks to the REST and WebSocket API.
#[poem::handler]
fn dashboard() -> poem::web::Html<&'static str> {
    poem::web::Html(include_str!("dashboard.html"))
}

pub fn app(state: Arc<AppState>, tokens: &[String], max_body_bytes: usize) -> impl Endpoint {
    let service = service();
    let token_digests: Arc<Vec<String>> = Arc::new(tokens.iter().map(|t| fingerprint(t)).collect());
    Route::new()
        .nest("/api/docs", docs(&service))
        .at(
            "/api/openapi.json",
            poem::endpoint::make_sync(|_| poem::web::Json(spec().clone())),
        )
        .at("/api/ws", poem::get(ws::upgrade))
        .at("/metrics", poem::get(stats::metrics))
        .at("/dashboard", poem::get(dashboard))
        .nest("/", service)
        .data(state)
        .around(move |endpoint, mut req| {
            let token_digests = token_digests.clone();
            async move {
                // The API service nested at `/` shadows an exact `/` route in poem's router,
                // so the dashboard's home is answered here.
                if req.uri().path() == "/" && req.method() == poem::http::Method::GET {
                    return Ok(poem::web::Html(include_str!("dashboard.html")).into_response());
                }
                limit_body(&mut req, max_body_bytes).await?;
                let mut actor = if token_digests.is_empty() || is_open(req.uri().path()) {
                    Actor::named("anonymous".into())
                } else {
                    match authenticate(&req, &token_digests) {
                        Ok(actor) => actor,
                        Err(e) => return Err(e.into()),
                    }
                };
                actor.request_id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty() && v.len() <= 128)
                    .map(String::from);
                req.extensions_mut().insert(actor);
                let path = req.uri().path().to_string();
                match endpoint.call(req).await {
                    Ok(response) => Ok(response.into_response()),
                    // RFC 9110: a 405 names the methods the resource has.
                    Err(e) if e.status() == poem::http::StatusCode::METHOD_NOT_ALLOWED => {
                        let mut response = to_json_response(e);
                        if let Ok(allow) = contract::allowed_methods(&path).join(", ").parse() {
                            response
                                .headers_mut()
                                .insert(poem::http::header::ALLOW, allow);
                        }
                        Ok(response)
                    }
                    Err(e) => Err(e),
                }
            }
        })
        .catch_all_error(|e| async move { to_json_response(e) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_and_health_are_open_everything_else_under_api_is_not() {
        for open in [
            "/health",
            "/api/openapi.json",
            "/api/docs",
            "/api/docs/index.html",
            "/apix",
        ] {
            assert!(is_open(open), "{open}");
        }
        for closed in ["/api", "/api/targets", "/api/events", "/api/docsx"] {
            assert!(!is_open(closed), "{closed}");
        }
    }
}
