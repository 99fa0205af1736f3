//! Range collections: chunks and ordered scans, as they travel between router and nodes.
//!
//! A range collection keeps its keys in byte order, cut into **chunks**: contiguous key
//! ranges `[min, max)` (`max` absent: to the end), each owned by one shard at an epoch. The
//! owning shard's descriptor is the only record of a chunk; routers and nodes learn the map by
//! asking the shards ([`KvOp::Chunks`](crate::KvOp::Chunks)) and correct it when a shard
//! answers `wrong_shard`. A scan walks the chunks in key order, one shard at a time.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Epoch, Keyspace, ShardId};

/// A chunk's id: minted by the shard that creates it (`shard << 40 | counter`), so two shards
/// never mint the same one; kept by the chunk through moves.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ChunkId(pub u64);

impl ChunkId {
    /// The `n`th id minted by `shard`.
    pub fn minted(shard: ShardId, n: u64) -> ChunkId {
        ChunkId((shard.0 << 40) | (n & ((1 << 40) - 1)))
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One chunk as listed by `GET /collections/{name}/chunks` (seed 000's `ChunkMetadata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    pub id: ChunkId,
    pub keyspace: Keyspace,
    pub shard: ShardId,
    /// Smallest key of the chunk (inclusive).
    pub min: String,
    /// End of the chunk (exclusive); `None`: to the end of the keyspace.
    pub max: Option<String>,
    /// Keys and bytes (keys + values) held.
    pub count: u64,
    pub size: u64,
    /// Grows with every change of the chunk (split, move).
    pub version: u64,
    pub epoch: Epoch,
    pub updated_ms: u64,
    /// Set while the chunk is being handed to another shard (writes wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_to: Option<ShardId>,
}

impl ChunkInfo {
    /// Whether `key` is in `[min, max)`.
    pub fn contains(&self, key: &str) -> bool {
        key >= self.min.as_str() && self.max.as_deref().is_none_or(|m| key < m)
    }

    /// Whether the chunk holds keys just below `end` (`None`: the keyspace's last keys): the
    /// chunk a reverse scan ending there starts in.
    pub fn ends_at_or_after(&self, end: Option<&str>) -> bool {
        match (end, self.max.as_deref()) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some(e), max) => e > self.min.as_str() && max.is_none_or(|m| e <= m),
        }
    }
}

/// The bounds of one scan request: keys in `[start, end)`, ascending or (`reverse`)
/// descending, at most `limit` items and about `max_bytes` bytes (a page holds at least one
/// item whatever its size).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRange {
    pub start: String,
    pub end: Option<String>,
    pub reverse: bool,
    pub limit: u32,
    pub max_bytes: u64,
}

impl ScanRange {
    /// The position whose chunk the scan reads first: `start` forwards; backwards, the chunk
    /// holding the keys just below `end`.
    pub fn first_position(&self) -> Option<&str> {
        if self.reverse {
            self.end.as_deref()
        } else {
            Some(&self.start)
        }
    }
}

/// One shard's answer to a scan: the items in order, and where the scan goes on (`None`: the
/// range is exhausted). Forwards `resume` is the next `start`; backwards, the next `end`. A
/// shard stops at the end of what it holds, so `resume` may be a chunk boundary that another
/// shard serves.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ScanPage {
    pub items: Vec<(String, String)>,
    pub resume: Option<String>,
}

/// Most items one scan page returns.
pub const MAX_SCAN_LIMIT: u32 = 1000;
/// Bytes (keys + values) after which a scan page ends.
pub const SCAN_PAGE_BYTES: u64 = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(min: &str, max: Option<&str>) -> ChunkInfo {
        ChunkInfo {
            id: ChunkId(1),
            keyspace: Keyspace(16),
            shard: ShardId(1),
            min: min.into(),
            max: max.map(Into::into),
            count: 0,
            size: 0,
            version: 1,
            epoch: Epoch(1),
            updated_ms: 0,
            moving_to: None,
        }
    }

    #[test]
    fn bounds_are_half_open() {
        let c = chunk("b", Some("d"));
        assert!(!c.contains("a"));
        assert!(c.contains("b"));
        assert!(c.contains("czzz"));
        assert!(!c.contains("d"));
        let last = chunk("d", None);
        assert!(last.contains("d") && last.contains("\u{10ffff}"));
        // A reverse scan ending at "d" reads "b".."d" first; one ending at "e" reads the last.
        assert!(c.ends_at_or_after(Some("d")));
        assert!(!c.ends_at_or_after(Some("b")));
        assert!(!last.ends_at_or_after(Some("d")));
        assert!(last.ends_at_or_after(Some("e")));
        assert!(last.ends_at_or_after(None));
        assert!(!c.ends_at_or_after(None));
    }

    #[test]
    fn minted_ids_carry_the_shard() {
        assert_eq!(ChunkId::minted(ShardId(3), 7).0 >> 40, 3);
        assert_ne!(
            ChunkId::minted(ShardId(1), 1),
            ChunkId::minted(ShardId(2), 1)
        );
    }
}
