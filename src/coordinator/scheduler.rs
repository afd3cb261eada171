//! The scheduler: whenever the state changes, and on a short tick, it asks the rules what
//! is due in each project this instance writes for ([`decide::schedule::due`]) and
//! carries it out. Timers of projects another instance writes for are that one's.

use std::sync::Arc;
use std::time::Duration;

use decide::schedule::{self, Duty};
use decide::{Command, SpinUpCommand};
use tokio_util::sync::CancellationToken;

use super::{caused_by, system, Coordinator};
use crate::time::now_ms;

/// How often the timers are looked at when nothing changes.
const TICK: Duration = Duration::from_millis(250);

impl Coordinator {
    /// Runs until `shutdown` is cancelled.
    pub async fn run_scheduler(self: Arc<Self>, shutdown: CancellationToken) {
        let mut changes = self.commands.projection().subscribe();
        loop {
            changes.borrow_and_update();
            let projects: Vec<String> = self.commands.projection().read(|s| {
                s.projects
                    .keys()
                    .filter(|p| self.commands.is_writer(p))
                    .cloned()
                    .collect()
            });
            for project in projects {
                if shutdown.is_cancelled() {
                    return;
                }
                self.run_due(&project).await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::timeout(TICK, changes.changed()) => {}
            }
        }
    }

    async fn run_due(self: &Arc<Self>, project: &str) {
        let liveness = self.liveness_of(project);
        let now = now_ms();
        let duties = self.commands.projection().read(|s| {
            schedule::due(
                s.project_or_empty(project),
                &liveness,
                self.settings(),
                now,
                &mut || uuid::Uuid::new_v4().to_string(),
            )
        });
        // Every decision at once: the project's writer commits them in one round.
        let mut decisions = Vec::new();
        for duty in duties {
            match duty {
                Duty::Decide(command) => decisions.push(async move {
                    let ctx = caused_by(system(), cause(&command));
                    if let Err(e) = self.run(&ctx, project, *command).await {
                        // The state moved since the rules looked (an agent took the item,
                        // say): the next round decides again.
                        tracing::debug!(project, "scheduled command not recorded: {e:?}");
                    }
                }),
                Duty::StopSpinUp { spin_up_id, reason } => {
                    let this = self.clone();
                    let project = project.to_string();
                    // In its own task: stopping may take a round trip to a remote host.
                    tokio::spawn(async move {
                        this.stop_and_record(&project, &spin_up_id, &reason).await
                    });
                }
                Duty::CheckHealth { target_id } => {
                    let this = self.clone();
                    let project = project.to_string();
                    // In its own task: a slow check never holds up assignments.
                    tokio::spawn(async move { this.check_health_once(&project, &target_id).await });
                }
            }
        }
        futures::future::join_all(decisions).await;
    }

    async fn stop_and_record(&self, project: &str, spin_up_id: &str, reason: &str) {
        let Some(_running) = self.run_once(format!("stop {project}/{spin_up_id}")) else {
            return;
        };
        if !self.stop_spin_up(project, spin_up_id).await {
            return;
        }
        let recorded = self
            .commands
            .execute(
                &system(),
                project,
                SpinUpCommand::RecordStopped {
                    spin_up_id: spin_up_id.into(),
                    reason: reason.into(),
                },
            )
            .await;
        if recorded.is_ok_and(|r| !r.is_empty()) {
            tracing::info!(
                project,
                spin_up = spin_up_id,
                reason,
                "stopped what the spin-up started"
            );
        }
    }
}

/// What caused a scheduled command, recorded as its events' causation id: the work item
/// behind a spin-up.
fn cause(command: &Command) -> Option<&str> {
    match command {
        Command::SpinUp(SpinUpCommand::Trigger { work: Some(w), .. }) => Some(&w.work_id),
        _ => None,
    }
}
