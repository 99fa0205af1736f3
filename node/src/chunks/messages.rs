//! What shard leaders exchange to move a chunk (`CHUNK_IN`, `CHUNK_STATUS`, `CHUNK_ACTIVATE`).

use serde::{Deserialize, Serialize};
use unikv_storage::DedupRecord;
use unikv_types::{ChunkId, Epoch, Keyspace, ShardId};

/// A chunk's data, from the source leader to the target leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkIn {
    pub id: ChunkId,
    pub keyspace: Keyspace,
    pub lo: String,
    pub hi: Option<String>,
    pub from: ShardId,
    pub epoch: Epoch,
    pub kv: Vec<(String, String)>,
    pub dedup: Vec<(String, DedupRecord)>,
    pub dedup_horizon_ms: u64,
    /// The chunk's version at the source: the target's is one more (it grows with a move).
    #[serde(default)]
    pub version: u64,
}

/// The target asks the source how a hand-off ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkStatusRequest {
    pub id: ChunkId,
    pub epoch: Epoch,
    pub target: ShardId,
}

/// The source's nudge once `Done` committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkActivate {
    pub id: ChunkId,
    pub epoch: Epoch,
}
