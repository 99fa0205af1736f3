//! `unikv-router`: parses flags, sets up logging, binds the HTTP port and routes requests until
//! SIGINT or SIGTERM.

use anyhow::Context;
use clap::Parser;
use unikv_router::Config;

/// Log filter when RUST_LOG is not set: our own info logs, only warnings from the QUIC and
/// gossip libraries (they are chatty at info).
const DEFAULT_FILTER: &str = "info,quinn=warn,chitchat=warn";

fn init_tracing(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| DEFAULT_FILTER.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match &config.log_file {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating log directory {}", dir.display()))?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening log file {}", path.display()))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_tracing(&config)?;
    config.validate()?;
    let bind = config.http_bind();
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .with_context(|| format!("binding HTTP on {bind}"))?;
    if let Err(e) = unikv_router::run(config, listener, shutdown_signal()).await {
        tracing::error!(error = %e, "router failed");
        return Err(e.into());
    }
    Ok(())
}
