//! This node's part in gossip: it joins as a member (UDP on the HTTP port number by default,
//! seeds = `--peer_shards`, which name other nodes' HTTP ports and therefore their gossip
//! ports), and publishes its own state whenever its Raft role, leader, term or applied slot
//! ownership changes. It never republishes what it learned from others, so there are no
//! re-broadcast loops.

use std::sync::Arc;
use std::time::Duration;

use openraft::type_config::async_runtime::WatchReceiver;
use openraft::ServerState;
use tokio::sync::watch;
use unikv_gossip::{Gossip, GossipConfig, MemberKind, NodeState};
use unikv_types::{Epoch, Role, SlotRange};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::service::Node;

/// Starts gossip for a node.
pub async fn start(config: &Config) -> Result<Gossip> {
    let listen =
        crate::config::resolve(&format!("{}:{}", config.http_host, config.gossip_port())).await?;
    let advertise = crate::config::resolve(&format!(
        "{}:{}",
        config.advertise_host(),
        config.gossip_port()
    ))
    .await?;
    let mut gc = GossipConfig::new(
        format!("node-{}-{}", config.shard_id, config.node_id),
        MemberKind::Node,
        listen,
        advertise,
        config.peer_shards(),
    );
    gc.interval = Duration::from_millis(config.gossip_interval_ms);
    gc.key = Some(unikv_gossip::GossipKey::new(
        unikv_net::load_or_create_gossip_key(&config.tls_dir())?,
    ));
    gc.validate().map_err(|e| Error::Config(e.to_string()))?;
    Gossip::start(gc)
        .await
        .map_err(|e| Error::Gossip(e.to_string()))
}

pub fn role_of(s: ServerState) -> Role {
    match s {
        ServerState::Leader => Role::Leader,
        ServerState::Follower => Role::Follower,
        ServerState::Candidate => Role::Candidate,
        ServerState::Learner => Role::Learner,
        ServerState::Shutdown => Role::Shutdown,
    }
}

/// Least time between two publications of this node's state.
const MIN_REPUBLISH: Duration = Duration::from_millis(30);

/// Role, leader and term from Raft's metrics.
fn raft_summary(node: &Node) -> (Role, Option<unikv_types::NodeId>, u64) {
    let m = node.raft.metrics();
    let m = m.borrow_watched();
    (role_of(m.state), m.current_leader, m.current_term)
}

/// What this node would publish now; `totals` is the shard's (keys, bytes), `catalog_version`
/// the catalog version it applied (0 unless its shard holds the catalog).
pub fn current_state(node: &Node, totals: (u64, u64), catalog_version: u64) -> NodeState {
    let (role, leader, term) = raft_summary(node);
    let d = node.store.descriptor();
    NodeState {
        shard: node.shard(),
        node: node.id(),
        role,
        leader,
        term,
        http: node.me.http.clone(),
        raft: node.me.raft.clone(),
        state: d.state,
        descriptor_version: d.version,
        initialised: d.initialised,
        initial_shards: Some(node.config.initial_shards()),
        slots: d
            .ranges
            .iter()
            .map(|r| (SlotRange(r.lo, r.hi), Epoch(r.epoch.0)))
            .collect(),
        keys: totals.0,
        bytes: totals.1,
        chunks: chunks_served(&d),
        tags: d.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        catalog_version,
    }
}

/// The range chunks a shard holds (arriving ones are not its yet).
pub fn chunks_served(d: &unikv_storage::ShardDescriptor) -> u64 {
    d.chunks.owned.values().filter(|c| !c.is_staging()).count() as u64
}

const STATS_EVERY: Duration = Duration::from_secs(1);

/// The shard's stored keys and bytes, from the per-slot statistics: a slot counts where it
/// is served — not while its copy is staged here, nor while it is frozen leaving (its
/// target may serve it already).
pub fn shard_totals(node: &Node) -> (u64, u64) {
    let d = node.store.descriptor();
    match node.store.slot_stats() {
        Ok(stats) => stats
            .iter()
            .filter(|(slot, _)| !d.staging.contains_key(slot) && !d.outgoing.contains_key(slot))
            .fold((0, 0), |(k, b), (_, s)| (k + s.keys, b + s.bytes)),
        Err(e) => {
            tracing::warn!(error = %e, "reading slot statistics");
            (0, 0)
        }
    }
}

/// Publishes this node's state at start and after every change of role, leader, term or
/// applied ownership, until shutdown.
pub fn spawn_publisher(
    node: Arc<Node>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut metrics = node.raft.metrics();
        let mut last: Option<NodeState> = None;
        let mut totals = (0, 0);
        let mut catalog_version = 0;
        let mut totals_at = tokio::time::Instant::now() - STATS_EVERY;
        let mut tick = tokio::time::interval(STATS_EVERY);
        // What the last look saw: Raft's metrics change with every commit, so the state is
        // built (a copy of the descriptor) only when one of these changed.
        let mut seen = None;
        loop {
            // Key and byte totals change with every write: refresh them (and the catalog
            // version) at most once a period.
            if totals_at.elapsed() >= STATS_EVERY {
                totals = shard_totals(&node);
                catalog_version = node.applied_catalog_version().unwrap_or(0);
                totals_at = tokio::time::Instant::now();
            }
            let now_seen = Some((
                raft_summary(&node),
                node.store.descriptor_version(),
                totals,
                catalog_version,
            ));
            if seen != now_seen {
                seen = now_seen;
                let state = current_state(&node, totals, catalog_version);
                if last.as_ref() != Some(&state) {
                    node.gossip.publish(&state).await;
                    last = Some(state);
                    // A burst of changes (a rebalance commits several steps per slot) goes
                    // out as one publication.
                    tokio::select! {
                        _ = tokio::time::sleep(MIN_REPUBLISH) => {}
                        _ = shutdown.changed() => return,
                    }
                    continue;
                }
            }
            tokio::select! {
                r = metrics.changed() => if r.is_err() { return },
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
        }
    })
}
