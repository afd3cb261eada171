//! Target health checks: one flow for `POST /api/targets/{id}/test` and for the periodic
//! checks, bounded by the target's own timeout, and recorded as `target.health-checked`.

use std::time::{Duration, Instant};

use decide::TargetCommand;

use super::{system, Coordinator};
use crate::commands::{CommandContext, CommandError};
use decide::target::DEFAULT_HEALTH_TIMEOUT_MS;

/// The result of one check.
#[derive(Clone, Debug)]
pub struct HealthOutcome {
    pub target_id: String,
    pub healthy: bool,
    pub error: Option<String>,
    pub latency_ms: u64,
}

impl Coordinator {
    /// Runs the target's health check now and records the outcome.
    pub async fn check_health(
        &self,
        ctx: &CommandContext,
        project: &str,
        target: &str,
    ) -> Result<HealthOutcome, CommandError> {
        let found = self.commands.projection().read(|s| {
            let t = s.project(project)?.targets.get_by_id_or_name(target)?;
            let timeout = t
                .health_check
                .as_ref()
                .map_or(DEFAULT_HEALTH_TIMEOUT_MS, |h| h.timeout_ms);
            Some((t.id.clone(), t.config.clone(), timeout))
        });
        let Some((id, config, timeout_ms)) = found else {
            return Err(CommandError::Rejected(decide::Rejection::NotFound(
                format!("Target with ID or name {target} not found"),
            )));
        };
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            Duration::from_millis(timeout_ms),
            self.mechanisms.check(&config),
        )
        .await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {timeout_ms} ms")),
        };
        self.commands
            .execute(
                ctx,
                project,
                TargetCommand::RecordHealth {
                    key: id.clone(),
                    healthy: error.is_none(),
                    error: error.clone(),
                    latency_ms,
                },
            )
            .await?;
        Ok(HealthOutcome {
            target_id: id,
            healthy: error.is_none(),
            error,
            latency_ms,
        })
    }

    /// A periodic check: skipped while one for the same target is still running.
    pub(super) async fn check_health_once(&self, project: &str, target: &str) {
        let Some(_running) = self.run_once(format!("health {project}/{target}")) else {
            return;
        };
        if let Err(e) = self.check_health(&system(), project, target).await {
            tracing::debug!(project, target, "health check not recorded: {e:?}");
        }
    }
}
