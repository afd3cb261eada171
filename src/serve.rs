//! `weft serve`: connect (or start the embedded NATS), migrate, rebuild state, serve; on
//! SIGINT or SIGTERM, stop every task through one shutdown signal and wait for them.

use std::sync::Arc;
use std::time::Duration;

use poem::listener::TcpListener;
use poem::Server;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::commands::Commands;
use crate::config::ServeConfig;
use crate::coordinator::Coordinator;
use crate::embedded::EmbeddedNats;
use crate::registry::WarpRegistry;
use crate::store::EventStore;

/// Cancels `shutdown` at the first SIGINT or SIGTERM.
fn cancel_on_signal(shutdown: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
                _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
            },
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        shutdown.cancel();
    });
}

pub async fn run(config: ServeConfig) -> Result<(), String> {
    config.validate()?;
    // Read before anything starts, so a bad policy file fails fast.
    let settings = config.settings()?;
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let embedded = match &config.nats_url {
        Some(_) => None,
        None => {
            let (dir, port, sync) = (
                config.data_dir.clone(),
                config.nats_port,
                config.nats_sync.clone(),
            );
            let started =
                tokio::task::spawn_blocking(move || EmbeddedNats::start(&dir, port, &sync))
                    .await
                    .map_err(|e| e.to_string())??;
            Some(started)
        }
    };
    let (url, login, gate) = match &embedded {
        Some(e) => (e.url().to_string(), e.login(), Some(e.gate())),
        None => (
            config.nats_url.clone().unwrap_or_default(),
            crate::nats::Login::password(config.nats_user.as_deref(), config.nats_pass.as_deref()),
            None,
        ),
    };
    let result = serve(&config, settings, &url, &login, gate, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(embedded) = embedded {
        tokio::task::spawn_blocking(move || embedded.stop())
            .await
            .map_err(|e| e.to_string())?;
    }
    result
}

async fn serve(
    config: &ServeConfig,
    settings: decide::Settings,
    url: &str,
    login: &crate::nats::Login,
    gate: Option<crate::embedded::Gate>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let connections = crate::nats::connections();
    let client = tokio::select! {
        client = crate::nats::connect(url, login, connections.clone()) => client,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let topology = migrations::Topology {
        replicas: config.replicas,
        writer_lease: Duration::from_millis(config.writer_lease_ms),
        output: config.output_limits(),
    };
    // A cluster still forming (or busy) refuses or times out for a while: ask again.
    let applied_by = concat!("weft ", env!("CARGO_PKG_VERSION"));
    let attempt = || migrations::apply(&client, applied_by, &topology);
    let outcome = {
        use backon::Retryable;
        attempt
            .retry(
                backon::ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(500))
                    .with_max_delay(Duration::from_secs(5))
                    .with_total_delay(Some(Duration::from_secs(30)))
                    .without_max_times(),
            )
            .sleep(tokio::time::sleep)
            .when(migrations::Error::may_pass)
            .notify(|e, wait| {
                tracing::warn!(
                    retry_in_ms = wait.as_millis() as u64,
                    "topology not applied yet: {e}"
                )
            })
            .await
            .map_err(|e| e.to_string())?
    };
    if outcome.previous != outcome.current {
        tracing::info!(
            from = outcome.previous,
            to = outcome.current,
            "topology migrated"
        );
    }
    let store = EventStore::new(client.clone());
    let projection = tokio::select! {
        p = crate::projector::start(store.clone(), config.snapshot_policy(), connections.clone(), shutdown.clone()) => p.map_err(|e| e.to_string())?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let replicas = store.replicas().await.map_err(|e| e.to_string())?;
    let mode = config.commit_mode(replicas);
    let instance = config.instance();
    tracing::info!(instance, ?mode, replicas, "writing to the event log");
    let leases = crate::leases::Leases::new(
        store
            .jetstream()
            .get_key_value(migrations::WRITER_BUCKET)
            .await
            .map_err(|e| format!("cannot open the writer leases: {e}"))?,
        instance.clone(),
        topology.writer_lease,
    );
    let commands = Arc::new(Commands::new(
        store.clone(),
        projection,
        Arc::new(settings),
        instance,
        mode,
        Some(leases.clone()),
    ));
    // Its own signal: on shutdown the leases go first, so standbys take over while this
    // instance finishes what it has in hand.
    let leaving = CancellationToken::new();
    // And the leases are watched until the API has answered its last request, so those
    // requests find the new writers.
    let served_all = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn({
        let projection = commands.projection().clone();
        let (leaving, served_all) = (leaving.clone(), served_all.clone());
        leases.clone().run(
            move || projection.read(|s| s.projects.keys().cloned().collect()),
            leaving,
            served_all,
        )
    });
    tasks.spawn(commands.clone().serve_forwarded(shutdown.clone()));
    let coordinator = Coordinator::new(
        commands.clone(),
        client.clone(),
        config
            .agent_nats_url
            .clone()
            .unwrap_or_else(|| url.to_string()),
        gate.is_some(),
    );
    if let Some(gate) = gate {
        tasks.spawn(crate::embedded::keep_gate(
            gate,
            commands.projection().clone(),
            shutdown.clone(),
        ));
    }
    let registry = Arc::new(WarpRegistry::default());
    tasks.spawn(coordinator.clone().run_scheduler(shutdown.clone()));
    tasks.spawn(coordinator.clone().carry_out_recorded(shutdown.clone()));
    tasks.spawn({
        let (coordinator, shutdown) = (coordinator.clone(), shutdown.clone());
        async move {
            if let Err(e) = coordinator.serve_rpc(shutdown).await {
                tracing::error!("{e}");
            }
        }
    });
    tasks.spawn({
        let (registry, js, shutdown) = (
            registry.clone(),
            store.jetstream().clone(),
            shutdown.clone(),
        );
        async move { registry.watch(js, shutdown).await }
    });
    if config.warp_bridge {
        tasks.spawn(
            crate::warp::WarpBridge::new(client.clone(), registry.clone(), commands.clone())
                .run(shutdown.clone()),
        );
    }
    tasks.spawn({
        // After a reconnection, agents could not reach us: each gets a fresh window.
        let (coordinator, mut changes, shutdown) = (
            coordinator.clone(),
            connections.subscribe(),
            shutdown.clone(),
        );
        async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = changes.changed() => match changed {
                        Ok(()) => coordinator.reconnected(),
                        Err(_) => return,
                    },
                }
            }
        }
    });
    let past = crate::past::Past::new(store.clone(), commands.projection().clone());
    let audits = crate::audit::Audits::default();
    if config.audit_interval_ms > 0 {
        tasks.spawn(crate::audit::run_every(
            store.clone(),
            commands.projection().clone(),
            Duration::from_millis(config.audit_interval_ms),
            audits.clone(),
            shutdown.clone(),
        ));
    }
    let state = Arc::new(AppState {
        live: crate::api::LiveState {
            connections: Default::default(),
            feed: tokio::sync::broadcast::channel(8192).0,
            stats_interval: Duration::from_millis(config.ws_stats_interval_ms.max(100)),
        },
        commands,
        coordinator: coordinator.clone(),
        registry,
        past,
        audits,
        store,
        client: client.clone(),
        default_project: config.default_project.clone(),
        authentication: !config.tokens().is_empty(),
    });
    tasks.spawn(crate::api::ws::run_feed(state.clone(), shutdown.clone()));
    let tokens = config.tokens();
    if tokens.is_empty() {
        tracing::warn!("API_TOKENS is not set: the API accepts requests without authentication");
    }
    let address = format!("{}:{}", config.api_host, config.api_port);
    let keys = api::Keys {
        api_tokens: tokens.iter().map(|t| crate::access::digest(t)).collect(),
        limit_api_tokens: config.rate_limit_api_tokens,
    };
    let rate_limit = (config.rate_limit_per_second > 0)
        .then_some((config.rate_limit_per_second, config.rate_limit_burst));
    let app = api::app(state, keys, rate_limit, config.max_body_bytes);
    tracing::info!(%address, "API listening; docs at /api/docs");
    let stopping = {
        let (shutdown, leaving, leases) = (shutdown.clone(), leaving.clone(), leases.clone());
        async move {
            shutdown.cancelled().await;
            // Hand the projects over before the API stops taking requests: the commands
            // in hand here go to the new writers.
            leaving.cancel();
            leases.release_all().await;
        }
    };
    let served = match (&config.api_tls_cert, &config.api_tls_key) {
        (Some(cert), Some(key)) => {
            let tls = crate::tls::server_config(cert, key)?;
            let listener = tokio::net::TcpListener::bind(&address)
                .await
                .map_err(|e| format!("cannot serve on {address}: {e}"))?;
            Server::new_with_acceptor(crate::tls::TlsAcceptor::new(listener, tls))
                .run_with_graceful_shutdown(app, stopping, Some(Duration::from_secs(10)))
                .await
        }
        _ => {
            Server::new(TcpListener::bind(address.clone()))
                .run_with_graceful_shutdown(app, stopping, Some(Duration::from_secs(10)))
                .await
        }
    }
    .map_err(|e| format!("cannot serve on {address}: {e}"));
    shutdown.cancel();
    leaving.cancel();
    served_all.cancel();
    // Every task ends at the signal; wait for them rather than dropping them mid-step.
    if tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("some tasks did not stop within 10 s");
    }
    coordinator.mechanisms.stop_owned().await;
    if let Err(e) = client.flush().await {
        tracing::warn!("could not flush NATS on exit: {e}");
    }
    served
}
