//! Bringing a shard to life: the bootstrapping node initialises a fresh Raft group with itself
//! as the only voter, and whichever replica leads first claims the shard's initial slots (the
//! deterministic split of `unikv_types::slot::initial_range`) through the Raft log, exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use unikv_storage::Command;
use unikv_types::slot::initial_range;
use unikv_types::Epoch;

use crate::error::{Error, Result};
use crate::service::Node;

/// Initialises the group if this node is the bootstrapper and its storage is fresh.
pub async fn initialize_if_fresh(node: &Node) -> Result<()> {
    if !node.config.bootstrap() {
        return Ok(());
    }
    let initialized = node
        .raft
        .is_initialized()
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;
    if initialized {
        return Ok(());
    }
    let members = BTreeMap::from([(node.id(), node.me.clone())]);
    node.raft
        .initialize(members)
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;
    tracing::info!(shard = %node.shard(), node = %node.id(), "initialised a new raft group");
    Ok(())
}

/// Until the shard's descriptor is initialised, proposes the initial slot claim whenever this
/// node is the leader.
pub fn spawn_slot_claim(
    node: Arc<Node>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let shards = node.config.initial_shards();
        let ranges: Vec<_> = initial_range(node.shard().0, shards).into_iter().collect();
        while !node.store.descriptor().initialised {
            if node.is_leader() {
                let cmd = Command::Bootstrap {
                    shard: node.shard(),
                    ranges: ranges.clone(),
                    epoch: Epoch(1),
                };
                match node.raft.client_write(cmd).await {
                    Ok(_) => continue,
                    Err(e) => tracing::debug!(error = %e, "slot claim not committed yet"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = shutdown.changed() => return,
            }
        }
    })
}
