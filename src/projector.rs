//! Live state: the projections, advanced from the event log in sequence order.
//!
//! Start = load the newest snapshot (if it verifies) + replay the tail; then keep folding
//! each new event as it is appended. It is the same fold both times, so a replay from zero
//! and the live state are identical (compare [`projections::State::digest`]).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use projections::State;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::nats::Connections;
use crate::store::{EventStore, StoreError};

/// An event as folded in, with its stream sequence: what live views are sent.
pub type Applied = Arc<(u64, events::Envelope)>;

/// How many folded events a slow live reader may fall behind before it is cut off.
const LIVE_BUFFER: usize = 8192;

pub struct Projection {
    inner: RwLock<Inner>,
    applied: watch::Sender<u64>,
    live: tokio::sync::broadcast::Sender<Applied>,
}

struct Inner {
    state: State,
    /// Events a writer of this process committed ahead of others not yet folded in (another
    /// project's, whose acknowledgement is still on its way): folded in when their turn comes.
    waiting: BTreeMap<u64, events::Envelope>,
}

impl Inner {
    /// Folds in `envelope` (or only advances the position, for an event this binary cannot
    /// read: it stays in the log for a newer binary), then whatever was waiting for it.
    fn fold(&mut self, sequence: u64, envelope: Option<&events::Envelope>, live: &Live) {
        match envelope {
            Some(envelope) => {
                self.state.apply(sequence, envelope);
                // Sent under the lock, so live readers see events in sequence order. Not
                // copied when nobody listens (a replay at start).
                if live.receiver_count() > 0 {
                    let _ = live.send(Arc::new((sequence, envelope.clone())));
                }
            }
            None => self.state.skip(sequence),
        }
        self.fold_waiting(live);
    }

    /// Folds in the waiting events that come next.
    fn fold_waiting(&mut self, live: &Live) {
        while let Some(entry) = self.waiting.first_entry() {
            let next = *entry.key();
            if next <= self.state.sequence {
                entry.remove();
            } else if next == self.state.sequence + 1 {
                let envelope = entry.remove();
                self.state.apply(next, &envelope);
                if live.receiver_count() > 0 {
                    let _ = live.send(Arc::new((next, envelope)));
                }
            } else {
                break;
            }
        }
    }
}

type Live = tokio::sync::broadcast::Sender<Applied>;

impl Projection {
    fn new(state: State) -> Arc<Self> {
        let (applied, _) = watch::channel(state.sequence);
        Arc::new(Self {
            inner: RwLock::new(Inner {
                state,
                waiting: BTreeMap::new(),
            }),
            applied,
            live: tokio::sync::broadcast::channel(LIVE_BUFFER).0,
        })
    }

    /// Runs `f` on the current state. Keep it short: the fold waits meanwhile.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let inner = self
            .inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&inner.state)
    }

    /// Every event from now on, in sequence order, after it is folded in.
    pub fn live(&self) -> tokio::sync::broadcast::Receiver<Applied> {
        self.live.subscribe()
    }

    /// Changes of the applied sequence, for tasks that react to new events.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Sequence of the last event folded in.
    pub fn sequence(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the event at `sequence` has been folded in; false on timeout.
    pub async fn wait_for(&self, sequence: u64, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|applied| *applied >= sequence))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until `found` finds something in the state (looked at after every change);
    /// `None` on timeout.
    pub async fn wait_until<T>(
        &self,
        timeout: Duration,
        mut found: impl FnMut(&State) -> Option<T>,
    ) -> Option<T> {
        let mut changes = self.applied.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            if let Some(t) = self.read(&mut found) {
                return Some(t);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.read(found),
            }
        }
    }

    /// Folds in events a writer of this process just committed, as soon as every event
    /// before them is in; the consumer skips them when it delivers them back. Saves the
    /// writer waiting for its own writes to come back before it answers.
    pub fn apply_committed(&self, committed: impl IntoIterator<Item = (u64, events::Envelope)>) {
        let sequence = {
            let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
            for (sequence, envelope) in committed {
                if sequence > inner.state.sequence {
                    inner.waiting.insert(sequence, envelope);
                }
            }
            let next = inner.state.sequence + 1;
            if let Some(envelope) = inner.waiting.remove(&next) {
                inner.fold(next, Some(&envelope), &self.live);
            }
            inner.state.sequence
        };
        self.applied.send_replace(sequence);
    }

    /// Takes `state` as the project's state after `committed`, a writer's round whose events
    /// it decided on exactly that state, numbered as they were stored: folding them again
    /// would give the same state, so it is not done. Refused (the events come back) when
    /// other events come first; fold those with [`Projection::apply_committed`].
    pub fn install(
        &self,
        project: &str,
        state: projections::Project,
        committed: Vec<(u64, events::Envelope)>,
    ) -> Result<(), Vec<(u64, events::Envelope)>> {
        let (Some(&(first, _)), Some(&(last, _))) = (committed.first(), committed.last()) else {
            return Ok(());
        };
        let sequence = {
            let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
            if inner.state.sequence + 1 != first {
                return Err(committed);
            }
            inner.state.projects.insert(project.to_string(), state);
            inner.state.sequence = last;
            if self.live.receiver_count() > 0 {
                for event in committed {
                    let _ = self.live.send(Arc::new(event));
                }
            }
            inner.fold_waiting(&self.live);
            inner.state.sequence
        };
        self.applied.send_replace(sequence);
        Ok(())
    }

    /// Folds in events as the log delivers them, in sequence order, under one lock.
    fn apply_delivered(&self, delivered: Vec<(u64, Option<events::Envelope>)>) {
        let sequence = {
            let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
            for (sequence, envelope) in delivered {
                // Already folded in by `apply_committed` when not after the state.
                if sequence > inner.state.sequence {
                    inner.fold(sequence, envelope.as_ref(), &self.live);
                }
            }
            inner.state.sequence
        };
        self.applied.send_replace(sequence);
    }
}

/// When the projector saves snapshots, and how many it keeps.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotPolicy {
    /// Every this many events (0: never).
    pub every: u64,
    pub kept: usize,
}

impl SnapshotPolicy {
    /// For replays that only read (tools, benchmarks).
    pub const NEVER: SnapshotPolicy = SnapshotPolicy { every: 0, kept: 1 };
}

/// Loads the snapshot, replays the log up to its current end, and keeps the projection
/// live in the background. Returns once the replay has caught up.
/// `connections` changes when the NATS connection comes back: the consumer we were
/// reading from may have died with the server, so the fold resumes on a new one at once
/// rather than when the old one's heartbeats time out.
pub async fn start(
    store: EventStore,
    snapshots: SnapshotPolicy,
    connections: Connections,
    shutdown: CancellationToken,
) -> Result<Arc<Projection>, StoreError> {
    let started = Instant::now();
    let state = match store.load_snapshot().await? {
        Some((sequence, bytes)) => match State::from_snapshot(&bytes) {
            Some(state) if state.sequence == sequence => {
                tracing::info!(sequence, "loaded snapshot");
                state
            }
            _ => {
                tracing::warn!(
                    sequence,
                    "snapshot is of another format; replaying the log from zero"
                );
                State::default()
            }
        },
        None => State::default(),
    };
    let projection = Projection::new(state);
    let end = store.last_sequence().await?;
    let from = projection.sequence();
    tokio::spawn(follow(
        store,
        projection.clone(),
        snapshots,
        connections.subscribe(),
        shutdown,
    ));
    while !projection.wait_for(end, Duration::from_secs(2)).await {
        tracing::info!(
            applied = projection.sequence(),
            end,
            "replaying the event log"
        );
    }
    tracing::info!(
        replayed = end.saturating_sub(from),
        sequence = end,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "state rebuilt"
    );
    Ok(projection)
}

/// Most events folded in under one lock.
const DELIVERY_BATCH: usize = 1024;

/// Events as delivered, decoded (`None`: this binary cannot read it).
type Delivered = Vec<(u64, Option<events::Envelope>)>;

async fn follow(
    store: EventStore,
    projection: Arc<Projection>,
    snapshots: SnapshotPolicy,
    mut connections: watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    let mut last_snapshot = projection.sequence();
    let mut saving: Option<tokio::task::JoinHandle<()>> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let start = projection.sequence() + 1;
        match store.follow(start, events::subject::ALL).await {
            Ok(messages) => {
                backoff = Duration::from_millis(100);
                // Decoding in a task of its own and folding here, so a replay uses two cores.
                let (deliver, mut delivered) = tokio::sync::mpsc::channel::<Delivered>(16);
                let decoder = tokio::spawn(decode(messages, projection.clone(), deliver));
                loop {
                    let batch = tokio::select! {
                        batch = delivered.recv() => batch,
                        _ = shutdown.cancelled() => {
                            decoder.abort();
                            return;
                        }
                        Ok(()) = connections.changed() => {
                            tracing::info!(from = projection.sequence() + 1, "resuming the event log after reconnecting");
                            None
                        }
                    };
                    let Some(batch) = batch else {
                        decoder.abort();
                        break;
                    };
                    projection.apply_delivered(batch);
                    let sequence = projection.sequence();
                    let idle = saving.as_ref().is_none_or(|h| h.is_finished());
                    if snapshots.every > 0 && sequence - last_snapshot >= snapshots.every && idle {
                        last_snapshot = sequence;
                        let (at, bytes) = projection.read(|s| (s.sequence, s.to_snapshot()));
                        let store = store.clone();
                        saving = Some(tokio::spawn(async move {
                            match store.save_snapshot(at, &bytes, snapshots.kept).await {
                                Ok(()) => tracing::info!(
                                    sequence = at,
                                    bytes = bytes.len(),
                                    "snapshot saved"
                                ),
                                Err(e) => tracing::warn!(sequence = at, "snapshot not saved: {e}"),
                            }
                        }));
                    }
                }
            }
            Err(e) => tracing::warn!("cannot follow the event log: {e}"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Decodes what the consumer delivers, in batches of whatever has arrived, until the
/// consumer ends or fails (the caller then resumes on a new one).
async fn decode(
    mut messages: async_nats::jetstream::consumer::pull::Ordered,
    projection: Arc<Projection>,
    deliver: tokio::sync::mpsc::Sender<Delivered>,
) {
    use futures::FutureExt;
    let mut ended = false;
    while !ended {
        let mut batch = Delivered::new();
        let mut next = messages.next().await;
        loop {
            match next {
                Some(Ok(message)) => {
                    // Folded in already when not after the projection (a writer of this
                    // process committed it).
                    let sequence = message.info().map_or(0, |i| i.stream_sequence);
                    if sequence > projection.sequence() {
                        let envelope = match migrations::decode(&message.payload) {
                            Ok(envelope) => Some(envelope),
                            Err(e) => {
                                tracing::error!(
                                    sequence,
                                    "skipping an event this binary cannot read: {e}"
                                );
                                None
                            }
                        };
                        batch.push((sequence, envelope));
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!("event log subscription interrupted: {e}");
                    ended = true;
                    break;
                }
                None => {
                    ended = true;
                    break;
                }
            }
            if batch.len() >= DELIVERY_BATCH {
                break;
            }
            match messages.next().now_or_never() {
                Some(more) => next = more,
                None => break,
            }
        }
        if !batch.is_empty() && deliver.send(batch).await.is_err() {
            return;
        }
    }
}
