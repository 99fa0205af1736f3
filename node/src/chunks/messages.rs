//! What shard leaders exchange to move a chunk (`CHUNK_IN`, `CHUNK_STATUS`, `CHUNK_REFUSE`;
//! `CHUNK_STAGE`'s is `crate::copy::ChunkStage`).

use serde::{Deserialize, Serialize};
use unikv_storage::{DedupRecord, Staged};
use unikv_types::{ChunkId, Epoch, Keyspace, ShardId};

/// A chunk's data (whole, or the rest of a staged copy), from the source leader to the
/// target leader, which commits it as `In` and serves the chunk from then on.
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
    /// The copy staged at the target that `kv` and `deleted` complete (absent: `kv` is the
    /// whole chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<Staged>,
    /// With `staged`: keys deleted since the copy read them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<String>,
}

/// The target asks the source whether copy `copy` of a chunk staged there is still wanted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkStatusRequest {
    pub id: ChunkId,
    pub epoch: Epoch,
    pub target: ShardId,
    pub copy: u64,
}

/// The source asks the target to refuse the hand-off of chunk `id` at `epoch` for good
/// (`CHUNK_REFUSE`), before giving it up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkRefuse {
    pub id: ChunkId,
    pub from: ShardId,
    pub epoch: Epoch,
}
