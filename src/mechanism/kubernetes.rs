//! `kubernetes` (kube): a Job per spin-up, deleted at scale-down; credentials from a
//! kubeconfig file or the cluster the pod runs in.

use events::target::KubernetesConfig;
use k8s_openapi::api::batch::v1::Job;
use projections::{SpinUp, Target};

use super::{Launch, Mechanism, MechanismError, Mechanisms, Started};

/// A Job's name for a spin-up: the target's `jobNamePrefix` (default: its name), made a
/// DNS label, and the spin-up id's first part. Derived, so it is known after a restart too.
pub fn job_name(c: &KubernetesConfig, target: &str, spin_up_id: &str) -> String {
    let prefix: String = c
        .job_name_prefix
        .as_deref()
        .unwrap_or(target)
        .to_ascii_lowercase()
        .chars()
        .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '-' })
        .collect();
    let prefix = prefix.trim_matches('-');
    let short: String = spin_up_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect();
    let prefix: String = prefix.chars().take(63 - short.len() - 1).collect();
    format!(
        "{}-{short}",
        if prefix.is_empty() {
            "weft-agent"
        } else {
            &prefix
        }
    )
}

async fn jobs(c: &KubernetesConfig) -> Result<kube::Api<Job>, MechanismError> {
    let client = match &c.kubeconfig_path {
        Some(path) => {
            let unreadable = |e: &dyn std::fmt::Display| {
                MechanismError::MissingSecret(format!("kubeconfig {path}: {e}"))
            };
            let kubeconfig =
                kube::config::Kubeconfig::read_from(path).map_err(|e| unreadable(&e))?;
            let config = kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .map_err(|e| unreadable(&e))?;
            kube::Client::try_from(config).map_err(|e| MechanismError::Config(e.to_string()))?
        }
        None => kube::Client::try_default().await.map_err(|e| {
            MechanismError::MissingSecret(format!("no in-cluster Kubernetes credentials: {e}"))
        })?,
    };
    Ok(kube::Api::namespaced(client, &c.namespace))
}

fn kube_error(e: kube::Error) -> MechanismError {
    match e {
        kube::Error::Api(status) => MechanismError::refused(
            status.code,
            format!(
                "Kubernetes answered {} {}: {}",
                status.code, status.reason, status.message
            ),
        ),
        kube::Error::HyperError(e) => MechanismError::Unreachable(format!("Kubernetes: {e}")),
        other => MechanismError::Failed(format!("Kubernetes: {other}")),
    }
}

impl Mechanism for KubernetesConfig {
    /// A Job with the agent's image, command, environment and resources.
    async fn start(&self, _: &Mechanisms, launch: &Launch<'_>) -> Result<Started, MechanismError> {
        let c = self;
        let target = launch.target;
        let name = job_name(c, &target.name, launch.spin_up_id);
        let env = launch.agent_env(&c.env);
        let labels = serde_json::json!({
            "app.kubernetes.io/managed-by": "weft",
            "weft.dev/spin-up-id": launch.spin_up_id,
            "weft.dev/target-id": target.id,
        });
        let mut container = serde_json::json!({
            "name": "agent",
            "image": c.image,
            "env": env.iter().map(|(k, v)| serde_json::json!({"name": k, "value": v})).collect::<Vec<_>>(),
        });
        if !c.command.is_empty() {
            container["command"] = serde_json::json!(c.command);
        }
        if !c.args.is_empty() {
            container["args"] = serde_json::json!(c.args);
        }
        if let Some(r) = &c.resources {
            let mut amounts = serde_json::Map::new();
            if let Some(cpu) = &r.cpu {
                amounts.insert("cpu".into(), cpu.clone().into());
            }
            if let Some(memory) = &r.memory {
                amounts.insert("memory".into(), memory.clone().into());
            }
            container["resources"] = serde_json::json!({"requests": amounts, "limits": amounts});
        }
        let mut pod = serde_json::json!({"restartPolicy": "Never", "containers": [container]});
        if let Some(account) = &c.service_account {
            pod["serviceAccountName"] = account.clone().into();
        }
        if let Some(secret) = &c.image_pull_secret {
            pod["imagePullSecrets"] = serde_json::json!([{"name": secret}]);
        }
        let mut spec = serde_json::json!({"backoffLimit": 0, "template": {"metadata": {"labels": labels}, "spec": pod}});
        if let Some(ttl) = c.ttl_seconds_after_finished {
            spec["ttlSecondsAfterFinished"] = ttl.into();
        }
        let job: Job = serde_json::from_value(serde_json::json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "labels": labels},
            "spec": spec,
        }))
        .map_err(|e| MechanismError::Config(format!("cannot build the Job: {e}")))?;
        let jobs = jobs(c).await?;
        jobs.create(&kube::api::PostParams::default(), &job)
            .await
            .map_err(kube_error)?;
        Ok(Started {
            detail: format!("job {name} in namespace {}", c.namespace),
            pid: None,
        })
    }

    /// The API is reachable and the credentials may list Jobs in the namespace.
    async fn check(&self, _: &Mechanisms) -> Result<(), MechanismError> {
        jobs(self)
            .await?
            .list(&kube::api::ListParams::default().limit(1))
            .await
            .map_err(kube_error)?;
        Ok(())
    }

    /// Deletes the Job (and with it its pod).
    async fn stop(
        &self,
        _: &Mechanisms,
        target: &Target,
        spin_up: &SpinUp,
    ) -> Result<(), MechanismError> {
        let name = job_name(self, &target.name, &spin_up.id);
        match jobs(self)
            .await?
            .delete(&name, &kube::api::DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            // Already gone (its TTL, or someone else): nothing left to stop.
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(kube_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_dns_labels() {
        let id = "0f3c5e2a-1111-4222-8333-444455556666";
        let named = KubernetesConfig {
            job_name_prefix: Some("Weft Agent!".into()),
            ..Default::default()
        };
        assert_eq!(job_name(&named, "ignored", id), "weft-agent-0f3c5e2a");
        let long = KubernetesConfig::default();
        let name = job_name(&long, &"x".repeat(200), id);
        assert!(name.len() <= 63 && name.ends_with("-0f3c5e2a"), "{name}");
        assert_eq!(job_name(&long, "***", id), "weft-agent-0f3c5e2a");
    }
}
