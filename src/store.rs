//! The event store: a writer's commits to the `WEFT_EVENTS` stream (each command's events
//! all or none, every append fenced by the writer's election), reads of the log for audit,
//! and projection snapshots in KV.

use std::time::Duration;

use async_nats::jetstream::{
    self, consumer,
    context::{PublishError, PublishErrorKind},
    kv,
};
use async_nats::HeaderMap;
use events::Envelope;
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// Why the log did not take an append.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An expectation failed: another writer was elected, or (for an election) someone
    /// else was elected first.
    #[error("the log refused the append: another writer was elected")]
    Conflict,
    #[error("the event log is unavailable: {0}")]
    Unavailable(String),
}

/// What every append of a project's writer expects: the project's writer subject still at
/// the sequence of the writer's own election. A writer replaced since cannot append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub subject: String,
    pub sequence: u64,
}

/// How a writer's round of commands goes to the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitMode {
    /// Each command as soon as it is decided, many in flight at once: a single event is a
    /// plain publish, several are one atomic batch. For a single server with default sync.
    Pipelined,
    /// Whole commands packed into atomic batches, one in flight at a time: one fsync or one
    /// consensus round for many commands (fsync on every write, or a replicated stream,
    /// which admits one expectation on a subject in flight at a time).
    Grouped,
}

/// What became of one command's events.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stored at these sequences.
    Stored(Vec<u64>),
    /// Refused by the fence: nothing stored.
    Refused,
    /// Not sent, because something before it failed: nothing stored.
    NotSent,
    /// Sent, and no answer came: it may or may not be stored.
    Unknown(String),
}

/// The largest atomic batch the server takes (its default `max_msgs`).
pub const MAX_BATCH: usize = 1000;

fn fence_headers(headers: &mut HeaderMap, fence: &Fence) {
    headers.insert(
        async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        fence.sequence.to_string().as_str(),
    );
    headers.insert(
        "Nats-Expected-Last-Subject-Sequence-Subject",
        fence.subject.as_str(),
    );
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

fn outcome_of_error(e: PublishError) -> Outcome {
    if is_conflict(&e) {
        Outcome::Refused
    } else {
        Outcome::Unknown(e.to_string())
    }
}

/// A round sent to the log, its acknowledgements on their way.
pub struct Sent {
    acks: Acks,
    started: std::time::Instant,
    commit_seconds: prometheus_client::metrics::histogram::Histogram,
}

enum Acks {
    /// Each command on its own.
    PerCommand(Vec<Result<Pending, Outcome>>),
    /// The whole round in one batch, and how many events each command has in it.
    Group(Result<Pending, Outcome>, Vec<usize>),
}

impl Sent {
    fn new(store: &EventStore, started: std::time::Instant, acks: Acks) -> Self {
        Sent {
            acks,
            started,
            commit_seconds: store.commit_seconds.clone(),
        }
    }

    /// What became of each command of the round, in order.
    pub async fn outcomes(self) -> Vec<Outcome> {
        let outcomes = match self.acks {
            Acks::PerCommand(pending) => {
                let mut outcomes = Vec::with_capacity(pending.len());
                for p in pending {
                    outcomes.push(match p {
                        Ok(p) => p.outcome().await,
                        Err(o) => o,
                    });
                }
                outcomes
            }
            Acks::Group(pending, sizes) => {
                let outcome = match pending {
                    Ok(p) => p.outcome().await,
                    Err(o) => o,
                };
                match outcome {
                    Outcome::Stored(sequences) => {
                        let mut sequences = sequences.into_iter();
                        sizes
                            .iter()
                            .map(|n| Outcome::Stored(sequences.by_ref().take(*n).collect()))
                            .collect()
                    }
                    failure => sizes
                        .iter()
                        .map(|_| match &failure {
                            Outcome::Refused => Outcome::Refused,
                            Outcome::Unknown(why) => Outcome::Unknown(why.clone()),
                            _ => Outcome::NotSent,
                        })
                        .collect(),
                }
            }
        };
        self.commit_seconds
            .observe(self.started.elapsed().as_secs_f64());
        outcomes
    }
}

/// An acknowledgement on its way: of one message, or of an atomic batch of `count`.
struct Pending {
    ack: jetstream::context::PublishAckFuture,
    count: usize,
}

impl Pending {
    async fn outcome(self) -> Outcome {
        match self.ack.await {
            Ok(ack) => {
                let first = (ack.sequence + 1).saturating_sub(self.count as u64);
                Outcome::Stored((first..=ack.sequence).collect())
            }
            Err(e) => outcome_of_error(e),
        }
    }
}

/// An event as the log stores it: where, on which subject, and its bytes.
pub struct RawEvent {
    pub sequence: u64,
    pub subject: String,
    pub payload: Vec<u8>,
}

#[derive(Clone)]
pub struct EventStore {
    client: async_nats::Client,
    js: jetstream::Context,
    /// How long commits take, answered or not.
    pub commit_seconds: prometheus_client::metrics::histogram::Histogram,
}

/// Largest value we put in one KV entry; the server's default max payload is 1 MiB.
const SNAPSHOT_CHUNK: usize = 512 * 1024;
const SNAPSHOT_HEAD: &str = "head";

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct SnapshotHead {
    sequence: u64,
    chunks: usize,
    sha256: String,
}

/// The head: the newest snapshot's fields at the top level (what binaries that kept one
/// snapshot read), the older kept ones beside them, newest first.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotIndex {
    #[serde(flatten)]
    newest: SnapshotHead,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    older: Vec<SnapshotHead>,
}

impl EventStore {
    pub fn new(client: async_nats::Client) -> Self {
        Self {
            js: jetstream::new(client.clone()),
            client,
            commit_seconds: crate::metrics::latency_histogram(),
        }
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Commits a writer's round: each command's events land all or none, in order, every
    /// append fenced. One outcome per command.
    pub async fn commit(
        &self,
        commands: &[&[Envelope]],
        fence: &Fence,
        mode: CommitMode,
    ) -> Vec<Outcome> {
        self.send(commands, fence, mode).await.outcomes().await
    }

    /// Sends a round without waiting for its acknowledgements, so a writer can decide and
    /// send the next round meanwhile: rounds sent on one connection are stored in the order
    /// they were sent. In [`CommitMode::Grouped`] the round is one atomic batch (the writer
    /// keeps it within [`MAX_BATCH`] events).
    pub async fn send(&self, commands: &[&[Envelope]], fence: &Fence, mode: CommitMode) -> Sent {
        let started = std::time::Instant::now();
        let sizes: Vec<usize> = commands.iter().map(|c| c.len()).collect();
        // The client buffers publishes while disconnected and sends them after reconnecting,
        // so an append "failed" by timeout could still land later. Refuse up front instead.
        if self.client.connection_state() != async_nats::connection::State::Connected {
            let pending = commands.iter().map(|_| Err(Outcome::NotSent)).collect();
            return Sent::new(self, started, Acks::PerCommand(pending));
        }
        let acks = match mode {
            CommitMode::Pipelined => {
                let mut pending = Vec::with_capacity(commands.len());
                let mut failed = false;
                for events in commands {
                    if failed {
                        pending.push(Err(Outcome::NotSent));
                        continue;
                    }
                    let refs: Vec<&Envelope> = events.iter().collect();
                    let sent = self.publish(&refs, fence).await;
                    failed = sent.is_err();
                    pending.push(sent);
                }
                Acks::PerCommand(pending)
            }
            CommitMode::Grouped => {
                let all: Vec<&Envelope> = commands.iter().copied().flatten().collect();
                Acks::Group(self.publish(&all, fence).await, sizes)
            }
        };
        Sent::new(self, started, acks)
    }

    /// One message, or an atomic batch of several; nothing to send is stored at once.
    async fn publish(&self, envelopes: &[&Envelope], fence: &Fence) -> Result<Pending, Outcome> {
        match envelopes {
            [] => Err(Outcome::Stored(vec![])),
            [one] => self.publish_one(one, fence).await,
            many => self.publish_batch(many, fence).await,
        }
    }

    async fn publish_one(&self, envelope: &Envelope, fence: &Fence) -> Result<Pending, Outcome> {
        // No message id: the fence already refuses a stale writer's retry, and an
        // unanswered append is looked for in the log by its envelope id.
        let mut headers = HeaderMap::new();
        fence_headers(&mut headers, fence);
        let ack = self
            .js
            .publish_with_headers(envelope.subject(), headers, envelope.encode().into())
            .await
            .map_err(outcome_of_error)?;
        Ok(Pending { ack, count: 1 })
    }

    /// An atomic batch: every message but the last is a plain publish that the server
    /// stages; the last commits, and its acknowledgement names the last sequence. The
    /// batch's messages are stored contiguously, and its first carries the fence.
    async fn publish_batch(
        &self,
        envelopes: &[&Envelope],
        fence: &Fence,
    ) -> Result<Pending, Outcome> {
        use async_nats::header::{NATS_BATCH_COMMIT, NATS_BATCH_ID, NATS_BATCH_SEQUENCE};
        let batch = ulid::Ulid::generate().to_string();
        let last = envelopes.len() - 1;
        for (i, envelope) in envelopes.iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert(NATS_BATCH_ID, batch.as_str());
            headers.insert(NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
            if i == 0 {
                fence_headers(&mut headers, fence);
            }
            let subject = envelope.subject();
            let payload = envelope.encode().into();
            if i < last {
                self.client
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(|e| Outcome::Unknown(e.to_string()))?;
                continue;
            }
            headers.insert(NATS_BATCH_COMMIT, "1");
            let ack = self
                .js
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(outcome_of_error)?;
            return Ok(Pending {
                ack,
                count: envelopes.len(),
            });
        }
        Err(Outcome::Stored(vec![]))
    }

    /// Sequence of the newest event in the log (0 when empty).
    pub async fn last_sequence(&self) -> Result<u64, StoreError> {
        Ok(self.stream_info().await?.state.last_sequence)
    }

    /// Sequence of the newest event on the subjects `filter` matches (0 when none), as the
    /// stream's leader has it (a replica's answer could be behind).
    pub async fn last_sequence_of(&self, filter: &str) -> Result<u64, StoreError> {
        use jetstream::stream::LastRawMessageErrorKind;
        let stream = self
            .js
            .get_stream_no_info(events::STREAM)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        match stream.get_last_raw_message_by_subject(filter).await {
            Ok(message) => Ok(message.sequence),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        }
    }

    /// The first and last sequences the log holds (`None` when it holds none).
    pub async fn sequence_range(&self) -> Result<Option<(u64, u64)>, StoreError> {
        let state = self.stream_info().await?.state;
        Ok((state.messages > 0).then_some((state.first_sequence, state.last_sequence)))
    }

    /// The first event at or after `sequence`: its sequence and the time it records
    /// (`None`: there is none). Read with a direct get, from any replica.
    pub async fn event_time_from(&self, sequence: u64) -> Result<Option<(u64, u64)>, StoreError> {
        use jetstream::stream::DirectGetErrorKind;
        let stream = self
            .js
            .get_stream_no_info(events::STREAM)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        match stream
            .direct_get_next_for_subject(events::subject::ALL, Some(sequence))
            .await
        {
            Ok(message) => {
                // The time the event records (an imported log keeps its source's times);
                // for bytes this binary cannot read, the time the log stored them.
                let time_ms = match migrations::decode(&message.payload) {
                    Ok(envelope) => envelope.time_ms,
                    Err(_) => (message.time.unix_timestamp_nanos() / 1_000_000).max(0) as u64,
                };
                Ok(Some((message.sequence, time_ms)))
            }
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        }
    }

    /// How many replicas the event stream has.
    pub async fn replicas(&self) -> Result<usize, StoreError> {
        Ok(self.stream_info().await?.config.num_replicas.max(1))
    }

    async fn stream_info(&self) -> Result<jetstream::stream::Info, StoreError> {
        let unavailable = |e: &dyn std::fmt::Display| StoreError::Unavailable(e.to_string());
        let mut stream = self
            .js
            .get_stream(events::STREAM)
            .await
            .map_err(|e| unavailable(&e))?;
        stream.info().await.cloned().map_err(|e| unavailable(&e))
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
        self.read_any(after, &[filter.to_string()], scan_limit)
            .await
    }

    /// [`Self::read`] of the events on subjects any of `filters` matches, in log order.
    pub async fn read_any(
        &self,
        after: u64,
        filters: &[String],
        scan_limit: usize,
    ) -> Result<(Vec<(u64, Vec<u8>)>, usize), StoreError> {
        let (raw, more) = self.read_raw(after, filters, scan_limit).await?;
        Ok((
            raw.into_iter().map(|r| (r.sequence, r.payload)).collect(),
            more,
        ))
    }

    /// [`Self::read_any`] with the subject each event is stored on.
    pub async fn read_raw(
        &self,
        after: u64,
        filters: &[String],
        scan_limit: usize,
    ) -> Result<(Vec<RawEvent>, usize), StoreError> {
        let stream = self
            .js
            .get_stream_no_info(events::STREAM)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let (filter_subject, filter_subjects) = match filters {
            [one] => (one.clone(), Vec::new()),
            many => (String::new(), many.to_vec()),
        };
        let mut consumer: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                filter_subject,
                filter_subjects,
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: after.saturating_add(1),
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
                out.push(RawEvent {
                    sequence: info.stream_sequence,
                    subject: message.subject.to_string(),
                    payload: message.payload.to_vec(),
                });
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

    /// Stores a snapshot taken at `sequence` and keeps the newest `kept` (at least one).
    /// Chunks are written under keys named by the sequence and the head last, so a crash
    /// mid-write leaves the previous ones readable. The head is replaced only if nobody
    /// else replaced it since it was read (replicas save snapshots too); a snapshot at the
    /// same sequence is replaced.
    pub async fn save_snapshot(
        &self,
        sequence: u64,
        bytes: &[u8],
        kept: usize,
    ) -> Result<(), StoreError> {
        let kv = self.snapshots().await?;
        let unavailable = |e: &dyn std::fmt::Display| StoreError::Unavailable(e.to_string());
        let chunks: Vec<&[u8]> = bytes.chunks(SNAPSHOT_CHUNK).collect();
        let saved = SnapshotHead {
            sequence,
            chunks: chunks.len(),
            sha256: hex::encode(Sha256::digest(bytes)),
        };
        let mut wrote_chunks = false;
        for _ in 0..5 {
            let (mut index, revision) = self.snapshot_index(&kv).await?;
            // One taken at the same sequence (by a replica, or a repair) is replaced.
            let replaced_chunks = index
                .iter()
                .find(|s| s.sequence == sequence)
                .map_or(0, |s| s.chunks);
            index.retain(|s| s.sequence != sequence);
            if !wrote_chunks {
                for (i, chunk) in chunks.iter().enumerate() {
                    kv.put(format!("state.{sequence}.{i}"), chunk.to_vec().into())
                        .await
                        .map_err(|e| unavailable(&e))?;
                }
                wrote_chunks = true;
            }
            let mut all = index;
            all.push(saved.clone());
            all.sort_by_key(|s| std::cmp::Reverse(s.sequence));
            let dropped = all.split_off(kept.max(1).min(all.len()));
            let mut rest = all.into_iter();
            let Some(newest) = rest.next() else {
                return Ok(());
            };
            let head = SnapshotIndex {
                newest,
                older: rest.collect(),
            };
            let value = serde_json::to_vec(&head).expect("head serializes").into();
            let replaced = match revision {
                Some(revision) => kv.update(SNAPSHOT_HEAD, value, revision).await.is_ok(),
                None => kv.create(SNAPSHOT_HEAD, value).await.is_ok(),
            };
            if replaced {
                for i in chunks.len()..replaced_chunks {
                    let _ = kv.purge(format!("state.{sequence}.{i}")).await;
                }
                for old in dropped {
                    for i in 0..old.chunks {
                        let _ = kv.purge(format!("state.{}.{i}", old.sequence)).await;
                    }
                }
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(
            "the snapshot index kept changing under us; not saved".into(),
        ))
    }

    /// The kept snapshots, newest first, and the head's revision (`None`: no head yet).
    async fn snapshot_index(
        &self,
        kv: &kv::Store,
    ) -> Result<(Vec<SnapshotHead>, Option<u64>), StoreError> {
        let entry = kv
            .entry(SNAPSHOT_HEAD)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok((Vec::new(), None));
        };
        let index = match serde_json::from_slice::<SnapshotIndex>(&entry.value) {
            Ok(index) => std::iter::once(index.newest).chain(index.older).collect(),
            Err(e) => {
                tracing::warn!("snapshot head not readable ({e}); starting a new one");
                Vec::new()
            }
        };
        Ok((index, Some(entry.revision)))
    }

    /// The sequences of the kept snapshots, newest first.
    pub async fn snapshot_sequences(&self) -> Result<Vec<u64>, StoreError> {
        let kv = self.snapshots().await?;
        let (index, _) = self.snapshot_index(&kv).await?;
        Ok(index.iter().map(|s| s.sequence).collect())
    }

    /// The newest snapshot's bytes, or `None` when there is none or it does not verify.
    pub async fn load_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.load_snapshot_at_or_before(u64::MAX).await
    }

    /// The bytes of the newest kept snapshot taken at or before `at`, or `None` when there
    /// is none or it does not verify.
    pub async fn load_snapshot_at_or_before(
        &self,
        at: u64,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let kv = self.snapshots().await?;
        let (index, _) = self.snapshot_index(&kv).await?;
        let Some(head) = index.into_iter().find(|s| s.sequence <= at) else {
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
