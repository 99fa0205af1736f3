//! A unikv shard replica: one member of a shard's 3-node Raft group.
//!
//! `run` wires the parts together: RocksDB storage (`unikv-storage`), openraft over QUIC
//! (`raft_net`, `rpc`), the request logic (`service`), bootstrap of a fresh group
//! (`bootstrap`), online resharding (`rebalance`), gossip (`gossip_publisher`) and the HTTP API
//! (`http`). It takes a bound HTTP listener and a shutdown
//! future so tests can run nodes in-process on port 0.

pub mod append_stream;
pub mod bootstrap;
pub mod catalog;
pub mod certs;
pub mod chunks;
pub mod config;
pub mod copies;
pub mod copy;
pub mod error;
pub mod failpoints;
pub mod gossip_publisher;
pub mod handed;
pub mod http;
pub mod membership;
pub mod move_tally;
pub mod peer;
pub mod promote;
pub mod raft_errors;
pub mod raft_net;
pub mod rebalance;
pub mod rpc;
pub mod service;
pub mod shard_keys;
pub mod status;
pub mod throttle;
pub mod vote_hold;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use unikv_net::{ClusterTls, Identity, Transport};
use unikv_storage::NodeAddr;

pub use config::Config;
pub use error::{Error, Result};
pub use service::Node;

/// How long shutdown waits for HTTP requests in flight.
const HTTP_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs a node until `shutdown` completes, then stops Raft, the RPC server and HTTP cleanly.
pub async fn run(
    config: Config,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    config.validate()?;
    let access = unikv_http::access::Access::for_listener(
        "node",
        config.admin_token_file.as_deref(),
        config.data_token_file.as_deref(),
        http.local_addr()?,
    )
    .map_err(Error::Config)?;
    let started = std::time::Instant::now();
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir)?;
    let (mut log_store, sm) =
        unikv_storage::open_with(&data_dir, config.shard(), &config.db_options())?;
    let vote_hold = vote_hold::VoteHold::for_start(&config, &mut log_store, started).await?;
    let store = sm.store();
    let tls = ClusterTls::load(
        &config.tls_dir(),
        &Identity::node(config.shard_id, config.node_id),
    )?;
    let quic_addr = config::resolve(&config.raft_addr).await?;
    tls.check_exposure("node", &[quic_addr, http.local_addr()?])?;
    let transport = Transport::bind(quic_addr, &tls)?;
    let raft_config = Arc::new(config.raft_config()?);
    let network = raft_net::Network {
        transport: transport.clone(),
        vote_hold,
    };
    let raft = service::Raft::new(config.node(), raft_config, network, log_store, sm)
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;
    let gossip = gossip_publisher::start(&config).await?;
    let me = NodeAddr {
        raft: config.raft_addr.clone(),
        http: config.http_addr(),
    };
    let node = Arc::new(Node {
        limits: config.limits(),
        copies: Default::default(),
        chunk_moves: Default::default(),
        throttle: throttle::Throttle::new(config.move_rate_mb),
        config,
        raft,
        store,
        transport: transport.clone(),
        me,
        gossip,
        vote_hold,
        claim_problem: Default::default(),
        catalog: Default::default(),
        chunk_tasks: Default::default(),
        handed: Default::default(),
        scans_served: Default::default(),
        started,
    });
    tracing::info!(
        shard = %node.shard(), node = %node.id(), raft = %quic_addr,
        http = %http.local_addr()?, data = %data_dir.display(), "node starting"
    );

    let rebalancer = Arc::new(rebalance::Rebalancer::new(node.clone()));

    let (stop_tx, stop_rx) = watch::channel(false);
    let rpc_task = {
        let transport = transport.clone();
        let handler = Arc::new(rpc::RpcHandler {
            node: node.clone(),
            rebalancer: rebalancer.clone(),
        });
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            transport
                .serve(handler, async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
        })
    };
    let publisher = gossip_publisher::spawn_publisher(node.clone(), stop_rx.clone());
    bootstrap::initialize_if_fresh(&node).await?;
    let claim_task = bootstrap::spawn_slot_claim(node.clone(), stop_rx.clone());
    let rebalance_task = rebalancer.spawn(stop_rx.clone());
    let corruption_task = spawn_corruption_watch(node.clone(), stop_rx.clone());
    let janitor_task = catalog::spawn_janitor(node.clone(), stop_rx.clone());
    let chunk_task = chunks::spawn(node.clone(), stop_rx.clone());
    let shard_key_task = shard_keys::spawn(node.clone(), stop_rx.clone());

    let names = unikv_http::browser::HostNames::new(
        [node.config.http_host.as_str(), node.config.advertise_host()]
            .into_iter()
            .chain(node.config.allowed_hosts.iter().map(String::as_str)),
    );
    let app = http::router(node.clone(), access.clone())
        .merge(rebalancer.routes(access))
        .layer(axum::middleware::from_fn_with_state(
            names,
            unikv_http::browser::browser_guard,
        ));
    let mut rx = stop_rx.clone();
    let http_limits = node.config.http_limits();
    let http_task = tokio::spawn(async move {
        let stopped = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        unikv_http::serve::serve(http, app, http_limits, stopped, HTTP_DRAIN).await
    });

    shutdown.await;
    tracing::info!(shard = %node.shard(), node = %node.id(), "shutting down");
    let _ = stop_tx.send(true);
    let _ = claim_task.await;
    let _ = corruption_task.await;
    let _ = janitor_task.await;
    let _ = chunk_task.await;
    let _ = shard_key_task.await;
    let _ = rebalance_task.await;
    let _ = publisher.await;
    let _ = tokio::time::timeout(HTTP_DRAIN * 2, http_task).await;
    if let Err(e) = node.raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
    let _ = rpc_task.await;
    node.gossip.shutdown().await;
    transport.close().await;
    Ok(())
}

/// Once the store reports damaged data, this replica leaves its Raft group's work: Raft is
/// shut down (it neither leads, votes nor acknowledges, so the shard carries on with the
/// others), while HTTP stays up to say why (`corruption` in `/raft/status`, 503 to KV calls).
fn spawn_corruption_watch(
    node: Arc<Node>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Some(c) = node.store.corruption() {
                tracing::error!(shard = %node.shard(), node = %node.id(), corruption = %c, "shutting Raft down on this replica: its data is damaged");
                if let Err(e) = node.raft.shutdown().await {
                    tracing::warn!(error = %e, "raft shutdown");
                }
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    })
}
