//! The output stream (`WEFT_OUTPUT`, migration v4) and the data step of that migration:
//! the lines agents reported before it, as `work.progressed` messages, are copied into the
//! stream so `/api/work/{id}/output` shows them too. The events stay in the log as they
//! were (history is never rewritten); the copy is resumable.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use events::output::{Chunk, MAX_CHUNK_BYTES};
use events::Event;
use futures::StreamExt;

/// On a copied chunk: the log sequence of the event it was copied from.
pub const COPIED_FROM_HEADER: &str = "Weft-Copied-From";

/// How much output the stream keeps; the oldest goes first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputLimits {
    /// Chunks kept per item (a chunk is one report of an agent: at most 500 lines).
    pub chunks_per_item: i64,
    /// How long a chunk is kept.
    pub max_age: Duration,
    /// Bytes kept for all items together.
    pub max_bytes: i64,
}

impl Default for OutputLimits {
    fn default() -> Self {
        OutputLimits {
            chunks_per_item: 1_000,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 1024 * 1024 * 1024,
        }
    }
}

pub fn output_stream_config(limits: &OutputLimits, replicas: usize) -> stream::Config {
    stream::Config {
        num_replicas: replicas,
        name: events::output::STREAM.to_string(),
        description: Some("Weft agents' output lines, by item, within limits".into()),
        subjects: vec![events::output::ALL.to_string()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_messages_per_subject: limits.chunks_per_item,
        max_age: limits.max_age,
        max_bytes: limits.max_bytes,
        max_message_size: MAX_CHUNK_BYTES,
        allow_direct: true,
        ..Default::default()
    }
}

/// Where each item's copied lines stand: its attempt and the number of its next line.
type Lines = HashMap<(String, String), (u32, u64)>;

/// Copies the lines of every `work.progressed` in the log into the output stream. A copy
/// that stopped half way resumes after the last event it copied (named by the stream's
/// last chunk); nothing else writes to the stream while migrations run.
pub async fn copy_progress(js: &jetstream::Context) -> Result<u64, String> {
    let text = |e: &dyn std::fmt::Display| e.to_string();
    let mut output = js
        .get_stream(events::output::STREAM)
        .await
        .map_err(|e| text(&e))?;
    let last = output
        .info()
        .await
        .map_err(|e| text(&e))?
        .state
        .last_sequence;
    let copied_up_to = if last == 0 {
        0
    } else {
        match output.direct_get(last).await {
            Ok(message) => message
                .headers
                .get(COPIED_FROM_HEADER)
                .and_then(|v| v.as_str().parse::<u64>().ok())
                .unwrap_or(0),
            Err(_) => 0,
        }
    };
    let log = js
        .get_stream_no_info(events::STREAM)
        .await
        .map_err(|e| text(&e))?;
    let mut consumer: consumer::PullConsumer = log
        .create_consumer(consumer::pull::Config {
            filter_subject: events::subject::filter(None, Some(events::AggregateKind::Work), None),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .map_err(|e| text(&e))?;
    let pending = consumer.info().await.map_err(|e| text(&e))?.num_pending;
    let mut lines = Lines::new();
    let (mut read, mut copied) = (0u64, 0u64);
    let mut acks = Vec::new();
    let mut reported = std::time::Instant::now();
    while read < pending {
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| text(&e))?;
        let before = read;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| text(&e))?;
            read += 1;
            let sequence = message.info().map_err(|e| text(&e))?.stream_sequence;
            let Ok(envelope) = crate::decode(&message.payload) else {
                continue;
            };
            let Some(chunk) = chunk_of(&mut lines, &envelope) else {
                continue;
            };
            if sequence <= copied_up_to {
                continue;
            }
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(COPIED_FROM_HEADER, sequence.to_string().as_str());
            headers.insert("Nats-Msg-Id", format!("copied-{sequence}").as_str());
            let body = serde_json::to_vec(&chunk).map_err(|e| text(&e))?;
            let subject = events::output::subject(&envelope.project, &envelope.aggregate_id);
            acks.push(
                js.publish_with_headers(subject, headers, body.into())
                    .await
                    .map_err(|e| text(&e))?,
            );
            copied += 1;
            if acks.len() >= 256 {
                for ack in acks.drain(..) {
                    ack.await.map_err(|e| text(&e))?;
                }
            }
        }
        if read == before {
            return Err(format!(
                "the event log stopped answering after {read} of {pending} work events"
            ));
        }
        if reported.elapsed() > Duration::from_secs(5) {
            tracing::info!(
                read,
                pending,
                copied,
                "copying old progress lines into the output stream"
            );
            reported = std::time::Instant::now();
        }
    }
    for ack in acks {
        ack.await.map_err(|e| text(&e))?;
    }
    let _ = log.delete_consumer(&consumer.cached_info().name).await;
    Ok(copied)
}

/// Folds one work event into `lines`; for a `work.progressed`, the chunk of its lines.
fn chunk_of(lines: &mut Lines, envelope: &events::Envelope) -> Option<Chunk> {
    let key = (envelope.project.clone(), envelope.aggregate_id.clone());
    match &envelope.event {
        Event::WorkAssigned(e) => {
            lines.insert(key, (e.attempt, 1));
            None
        }
        Event::WorkProgressed(e) => {
            let (attempt, next) = lines.entry(key).or_insert((1, 1));
            let group: Vec<String> = e.message.lines().map(str::to_string).collect();
            let first_line = *next;
            *next += group.len() as u64;
            (!group.is_empty()).then(|| Chunk {
                work_id: envelope.aggregate_id.clone(),
                agent_id: e.agent_id.clone(),
                attempt: *attempt,
                first_line,
                lines: group,
                at_ms: envelope.time_ms,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::work::{RoutingReason, WorkAssigned, WorkProgressed};

    fn envelope(event: Event) -> events::Envelope {
        events::Envelope {
            id: "e".into(),
            project: "p".into(),
            aggregate: events::AggregateKind::Work,
            aggregate_id: "w1".into(),
            schema_version: 1,
            time_ms: 7,
            actor: "a".into(),
            correlation_id: None,
            causation_id: None,
            event,
        }
    }

    fn progressed(message: &str) -> Event {
        Event::WorkProgressed(WorkProgressed {
            agent_id: "a".into(),
            lease_id: "l".into(),
            progress: None,
            message: message.into(),
            phase: None,
        })
    }

    fn assigned(attempt: u32) -> Event {
        Event::WorkAssigned(WorkAssigned {
            agent_id: "a".into(),
            lease_id: "l".into(),
            attempt,
            reason: RoutingReason::default(),
        })
    }

    #[test]
    fn old_progress_messages_become_numbered_chunks_per_attempt() {
        let mut lines = Lines::new();
        assert!(chunk_of(&mut lines, &envelope(assigned(1))).is_none());
        let first = chunk_of(&mut lines, &envelope(progressed("one\ntwo"))).expect("a chunk");
        assert_eq!((first.attempt, first.first_line), (1, 1));
        assert_eq!(first.lines, ["one", "two"]);
        let second = chunk_of(&mut lines, &envelope(progressed("three"))).expect("a chunk");
        assert_eq!(second.first_line, 3);
        assert!(chunk_of(&mut lines, &envelope(progressed(""))).is_none());
        chunk_of(&mut lines, &envelope(assigned(2)));
        let retried = chunk_of(&mut lines, &envelope(progressed("again"))).expect("a chunk");
        assert_eq!(
            (retried.attempt, retried.first_line, retried.at_ms),
            (2, 1, 7)
        );
    }
}
