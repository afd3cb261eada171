//! Connecting to NATS: one server or a cluster's list, unlimited reconnects, and a first
//! connection that is retried with backoff (the server may start after us) instead of
//! failing the process.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use async_nats::{Client, ConnectOptions, Event};

/// The servers of a comma-separated list (`nats://a:4222,nats://b:4222`), as every NATS
/// client reads `NATS_URL`.
pub fn servers(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// The URL (or list of URLs) with any password replaced, for logs.
pub fn redact(urls: &str) -> String {
    servers(urls)
        .into_iter()
        .map(redact_one)
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_one(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Splits credentials out of a URL, percent-decoded (a password may contain `@` or `:`).
/// Returns the URL without them. URLs without a scheme (`host:port`) pass unchanged.
pub fn split_credentials(raw: &str) -> (String, Option<(String, String)>) {
    let Ok(mut url) = url::Url::parse(raw) else {
        return (raw.to_string(), None);
    };
    if url.username().is_empty() || url.cannot_be_a_base() {
        return (raw.to_string(), None);
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let credentials = (decode(url.username()), decode(url.password().unwrap_or("")));
    let _ = url.set_username("");
    let _ = url.set_password(None);
    (url.to_string(), Some(credentials))
}

/// Counts (re)connections to NATS; subscribers learn that server-side state such as
/// consumers may be gone, and that others could not reach us meanwhile.
pub type Connections = Arc<watch::Sender<u64>>;

pub fn connections() -> Connections {
    Arc::new(watch::channel(0).0)
}

/// Who connects: a user and password (also in the URL), or an NKey seed (Weft's own, or
/// the credentials Weft issued to an agent, whose replies then come to its own inbox).
#[derive(Clone, Debug, Default)]
pub struct Login {
    pub user: Option<String>,
    pub pass: Option<String>,
    pub nkey_seed: Option<String>,
    pub inbox_prefix: Option<String>,
}

impl Login {
    pub fn password(user: Option<&str>, pass: Option<&str>) -> Self {
        Login {
            user: user.map(String::from),
            pass: pass.map(String::from),
            ..Default::default()
        }
    }
}

fn options(login: &Login, url: &str, connected: Connections) -> ConnectOptions {
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
                        connected.send_modify(|n| *n += 1);
                    }
                    other => tracing::debug!("NATS: {other}"),
                }
            }
        });
    // Credentials in a URL win over NATS_USER/NATS_PASS, as in the original.
    let in_url = servers(url)
        .into_iter()
        .find_map(|u| split_credentials(u).1);
    match (in_url, &login.user) {
        (Some((user, pass)), _) => options = options.user_and_password(user, pass),
        (None, Some(user)) => {
            options =
                options.user_and_password(user.clone(), login.pass.clone().unwrap_or_default())
        }
        (None, None) => {}
    }
    if let Some(seed) = &login.nkey_seed {
        options = options.nkey(seed.clone());
    }
    if let Some(prefix) = &login.inbox_prefix {
        options = options.custom_inbox_prefix(prefix.clone());
    }
    options
}

/// Connects, retrying until it works. Cancel by dropping the future. `connected` counts
/// every (re)connection after the first.
pub async fn connect(url: &str, login: &Login, connected: Connections) -> Client {
    use backon::Retryable;
    let addresses: Vec<String> = servers(url)
        .into_iter()
        .map(|u| split_credentials(u).0)
        .collect();
    let attempt = || async {
        options(login, url, connected.clone())
            .connect(addresses.as_slice())
            .await
    };
    let forever = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(10))
        .without_max_times();
    loop {
        // Without a limit on attempts, this ends only in success.
        let connected = attempt
            .retry(forever)
            .notify(|e, wait| {
                tracing::warn!(
                    url = %redact(url),
                    retry_in_ms = wait.as_millis() as u64,
                    "NATS is not reachable yet: {e}"
                )
            })
            .await;
        if let Ok(client) = connected {
            tracing::info!(url = %redact(url), "connected to NATS");
            return client;
        }
    }
}

/// Connects once (for a command that runs and ends, not a service): an error when NATS
/// does not answer within ten seconds.
pub async fn connect_once(urls: &str) -> Result<Client, String> {
    let addresses: Vec<String> = servers(urls)
        .into_iter()
        .map(|u| split_credentials(u).0)
        .collect();
    let mut options = ConnectOptions::new().name("weft");
    if let Some((user, pass)) = servers(urls)
        .into_iter()
        .find_map(|u| split_credentials(u).1)
    {
        options = options.user_and_password(user, pass);
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        options.connect(addresses.as_slice()),
    )
    .await
    .map_err(|_| format!("NATS at {} did not answer", redact(urls)))?
    .map_err(|e| format!("cannot connect to NATS at {}: {e}", redact(urls)))
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn credentials_are_split_out_and_decoded() {
        use super::split_credentials;
        assert_eq!(
            split_credentials("ws://weft:p%40ss%20word@127.0.0.1:8080/path"),
            (
                "ws://127.0.0.1:8080/path".to_string(),
                Some(("weft".to_string(), "p@ss word".to_string()))
            )
        );
        assert_eq!(
            split_credentials("nats://h:4222"),
            ("nats://h:4222".to_string(), None)
        );
        assert_eq!(split_credentials("localhost:4222").1, None);
    }

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(redact("nats://u:secret@h:4222"), "nats://u:***@h:4222");
        assert_eq!(redact("wss://u:p%40ss@h/path"), "wss://u:***@h/path");
        assert_eq!(redact("nats://h:4222"), "nats://h:4222");
        assert_eq!(
            redact("nats://u:secret@a:4222, nats://u:secret@b:4222"),
            "nats://u:***@a:4222,nats://u:***@b:4222"
        );
    }

    #[test]
    fn a_cluster_is_a_comma_separated_list() {
        use super::servers;
        assert_eq!(
            servers("nats://a:4222,nats://b:4222 , nats://c:4222,"),
            ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
        );
        let parsed: Vec<async_nats::ServerAddr> =
            servers("nats://127.0.0.1:4222,nats://127.0.0.1:4223")
                .into_iter()
                .map(|u| u.parse().expect("a server address"))
                .collect();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].port(), 4223);
    }
}
