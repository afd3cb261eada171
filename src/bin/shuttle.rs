//! `shuttle`: drive a Weft fleet from the terminal, over Weft's REST and WebSocket API.
//!
//! Exit codes: 0 success; 1 the API refused the request, or the work failed; 2 bad usage
//! or configuration; 3 Weft unreachable or failing.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use weft::cli::{print_events, Api, CliError, EventQuery};

/// Drive a Weft fleet: agents, work, spin-up targets, stats and the event log.
#[derive(Parser)]
#[command(name = "shuttle", version, about)]
struct Cli {
    /// Weft's API (overrides WEFT_API_URL and the config file's apiUrl).
    #[arg(long, global = true)]
    api_url: Option<String>,
    /// Bearer token (overrides WEFT_API_TOKEN and the config file's token).
    #[arg(long, global = true)]
    token: Option<String>,
    /// Project (overrides the config file's projectId).
    #[arg(long, short = 'p', global = true)]
    project: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read and write ~/.loominal/config.json.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// List, inspect and shut down agents.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Submit, follow, list and cancel work.
    #[command(subcommand)]
    Work(WorkCommand),
    /// Manage spin-up targets.
    #[command(subcommand)]
    Targets(Box<TargetsCommand>),
    /// Counts over every project.
    Stats,
    /// The projects Weft knows.
    Projects,
    /// The event log (who changed what, when).
    Events {
        #[arg(long = "type")]
        event_type: Option<String>,
        #[arg(long)]
        aggregate: Option<String>,
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Keep printing new events.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// A live view of the fleet: events as they happen, with counts.
    Watch,
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Set a key: apiUrl, token, projectId, defaultBoundary, outputFormat (table|json).
    Set { key: String, value: String },
    /// Print a key's value.
    Get { key: String },
    /// Print every key.
    List,
}

#[derive(Subcommand)]
enum AgentsCommand {
    List {
        #[arg(long = "type")]
        agent_type: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        capability: Option<String>,
    },
    Show {
        guid: String,
    },
    /// Ask an agent to shut down (gracefully unless --force).
    Shutdown {
        guid: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum WorkCommand {
    Submit {
        /// What to do.
        description: String,
        #[arg(long, short = 'c')]
        capability: String,
        /// Default: the config file's defaultBoundary, else personal.
        #[arg(long, short = 'b')]
        boundary: Option<String>,
        #[arg(long)]
        priority: Option<u8>,
        #[arg(long)]
        task_id: Option<String>,
        #[arg(long)]
        preferred_agent_type: Option<String>,
        #[arg(long)]
        required_agent_type: Option<String>,
        /// Follow the item live until it ends; exit 1 unless it completes.
        #[arg(long)]
        wait: bool,
    },
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        boundary: Option<String>,
        #[arg(long)]
        capability: Option<String>,
    },
    Show {
        id: String,
    },
    Cancel {
        id: String,
    },
    /// Queue a dead-lettered or failed item again.
    Retry {
        id: String,
    },
}

#[derive(clap::Args, Default)]
struct TargetSettings {
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    port: Option<u16>,
    #[arg(long)]
    user: Option<String>,
    /// Private key file (ssh).
    #[arg(long)]
    key: Option<String>,
    #[arg(long)]
    command: Option<String>,
    #[arg(long)]
    namespace: Option<String>,
    #[arg(long)]
    image: Option<String>,
    #[arg(long)]
    service_account: Option<String>,
    #[arg(long)]
    url: Option<String>,
    #[arg(long)]
    repo: Option<String>,
    #[arg(long)]
    workflow: Option<String>,
}

impl TargetSettings {
    /// The flat `config` the API accepts, from the flags given.
    fn config(&self) -> serde_json::Map<String, Value> {
        let mut config = serde_json::Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                config.insert(k.into(), v);
            }
        };
        put("host", self.host.clone().map(Value::from));
        put("port", self.port.map(Value::from));
        put("user", self.user.clone().map(Value::from));
        put("privateKeyPath", self.key.clone().map(Value::from));
        put("command", self.command.clone().map(Value::from));
        put("namespace", self.namespace.clone().map(Value::from));
        put("image", self.image.clone().map(Value::from));
        put(
            "serviceAccount",
            self.service_account.clone().map(Value::from),
        );
        put("url", self.url.clone().map(Value::from));
        put("repo", self.repo.clone().map(Value::from));
        put("workflow", self.workflow.clone().map(Value::from));
        config
    }
}

#[derive(Subcommand)]
enum TargetsCommand {
    Add {
        #[arg(long)]
        name: String,
        /// Agent type (claude-code, copilot-cli, ...).
        #[arg(long = "type")]
        agent_type: String,
        /// local, ssh, kubernetes, github-actions or webhook.
        #[arg(long)]
        mechanism: String,
        #[arg(long, value_delimiter = ',', required = true)]
        capabilities: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        boundaries: Option<Vec<String>>,
        #[arg(long)]
        max_agents: Option<u32>,
        #[command(flatten)]
        settings: TargetSettings,
    },
    List,
    Show {
        id: String,
    },
    Update {
        id: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long, value_delimiter = ',')]
        capabilities: Option<Vec<String>>,
        #[arg(long, value_delimiter = ',')]
        boundaries: Option<Vec<String>>,
        #[command(flatten)]
        settings: TargetSettings,
    },
    Remove {
        id: String,
    },
    Enable {
        id: String,
    },
    Disable {
        id: String,
    },
    /// Run the target's health check.
    Test {
        id: String,
    },
    /// Start an agent there now.
    SpinUp {
        id: String,
    },
}

const CONFIG_KEYS: [&str; 5] = [
    "apiUrl",
    "token",
    "projectId",
    "defaultBoundary",
    "outputFormat",
];

fn config_path() -> Result<PathBuf, CliError> {
    let home = std::env::var_os("HOME").ok_or_else(|| CliError::Usage("HOME is not set".into()))?;
    Ok(PathBuf::from(home).join(".loominal").join("config.json"))
}

/// The config file's keys; a missing file is empty, an unreadable one an error.
fn read_config() -> Result<BTreeMap<String, String>, CliError> {
    let path = config_path()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let value: Value = serde_json::from_str(&text).map_err(|e| {
                CliError::Usage(format!(
                    "config file {} is not valid JSON: {e}",
                    path.display()
                ))
            })?;
            let object = value.as_object().ok_or_else(|| {
                CliError::Usage(format!(
                    "config file {} must hold a JSON object",
                    path.display()
                ))
            })?;
            Ok(object
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(CliError::Usage(format!(
            "cannot read config file {}: {e}",
            path.display()
        ))),
    }
}

fn write_config(config: &BTreeMap<String, String>) -> Result<(), CliError> {
    let path = config_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::Usage(format!("cannot create {}: {e}", dir.display())))?;
    }
    let text = serde_json::to_string_pretty(config).unwrap_or_default();
    std::fs::write(&path, text + "\n")
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))
}

struct Context {
    api: Api,
    project: Option<String>,
    json: bool,
    default_boundary: String,
}

fn context(cli: &Cli) -> Result<Context, CliError> {
    let file = read_config()?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    // Flag over environment over file.
    let api_url = cli
        .api_url
        .clone()
        .or_else(|| env("WEFT_API_URL"))
        .or_else(|| file.get("apiUrl").cloned())
        .unwrap_or_else(|| "http://127.0.0.1:3000".into());
    let token = cli
        .token
        .clone()
        .or_else(|| env("WEFT_API_TOKEN"))
        .or_else(|| file.get("token").cloned());
    let project = cli
        .project
        .clone()
        .or_else(|| file.get("projectId").cloned());
    let json = cli.json || file.get("outputFormat").is_some_and(|f| f == "json");
    Ok(Context {
        api: Api::new(&api_url, token)?,
        project,
        json,
        default_boundary: file
            .get("defaultBoundary")
            .cloned()
            .unwrap_or_else(|| "personal".into()),
    })
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let given: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| {
            v.as_ref().map(|v| {
                format!(
                    "{k}={}",
                    url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                )
            })
        })
        .collect();
    if given.is_empty() {
        String::new()
    } else {
        format!("?{}", given.join("&"))
    }
}

fn enc(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// Prints rows as aligned columns.
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(headers.iter().map(|h| h.to_string()).collect()));
    for row in rows {
        println!("{}", line(row));
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(a) => a.iter().map(s).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn print_value(
    ctx: &Context,
    value: &Value,
    headers: &[&str],
    fields: &[&str],
    list: Option<&str>,
) {
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
        return;
    }
    let rows: Vec<Vec<String>> = match list {
        Some(key) => value[key]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|item| fields.iter().map(|f| s(&item[*f])).collect())
            .collect(),
        None => vec![fields.iter().map(|f| s(&value[*f])).collect()],
    };
    table(headers, rows);
}

fn print_message(ctx: &Context, value: &Value) {
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else if let Some(m) = value["message"].as_str() {
        println!("{m}");
    }
}

const WORK_HEADERS: [&str; 7] = [
    "ID",
    "STATUS",
    "PRIORITY",
    "CAPABILITY",
    "BOUNDARY",
    "AGENT",
    "DESCRIPTION",
];
const WORK_FIELDS: [&str; 7] = [
    "id",
    "status",
    "priority",
    "capability",
    "boundary",
    "assignedTo",
    "description",
];
const AGENT_HEADERS: [&str; 7] = [
    "GUID",
    "TYPE",
    "STATUS",
    "TASKS",
    "CAPABILITIES",
    "BOUNDARIES",
    "SOURCE",
];
const AGENT_FIELDS: [&str; 7] = [
    "guid",
    "agentType",
    "status",
    "currentTaskCount",
    "capabilities",
    "boundaries",
    "source",
];
const TARGET_HEADERS: [&str; 7] = [
    "ID",
    "NAME",
    "MECHANISM",
    "TYPE",
    "STATUS",
    "HEALTH",
    "USED",
];
const TARGET_FIELDS: [&str; 7] = [
    "id",
    "name",
    "mechanism",
    "agentType",
    "status",
    "healthStatus",
    "useCount",
];

async fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "shuttle",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    if let Command::Config(c) = &cli.command {
        return config(c);
    }
    let ctx = context(&cli)?;
    let p = || query(&[("projectId", ctx.project.clone())]);
    match cli.command {
        Command::Config(_) | Command::Completions { .. } => Ok(()),
        Command::Stats => {
            let stats = ctx.api.get("/api/stats").await?;
            if ctx.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&stats).unwrap_or_default()
                );
            } else {
                let t = &stats["totals"];
                table(
                    &[
                        "PROJECTS",
                        "AGENTS",
                        "PENDING",
                        "ACTIVE",
                        "COMPLETED",
                        "FAILED",
                        "TARGETS",
                    ],
                    vec![vec![
                        s(&stats["totalProjects"]),
                        s(&t["agents"]),
                        s(&t["pendingWork"]),
                        s(&t["activeWork"]),
                        s(&t["completedWork"]),
                        s(&t["failedWork"]),
                        s(&t["targets"]),
                    ]],
                );
            }
            Ok(())
        }
        Command::Projects => {
            let projects = ctx.api.get("/api/stats/projects").await?;
            if ctx.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&projects).unwrap_or_default()
                );
            } else {
                table(
                    &["PROJECT"],
                    projects["projects"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| vec![s(p)])
                        .collect(),
                );
            }
            Ok(())
        }
        Command::Events {
            event_type,
            aggregate,
            after,
            follow,
        } => {
            let q = EventQuery {
                project: ctx.project.clone(),
                aggregate,
                aggregate_id: None,
                event_type,
                after,
                follow,
                json: ctx.json,
            };
            print_events(&ctx.api, &q).await
        }
        Command::Watch => watch(&ctx).await,
        Command::Agents(AgentsCommand::List {
            agent_type,
            status,
            capability,
        }) => {
            let list = ctx
                .api
                .get(&format!(
                    "/api/agents{}",
                    query(&[
                        ("type", agent_type),
                        ("status", status),
                        ("capability", capability),
                        ("projectId", ctx.project.clone()),
                        ("limit", Some("100".into()))
                    ])
                ))
                .await?;
            print_value(&ctx, &list, &AGENT_HEADERS, &AGENT_FIELDS, Some("agents"));
            Ok(())
        }
        Command::Agents(AgentsCommand::Show { guid }) => {
            let agent = ctx.api.get(&format!("/api/agents/{}", enc(&guid))).await?;
            print_value(&ctx, &agent, &AGENT_HEADERS, &AGENT_FIELDS, None);
            Ok(())
        }
        Command::Agents(AgentsCommand::Shutdown { guid, force }) => {
            let reply = ctx
                .api
                .call(
                    Method::POST,
                    &format!("/api/agents/{}/shutdown", enc(&guid)),
                    Some(&json!({"graceful": !force})),
                )
                .await?;
            print_message(&ctx, &reply);
            Ok(())
        }
        Command::Work(WorkCommand::Submit {
            description,
            capability,
            boundary,
            priority,
            task_id,
            preferred_agent_type,
            required_agent_type,
            wait,
        }) => {
            let task_id = task_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let mut body = json!({
                "taskId": task_id, "description": description, "capability": capability,
                "boundary": boundary.unwrap_or(ctx.default_boundary.clone()),
            });
            for (k, v) in [
                ("priority", priority.map(Value::from)),
                ("preferredAgentType", preferred_agent_type.map(Value::from)),
                ("requiredAgentType", required_agent_type.map(Value::from)),
                ("projectId", ctx.project.clone().map(Value::from)),
            ] {
                if let Some(v) = v {
                    body[k] = v;
                }
            }
            // Listen before submitting, so not even a fast item is missed.
            let follower = if wait {
                Some(follow_task(&ctx, &task_id).await?)
            } else {
                None
            };
            let created = ctx.api.call(Method::POST, "/api/work", Some(&body)).await?;
            if ctx.json && follower.is_none() {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&created).unwrap_or_default()
                );
            } else if !ctx.json {
                println!(
                    "submitted {} (task {task_id}), routed to {}",
                    s(&created["id"]),
                    s(&created["targetAgentType"])
                );
            }
            match follower {
                None => Ok(()),
                Some(socket) => wait_for(&ctx, socket, s(&created["id"])).await,
            }
        }
        Command::Work(WorkCommand::List {
            status,
            boundary,
            capability,
        }) => {
            let list = ctx
                .api
                .get(&format!(
                    "/api/work{}",
                    query(&[
                        ("status", status),
                        ("boundary", boundary),
                        ("capability", capability),
                        ("projectId", ctx.project.clone()),
                        ("limit", Some("100".into()))
                    ])
                ))
                .await?;
            print_value(&ctx, &list, &WORK_HEADERS, &WORK_FIELDS, Some("workItems"));
            Ok(())
        }
        Command::Work(WorkCommand::Show { id }) => {
            let item = ctx
                .api
                .get(&format!("/api/work/{}{}", enc(&id), p()))
                .await?;
            print_value(&ctx, &item, &WORK_HEADERS, &WORK_FIELDS, None);
            Ok(())
        }
        Command::Work(WorkCommand::Cancel { id }) => {
            let reply = ctx
                .api
                .call(
                    Method::POST,
                    &format!("/api/work/{}/cancel{}", enc(&id), p()),
                    None,
                )
                .await?;
            print_message(&ctx, &reply);
            Ok(())
        }
        Command::Work(WorkCommand::Retry { id }) => {
            let reply = ctx
                .api
                .call(
                    Method::POST,
                    &format!("/api/work/{}/retry{}", enc(&id), p()),
                    None,
                )
                .await?;
            print_message(&ctx, &reply);
            Ok(())
        }
        Command::Targets(command) => targets(&ctx, *command).await,
    }
}

fn config(command: &ConfigCommand) -> Result<(), CliError> {
    let mut config = read_config()?;
    match command {
        ConfigCommand::Set { key, value } => {
            if !CONFIG_KEYS.contains(&key.as_str()) {
                return Err(CliError::Usage(format!(
                    "unknown key {key}; keys: {}",
                    CONFIG_KEYS.join(", ")
                )));
            }
            if key == "outputFormat" && !["table", "json"].contains(&value.as_str()) {
                return Err(CliError::Usage("outputFormat is table or json".into()));
            }
            config.insert(key.clone(), value.clone());
            write_config(&config)
        }
        ConfigCommand::Get { key } => match config.get(key) {
            Some(v) => {
                println!("{v}");
                Ok(())
            }
            None => Err(CliError::Usage(format!("{key} is not set"))),
        },
        ConfigCommand::List => {
            for (k, v) in &config {
                let shown = if k == "token" {
                    "********".to_string()
                } else {
                    v.clone()
                };
                println!("{k}={shown}");
            }
            Ok(())
        }
    }
}

async fn targets(ctx: &Context, command: TargetsCommand) -> Result<(), CliError> {
    let p = query(&[("projectId", ctx.project.clone())]);
    let one = |id: &str, action: &str| format!("/api/targets/{}{action}{p}", enc(id));
    match command {
        TargetsCommand::Add {
            name,
            agent_type,
            mechanism,
            capabilities,
            boundaries,
            max_agents,
            settings,
        } => {
            let mut config = settings.config();
            config.insert("mechanism".into(), mechanism.clone().into());
            let mut body = json!({"name": name, "agentType": agent_type, "mechanism": mechanism, "capabilities": capabilities, "config": config});
            if let Some(b) = boundaries {
                body["boundaries"] = b.into();
            }
            if let Some(m) = max_agents {
                body["maxAgents"] = m.into();
            }
            if let Some(project) = &ctx.project {
                body["projectId"] = project.clone().into();
            }
            let target = ctx
                .api
                .call(Method::POST, "/api/targets", Some(&body))
                .await?;
            print_value(ctx, &target, &TARGET_HEADERS, &TARGET_FIELDS, None);
        }
        TargetsCommand::List => {
            let list = ctx
                .api
                .get(&format!(
                    "/api/targets{}",
                    query(&[
                        ("projectId", ctx.project.clone()),
                        ("limit", Some("100".into()))
                    ])
                ))
                .await?;
            print_value(ctx, &list, &TARGET_HEADERS, &TARGET_FIELDS, Some("targets"));
        }
        TargetsCommand::Show { id } => {
            let target = ctx.api.get(&one(&id, "")).await?;
            print_value(ctx, &target, &TARGET_HEADERS, &TARGET_FIELDS, None);
        }
        TargetsCommand::Update {
            id,
            description,
            capabilities,
            boundaries,
            settings,
        } => {
            let mut body = json!({});
            if let Some(d) = description {
                body["description"] = d.into();
            }
            if let Some(c) = capabilities {
                body["capabilities"] = c.into();
            }
            if let Some(b) = boundaries {
                body["boundaries"] = b.into();
            }
            let config = settings.config();
            if !config.is_empty() {
                body["config"] = config.into();
            }
            let target = ctx
                .api
                .call(Method::PUT, &one(&id, ""), Some(&body))
                .await?;
            print_value(ctx, &target, &TARGET_HEADERS, &TARGET_FIELDS, None);
        }
        TargetsCommand::Remove { id } => print_message(
            ctx,
            &ctx.api.call(Method::DELETE, &one(&id, ""), None).await?,
        ),
        TargetsCommand::Enable { id } => print_message(
            ctx,
            &ctx.api
                .call(Method::POST, &one(&id, "/enable"), None)
                .await?,
        ),
        TargetsCommand::Disable { id } => print_message(
            ctx,
            &ctx.api
                .call(Method::POST, &one(&id, "/disable"), None)
                .await?,
        ),
        TargetsCommand::Test { id } => {
            let result = ctx.api.call(Method::POST, &one(&id, "/test"), None).await?;
            if ctx.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&result).unwrap_or_default()
                );
            } else if result["healthy"] == true {
                println!("healthy ({} ms)", s(&result["latencyMs"]));
            } else {
                println!("unhealthy: {}", s(&result["error"]));
            }
            if result["healthy"] != true {
                return Err(CliError::Refused(format!("target {id} is unhealthy")));
            }
        }
        TargetsCommand::SpinUp { id } => {
            let result = ctx
                .api
                .call(Method::POST, &one(&id, "/spin-up"), None)
                .await?;
            if ctx.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&result).unwrap_or_default()
                );
            } else {
                println!(
                    "spin-up {} on {}: {}",
                    s(&result["operationId"]),
                    s(&result["targetName"]),
                    s(&result["status"])
                );
            }
            if result["success"] != true {
                return Err(CliError::Refused(s(&result["error"])));
            }
        }
    }
    Ok(())
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open_socket(ctx: &Context) -> Result<Socket, CliError> {
    let url = format!("{}/api/ws", ctx.api.base.replacen("http", "ws", 1));
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if let Some(token) = &ctx.api.token {
        let offered = format!("bearer, {token}")
            .parse()
            .map_err(|_| CliError::Usage("the token is not a valid header value".into()))?;
        request
            .headers_mut()
            .insert("sec-websocket-protocol", offered);
    }
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| CliError::Unreachable(format!("cannot open the live feed at {url}: {e}")))?;
    Ok(socket)
}

async fn follow_task(ctx: &Context, task_id: &str) -> Result<Socket, CliError> {
    let mut socket = open_socket(ctx).await?;
    let subscribe = json!({"type": "subscribe", "topic": "work", "filter": {"taskId": task_id}});
    socket
        .send(Message::Text(subscribe.to_string().into()))
        .await
        .map_err(|e| CliError::Unreachable(e.to_string()))?;
    Ok(socket)
}

/// Follows the item until it ends: 0 when it completes, 1 otherwise.
async fn wait_for(ctx: &Context, mut socket: Socket, id: String) -> Result<(), CliError> {
    let spinner = ["|", "/", "-", "\\"];
    let interactive = std::io::stderr().is_terminal() && !ctx.json;
    let mut tick = 0usize;
    loop {
        let message = match tokio::time::timeout(Duration::from_millis(250), socket.next()).await {
            Err(_) => {
                if interactive {
                    tick += 1;
                    eprint!("\r{} waiting for {id}", spinner[tick % 4]);
                }
                continue;
            }
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(_))) => continue,
            Ok(_) => {
                return Err(CliError::Unreachable(
                    "the live feed closed before the item ended".into(),
                ))
            }
        };
        let event: Value = serde_json::from_str(&message).unwrap_or_default();
        if event["type"] != "event" {
            continue;
        }
        let data = &event["data"];
        let kind = s(&event["event"]);
        if interactive {
            eprint!("\r");
        }
        match kind.as_str() {
            "work:progress" => eprintln!(
                "  {}",
                s(&data["message"]).lines().last().unwrap_or_default()
            ),
            "work:assigned" => eprintln!("assigned to {}", s(&data["assignedTo"])),
            "work:started" => eprintln!("started"),
            _ => {}
        }
        let done = matches!(
            kind.as_str(),
            "work:completed" | "work:failed" | "work:cancelled"
        );
        // A failed attempt that will be retried is not the end.
        let retrying = kind == "work:failed" && {
            let item = ctx.api.get(&format!("/api/work/{}", enc(&id))).await?;
            item["status"] == "pending"
        };
        if done && !retrying {
            let item = ctx.api.get(&format!("/api/work/{}", enc(&id))).await?;
            if ctx.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&item).unwrap_or_default()
                );
            } else {
                println!(
                    "{}: {}",
                    s(&item["status"]),
                    s(&item["result"]["summary"])
                        .lines()
                        .last()
                        .unwrap_or(&s(&item["error"]["message"]))
                );
            }
            return if item["status"] == "completed" {
                Ok(())
            } else {
                Err(CliError::Refused(format!(
                    "work item {id} ended {}",
                    s(&item["status"])
                )))
            };
        }
    }
}

async fn watch(ctx: &Context) -> Result<(), CliError> {
    let mut socket = open_socket(ctx).await?;
    for topic in ["work", "agents", "targets"] {
        let message = json!({"type": "subscribe", "topic": topic});
        socket
            .send(Message::Text(message.to_string().into()))
            .await
            .map_err(|e| CliError::Unreachable(e.to_string()))?;
    }
    let print_counts = || async {
        if let Ok(stats) = ctx.api.get("/api/stats").await {
            let t = &stats["totals"];
            println!(
                "-- agents {}  pending {}  active {}  completed {}  failed {}  targets {}",
                s(&t["agents"]),
                s(&t["pendingWork"]),
                s(&t["activeWork"]),
                s(&t["completedWork"]),
                s(&t["failedWork"]),
                s(&t["targets"])
            );
        }
    };
    print_counts().await;
    while let Some(message) = socket.next().await {
        let Ok(Message::Text(text)) = message else {
            continue;
        };
        let event: Value = serde_json::from_str(&text).unwrap_or_default();
        if event["type"] != "event" {
            continue;
        }
        let d = &event["data"];
        let subject = [&d["workId"], &d["targetName"], &d["agent"]["guid"]]
            .into_iter()
            .map(s)
            .find(|x| !x.is_empty())
            .unwrap_or_default();
        println!(
            "{} #{} {} {subject}",
            s(&event["timestamp"]),
            s(&event["sequence"]),
            s(&event["event"])
        );
        print_counts().await;
    }
    Err(CliError::Unreachable("the live feed closed".into()))
}

fn main() -> ExitCode {
    weft::cli::exit_quietly_on_closed_pipe();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shuttle: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shuttle: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
