//! The records the state machine stores beside the data, per slot: the last reply to each client
//! (`dedup` column family) and the slot's key and byte counts (`stats`). They are plain data,
//! shared by apply, moves, the apply cache and snapshots, so they live apart from all of them.

use serde::{Deserialize, Serialize};
use unikv_types::KvReply;

/// The last reply to a client within one slot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DedupRecord {
    pub seq: u64,
    pub reply: KvReply,
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
