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
use unikv_types::{Epoch, Role, ShardState, SlotRange};

use crate::error::{Error, Result};
use crate::service::Node;
use crate::Config;

/// Starts gossip for a node.
pub async fn start(config: &Config) -> Result<Gossip> {
    let listen = crate::resolve(&format!("{}:{}", config.http_host, config.gossip_port())).await?;
    let advertise = crate::resolve(&format!(
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

/// What this node would publish now.
pub fn current_state(node: &Node) -> NodeState {
    let (role, leader, term) = {
        let m = node.raft.metrics();
        let m = m.borrow_watched();
        (role_of(m.state), m.current_leader, m.current_term)
    };
    let d = node.store.descriptor();
    NodeState {
        shard: node.shard(),
        node: node.id(),
        role,
        leader,
        term,
        http: node.me.http.clone(),
        raft: node.me.raft.clone(),
        state: ShardState::Active,
        descriptor_version: d.version,
        initialised: d.initialised,
        slots: d
            .ranges
            .iter()
            .map(|r| (SlotRange(r.lo, r.hi), Epoch(r.epoch.0)))
            .collect(),
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
        loop {
            let state = current_state(&node);
            if last.as_ref() != Some(&state) {
                node.gossip.publish(&state).await;
                last = Some(state);
            }
            tokio::select! {
                r = metrics.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
    })
}
