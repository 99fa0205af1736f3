//! `unikv-node`: parses flags, sets up logging, builds the runtime `--worker_threads` asks
//! for, binds the HTTP port and runs the node until SIGINT or SIGTERM. `unikv-node certs …`
//! issues certificates instead (`unikv_node::certs`).

use anyhow::Context;
use clap::Parser;
use unikv_node::Config;

/// Log filter when RUST_LOG is not set: our own info logs, only warnings from openraft and QUIC.
const DEFAULT_FILTER: &str = "info,openraft=warn,quinn=warn,chitchat=warn";

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("certs") {
        let command = unikv_node::certs::CertsCommand::parse_from(std::env::args().skip(1));
        println!("{}", command.run()?);
        return Ok(());
    }
    let config = Config::parse();
    // Fault-injection points named by FAILPOINTS (fault tests only; none by default).
    let _failpoints = fail::FailScenario::setup();
    let runtime =
        unikv_http::process::runtime(config.worker_threads).context("building the runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    unikv_http::process::init_tracing(config.log_file.as_deref(), DEFAULT_FILTER)
        .context("setting up logging")?;
    config.validate()?;
    let http_addr = format!("{}:{}", config.http_host, config.port);
    let listener = tokio::net::TcpListener::bind(&http_addr)
        .await
        .with_context(|| format!("binding HTTP on {http_addr}"))?;
    if let Err(e) = unikv_node::run(config, listener, unikv_http::process::shutdown_signal()).await
    {
        tracing::error!(error = %e, "node failed");
        return Err(e.into());
    }
    Ok(())
}
