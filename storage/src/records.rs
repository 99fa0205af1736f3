//! The records the state machine stores beside the data, per slot: the last reply to each client
//! (`dedup` column family) and the slot's key and byte counts (`stats`). They are plain data,
//! shared by apply, moves, the apply cache and snapshots, so they live apart from all of them.
//! How dedup records expire is in `dedup`.

use serde::{Deserialize, Serialize};
use unikv_types::{Keyspace, KvOp, KvReply};
use xxhash_rust::xxh3::Xxh3;

/// The last reply to a client within one slot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DedupRecord {
    pub seq: u64,
    /// The reply, shrunk by [`stored_reply`] (a long previous value is not kept).
    pub reply: KvReply,
    /// [`request_digest`] of the request that got `reply`: a retry must be the same request.
    /// Absent in records written before it existed (they are trusted as before).
    #[serde(default)]
    pub request: Option<u64>,
    /// The shard's clock (the leaders' clocks as written in the log) when the record was
    /// written: it expires a dedup window later. 0 in records written before expiry existed.
    #[serde(default)]
    pub at_ms: u64,
    /// The newest `ts` (first-send stamp) of the client's writes applied in this slot: when
    /// the record expires, the slot's horizon rises to it.
    #[serde(default)]
    pub ts_max: u64,
}

impl DedupRecord {
    /// Approximate bytes the record takes in memory.
    pub fn approx_bytes(&self) -> usize {
        64 + match &self.reply {
            KvReply::Appended { previous: Some(p) } => p.len(),
            KvReply::Value(Some(v)) => v.len(),
            _ => 0,
        }
    }
}

/// Longest previous value a dedup record keeps for an `append`'s reply; a retry of an append
/// that found a longer one is answered [`KvReply::RetriedAppend`] with its length only.
pub const KEPT_REPLY_BYTES: usize = 256;

/// The reply as a dedup record keeps it: small, whatever the values are.
pub fn stored_reply(reply: &KvReply) -> KvReply {
    match reply {
        KvReply::Appended { previous: Some(p) } if p.len() > KEPT_REPLY_BYTES => {
            KvReply::RetriedAppend {
                previous_bytes: p.len() as u64,
            }
        }
        other => other.clone(),
    }
}

/// A 64-bit digest (XXH3, a fixed algorithm: the same on every node and version) of what a
/// write asks for — its key, operation and value — so a reused (client id, seq) with another
/// request is told apart from a retry of the same one.
/// The keyspace is part of it except for `default` (whose digests stay what they were, so
/// records stored by earlier versions still recognise their retries).
pub fn request_digest(keyspace: Keyspace, key: &str, op: &KvOp) -> u64 {
    let mut h = Xxh3::new();
    let mut part = |b: &[u8]| {
        h.update(&(b.len() as u64).to_be_bytes());
        h.update(b);
    };
    if !keyspace.is_default() {
        part(&keyspace.0.to_be_bytes());
    }
    part(key.as_bytes());
    part(op.name().as_bytes());
    match op {
        KvOp::Put { value } | KvOp::Append { value } => part(value.as_bytes()),
        KvOp::Catalog(c) => part(&serde_json::to_vec(c).unwrap_or_default()),
        KvOp::MoveChunk { id, to } => {
            part(&id.0.to_be_bytes());
            part(&to.0.to_be_bytes());
        }
        KvOp::Get | KvOp::Delete | KvOp::Scan(_) | KvOp::Chunks | KvOp::Split | KvOp::Usage => {}
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
        let dg = |k: &str, op: &KvOp| request_digest(Keyspace::DEFAULT, k, op);
        let d = dg("k", &put("v"));
        assert_eq!(d, dg("k", &put("v")));
        assert_ne!(d, dg("k", &put("w")));
        assert_ne!(d, dg("j", &put("v")));
        assert_ne!(d, dg("k", &KvOp::Append { value: "v".into() }));
        assert_ne!(dg("k", &KvOp::Delete), d);
        // Lengths are part of it: moving a byte from key to value is another request.
        assert_ne!(dg("ab", &put("c")), dg("a", &put("bc")));
        // So is the collection: the same key in another collection is another request.
        assert_ne!(d, request_digest(Keyspace(16), "k", &put("v")));
        assert_ne!(
            request_digest(Keyspace(16), "k", &put("v")),
            request_digest(Keyspace(17), "k", &put("v"))
        );
    }
}
