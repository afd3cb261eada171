//! The `at` and `asOf` parameters of the read endpoints (the state as it was at a point of
//! the log), and the `Weft-Sequence` header naming the point an answer was read at.

use std::sync::Arc;

use poem_openapi::payload::Json;
use poem_openapi::types::ToJSON;
use poem_openapi::ApiResponse;
use projections::State;

use super::error::ApiError;
use super::AppState;
use crate::past::PastError;

/// An answer read from the state at one point of the log.
#[derive(ApiResponse)]
pub enum AtResponse<T: ToJSON + Send + Sync> {
    #[oai(status = 200)]
    Ok(
        Json<T>,
        /// Sequence of the last event in the state this was read from: the live state's,
        /// or with `at`/`asOf` the point actually used.
        #[oai(header = "Weft-Sequence")]
        u64,
    ),
}

/// The state a read is answered from: the live one, or one of the past.
pub enum Seen {
    Live,
    Past(Arc<State>),
}

impl AppState {
    /// What `at` (a sequence) or `asOf` (an RFC 3339 time) ask for; neither is the live state.
    pub async fn seen(&self, at: Option<u64>, as_of: Option<&str>) -> Result<Seen, ApiError> {
        let at = match (at, as_of) {
            (None, None) => return Ok(Seen::Live),
            (Some(_), Some(_)) => {
                return Err(ApiError::validation(
                    "asOf",
                    "give `at` (a sequence) or `asOf` (a time), not both",
                ))
            }
            (Some(at), None) => at,
            (None, Some(time)) => {
                let time: jiff::Timestamp = time.parse().map_err(|e| {
                    ApiError::validation("asOf", format!("not an RFC 3339 time: {e}"))
                })?;
                let ms = u64::try_from(time.as_millisecond()).unwrap_or(0);
                self.past.sequence_as_of(ms).await.map_err(past_error)?
            }
        };
        let state = self.past.state_at(at).await.map_err(past_error)?;
        Ok(Seen::Past(state))
    }

    /// `read` on the state `seen` names, with that state's sequence.
    pub fn read_seen<R>(
        &self,
        actor: &super::Actor,
        seen: &Seen,
        read: impl FnOnce(&State) -> R,
    ) -> (u64, R) {
        match seen {
            Seen::Live => self.read(actor, |s| (s.sequence, read(s))),
            Seen::Past(state) => (state.sequence, read(&super::scoped(state, &actor.access))),
        }
    }
}

fn past_error(e: PastError) -> ApiError {
    match e {
        // That point of the log does not exist (yet).
        PastError::Beyond { .. } => ApiError::not_found(e.to_string()),
        PastError::Unavailable(_) => ApiError::unavailable(e.to_string()),
    }
}
