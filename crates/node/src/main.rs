//! `unikv-node`: parses flags, sets up logging, binds the HTTP port and runs the node until
//! SIGINT or SIGTERM.

use anyhow::Context;
use clap::Parser;
use unikv_node::Config;

fn init_tracing(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,openraft=warn,quinn=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match &config.log_file {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
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

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
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
    let http_addr = format!("{}:{}", config.http_host, config.port);
    let listener = tokio::net::TcpListener::bind(&http_addr)
        .await
        .with_context(|| format!("binding HTTP on {http_addr}"))?;
    if let Err(e) = unikv_node::run(config, listener, shutdown_signal()).await {
        tracing::error!(error = %e, "node failed");
        return Err(e.into());
    }
    Ok(())
}
