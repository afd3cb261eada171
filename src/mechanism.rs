//! The ways Weft starts agents. Each mechanism can start an agent for a spin-up, check
//! that it could (the health check behind `POST /api/targets/{id}/test`), and stop what it
//! started.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use std::sync::Arc;

use events::target::{
    GithubActionsConfig, KubernetesConfig, LocalConfig, MechanismConfig, SshConfig, WebhookConfig,
};
use hmac::{Hmac, Mac};
use k8s_openapi::api::batch::v1::Job;
use projections::Target;
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, BufReader};

/// What an agent started for a spin-up is told (as environment variables), so that it
/// registers linked to the spin-up, its target and its project.
pub struct Launch<'a> {
    pub spin_up_id: &'a str,
    pub target: &'a Target,
    pub project: &'a str,
    pub nats_url: &'a str,
    pub work_id: Option<&'a str>,
    pub capability: Option<&'a str>,
    pub boundary: Option<&'a str>,
}

impl Launch<'_> {
    /// What a started agent is told: the target's type, capabilities and boundaries as
    /// defaults (the target's own `env` may override them), then what links it to this
    /// spin-up, which nothing overrides.
    pub fn agent_env(
        &self,
        target_env: &std::collections::BTreeMap<String, String>,
    ) -> Vec<(String, String)> {
        let t = self.target;
        let mut env: Vec<(String, String)> = vec![
            ("AGENT_TYPE".into(), t.agent_type.clone()),
            ("AGENT_CAPABILITIES".into(), t.capabilities.join(",")),
            ("AGENT_BOUNDARIES".into(), t.boundaries.join(",")),
        ];
        env.extend(target_env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend([
            ("WEFT_SPINUP_ID".into(), self.spin_up_id.to_string()),
            ("WEFT_TARGET_ID".into(), t.id.clone()),
            (
                "WEFT_WORK_ID".into(),
                self.work_id.unwrap_or_default().to_string(),
            ),
            ("NATS_URL".into(), self.nats_url.to_string()),
            ("LOOMINAL_PROJECT_ID".into(), self.project.to_string()),
        ]);
        env
    }
}

pub struct Started {
    pub detail: String,
    pub pid: Option<u32>,
}

/// Processes Weft owns (local targets with `detached: false`): stopped when Weft stops.
pub struct Mechanisms {
    owned: Mutex<HashSet<u32>>,
    http: reqwest::Client,
}

impl Default for Mechanisms {
    fn default() -> Self {
        install_crypto_provider();
        Mechanisms {
            owned: Mutex::default(),
            http: reqwest::Client::new(),
        }
    }
}

/// Installs the one TLS crypto provider Weft uses (ring); reqwest clients cannot be built
/// before. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads a secret from the environment variable a target names.
fn secret(var: &str, what: &str) -> Result<String, String> {
    std::env::var(var)
        .map_err(|_| format!("environment variable {var} ({what}) is not set on Weft's machine"))
}

/// Escapes `value` for use inside a JSON string, so templates stay valid JSON.
fn json_escaped(value: &str) -> String {
    let quoted = serde_json::Value::from(value).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

pub fn render_template(template: &str, launch: &Launch<'_>) -> String {
    let work = launch.work_id.unwrap_or_default();
    [
        ("{{spinUpId}}", launch.spin_up_id),
        ("{{workItemId}}", work),
        ("{{capability}}", launch.capability.unwrap_or_default()),
        ("{{boundary}}", launch.boundary.unwrap_or_default()),
        ("{{targetName}}", launch.target.name.as_str()),
        ("{{targetId}}", launch.target.id.as_str()),
        ("{{projectId}}", launch.project),
        ("{{natsUrl}}", launch.nats_url),
    ]
    .iter()
    .fold(template.to_string(), |body, (placeholder, value)| {
        body.replace(placeholder, &json_escaped(value))
    })
}

fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        format!("cannot connect: {e}")
    } else {
        e.to_string()
    }
}

impl Mechanisms {
    pub async fn start(&self, launch: &Launch<'_>) -> Result<Started, String> {
        match &launch.target.config {
            MechanismConfig::Local(c) => self.start_local(c, launch).await,
            MechanismConfig::Webhook(c) => self.start_webhook(c, launch).await,
            MechanismConfig::GithubActions(c) => self.start_github(c, launch).await,
            MechanismConfig::Ssh(c) => start_ssh(c, launch).await,
            MechanismConfig::Kubernetes(c) => start_kubernetes(c, launch).await,
        }
    }

    pub async fn check(&self, config: &MechanismConfig) -> Result<(), String> {
        match config {
            MechanismConfig::Local(c) => check_local(c),
            MechanismConfig::Webhook(c) => self.check_webhook(c).await,
            MechanismConfig::GithubActions(c) => self.check_github(c).await,
            MechanismConfig::Ssh(c) => run_ssh(c, "true").await.map(|_| ()),
            MechanismConfig::Kubernetes(c) => check_kubernetes(c).await,
        }
    }

    /// Stops what a spin-up started: a local or remote process group (`spin_up.pid`), a
    /// Kubernetes Job; webhooks and workflow runs end when their agent leaves.
    pub async fn stop(&self, target: &Target, spin_up: &projections::SpinUp) -> Result<(), String> {
        let (config, pid) = (&target.config, spin_up.pid);
        match (config, pid) {
            (MechanismConfig::Local(_), Some(pid)) => {
                self.owned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&pid);
                stop_group(pid).await;
                Ok(())
            }
            (MechanismConfig::Local(_), None) => Ok(()),
            // The remote process group, started with setsid.
            (MechanismConfig::Ssh(c), Some(pid)) => {
                run_ssh(c, &format!("kill -TERM -- -{pid} 2>/dev/null; true"))
                    .await
                    .map(|_| ())
            }
            (MechanismConfig::Ssh(_), None) => Ok(()),
            // What a webhook or a workflow run started ends when its agent leaves.
            (MechanismConfig::Webhook(_) | MechanismConfig::GithubActions(_), _) => Ok(()),
            (MechanismConfig::Kubernetes(c), _) => {
                stop_kubernetes(c, &target.name, &spin_up.id).await
            }
        }
    }

    /// Stops every process Weft owns; called when Weft stops.
    pub async fn stop_owned(&self) {
        let owned: Vec<u32> = self
            .owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for pid in owned {
            stop_group(pid).await;
        }
    }

    async fn start_webhook(
        &self,
        c: &WebhookConfig,
        launch: &Launch<'_>,
    ) -> Result<Started, String> {
        let method = reqwest::Method::from_bytes(
            c.method
                .as_deref()
                .unwrap_or("POST")
                .to_ascii_uppercase()
                .as_bytes(),
        )
        .map_err(|e| e.to_string())?;
        let body = match &c.body_template {
            Some(template) => render_template(template, launch),
            None => serde_json::json!({
                "spinUpId": launch.spin_up_id,
                "targetId": launch.target.id,
                "targetName": launch.target.name,
                "projectId": launch.project,
                "workItemId": launch.work_id,
                "capability": launch.capability,
                "boundary": launch.boundary,
                "natsUrl": launch.nats_url,
            })
            .to_string(),
        };
        let mut request = self
            .http
            .request(method, &c.url)
            .timeout(Duration::from_millis(c.timeout_ms.unwrap_or(30_000)))
            .header("content-type", "application/json")
            .header("x-weft-spin-up-id", launch.spin_up_id);
        for (name, value) in &c.headers {
            request = request.header(name, value);
        }
        for (name, var) in &c.secret_headers {
            request = request.header(name, secret(var, &format!("header {name}"))?);
        }
        if let Some(var) = &c.hmac_secret_env_var {
            let key = secret(var, "HMAC signing secret")?;
            let mut mac =
                Hmac::<Sha256>::new_from_slice(key.as_bytes()).map_err(|e| e.to_string())?;
            mac.update(body.as_bytes());
            request = request.header(
                "x-weft-signature",
                format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
            );
        }
        let response = request.body(body).send().await.map_err(describe)?;
        let status = response.status().as_u16();
        let accepted = if c.success_codes.is_empty() {
            [200, 201, 202, 204].contains(&status)
        } else {
            c.success_codes.contains(&status)
        };
        if accepted {
            Ok(Started {
                detail: format!("HTTP {status} from {}", c.url),
                pid: None,
            })
        } else {
            let text: String = response
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect();
            Err(format!("webhook answered HTTP {status}: {text}"))
        }
    }

    /// Reachable: any HTTP answer below 500 to a HEAD request.
    async fn check_webhook(&self, c: &WebhookConfig) -> Result<(), String> {
        let response = self
            .http
            .head(&c.url)
            .timeout(Duration::from_millis(c.timeout_ms.unwrap_or(10_000)))
            .send()
            .await
            .map_err(describe)?;
        if response.status().is_server_error() {
            return Err(format!(
                "webhook answered HTTP {}",
                response.status().as_u16()
            ));
        }
        Ok(())
    }

    fn github_request(
        &self,
        c: &GithubActionsConfig,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, String> {
        let token = secret(
            c.token_env_var.as_deref().unwrap_or("GITHUB_TOKEN"),
            "GitHub token",
        )?;
        let base = c
            .api_base_url
            .as_deref()
            .unwrap_or("https://api.github.com")
            .trim_end_matches('/');
        let url = format!(
            "{base}/repos/{}/actions/workflows/{}{path}",
            c.repo, c.workflow
        );
        Ok(self
            .http
            .request(method, url)
            .timeout(Duration::from_millis(c.start_timeout_ms.unwrap_or(10_000)))
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .header("user-agent", "weft"))
    }

    /// `workflow_dispatch` with the spin-up's id, work item and capability as inputs
    /// (the workflow must declare `spinUpId`, `workItemId`, `capability`, `natsUrl`, `projectId`).
    async fn start_github(
        &self,
        c: &GithubActionsConfig,
        launch: &Launch<'_>,
    ) -> Result<Started, String> {
        let mut inputs: serde_json::Map<String, serde_json::Value> = c
            .inputs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        inputs.insert("spinUpId".into(), launch.spin_up_id.into());
        inputs.insert(
            "workItemId".into(),
            launch.work_id.unwrap_or_default().into(),
        );
        inputs.insert(
            "capability".into(),
            launch.capability.unwrap_or_default().into(),
        );
        inputs.insert("natsUrl".into(), launch.nats_url.into());
        inputs.insert("projectId".into(), launch.project.into());
        let body =
            serde_json::json!({"ref": c.git_ref.as_deref().unwrap_or("main"), "inputs": inputs});
        let response = self
            .github_request(c, reqwest::Method::POST, "/dispatches")?
            .json(&body)
            .send()
            .await
            .map_err(describe)?;
        match response.status().as_u16() {
            204 | 200 | 201 => Ok(Started {
                detail: format!("workflow {} dispatched on {}", c.workflow, c.repo),
                pid: None,
            }),
            status => {
                let text: String = response
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect();
                Err(format!("GitHub answered HTTP {status}: {text}"))
            }
        }
    }

    /// The workflow exists and the token may see it.
    async fn check_github(&self, c: &GithubActionsConfig) -> Result<(), String> {
        let response = self
            .github_request(c, reqwest::Method::GET, "")?
            .send()
            .await
            .map_err(describe)?;
        match response.status().as_u16() {
            200 => Ok(()),
            status => Err(format!(
                "GitHub answered HTTP {status} for workflow {} of {}",
                c.workflow, c.repo
            )),
        }
    }

    async fn start_local(&self, c: &LocalConfig, launch: &Launch<'_>) -> Result<Started, String> {
        let target = launch.target;
        let mut command = if c.args.is_empty() {
            let mut sh = tokio::process::Command::new("sh");
            sh.arg("-c").arg(&c.command);
            sh
        } else {
            let mut direct = tokio::process::Command::new(&c.command);
            direct.args(&c.args);
            direct
        };
        command
            .envs(launch.agent_env(&c.env))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: stopping it stops everything it started.
            .process_group(0);
        if let Some(dir) = &c.working_directory {
            command.current_dir(dir);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start `{}`: {e}", c.command))?;
        let pid = child
            .id()
            .ok_or("the process exited before it could be tracked")?;
        let name = target.name.clone();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child.stderr.take().map(|s| Box::new(s) as _),
        ]
        .into_iter()
        .flatten()
        {
            let name = name.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::info!(target_name = name, pid, "{line}");
                }
            });
        }
        // A command that fails at once (not found, bad flags) is a failed spin-up, not a
        // long wait for a registration that will never come.
        if let Ok(status) = tokio::time::timeout(Duration::from_millis(300), child.wait()).await {
            let status = status.map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("`{}` exited at start with {status}", c.command));
            }
        } else {
            tokio::spawn(async move {
                // Reap it when it ends, and say so.
                if let Ok(status) = child.wait().await {
                    tracing::info!(target_name = name, pid, %status, "spun-up process exited");
                }
            });
        }
        if c.detached == Some(false) {
            self.owned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(pid);
        }
        Ok(Started {
            detail: format!("pid {pid}"),
            pid: Some(pid),
        })
    }
}

/// The program a local target runs exists and may be executed, and its directory exists.
fn check_local(c: &LocalConfig) -> Result<(), String> {
    if let Some(dir) = &c.working_directory {
        if !std::path::Path::new(dir).is_dir() {
            return Err(format!("working directory {dir} does not exist"));
        }
    }
    let program = if c.args.is_empty() {
        // A shell command: judge its first word, unless it is shell syntax.
        match c.command.split_whitespace().next() {
            Some(word) if !word.contains(['=', '(', '$', '{', '`']) => word.to_string(),
            _ => "sh".to_string(),
        }
    } else {
        c.command.clone()
    };
    let executable = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if program.contains('/') {
        executable(std::path::Path::new(&program))
    } else {
        std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(&program))))
            .unwrap_or(false)
    };
    if found {
        Ok(())
    } else {
        Err(format!("{program} is not an executable on this machine"))
    }
}

/// Accepts the server's host key only if it is the pinned one (`hostKey`), or is listed
/// in `knownHostsPath` (default `~/.ssh/known_hosts`).
struct HostKeyPolicy {
    host: String,
    port: u16,
    pinned: Option<russh::keys::PublicKey>,
    known_hosts: Option<String>,
    rejected: Arc<Mutex<Option<String>>>,
}

impl russh::client::Handler for HostKeyPolicy {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = offered else {
            *self.rejected.lock().unwrap_or_else(|p| p.into_inner()) =
                Some("host certificates are not supported".into());
            return Ok(false);
        };
        let trusted = match (&self.pinned, &self.known_hosts) {
            (Some(pinned), _) => pinned.key_data() == key.key_data(),
            (None, Some(path)) => {
                russh::keys::check_known_hosts_path(&self.host, self.port, key, path)
                    .unwrap_or(false)
            }
            (None, None) => {
                russh::keys::check_known_hosts(&self.host, self.port, key).unwrap_or(false)
            }
        };
        if !trusted {
            *self.rejected.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                "the host key of {}:{} is not trusted: pin it with hostKey or add it to known_hosts",
                self.host, self.port
            ));
        }
        Ok(trusted)
    }
}

/// Connects and authenticates (with `privateKeyPath`, or the ssh agent), then runs
/// `command`; returns its stdout if it exits 0.
async fn run_ssh(c: &SshConfig, command: &str) -> Result<String, String> {
    let port = c.port.unwrap_or(22);
    let pinned = c
        .host_key
        .as_deref()
        .map(|k| {
            russh::keys::PublicKey::from_openssh(k.trim())
                .map_err(|e| format!("hostKey is not an OpenSSH public key: {e}"))
        })
        .transpose()?;
    let rejected = Arc::new(Mutex::new(None));
    let policy = HostKeyPolicy {
        host: c.host.clone(),
        port,
        pinned,
        known_hosts: c.known_hosts_path.clone(),
        rejected: rejected.clone(),
    };
    let config = Arc::new(russh::client::Config {
        inactivity_timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    });
    let timeout = Duration::from_millis(c.connection_timeout_ms.unwrap_or(30_000));
    let connect = russh::client::connect(config, (c.host.as_str(), port), policy);
    let mut session = match tokio::time::timeout(timeout, connect).await {
        Err(_) => {
            return Err(format!(
                "ssh: no connection to {}:{port} within {timeout:?}",
                c.host
            ))
        }
        Ok(Err(e)) => {
            let why = rejected.lock().unwrap_or_else(|p| p.into_inner()).take();
            return Err(
                why.unwrap_or_else(|| format!("ssh: cannot connect to {}:{port}: {e}", c.host))
            );
        }
        Ok(Ok(session)) => session,
    };
    let authenticated = match &c.private_key_path {
        Some(path) => {
            let key = russh::keys::load_secret_key(path, None)
                .map_err(|e| format!("ssh: cannot read the key {path}: {e}"))?;
            let hash = session
                .best_supported_rsa_hash()
                .await
                .map_err(|e| e.to_string())?
                .flatten();
            session
                .authenticate_publickey(
                    &c.user,
                    russh::keys::PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                )
                .await
                .map_err(|e| format!("ssh: authentication failed: {e}"))?
                .success()
        }
        None => {
            let mut agent = russh::keys::agent::client::AgentClient::connect_env()
                .await
                .map_err(|e| format!("ssh: no privateKeyPath and no ssh agent ({e})"))?;
            let identities = agent
                .request_identities()
                .await
                .map_err(|e| e.to_string())?;
            let mut ok = false;
            for identity in identities {
                if let russh::keys::agent::AgentIdentity::PublicKey { key, .. } = identity {
                    let result = session
                        .authenticate_publickey_with(&c.user, key, None, &mut agent)
                        .await;
                    if result.is_ok_and(|r| r.success()) {
                        ok = true;
                        break;
                    }
                }
            }
            ok
        }
    };
    if !authenticated {
        return Err(format!(
            "ssh: authentication as {} on {}:{port} was refused",
            c.user, c.host
        ));
    }
    let mut channel = session
        .channel_open_session()
        .await
        .map_err(|e| format!("ssh: {e}"))?;
    channel
        .exec(true, command)
        .await
        .map_err(|e| format!("ssh: {e}"))?;
    let (mut stdout, mut stderr, mut status) = (Vec::new(), Vec::new(), None);
    while let Some(message) = channel.wait().await {
        match message {
            russh::ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
            russh::ChannelMsg::ExtendedData { data, .. } => stderr.extend_from_slice(&data),
            russh::ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            _ => {}
        }
    }
    let _ = session
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    match status {
        Some(0) => Ok(String::from_utf8_lossy(&stdout).into_owned()),
        other => Err(format!(
            "ssh: the command exited with {}: {}",
            other.map_or("no status".to_string(), |s| s.to_string()),
            String::from_utf8_lossy(&stderr).trim()
        )),
    }
}

/// Starts the command in the background, in a session of its own (so a long-running
/// agent does not hold the ssh session), and reports its process group.
async fn start_ssh(c: &SshConfig, launch: &Launch<'_>) -> Result<Started, String> {
    let env = launch.agent_env(&c.env);
    let quote = crate::agent::shell_quote;
    let exports: Vec<String> = env
        .iter()
        .map(|(k, v)| format!("export {k}={};", quote(v)))
        .collect();
    let cd = c
        .working_directory
        .as_deref()
        .map(|d| format!("cd {} &&", quote(d)))
        .unwrap_or_default();
    let script = format!(
        "{cd} {} setsid nohup sh -c {} </dev/null >/dev/null 2>&1 & echo $!",
        exports.join(" "),
        quote(&c.command)
    );
    let out = run_ssh(c, &script).await?;
    let pid = out.trim().parse::<u32>().ok();
    Ok(Started {
        detail: format!("started on {} (pid {})", c.host, out.trim()),
        pid,
    })
}

/// A Job's name for a spin-up: the target's `jobNamePrefix` (default: its name), made a
/// DNS label, and the spin-up id's first part. Derived, so it is known after a restart too.
pub fn job_name(c: &KubernetesConfig, target: &str, spin_up_id: &str) -> String {
    let prefix: String = c
        .job_name_prefix
        .as_deref()
        .unwrap_or(target)
        .to_ascii_lowercase()
        .chars()
        .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '-' })
        .collect();
    let prefix = prefix.trim_matches('-');
    let short: String = spin_up_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect();
    let prefix: String = prefix.chars().take(63 - short.len() - 1).collect();
    format!(
        "{}-{short}",
        if prefix.is_empty() {
            "weft-agent"
        } else {
            &prefix
        }
    )
}

async fn kube_jobs(c: &KubernetesConfig) -> Result<kube::Api<Job>, String> {
    let client = match &c.kubeconfig_path {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {path}: {e}"))?;
            let config = kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .map_err(|e| format!("kubeconfig {path}: {e}"))?;
            kube::Client::try_from(config).map_err(|e| e.to_string())?
        }
        None => kube::Client::try_default()
            .await
            .map_err(|e| format!("no in-cluster Kubernetes credentials: {e}"))?,
    };
    Ok(kube::Api::namespaced(client, &c.namespace))
}

fn kube_error(e: kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!(
            "Kubernetes answered {} {}: {}",
            status.code, status.reason, status.message
        ),
        other => format!("Kubernetes: {other}"),
    }
}

async fn start_kubernetes(c: &KubernetesConfig, launch: &Launch<'_>) -> Result<Started, String> {
    let target = launch.target;
    let name = job_name(c, &target.name, launch.spin_up_id);
    let env = launch.agent_env(&c.env);
    let labels = serde_json::json!({
        "app.kubernetes.io/managed-by": "weft",
        "weft.dev/spin-up-id": launch.spin_up_id,
        "weft.dev/target-id": target.id,
    });
    let mut container = serde_json::json!({
        "name": "agent",
        "image": c.image,
        "env": env.iter().map(|(k, v)| serde_json::json!({"name": k, "value": v})).collect::<Vec<_>>(),
    });
    if !c.command.is_empty() {
        container["command"] = serde_json::json!(c.command);
    }
    if !c.args.is_empty() {
        container["args"] = serde_json::json!(c.args);
    }
    if let Some(r) = &c.resources {
        let mut amounts = serde_json::Map::new();
        if let Some(cpu) = &r.cpu {
            amounts.insert("cpu".into(), cpu.clone().into());
        }
        if let Some(memory) = &r.memory {
            amounts.insert("memory".into(), memory.clone().into());
        }
        container["resources"] = serde_json::json!({"requests": amounts, "limits": amounts});
    }
    let mut pod = serde_json::json!({"restartPolicy": "Never", "containers": [container]});
    if let Some(account) = &c.service_account {
        pod["serviceAccountName"] = account.clone().into();
    }
    if let Some(secret) = &c.image_pull_secret {
        pod["imagePullSecrets"] = serde_json::json!([{"name": secret}]);
    }
    let mut spec = serde_json::json!({"backoffLimit": 0, "template": {"metadata": {"labels": labels}, "spec": pod}});
    if let Some(ttl) = c.ttl_seconds_after_finished {
        spec["ttlSecondsAfterFinished"] = ttl.into();
    }
    let job: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }))
    .map_err(|e| format!("cannot build the Job: {e}"))?;
    let jobs = kube_jobs(c).await?;
    jobs.create(&kube::api::PostParams::default(), &job)
        .await
        .map_err(kube_error)?;
    Ok(Started {
        detail: format!("job {name} in namespace {}", c.namespace),
        pid: None,
    })
}

/// The API is reachable and the credentials may list Jobs in the namespace.
async fn check_kubernetes(c: &KubernetesConfig) -> Result<(), String> {
    let jobs = kube_jobs(c).await?;
    jobs.list(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(kube_error)?;
    Ok(())
}

async fn stop_kubernetes(
    c: &KubernetesConfig,
    target: &str,
    spin_up_id: &str,
) -> Result<(), String> {
    let name = job_name(c, target, spin_up_id);
    let jobs = kube_jobs(c).await?;
    match jobs
        .delete(&name, &kube::api::DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        // Already gone (its TTL, or someone else): nothing left to stop.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(kube_error(e)),
    }
}

async fn stop_group(pid: u32) {
    let alive = |pid: u32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    // SAFETY: signalling a process group this Weft started.
    unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGTERM) };
    for _ in 0..50 {
        if !alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_dns_labels() {
        let id = "0f3c5e2a-1111-4222-8333-444455556666";
        let named = KubernetesConfig {
            job_name_prefix: Some("Weft Agent!".into()),
            ..Default::default()
        };
        assert_eq!(job_name(&named, "ignored", id), "weft-agent-0f3c5e2a");
        let long = KubernetesConfig::default();
        let name = job_name(&long, &"x".repeat(200), id);
        assert!(name.len() <= 63 && name.ends_with("-0f3c5e2a"), "{name}");
        assert_eq!(job_name(&long, "***", id), "weft-agent-0f3c5e2a");
    }

    #[test]
    fn local_health_checks_look_for_the_program() {
        let ok = LocalConfig {
            command: "sh -c true".into(),
            ..Default::default()
        };
        assert!(check_local(&ok).is_ok());
        let missing = LocalConfig {
            command: "no-such-agent-binary --x".into(),
            ..Default::default()
        };
        assert!(check_local(&missing).is_err_and(|e| e.contains("no-such-agent-binary")));
        let bad_dir = LocalConfig {
            command: "true".into(),
            working_directory: Some("/no/such/dir".into()),
            ..Default::default()
        };
        assert!(check_local(&bad_dir).is_err());
    }
}
