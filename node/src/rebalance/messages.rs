//! The messages shard leaders exchange to move a slot (`MOVE_IN`, `MOVE_STATUS`,
//! `MOVE_REFUSE`; `MOVE_STAGE`'s is `crate::copy::MoveStage`) and to run a registry change on the shard it concerns (`SHARD_ADMIN`).

use serde::{Deserialize, Serialize};
use unikv_storage::{DedupRecord, Staged};
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
    /// The copy staged at the target that these pairs complete (absent: they are the
    /// whole slot, as older senders send it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<Staged>,
    /// With `staged`: keys deleted since the copy read them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<(Keyspace, String)>,
}

/// The target asks the source whether copy `copy` staged there is still wanted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveStatusRequest {
    pub slot: Slot,
    pub epoch: Epoch,
    pub target: ShardId,
    pub copy: u64,
}

/// The source asks the target to refuse the hand-off of `slot` at `epoch` for good
/// (`MOVE_REFUSE`), before giving it up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefuseRequest {
    pub slot: Slot,
    pub from: ShardId,
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
