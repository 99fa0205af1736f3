//! The chitchat keys a member publishes and the ONE place where their values are encoded and
//! parsed. Everything read from the network goes through the `decode_*`/`parse_*` functions here,
//! which reject anything malformed with a [`KeyError`] and never panic.
//!
//! Every member publishes [`KIND`]. A node additionally publishes one key per [`NodeState`]
//! field. Slot ownership is one value, `lo-hi@epoch` items separated by commas (a single slot is
//! `slot@epoch`), e.g. `0-5460@1,5461-5470@3`. If that value is longer than [`SLOTS_CHUNK_BYTES`]
//! (chitchat silently drops a key/value that does not fit a datagram) it is split into
//! `slots.0`, `slots.1`, ... and `slots.n` = `<count>:<hash>`, each chunk being `<hash>:<piece>`;
//! the hash of the whole value ties the pieces together, so a reader that has received only some
//! of a new set of pieces rejects the mix instead of misreading it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use unikv_types::{Epoch, NodeId, Role, ShardId, ShardState, SlotRange, SLOT_COUNT};

use crate::MemberKind;

/// Kind of member: `node` or `router`. Published by every member at start.
pub const KIND: &str = "kind";
/// Set to `true` by a member that leaves gracefully; observers then report it dead at once.
pub const LEAVING: &str = "leaving";
pub const SHARD: &str = "shard";
pub const NODE: &str = "node";
pub const ROLE: &str = "role";
/// The Raft leader the node knows of; empty for none.
pub const LEADER: &str = "leader";
pub const TERM: &str = "term";
pub const HTTP: &str = "http";
pub const RAFT: &str = "raft";
pub const STATE: &str = "state";
pub const DESCRIPTOR_VERSION: &str = "descriptor_version";
pub const INITIALISED: &str = "initialised";
/// The `--initial_shards` the node was started with (the initial split it would claim by).
/// Absent from nodes of earlier versions.
pub const INITIAL_SHARDS: &str = "initial_shards";
/// The slot ownership in one value (when it is short enough).
pub const SLOTS: &str = "slots";
/// Keys stored by the shard (decimal). Absent means 0.
pub const KEYS: &str = "keys";
/// Bytes stored by the shard (decimal). Absent means 0.
pub const BYTES: &str = "bytes";
/// Range chunks held by the shard (decimal). Absent means 0 (nodes of earlier versions).
pub const CHUNKS: &str = "chunks";
/// Registry tags, `name=value` pairs joined by `,` (names and values never contain `,` or `=`).
pub const TAGS: &str = "tags";
/// The catalog version the node has applied, published by members of the shard that holds
/// the catalog (decimal; absent: 0).
pub const CATALOG_VERSION: &str = "catalog_version";
/// `<count>:<hash>` when the slot ownership is split into chunks `slots.0`, `slots.1`, ...
pub const SLOTS_COUNT: &str = "slots.n";
/// Prefix of the chunk keys.
pub const SLOTS_CHUNK_PREFIX: &str = "slots.";
/// Longest slot value published as a single key; longer values are chunked.
pub const SLOTS_CHUNK_BYTES: usize = 8 * 1024;
/// Upper bound on the chunk count accepted from the network (16384 ranges with huge epochs fit).
const MAX_CHUNKS: usize = 128;

/// What a node publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub shard: ShardId,
    pub node: NodeId,
    pub role: Role,
    /// The Raft leader this node knows of.
    pub leader: Option<NodeId>,
    /// Its current Raft term.
    pub term: u64,
    /// HTTP address, "host:port".
    pub http: String,
    /// QUIC (Raft) address, "host:port".
    pub raft: String,
    /// Registry state of its shard as this node knows it (Active/Draining/Inactive).
    pub state: ShardState,
    /// Version of the shard's slot ownership record this node has applied.
    pub descriptor_version: u64,
    /// Whether the shard has claimed its initial slots.
    pub initialised: bool,
    /// The `--initial_shards` it was started with, if it says.
    pub initial_shards: Option<u64>,
    /// Owned slot ranges with epochs, as applied by this node.
    pub slots: Vec<(SlotRange, Epoch)>,
    /// Keys stored by its shard, as of its last report (refreshed about once a second).
    pub keys: u64,
    /// Bytes (keys + values) stored by its shard, as of its last report.
    pub bytes: u64,
    /// Range chunks its shard holds (arriving ones not counted).
    pub chunks: u64,
    /// Registry tags of its shard (e.g. datacenter=us-east), sorted by name.
    pub tags: Vec<(String, String)>,
    /// The catalog version it has applied, if its shard holds the catalog (else 0).
    pub catalog_version: u64,
}

/// A value read from gossip that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("missing key {0:?}")]
    Missing(String),
    #[error("bad value for key {key:?}: {reason}")]
    Bad { key: String, reason: String },
}

fn bad(key: &str, reason: impl Into<String>) -> KeyError {
    KeyError::Bad {
        key: key.to_string(),
        reason: reason.into(),
    }
}

impl MemberKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            MemberKind::Node => "node",
            MemberKind::Router => "router",
        }
    }
}

impl fmt::Display for MemberKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MemberKind {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s {
            "node" => Ok(MemberKind::Node),
            "router" => Ok(MemberKind::Router),
            other => Err(bad(KIND, format!("unknown member kind {other:?}"))),
        }
    }
}

/// Parses the [`KIND`] value.
pub fn parse_kind(value: &str) -> Result<MemberKind, KeyError> {
    value.parse()
}

/// Value of [`LEAVING`] for a member that is leaving.
pub const LEAVING_VALUE: &str = "true";

/// Whether a member's keys say it has left.
pub fn is_leaving(keys: &BTreeMap<String, String>) -> bool {
    keys.get(LEAVING).map(String::as_str) == Some(LEAVING_VALUE)
}

/// Encodes slot ownership compactly: `lo-hi@epoch` (or `slot@epoch`) items joined by commas.
pub fn encode_slots(slots: &[(SlotRange, Epoch)]) -> String {
    let mut out = String::with_capacity(slots.len() * 12);
    for (i, (range, epoch)) in slots.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if range.0 == range.1 {
            out.push_str(&format!("{}@{}", range.0, epoch.0));
        } else {
            out.push_str(&format!("{}-{}@{}", range.0, range.1, epoch.0));
        }
    }
    out
}

fn parse_slot(key: &str, s: &str) -> Result<u16, KeyError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(key, format!("bad slot {s:?}")));
    }
    let v: u16 = s.parse().map_err(|_| bad(key, format!("bad slot {s:?}")))?;
    if v >= SLOT_COUNT {
        return Err(bad(key, format!("slot {v} out of range")));
    }
    Ok(v)
}

fn parse_u64(key: &str, s: &str) -> Result<u64, KeyError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(key, format!("not an unsigned integer: {s:?}")));
    }
    s.parse()
        .map_err(|_| bad(key, format!("not an unsigned integer: {s:?}")))
}

/// Parses the value produced by [`encode_slots`]. The empty string is "no slots".
pub fn decode_slots(value: &str) -> Result<Vec<(SlotRange, Epoch)>, KeyError> {
    let mut out = Vec::new();
    if value.is_empty() {
        return Ok(out);
    }
    for item in value.split(',') {
        if out.len() >= SLOT_COUNT as usize {
            return Err(bad(SLOTS, "more ranges than slots"));
        }
        let (range, epoch) = item
            .split_once('@')
            .ok_or_else(|| bad(SLOTS, format!("item {item:?} has no '@epoch'")))?;
        let (lo, hi) = match range.split_once('-') {
            Some((lo, hi)) => (parse_slot(SLOTS, lo)?, parse_slot(SLOTS, hi)?),
            None => {
                let s = parse_slot(SLOTS, range)?;
                (s, s)
            }
        };
        if lo > hi {
            return Err(bad(SLOTS, format!("empty range {range:?}")));
        }
        out.push((SlotRange(lo, hi), Epoch(parse_u64(SLOTS, epoch)?)));
    }
    Ok(out)
}

/// FNV-1a, 64 bits: a cheap fingerprint tying slot chunks together (not a security measure).
fn fingerprint(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn chunk_key(i: usize) -> String {
    format!("{SLOTS_CHUNK_PREFIX}{i}")
}

/// The key/values carrying an encoded slot value: `slots`, or chunks followed by `slots.n`.
fn slot_keys(encoded: String) -> Vec<(String, String)> {
    if encoded.len() <= SLOTS_CHUNK_BYTES {
        return vec![(SLOTS.to_string(), encoded)];
    }
    let tag = fingerprint(&encoded);
    // The encoding is ASCII, so any byte offset is a character boundary.
    let pieces: Vec<&str> = encoded
        .as_bytes()
        .chunks(SLOTS_CHUNK_BYTES)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    let mut keys: Vec<(String, String)> = pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| (chunk_key(i), format!("{tag}:{piece}")))
        .collect();
    // Written last: a reader that has `slots.n` has every chunk written before it.
    keys.push((SLOTS_COUNT.to_string(), format!("{}:{tag}", pieces.len())));
    keys
}

/// Reads the slot value from either representation. Chunks win over `slots` (during a switch
/// between representations both exist for a moment; the chunks are then the older, complete one).
fn read_slots(keys: &BTreeMap<String, String>) -> Result<Vec<(SlotRange, Epoch)>, KeyError> {
    let Some(count) = keys.get(SLOTS_COUNT) else {
        let value = keys
            .get(SLOTS)
            .ok_or_else(|| KeyError::Missing(SLOTS.to_string()))?;
        return decode_slots(value);
    };
    let (n, tag) = count
        .split_once(':')
        .ok_or_else(|| bad(SLOTS_COUNT, "expected <count>:<hash>"))?;
    let n = parse_u64(SLOTS_COUNT, n)?;
    if n == 0 || n > MAX_CHUNKS as u64 {
        return Err(bad(SLOTS_COUNT, format!("bad chunk count {n}")));
    }
    let mut encoded = String::new();
    for i in 0..n as usize {
        let key = chunk_key(i);
        let chunk = keys
            .get(&key)
            .ok_or_else(|| KeyError::Missing(key.clone()))?;
        let (chunk_tag, piece) = chunk
            .split_once(':')
            .ok_or_else(|| bad(&key, "expected <hash>:<piece>"))?;
        if chunk_tag != tag {
            return Err(bad(&key, "chunk from another version of the slot value"));
        }
        encoded.push_str(piece);
    }
    if fingerprint(&encoded) != tag {
        return Err(bad(SLOTS_COUNT, "slot chunks do not match their hash"));
    }
    decode_slots(&encoded)
}

/// Whether a key belongs to the node-state key set (as opposed to [`KIND`] and [`LEAVING`]).
pub fn is_node_state_key(key: &str) -> bool {
    key != KIND && key != LEAVING
}

/// The keys and values publishing a node state, in the order they must be written: slot values
/// first, then the descriptor version, the addresses, and the Raft facts with the term last, so a
/// reader that sees part of an update (chitchat ships a node's changes in write order) never sees
/// a new claim labelled with a newer version or term than it really has.
pub fn encode_node_state(state: &NodeState) -> Vec<(String, String)> {
    let mut keys = slot_keys(encode_slots(&state.slots));
    let mut push = |k: &str, v: String| keys.push((k.to_string(), v));
    push(SHARD, state.shard.0.to_string());
    push(NODE, state.node.0.to_string());
    push(HTTP, state.http.clone());
    push(RAFT, state.raft.clone());
    push(DESCRIPTOR_VERSION, state.descriptor_version.to_string());
    push(INITIALISED, state.initialised.to_string());
    if let Some(n) = state.initial_shards {
        push(INITIAL_SHARDS, n.to_string());
    }
    push(STATE, state.state.as_str().to_string());
    push(ROLE, state.role.as_str().to_string());
    push(
        LEADER,
        state.leader.map(|l| l.0.to_string()).unwrap_or_default(),
    );
    push(KEYS, state.keys.to_string());
    push(BYTES, state.bytes.to_string());
    push(CHUNKS, state.chunks.to_string());
    push(
        TAGS,
        state
            .tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    if state.catalog_version > 0 {
        push(CATALOG_VERSION, state.catalog_version.to_string());
    }
    // Written last: see `TERM`.
    push(TERM, state.term.to_string());
    keys
}

fn decode_tags(value: &str) -> Result<Vec<(String, String)>, KeyError> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| bad(TAGS, format!("expected name=value, got {kv:?}")))
        })
        .collect()
}

fn get<'a>(keys: &'a BTreeMap<String, String>, key: &str) -> Result<&'a str, KeyError> {
    keys.get(key)
        .map(String::as_str)
        .ok_or_else(|| KeyError::Missing(key.to_string()))
}

fn parse_addr(key: &str, value: &str) -> Result<String, KeyError> {
    // "host:port" with a numeric port; the host is not resolved here.
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| bad(key, format!("expected host:port, got {value:?}")))?;
    if host.is_empty() || value.len() > 255 || value.chars().any(|c| c.is_control()) {
        return Err(bad(key, format!("bad address {value:?}")));
    }
    port.parse::<u16>()
        .map_err(|_| bad(key, format!("bad port in {value:?}")))?;
    Ok(value.to_string())
}

/// Parses a node state from a member's keys (all of them; unrelated keys are ignored).
pub fn decode_node_state(keys: &BTreeMap<String, String>) -> Result<NodeState, KeyError> {
    let leader = get(keys, LEADER)?;
    let leader = if leader.is_empty() {
        None
    } else {
        Some(NodeId(parse_u64(LEADER, leader)?))
    };
    let initialised = match get(keys, INITIALISED)? {
        "true" => true,
        "false" => false,
        other => return Err(bad(INITIALISED, format!("not a boolean: {other:?}"))),
    };
    Ok(NodeState {
        shard: ShardId(parse_u64(SHARD, get(keys, SHARD)?)?),
        node: NodeId(parse_u64(NODE, get(keys, NODE)?)?),
        role: get(keys, ROLE)?.parse::<Role>().map_err(|e| bad(ROLE, e))?,
        leader,
        term: parse_u64(TERM, get(keys, TERM)?)?,
        http: parse_addr(HTTP, get(keys, HTTP)?)?,
        raft: parse_addr(RAFT, get(keys, RAFT)?)?,
        state: get(keys, STATE)?
            .parse::<ShardState>()
            .map_err(|e| bad(STATE, e))?,
        descriptor_version: parse_u64(DESCRIPTOR_VERSION, get(keys, DESCRIPTOR_VERSION)?)?,
        initialised,
        initial_shards: keys
            .get(INITIAL_SHARDS)
            .map(|v| parse_u64(INITIAL_SHARDS, v))
            .transpose()?,
        slots: read_slots(keys)?,
        keys: keys
            .get(KEYS)
            .map(|v| parse_u64(KEYS, v))
            .transpose()?
            .unwrap_or(0),
        bytes: keys
            .get(BYTES)
            .map(|v| parse_u64(BYTES, v))
            .transpose()?
            .unwrap_or(0),
        chunks: keys
            .get(CHUNKS)
            .map(|v| parse_u64(CHUNKS, v))
            .transpose()?
            .unwrap_or(0),
        tags: decode_tags(keys.get(TAGS).map(String::as_str).unwrap_or(""))?,
        catalog_version: keys
            .get(CATALOG_VERSION)
            .map(|v| parse_u64(CATALOG_VERSION, v))
            .transpose()?
            .unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeState {
        NodeState {
            shard: ShardId(3),
            node: NodeId(2),
            role: Role::Follower,
            leader: Some(NodeId(1)),
            term: 7,
            http: "127.0.0.1:8080".into(),
            raft: "node-a.example:9000".into(),
            state: ShardState::Draining,
            descriptor_version: 12,
            initialised: true,
            initial_shards: Some(3),
            keys: 42,
            bytes: 4096,
            chunks: 0,
            tags: vec![("datacenter".into(), "us-east".into())],
            catalog_version: 5,
            slots: vec![
                (SlotRange(0, 5460), Epoch(1)),
                (SlotRange(5461, 5470), Epoch(3)),
                (SlotRange(7, 7), Epoch(2)),
            ],
        }
    }

    fn to_map(kv: Vec<(String, String)>) -> BTreeMap<String, String> {
        kv.into_iter().collect()
    }

    /// Every other slot owned, with alternating epochs: the longest realistic encoding.
    fn worst_case_slots() -> Vec<(SlotRange, Epoch)> {
        (0..SLOT_COUNT)
            .step_by(2)
            .map(|s| (SlotRange(s, s), Epoch(if s % 4 == 0 { 1 } else { 1 << 40 })))
            .collect()
    }

    #[test]
    fn slots_encoding_is_compact() {
        assert_eq!(encode_slots(&sample().slots), "0-5460@1,5461-5470@3,7@2");
        assert_eq!(
            decode_slots("0-5460@1,5461-5470@3,7@2").unwrap(),
            sample().slots
        );
        assert_eq!(encode_slots(&[]), "");
        assert_eq!(decode_slots("").unwrap(), vec![]);
    }

    #[test]
    fn node_state_round_trips() {
        let s = sample();
        let keys = encode_node_state(&s);
        assert!(keys.iter().any(|(k, _)| k == SLOTS));
        assert_eq!(keys.last().unwrap().0, TERM);
        assert_eq!(decode_node_state(&to_map(keys)).unwrap(), s);

        let mut s = sample();
        s.leader = None;
        s.role = Role::Candidate;
        s.slots.clear();
        s.initialised = false;
        // A node of an earlier version publishes no initial_shards.
        s.initial_shards = None;
        s.state = ShardState::Active;
        assert_eq!(
            decode_node_state(&to_map(encode_node_state(&s))).unwrap(),
            s
        );
    }

    #[test]
    fn worst_case_slots_are_chunked_and_round_trip() {
        let mut s = sample();
        s.slots = worst_case_slots();
        let keys = encode_node_state(&s);
        assert!(!keys.iter().any(|(k, _)| k == SLOTS));
        let chunks = keys
            .iter()
            .filter(|(k, _)| k.starts_with(SLOTS_CHUNK_PREFIX) && k != SLOTS_COUNT)
            .count();
        assert!(chunks > 1, "{chunks}");
        for (k, v) in &keys {
            assert!(
                v.len() <= SLOTS_CHUNK_BYTES + 17,
                "{k} is {} bytes",
                v.len()
            );
        }
        // The chunks come first, then the count.
        let count_pos = keys.iter().position(|(k, _)| k == SLOTS_COUNT).unwrap();
        assert_eq!(count_pos, chunks);
        assert!(keys[..chunks]
            .iter()
            .all(|(k, _)| k.starts_with(SLOTS_CHUNK_PREFIX)));
        assert_eq!(decode_node_state(&to_map(keys)).unwrap(), s);

        // All 16384 single slots too.
        s.slots = (0..SLOT_COUNT)
            .map(|x| (SlotRange(x, x), Epoch(u64::MAX - x as u64)))
            .collect();
        assert_eq!(
            decode_node_state(&to_map(encode_node_state(&s))).unwrap(),
            s
        );
    }

    #[test]
    fn chunks_from_different_versions_are_rejected() {
        let mut a = sample();
        a.slots = worst_case_slots();
        let mut b = a.clone();
        b.slots[100].1 = Epoch(99);
        let mut map = to_map(encode_node_state(&a));
        let newer = to_map(encode_node_state(&b));
        // A reader that got the new chunk 0 but not yet the rest (nor the new count).
        map.insert(chunk_key(0), newer[&chunk_key(0)].clone());
        assert!(decode_node_state(&map).is_err());
        // ... and once everything arrived, it reads the new value.
        assert_eq!(decode_node_state(&newer).unwrap(), b);
        // A chunked representation wins over a stale single `slots` key, and vice versa the
        // single key is used once the chunks are gone.
        let mut both = newer.clone();
        both.insert(SLOTS.to_string(), "1@1".to_string());
        assert_eq!(decode_node_state(&both).unwrap().slots, b.slots);
        both.retain(|k, _| !k.starts_with(SLOTS_CHUNK_PREFIX));
        assert_eq!(
            decode_node_state(&both).unwrap().slots,
            vec![(SlotRange(1, 1), Epoch(1))]
        );
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        for bad_slots in [
            "x",
            "1",
            "1@",
            "@1",
            "1-@1",
            "-1@1",
            "5-3@1",
            "16384@1",
            "0-16384@1",
            "1@-1",
            "1@+1",
            "1@18446744073709551616",
            "1@1,,2@1",
            "1@1,",
            "1 @1",
            "١@1",
            "0-1-2@1",
        ] {
            assert!(decode_slots(bad_slots).is_err(), "{bad_slots:?}");
        }
        let good = to_map(encode_node_state(&sample()));
        let corrupt = |key: &str, value: &str| {
            let mut m = good.clone();
            m.insert(key.to_string(), value.to_string());
            decode_node_state(&m)
        };
        assert!(corrupt(SHARD, "-1").is_err());
        assert!(corrupt(NODE, "").is_err());
        assert!(corrupt(ROLE, "boss").is_err());
        assert!(corrupt(LEADER, "me").is_err());
        assert!(corrupt(TERM, "1e3").is_err());
        assert!(corrupt(HTTP, "nohost").is_err());
        assert!(corrupt(RAFT, "h:99999").is_err());
        assert!(corrupt(STATE, "happy").is_err());
        assert!(corrupt(DESCRIPTOR_VERSION, " 1").is_err());
        assert!(corrupt(INITIALISED, "yes").is_err());
        assert!(corrupt(SLOTS, "1@1;2@2").is_err());
        assert!(corrupt(SLOTS_COUNT, "99999999999999999999:x").is_err());
        assert!(corrupt(SLOTS_COUNT, "1000000:0").is_err());
        assert!(corrupt(SLOTS_COUNT, "0:0").is_err());
        assert!(corrupt(SLOTS_COUNT, "2").is_err());
        assert!(corrupt(SLOTS_COUNT, "1:abc").is_err());
        let mut missing = good.clone();
        missing.remove(TERM);
        assert_eq!(
            decode_node_state(&missing),
            Err(KeyError::Missing(TERM.to_string()))
        );
        assert!(decode_node_state(&BTreeMap::new()).is_err());
        assert!(parse_kind("node").is_ok());
        assert!(parse_kind("Node").is_err());
        assert_eq!(parse_kind("router").unwrap(), MemberKind::Router);
    }

    #[test]
    fn every_node_key_is_a_node_state_key() {
        for (k, _) in encode_node_state(&sample()) {
            assert!(is_node_state_key(&k));
        }
        assert!(!is_node_state_key(KIND));
        assert!(!is_node_state_key(LEAVING));
    }
}
