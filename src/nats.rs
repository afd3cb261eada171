//! Connecting to NATS: unlimited reconnects, and a first connection that is retried with
//! backoff (the server may start after us) instead of failing the process.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use async_nats::{Client, ConnectOptions, Event};

/// The URL with any password replaced, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

fn options(
    user: Option<&str>,
    pass: Option<&str>,
    url: &str,
    connected: Arc<Notify>,
) -> ConnectOptions {
    let mut options = ConnectOptions::new()
        .name("weft")
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |event| {
            let connected = connected.clone();
            async move {
                match event {
                    Event::Disconnected => tracing::warn!("NATS connection lost; reconnecting"),
                    Event::Connected => {
                        tracing::info!("NATS connection (re)established");
                        connected.notify_one();
                    }
                    other => tracing::debug!("NATS: {other}"),
                }
            }
        });
    let url_has_user = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .is_some_and(|host| host.contains('@'));
    if let (Some(user), false) = (user, url_has_user) {
        options = options.user_and_password(user.into(), pass.unwrap_or_default().into());
    }
    options
}

/// Connects, retrying until it works. Cancel by dropping the future. `connected` is
/// notified at every (re)connection: server-side state such as consumers may be gone.
pub async fn connect(
    url: &str,
    user: Option<&str>,
    pass: Option<&str>,
    connected: Arc<Notify>,
) -> Client {
    let mut backoff = Duration::from_millis(250);
    let mut attempt = 1u32;
    loop {
        match options(user, pass, url, connected.clone())
            .connect(url)
            .await
        {
            Ok(client) => {
                tracing::info!(url = %redact(url), "connected to NATS");
                return client;
            }
            Err(e) => {
                tracing::warn!(
                    url = %redact(url),
                    attempt,
                    retry_in_ms = backoff.as_millis() as u64,
                    "NATS is not reachable yet: {e}"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(redact("nats://u:secret@h:4222"), "nats://u:***@h:4222");
        assert_eq!(redact("wss://u:p%40ss@h/path"), "wss://u:***@h/path");
        assert_eq!(redact("nats://h:4222"), "nats://h:4222");
    }
}
