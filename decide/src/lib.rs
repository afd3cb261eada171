//! Every rule of Weft as pure functions. A command and the state go in; the events to
//! record come out, or the reason why not. One decider per aggregate ([`target`], [`work`],
//! [`agent`], [`spin_up`], [`budget`], [`access`]), the routing policy ([`routing`]) and the scheduler's rules
//! ([`schedule`]).
//!
//! Nothing here does I/O, reads a clock or draws a random number: ids and the time come in
//! as arguments, and this crate depends on the event vocabulary and the read models only,
//! so the compiler keeps it that way.
//!
//! The read model a decision sees is folded by `projections`; a decider's `evolve` is that
//! fold. A command that touches several aggregates yields one decision per aggregate, and
//! the event store commits a command's decisions atomically (one atomic batch), so no
//! reader ever sees half of a command. Decisions carry no expectations about the log: one
//! writer per project decides every command in order against the state it alone changes,
//! and the log refuses that writer's appends once another has been elected.

pub mod access;
pub mod agent;
pub mod budget;
pub mod explain;
mod rejection;
pub mod routing;
pub mod schedule;
pub mod spin_up;
pub mod target;
#[cfg(test)]
mod testing;
pub mod work;

use events::Event;
use projections::Project;

pub use access::AccessCommand;
pub use agent::AgentCommand;
pub use budget::BudgetCommand;
pub use rejection::{is_agent_type, is_env_name, is_rfc3339, FieldError, Rejection, Validation};
pub use spin_up::SpinUpCommand;
pub use target::TargetCommand;
pub use work::WorkCommand;

/// One event to record, on one aggregate.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub aggregate_id: String,
    pub event: Event,
}

impl Decision {
    pub fn new(aggregate_id: impl Into<String>, event: Event) -> Self {
        Decision {
            aggregate_id: aggregate_id.into(),
            event,
        }
    }
}

/// Any command, of any aggregate.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Command {
    Target(TargetCommand),
    Work(WorkCommand),
    Agent(AgentCommand),
    SpinUp(SpinUpCommand),
    Budget(BudgetCommand),
    Access(AccessCommand),
}

impl From<AccessCommand> for Command {
    fn from(c: AccessCommand) -> Self {
        Command::Access(c)
    }
}

impl From<BudgetCommand> for Command {
    fn from(c: BudgetCommand) -> Self {
        Command::Budget(c)
    }
}

impl From<TargetCommand> for Command {
    fn from(c: TargetCommand) -> Self {
        Command::Target(c)
    }
}
impl From<WorkCommand> for Command {
    fn from(c: WorkCommand) -> Self {
        Command::Work(c)
    }
}
impl From<AgentCommand> for Command {
    fn from(c: AgentCommand) -> Self {
        Command::Agent(c)
    }
}
impl From<SpinUpCommand> for Command {
    fn from(c: SpinUpCommand) -> Self {
        Command::SpinUp(c)
    }
}

/// The settings the rules read: the routing policy, retries, spin-ups and the timers.
#[derive(Clone, Debug)]
pub struct Settings {
    pub routing: routing::RoutingPolicy,
    pub retry: work::RetryPolicy,
    pub spin_up: routing::SpinUpPolicy,
    pub timing: schedule::Timing,
    /// The mechanisms targets may use here (an operator may forbid `local`, say).
    pub mechanisms: Vec<events::target::Mechanism>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            routing: Default::default(),
            retry: Default::default(),
            spin_up: Default::default(),
            timing: Default::default(),
            mechanisms: events::target::Mechanism::ALL.to_vec(),
        }
    }
}

/// Decides `command` against `project`: the events to record (none when the state already
/// is what was asked), or why not.
pub fn decide(
    command: &Command,
    project: &Project,
    settings: &Settings,
) -> Result<Vec<Decision>, Rejection> {
    match command {
        Command::Target(c) => target::decide(c, project, settings),
        Command::Work(c) => work::decide(c, project, settings),
        Command::Agent(c) => agent::decide(c, project, settings),
        Command::SpinUp(c) => spin_up::decide(c, project),
        Command::Budget(c) => budget::decide(c, project),
        Command::Access(c) => access::decide(c, project),
    }
}
