//! The unikv router: a stateless HTTP front end that sends each key to the shard owning it.
//!
//! There is no config server to ask. The router joins the cluster's gossip as a `router`
//! member (seeded by any node), and every change of the gossip view rebuilds its routing table
//! (`view` → `routing`). Requests are routed from that table alone and corrected by the nodes'
//! redirects (`forward`); writes carry a (client id, seq) from a router session (`sessions`)
//! when the caller sends none, so the router's own retries never apply a write twice.
//! Requests to the same node share QUIC exchanges (`batch`).
//!
//! [`run`] takes a bound HTTP listener and a shutdown future so tests can run routers
//! in-process on port 0.

pub mod batch;
pub mod chunk_map;
pub mod config;
pub mod error;
pub mod forward;
pub mod http;
mod ranges;
pub mod routing;
pub mod sessions;
pub mod status;
pub mod view;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use unikv_gossip::{ClusterView, Gossip, GossipConfig, MemberKind};
use unikv_net::{ClusterTls, Identity, Transport};

pub use config::Config;
pub use error::{Error, Result};

use crate::forward::Forwarder;
use crate::routing::Routing;
use crate::status::Addresses;

/// Runs a router until `shutdown` completes, then stops serving HTTP, leaves the gossip and
/// closes its connections to the nodes.
pub async fn run(
    config: Config,
    http: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    config.validate()?;
    let access = unikv_http::access::Access::for_listener(
        "router",
        config.admin_token_file.as_deref(),
        config.data_token_file.as_deref(),
        http.local_addr()?,
    )
    .map_err(Error::Config)?;
    let http_port = http.local_addr()?.port();
    let tls = ClusterTls::load(
        &config.tls_dir,
        &Identity::router(&format!("router-{http_port}"))?,
    )?;
    tls.check_exposure("router", &[http.local_addr()?])?;
    let transport = Transport::client(&tls)?;

    let gossip_port = config.gossip_port.unwrap_or(http_port);
    let listen = SocketAddr::new(config.gossip_listen()?.ip(), gossip_port);
    let advertise = advertise_addr(&config.advertise_host, gossip_port).await?;
    let name = format!("router-{http_port}-{:08x}", rand::random::<u32>());
    let mut gossip_config = GossipConfig::new(
        name.clone(),
        MemberKind::Router,
        listen,
        advertise,
        config.seeds(),
    );
    gossip_config.key = Some(unikv_gossip::GossipKey::new(
        unikv_net::load_or_create_gossip_key(&config.tls_dir)?,
    ));
    let gossip = Gossip::start(gossip_config)
        .await
        .map_err(|e| Error::Gossip(e.to_string()))?;
    let addresses = Addresses {
        http: format!("{}:{http_port}", config.advertise_host),
        gossip: gossip.advertise_addr().to_string(),
    };
    tracing::info!(
        name = %name, http = %http.local_addr()?, gossip = %addresses.gossip,
        seeds = ?config.seeds(), "router starting"
    );

    let routing = Arc::new(Routing::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let views = gossip.watch();
    let view_task = tokio::spawn(follow_views(
        views.clone(),
        routing.clone(),
        stop_rx.clone(),
    ));

    let app = Arc::new(http::App {
        forwarder: Forwarder::new(
            batch::Batching::new(transport.clone()),
            routing,
            config.limits(),
            config.request_timeout(),
        ),
        view: views,
        catalog: Default::default(),
        chunk_maps: Default::default(),
        addresses,
        limits: config.limits(),
    });
    let names = unikv_http::browser::HostNames::new(
        [config.host.as_str(), config.advertise_host.as_str()]
            .into_iter()
            .chain(config.allowed_hosts.iter().map(String::as_str)),
    );
    let api = http::router(app, access).layer(axum::middleware::from_fn_with_state(
        names,
        unikv_http::browser::browser_guard,
    ));
    let mut rx = stop_rx.clone();
    let http_limits = config.http_limits();
    let http_task = tokio::spawn(async move {
        let stopped = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        unikv_http::serve::serve(http, api, http_limits, stopped, Duration::from_secs(5)).await
    });

    shutdown.await;
    tracing::info!(name = %name, "shutting down");
    let _ = stop_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(10), http_task)
        .await
        .is_err()
    {
        tracing::warn!("http server still stopping after 10 s; leaving it");
    }
    let _ = view_task.await;
    gossip.shutdown().await;
    transport.close().await;
    Ok(())
}

/// Rebuilds the routing table from every new gossip view until told to stop.
async fn follow_views(
    mut views: watch::Receiver<Arc<ClusterView>>,
    routing: Arc<Routing>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_version = None;
    let mut last_unowned = None;
    loop {
        let view = views.borrow_and_update().clone();
        let table = view::table(&view);
        let unowned = table.unowned_slots();
        if last_version != Some(table.version) || last_unowned != Some(unowned) {
            tracing::info!(
                revision = table.revision,
                version = table.version,
                shards = view.shards.len(),
                unowned_slots = unowned,
                "cluster map changed"
            );
            last_version = Some(table.version);
            last_unowned = Some(unowned);
        }
        routing.install(table);
        tokio::select! {
            changed = views.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The gossip address to advertise: `host` resolved (IPv4 preferred), on `port`.
async fn advertise_addr(host: &str, port: u16) -> Result<SocketAddr> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    unikv_gossip::resolve_addr(&format!("{host}:{port}"))
        .await
        .map_err(|e| Error::Config(format!("--advertise_host {host:?} does not resolve: {e}")))
}
