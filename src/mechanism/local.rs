//! `local`: a child process of Weft, in its own process group, its output in Weft's log.

use std::process::Stdio;
use std::time::Duration;

use events::target::LocalConfig;
use projections::{SpinUp, Target};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{Launch, Mechanism, MechanismError, Mechanisms, Started};

impl Mechanism for LocalConfig {
    async fn start(
        &self,
        shared: &Mechanisms,
        launch: &Launch<'_>,
    ) -> Result<Started, MechanismError> {
        let words = if self.args.is_empty() {
            plain(&self.command)
        } else {
            None
        };
        let mut command = if let Some(words) = words {
            // No shell in between: the process Weft ties to its life is the agent itself
            // (a shell would die of that tie and leave what it started running).
            let mut direct = tokio::process::Command::new(&words[0]);
            direct.args(&words[1..]);
            direct
        } else if self.args.is_empty() {
            let mut sh = tokio::process::Command::new("sh");
            sh.arg("-c").arg(&self.command);
            sh
        } else {
            let mut direct = tokio::process::Command::new(&self.command);
            direct.args(&self.args);
            direct
        };
        command
            .envs(launch.agent_env(&self.env))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: stopping it stops everything it started.
            .process_group(0);
        if let Some(dir) = &self.working_directory {
            command.current_dir(dir);
        }
        if self.detached == Some(false) {
            // And when the command runs through a shell, the agent under it watches Weft.
            command.env("WEFT_OWNER_PID", std::process::id().to_string());
            // Tied to Weft's life even when Weft is killed: the kernel sends it SIGTERM when
            // Weft goes. (Detached agents outlive Weft, and leave by their orphan timeout.)
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| MechanismError::Failed(format!("cannot start `{}`: {e}", self.command)))?;
        let pid = child.id().ok_or_else(|| {
            MechanismError::Failed("the process exited before it could be tracked".into())
        })?;
        let name = launch.target.name.clone();
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
            let status = status.map_err(|e| MechanismError::Failed(e.to_string()))?;
            if !status.success() {
                return Err(MechanismError::Failed(format!(
                    "`{}` exited at start with {status}",
                    self.command
                )));
            }
        } else {
            tokio::spawn(async move {
                // Reap it when it ends, and say so.
                if let Ok(status) = child.wait().await {
                    tracing::info!(target_name = name, pid, %status, "spun-up process exited");
                }
            });
        }
        if self.detached == Some(false) {
            shared
                .owned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(pid);
        }
        Ok(Started {
            detail: format!("pid {pid}"),
            pid: Some(pid),
        })
    }

    /// The program exists and may be executed, and its working directory exists.
    async fn check(&self, _shared: &Mechanisms) -> Result<(), MechanismError> {
        check(self)
    }

    async fn stop(
        &self,
        shared: &Mechanisms,
        _target: &Target,
        spin_up: &SpinUp,
    ) -> Result<(), MechanismError> {
        if let Some(pid) = spin_up.pid {
            shared
                .owned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&pid);
            stop_group(pid).await;
        }
        Ok(())
    }
}

/// The words of a command that needs no shell (no pipes, lists, redirections, expansions
/// or globs: only words and quotes); `None` when it needs one.
fn plain(command: &str) -> Option<Vec<String>> {
    const SHELL: &[char] = &[
        '|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '*', '?', '[', ']', '{', '}', '~', '#',
        '!', '\n',
    ];
    if command.contains(SHELL) {
        return None;
    }
    let words = shlex::split(command)?;
    // `NAME=value cmd` sets a variable, and `exit` or `cd` are builtins: the shell's.
    let first = words.first()?;
    (!first.contains('=') && is_executable(first)).then_some(words)
}

/// Whether `program` (a path, or a name looked up on `PATH`) is an executable file.
fn is_executable(program: &str) -> bool {
    let executable = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        executable(std::path::Path::new(program))
    } else {
        std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(program))))
            .unwrap_or(false)
    }
}

fn check(c: &LocalConfig) -> Result<(), MechanismError> {
    if let Some(dir) = &c.working_directory {
        if !std::path::Path::new(dir).is_dir() {
            return Err(MechanismError::Config(format!(
                "working directory {dir} does not exist"
            )));
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
    if is_executable(&program) {
        Ok(())
    } else {
        Err(MechanismError::Config(format!(
            "{program} is not an executable on this machine"
        )))
    }
}

/// SIGTERM to the group, SIGKILL after 5 s if its leader is still there.
pub(super) async fn stop_group(pid: u32) {
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
    fn only_commands_without_shell_syntax_run_without_a_shell() {
        assert_eq!(
            plain("sh -c 'echo a b'"),
            Some(vec!["sh".into(), "-c".into(), "echo a b".into()])
        );
        for needs_a_shell in [
            "echo a | cat",
            "echo a; echo b",
            "echo $HOME",
            "FOO=1 env",
            "exit 3",
            "echo a > f",
            "no-such-program-here x",
        ] {
            assert_eq!(plain(needs_a_shell), None, "{needs_a_shell}");
        }
    }

    #[test]
    fn health_checks_look_for_the_program() {
        let ok = LocalConfig {
            command: "sh -c true".into(),
            ..Default::default()
        };
        assert!(check(&ok).is_ok());
        let missing = LocalConfig {
            command: "no-such-agent-binary --x".into(),
            ..Default::default()
        };
        assert!(check(&missing).is_err_and(|e| e.to_string().contains("no-such-agent-binary")));
        let bad_dir = LocalConfig {
            command: "true".into(),
            working_directory: Some("/no/such/dir".into()),
            ..Default::default()
        };
        assert!(matches!(check(&bad_dir), Err(MechanismError::Config(_))));
    }
}
