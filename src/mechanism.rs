//! The ways Weft starts agents. Each mechanism can start an agent for a spin-up, check
//! that it could (the health check behind `POST /api/targets/{id}/test`), and stop what it
//! started.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use events::target::{LocalConfig, MechanismConfig};
use projections::Target;
use tokio::io::{AsyncBufReadExt, BufReader};

/// What an agent started for a spin-up is told (as environment variables), so that it
/// registers linked to the spin-up, its target and its project.
pub struct Launch<'a> {
    pub spin_up_id: &'a str,
    pub target: &'a Target,
    pub project: &'a str,
    pub nats_url: &'a str,
    pub work_id: Option<&'a str>,
}

pub struct Started {
    pub detail: String,
    pub pid: Option<u32>,
}

/// Processes Weft owns (local targets with `detached: false`): stopped when Weft stops.
#[derive(Default)]
pub struct Mechanisms {
    owned: Mutex<HashSet<u32>>,
}

fn unavailable(config: &MechanismConfig) -> String {
    format!(
        "the {} mechanism is not available in this build of weft (only local is)",
        config.mechanism().as_str()
    )
}

impl Mechanisms {
    pub async fn start(&self, launch: &Launch<'_>) -> Result<Started, String> {
        match &launch.target.config {
            MechanismConfig::Local(c) => self.start_local(c, launch).await,
            other => Err(unavailable(other)),
        }
    }

    pub async fn check(&self, config: &MechanismConfig) -> Result<(), String> {
        match config {
            MechanismConfig::Local(c) => check_local(c),
            other => Err(unavailable(other)),
        }
    }

    /// Stops what a spin-up started. For `local`, the process group `pid` leads.
    pub async fn stop(&self, config: &MechanismConfig, pid: Option<u32>) -> Result<(), String> {
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
            (other, _) => Err(unavailable(other)),
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
        // The target's own settings first, so its `env` can override them.
        command
            .env("AGENT_TYPE", &target.agent_type)
            .env("AGENT_CAPABILITIES", target.capabilities.join(","))
            .env("AGENT_BOUNDARIES", target.boundaries.join(","))
            .envs(&c.env)
            .env("WEFT_SPINUP_ID", launch.spin_up_id)
            .env("WEFT_TARGET_ID", &target.id)
            .env("WEFT_WORK_ID", launch.work_id.unwrap_or_default())
            .env("NATS_URL", launch.nats_url)
            .env("LOOMINAL_PROJECT_ID", launch.project)
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
