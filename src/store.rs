//! The event store: appends to the `WEFT_EVENTS` stream with optimistic concurrency and
//! deduplication, reads of the log for audit, and projection snapshots in KV.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{
    self, consumer,
    context::{PublishError, PublishErrorKind},
    kv,
};
use async_nats::HeaderMap;
use decide::Expect;
use events::Envelope;
use futures::StreamExt;
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub sequence: u64,
    /// The message id was seen within the dedupe window: nothing new was stored and
    /// `sequence` is the original's.
    pub duplicate: bool,
}

/// Why the log did not take an append.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An expectation failed: the log moved on since the decision was made.
    #[error("the log moved on since the decision was made")]
    Conflict,
    #[error("the event log is unavailable: {0}")]
    Unavailable(String),
}

/// One event to append, with what the log must look like for it to go in.
pub struct Entry<'a> {
    pub envelope: &'a Envelope,
    pub expect: &'a Expect,
}

fn expectation_headers(headers: &mut HeaderMap, project: &str, expect: &Expect) {
    let (sequence, scope) = match expect {
        Expect::AggregateAt(seq) => (*seq, None),
        Expect::ScopeAt { kind, sequence } => (
            *sequence,
            Some(events::subject::kind_in_project(project, *kind)),
        ),
        // Inside a batch the server refuses an expectation on a subject an earlier message
        // of the batch writes; the batch is atomic, so none is needed.
        Expect::FollowsPrevious => return,
    };
    headers.insert(
        async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        sequence.to_string().as_str(),
    );
    if let Some(scope) = scope {
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence-Subject",
            scope.as_str(),
        );
    }
}

/// A failed expectation comes back as 10071 (with the sequence found) or, inside atomic
/// batches and on clustered streams, 10164.
fn is_conflict(e: &PublishError) -> bool {
    e.kind() == PublishErrorKind::WrongLastSequence
        || std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<jetstream::Error>())
            .is_some_and(|e| {
                let code = e.error_code();
                code == jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE
                    || code == jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
            })
}

fn publish_error(e: PublishError) -> StoreError {
    if is_conflict(&e) {
        StoreError::Conflict
    } else if e.kind() == PublishErrorKind::TimedOut {
        StoreError::Unavailable(
            "no acknowledgement from NATS in time: the change may or may not have been recorded; read before retrying".into(),
        )
    } else {
        StoreError::Unavailable(e.to_string())
    }
}

#[derive(Clone)]
pub struct EventStore {
    client: async_nats::Client,
    js: jetstream::Context,
    pub append_latency: Arc<Histogram>,
}

/// Upper bounds (seconds) of the append latency histogram's buckets.
pub const APPEND_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A Prometheus-style cumulative histogram, updated without locks.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; APPEND_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        for (bound, bucket) in APPEND_BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// (cumulative bucket counts, count, sum in seconds)
    pub fn snapshot(&self) -> (Vec<u64>, u64, f64) {
        (
            self.buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            self.count.load(Ordering::Relaxed),
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}

/// Largest value we put in one KV entry; the server's default max payload is 1 MiB.
const SNAPSHOT_CHUNK: usize = 512 * 1024;
const SNAPSHOT_HEAD: &str = "head";

#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotHead {
    sequence: u64,
    chunks: usize,
    sha256: String,
}

impl EventStore {
    pub fn new(client: async_nats::Client) -> Self {
        Self {
            js: jetstream::new(client.clone()),
            client,
            append_latency: Arc::default(),
        }
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Appends the events of one command: all of them, or none. One event is one publish;
    /// several are one atomic batch, whose commit checks every expectation at once.
    /// `message_id` (single events only) defaults to the event id.
    pub async fn append(
        &self,
        entries: &[Entry<'_>],
        message_id: Option<&str>,
    ) -> Result<Vec<Appended>, StoreError> {
        // The client buffers publishes while disconnected and sends them after reconnecting,
        // so an append "failed" by timeout could still land later. Refuse up front instead.
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(StoreError::Unavailable("not connected to NATS".into()));
        }
        let started = std::time::Instant::now();
        let outcome = match entries {
            [] => Ok(vec![]),
            [one] => self.append_one(one, message_id).await.map(|a| vec![a]),
            many => self.append_batch(many).await,
        };
        self.append_latency.observe(started.elapsed().as_secs_f64());
        outcome
    }

    async fn append_one(
        &self,
        entry: &Entry<'_>,
        message_id: Option<&str>,
    ) -> Result<Appended, StoreError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            message_id.unwrap_or(&entry.envelope.id),
        );
        expectation_headers(&mut headers, &entry.envelope.project, entry.expect);
        let ack = self
            .js
            .publish_with_headers(
                entry.envelope.subject(),
                headers,
                entry.envelope.encode().into(),
            )
            .await
            .map_err(publish_error)?
            .await
            .map_err(publish_error)?;
        Ok(Appended {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// An atomic batch: every message but the last is a plain publish that the server
    /// stages; the last commits, and its acknowledgement names the last sequence. The
    /// batch's messages are stored contiguously.
    async fn append_batch(&self, entries: &[Entry<'_>]) -> Result<Vec<Appended>, StoreError> {
        use async_nats::header::{NATS_BATCH_COMMIT, NATS_BATCH_ID, NATS_BATCH_SEQUENCE};
        let batch = ulid::Ulid::generate().to_string();
        let last = entries.len() - 1;
        for (i, entry) in entries.iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert(NATS_BATCH_ID, batch.as_str());
            headers.insert(NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
            expectation_headers(&mut headers, &entry.envelope.project, entry.expect);
            let subject = entry.envelope.subject();
            let payload = entry.envelope.encode().into();
            if i < last {
                self.client
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                continue;
            }
            headers.insert(NATS_BATCH_COMMIT, "1");
            let ack = self
                .js
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(publish_error)?
                .await
                .map_err(publish_error)?;
            let first = ack.sequence + 1 - entries.len() as u64;
            return Ok((0..entries.len() as u64)
                .map(|i| Appended {
                    sequence: first + i,
                    duplicate: false,
                })
                .collect());
        }
        Ok(vec![])
    }

    /// Sequence of the newest event in the log (0 when empty).
    pub async fn last_sequence(&self) -> Result<u64, StoreError> {
        let mut stream = self
            .js
            .get_stream(events::STREAM)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let info = stream
            .info()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(info.state.last_sequence)
    }

    /// An ordered consumer over the log from `start` (inclusive), for folding.
    pub async fn follow(
        &self,
        start: u64,
        filter: &str,
    ) -> Result<consumer::pull::Ordered, StoreError> {
        let stream = self
            .js
            .get_stream_no_info(events::STREAM)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter.to_string(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: start.max(1),
                },
                ..Default::default()
            })
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        consumer
            .messages()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Reads up to `scan_limit` events matching `filter` after sequence `after`, with their
    /// sequences, and how many more match beyond them. For audit reads, not for state.
    pub async fn read(
        &self,
        after: u64,
        filter: &str,
        scan_limit: usize,
    ) -> Result<(Vec<(u64, Vec<u8>)>, usize), StoreError> {
        let stream = self
            .js
            .get_stream_no_info(events::STREAM)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut consumer: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                filter_subject: filter.to_string(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                },
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let pending = consumer
            .info()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
            .num_pending as usize;
        let wanted = pending.min(scan_limit);
        let mut out = Vec::with_capacity(wanted);
        if wanted > 0 {
            let mut batch = consumer
                .fetch()
                .max_messages(wanted)
                .expires(Duration::from_secs(5))
                .messages()
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| StoreError::Unavailable(e.to_string()))?;
                let info = message
                    .info()
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                out.push((info.stream_sequence, message.payload.to_vec()));
            }
        }
        let _ = stream.delete_consumer(&consumer.cached_info().name).await;
        Ok((out, pending.saturating_sub(wanted)))
    }

    async fn snapshots(&self) -> Result<kv::Store, StoreError> {
        self.js
            .get_key_value(migrations::SNAPSHOT_BUCKET)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Stores a snapshot taken at `sequence`. Chunks are written under keys named by the
    /// sequence and the head last, so a crash mid-write leaves the previous one readable.
    pub async fn save_snapshot(&self, sequence: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let kv = self.snapshots().await?;
        let unavailable = |e: &dyn std::fmt::Display| StoreError::Unavailable(e.to_string());
        let previous = self.snapshot_head(&kv).await;
        let chunks: Vec<&[u8]> = bytes.chunks(SNAPSHOT_CHUNK).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            kv.put(format!("state.{sequence}.{i}"), chunk.to_vec().into())
                .await
                .map_err(|e| unavailable(&e))?;
        }
        let head = SnapshotHead {
            sequence,
            chunks: chunks.len(),
            sha256: hex::encode(Sha256::digest(bytes)),
        };
        kv.put(
            SNAPSHOT_HEAD,
            serde_json::to_vec(&head).expect("head serializes").into(),
        )
        .await
        .map_err(|e| unavailable(&e))?;
        if let Some(old) = previous.filter(|old| old.sequence != sequence) {
            for i in 0..old.chunks {
                let _ = kv.purge(format!("state.{}.{i}", old.sequence)).await;
            }
        }
        Ok(())
    }

    async fn snapshot_head(&self, kv: &kv::Store) -> Option<SnapshotHead> {
        let bytes = kv.get(SNAPSHOT_HEAD).await.ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// The newest snapshot's bytes, or `None` when there is none or it does not verify.
    pub async fn load_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let kv = self.snapshots().await?;
        let Some(head) = self.snapshot_head(&kv).await else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        for i in 0..head.chunks {
            match kv.get(format!("state.{}.{i}", head.sequence)).await {
                Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
                Ok(None) => {
                    tracing::warn!(
                        sequence = head.sequence,
                        chunk = i,
                        "snapshot chunk missing; replaying the log instead"
                    );
                    return Ok(None);
                }
                Err(e) => return Err(StoreError::Unavailable(e.to_string())),
            }
        }
        if hex::encode(Sha256::digest(&bytes)) != head.sha256 {
            tracing::warn!(
                sequence = head.sequence,
                "snapshot checksum mismatch; replaying the log instead"
            );
            return Ok(None);
        }
        Ok(Some((head.sequence, bytes)))
    }
}
