//! The openraft type configuration of a shard (entries carry a [`Command`], applying one
//! returns a [`CommandResult`], members are [`NodeAddr`]s) and the aliases of openraft's
//! generic types for it.

use std::fmt;

use serde::{Deserialize, Serialize};
use unikv_types::NodeId;

use crate::command::{Command, CommandResult};

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
