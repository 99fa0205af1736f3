//! What `/raft/status` and `/config` report, built from Raft metrics and the applied shard
//! descriptor.

use openraft::type_config::async_runtime::WatchReceiver;
use openraft::ServerState;
use serde_json::{json, Value};

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
    })
}

/// `/config`: the cluster as this node knows it (for now: its own shard).
pub fn cluster_config(node: &Node) -> Value {
    let m = node.raft.metrics().borrow_watched().clone();
    let d = node.store.descriptor();
    let members: Vec<Value> = m
        .membership_config
        .membership()
        .nodes()
        .map(|(id, addr)| json!({"node_id": id.0, "http": addr.http, "raft": addr.raft}))
        .collect();
    let slots: Vec<[u16; 2]> = d.slot_ranges().iter().map(|r| [r.0, r.1]).collect();
    let epochs: Vec<Value> = d
        .ranges
        .iter()
        .map(|r| json!({"lo": r.lo, "hi": r.hi, "epoch": r.epoch.0}))
        .collect();
    json!({
        "version": d.version,
        "shards": [{
            "id": node.shard().0,
            "state": "active",
            "leader": node.leader(),
            "members": members,
            "slots": slots,
            "slot_count": d.slot_count(),
            "epochs": epochs,
        }],
    })
}
