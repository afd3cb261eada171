//! Timestamps: events carry milliseconds since the Unix epoch; the API shows RFC 3339.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub use events::time::{day, rfc3339};
