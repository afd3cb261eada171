//! Agents that speak Warp (the original's MCP server) register in the shared
//! `agent-registry` KV bucket. We watch it (no polling, and an empty bucket answers at
//! once) and keep the entries in memory. They are Warp's state, not ours, so they are
//! read, not recorded as events.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const BUCKET: &str = "agent-registry";

/// Warp heartbeats every 60 s; an entry silent for three beats is shown offline.
pub const STALE_AFTER_MS: u64 = 180_000;

/// What the bridge and the API read from a registry entry, whichever writer wrote it:
/// Warp 1.0 (top-level `agentType`, no boundaries) or the original's expected shape
/// (`metadata.agentType`, `metadata.boundaries`).
#[derive(Clone, Debug)]
pub struct WarpAgent {
    pub guid: String,
    pub agent_type: String,
    pub capabilities: Vec<String>,
    /// `metadata.boundaries`; the original's `["default"]` when absent, so an agent that
    /// declared none never sees classified data.
    pub boundaries: Vec<String>,
    pub project_id: String,
    pub handle: Option<String>,
    pub hostname: Option<String>,
    pub status: Option<String>,
    pub max_concurrent_tasks: u32,
    pub last_heartbeat_ms: Option<u64>,
}

impl WarpAgent {
    pub fn parse(key: &str, e: &Value) -> Option<Self> {
        let text = |v: &Value| v.as_str().map(String::from);
        let list = |v: &Value| -> Option<Vec<String>> {
            v.as_array().map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
        };
        e.as_object()?;
        Some(WarpAgent {
            guid: text(&e["guid"]).unwrap_or_else(|| key.into()),
            agent_type: text(&e["metadata"]["agentType"])
                .or_else(|| text(&e["agentType"]))
                .unwrap_or_else(|| "claude-code".into()),
            capabilities: list(&e["capabilities"]).unwrap_or_default(),
            boundaries: list(&e["metadata"]["boundaries"])
                .unwrap_or_else(|| vec!["default".into()]),
            project_id: text(&e["projectId"]).unwrap_or_default(),
            handle: text(&e["handle"]),
            hostname: text(&e["hostname"]),
            status: text(&e["status"]),
            max_concurrent_tasks: e["maxConcurrentTasks"]
                .as_u64()
                .map_or(1, |n| n.clamp(1, 64) as u32),
            last_heartbeat_ms: parse_time_ms(&e["lastHeartbeat"]),
        })
    }

    /// Heard from within three of Warp's beats and not deregistered.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.status.as_deref() != Some("offline")
            && self
                .last_heartbeat_ms
                .is_some_and(|t| now_ms.saturating_sub(t) <= STALE_AFTER_MS)
    }
}

#[derive(Default)]
pub struct WarpRegistry {
    entries: RwLock<BTreeMap<String, Value>>,
}

impl WarpRegistry {
    /// Every entry but Weft's own (the coordinator's, written by the Warp bridge).
    pub fn all(&self) -> Vec<(String, Value)> {
        let own = crate::warp::coordinator_guid();
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .filter(|(k, _)| **k != own)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn apply(&self, entry: kv::Entry) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<Value>(&entry.value) {
                Ok(value) if value.is_object() => {
                    entries.insert(entry.key, value);
                }
                _ => {
                    tracing::debug!(
                        key = entry.key,
                        "ignoring a registry entry that is not a JSON object"
                    );
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => {
                entries.remove(&entry.key);
            }
        }
    }

    /// Follows the bucket until `shutdown`, re-opening it after errors.
    pub async fn watch(&self, js: jetstream::Context, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = self.follow(&js) => match outcome {
                    Ok(()) => tracing::debug!("registry watch ended; reopening"),
                    Err(e) => tracing::warn!("cannot watch the {BUCKET} bucket: {e}"),
                },
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn follow(&self, js: &jetstream::Context) -> Result<(), String> {
        // Use the bucket as it exists: Warp, tests or others may have created it with
        // other settings. Create it with the library defaults only when it is missing.
        let store = match js.get_key_value(BUCKET).await {
            Ok(store) => store,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: BUCKET.into(),
                    history: 1,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?,
        };
        let mut watch = store.watch_all().await.map_err(|e| e.to_string())?;
        // A fresh watch replays every live key, so start from an empty map.
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        while let Some(entry) = watch.next().await {
            self.apply(entry.map_err(|e| e.to_string())?);
        }
        Ok(())
    }
}

/// Reads a timestamp field (RFC 3339) as milliseconds since the epoch.
pub fn parse_time_ms(value: &Value) -> Option<u64> {
    let s = value.as_str()?;
    let b = s.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let millis = if b.get(19) == Some(&b'.') {
        let digits: String = s[20..]
            .chars()
            .take_while(char::is_ascii_digit)
            .take(3)
            .collect();
        format!("{digits:0<3}").parse::<i64>().ok()?
    } else {
        0
    };
    // Days from civil (Howard Hinnant), inverse of crate::time's conversion.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = ((days * 86_400 + h * 3600 + mi * 60 + se) * 1000) + millis;
    u64::try_from(ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_with_the_formatter() {
        for ms in [0, 1_765_429_208_000, 951_782_400_123, 4_107_542_399_999] {
            assert_eq!(
                parse_time_ms(&Value::from(crate::time::rfc3339(ms))),
                Some(ms)
            );
        }
        assert_eq!(
            parse_time_ms(&Value::from("2025-12-11T05:00:08Z")),
            Some(1_765_429_208_000)
        );
        assert_eq!(parse_time_ms(&Value::from("yesterday")), None);
        assert_eq!(parse_time_ms(&Value::from(5)), None);
    }
}
