//! `weft serve`: connect (or start the embedded NATS), migrate, rebuild state, serve.

use std::sync::Arc;

use poem::listener::TcpListener;
use poem::Server;

use crate::api::{self, AppState};
use std::time::Duration;

use crate::commands::Commands;
use crate::config::ServeConfig;
use crate::coordinator::{Coordinator, CoordinatorSettings, Timing};
use crate::embedded::EmbeddedNats;
use crate::registry::WarpRegistry;
use crate::spinup::SpinUpSettings;
use crate::store::EventStore;
use crate::work::WorkSettings;

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
    }
}

pub async fn run(config: ServeConfig) -> Result<(), String> {
    config.validate()?;
    // Read before anything starts, so a bad policy file fails fast.
    config.policy()?;
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
    let result = serve(&config, embedded.as_ref().map(|e| e.url().to_string())).await;
    if let Some(embedded) = embedded {
        tokio::task::spawn_blocking(move || embedded.stop())
            .await
            .map_err(|e| e.to_string())?;
    }
    result
}

async fn serve(config: &ServeConfig, embedded_url: Option<String>) -> Result<(), String> {
    let url = embedded_url.or(config.nats_url.clone()).unwrap_or_default();
    let reconnected = Arc::new(tokio::sync::Notify::new());
    let client = tokio::select! {
        client = crate::nats::connect(&url, config.nats_user.as_deref(), config.nats_pass.as_deref(), reconnected.clone()) => client,
        _ = shutdown_signal() => return Ok(()),
    };
    let outcome = migrations::apply(&client, concat!("weft ", env!("CARGO_PKG_VERSION")))
        .await
        .map_err(|e| e.to_string())?;
    if outcome.previous != outcome.current {
        tracing::info!(
            from = outcome.previous,
            to = outcome.current,
            "topology migrated"
        );
    }
    let store = EventStore::new(client.clone());
    let projection = tokio::select! {
        p = crate::projector::start(store.clone(), config.snapshot_every, reconnected) => p.map_err(|e| e.to_string())?,
        _ = shutdown_signal() => return Ok(()),
    };
    let commands = Arc::new(Commands::new(store.clone(), projection));
    let ms = Duration::from_millis;
    let coordinator = Coordinator::new(
        commands.clone(),
        client.clone(),
        CoordinatorSettings {
            policy: config.policy()?,
            work: WorkSettings {
                default_max_attempts: config.max_attempts,
                retry_base_ms: config.retry_backoff_ms,
                retry_max_ms: 60_000,
            },
            spin_up: SpinUpSettings {
                cooldown_ms: config.spin_up_cooldown_ms,
            },
            timing: Timing {
                heartbeat_interval: ms(config.heartbeat_interval_ms),
                agent_timeout: ms(config.agent_timeout_ms),
                accept_timeout: ms(config.accept_timeout_ms),
                spin_up_timeout: ms(config.spin_up_timeout_ms),
                idle_timeout: ms(config.idle_timeout_ms),
                scale_down_grace: ms(config.scale_down_grace_ms),
            },
            agent_nats_url: config.agent_nats_url.clone().unwrap_or_else(|| url.clone()),
        },
    );
    let registry = Arc::new(WarpRegistry::default());
    let tasks = [
        tokio::spawn(coordinator.clone().run_scheduler()),
        tokio::spawn({
            let coordinator = coordinator.clone();
            async move {
                if let Err(e) = coordinator.serve_rpc().await {
                    tracing::error!("{e}");
                }
            }
        }),
        tokio::spawn({
            let (registry, js) = (registry.clone(), store.jetstream().clone());
            async move { registry.watch(js).await }
        }),
    ];
    let state = Arc::new(AppState {
        live: crate::api::LiveState {
            connections: Default::default(),
            feed: tokio::sync::broadcast::channel(8192).0,
            stats_interval: ms(config.ws_stats_interval_ms.max(100)),
        },
        commands,
        coordinator: coordinator.clone(),
        registry,
        store,
        client: client.clone(),
        default_project: config.default_project.clone(),
    });
    let feed = tokio::spawn(crate::api::ws::run_feed(state.clone()));
    let tokens = config.tokens();
    if tokens.is_empty() {
        tracing::warn!("API_TOKENS is not set: the API accepts requests without authentication");
    }
    let address = format!("{}:{}", config.api_host, config.api_port);
    let app = api::app(state, &tokens, config.max_body_bytes);
    tracing::info!(%address, "API listening; docs at /api/docs");
    Server::new(TcpListener::bind(address.clone()))
        .run_with_graceful_shutdown(
            app,
            shutdown_signal(),
            Some(std::time::Duration::from_secs(10)),
        )
        .await
        .map_err(|e| format!("cannot serve on {address}: {e}"))?;
    for task in tasks {
        task.abort();
    }
    feed.abort();
    coordinator.mechanisms.stop_owned().await;
    if let Err(e) = client.flush().await {
        tracing::warn!("could not flush NATS on exit: {e}");
    }
    Ok(())
}
