//! What `/raft/status` and `/config` report, built from Raft metrics and the applied shard
//! descriptor.

use openraft::type_config::async_runtime::WatchReceiver;
use openraft::ServerState;
use serde_json::{json, Value};
use unikv_types::{Epoch, SlotRange};

use crate::service::Node;

fn role(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

/// `/raft/status`: this replica's view of its Raft group.
pub fn raft_status(node: &Node) -> Value {
    let m = node.raft.metrics().borrow_watched().clone();
    let mem = m.membership_config.membership();
    let voters: Vec<u64> = mem.voter_ids().map(|id| id.0).collect();
    let learners: Vec<u64> = mem
        .nodes()
        .map(|(id, _)| id.0)
        .filter(|id| !voters.contains(id))
        .collect();
    let sync = node.store.db().sync_stats();
    use std::sync::atomic::Ordering::Relaxed;
    json!({
        "node_id": node.id().0,
        "shard_id": node.shard().0,
        "role": role(m.state),
        "term": m.current_term,
        "leader": node.leader(),
        "voters": voters,
        "learners": learners,
        "last_log_index": m.last_log_index,
        "committed_index": m.cluster_committed.as_ref().map(|l| l.index()),
        "applied_index": m.last_applied.as_ref().map(|l| l.index()),
        "snapshot_index": m.snapshot.as_ref().map(|l| l.index()),
        "purged_index": m.purged.as_ref().map(|l| l.index()),
        "wal_fsyncs": sync.fsyncs.load(Relaxed),
        "synced_appends": sync.synced_appends.load(Relaxed),
        "wal_fsync_micros": sync.fsync_micros.load(Relaxed),
        "largest_log_entry_bytes": sync.largest_entry_bytes.load(Relaxed),
        "initial_shards": node.config.initial_shards(),
        "claim_problem": node.claim_problem(),
        "corruption": node.store.corruption(),
        "disk": node.store.db().disk().report(),
        "uptime_ms": node.started.elapsed().as_millis() as u64,
        "wall_clock_ms": unikv_types::wall_clock_ms(),
        "scans_served": node.scans_served.load(Relaxed),
        "chunks_held": node.store.descriptor().chunks.owned.len(),
        "gossip_datagrams": node.gossip.seal_stats().map(|s| s.counts()),
    })
}

/// `/config`: the whole cluster as this node knows it: every shard from gossip, with this
/// node's own shard taken from its local Raft state and applied descriptor (fresher than any
/// gossip about it). `version` is the topology version: the sum of all shards' descriptor
/// versions, so it increases with every ownership change anywhere.
pub fn cluster_config(node: &Node) -> Value {
    let view = node.gossip.view();
    let mut shards: Vec<Value> = Vec::new();
    let mut version = 0u64;
    let own = node.shard();
    for (id, s) in &view.shards {
        if *id == own {
            continue;
        }
        version += s.descriptor_version;
        let members: Vec<Value> = s
            .members
            .iter()
            .map(|m| json!({"node_id": m.node_id.0, "http": m.http, "raft": m.raft, "role": m.role.as_str(), "live": m.live}))
            .collect();
        shards.push(shard_json(
            id.0,
            s.state.as_str(),
            json!(s.leader),
            s.term,
            members,
            &s.slots,
            (s.descriptor_version, s.chunks),
        ));
    }
    let (own_json, own_version) = own_shard(node, &view);
    version += own_version;
    shards.push(own_json);
    shards.sort_by_key(|s| s["id"].as_u64());
    // The catalog this node last read (seed 000's metadata version and collections), and the
    // newest version gossip reports (GET /collections reads it afresh).
    let catalog = node.catalog.current();
    let chunks: u64 = shards
        .iter()
        .filter_map(|s| s["chunk_count"].as_u64())
        .sum();
    json!({
        "version": version,
        "shards": shards,
        "catalog": {
            "version": catalog.version,
            "collections": catalog.list().len(),
            "chunks": chunks,
            "gossiped_version": view.catalog_version(),
        },
    })
}

fn own_shard(node: &Node, view: &unikv_gossip::ClusterView) -> (Value, u64) {
    let m = node.raft.metrics().borrow_watched().clone();
    let d = node.store.descriptor();
    let gossip_members = view
        .shard(node.shard())
        .map(|s| s.members.clone())
        .unwrap_or_default();
    let members: Vec<Value> = m
        .membership_config
        .membership()
        .nodes()
        .map(|(id, addr)| {
            let g = gossip_members.iter().find(|g| g.node_id == *id);
            let live = *id == node.id() || g.is_some_and(|g| g.live);
            let role = if *id == node.id() {
                crate::gossip_publisher::role_of(m.state).as_str()
            } else {
                g.map(|g| g.role.as_str()).unwrap_or("unknown")
            };
            json!({"node_id": id.0, "http": addr.http, "raft": addr.raft, "role": role, "live": live})
        })
        .collect();
    let slots: Vec<(SlotRange, Epoch)> = d
        .ranges
        .iter()
        .map(|r| (SlotRange(r.lo, r.hi), r.epoch))
        .collect();
    let v = shard_json(
        node.shard().0,
        d.state.as_str(),
        json!(node.leader()),
        m.current_term,
        members,
        &slots,
        (d.version, crate::gossip_publisher::chunks_served(&d)),
    );
    (v, d.version)
}

fn shard_json(
    id: u64,
    state: &str,
    leader: Value,
    term: u64,
    members: Vec<Value>,
    slots: &[(SlotRange, Epoch)],
    (descriptor_version, chunk_count): (u64, u64),
) -> Value {
    let count: usize = slots.iter().map(|(r, _)| r.len()).sum();
    let mut merged: Vec<[u16; 2]> = Vec::new();
    for (r, _) in slots {
        match merged.last_mut() {
            Some(last) if u32::from(last[1]) + 1 == u32::from(r.0) => last[1] = r.1,
            _ => merged.push([r.0, r.1]),
        }
    }
    let epochs: Vec<Value> = slots
        .iter()
        .map(|(r, e)| json!({"lo": r.0, "hi": r.1, "epoch": e.0}))
        .collect();
    json!({
        "id": id,
        "state": state,
        "leader": leader,
        "term": term,
        "members": members,
        "slots": merged,
        "slot_count": count,
        "epochs": epochs,
        "descriptor_version": descriptor_version,
        "chunk_count": chunk_count,
    })
}
