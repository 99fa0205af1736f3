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

mod config;
mod gossip;
pub mod keys;
pub mod view;

pub use config::{GossipConfig, MemberKind};
pub use gossip::{resolve_addr, Gossip};
pub use keys::NodeState;
pub use view::{ClusterView, MemberView, ShardMember, ShardView};

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of this crate. Gossip itself never fails once started; these come from start-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The UDP socket could not be bound (address in use, permission, ...).
    #[error("cannot bind gossip socket: {0}")]
    Bind(String),
    /// The configuration is invalid.
    #[error("invalid gossip configuration: {0}")]
    Config(String),
}
