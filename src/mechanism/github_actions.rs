//! `github-actions`: a `workflow_dispatch` of a workflow, with the spin-up's id, work item,
//! capability, NATS URL and project as inputs.

use std::time::Duration;

use events::target::GithubActionsConfig;
use projections::{SpinUp, Target};

use super::{
    body_excerpt, http_error, secret, Launch, Mechanism, MechanismError, Mechanisms, Started,
};

fn request(
    shared: &Mechanisms,
    c: &GithubActionsConfig,
    method: reqwest::Method,
    path: &str,
) -> Result<reqwest::RequestBuilder, MechanismError> {
    let token = secret(
        c.token_env_var.as_deref().unwrap_or("GITHUB_TOKEN"),
        "GitHub token",
    )?;
    let base = c
        .api_base_url
        .as_deref()
        .unwrap_or("https://api.github.com")
        .trim_end_matches('/');
    let url = format!(
        "{base}/repos/{}/actions/workflows/{}{path}",
        c.repo, c.workflow
    );
    Ok(shared
        .http
        .request(method, url)
        .timeout(Duration::from_millis(c.start_timeout_ms.unwrap_or(10_000)))
        .bearer_auth(token)
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28")
        .header("user-agent", "weft"))
}

impl Mechanism for GithubActionsConfig {
    /// The workflow must declare `spinUpId`, `workItemId`, `capability`, `natsUrl` and
    /// `projectId` as inputs.
    async fn start(
        &self,
        shared: &Mechanisms,
        launch: &Launch<'_>,
    ) -> Result<Started, MechanismError> {
        let mut inputs: serde_json::Map<String, serde_json::Value> = self
            .inputs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        inputs.insert("spinUpId".into(), launch.spin_up_id.into());
        inputs.insert(
            "workItemId".into(),
            launch.work_id.unwrap_or_default().into(),
        );
        inputs.insert(
            "capability".into(),
            launch.capability.unwrap_or_default().into(),
        );
        inputs.insert("natsUrl".into(), launch.nats_url.into());
        inputs.insert("projectId".into(), launch.project.into());
        let body = serde_json::json!({
            "ref": self.git_ref.as_deref().unwrap_or("main"),
            "inputs": inputs,
        });
        let response = request(shared, self, reqwest::Method::POST, "/dispatches")?
            .json(&body)
            .send()
            .await
            .map_err(http_error)?;
        match response.status().as_u16() {
            204 | 200 | 201 => Ok(Started {
                detail: format!("workflow {} dispatched on {}", self.workflow, self.repo),
                pid: None,
            }),
            status => {
                let text = body_excerpt(response).await;
                Err(MechanismError::refused(
                    status,
                    format!("GitHub answered HTTP {status}: {text}"),
                ))
            }
        }
    }

    /// The workflow exists and the token may see it.
    async fn check(&self, shared: &Mechanisms) -> Result<(), MechanismError> {
        let response = request(shared, self, reqwest::Method::GET, "")?
            .send()
            .await
            .map_err(http_error)?;
        match response.status().as_u16() {
            200 => Ok(()),
            status => Err(MechanismError::refused(
                status,
                format!(
                    "GitHub answered HTTP {status} for workflow {} of {}",
                    self.workflow, self.repo
                ),
            )),
        }
    }

    /// A workflow run ends when its agent leaves.
    async fn stop(&self, _: &Mechanisms, _: &Target, _: &SpinUp) -> Result<(), MechanismError> {
        Ok(())
    }
}
