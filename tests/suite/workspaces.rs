//! A git workspace per item, with real repositories made by the test: a bare "remote", two
//! items running at once on one agent, each in its own worktree on its own branch; what
//! each changed recorded on the item, the branch pushed when asked and kept when not,
//! worktrees removed afterwards and stale ones pruned at start.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{call, client, fast_env, poll_until, AgentProcess, NatsServer, Weft};
use serde_json::{json, Value};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@localhost")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@localhost")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_work_in_worktrees_of_their_own_and_their_branches_are_recorded() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let remote = tmp.path().join("remote.git");
    let seed = tmp.path().join("seed");
    git(
        tmp.path(),
        &["init", "--quiet", "--bare", "-b", "main", "remote.git"],
    );
    git(tmp.path(), &["clone", "--quiet", "remote.git", "seed"]);
    std::fs::write(seed.join("README.md"), "a project\n").expect("write");
    git(&seed, &["add", "README.md"]);
    git(&seed, &["commit", "--quiet", "-m", "first"]);
    git(&seed, &["tag", "v1"]);
    git(&seed, &["push", "--quiet", "origin", "main", "v1"]);
    let base = git(&seed, &["rev-parse", "HEAD"]);

    // A worktree left by an agent that died is pruned when an agent starts.
    let workspaces = tmp.path().join("workspaces");
    let stale = workspaces.join("worktrees").join("deadbeef-1");
    std::fs::create_dir_all(&stale).expect("stale worktree");
    std::fs::write(stale.with_extension("owner"), "999999999").expect("owner");

    let nats = NatsServer::start();
    let weft = Weft::start(&fast_env(&nats));
    let pwds = tmp.path().join("pwds");
    std::fs::write(&pwds, "").expect("pwds");
    // Each command waits until both run (so they run at once), commits one file and
    // leaves another uncommitted.
    let command = format!(
        "pwd >> {pwds}; for i in $(seq 200); do [ $(wc -l < {pwds}) -ge 2 ] && break; sleep 0.05; done; \
         echo \"$WEFT_WORK_DESCRIPTION\" > notes.txt && git add notes.txt && \
         git -c user.name=agent -c user.email=agent@localhost commit -qm notes && \
         echo more > extra.txt && echo done on \"$WEFT_BRANCH\"",
        pwds = pwds.display()
    );
    let workspaces_dir = workspaces.display().to_string();
    let agent = AgentProcess::start_with(
        &nats,
        "claude-code",
        "rust",
        "personal",
        2,
        &command,
        &[("WEFT_WORKSPACES", workspaces_dir.as_str())],
    );
    poll_until(&weft, "/api/agents", Duration::from_secs(20), |b| {
        b["total"].as_u64() == Some(1)
    })
    .await;
    assert!(!stale.exists(), "the stale worktree was pruned");

    let http = client();
    let repo = remote.display().to_string();
    let submit = |description: &str, workspace: Value| {
        json!({"description": description, "capability": "rust", "boundary": "personal",
               "workspace": workspace})
    };
    let mut ids = Vec::new();
    for body in [
        submit("Add the notes file", json!({"repo": repo, "push": true})),
        submit("Notes from the tag", json!({"repo": repo, "ref": "v1"})),
    ] {
        let (status, created) = call(http.post(weft.url("/api/work")).json(&body)).await;
        assert_eq!(status, 201, "{created}");
        ids.push(created["workItemId"].as_str().expect("id").to_string());
    }
    let mut items = Vec::new();
    for id in &ids {
        let item = poll_until(
            &weft,
            &format!("/api/work/{id}"),
            Duration::from_secs(60),
            |w| w["status"] == "completed" || w["status"] == "failed",
        )
        .await;
        assert_eq!(item["status"], "completed", "{item}\n{}", agent.log_text());
        items.push(item);
    }

    let ran_in: Vec<String> = std::fs::read_to_string(&pwds)
        .expect("pwds")
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(ran_in.len(), 2, "{ran_in:?}");
    assert_ne!(ran_in[0], ran_in[1], "each in its own worktree");
    for dir in &ran_in {
        assert!(dir.contains("/workspaces/worktrees/"), "{dir}");
    }

    let pushed = &items[0]["workspace"];
    let short: String = ids[0].chars().filter(|c| *c != '-').take(8).collect();
    assert_eq!(pushed["repo"], repo.as_str());
    assert_eq!(pushed["ref"], "main", "the remote's default branch");
    assert_eq!(pushed["baseCommit"], base.as_str());
    assert_eq!(
        pushed["branch"],
        format!("weft/{short}-add-the-notes-file").as_str(),
        "{pushed}"
    );
    assert_ne!(pushed["headCommit"], base.as_str());
    // The agent's commit, and Weft's of what it left uncommitted.
    assert_eq!(pushed["commits"], 2, "{pushed}");
    assert_eq!(pushed["filesChanged"], 2, "{pushed}");
    assert_eq!(pushed["insertions"], 2, "{pushed}");
    assert_eq!(pushed["deletions"], 0, "{pushed}");
    assert_eq!(pushed["pushed"], true);
    let branch = pushed["branch"].as_str().expect("branch");
    let on_remote = git(&remote, &["rev-parse", &format!("refs/heads/{branch}")]);
    assert_eq!(on_remote, pushed["headCommit"].as_str().expect("head"));
    let notes = git(&remote, &["show", &format!("{branch}:notes.txt")]);
    assert_eq!(notes, "Add the notes file");

    let kept = &items[1]["workspace"];
    assert_eq!(kept["ref"], "v1");
    assert_eq!(kept["baseCommit"], base.as_str());
    assert_eq!(kept["pushed"], false);
    let kept_branch = kept["branch"].as_str().expect("branch");
    let remote_branches = git(&remote, &["branch", "--list"]);
    assert!(
        !remote_branches.contains(kept_branch),
        "not pushed: {remote_branches}"
    );
    // The branch stays in the agent's mirror; the worktrees are gone.
    let mirrors: Vec<_> = std::fs::read_dir(workspaces.join("mirrors"))
        .expect("mirrors")
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert_eq!(mirrors.len(), 1, "one mirror per repository");
    let in_mirror = git(
        &mirrors[0].path(),
        &["rev-parse", &format!("refs/heads/{kept_branch}")],
    );
    assert_eq!(in_mirror, kept["headCommit"].as_str().expect("head"));
    let left: Vec<_> = std::fs::read_dir(workspaces.join("worktrees"))
        .expect("worktrees")
        .flatten()
        .collect();
    assert!(left.is_empty(), "worktrees removed: {left:?}");

    // What git could read as an option is refused before anything runs.
    for (workspace, field) in [
        (json!({"repo": "--upload-pack=touch /tmp/x"}), "repo"),
        (json!({"repo": repo, "ref": "main..evil"}), "workspace.ref"),
    ] {
        let (status, answer) = call(
            http.post(weft.url("/api/work"))
                .json(&submit("bad", workspace)),
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains(field)),
            "{field} named: {answer}"
        );
    }
}
