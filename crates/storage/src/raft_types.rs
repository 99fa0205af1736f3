//! The openraft type configuration of a shard: what a log entry carries and what applying it
//! returns.

use std::fmt;

use serde::{Deserialize, Serialize};
use unikv_types::{ClientSeq, Epoch, KvError, KvOp, KvReply, NodeId, ShardId, Slot, SlotRange};

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
            Command::Kv { slot, key, op, .. } => write!(f, "{} slot={slot} key={key:?}", op.name()),
            Command::Bootstrap { shard, ranges, .. } => {
                write!(f, "bootstrap shard={shard} ranges={ranges:?}")
            }
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
