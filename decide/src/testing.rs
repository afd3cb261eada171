//! Given / when / then for the rules. History goes in as events; a command is decided at
//! the world's time and its decisions are recorded; the test reads the events and the
//! state after.

use events::fixture::envelope;
use events::work::AgentRegistered;
use events::Event;
use projections::{Project, State, Work};

use crate::schedule::{self, Duty, Liveness};
use crate::work::{Submission, WorkCommand};
use crate::{decide, AgentCommand, Command, Rejection, Settings};

pub const PROJECT: &str = "p";

pub struct World {
    pub state: State,
    pub settings: Settings,
    /// The clock: events recorded now get this time.
    pub now_ms: u64,
    seq: u64,
    ids: u64,
}

impl Default for World {
    fn default() -> Self {
        World {
            state: State::default(),
            settings: Settings::default(),
            now_ms: 1_000_000,
            seq: 0,
            ids: 0,
        }
    }
}

impl World {
    pub fn project(&self) -> &Project {
        self.state.project_or_empty(PROJECT)
    }

    pub fn work(&self, id: &str) -> &Work {
        self.project().work.get(id).expect("the work item exists")
    }

    /// Moves the clock forward.
    pub fn after_ms(&mut self, ms: u64) -> &mut Self {
        self.now_ms += ms;
        self
    }

    fn record(&mut self, aggregate_id: &str, event: Event) {
        self.seq += 1;
        let e = envelope(PROJECT, aggregate_id, self.now_ms, event);
        self.state.apply(self.seq, &e);
    }

    /// History: `event` was recorded on `aggregate_id` earlier.
    pub fn given(&mut self, aggregate_id: &str, event: Event) -> &mut Self {
        self.record(aggregate_id, event);
        self
    }

    /// Decides `command` now and records what it decided; the recorded events.
    pub fn when(&mut self, command: impl Into<Command>) -> Result<Vec<Event>, Rejection> {
        let decisions = decide(&command.into(), self.project(), &self.settings)?;
        let events = decisions.iter().map(|d| d.event.clone()).collect();
        for d in decisions {
            self.record(&d.aggregate_id, d.event);
        }
        Ok(events)
    }

    /// What the scheduler finds due now.
    pub fn due(&mut self, liveness: &Liveness) -> Vec<Duty> {
        let mut ids = self.ids;
        let duties = schedule::due(
            self.state.project_or_empty(PROJECT),
            liveness,
            &self.settings,
            self.now_ms,
            &mut || {
                ids += 1;
                format!("id{ids}")
            },
        );
        self.ids = ids;
        duties
    }

    /// Carries out every duty that is a decision; returns the events recorded.
    pub fn run_due(&mut self, liveness: &Liveness) -> Vec<Event> {
        let mut out = Vec::new();
        for duty in self.due(liveness) {
            if let Duty::Decide(c) = duty {
                if let Ok(events) = self.when(*c) {
                    out.extend(events);
                }
            }
        }
        out
    }

    pub fn agent(&mut self, id: &str, agent_type: &str, boundaries: &[&str], capacity: u32) {
        let registration = AgentRegistered {
            agent_type: agent_type.into(),
            capabilities: vec!["rust".into()],
            boundaries: boundaries.iter().map(|b| b.to_string()).collect(),
            max_concurrent_tasks: capacity,
            idle_timeout_ms: None,
            hostname: None,
            handle: None,
            spin_up_id: None,
            target_id: None,
        };
        self.when(AgentCommand::Register {
            agent_id: id.into(),
            registration,
            now_ms: self.now_ms,
        })
        .expect("the agent registers");
    }

    pub fn submit(&mut self, id: &str, boundary: &str, priority: i64) {
        self.when(WorkCommand::Submit {
            id: id.into(),
            submission: Submission {
                description: format!("do {id}"),
                capability: "rust".into(),
                boundary: boundary.into(),
                priority: Some(priority),
                ..Default::default()
            },
        })
        .expect("the item is submitted");
    }

    /// Assigns everything the scheduler would; returns (work, agent) in order.
    pub fn assign_all(&mut self) -> Vec<(String, String)> {
        let mut ids = self.ids;
        let commands = schedule::assignments(
            self.state.project_or_empty(PROJECT),
            &self.settings,
            self.now_ms,
            &mut || {
                ids += 1;
                format!("lease{ids}")
            },
        );
        self.ids = ids;
        let mut out = Vec::new();
        for c in commands {
            if let WorkCommand::Assign {
                work_id, agent_id, ..
            } = &c
            {
                out.push((work_id.clone(), agent_id.clone()));
            }
            self.when(c).expect("the assignment is valid");
        }
        out
    }

    /// The lease an item is held under.
    pub fn lease(&self, id: &str) -> crate::work::Lease {
        let w = self.work(id);
        crate::work::Lease {
            work_id: id.into(),
            agent_id: w.assigned_to.clone().expect("assigned"),
            lease_id: w.lease_id.clone().expect("leased"),
        }
    }
}
