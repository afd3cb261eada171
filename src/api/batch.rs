//! What every batch operation answers: the original's `BatchOperationResponse` core.

use std::collections::BTreeMap;

use poem_openapi::Object;

use crate::time::{now_ms, rfc3339};

#[derive(Object, Clone, Debug, Default)]
#[oai(rename_all = "camelCase")]
pub struct BatchOutcome {
    pub success: Vec<String>,
    pub failed: Vec<String>,
    /// How many succeeded.
    pub count: usize,
    /// Why each failed one failed, by id.
    pub errors: BTreeMap<String, String>,
    pub completed_at: String,
    pub total_processed: usize,
    /// Percentage (0-100) of processed ids that succeeded; 0 when none were processed.
    pub success_rate: f64,
}

impl BatchOutcome {
    pub fn succeeded(&mut self, id: String) {
        self.success.push(id);
    }

    pub fn failed(&mut self, id: String, message: String) {
        self.errors.insert(id.clone(), message);
        self.failed.push(id);
    }

    /// Fills in the totals once every id has been processed.
    pub fn finish(mut self) -> Self {
        self.count = self.success.len();
        self.total_processed = self.success.len() + self.failed.len();
        self.success_rate = if self.total_processed == 0 {
            0.0
        } else {
            100.0 * self.count as f64 / self.total_processed as f64
        };
        self.completed_at = rfc3339(now_ms());
        self
    }
}
