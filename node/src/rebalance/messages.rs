//! The messages shard leaders exchange to move a slot (`MOVE_IN`, `MOVE_STATUS`,
//! `MOVE_ACTIVATE`) and to run a registry change on the shard it concerns (`SHARD_ADMIN`).

use serde::{Deserialize, Serialize};
use unikv_storage::DedupRecord;
use unikv_types::{Epoch, Keyspace, ShardId, ShardState, Slot};

/// A slot's data sent from the source leader to the target leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveIn {
    pub slot: Slot,
    pub from: ShardId,
    pub epoch: Epoch,
    pub kv: Vec<(String, String)>,
    pub dedup: Vec<(String, DedupRecord)>,
    /// The slot's dedup horizon (absent from older senders).
    #[serde(default)]
    pub dedup_horizon_ms: u64,
    /// The slot's pairs of collections other than `default` (absent from older senders,
    /// which have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collections_kv: Vec<(Keyspace, String, String)>,
}

/// The target asks the source how a hand-off ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveStatusRequest {
    pub slot: Slot,
    pub epoch: Epoch,
    pub target: ShardId,
}

/// Activation nudge from the source once `Done` committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActivateRequest {
    pub slot: Slot,
    pub epoch: Epoch,
}

/// Registry changes and explicit moves, executed by the leader of the shard concerned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardAdmin {
    SetState(ShardState),
    SetTags(Vec<(String, String)>),
    MoveSlot {
        slot: Slot,
        to: ShardId,
    },
    /// Drain, then be removed for good (`/removeshard?forget=true`).
    Retire,
}
