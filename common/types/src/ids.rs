//! Typed identifiers, so a shard id is never passed where a node id belongs.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident, $inner:ty) => {
        $(#[$m])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                Self(v)
            }
        }
    };
}

id_type!(
    /// A shard: one Raft group, owner of a set of hash slots.
    ShardId,
    u64
);
id_type!(
    /// A replica within a shard's Raft group (unique within the shard).
    NodeId,
    u64
);
id_type!(
    /// Version of a slot's ownership. Only the current owner may hand a slot on, bumping it.
    Epoch,
    u64
);
