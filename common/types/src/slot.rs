//! Hash slots: every key maps to one of 16384 slots by CRC16 (XMODEM), as in Redis Cluster.
//!
//! If the key contains `{tag}` with a non-empty tag, only the tag is hashed, so related keys can be
//! placed in one slot on purpose.

use serde::{Deserialize, Serialize};

/// Number of hash slots in a cluster.
pub const SLOT_COUNT: u16 = 16384;

/// A hash slot, `0..SLOT_COUNT`.
pub type Slot = u16;

/// An inclusive range of slots, `[lo, hi]`, serialised as a two-element array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SlotRange(pub Slot, pub Slot);

impl SlotRange {
    pub fn contains(&self, slot: Slot) -> bool {
        self.0 <= slot && slot <= self.1
    }
    pub fn len(&self) -> usize {
        (self.1 as usize + 1).saturating_sub(self.0 as usize)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// CRC16-CCITT with polynomial 0x1021 and initial value 0 (the XMODEM variant Redis uses).
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The part of a key that is hashed: the first `{...}` section if it is non-empty, else the key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The slot a key belongs to.
pub fn key_slot(key: &[u8]) -> Slot {
    crc16(hash_tag(key)) % SLOT_COUNT
}

/// The deterministic bootstrap split of all slots among `shards` initial shards: shard `i`
/// (1-based) gets one contiguous range; ranges are as even as possible, never overlap, and cover
/// every slot. Returns `None` for a shard outside `1..=shards`.
pub fn initial_range(shard_index: u64, shards: u64) -> Option<SlotRange> {
    if shards == 0 || shard_index == 0 || shard_index > shards {
        return None;
    }
    let total = SLOT_COUNT as u64;
    let lo = (shard_index - 1) * total / shards;
    let hi = shard_index * total / shards - 1;
    Some(SlotRange(lo as Slot, hi as Slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_redis_reference() {
        // Reference value from the Redis Cluster specification.
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn known_key_slots() {
        // Values as computed by Redis' CLUSTER KEYSLOT.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn hash_tags_are_honoured() {
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // Empty tag: the whole key is hashed.
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        // Only the first tag counts.
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        // Unclosed brace: whole key.
        assert_eq!(hash_tag(b"foo{bar"), b"foo{bar");
    }

    #[test]
    fn every_slot_is_reachable_and_in_range() {
        let mut seen = vec![false; SLOT_COUNT as usize];
        for i in 0..200_000u32 {
            let s = key_slot(format!("key-{i}").as_bytes());
            assert!(s < SLOT_COUNT);
            seen[s as usize] = true;
        }
        assert!(seen.iter().filter(|s| **s).count() > 16000);
    }

    #[test]
    fn initial_split_covers_all_slots_once() {
        for n in 1..=7u64 {
            let mut next = 0u32;
            for i in 1..=n {
                let r = initial_range(i, n).unwrap();
                assert_eq!(r.0 as u32, next, "n={n} i={i}");
                next = r.1 as u32 + 1;
            }
            assert_eq!(next, SLOT_COUNT as u32);
        }
        assert_eq!(initial_range(1, 1), Some(SlotRange(0, 16383)));
        assert_eq!(initial_range(4, 3), None);
        assert_eq!(initial_range(0, 3), None);
    }
}
