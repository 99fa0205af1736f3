//! Cluster membership for unikv over chitchat (scuttlebutt gossip on UDP).
//!
//! Every node and router is a chitchat member. A node publishes its own state (shard, Raft role,
//! term, addresses, slot ownership) as a handful of chitchat keys; every member derives a typed
//! [`ClusterView`] from all known members' keys and exposes it as a [`tokio::sync::watch`] channel.
//!
//! Gossip is only a hint: correctness comes from Raft and redirects. The view converges, prefers
//! newer facts (higher term, higher descriptor version, higher epoch) and ignores garbage.
//!
//! - [`keys`]: the key names and the one place where values are encoded and parsed.
//! - [`view`]: the pure derivation of a [`ClusterView`] from member states.
//! - [`Gossip`]: the running member (chitchat server plus a task that keeps the view current).
//! - [`sealed`]: every datagram authenticated and encrypted with the cluster's gossip key.

mod config;
mod error;
mod gossip;
pub mod keys;
pub mod sealed;
pub mod view;

pub use config::{GossipConfig, MemberKind};
pub use error::{Error, Result};
pub use gossip::{resolve_addr, Gossip};
pub use keys::NodeState;
pub use sealed::{GossipKey, SealCounts, SealStats};
pub use view::{ClusterView, MemberView, ShardMember, ShardView};
