//! The REST API: routes, authentication, error shapes and the OpenAPI spec.

pub mod agents;
pub mod at;
pub mod batch;
pub mod budget;
pub mod channels;
pub mod contract;
pub mod credentials;

pub mod error;
pub mod events;
pub mod names;
pub mod pagination;
pub mod stats;

pub mod output;
pub mod sse;
pub mod strict;
pub mod system;
pub mod targets;
pub mod tokens;
pub mod usage;
pub mod work;
pub mod ws;

use std::sync::Arc;

use poem::{Endpoint, EndpointExt, IntoResponse, Request, Route};
use poem_openapi::{OpenApiService, Tags};
use projections::State;

use crate::access::Access;

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
    /// Who may do what: API tokens, agents' NATS credentials.
    Access,
}

/// Who is calling: a token's id (`tok_...`), `token:<fingerprint>` for one of
/// `API_TOKENS`, `anonymous` without auth. Recorded as the actor of every event the
/// request causes.
#[derive(Clone, Debug)]
pub struct Actor {
    pub name: String,
    /// The request's `X-Request-Id`, recorded as the correlation id of what it causes.
    pub request_id: Option<String>,
    /// What it may do and see.
    pub access: Access,
}

impl Actor {
    fn new(name: String, access: Access) -> Self {
        Actor {
            name,
            request_id: None,
            access,
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

/// The state as one request may see it: without the projects outside its token's scope
/// (and Weft's own), so no handler can list, count or find them by mistake.
pub fn scoped<'a>(state: &'a State, access: &Access) -> std::borrow::Cow<'a, State> {
    let shown = |p: &str| access.sees(p) && !::events::access::is_reserved_project(p);
    if state.projects.keys().all(|p| shown(p)) {
        return std::borrow::Cow::Borrowed(state);
    }
    std::borrow::Cow::Owned(State {
        sequence: state.sequence,
        projects: state
            .projects
            .iter()
            .filter(|(p, _)| shown(p))
            .map(|(p, project)| (p.clone(), project.clone()))
            .collect(),
    })
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
    /// Whether requests need a token (API_TOKENS is set).
    pub authentication: bool,
}

impl AppState {
    /// The project a request means: the one it names, else the default (for a token that
    /// does not see it, its first project). One outside the token's scope does not exist
    /// for it.
    pub fn project(&self, actor: &Actor, requested: Option<&str>) -> Result<String, ApiError> {
        let project = match requested {
            // A token that does not see the default project has its first one instead.
            None => match &actor.access.projects {
                Some(mine) if !mine.contains(&self.default_project) => {
                    mine.iter().next().cloned().unwrap_or_default()
                }
                _ => self.default_project.clone(),
            },
            Some(p)
                if ::events::subject::is_valid_token(p)
                    && !::events::access::is_reserved_project(p) =>
            {
                p.to_string()
            }
            Some(_) => {
                return Err(ApiError::validation(
                    "projectId",
                    "must be 1-128 letters, digits, '-' or '_', not starting with '_'",
                ))
            }
        };
        if !actor.access.sees(&project) {
            return Err(ApiError::not_found(format!("Project {project} not found")));
        }
        Ok(project)
    }

    /// `read` on the live state as `actor` may see it.
    pub fn read<R>(&self, actor: &Actor, read: impl FnOnce(&State) -> R) -> R {
        self.commands
            .projection()
            .read(|s| read(&scoped(s, &actor.access)))
    }

    /// Finds a target by id or name in the named project; without one, in the default
    /// project, then by id in every project (ids are unique across projects).
    pub fn find_target(
        &self,
        actor: &Actor,
        requested: Option<&str>,
        key: &str,
    ) -> Result<(String, TargetView), ApiError> {
        self.find_target_seen(actor, &at::Seen::Live, requested, key)
            .map(|(_, found)| found)
    }

    /// [`Self::find_target`] in the state `seen` names, with that state's sequence.
    pub fn find_target_seen(
        &self,
        actor: &Actor,
        seen: &at::Seen,
        requested: Option<&str>,
        key: &str,
    ) -> Result<(u64, (String, TargetView)), ApiError> {
        // Without a project, the default one is looked in only if the token sees it (the
        // scoped state has no other).
        let project = match requested {
            Some(_) => self.project(actor, requested)?,
            None => self.default_project.clone(),
        };
        let (sequence, found) = self.read_seen(actor, seen, |s| {
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
        output::OutputApi,
        agents::AgentsApi,
        targets::TargetsApi,
        events::EventsApi,
        channels::ChannelsApi,
        usage::UsageApi,
        budget::BudgetApi,
        tokens::TokensApi,
        credentials::CredentialsApi,
    ),
    (),
>;

pub fn service() -> Service {
    OpenApiService::new(
        (
            system::SystemApi,
            stats::StatsApi,
            work::WorkApi,
            output::OutputApi,
            agents::AgentsApi,
            targets::TargetsApi,
            events::EventsApi,
            channels::ChannelsApi,
            usage::UsageApi,
            budget::BudgetApi,
            tokens::TokensApi,
            credentials::CredentialsApi,
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

/// Answered without a token: the dashboard's page, health, and the API's docs. `/metrics`
/// is not: its labels name projects.
fn is_open(path: &str) -> bool {
    !(path == "/api" || path.starts_with("/api/") || path == "/metrics")
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

/// Who the secret belongs to: one of `API_TOKENS` (admin of every project), or a token
/// created through the API, while it is neither revoked nor expired.
fn verify(app: &AppState, keys: &Keys, secret: &str, rejection: &str) -> Result<Actor, ApiError> {
    let digest = crate::access::digest(secret);
    if keys.api_tokens.contains(&digest) {
        return Ok(Actor::new(
            format!("token:{}", &digest[..8]),
            Access {
                rate_limited: keys.limit_api_tokens,
                ..Access::everything()
            },
        ));
    }
    let now = crate::time::now_ms();
    let found = app.commands.projection().read(|s| {
        s.project(::events::access::ACCESS_PROJECT)
            .and_then(|p| p.tokens.by_hash(&digest))
            .filter(|t| t.is_valid(now))
            .map(|t| (t.id.clone(), t.role, t.projects.clone()))
    });
    let (id, role, projects) = found.ok_or_else(|| unauthorized(rejection))?;
    Ok(Actor::new(
        id,
        Access {
            role,
            projects: projects.map(|p| p.into_iter().collect()),
            rate_limited: true,
        },
    ))
}

/// Checks the bearer token before anything else looks at the request, so a caller
/// without one learns nothing about validation rules. WebSocket and SSE clients (browsers)
/// cannot set headers: on `/api/ws` and the SSE streams (`/api/events/stream`,
/// `/api/work/{id}/output/stream`) the token may also come as `?token=` (or on `/api/ws`
/// as `Sec-WebSocket-Protocol: bearer, <token>`).
fn authenticate(app: &AppState, keys: &Keys, req: &Request) -> Result<Actor, ApiError> {
    let path = req.uri().path();
    let streams = path == "/api/ws" || (path.starts_with("/api/") && path.ends_with("/stream"));
    if !streams {
        return verify(
            app,
            keys,
            &bearer_header(req)?,
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
        Some(token) => verify(app, keys, &token, "Invalid token"),
        None if req.headers().contains_key("authorization") => {
            verify(app, keys, &bearer_header(req)?, "Invalid token")
        }
        None => Err(unauthorized("No token provided")),
    }
}

/// What the API checks tokens against.
pub struct Keys {
    /// Digests of `API_TOKENS`; empty: authentication is off.
    pub api_tokens: Vec<String>,
    /// Whether `API_TOKENS` count against the rate limit too.
    pub limit_api_tokens: bool,
}

/// Requests per second and burst of each rate-limited token; `None`: no limit.
pub type RateLimit = Option<(u32, u32)>;

type Limiter = governor::DefaultKeyedRateLimiter<String>;

/// `Err` with the 429 to answer when the token is over its rate.
fn within_rate(limiter: Option<&Limiter>, actor: &Actor) -> Result<(), Box<poem::Response>> {
    let Some(limiter) = limiter.filter(|_| actor.access.rate_limited) else {
        return Ok(());
    };
    limiter.check_key(&actor.name).map_err(|not_until| {
        use governor::clock::Clock;
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = poem::IntoResponse::into_response(ApiError::too_many_requests(format!(
            "this token is over its request rate; retry in {seconds} s"
        )));
        if let Ok(value) = seconds.max(1).to_string().parse() {
            response
                .headers_mut()
                .insert(poem::http::header::RETRY_AFTER, value);
        }
        Box::new(response)
    })
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

pub fn app(
    state: Arc<AppState>,
    keys: Keys,
    rate_limit: RateLimit,
    max_body_bytes: usize,
) -> impl Endpoint {
    let service = service();
    let keys = Arc::new(keys);
    let limiter: Option<Arc<Limiter>> = rate_limit.and_then(|(per_second, burst)| {
        let quota = governor::Quota::per_second(std::num::NonZeroU32::new(per_second)?)
            .allow_burst(std::num::NonZeroU32::new(burst.max(1))?);
        Some(Arc::new(governor::RateLimiter::keyed(quota)))
    });
    let app_state = state.clone();
    Route::new()
        .nest("/api/docs", docs(&service))
        .at(
            "/api/openapi.json",
            poem::endpoint::make_sync(|_| poem::web::Json(spec().clone())),
        )
        .at("/api/ws", poem::get(ws::upgrade))
        .at("/api/events/stream", poem::get(sse::stream))
        .at("/api/work/:id/output/stream", poem::get(output::stream))
        .at("/metrics", poem::get(stats::metrics))
        .at("/dashboard", poem::get(dashboard))
        .nest("/", service)
        .data(state)
        .around(move |endpoint, mut req| {
            let (keys, limiter, app) = (keys.clone(), limiter.clone(), app_state.clone());
            async move {
                // The API service nested at `/` shadows an exact `/` route in poem's router,
                // so the dashboard's home is answered here.
                if req.uri().path() == "/" && req.method() == poem::http::Method::GET {
                    return Ok(poem::web::Html(include_str!("dashboard.html")).into_response());
                }
                limit_body(&mut req, max_body_bytes).await?;
                let mut actor = if keys.api_tokens.is_empty() || is_open(req.uri().path()) {
                    Actor::new("anonymous".into(), Access::everything())
                } else {
                    let actor = match authenticate(&app, &keys, &req) {
                        Ok(actor) => actor,
                        Err(e) => return Err(e.into()),
                    };
                    if let Err(too_many) = within_rate(limiter.as_deref(), &actor) {
                        return Ok(*too_many);
                    }
                    let needed = crate::access::required_role(req.method(), req.uri().path());
                    if !actor.access.may(needed) {
                        return Err(ApiError::forbidden(format!(
                            "{} needs the {} role; this token is {}",
                            req.uri().path(),
                            needed.as_str(),
                            actor.access.role.as_str()
                        ))
                        .into());
                    }
                    actor
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
        for closed in [
            "/api",
            "/api/targets",
            "/api/events",
            "/api/docsx",
            "/metrics",
        ] {
            assert!(!is_open(closed), "{closed}");
        }
    }
}
