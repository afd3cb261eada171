//! Events of a project's spending budget: what the agents' CLIs report the work costs is
//! counted per UTC day against it.

use serde::{Deserialize, Serialize};

/// The one budget aggregate of a project.
pub const BUDGET_ID: &str = "budget";

/// The budget was set (or removed, with no maximum).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetSet {
    /// At this much reported cost in a UTC day, new work of the project waits.
    #[serde(default)]
    pub max_cost_usd_per_day: Option<f64>,
    /// At this fraction of the maximum, a warning is recorded (once a day).
    pub warn_at_fraction: f64,
}

/// A day's reported cost reached the warning threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetWarned {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub spent_usd: f64,
    pub max_cost_usd_per_day: f64,
}
