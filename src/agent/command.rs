//! Running one work item's command: filling in its placeholders, starting it in its own
//! process group, streaming its output (lines to the output stream, coarse progress to
//! the log), stopping it on cancel, and reporting how it ended.

use std::collections::VecDeque;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use super::output::{Reader, Verdict};
use super::{Outcome, Runtime};
use crate::protocol::{self, codes, Assignment};

/// Fills the command's placeholders with the item's values, quoted for `sh`. A value
/// that no shell can be given (one with a NUL byte) is an error, not a mangled command.
pub fn render_command(template: &str, a: &Assignment) -> Result<String, String> {
    let mut command = template.to_string();
    for (placeholder, value) in [
        ("{description}", &a.description),
        ("{taskId}", &a.task_id),
        ("{workId}", &a.work_id),
        ("{capability}", &a.capability),
        ("{boundary}", &a.boundary),
    ] {
        if command.contains(placeholder) {
            let quoted = shlex::try_quote(value)
                .map_err(|e| format!("cannot pass {placeholder} to a shell: {e}"))?;
            command = command.replace(placeholder, &quoted);
        }
    }
    Ok(command)
}

impl Runtime {
    pub(super) async fn execute(
        &self,
        a: &Assignment,
        mut cancelled: oneshot::Receiver<()>,
    ) -> Outcome {
        if let Err(e) = self
            .call_until_answered::<_, ()>(protocol::ACCEPT, &self.report(a))
            .await
        {
            return Outcome::Refused(e);
        }
        let command = match render_command(&self.config.command, a) {
            Ok(c) => c,
            Err(e) => return self.finish(a, failed(e), None, None).await,
        };
        let workspace = match &a.workspace {
            Some(spec) => match self.workspaces.prepare(a, spec).await {
                Ok(prepared) => Some(prepared),
                Err(e) => {
                    return self
                        .finish(a, failed(format!("no workspace: {e}")), None, None)
                        .await
                }
            },
            None => None,
        };
        tracing::info!(work = a.work_id, task = a.task_id, "running: {command}");
        let mut process = tokio::process::Command::new("sh");
        if let Some(max) = a.max_cost_usd {
            process.env("WEFT_MAX_COST_USD", max.to_string());
        }
        if let Some(session) = &a.resume_session_id {
            process.env("WEFT_RESUME_SESSION", session);
        }
        if let Some(w) = &workspace {
            process
                .current_dir(&w.path)
                .env("WEFT_WORKSPACE", &w.path)
                .env("WEFT_BRANCH", &w.branch);
        }
        let spawned = process
            .arg("-c")
            .arg(&command)
            .env("WEFT_WORK_ID", &a.work_id)
            .env("WEFT_TASK_ID", &a.task_id)
            .env("WEFT_LEASE_ID", &a.lease_id)
            .env("WEFT_WORK_DESCRIPTION", &a.description)
            .env("WEFT_CAPABILITY", &a.capability)
            .env("WEFT_BOUNDARY", &a.boundary)
            .env("WEFT_PRIORITY", a.priority.to_string())
            .env("WEFT_ATTEMPT", a.attempt.to_string())
            .env(
                "WEFT_CONTEXT_DATA",
                a.context_data
                    .as_ref()
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
            )
            .env("WEFT_PROJECT", &self.config.member.project)
            .env("WEFT_AGENT_ID", &self.id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a cancel stops everything the command started.
            .process_group(0)
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                if let Some(w) = &workspace {
                    self.workspaces.remove(w).await;
                }
                return self
                    .finish(
                        a,
                        failed(format!("cannot start the command: {e}")),
                        None,
                        None,
                    )
                    .await;
            }
        };
        if let Some(mut stdin) = child.stdin.take() {
            let description = a.description.clone();
            tokio::spawn(async move {
                let _ = stdin.write_all(description.as_bytes()).await;
            });
        }
        let (lines_tx, mut lines) = mpsc::channel::<String>(256);
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
            let tx = lines_tx.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    if tx.send(line).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(lines_tx);
        let pgid = child.id();
        let mut reader = Reader::new(self.config.output_format);
        let mut tail: VecDeque<String> = VecDeque::new();
        let mut printed = Printed::default();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut output_open = true;
        let status = loop {
            tokio::select! {
                line = lines.recv(), if output_open => match line {
                    Some(line) => {
                        if let Some(shown) = reader.line(&line, crate::time::now_ms()) {
                            printed.push(&shown);
                        }
                        tail.push_back(line);
                        if tail.len() > 200 {
                            tail.pop_front();
                        }
                        if printed.has_full_chunk() {
                            self.send_output(a, &mut printed).await;
                        }
                    }
                    None => output_open = false,
                },
                _ = tick.tick() => {
                    self.send_output(a, &mut printed).await;
                    self.send_progress(a, &mut printed).await;
                }
                _ = &mut cancelled => {
                    stop_group(pgid, &mut child).await;
                    tracing::info!(work = a.work_id, "command stopped");
                    if let Some(w) = &workspace {
                        self.workspaces.remove(w).await;
                    }
                    return Outcome::Done;
                }
                status = child.wait() => break status,
            }
        };
        // Collect what the command printed last.
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_millis(200), lines.recv()).await
        {
            if let Some(shown) = reader.line(&line, crate::time::now_ms()) {
                printed.push(&shown);
            }
            tail.push_back(line);
        }
        // Everything it printed is stored before the attempt is reported done, unless Weft
        // stops taking it.
        let mut refused = 0;
        while !printed.is_empty() && refused < 5 {
            if !self.send_output(a, &mut printed).await {
                refused += 1;
            }
        }
        let text = Vec::from(tail).join("\n");
        let last: String = text
            .chars()
            .rev()
            .take(4000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let outcome = match &workspace {
            Some(w) => match self.workspaces.finish(w, &a.description).await {
                Ok(outcome) => Some(outcome),
                Err(e) => {
                    tracing::warn!(work = a.work_id, "workspace not measured: {e}");
                    None
                }
            },
            None => None,
        };
        let verdict = match status {
            Ok(s) => match reader.verdict(s.success(), &last, crate::time::now_ms()) {
                Verdict::Failed { error, usage } if !s.success() => Verdict::Failed {
                    error: format!("the command exited with {s}: {error}"),
                    usage,
                },
                verdict => verdict,
            },
            Err(e) => failed(format!("waiting for the command failed: {e}")),
        };
        self.finish(a, verdict, Some(text), outcome).await
    }

    async fn finish(
        &self,
        a: &Assignment,
        verdict: Verdict,
        output: Option<String>,
        workspace: Option<events::work::WorkspaceOutcome>,
    ) -> Outcome {
        let mut report = self.report(a);
        report.workspace = workspace;
        let result = match verdict {
            Verdict::Completed { summary, usage } => {
                report.usage = usage;
                Ok((summary, output.unwrap_or_default()))
            }
            Verdict::Failed { error, usage } => {
                report.usage = usage;
                Err(error)
            }
            Verdict::Limited {
                message,
                until_ms,
                usage,
            } => {
                report.usage = usage;
                return self.park(report, message, until_ms).await;
            }
        };
        let operation = match result {
            Ok((summary, output)) => {
                report.message = Some(summary);
                report.output = Some(output);
                protocol::COMPLETE
            }
            Err(error) => {
                report.message = Some(error);
                report.recoverable = Some(true);
                protocol::FAIL
            }
        };
        match self.call_until_answered::<_, ()>(operation, &report).await {
            Ok(_) => {
                tracing::info!(work = a.work_id, "reported: {operation}");
                Outcome::Done
            }
            Err(e) => Outcome::Refused(e),
        }
    }
}

fn failed(error: impl Into<String>) -> Verdict {
    Verdict::Failed {
        error: error.into(),
        usage: None,
    }
}

/// What an attempt printed and has not yet sent, and where it stands: lines go to the
/// output stream in chunks; the last line and the tool in use make coarse progress.
#[derive(Default)]
struct Printed {
    unsent: VecDeque<String>,
    /// The number of the first unsent line (lines are numbered from 1 in an attempt).
    next_line: u64,
    /// The last line shown, for progress; `None` once reported.
    news: Option<String>,
    phase: Option<String>,
    /// When progress was last reported: the first news goes at once, later news at most
    /// as often as Weft records it.
    reported_at: Option<std::time::Instant>,
}

/// Lines kept unsent while Weft does not take them; older ones are dropped (their numbers
/// stay used, so a reader sees the gap).
const MAX_UNSENT_LINES: usize = 20_000;

impl Printed {
    fn push(&mut self, shown: &str) {
        if self.next_line == 0 {
            self.next_line = 1;
        }
        for line in shown.lines() {
            if let Some(tool) = line.strip_prefix("tool: ") {
                self.phase = Some(tool.to_string());
            }
            if !line.trim().is_empty() {
                self.news = Some(line.to_string());
            }
            self.unsent.push_back(line.to_string());
        }
        while self.unsent.len() > MAX_UNSENT_LINES {
            self.unsent.pop_front();
            self.next_line += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.unsent.is_empty()
    }

    fn has_full_chunk(&self) -> bool {
        self.unsent.len() >= events::output::MAX_LINES_PER_CHUNK
    }

    /// The next lines to send and the number of the first.
    fn batch(&self) -> (u64, Vec<String>) {
        let lines = self
            .unsent
            .iter()
            .take(events::output::MAX_LINES_PER_CHUNK)
            .cloned()
            .collect();
        (self.next_line, lines)
    }

    /// The first `count` unsent lines were stored.
    fn sent(&mut self, count: usize) {
        let count = count.min(self.unsent.len());
        self.unsent.drain(..count);
        self.next_line += count as u64;
    }
}

impl Runtime {
    /// Sends the next chunk of lines, best effort: what is not taken is sent next time.
    /// Whether the chunk was taken.
    async fn send_output(&self, a: &Assignment, printed: &mut Printed) -> bool {
        if printed.is_empty() {
            return true;
        }
        let (first_line, lines) = printed.batch();
        let count = lines.len();
        let report = protocol::OutputReport {
            agent_id: self.id.clone(),
            work_id: a.work_id.clone(),
            lease_id: a.lease_id.clone(),
            first_line,
            lines,
        };
        match self.call::<_, ()>(protocol::OUTPUT, &report).await {
            Ok(reply) if reply.ok => {
                printed.sent(count);
                true
            }
            Ok(reply) if reply.code.as_deref() == Some(codes::LEASE_LOST) => {
                printed.sent(count);
                self.cancel(&a.work_id);
                false
            }
            // Refused for good (for example by a Weft that does not know the operation):
            // the lines are dropped rather than resent forever.
            Ok(reply) if reply.code.as_deref() != Some(codes::UNAVAILABLE) => {
                printed.sent(count);
                false
            }
            _ => false,
        }
    }

    /// Reports coarse progress (the last line shown and the tool in use), if anything new
    /// was shown and the last report is old enough to be recorded; best effort: one try.
    async fn send_progress(&self, a: &Assignment, printed: &mut Printed) {
        let every = Duration::from_millis(decide::work::PROGRESS_EVERY_MS);
        if printed.reported_at.is_some_and(|at| at.elapsed() < every) {
            return;
        }
        let Some(news) = printed.news.take() else {
            return;
        };
        printed.reported_at = Some(std::time::Instant::now());
        let mut report = self.report(a);
        report.message = Some(news);
        report.phase = printed.phase.clone();
        if let Ok(reply) = self.call::<_, ()>(protocol::PROGRESS, &report).await {
            if reply.code.as_deref() == Some(codes::LEASE_LOST) {
                self.cancel(&a.work_id);
            }
        }
    }

    /// A usage limit: the item goes back to the queue and Weft pauses this agent.
    async fn park(
        &self,
        mut report: protocol::WorkReport,
        message: String,
        until_ms: Option<u64>,
    ) -> Outcome {
        tracing::warn!(
            work = report.work_id,
            until_ms,
            "usage limit: handing the item back ({message})"
        );
        report.message = Some(message);
        report.until_ms = until_ms;
        match self
            .call_until_answered::<_, ()>(protocol::PARK, &report)
            .await
        {
            Ok(_) => Outcome::Done,
            Err(e) => Outcome::Refused(e),
        }
    }
}

async fn stop_group(pgid: Option<u32>, child: &mut tokio::process::Child) {
    if let Some(pgid) = pgid {
        // SAFETY: signalling the process group we created for this command.
        unsafe { libc::kill(-(pgid as libc::pid_t), libc::SIGTERM) };
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_ok()
        {
            // The leader is gone; make sure nothing it started lingers.
            unsafe { libc::kill(-(pgid as libc::pid_t), libc::SIGKILL) };
            return;
        }
        unsafe { libc::kill(-(pgid as libc::pid_t), libc::SIGKILL) };
    }
    let _ = child.kill().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_filled_with_shell_quoted_values() {
        let mut a = Assignment {
            work_id: "w1".into(),
            lease_id: "l".into(),
            task_id: "t1".into(),
            description: "fix it; rm -rf / 'now' $(id)".into(),
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
        let command = render_command("claude -p {description} --task {taskId}", &a).unwrap();
        // What sh would see: the values as single words, nothing run.
        assert_eq!(
            shlex::split(&command).unwrap(),
            [
                "claude",
                "-p",
                "fix it; rm -rf / 'now' $(id)",
                "--task",
                "t1"
            ]
        );
        a.description = "nul\0byte".into();
        assert!(render_command("x {description}", &a).is_err());
        assert!(render_command("no placeholders", &a).is_ok());
    }
}

#[cfg(test)]
mod printed_tests {
    use super::*;

    #[test]
    fn lines_are_numbered_sent_in_chunks_and_dropped_oldest_first() {
        let mut printed = Printed::default();
        printed.push("one\ntool: Edit\n");
        printed.push("three");
        assert_eq!(
            printed.batch(),
            (1, vec!["one".into(), "tool: Edit".into(), "three".into()])
        );
        assert_eq!(printed.phase.as_deref(), Some("Edit"));
        assert_eq!(printed.news.as_deref(), Some("three"));
        printed.sent(2);
        assert_eq!(printed.batch(), (3, vec!["three".into()]));
        printed.sent(1);
        assert!(printed.is_empty());

        for i in 0..(MAX_UNSENT_LINES + 10) {
            printed.push(&format!("l{i}"));
        }
        assert!(printed.has_full_chunk());
        let (first, lines) = printed.batch();
        assert_eq!(
            first,
            4 + 10,
            "the ten oldest were dropped and their numbers skipped"
        );
        assert_eq!(lines.len(), events::output::MAX_LINES_PER_CHUNK);
        assert_eq!(lines[0], "l10");
    }
}
