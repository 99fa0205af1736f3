//! `unikv-router`: parses flags, sets up logging, builds the runtime `--worker_threads` asks
//! for, binds the HTTP port and routes requests until SIGINT or SIGTERM.

use anyhow::Context;
use clap::Parser;
use unikv_router::Config;

/// Log filter when RUST_LOG is not set: our own info logs, only warnings from the QUIC and
/// gossip libraries (they are chatty at info).
const DEFAULT_FILTER: &str = "info,quinn=warn,chitchat=warn";

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let runtime =
        unikv_http::process::runtime(config.worker_threads).context("building the runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    unikv_http::process::init_tracing(config.log_file.as_deref(), DEFAULT_FILTER)
        .context("setting up logging")?;
    config.validate()?;
    let bind = config.http_bind();
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .with_context(|| format!("binding HTTP on {bind}"))?;
    if let Err(e) =
        unikv_router::run(config, listener, unikv_http::process::shutdown_signal()).await
    {
        tracing::error!(error = %e, "router failed");
        return Err(e.into());
    }
    Ok(())
}
