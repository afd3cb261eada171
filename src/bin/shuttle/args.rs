//! Shuttle's command line: every command, flag and argument, as clap parses them.

use clap::{Parser, Subcommand};
use serde_json::Value;

/// Drive a Weft fleet: agents, work, spin-up targets, stats and the event log.
#[derive(Parser)]
#[command(name = "shuttle", version, about)]
pub(crate) struct Cli {
    /// Weft's API (overrides WEFT_API_URL and the config file's apiUrl).
    #[arg(long, global = true)]
    pub(crate) api_url: Option<String>,
    /// Bearer token (overrides WEFT_API_TOKEN and the config file's token).
    #[arg(long, global = true)]
    pub(crate) token: Option<String>,
    /// Project (overrides the config file's projectId).
    #[arg(long, short = 'p', global = true)]
    pub(crate) project: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
    /// Create, list and revoke API tokens (an admin's).
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Counts over every project.
    Stats,
    /// What the agents' CLIs reported the work cost, totalled.
    Usage {
        /// project, agent, target or day.
        #[arg(long, default_value = "project")]
        group_by: String,
    },
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
pub(crate) enum TokensCommand {
    /// Create a token; its secret is printed this once.
    Create {
        /// Who or what uses it.
        name: String,
        /// viewer, operator or admin.
        #[arg(long)]
        role: String,
        /// The projects it may see, comma-separated; none: every project.
        #[arg(long, value_delimiter = ',')]
        projects: Vec<String>,
        /// When it stops working (RFC 3339).
        #[arg(long)]
        expires_at: Option<String>,
    },
    List,
    /// Revoke a token by id: from now on it is refused.
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum ConfigCommand {
    /// Set a key: apiUrl, token, projectId, defaultBoundary, outputFormat (table|json).
    Set { key: String, value: String },
    /// Print a key's value.
    Get { key: String },
    /// Print every key.
    List,
}

#[derive(Subcommand)]
pub(crate) enum AgentsCommand {
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
    /// Route work to an agent a usage limit paused again, now.
    Resume {
        guid: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum WorkCommand {
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
    /// Everything that happened to an item, oldest first: time, type, actor.
    History {
        id: String,
    },
    /// The lines the item's agents printed, oldest first.
    Logs {
        id: String,
        /// Keep printing new lines until the item is completed, cancelled or dead-lettered.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Why an item went (or would go) where it goes: every agent and target, eligible or
    /// not and why. Without an ID, a dry run for a description not submitted.
    Explain {
        id: Option<String>,
        #[arg(long, short = 'c', required_unless_present = "id")]
        capability: Option<String>,
        /// Default: the config file's defaultBoundary.
        #[arg(long, short = 'b')]
        boundary: Option<String>,
        #[arg(long, short = 'd', default_value = "dry run")]
        description: String,
    },
}

#[derive(clap::Args, Default)]
pub(crate) struct TargetSettings {
    #[arg(long)]
    pub(crate) host: Option<String>,
    #[arg(long)]
    pub(crate) port: Option<u16>,
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// Private key file (ssh).
    #[arg(long)]
    pub(crate) key: Option<String>,
    #[arg(long)]
    pub(crate) command: Option<String>,
    #[arg(long)]
    pub(crate) namespace: Option<String>,
    #[arg(long)]
    pub(crate) image: Option<String>,
    #[arg(long)]
    pub(crate) service_account: Option<String>,
    #[arg(long)]
    pub(crate) url: Option<String>,
    #[arg(long)]
    pub(crate) repo: Option<String>,
    #[arg(long)]
    pub(crate) workflow: Option<String>,
}

impl TargetSettings {
    /// The flat `config` the API accepts, from the flags given.
    pub(crate) fn config(&self) -> serde_json::Map<String, Value> {
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
pub(crate) enum TargetsCommand {
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
