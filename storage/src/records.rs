//! The records the state machine stores beside the data, per slot: the last reply to each client
//! (`dedup` column family) and the slot's key and byte counts (`stats`). They are plain data,
//! shared by apply, moves, the apply cache and snapshots, so they live apart from all of them.

use serde::{Deserialize, Serialize};
use unikv_types::{KvOp, KvReply};
use xxhash_rust::xxh3::Xxh3;

/// The last reply to a client within one slot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DedupRecord {
    pub seq: u64,
    pub reply: KvReply,
    /// [`request_digest`] of the request that got `reply`: a retry must be the same request.
    /// Absent in records written before it existed (they are trusted as before).
    #[serde(default)]
    pub request: Option<u64>,
}

/// A 64-bit digest (XXH3, a fixed algorithm: the same on every node and version) of what a
/// write asks for — its key, operation and value — so a reused (client id, seq) with another
/// request is told apart from a retry of the same one.
pub fn request_digest(key: &str, op: &KvOp) -> u64 {
    let mut h = Xxh3::new();
    let mut part = |b: &[u8]| {
        h.update(&(b.len() as u64).to_be_bytes());
        h.update(b);
    };
    part(key.as_bytes());
    part(op.name().as_bytes());
    if let KvOp::Put { value } | KvOp::Append { value } = op {
        part(value.as_bytes());
    }
    h.digest()
}

/// Number of keys and bytes (keys + values) stored in one slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotStats {
    pub keys: u64,
    pub bytes: u64,
}

impl SlotStats {
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.keys.to_be_bytes());
        b[8..].copy_from_slice(&self.bytes.to_be_bytes());
        b
    }
    pub fn decode(b: &[u8]) -> Self {
        let word = |r: std::ops::Range<usize>| {
            b.get(r)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0)
        };
        Self {
            keys: word(0..8),
            bytes: word(8..16),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_tells_requests_apart() {
        let put = |v: &str| KvOp::Put { value: v.into() };
        let d = request_digest("k", &put("v"));
        assert_eq!(d, request_digest("k", &put("v")));
        assert_ne!(d, request_digest("k", &put("w")));
        assert_ne!(d, request_digest("j", &put("v")));
        assert_ne!(d, request_digest("k", &KvOp::Append { value: "v".into() }));
        assert_ne!(request_digest("k", &KvOp::Delete), d);
        // Lengths are part of it: moving a byte from key to value is another request.
        assert_ne!(
            request_digest("ab", &put("c")),
            request_digest("a", &put("bc"))
        );
    }
}
