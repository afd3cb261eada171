//! `webhook`: an HTTP request to a URL the target names, with a templated JSON body,
//! secret headers from environment variables and an HMAC-SHA256 signature.

use std::time::Duration;

use events::target::WebhookConfig;
use hmac::{Hmac, Mac};
use projections::{SpinUp, Target};
use sha2::Sha256;

use super::{
    body_excerpt, http_error, secret, Launch, Mechanism, MechanismError, Mechanisms, Started,
};

/// Escapes `value` for use inside a JSON string, so templates stay valid JSON.
fn json_escaped(value: &str) -> String {
    let quoted = serde_json::Value::from(value).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

pub fn render_template(template: &str, launch: &Launch<'_>) -> String {
    let work = launch.work_id.unwrap_or_default();
    [
        ("{{spinUpId}}", launch.spin_up_id),
        ("{{workItemId}}", work),
        ("{{capability}}", launch.capability.unwrap_or_default()),
        ("{{boundary}}", launch.boundary.unwrap_or_default()),
        ("{{targetName}}", launch.target.name.as_str()),
        ("{{targetId}}", launch.target.id.as_str()),
        ("{{projectId}}", launch.project),
        ("{{natsUrl}}", launch.nats_url),
    ]
    .iter()
    .fold(template.to_string(), |body, (placeholder, value)| {
        body.replace(placeholder, &json_escaped(value))
    })
}

impl Mechanism for WebhookConfig {
    async fn start(
        &self,
        shared: &Mechanisms,
        launch: &Launch<'_>,
    ) -> Result<Started, MechanismError> {
        let method = reqwest::Method::from_bytes(
            self.method
                .as_deref()
                .unwrap_or("POST")
                .to_ascii_uppercase()
                .as_bytes(),
        )
        .map_err(|e| MechanismError::Config(e.to_string()))?;
        let body = match &self.body_template {
            Some(template) => render_template(template, launch),
            None => serde_json::json!({
                "spinUpId": launch.spin_up_id,
                "targetId": launch.target.id,
                "targetName": launch.target.name,
                "projectId": launch.project,
                "workItemId": launch.work_id,
                "capability": launch.capability,
                "boundary": launch.boundary,
                "natsUrl": launch.nats_url,
            })
            .to_string(),
        };
        let mut request = shared
            .http
            .request(method, &self.url)
            .timeout(Duration::from_millis(self.timeout_ms.unwrap_or(30_000)))
            .header("content-type", "application/json")
            .header("x-weft-spin-up-id", launch.spin_up_id);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        for (name, var) in &self.secret_headers {
            request = request.header(name, secret(var, &format!("header {name}"))?);
        }
        if let Some(var) = &self.hmac_secret_env_var {
            let key = secret(var, "HMAC signing secret")?;
            let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
                .map_err(|e| MechanismError::Config(e.to_string()))?;
            mac.update(body.as_bytes());
            request = request.header(
                "x-weft-signature",
                format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
            );
        }
        let response = request.body(body).send().await.map_err(http_error)?;
        let status = response.status().as_u16();
        let accepted = if self.success_codes.is_empty() {
            [200, 201, 202, 204].contains(&status)
        } else {
            self.success_codes.contains(&status)
        };
        if accepted {
            Ok(Started {
                detail: format!("HTTP {status} from {}", self.url),
                pid: None,
            })
        } else {
            let text = body_excerpt(response).await;
            Err(MechanismError::refused(
                status,
                format!("webhook answered HTTP {status}: {text}"),
            ))
        }
    }

    /// Reachable: any HTTP answer below 500 to a HEAD request.
    async fn check(&self, shared: &Mechanisms) -> Result<(), MechanismError> {
        let response = shared
            .http
            .head(&self.url)
            .timeout(Duration::from_millis(self.timeout_ms.unwrap_or(10_000)))
            .send()
            .await
            .map_err(http_error)?;
        let status = response.status();
        if status.is_server_error() {
            return Err(MechanismError::refused(
                status.as_u16(),
                format!("webhook answered HTTP {}", status.as_u16()),
            ));
        }
        Ok(())
    }

    /// What a webhook started ends when its agent leaves.
    async fn stop(&self, _: &Mechanisms, _: &Target, _: &SpinUp) -> Result<(), MechanismError> {
        Ok(())
    }
}
