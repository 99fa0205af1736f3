//! Cluster-level vocabulary shared by nodes, gossip and routers.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Lifecycle state of a shard in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardState {
    /// Serving its slots and eligible to receive more.
    #[default]
    Active,
    /// Being emptied: its slots move away; it receives none.
    Draining,
    /// Owns no slots and receives none (drained).
    Inactive,
    /// No member of the shard answers gossip (derived by observers, never published).
    Unreachable,
    /// Unregistered for good (`DELETE /shards/{id}`, once drained): it owns nothing, takes
    /// nothing, and the cluster's views leave it out; its nodes can be stopped.
    Removed,
}

/// Raft role of a node as it reports itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    #[default]
    Learner,
    Shutdown,
}

macro_rules! str_enum {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            pub fn as_str(&self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok(Self::$v),)*
                    other => Err(format!("unknown {}: {other:?}", stringify!($t))),
                }
            }
        }
    };
}

str_enum!(ShardState { Active => "active", Draining => "draining", Inactive => "inactive", Unreachable => "unreachable", Removed => "removed" });
str_enum!(Role { Leader => "leader", Follower => "follower", Candidate => "candidate", Learner => "learner", Shutdown => "shutdown" });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in [
            ShardState::Active,
            ShardState::Draining,
            ShardState::Inactive,
            ShardState::Unreachable,
            ShardState::Removed,
        ] {
            assert_eq!(s.as_str().parse::<ShardState>().unwrap(), s);
        }
        for r in [
            Role::Leader,
            Role::Follower,
            Role::Candidate,
            Role::Learner,
            Role::Shutdown,
        ] {
            assert_eq!(r.to_string().parse::<Role>().unwrap(), r);
        }
        assert!("boss".parse::<Role>().is_err());
    }
}

/// One shard as the cluster's gossip shows it, for placing data: whether it takes data
/// (`active`), the bytes it stores, its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSummary {
    pub id: crate::ShardId,
    pub active: bool,
    pub bytes: u64,
    pub tags: std::collections::BTreeMap<String, String>,
}
