//! Reading what an agent CLI prints: `text` (lines as they come) or the structured
//! formats of Claude Code (`stream-json`), Copilot CLI (`--output-format json`) and Codex
//! (`exec --json`). Structured output becomes progress (assistant text, tool calls by name)
//! and, at the end, the item's result, what it cost ([`Usage`]) and how it ended: done,
//! failed, or stopped by a usage limit (never a failure: the item waits for the reset).
//! Structured fields decide first (`is_error` before `subtype` before the exit code;
//! `rate_limit_event` and `api_error_status`); the known limit texts, in one table, after.
//! Everything here is pure: the clock is an argument.

use events::work::Usage;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    ClaudeStreamJson,
    CopilotJson,
    CodexJson,
}

/// How an attempt ended, as its output says.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Completed {
        summary: String,
        usage: Option<Usage>,
    },
    Failed {
        error: String,
        usage: Option<Usage>,
    },
    /// A usage limit: try again after `until_ms` (`None`: when a person says so).
    Limited {
        message: String,
        until_ms: Option<u64>,
        usage: Option<Usage>,
    },
}

/// Texts that mean an account's usage limit, not a failure of the work (lower case,
/// straight apostrophes). From `agent-clis` research: Claude, Copilot and Codex wordings.
const LIMIT_TEXTS: &[&str] = &[
    "usage limit reached",
    "limit reached \u{2219} resets",
    "limit reached \u{b7} resets",
    "you've hit your limit",
    "you've hit your session limit",
    "you've hit your usage limit",
    "you've hit your monthly spend limit",
    "you're out of extra usage",
    "hit a rate limit that restricts the number of copilot model requests",
    "\"code\":\"rate_limited\"",
    "you have no quota",
    "quota_exceeded",
];

/// Limits that only a person can lift (no reset time).
const NO_RESET_TEXTS: &[&str] = &["monthly spend limit", "you have no quota", "quota_exceeded"];

/// A limit whose text gives no time we can read waits this long, then tries again.
const FALLBACK_WAIT_MS: u64 = 30 * 60 * 1000;
const MIN_WAIT_MS: u64 = 60 * 1000;
const MAX_WAIT_MS: u64 = 24 * 3600 * 1000;

fn normalized(text: &str) -> String {
    text.to_lowercase().replace('\u{2019}', "'")
}

/// If `text` says a usage limit was hit: when it resets (`Some(None)`: only a person can lift it).
pub fn limit_in(text: &str, now_ms: u64) -> Option<Option<u64>> {
    let lower = normalized(text);
    if !LIMIT_TEXTS.iter().any(|t| lower.contains(t)) {
        return None;
    }
    if NO_RESET_TEXTS.iter().any(|t| lower.contains(t)) {
        return Some(None);
    }
    let clamp = |at: u64| at.clamp(now_ms + MIN_WAIT_MS, now_ms + MAX_WAIT_MS);
    // `Claude AI usage limit reached|1753441200`: epoch seconds after the bar.
    if let Some(seconds) = text
        .split('|')
        .nth(1)
        .and_then(|s| s.trim().split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse::<u64>().ok())
    {
        return Some(Some(clamp(seconds * 1000)));
    }
    // `try again in 2 hours`, `in 2 days 17 hours 14 minutes`.
    if let Some(after) = lower.split("try again in ").nth(1) {
        let mut total = 0u64;
        let words: Vec<&str> = after.split_whitespace().collect();
        for pair in words.windows(2) {
            let Ok(n) = pair[0].parse::<u64>() else {
                continue;
            };
            let unit = pair[1];
            total += n * if unit.starts_with("day") {
                86_400_000
            } else if unit.starts_with("hour") {
                3_600_000
            } else if unit.starts_with("minute") {
                60_000
            } else if unit.starts_with("second") {
                1000
            } else {
                0
            };
        }
        if total > 0 {
            return Some(Some(clamp(now_ms + total)));
        }
    }
    Some(Some(now_ms + FALLBACK_WAIT_MS))
}

/// Reads one attempt's output, line by line.
pub struct Reader {
    format: OutputFormat,
    usage: Usage,
    reported_usage: bool,
    /// The final record's text, and whether it said the attempt failed.
    result: Option<(String, bool)>,
    /// The last assistant message (the result when the format has no final record).
    last_message: Option<String>,
    /// A structured limit seen (cleared by a later `allowed`).
    limit: Option<Option<u64>>,
    errors: Vec<String>,
}

fn text_of(v: &Value) -> Option<String> {
    v.as_str().map(String::from)
}

fn first_line(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    line.chars().take(200).collect()
}

impl Reader {
    pub fn new(format: OutputFormat) -> Self {
        Reader {
            format,
            usage: Usage::default(),
            reported_usage: false,
            result: None,
            last_message: None,
            limit: None,
            errors: Vec::new(),
        }
    }

    /// One line of output; what to show as progress, if anything.
    pub fn line(&mut self, line: &str, now_ms: u64) -> Option<String> {
        if self.format == OutputFormat::Text {
            return Some(line.to_string());
        }
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            // Not a record (a warning, a banner): shown as it is.
            return (!line.trim().is_empty()).then(|| line.to_string());
        };
        match self.format {
            OutputFormat::ClaudeStreamJson => self.claude(&v, now_ms),
            OutputFormat::CopilotJson => self.copilot(&v),
            OutputFormat::CodexJson => self.codex(&v),
            OutputFormat::Text => None,
        }
    }

    fn claude(&mut self, v: &Value, now_ms: u64) -> Option<String> {
        match v["type"].as_str()? {
            "system" => {
                if let Some(s) = text_of(&v["session_id"]) {
                    self.usage.session_id = Some(s);
                }
                if let Some(m) = text_of(&v["model"]) {
                    self.usage.model = Some(m);
                }
                None
            }
            "assistant" => {
                let mut shown = Vec::new();
                for block in v["message"]["content"].as_array().into_iter().flatten() {
                    match block["type"].as_str() {
                        Some("text") => {
                            if let Some(t) = block["text"].as_str() {
                                self.last_message = Some(t.to_string());
                                shown.push(first_line(t));
                            }
                        }
                        Some("tool_use") => {
                            shown.push(format!("tool: {}", block["name"].as_str().unwrap_or("?")))
                        }
                        _ => {}
                    }
                }
                (!shown.is_empty()).then(|| shown.join("\n"))
            }
            "rate_limit_event" => {
                let info = &v["rate_limit_info"];
                match info["status"].as_str() {
                    Some("rejected") => {
                        let until = info["resetsAt"]
                            .as_u64()
                            .map(|s| (s * 1000).clamp(now_ms + MIN_WAIT_MS, now_ms + MAX_WAIT_MS))
                            .unwrap_or(now_ms + FALLBACK_WAIT_MS);
                        self.limit = Some(Some(until));
                        Some("usage limit reached".into())
                    }
                    // A later `allowed` lifts a limit seen earlier in the run.
                    Some(_) => {
                        self.limit = None;
                        None
                    }
                    None => None,
                }
            }
            "result" => {
                let u = &v["usage"];
                self.reported_usage = true;
                self.usage.cost_usd = v["total_cost_usd"].as_f64().or(v["cost_usd"].as_f64());
                self.usage.input_tokens = u["input_tokens"].as_u64();
                self.usage.output_tokens = u["output_tokens"].as_u64();
                self.usage.cache_read_tokens = u["cache_read_input_tokens"].as_u64();
                self.usage.cache_write_tokens = u["cache_creation_input_tokens"].as_u64();
                self.usage.turns = v["num_turns"].as_u64().map(|n| n as u32);
                self.usage.duration_ms = v["duration_ms"].as_u64();
                if let Some(s) = text_of(&v["session_id"]) {
                    self.usage.session_id = Some(s);
                }
                if let Some(model) = v["modelUsage"].as_object().and_then(|m| m.keys().next()) {
                    self.usage.model = Some(model.clone());
                }
                let text = text_of(&v["result"]).unwrap_or_default();
                // `is_error` first: a failed API call can say `subtype: success`.
                let failed = v["is_error"].as_bool().unwrap_or(false)
                    || v["subtype"].as_str().is_some_and(|s| s != "success");
                if v["api_error_status"].as_u64() == Some(429) && self.limit.is_none() {
                    self.limit =
                        Some(limit_in(&text, now_ms).unwrap_or(Some(now_ms + FALLBACK_WAIT_MS)));
                }
                let text = match (failed, v["subtype"].as_str()) {
                    (true, Some(subtype)) if subtype != "success" && text.is_empty() => {
                        subtype.to_string()
                    }
                    _ => text,
                };
                self.result = Some((text, failed));
                None
            }
            _ => None,
        }
    }

    fn copilot(&mut self, v: &Value) -> Option<String> {
        let data = if v["data"].is_object() { &v["data"] } else { v };
        match v["type"].as_str()? {
            "assistant.message" => {
                let text = text_of(&data["content"])?;
                self.last_message = Some(text.clone());
                Some(first_line(&text))
            }
            "session.error" => {
                let message = text_of(&data["message"]).unwrap_or_else(|| data.to_string());
                self.errors.push(message.clone());
                Some(message)
            }
            "result" => {
                let u = &data["usage"];
                self.reported_usage = true;
                self.usage.premium_requests = u["premiumRequests"].as_f64();
                self.usage.duration_ms = u["totalApiDurationMs"].as_u64();
                self.usage.session_id = text_of(&data["sessionId"]);
                let failed = data["exitCode"].as_i64().is_some_and(|c| c != 0);
                let text = self.last_message.clone().unwrap_or_default();
                self.result = Some((text, failed));
                None
            }
            kind if kind.starts_with("tool.") => text_of(&data["toolName"])
                .or_else(|| text_of(&data["name"]))
                .map(|n| format!("tool: {n}")),
            _ => None,
        }
    }

    fn codex(&mut self, v: &Value) -> Option<String> {
        match v["type"].as_str()? {
            "thread.started" => {
                self.usage.session_id = text_of(&v["thread_id"]);
                None
            }
            "turn.completed" => {
                let u = &v["usage"];
                self.reported_usage = true;
                let add = |field: &mut Option<u64>, value: Option<u64>| {
                    if let Some(value) = value {
                        *field = Some(field.unwrap_or(0) + value);
                    }
                };
                add(&mut self.usage.input_tokens, u["input_tokens"].as_u64());
                add(
                    &mut self.usage.cache_read_tokens,
                    u["cached_input_tokens"].as_u64(),
                );
                add(&mut self.usage.output_tokens, u["output_tokens"].as_u64());
                self.usage.turns = Some(self.usage.turns.unwrap_or(0) + 1);
                None
            }
            "turn.failed" => {
                let message =
                    text_of(&v["error"]["message"]).unwrap_or_else(|| "turn failed".into());
                self.errors.push(message.clone());
                Some(message)
            }
            "error" => {
                let message = text_of(&v["message"]).unwrap_or_default();
                self.errors.push(message.clone());
                Some(message)
            }
            "item.started" | "item.updated" | "item.completed" => {
                let item = &v["item"];
                match item["type"].as_str()? {
                    "agent_message" if v["type"] == "item.completed" => {
                        let text = text_of(&item["text"])?;
                        self.last_message = Some(text.clone());
                        Some(first_line(&text))
                    }
                    "command_execution" if v["type"] == "item.started" => {
                        Some(format!("ran: {}", item["command"].as_str().unwrap_or("?")))
                    }
                    "file_change" if v["type"] == "item.completed" => {
                        let paths: Vec<&str> = item["changes"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|c| c["path"].as_str())
                            .collect();
                        Some(format!("changed: {}", paths.join(", ")))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// How the attempt ended: `exited_ok` is the command's exit status, `tail` the last of
    /// what it printed (for text and for limits said in words).
    pub fn verdict(self, exited_ok: bool, tail: &str, now_ms: u64) -> Verdict {
        let usage = self.reported_usage.then(|| self.usage.clone());
        let said = [
            self.result.as_ref().map(|(t, _)| t.as_str()).unwrap_or(""),
            &self.errors.join("\n"),
            tail,
        ]
        .join("\n");
        if let Some(until_ms) = self.limit.or_else(|| limit_in(&said, now_ms)) {
            let message = [
                self.result.as_ref().map(|(t, _)| t.as_str()),
                self.errors.last().map(String::as_str),
            ]
            .into_iter()
            .flatten()
            .find(|t| !t.is_empty())
            .map(first_line)
            .unwrap_or_else(|| first_line(tail));
            return Verdict::Limited {
                message: if message.is_empty() {
                    "usage limit reached".into()
                } else {
                    message
                },
                until_ms,
                usage,
            };
        }
        match self.result {
            Some((text, true)) => Verdict::Failed { error: text, usage },
            Some((text, false)) => Verdict::Completed {
                summary: text,
                usage,
            },
            None if !self.errors.is_empty() => Verdict::Failed {
                error: self.errors.join("\n"),
                usage,
            },
            None => {
                let text = self.last_message.unwrap_or_else(|| tail.to_string());
                if exited_ok {
                    Verdict::Completed {
                        summary: text,
                        usage,
                    }
                } else {
                    Verdict::Failed { error: text, usage }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn read(format: OutputFormat, lines: &[&str], exited_ok: bool) -> (Vec<String>, Verdict) {
        let mut reader = Reader::new(format);
        let shown = lines.iter().filter_map(|l| reader.line(l, NOW)).collect();
        (shown, reader.verdict(exited_ok, &lines.join("\n"), NOW))
    }

    #[test]
    fn claude_stream_json_becomes_progress_result_and_usage() {
        let (shown, verdict) = read(
            OutputFormat::ClaudeStreamJson,
            &[
                r#"{"type":"system","subtype":"init","session_id":"s-1","model":"claude-sonnet-4-5"}"#,
                r#"{"type":"assistant","message":{"content":[{"type":"text","text":"Looking at the parser\nmore"},{"type":"tool_use","id":"t","name":"Read","input":{}}]}}"#,
                r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed"}}"#,
                r#"{"type":"result","subtype":"success","is_error":false,"duration_ms":22631,"num_turns":3,"result":"Fixed it.","session_id":"s-1","total_cost_usd":0.0745,"usage":{"input_tokens":6,"cache_creation_input_tokens":8982,"cache_read_input_tokens":42853,"output_tokens":583},"modelUsage":{"claude-sonnet-4-5-20250929":{}}}"#,
            ],
            true,
        );
        assert_eq!(shown, ["Looking at the parser\ntool: Read"]);
        let Verdict::Completed { summary, usage } = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(summary, "Fixed it.");
        let u = usage.expect("usage");
        assert_eq!(u.cost_usd, Some(0.0745));
        assert_eq!((u.input_tokens, u.output_tokens), (Some(6), Some(583)));
        assert_eq!(
            (u.cache_read_tokens, u.cache_write_tokens),
            (Some(42853), Some(8982))
        );
        assert_eq!((u.turns, u.duration_ms), (Some(3), Some(22631)));
        assert_eq!(u.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
        assert_eq!(u.session_id.as_deref(), Some("s-1"));
        assert_eq!(u.premium_requests, None, "absent fields stay absent");
    }

    #[test]
    fn is_error_decides_before_subtype_and_exit_code() {
        let (_, verdict) = read(
            OutputFormat::ClaudeStreamJson,
            &[
                r#"{"type":"result","subtype":"success","is_error":true,"result":"API Error: 500","total_cost_usd":0}"#,
            ],
            true,
        );
        assert!(
            matches!(verdict, Verdict::Failed { ref error, .. } if error == "API Error: 500"),
            "{verdict:?}"
        );
        let (_, verdict) = read(
            OutputFormat::ClaudeStreamJson,
            &[r#"{"type":"result","subtype":"error_max_turns","is_error":false,"result":""}"#],
            true,
        );
        assert!(
            matches!(verdict, Verdict::Failed { ref error, .. } if error == "error_max_turns"),
            "{verdict:?}"
        );
    }

    #[test]
    fn limits_are_read_from_structure_first_then_from_words() {
        // resetsAt is Unix seconds.
        let reset = (NOW + 2 * 3_600_000) / 1000;
        let event = format!(
            r#"{{"type":"rate_limit_event","rate_limit_info":{{"status":"rejected","resetsAt":{reset},"rateLimitType":"five_hour"}}}}"#
        );
        let (_, verdict) = read(
            OutputFormat::ClaudeStreamJson,
            &[
                &event,
                r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"result":"You've hit your limit · resets 1pm (Europe/Lisbon)","total_cost_usd":0}"#,
            ],
            false,
        );
        assert!(
            matches!(verdict, Verdict::Limited { until_ms: Some(t), .. } if t == reset * 1000),
            "{verdict:?}"
        );
        // A later allowed lifts it.
        let (_, verdict) = read(
            OutputFormat::ClaudeStreamJson,
            &[
                &event,
                r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed"}}"#,
                r#"{"type":"result","subtype":"success","is_error":false,"result":"ok"}"#,
            ],
            true,
        );
        assert!(matches!(verdict, Verdict::Completed { .. }), "{verdict:?}");
        // Words: the old epoch form, a relative time, none at all, and none to be had.
        assert_eq!(
            limit_in("Claude AI usage limit reached|1800003600", NOW),
            Some(Some(1_800_003_600_000))
        );
        assert_eq!(
            limit_in("✗ Sorry, you've hit a rate limit that restricts the number of Copilot model requests you can make within a specific time period. Please try again in 2 hours.", NOW),
            Some(Some(NOW + 7_200_000))
        );
        assert_eq!(
            limit_in("5-hour limit reached ∙ resets 5am", NOW),
            Some(Some(NOW + FALLBACK_WAIT_MS))
        );
        assert_eq!(
            limit_in(
                "You’ve hit your monthly spend limit · raise it at claude.ai/settings/usage",
                NOW
            ),
            Some(None)
        );
        assert_eq!(
            limit_in("Execution failed: 402 You have no quota", NOW),
            Some(None)
        );
        assert_eq!(limit_in("all good", NOW), None);
        // Clamped: never sooner than a minute, never later than a day.
        assert_eq!(
            limit_in("usage limit reached|1", NOW),
            Some(Some(NOW + MIN_WAIT_MS))
        );
    }

    #[test]
    fn codex_and_copilot_records_are_read() {
        let (shown, verdict) = read(
            OutputFormat::CodexJson,
            &[
                r#"{"type":"thread.started","thread_id":"th-1"}"#,
                r#"{"type":"item.started","item":{"id":"1","type":"command_execution","command":"cargo test"}}"#,
                r#"{"type":"item.completed","item":{"id":"2","type":"agent_message","text":"All tests pass."}}"#,
                r#"{"type":"turn.completed","usage":{"input_tokens":100,"cached_input_tokens":40,"output_tokens":7}}"#,
            ],
            true,
        );
        assert_eq!(shown, ["ran: cargo test", "All tests pass."]);
        let Verdict::Completed { summary, usage } = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(summary, "All tests pass.");
        let u = usage.expect("usage");
        assert_eq!(
            (
                u.input_tokens,
                u.cache_read_tokens,
                u.output_tokens,
                u.turns
            ),
            (Some(100), Some(40), Some(7), Some(1))
        );
        assert_eq!(u.session_id.as_deref(), Some("th-1"));

        let (_, verdict) = read(
            OutputFormat::CodexJson,
            &[
                r#"{"type":"turn.failed","error":{"message":"You've hit your usage limit. Visit https://chatgpt.com/codex/settings/usage to purchase more credits or try again in 2 days 17 hours 14 minutes."}}"#,
            ],
            false,
        );
        let expected = NOW + (2 * 86_400 + 17 * 3600 + 14 * 60) * 1000;
        assert!(
            matches!(verdict, Verdict::Limited { until_ms: Some(t), .. } if t == expected.min(NOW + MAX_WAIT_MS)),
            "{verdict:?}"
        );

        let (_, verdict) = read(
            OutputFormat::CopilotJson,
            &[
                r#"{"type":"assistant.message","data":{"content":"Done: renamed the module."}}"#,
                r#"{"type":"result","sessionId":"cp-1","exitCode":0,"usage":{"premiumRequests":1,"totalApiDurationMs":3000}}"#,
            ],
            true,
        );
        let Verdict::Completed { summary, usage } = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(summary, "Done: renamed the module.");
        let u = usage.expect("usage");
        assert_eq!((u.premium_requests, u.duration_ms), (Some(1.0), Some(3000)));
        assert_eq!(u.input_tokens, None);
    }

    #[test]
    fn text_output_is_decided_by_the_exit_code_and_the_limit_table() {
        let (shown, verdict) = read(OutputFormat::Text, &["working", "done"], true);
        assert_eq!(shown, ["working", "done"]);
        assert!(matches!(verdict, Verdict::Completed { .. }));
        let (_, verdict) = read(OutputFormat::Text, &["boom"], false);
        assert!(matches!(verdict, Verdict::Failed { .. }));
        let (_, verdict) = read(
            OutputFormat::Text,
            &["Claude AI usage limit reached|1800003600"],
            false,
        );
        assert!(matches!(verdict, Verdict::Limited { .. }));
    }
}
