//! The enumerations of the API (statuses, health, mechanisms), each declared once with
//! its conversions to and from the read models, so the spec lists what is accepted and a
//! filter is checked by its type.

/// Declares an API enum in kebab-case that mirrors a read model's enum variant by variant.
macro_rules! mirrored {
    ($(#[$doc:meta])* $name:ident <=> $model:ty { $($variant:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(
            poem_openapi::Enum, serde::Deserialize, serde::Serialize, Clone, Copy, Debug, PartialEq, Eq,
        )]
        #[oai(rename_all = "kebab-case")]
        #[serde(rename_all = "kebab-case")]
        pub enum $name {
            $($variant),*
        }

        impl From<$model> for $name {
            fn from(v: $model) -> Self {
                match v {
                    $(<$model>::$variant => Self::$variant),*
                }
            }
        }

        impl From<$name> for $model {
            fn from(v: $name) -> Self {
                match v {
                    $($name::$variant => <$model>::$variant),*
                }
            }
        }
    };
}

mirrored! {
    /// A token's role: `viewer` reads; `operator` also submits, cancels and retries work and
    /// shuts down or resumes agents; `admin` also manages targets, budgets and tokens.
    RoleName <=> events::access::Role { Viewer, Operator, Admin }
}

mirrored! {
    /// A work item's place in its lifecycle.
    WorkStatusName <=> projections::WorkStatus {
        Pending, Assigned, InProgress, Completed, Failed, Cancelled, DeadLettered,
    }
}

mirrored! {
    /// `in-use`: an agent Weft started runs there.
    TargetStatusName <=> projections::TargetStatus { Available, InUse, Disabled, Error }
}

mirrored! {
    HealthStatusName <=> projections::HealthStatus { Healthy, Unhealthy, Unknown }
}

mirrored! {
    /// A spin-up's progress: triggered, then started by its mechanism, then completed when
    /// its agent registers; or failed; stopped at scale-down.
    SpinUpStatusName <=> projections::SpinUpStatus { Triggered, Started, Completed, Failed, Stopped }
}

mirrored! {
    /// How a target starts agents.
    MechanismName <=> events::target::Mechanism { Ssh, GithubActions, Local, Webhook, Kubernetes }
}

/// An agent as the API shows it: `busy` is online with every slot taken, `paused` online
/// but held back by a usage limit.
#[derive(
    poem_openapi::Enum, serde::Deserialize, serde::Serialize, Clone, Copy, Debug, PartialEq, Eq,
)]
#[oai(rename_all = "kebab-case")]
#[serde(rename_all = "kebab-case")]
pub enum AgentStatusName {
    Online,
    Busy,
    Paused,
    Offline,
}

impl AgentStatusName {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatusName::Online => "online",
            AgentStatusName::Busy => "busy",
            AgentStatusName::Paused => "paused",
            AgentStatusName::Offline => "offline",
        }
    }
}

/// Declares an API enum that stands alone (no read model mirrors it), each variant with
/// its name on the wire.
macro_rules! words {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $wire:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(
            poem_openapi::Enum, serde::Deserialize, serde::Serialize, Clone, Copy, Debug, PartialEq, Eq,
        )]
        pub enum $name {
            $(#[oai(rename = $wire)] #[serde(rename = $wire)] $variant),*
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),*
                }
            }
        }
    };
}

words! {
    /// Why work was cancelled (the original's reasons).
    CancelReason {
        UserRequested = "user-requested",
        DeadlinePassed = "deadline-passed",
        ResourceConstraint = "resource-constraint",
        SystemShutdown = "system-shutdown",
    }
}

words! {
    /// Why agents are asked to shut down (the original's reasons).
    ShutdownReason {
        Manual = "manual",
        ScalingDown = "scaling-down",
        Maintenance = "maintenance",
        Error = "error",
    }
}

words! {
    /// The kinds of aggregate, as the event log names them.
    AggregateName {
        Target = "target",
        Work = "work",
        Agent = "agent",
        SpinUp = "spinup",
        Writer = "writer",
        Budget = "budget",
        Token = "token",
        Credential = "credential",
    }
}

impl From<AggregateName> for events::AggregateKind {
    fn from(name: AggregateName) -> Self {
        match name {
            AggregateName::Target => events::AggregateKind::Target,
            AggregateName::Work => events::AggregateKind::Work,
            AggregateName::Agent => events::AggregateKind::Agent,
            AggregateName::SpinUp => events::AggregateKind::SpinUp,
            AggregateName::Writer => events::AggregateKind::Writer,
            AggregateName::Budget => events::AggregateKind::Budget,
            AggregateName::Token => events::AggregateKind::Token,
            AggregateName::Credential => events::AggregateKind::Credential,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_names_are_the_read_models_names() {
        for s in projections::WorkStatus::ALL {
            let name = serde_json::to_value(WorkStatusName::from(s)).unwrap();
            assert_eq!(name, s.as_str());
        }
        for kind in events::AggregateKind::ALL {
            let name: AggregateName = serde_json::from_value(kind.as_str().into()).unwrap();
            assert_eq!(events::AggregateKind::from(name), kind);
        }
        let name = serde_json::to_value(MechanismName::GithubActions).unwrap();
        assert_eq!(name, "github-actions");
        assert_eq!(
            events::target::Mechanism::from(MechanismName::GithubActions),
            events::target::Mechanism::GithubActions
        );
    }
}
