//! The chunks of range collections a shard holds, part of its descriptor (so only a Raft
//! commit in the shard changes them), and where the ones it gave away went.
//!
//! A chunk's keys are stored in one range of the `kv` family shared by every range collection
//! (`db::range_key`: a fixed prefix, the keyspace, the user key), so a split changes bounds and
//! nothing else. Its dedup table, horizon and statistics live under a **unit** of this shard
//! (a local number, as for shard keys), given to the chunk when it is created or arrives here
//! and never reused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use unikv_types::{ChunkId, Epoch, Keyspace, ShardId, Slot};

/// A chunk held by this shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedChunk {
    pub keyspace: Keyspace,
    /// Smallest key (inclusive).
    pub lo: String,
    /// End (exclusive); `None`: to the end of the keyspace.
    pub hi: Option<String>,
    pub epoch: Epoch,
    /// The local unit holding its dedup table and statistics.
    pub unit: Slot,
    /// Grows with every change (split, move).
    pub version: u64,
    pub updated_ms: u64,
    #[serde(default)]
    pub state: ChunkState,
}

/// Whether a held chunk serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ChunkState {
    /// Serves reads and writes.
    #[default]
    Serving,
    /// Being handed to `target`, where it will have `epoch`: frozen (neither read nor
    /// written here) until the hand-off ends — the target may serve it from its `In` on.
    Outgoing { target: ShardId, epoch: Epoch },
    /// A copy staged here by `source` ahead of its hand-off at `epoch` (pieces `parts` of
    /// copy `copy`): stored, not served, until the `In` that completes it.
    Staging {
        source: ShardId,
        epoch: Epoch,
        copy: u64,
        parts: u32,
    },
}

impl OwnedChunk {
    /// Whether this is a copy being staged here rather than a chunk this shard holds.
    pub fn is_staging(&self) -> bool {
        matches!(self.state, ChunkState::Staging { .. })
    }

    /// Whether `[lo, hi)` of keyspace `ks` overlaps this chunk's bounds.
    pub fn overlaps(&self, ks: Keyspace, lo: &str, hi: Option<&str>) -> bool {
        self.keyspace == ks
            && hi.is_none_or(|h| self.lo.as_str() < h)
            && self.hi.as_deref().is_none_or(|h| lo < h)
    }
}

/// Where a chunk this shard gave away went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkForward {
    pub target: ShardId,
    pub epoch: Epoch,
    pub keyspace: Keyspace,
    pub lo: String,
    pub hi: Option<String>,
}

/// Most forwarding notes kept (the oldest go first; a router that follows a dropped one asks
/// every shard instead).
pub const MAX_CHUNK_FORWARDS: usize = 4096;

/// This shard's chunks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChunkMap {
    #[serde(default)]
    pub owned: BTreeMap<ChunkId, OwnedChunk>,
    #[serde(default)]
    pub forwards: BTreeMap<ChunkId, ChunkForward>,
    /// How many ids this shard has minted.
    #[serde(default)]
    pub minted: u64,
    /// Hand-offs this shard (as their target) refuses for good: chunk → the newest epoch
    /// given up by its source (see `ChunkCommand::Refuse`). Kept until the chunk arrives.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<ChunkId, Epoch>,
}

/// Whether `key` is in `[lo, hi)`.
pub fn within(lo: &str, hi: Option<&str>, key: &str) -> bool {
    key >= lo && hi.is_none_or(|h| key < h)
}

impl ChunkMap {
    pub fn is_empty(&self) -> bool {
        self.owned.is_empty()
    }

    /// Nothing held, given away or minted: the descriptor leaves the field out.
    pub fn is_empty_map(&self) -> bool {
        self.owned.is_empty()
            && self.forwards.is_empty()
            && self.minted == 0
            && self.refused.is_empty()
    }

    /// Mints the next chunk id of `shard`.
    pub fn mint(&mut self, shard: ShardId) -> ChunkId {
        self.minted += 1;
        ChunkId::minted(shard, self.minted)
    }

    /// The held chunk of `ks` whose bounds contain `key` (copies staged here are not held).
    pub fn find(&self, ks: Keyspace, key: &str) -> Option<(ChunkId, &OwnedChunk)> {
        self.owned
            .iter()
            .find(|(_, c)| {
                c.keyspace == ks && !c.is_staging() && within(&c.lo, c.hi.as_deref(), key)
            })
            .map(|(id, c)| (*id, c))
    }

    /// The held chunk of `ks` holding the keys just below `end` (`None`: the last chunk).
    pub fn find_before(&self, ks: Keyspace, end: Option<&str>) -> Option<(ChunkId, &OwnedChunk)> {
        self.owned
            .iter()
            .find(|(_, c)| {
                c.keyspace == ks
                    && !c.is_staging()
                    && match (end, c.hi.as_deref()) {
                        (None, hi) => hi.is_none(),
                        (Some(e), hi) => e > c.lo.as_str() && hi.is_none_or(|h| e <= h),
                    }
            })
            .map(|(id, c)| (*id, c))
    }

    /// The newest forwarding note covering `key` of `ks`.
    pub fn forward_for(&self, ks: Keyspace, key: &str) -> Option<&ChunkForward> {
        self.forwards
            .values()
            .filter(|f| f.keyspace == ks && within(&f.lo, f.hi.as_deref(), key))
            .max_by_key(|f| f.epoch)
    }

    /// Records that chunk `id` went to another shard, dropping the oldest notes past the cap.
    pub fn remember_forward(&mut self, id: ChunkId, f: ChunkForward) {
        self.forwards.insert(id, f);
        while self.forwards.len() > MAX_CHUNK_FORWARDS {
            self.forwards.pop_first();
        }
    }

    /// Whether any chunk is moving in or out.
    pub fn moving(&self) -> bool {
        self.owned.values().any(|c| c.state != ChunkState::Serving)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(ks: u32, lo: &str, hi: Option<&str>) -> OwnedChunk {
        OwnedChunk {
            keyspace: Keyspace(ks),
            lo: lo.into(),
            hi: hi.map(Into::into),
            epoch: Epoch(1),
            unit: 0x8000,
            version: 1,
            updated_ms: 0,
            state: ChunkState::Serving,
        }
    }

    #[test]
    fn finds_chunks_by_key_and_by_end() {
        let mut m = ChunkMap::default();
        let a = m.mint(ShardId(1));
        let b = m.mint(ShardId(1));
        m.owned.insert(a, chunk(16, "", Some("m")));
        m.owned.insert(b, chunk(16, "m", None));
        assert_eq!(m.find(Keyspace(16), "a").unwrap().0, a);
        assert_eq!(m.find(Keyspace(16), "m").unwrap().0, b);
        assert!(m.find(Keyspace(17), "a").is_none());
        assert_eq!(m.find_before(Keyspace(16), Some("m")).unwrap().0, a);
        assert_eq!(m.find_before(Keyspace(16), Some("n")).unwrap().0, b);
        assert_eq!(m.find_before(Keyspace(16), None).unwrap().0, b);
        assert!(m.find_before(Keyspace(16), Some("")).is_none());
    }

    #[test]
    fn forwarding_notes_are_capped_and_the_newest_wins() {
        let mut m = ChunkMap::default();
        for i in 0..(MAX_CHUNK_FORWARDS as u64 + 10) {
            m.remember_forward(
                ChunkId(i),
                ChunkForward {
                    target: ShardId(i % 3 + 1),
                    epoch: Epoch(i),
                    keyspace: Keyspace(16),
                    lo: String::new(),
                    hi: None,
                },
            );
        }
        assert_eq!(m.forwards.len(), MAX_CHUNK_FORWARDS);
        let f = m.forward_for(Keyspace(16), "x").unwrap();
        assert_eq!(f.epoch, Epoch(MAX_CHUNK_FORWARDS as u64 + 9));
    }
}
