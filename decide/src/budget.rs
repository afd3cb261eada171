//! A project's spending budget: set by a person, warned about once a day at its threshold,
//! and, once a UTC day's reported cost reaches it, new work of the project waits (see
//! `schedule`) until the next day or a raised budget.

use events::budget::{BudgetSet, BudgetWarned, BUDGET_ID};
use events::Event;
use projections::Project;

use crate::rejection::{Rejection, Validation};
use crate::Decision;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum BudgetCommand {
    /// `None` removes the budget.
    Set {
        max_cost_usd_per_day: Option<f64>,
        warn_at_fraction: Option<f64>,
    },
    /// The day's cost reached the warning threshold (recorded once a day).
    Warn { now_ms: u64 },
}

/// Warnings at this fraction of the budget unless told otherwise.
pub const DEFAULT_WARN_AT: f64 = 0.8;

pub fn decide(command: &BudgetCommand, project: &Project) -> Result<Vec<Decision>, Rejection> {
    match command {
        BudgetCommand::Set {
            max_cost_usd_per_day,
            warn_at_fraction,
        } => {
            let mut errors = Validation::default();
            if let Some(max) = max_cost_usd_per_day {
                errors.check(
                    max.is_finite() && *max >= 0.0,
                    "maxCostUsdPerDay",
                    "must be a number of dollars, 0 or more",
                );
            }
            let warn = warn_at_fraction.unwrap_or(DEFAULT_WARN_AT);
            errors.check(
                warn.is_finite() && warn > 0.0 && warn <= 1.0,
                "warnAtFraction",
                "must be a fraction above 0 and at most 1",
            );
            errors.finish(())?;
            Ok(vec![Decision::new(
                BUDGET_ID,
                Event::BudgetSet(BudgetSet {
                    max_cost_usd_per_day: *max_cost_usd_per_day,
                    warn_at_fraction: warn,
                }),
            )])
        }
        BudgetCommand::Warn { now_ms } => {
            let Some(budget) = &project.budget else {
                return Ok(vec![]);
            };
            let day = events::time::day(*now_ms);
            let spent = project.spent_on(*now_ms);
            Ok(if crate::schedule::budget_warning_due(project, *now_ms) {
                vec![Decision::new(
                    BUDGET_ID,
                    Event::BudgetWarned(BudgetWarned {
                        day,
                        spent_usd: spent,
                        max_cost_usd_per_day: budget.max_cost_usd_per_day,
                    }),
                )]
            } else {
                vec![]
            })
        }
    }
}
