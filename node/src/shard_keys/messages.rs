//! What shard leaders exchange to move a shard key's unit (`UNIT_IN`, `UNIT_STATUS`,
//! `UNIT_ACTIVATE`).

use serde::{Deserialize, Serialize};
use unikv_storage::DedupRecord;
use unikv_types::{Epoch, Keyspace, ShardId};

/// A shard key's data on the source, to the target's leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitIn {
    pub keyspace: Keyspace,
    pub from: ShardId,
    pub epoch: Epoch,
    pub kv: Vec<(String, String)>,
    pub dedup: Vec<(String, DedupRecord)>,
    pub dedup_horizon_ms: u64,
}

/// The target asks the source how a hand-off ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitStatusRequest {
    pub keyspace: Keyspace,
    pub epoch: Epoch,
    pub target: ShardId,
}

/// The source's nudge once `Done` committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitActivate {
    pub keyspace: Keyspace,
    pub epoch: Epoch,
}
