//! `ssh` (russh): connects with a pinned or known host key and a key file or the ssh
//! agent, and starts the agent's command in the background in a session of its own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use events::target::SshConfig;
use projections::{SpinUp, Target};

use super::{Launch, Mechanism, MechanismError, Mechanisms, Started};

fn failed(e: impl std::fmt::Display) -> MechanismError {
    MechanismError::Failed(format!("ssh: {e}"))
}

/// Quotes for `sh`; a value with a NUL byte cannot be passed at all.
fn quote(value: &str) -> Result<String, MechanismError> {
    shlex::try_quote(value)
        .map(|q| q.into_owned())
        .map_err(|e| MechanismError::Config(format!("cannot pass {value:?} to a shell: {e}")))
}

impl Mechanism for SshConfig {
    /// Starts the command in the background, in a session of its own (so a long-running
    /// agent does not hold the ssh session), and reports its process group.
    async fn start(&self, _: &Mechanisms, launch: &Launch<'_>) -> Result<Started, MechanismError> {
        let mut exports = Vec::new();
        for (k, v) in launch.agent_env(&self.env) {
            exports.push(format!("export {k}={};", quote(&v)?));
        }
        let cd = match self.working_directory.as_deref() {
            Some(d) => format!("cd {} &&", quote(d)?),
            None => String::new(),
        };
        let script = format!(
            "{cd} {} setsid nohup sh -c {} </dev/null >/dev/null 2>&1 & echo $!",
            exports.join(" "),
            quote(&self.command)?
        );
        let out = run(self, &script).await?;
        Ok(Started {
            detail: format!("started on {} (pid {})", self.host, out.trim()),
            pid: out.trim().parse::<u32>().ok(),
        })
    }

    /// Connects, authenticates and runs `true`.
    async fn check(&self, _: &Mechanisms) -> Result<(), MechanismError> {
        run(self, "true").await.map(|_| ())
    }

    /// Kills the remote process group, started with setsid.
    async fn stop(
        &self,
        _: &Mechanisms,
        _: &Target,
        spin_up: &SpinUp,
    ) -> Result<(), MechanismError> {
        match spin_up.pid {
            Some(pid) => run(self, &format!("kill -TERM -- -{pid} 2>/dev/null; true"))
                .await
                .map(|_| ()),
            None => Ok(()),
        }
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
async fn run(c: &SshConfig, command: &str) -> Result<String, MechanismError> {
    let port = c.port.unwrap_or(22);
    let pinned = c
        .host_key
        .as_deref()
        .map(|k| {
            russh::keys::PublicKey::from_openssh(k.trim()).map_err(|e| {
                MechanismError::Config(format!("hostKey is not an OpenSSH public key: {e}"))
            })
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
            return Err(MechanismError::Timeout(format!(
                "ssh: no connection to {}:{port} within {timeout:?}",
                c.host
            )))
        }
        Ok(Err(e)) => {
            let why = rejected.lock().unwrap_or_else(|p| p.into_inner()).take();
            return Err(match why {
                Some(why) => MechanismError::Refused {
                    status: None,
                    message: why,
                },
                None => MechanismError::Unreachable(format!(
                    "ssh: cannot connect to {}:{port}: {e}",
                    c.host
                )),
            });
        }
        Ok(Ok(session)) => session,
    };
    let authenticated = match &c.private_key_path {
        Some(path) => {
            let key = russh::keys::load_secret_key(path, None).map_err(|e| {
                MechanismError::MissingSecret(format!("ssh: cannot read the key {path}: {e}"))
            })?;
            let hash = session
                .best_supported_rsa_hash()
                .await
                .map_err(failed)?
                .flatten();
            session
                .authenticate_publickey(
                    &c.user,
                    russh::keys::PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                )
                .await
                .map_err(failed)?
                .success()
        }
        None => {
            let mut agent = russh::keys::agent::client::AgentClient::connect_env()
                .await
                .map_err(|e| {
                    MechanismError::MissingSecret(format!(
                        "ssh: no privateKeyPath and no ssh agent ({e})"
                    ))
                })?;
            let identities = agent.request_identities().await.map_err(failed)?;
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
        return Err(MechanismError::Refused {
            status: None,
            message: format!(
                "ssh: authentication as {} on {}:{port} was refused",
                c.user, c.host
            ),
        });
    }
    let mut channel = session.channel_open_session().await.map_err(failed)?;
    channel.exec(true, command).await.map_err(failed)?;
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
        other => Err(MechanismError::Failed(format!(
            "ssh: the command exited with {}: {}",
            other.map_or("no status".to_string(), |s| s.to_string()),
            String::from_utf8_lossy(&stderr).trim()
        ))),
    }
}
