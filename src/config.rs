//! `weft serve` settings: every one a flag and an environment variable. The original's
//! variables keep their names and meaning.

use std::path::PathBuf;

#[derive(clap::Args, Clone, Debug)]
pub struct ServeConfig {
    /// NATS to use. Unset: Weft starts and supervises its own nats-server (the embedded default).
    /// Credentials may be in the URL; ws:// and wss:// select the WebSocket transport.
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// NATS user, when the URL has none.
    #[arg(long, env = "NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password, with NATS_USER.
    #[arg(long, env = "NATS_PASS", hide_env_values = true)]
    pub nats_pass: Option<String>,
    /// Address the HTTP API binds to.
    #[arg(long, env = "API_HOST", default_value = "0.0.0.0")]
    pub api_host: String,
    /// Port of the HTTP API.
    #[arg(long, env = "API_PORT", default_value_t = 3000)]
    pub api_port: u16,
    /// Comma-separated bearer tokens, each an admin of every project; unset or empty turns
    /// authentication off (and tokens cannot be created through the API).
    #[arg(long, env = "API_TOKENS", hide_env_values = true, default_value = "")]
    pub api_tokens: String,
    /// Requests per second each token created through the API may make (0: no limit);
    /// over it, the API answers 429 with `Retry-After`.
    #[arg(long, env = "WEFT_RATE_LIMIT_PER_SECOND", default_value_t = 50)]
    pub rate_limit_per_second: u32,
    /// Requests a token may make at once above its rate.
    #[arg(long, env = "WEFT_RATE_LIMIT_BURST", default_value_t = 100)]
    pub rate_limit_burst: u32,
    /// Whether the tokens of API_TOKENS are rate-limited too (by default they are not).
    #[arg(long, env = "WEFT_RATE_LIMIT_API_TOKENS", default_value_t = false, action = clap::ArgAction::Set)]
    pub rate_limit_api_tokens: bool,
    /// A PEM certificate chain: with API_TLS_KEY, the API is served over HTTPS only.
    #[arg(long, env = "API_TLS_CERT", requires = "api_tls_key")]
    pub api_tls_cert: Option<PathBuf>,
    /// The PEM private key of API_TLS_CERT.
    #[arg(long, env = "API_TLS_KEY", requires = "api_tls_cert")]
    pub api_tls_key: Option<PathBuf>,
    /// Project used when a request names none.
    #[arg(long, env = "LOOMINAL_PROJECT_ID", default_value = "default")]
    pub default_project: String,
    /// Default idle time after which an agent is asked to shut down.
    #[arg(long, env = "IDLE_TIMEOUT_MS", default_value_t = 300_000)]
    pub idle_timeout_ms: u64,
    /// Embedded default: where nats-server keeps its data.
    #[arg(long, env = "WEFT_DATA_DIR", default_value = "weft-data")]
    pub data_dir: PathBuf,
    /// Embedded default: the loopback port of nats-server (0 picks a free one).
    #[arg(long, env = "WEFT_NATS_PORT", default_value_t = 4222)]
    pub nats_port: u16,
    /// Embedded default: JetStream fsync policy, `always` (every write is on disk before it is
    /// acknowledged) or an interval such as `2m` (nats-server's default; faster, and a machine
    /// crash can lose the writes of that interval).
    #[arg(long, env = "WEFT_NATS_SYNC", default_value = "always")]
    pub nats_sync: String,
    /// Save a snapshot of the projections every N events (0: never).
    #[arg(long, env = "WEFT_SNAPSHOT_EVERY", default_value_t = 10_000)]
    pub snapshot_every: u64,
    /// How many snapshots to keep, newest first: `?at=`/`?asOf=` reads fold from the
    /// nearest one at or before the point asked (older points replay from the start).
    #[arg(long, env = "WEFT_SNAPSHOTS_KEPT", default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshots_kept: u64,
    /// Verify the log in the background every this many ms (0: never), as `weft audit
    /// verify` does; the outcome is in `/health` (`audit`) and `/metrics` (`weft_audit_*`).
    #[arg(long, env = "WEFT_AUDIT_INTERVAL_MS", default_value_t = 0)]
    pub audit_interval_ms: u64,
    /// Deliver work to agents of the `agent-registry` bucket (Warp's) through Warp's work
    /// queues and Weft's inbox (`false`: list them only).
    #[arg(long, env = "WEFT_WARP_BRIDGE", default_value_t = true, action = clap::ArgAction::Set)]
    pub warp_bridge: bool,
    /// A JSON routing policy file (`{"boundaries": {"corporate": {"allowedAgentTypes":
    /// ["copilot-cli"], "preferredAgentTypes": ["copilot-cli"]}, ...}}`). Default: corporate ->
    /// copilot-cli only; corporate-adjacent -> copilot-cli preferred; personal -> claude-code
    /// preferred; open-source -> any.
    #[arg(long, env = "WEFT_ROUTING_POLICY")]
    pub routing_policy: Option<PathBuf>,
    /// How often agents heartbeat.
    #[arg(long, env = "WEFT_HEARTBEAT_INTERVAL_MS", default_value_t = 5_000)]
    pub heartbeat_interval_ms: u64,
    /// Silence after which an agent is marked offline and its work goes back to the queue.
    #[arg(long, env = "WEFT_AGENT_TIMEOUT_MS", default_value_t = 15_000)]
    pub agent_timeout_ms: u64,
    /// Time an agent has to accept an assignment before it is given to another.
    #[arg(long, env = "WEFT_ACCEPT_TIMEOUT_MS", default_value_t = 30_000)]
    pub accept_timeout_ms: u64,
    /// Attempts before a work item is dead-lettered (per item: `maxAttempts`).
    #[arg(long, env = "WEFT_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
    /// Wait before the first retry; doubles with every attempt (at most 60 s).
    #[arg(long, env = "WEFT_RETRY_BACKOFF_MS", default_value_t = 1_000)]
    pub retry_backoff_ms: u64,
    /// Time a started agent has to register before its spin-up counts as failed.
    #[arg(long, env = "WEFT_SPINUP_TIMEOUT_MS", default_value_t = 60_000)]
    pub spin_up_timeout_ms: u64,
    /// A target whose spin-up failed is not used again for this long.
    #[arg(long, env = "WEFT_SPINUP_COOLDOWN_MS", default_value_t = 30_000)]
    pub spin_up_cooldown_ms: u64,
    /// After an idle agent is asked to shut down, how long before what it runs on is stopped.
    #[arg(long, env = "WEFT_SCALEDOWN_GRACE_MS", default_value_t = 30_000)]
    pub scale_down_grace_ms: u64,
    /// The NATS URL agents that Weft starts are told to join (default: the one Weft uses).
    #[arg(long, env = "WEFT_AGENT_NATS_URL")]
    pub agent_nats_url: Option<String>,
    /// How often WebSocket clients subscribed to `stats` get a stats message.
    #[arg(long, env = "WEFT_WS_STATS_INTERVAL_MS", default_value_t = 30_000)]
    pub ws_stats_interval_ms: u64,
    /// The mechanisms targets may use, comma-separated (`none` for no targets at all).
    #[arg(
        long,
        env = "WEFT_MECHANISMS",
        default_value = "ssh,github-actions,local,webhook,kubernetes"
    )]
    pub mechanisms: String,
    /// How a project's writer sends a round of commands to the log: `grouped` (whole
    /// commands packed into atomic batches: one fsync or one consensus round for many),
    /// `pipelined` (each command at once, many in flight), or `auto`: grouped where every
    /// write is fsynced or the stream is replicated, pipelined otherwise.
    #[arg(long, env = "WEFT_COMMIT_MODE", default_value = "auto")]
    pub commit_mode: String,
    /// This instance's name in the log's writer elections (default: host name and a
    /// random suffix, new at every start).
    #[arg(long, env = "WEFT_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Replicas of every stream and bucket Weft keeps (at most the cluster's JetStream
    /// servers); changing it updates them in place at the next start.
    #[arg(long, env = "WEFT_REPLICAS", default_value_t = 1)]
    pub replicas: usize,
    /// How long a project's writer lease lasts without renewal: a standby takes over the
    /// project this long after its writer stopped renewing (every instance must agree).
    #[arg(long, env = "WEFT_WRITER_LEASE_MS", default_value_t = 5_000)]
    pub writer_lease_ms: u64,
    /// Output chunks kept per work item in the output stream (a chunk is one report of an
    /// agent, at most 500 lines); the oldest go first.
    #[arg(long, env = "WEFT_OUTPUT_CHUNKS_PER_ITEM", default_value_t = 1_000)]
    pub output_chunks_per_item: i64,
    /// Hours an output chunk is kept.
    #[arg(long, env = "WEFT_OUTPUT_MAX_AGE_HOURS", default_value_t = 168)]
    pub output_max_age_hours: u64,
    /// Bytes the output stream keeps for all items together; the oldest go first.
    #[arg(long, env = "WEFT_OUTPUT_MAX_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub output_max_bytes: i64,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "WEFT_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
}

impl ServeConfig {
    pub fn snapshot_policy(&self) -> crate::projector::SnapshotPolicy {
        crate::projector::SnapshotPolicy {
            every: self.snapshot_every,
            kept: self.snapshots_kept as usize,
        }
    }

    /// What the output stream keeps.
    pub fn output_limits(&self) -> migrations::OutputLimits {
        migrations::OutputLimits {
            chunks_per_item: self.output_chunks_per_item,
            max_age: std::time::Duration::from_secs(self.output_max_age_hours * 3600),
            max_bytes: self.output_max_bytes,
        }
    }

    pub fn tokens(&self) -> Vec<String> {
        self.api_tokens
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect()
    }

    pub fn validate(&self) -> Result<(), String> {
        if !events::subject::is_valid_token(&self.default_project) {
            return Err(format!(
                "LOOMINAL_PROJECT_ID '{}' is not a valid project id (letters, digits, '-' and '_', at most 128)",
                self.default_project
            ));
        }
        let sync_ok = self.nats_sync == "always"
            || self
                .nats_sync
                .trim_end_matches(['s', 'm', 'h'])
                .parse::<u64>()
                .is_ok();
        if !sync_ok {
            return Err(format!(
                "WEFT_NATS_SYNC '{}' must be `always` or an interval such as 2m",
                self.nats_sync
            ));
        }
        self.timing()
            .check()
            .map_err(|e| format!("WEFT_AGENT_TIMEOUT_MS / WEFT_HEARTBEAT_INTERVAL_MS: {e}"))?;
        if !["auto", "grouped", "pipelined"].contains(&self.commit_mode.as_str()) {
            return Err(format!(
                "WEFT_COMMIT_MODE '{}' must be auto, grouped or pipelined",
                self.commit_mode
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(format!(
                "WEFT_REPLICAS {} must be between 1 and 5 (JetStream's limit)",
                self.replicas
            ));
        }
        if !(1_000..=600_000).contains(&self.writer_lease_ms) {
            return Err("WEFT_WRITER_LEASE_MS must be between 1000 and 600000".into());
        }
        if let Some(id) = &self.instance_id {
            if !events::subject::is_valid_token(id) {
                return Err(format!(
                    "WEFT_INSTANCE_ID '{id}' must be letters, digits, '-' and '_' (at most 128)"
                ));
            }
        }
        if self.output_chunks_per_item < 1 || self.output_max_bytes < 1024 * 1024 {
            return Err("WEFT_OUTPUT_CHUNKS_PER_ITEM must be at least 1 and WEFT_OUTPUT_MAX_BYTES at least 1048576".into());
        }
        if !(1..=24 * 365).contains(&self.output_max_age_hours) {
            return Err("WEFT_OUTPUT_MAX_AGE_HOURS must be between 1 and 8760".into());
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err("WEFT_MAX_ATTEMPTS must be between 1 and 100".into());
        }
        Ok(())
    }

    /// The commit mode; `auto` is settled by whether writes are fsynced one by one (known
    /// for the embedded server only) and how many replicas the stream has.
    pub fn commit_mode(&self, stream_replicas: usize) -> crate::store::CommitMode {
        use crate::store::CommitMode;
        match self.commit_mode.as_str() {
            "grouped" => CommitMode::Grouped,
            "pipelined" => CommitMode::Pipelined,
            _ if stream_replicas > 1 => CommitMode::Grouped,
            _ if self.nats_url.is_none() && self.nats_sync == "always" => CommitMode::Grouped,
            _ => CommitMode::Pipelined,
        }
    }

    pub fn instance(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| {
            // A subject token and a KV key: anything else in a host name becomes '-'.
            let host: String = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_else(|_| "weft".into())
                .trim()
                .chars()
                .take(100)
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            let suffix = ulid::Ulid::generate().to_string();
            format!("{host}-{}", &suffix[suffix.len() - 6..]).to_lowercase()
        })
    }

    pub fn policy(&self) -> Result<decide::routing::RoutingPolicy, String> {
        match &self.routing_policy {
            None => Ok(Default::default()),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                decide::routing::RoutingPolicy::from_json(&text)
                    .map_err(|e| format!("{}: {e}", path.display()))
            }
        }
    }

    pub fn timing(&self) -> decide::schedule::Timing {
        decide::schedule::Timing {
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            agent_timeout_ms: self.agent_timeout_ms,
            accept_timeout_ms: self.accept_timeout_ms,
            spin_up_timeout_ms: self.spin_up_timeout_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            scale_down_grace_ms: self.scale_down_grace_ms,
        }
    }

    /// Everything the rules read, from these settings and the policy file.
    pub fn settings(&self) -> Result<decide::Settings, String> {
        Ok(decide::Settings {
            routing: self.policy()?,
            retry: decide::work::RetryPolicy {
                default_max_attempts: self.max_attempts,
                base_ms: self.retry_backoff_ms,
                max_ms: 60_000,
            },
            spin_up: decide::routing::SpinUpPolicy {
                cooldown_ms: self.spin_up_cooldown_ms,
            },
            timing: self.timing(),
            mechanisms: self.allowed_mechanisms()?,
        })
    }

    fn allowed_mechanisms(&self) -> Result<Vec<events::target::Mechanism>, String> {
        let names: Vec<&str> = self
            .mechanisms
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty() && *m != "none")
            .collect();
        names
            .into_iter()
            .map(|m| {
                events::target::Mechanism::parse(m).ok_or_else(|| {
                    format!("WEFT_MECHANISMS: '{m}' is not a mechanism (ssh, github-actions, local, webhook, kubernetes)")
                })
            })
            .collect()
    }
}
