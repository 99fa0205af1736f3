//! The shard leader's shard key loop, once a second: finish what a predecessor left (resume
//! hand-offs, ask about received units, land a catalog change a hand-off could not), and
//! move every shard key the catalog places on a draining (or drained) shard, one at a time,
//! each to the active shard holding the fewest bytes among those the key is not on yet — a
//! key nothing was written to here moves too (as an empty unit), so no placement is left
//! pointing at a shard that takes no data.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use unikv_types::catalog::Placement;
use unikv_types::{ShardId, ShardState};

use super::handoff::MOVING;
use crate::service::Node;

const TICK: Duration = Duration::from_secs(1);

pub fn spawn(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if node.is_leader() {
                round(&node).await;
            }
        }
    })
}

async fn round(node: &Arc<Node>) {
    let d = node.store.descriptor();
    let m = &d.unit_moves;
    if d.units.is_empty() && m.is_empty() && d.state == ShardState::Active {
        return;
    }
    for (ks, h) in &m.incoming {
        let (node, ks, h) = (node.clone(), *ks, *h);
        tokio::spawn(async move { node.check_unit_arrival(ks, h.source, h.epoch).await });
    }
    for (ks, h) in &m.outgoing {
        start_move(node, *ks, h.target);
    }
    // A hand-off whose catalog change did not land: the catalog still places the key here.
    let cached = node.catalog.current();
    for (ks, f) in &m.forwards {
        let placed_here = matches!(cached.shard_key_of(*ks), Some((_, _, Placement::Shards(s))) if s.contains(&node.shard()));
        if placed_here && !d.units.contains_key(ks) {
            let (node, ks, to) = (node.clone(), *ks, f.target);
            tokio::spawn(async move {
                if let Err(e) = node.record_shard_key_move(ks, to).await {
                    tracing::debug!(keyspace = %ks, error = %e, "catalog change of a moved shard key not committed yet");
                }
            });
        }
    }
    if d.state == ShardState::Active || node.tasks_of(MOVING) > 0 {
        return;
    }
    // Draining (or drained while a shard key is still placed here): every shard key the
    // catalog places here moves, whether or not anything was written to it here yet.
    // The cached catalog unless gossip shows a newer one.
    let cat = if cached.version >= node.gossip.view().catalog_version() {
        (*cached).clone()
    } else {
        match node.read_catalog().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "draining shard keys: no catalog");
                return;
            }
        }
    };
    let next = cat
        .shard_keys_on(node.shard())
        .into_iter()
        .filter_map(|(c, k, on)| Some((cat.target(&c, Some(&k)).ok()?.keyspace, on)))
        // Not one whose part left already (its catalog change is pending, above).
        .find(|(ks, _)| {
            !m.outgoing.contains_key(ks)
                && !m.incoming.contains_key(ks)
                && (d.units.contains_key(ks) || !m.forwards.contains_key(ks))
        });
    let Some((ks, _)) = next else {
        return;
    };
    // Where it is now, from the catalog itself (another shard may have just moved a part).
    let on = match node.read_catalog().await.map(|c| c.shard_key_of(ks)) {
        Ok(Some((_, _, Placement::Shards(s)))) => s,
        Ok(_) => return,
        Err(e) => {
            tracing::debug!(error = %e, "draining shard keys: no catalog");
            return;
        }
    };
    let view = node.gossip.view();
    let target = view
        .shards
        .values()
        .filter(|s| s.state == ShardState::Active && !on.contains(&s.id) && s.id != node.shard())
        .min_by_key(|s| (s.bytes, s.id))
        .map(|s| s.id);
    match target {
        Some(to) => {
            tracing::info!(shard = %node.shard(), keyspace = %ks, to = %to, "draining: moving a shard key");
            start_move(node, ks, to);
        }
        None => {
            tracing::warn!(shard = %node.shard(), keyspace = %ks, on = ?on, "draining: no active shard to take this shard key")
        }
    }
}

fn start_move(node: &Arc<Node>, ks: unikv_types::Keyspace, to: ShardId) {
    let node = node.clone();
    tokio::spawn(async move {
        if let Err(e) = node.move_shard_key(ks, to).await {
            tracing::debug!(keyspace = %ks, to = %to, error = %e, "shard key move");
        }
    });
}
