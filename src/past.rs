//! The state as it was at any point of the log, for the `at` and `asOf` parameters: the
//! nearest kept snapshot at or before the point (or a state already built near it) plus
//! the events up to it, so one request folds at most about one snapshot interval. Recent
//! answers are kept, so asking for the same point again costs nothing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use projections::State;

use crate::projector::Projection;
use crate::store::EventStore;

/// How many built states are kept for repeated points.
const KEPT: usize = 16;
/// Events read per page while folding forward.
const PAGE: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum PastError {
    #[error("the log ends at sequence {head}; there is no sequence {at} yet")]
    Beyond { at: u64, head: u64 },
    #[error("{0}")]
    Unavailable(String),
}

impl From<crate::store::StoreError> for PastError {
    fn from(e: crate::store::StoreError) -> Self {
        PastError::Unavailable(e.to_string())
    }
}

pub struct Past {
    store: EventStore,
    live: Arc<Projection>,
    built: Mutex<VecDeque<Arc<State>>>,
}

impl Past {
    pub fn new(store: EventStore, live: Arc<Projection>) -> Self {
        Past {
            store,
            live,
            built: Mutex::new(VecDeque::new()),
        }
    }

    /// The state after the last event at or before sequence `at`; its `sequence` is that
    /// event's (lower than `at` when `at` itself was deleted from the log).
    pub async fn state_at(&self, at: u64) -> Result<Arc<State>, PastError> {
        let head = self.store.last_sequence().await?;
        if at > head {
            return Err(PastError::Beyond { at, head });
        }
        let mut base = self.nearest_built(at);
        if let Some(live) = self.live.read(|s| (s.sequence <= at).then(|| s.clone())) {
            if base.as_ref().is_none_or(|b| b.sequence < live.sequence) {
                base = Some(Arc::new(live));
            }
        }
        if base.as_ref().is_some_and(|b| b.sequence == at) {
            return Ok(base.expect("checked"));
        }
        // A kept snapshot is read only when it is nearer than the state already at hand.
        let nearer = self
            .store
            .snapshot_sequences()
            .await?
            .into_iter()
            .find(|s| *s <= at)
            .filter(|s| base.as_ref().is_none_or(|b| b.sequence < *s));
        let from_snapshot = match nearer {
            Some(sequence) => match self.store.load_snapshot_at_or_before(sequence).await? {
                Some((found, bytes)) if found == sequence => {
                    State::from_snapshot(&bytes).filter(|s| s.sequence == sequence)
                }
                _ => None,
            },
            None => None,
        };
        let mut state = match (from_snapshot, base) {
            (Some(snapshot), _) => snapshot,
            (None, Some(base)) => State::clone(&base),
            (None, None) => State::default(),
        };
        let from = state.sequence;
        let mut after = from;
        while after < at {
            let wanted = PAGE.min((at - after) as usize);
            let (page, _) = self.store.read(after, events::subject::ALL, wanted).await?;
            if page.is_empty() {
                break;
            }
            for (sequence, bytes) in page {
                if sequence > at {
                    break;
                }
                match migrations::decode(&bytes) {
                    Ok(envelope) => {
                        state.apply(sequence, &envelope);
                    }
                    Err(e) => {
                        tracing::warn!(sequence, "event not readable by this binary: {e}");
                        state.skip(sequence);
                    }
                }
                after = sequence;
            }
        }
        tracing::debug!(
            at,
            from,
            folded = after - from,
            "state rebuilt for a past point"
        );
        let state = Arc::new(state);
        self.keep(state.clone());
        Ok(state)
    }

    /// The sequence of the last event recorded at or before `time_ms` (0: none was).
    /// Events are recorded in time order, so the search halves the log each step.
    pub async fn sequence_as_of(&self, time_ms: u64) -> Result<u64, PastError> {
        let Some((mut low, mut high)) = self.store.sequence_range().await? else {
            return Ok(0);
        };
        let mut found = 0;
        while low <= high {
            let middle = low + (high - low) / 2;
            let Some((sequence, recorded_ms)) = self.store.event_time_from(middle).await? else {
                break;
            };
            if sequence > high {
                // Only deleted sequences between `middle` and `high`.
                high = middle.saturating_sub(1);
                if middle == 0 {
                    break;
                }
                continue;
            }
            if recorded_ms <= time_ms {
                found = sequence;
                low = sequence + 1;
            } else if middle == 0 {
                break;
            } else {
                high = middle - 1;
            }
        }
        Ok(found)
    }

    fn nearest_built(&self, at: u64) -> Option<Arc<State>> {
        let built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        built
            .iter()
            .filter(|s| s.sequence <= at)
            .max_by_key(|s| s.sequence)
            .cloned()
    }

    fn keep(&self, state: Arc<State>) {
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        built.retain(|s| s.sequence != state.sequence);
        built.push_back(state);
        while built.len() > KEPT {
            built.pop_front();
        }
    }
}
