//! Who writes a project's events. Every append of a project's writer expects the project's
//! `writer.elected` subject to be where its own election left it, so a writer that has been
//! replaced (another instance elected since) cannot append anything more: the log refuses it.

use serde::{Deserialize, Serialize};

/// The aggregate id of a project's writer (one per project).
pub const WRITER_ID: &str = "lease";

/// A Weft instance became the project's writer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriterElected {
    /// The instance (its id, as `/health` shows it).
    pub instance: String,
}
