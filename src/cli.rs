//! What the command-line clients (`shuttle`, `weft events`) share: calling the REST API,
//! exit codes scripts can rely on, and printing the event log.

use std::time::Duration;

use serde_json::Value;

/// Restores the default SIGPIPE action, so `shuttle ... | head` ends quietly like other
/// Unix tools instead of panicking on a closed pipe (Rust ignores SIGPIPE by default).
pub fn exit_quietly_on_closed_pipe() {
    // SAFETY: setting a signal disposition before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Failures of a command, each with its exit code.
#[derive(Debug)]
pub enum CliError {
    /// Bad usage or configuration: exit 2.
    Usage(String),
    /// The API refused the request (4xx), or the work failed: exit 1.
    Refused(String),
    /// Weft could not be reached, or failed (5xx): exit 3.
    Unreachable(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Refused(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Unreachable(_) => 3,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Refused(m) | CliError::Unreachable(m) => f.write_str(m),
        }
    }
}

/// Weft's REST API, with an optional bearer token.
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Result<Self, CliError> {
        crate::mechanism::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| CliError::Usage(e.to_string()))?;
        Ok(Api {
            base: base.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            http,
        })
    }

    /// Sends a request; the API's error message becomes the error.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            CliError::Unreachable(format!("cannot reach Weft at {}: {e}", self.base))
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let message = body["message"]
            .as_str()
            .or(body["error"].as_str())
            .unwrap_or(&text)
            .to_string();
        let message = format!("{} ({})", message, status.as_u16());
        Err(if status.is_server_error() {
            CliError::Unreachable(message)
        } else {
            CliError::Refused(message)
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call(reqwest::Method::GET, path, None).await
    }
}

/// Which events to print.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    pub project: Option<String>,
    pub aggregate: Option<String>,
    pub aggregate_id: Option<String>,
    pub event_type: Option<String>,
    pub after: u64,
    pub follow: bool,
    pub json: bool,
}

/// Prints the event log, oldest first; with `follow`, keeps printing new events.
pub async fn print_events(api: &Api, query: &EventQuery) -> Result<(), CliError> {
    let mut after = query.after;
    if !query.json {
        println!(
            "{:>8}  {:<24}  {:<12}  {:<22}  {:<36}  {:<16}  DATA",
            "SEQ", "TIME", "PROJECT", "TYPE", "AGGREGATE", "ACTOR"
        );
    }
    loop {
        let mut path = format!("/api/events?after={after}&limit=1000");
        for (name, value) in [
            ("projectId", &query.project),
            ("aggregate", &query.aggregate),
            ("aggregateId", &query.aggregate_id),
            ("type", &query.event_type),
        ] {
            if let Some(v) = value {
                path.push_str(&format!(
                    "&{name}={}",
                    url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                ));
            }
        }
        let body = api.get(&path).await?;
        for event in body["events"].as_array().into_iter().flatten() {
            if query.json {
                println!("{event}");
            } else {
                let text = |k: &str| event[k].as_str().unwrap_or("").to_string();
                let mut data = event["data"].to_string();
                if data.len() > 120 {
                    let cut = (0..=117)
                        .rev()
                        .find(|i| data.is_char_boundary(*i))
                        .unwrap_or(0);
                    data.truncate(cut);
                    data.push_str("...");
                }
                println!(
                    "{:>8}  {:<24}  {:<12}  {:<22}  {:<36}  {:<16}  {data}",
                    event["sequence"],
                    text("time"),
                    text("projectId"),
                    text("type"),
                    format!("{}/{}", text("aggregate"), text("aggregateId")),
                    text("actor"),
                );
            }
        }
        after = body["nextAfter"].as_u64().unwrap_or(after);
        if body["hasMore"].as_bool() == Some(true) {
            continue;
        }
        if !query.follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
