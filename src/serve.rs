//! `sendtime serve`: wires config, receiver and scheduler together and runs until a signal.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;

use crate::config::{Config, EnvCheck, Overrides, Watcher};
use crate::metrics::Metrics;
use crate::receiver::{self, AppState};
use crate::store::inbox::Inbox;

/// Run the server until SIGINT or SIGTERM.
pub fn run(config_path: PathBuf, overrides: Overrides) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config_path, overrides))
}

async fn serve(config_path: PathBuf, overrides: Overrides) -> anyhow::Result<()> {
    let loaded = Config::load(&config_path, &overrides, EnvCheck::Require).map_err(|diags| {
        anyhow::anyhow!(
            "config {} is invalid; fix these and start again:\n{diags}",
            config_path.display()
        )
    })?;
    for line in loaded.warnings.lines() {
        tracing::warn!("{line}");
    }
    let config = loaded.config;
    tracing::info!(
        config = %config.identity,
        path = %config_path.display(),
        webhooks = config.webhooks.len(),
        data_dir = %config.server.data_dir.display(),
        "config loaded"
    );
    let listen = config.server.listen;
    let data_dir = config.server.data_dir.clone();
    let handle = Arc::new(ArcSwap::from_pointee(config));
    let _watcher = Watcher::spawn(handle.clone(), config_path, overrides)?;

    let metrics = Metrics::new();
    let (inbox, writer) =
        tokio::task::block_in_place(|| Inbox::open(&data_dir, metrics.clone()))
            .with_context(|| format!("cannot open the inbox in {}", data_dir.display()))?;

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!("listening on {}", listener.local_addr()?);

    let app = receiver::router(AppState {
        config: handle,
        inbox,
        metrics,
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")?;
    // The router (and with it the last Inbox handle) is gone: let the writer flush.
    tokio::task::block_in_place(|| writer.shutdown());
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}
