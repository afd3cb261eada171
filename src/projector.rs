//! Live state: the projections, advanced from the event log in sequence order.
//!
//! Start = load the newest snapshot (if it verifies) + replay the tail; then keep folding
//! each new event as it is appended. It is the same fold both times, so a replay from zero
//! and the live state are identical (compare [`projections::State::digest`]).

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
    state: RwLock<State>,
    applied: watch::Sender<u64>,
    live: tokio::sync::broadcast::Sender<Applied>,
}

impl Projection {
    fn new(state: State) -> Arc<Self> {
        let (applied, _) = watch::channel(state.sequence);
        Arc::new(Self {
            state: RwLock::new(state),
            applied,
            live: tokio::sync::broadcast::channel(LIVE_BUFFER).0,
        })
    }

    /// Runs `f` on the current state. Keep it short: the fold waits meanwhile.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let state = self
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&state)
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

    /// Waits for the next event to be folded in, or `timeout`.
    pub async fn wait_for_change(&self, timeout: Duration) {
        let mut rx = self.applied.subscribe();
        let _ = tokio::time::timeout(timeout, rx.changed()).await;
    }

    /// Folds in an event this process just appended, if it is the very next one; the
    /// consumer will skip it. Saves waiting for the consumer to deliver our own write back.
    /// Returns false when other events come first (the consumer will apply them in order).
    pub fn apply_if_next(&self, sequence: u64, envelope: &events::Envelope) -> bool {
        {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            if state.sequence + 1 != sequence {
                return false;
            }
            state.apply(sequence, envelope);
            // Sent under the lock, so live readers see events in sequence order.
            let _ = self.live.send(Arc::new((sequence, envelope.clone())));
        }
        self.applied.send_replace(sequence);
        true
    }

    fn apply(&self, sequence: u64, envelope: Option<&events::Envelope>) {
        {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            if sequence <= state.sequence {
                // Already folded in by `apply_if_next`.
                return;
            }
            match envelope {
                Some(envelope) => {
                    state.apply(sequence, envelope);
                    let _ = self.live.send(Arc::new((sequence, envelope.clone())));
                }
                // An event this binary cannot read still advances the position, so the
                // fold does not stall on it; it stays in the log for a newer binary.
                None => state.sequence = state.sequence.max(sequence),
            }
        }
        self.applied.send_replace(sequence);
    }
}

/// Loads the snapshot, replays the log up to its current end, and keeps the projection
/// live in the background. Returns once the replay has caught up.
/// `connections` changes when the NATS connection comes back: the consumer we were
/// reading from may have died with the server, so the fold resumes on a new one at once
/// rather than when the old one's heartbeats time out.
pub async fn start(
    store: EventStore,
    snapshot_every: u64,
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
        snapshot_every,
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

async fn follow(
    store: EventStore,
    projection: Arc<Projection>,
    snapshot_every: u64,
    mut connections: watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    let mut last_snapshot = projection.sequence();
    let mut saving: Option<tokio::task::JoinHandle<()>> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let start = projection.sequence() + 1;
        match store.follow(start, events::subject::ALL).await {
            Ok(mut messages) => {
                backoff = Duration::from_millis(100);
                loop {
                    let message = tokio::select! {
                        message = messages.next() => message,
                        _ = shutdown.cancelled() => return,
                        Ok(()) = connections.changed() => {
                            tracing::info!(from = projection.sequence() + 1, "resuming the event log after reconnecting");
                            break;
                        }
                    };
                    let message = match message {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            tracing::warn!("event log subscription interrupted: {e}");
                            break;
                        }
                        None => break,
                    };
                    let Ok(info) = message.info() else { continue };
                    let sequence = info.stream_sequence;
                    if sequence <= projection.sequence() {
                        continue;
                    }
                    match migrations::decode(&message.payload) {
                        Ok(envelope) => projection.apply(sequence, Some(&envelope)),
                        Err(e) => {
                            tracing::error!(
                                sequence,
                                "skipping an event this binary cannot read: {e}"
                            );
                            projection.apply(sequence, None);
                        }
                    }
                    let idle = saving.as_ref().is_none_or(|h| h.is_finished());
                    if snapshot_every > 0 && sequence - last_snapshot >= snapshot_every && idle {
                        last_snapshot = sequence;
                        let (at, bytes) = projection.read(|s| (s.sequence, s.to_snapshot()));
                        let store = store.clone();
                        saving = Some(tokio::spawn(async move {
                            match store.save_snapshot(at, &bytes).await {
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
