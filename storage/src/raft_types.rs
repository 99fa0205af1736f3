//! The openraft type configuration of a shard: what a log entry carries and what applying it
//! returns.

use std::fmt;

use serde::{Deserialize, Serialize};
use unikv_types::{
    ClientSeq, Epoch, KvError, KvOp, KvReply, NodeId, ShardId, ShardState, Slot, SlotRange,
};

/// How to reach a member: its QUIC address (Raft and KV RPC) and its HTTP address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub raft: String,
    pub http: String,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{raft: {}, http: {}}}", self.raft, self.http)
    }
}

/// A replicated command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A KV write (`op` is never `Get`), applied at most once per `client` if present.
    Kv {
        slot: Slot,
        key: String,
        op: KvOp,
        client: Option<ClientSeq>,
    },
    /// A step of a slot move or a registry change (see `moves`).
    Move(MoveCommand),
    /// Claims the shard's initial slots. Applied only while the descriptor was never
    /// initialised, so a replayed or duplicated bootstrap can never change ownership.
    Bootstrap {
        shard: ShardId,
        ranges: Vec<SlotRange>,
        epoch: Epoch,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Move(m) => write!(f, "{m}"),
            Command::Kv { slot, key, op, .. } => write!(f, "{} slot={slot} key={key:?}", op.name()),
            Command::Bootstrap { shard, ranges, .. } => {
                write!(f, "bootstrap shard={shard} ranges={ranges:?}")
            }
        }
    }
}

/// The steps of moving a slot between shards, and registry changes. Every step is idempotent:
/// applying it again after it took effect changes nothing and answers success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveCommand {
    /// Source: hand `slot` to `to`, where it will have `epoch`. Freezes writes to it.
    Out {
        slot: Slot,
        to: ShardId,
        epoch: Epoch,
    },
    /// Target: install `slot` received from `from` (data and dedup table); not served yet.
    In {
        slot: Slot,
        from: ShardId,
        epoch: Epoch,
        kv: Vec<(String, String)>,
        dedup: Vec<(String, crate::apply::DedupRecord)>,
    },
    /// Source: the target installed the slot; delete the data, keep a forwarding note.
    Done { slot: Slot, epoch: Epoch },
    /// Source: give up a hand-off the target has not confirmed; the slot serves writes again.
    Abort { slot: Slot, epoch: Epoch },
    /// Target: the source confirmed the hand-off; serve the slot.
    Activate { slot: Slot, epoch: Epoch },
    /// Target: the source aborted; drop what was received.
    Drop { slot: Slot, epoch: Epoch },
    /// Registry: set this shard's state (active, draining, inactive).
    SetState { state: ShardState },
    /// Registry: set tags (an empty value removes the tag).
    SetTags { tags: Vec<(String, String)> },
}

impl fmt::Display for MoveCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MoveCommand::Out { slot, to, epoch } => {
                write!(f, "move-out slot={slot} to={to} epoch={epoch}")
            }
            MoveCommand::In {
                slot,
                from,
                epoch,
                kv,
                ..
            } => {
                write!(
                    f,
                    "move-in slot={slot} from={from} epoch={epoch} keys={}",
                    kv.len()
                )
            }
            MoveCommand::Done { slot, epoch } => write!(f, "move-done slot={slot} epoch={epoch}"),
            MoveCommand::Abort { slot, epoch } => write!(f, "move-abort slot={slot} epoch={epoch}"),
            MoveCommand::Activate { slot, epoch } => {
                write!(f, "activate slot={slot} epoch={epoch}")
            }
            MoveCommand::Drop { slot, epoch } => {
                write!(f, "drop-incoming slot={slot} epoch={epoch}")
            }
            MoveCommand::SetState { state } => write!(f, "set-state {state}"),
            MoveCommand::SetTags { tags } => write!(f, "set-tags {tags:?}"),
        }
    }
}

/// What applying a command returns to the proposer.
pub type CommandResult = Result<KvReply, KvError>;

openraft::declare_raft_types!(
    /// The Raft types of a unikv shard.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = NodeAddr,
);

pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, crate::SnapshotFile>;
