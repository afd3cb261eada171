//! A git workspace per work item: one bare mirror per repository in the agent's workspaces
//! folder, fetched before every item (never a stale base), and a worktree per item on a
//! readable branch (`weft/<short id>-<slug>`). When the command ends, what it left
//! uncommitted is committed, the branch is measured (commits, files, lines) and pushed
//! when asked, and the worktree is removed; the branch stays. Several agents may share a
//! workspaces folder: a mirror is changed under a file lock, and each worktree names the
//! process that owns it, so pruning at start removes only those whose owner is gone.

use std::path::{Path, PathBuf};

use events::work::{WorkspaceOutcome, WorkspaceSpec};
use sha2::{Digest, Sha256};

use crate::protocol::Assignment;

/// Where and how this agent keeps workspaces.
pub struct Workspaces {
    root: PathBuf,
    max_worktrees: usize,
    setup_command: Option<String>,
    /// Worktrees this process holds now.
    held: std::sync::atomic::AtomicUsize,
}

/// An exclusive lock on a mirror across processes, held until dropped (git itself would
/// refuse a second fetch or worktree change at once rather than wait).
struct MirrorLock(#[allow(dead_code)] std::fs::File);

async fn lock_mirror(mirror: &Path) -> Result<MirrorLock, String> {
    let path = mirror.with_extension("lock");
    tokio::task::spawn_blocking(move || {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // SAFETY: flock on a descriptor we own; released when the file closes.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!("cannot lock {}", path.display()));
        }
        Ok(MirrorLock(file))
    })
    .await
    .map_err(|e| e.to_string())?
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only asks whether the process exists.
    pid > 0 && unsafe { libc::kill(pid as libc::pid_t, 0) } == 0
}

/// A worktree made for one item.
pub struct Prepared {
    pub path: PathBuf,
    pub branch: String,
    mirror: PathBuf,
    spec: WorkspaceSpec,
    git_ref: String,
    base_commit: String,
}

/// Runs git with `args` in `dir`; its trimmed output, or what it said on failure.
async fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        // No background lock holders, and never a prompt for credentials on a terminal.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "git {} failed: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `fix the parser, now!` -> `fix-the-parser-now`, at most 40 characters.
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
        if out.len() >= 40 {
            break;
        }
    }
    out.trim_end_matches('-').to_string()
}

/// The branch an item's attempt works on.
pub fn branch_name(a: &Assignment) -> String {
    let short: String = a.work_id.chars().filter(|c| *c != '-').take(8).collect();
    let slug = slug(&a.description);
    let mut name = format!("weft/{short}");
    if !slug.is_empty() {
        name = format!("{name}-{slug}");
    }
    if a.attempt > 1 {
        name = format!("{name}-attempt{}", a.attempt);
    }
    name
}

/// `3 files changed, 10 insertions(+), 2 deletions(-)` -> (3, 10, 2).
pub fn parse_shortstat(text: &str) -> (u32, u32, u32) {
    let mut found = (0, 0, 0);
    for part in text.split(',') {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let n = n.parse().unwrap_or(0);
        if what.starts_with("file") {
            found.0 = n;
        } else if what.starts_with("insertion") {
            found.1 = n;
        } else if what.starts_with("deletion") {
            found.2 = n;
        }
    }
    found
}

impl Workspaces {
    pub fn new(root: PathBuf, max_worktrees: usize, setup_command: Option<String>) -> Self {
        Workspaces {
            root,
            max_worktrees: max_worktrees.max(1),
            setup_command: setup_command.filter(|c| !c.trim().is_empty()),
            held: Default::default(),
        }
    }

    fn worktrees(&self) -> PathBuf {
        self.root.join("worktrees")
    }

    fn mirror_of(&self, repo: &str) -> PathBuf {
        let key = hex::encode(&Sha256::digest(repo.as_bytes())[..8]);
        self.root.join("mirrors").join(format!("{key}.git"))
    }

    /// Removes the worktrees whose owning process is gone (a previous run of this agent,
    /// or another that died), and git's records of them.
    pub async fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(self.worktrees()) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "owner") {
                continue;
            }
            let owner = std::fs::read_to_string(path.with_extension("owner"))
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(0);
            if alive(owner) {
                continue;
            }
            tracing::info!(path = %path.display(), "removing a stale worktree");
            let _ = std::fs::remove_dir_all(&path);
            let _ = std::fs::remove_file(path.with_extension("owner"));
        }
        if let Ok(mirrors) = std::fs::read_dir(self.root.join("mirrors")) {
            for mirror in mirrors.flatten().filter(|m| m.path().is_dir()) {
                if let Ok(_lock) = lock_mirror(&mirror.path()).await {
                    let _ = git(&mirror.path(), &["worktree", "prune"]).await;
                }
            }
        }
    }

    /// The mirror of `repo`, cloned once and fetched now.
    async fn fetched_mirror(&self, repo: &str) -> Result<PathBuf, String> {
        let mirror = self.mirror_of(repo);
        if !mirror.join("HEAD").exists() {
            let parent = self.root.join("mirrors");
            let target = mirror.to_string_lossy().to_string();
            git(
                &parent,
                &["clone", "--bare", "--quiet", "--", repo, &target],
            )
            .await?;
            // Remote branches apart from ours, so a fetch never moves an item's branch.
            git(
                &mirror,
                &[
                    "config",
                    "remote.origin.fetch",
                    "+refs/heads/*:refs/remotes/origin/*",
                ],
            )
            .await?;
        }
        git(&mirror, &["fetch", "--prune", "--quiet", "origin"]).await?;
        // Which branch is the remote's default, for items that name no ref.
        let _ = git(&mirror, &["remote", "set-head", "origin", "--auto"]).await;
        Ok(mirror)
    }

    /// The ref to start from, by name, and its commit.
    async fn resolve(
        &self,
        mirror: &Path,
        spec: &WorkspaceSpec,
    ) -> Result<(String, String), String> {
        let commit = |r: String| async move {
            git(
                mirror,
                &[
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    &format!("{r}^{{commit}}"),
                ],
            )
            .await
        };
        match &spec.git_ref {
            Some(r) => {
                if let Ok(c) = commit(format!("refs/remotes/origin/{r}")).await {
                    return Ok((r.clone(), c));
                }
                commit(r.clone())
                    .await
                    .map(|c| (r.clone(), c))
                    .map_err(|_| format!("the repository has no branch, tag or commit '{r}'"))
            }
            None => {
                let head = git(
                    mirror,
                    &["symbolic-ref", "--short", "refs/remotes/origin/HEAD"],
                )
                .await
                .map_err(|_| "the repository has no default branch to start from".to_string())?;
                let name = head.trim_start_matches("origin/").to_string();
                let c = commit(format!("refs/remotes/origin/{name}")).await?;
                Ok((name, c))
            }
        }
    }

    /// A worktree for `a` on its own branch, set up and ready for the command.
    pub async fn prepare(&self, a: &Assignment, spec: &WorkspaceSpec) -> Result<Prepared, String> {
        use std::sync::atomic::Ordering;
        let in_use = self.held.fetch_add(1, Ordering::SeqCst);
        if in_use >= self.max_worktrees {
            self.held.fetch_sub(1, Ordering::SeqCst);
            return Err(format!(
                "this agent already holds {in_use} worktrees (at most {})",
                self.max_worktrees
            ));
        }
        let prepared = self.add_worktree(a, spec).await;
        if prepared.is_err() {
            self.held.fetch_sub(1, Ordering::SeqCst);
        }
        prepared
    }

    async fn add_worktree(&self, a: &Assignment, spec: &WorkspaceSpec) -> Result<Prepared, String> {
        std::fs::create_dir_all(self.worktrees()).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(self.root.join("mirrors")).map_err(|e| e.to_string())?;
        let mirror_path = self.mirror_of(&spec.repo);
        let lock = lock_mirror(&mirror_path).await?;
        let mirror = self.fetched_mirror(&spec.repo).await?;
        let (git_ref, base_commit) = self.resolve(&mirror, spec).await?;
        let mut branch = branch_name(a);
        if git(
            &mirror,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{branch}"),
            ],
        )
        .await
        .is_ok()
        {
            // Left by an attempt we do not know of: never reuse its branch.
            let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..6].to_string();
            branch = format!("{branch}-{suffix}");
        }
        let short: String = a.work_id.chars().filter(|c| *c != '-').take(12).collect();
        let path = self.worktrees().join(format!("{short}-{}", a.attempt));
        std::fs::write(path.with_extension("owner"), std::process::id().to_string())
            .map_err(|e| e.to_string())?;
        let target = path.to_string_lossy().to_string();
        git(
            &mirror,
            &[
                "worktree",
                "add",
                "--quiet",
                "-b",
                &branch,
                &target,
                &base_commit,
            ],
        )
        .await?;
        let prepared = Prepared {
            path,
            branch,
            mirror,
            spec: spec.clone(),
            git_ref,
            base_commit,
        };
        drop(lock);
        if let Some(setup) = &self.setup_command {
            let status = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(setup)
                .current_dir(&prepared.path)
                .stdin(std::process::Stdio::null())
                .output()
                .await;
            let failed = match status {
                Ok(out) if out.status.success() => None,
                Ok(out) => Some(format!(
                    "the setup command failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => Some(format!("cannot run the setup command: {e}")),
            };
            if let Some(error) = failed {
                self.discard(&prepared).await;
                return Err(error);
            }
        }
        Ok(prepared)
    }

    /// What the attempt left: commits what the command did not, measures the branch,
    /// pushes it when asked, and removes the worktree (the branch stays).
    pub async fn finish(
        &self,
        p: &Prepared,
        description: &str,
    ) -> Result<WorkspaceOutcome, String> {
        let measured = self.measure(p, description).await;
        self.remove(p).await;
        measured
    }

    async fn measure(&self, p: &Prepared, description: &str) -> Result<WorkspaceOutcome, String> {
        if !git(&p.path, &["status", "--porcelain"]).await?.is_empty() {
            git(&p.path, &["add", "-A"]).await?;
            let title: String = description
                .lines()
                .next()
                .unwrap_or("work")
                .chars()
                .take(72)
                .collect();
            let message =
                format!("{title}\n\nLeft uncommitted by the agent; committed by weft agent.");
            let mut args = vec!["commit", "--quiet", "--no-verify", "-m", &message];
            let anonymous = git(&p.path, &["config", "user.email"]).await.is_err();
            if anonymous {
                args.splice(
                    0..0,
                    [
                        "-c",
                        "user.name=weft agent",
                        "-c",
                        "user.email=weft-agent@localhost",
                    ],
                );
            }
            git(&p.path, &args).await?;
        }
        let head_commit = git(&p.path, &["rev-parse", "HEAD"]).await?;
        let range = format!("{}..{head_commit}", p.base_commit);
        let commits = git(&p.path, &["rev-list", "--count", &range])
            .await?
            .parse()
            .unwrap_or(0);
        let (files_changed, insertions, deletions) = parse_shortstat(
            &git(
                &p.path,
                &["diff", "--shortstat", &p.base_commit, &head_commit],
            )
            .await?,
        );
        let pushed = if p.spec.push {
            let refspec = format!("refs/heads/{0}:refs/heads/{0}", p.branch);
            match git(&p.path, &["push", "--quiet", "origin", &refspec]).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(branch = p.branch, "not pushed: {e}");
                    false
                }
            }
        } else {
            false
        };
        Ok(WorkspaceOutcome {
            repo: p.spec.repo.clone(),
            git_ref: p.git_ref.clone(),
            base_commit: p.base_commit.clone(),
            branch: p.branch.clone(),
            head_commit,
            commits,
            files_changed,
            insertions,
            deletions,
            pushed,
        })
    }

    /// Removes the worktree; its branch stays in the mirror.
    pub async fn remove(&self, p: &Prepared) {
        self.discard(p).await;
        self.held.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }

    async fn discard(&self, p: &Prepared) {
        let target = p.path.to_string_lossy().to_string();
        let _mirror = lock_mirror(&p.mirror).await;
        if let Err(e) = git(&p.mirror, &["worktree", "remove", "--force", &target]).await {
            tracing::warn!(
                path = target,
                "worktree not removed by git ({e}); removing the folder"
            );
            let _ = std::fs::remove_dir_all(&p.path);
            let _ = git(&p.mirror, &["worktree", "prune"]).await;
        }
        let _ = std::fs::remove_file(p.path.with_extension("owner"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_are_readable_and_distinct_per_attempt() {
        let mut a = Assignment {
            work_id: "7f1c2a9e-0000-4000-8000-000000000001".into(),
            lease_id: "l".into(),
            task_id: "t".into(),
            description: "Fix the parser: handle `--` args, now!".into(),
            capability: "rust".into(),
            boundary: "personal".into(),
            priority: 5,
            attempt: 1,
            deadline: None,
            context_data: None,
            workspace: None,
            max_cost_usd: None,
            resume_session_id: None,
        };
        assert_eq!(
            branch_name(&a),
            "weft/7f1c2a9e-fix-the-parser-handle-args-now"
        );
        a.attempt = 2;
        assert_eq!(
            branch_name(&a),
            "weft/7f1c2a9e-fix-the-parser-handle-args-now-attempt2"
        );
        a.description = "!!!".into();
        a.attempt = 1;
        assert_eq!(branch_name(&a), "weft/7f1c2a9e");
        assert!(slug(&"long words ".repeat(20)).len() <= 40);
    }

    #[test]
    fn shortstats_are_read_whatever_is_missing() {
        assert_eq!(
            parse_shortstat(" 3 files changed, 10 insertions(+), 2 deletions(-)"),
            (3, 10, 2)
        );
        assert_eq!(
            parse_shortstat(" 1 file changed, 1 insertion(+)"),
            (1, 1, 0)
        );
        assert_eq!(
            parse_shortstat(" 1 file changed, 4 deletions(-)"),
            (1, 0, 4)
        );
        assert_eq!(parse_shortstat(""), (0, 0, 0));
    }
}
