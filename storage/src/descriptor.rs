//! The shard descriptor: which slots this shard owns and at which epoch, the slots it is handing
//! off or receiving, where moved slots went, and its registry entry (state, tags). It lives in
//! the replicated state machine, so only a Raft commit in this shard changes it; gossip and
//! `/config` only ever report it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use unikv_types::{Epoch, Keyspace, KvError, ShardId, ShardState, Slot, SlotRange};

use crate::chunk_map::ChunkMap;

/// A contiguous run of owned slots sharing one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedRange {
    pub lo: Slot,
    pub hi: Slot,
    pub epoch: Epoch,
}

/// Ownership record of one shard.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ShardDescriptor {
    pub shard: ShardId,
    /// Set by the bootstrap command; a shard claims initial slots at most once.
    pub initialised: bool,
    /// Increases with every change to this descriptor.
    pub version: u64,
    /// Owned ranges, sorted by `lo`, never overlapping.
    pub ranges: Vec<OwnedRange>,
    /// Registry state: `Active`, `Draining` or `Inactive` (never `Unreachable`, which only
    /// observers derive).
    #[serde(default)]
    pub state: ShardState,
    /// Whether the state was set explicitly (e.g. by `/addshard`): the bootstrap claim then
    /// leaves it alone.
    #[serde(default)]
    pub state_set: bool,
    /// Set by `/removeshard?forget=true`: once drained, the shard is removed, not inactive.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forget_when_drained: bool,
    /// Operator tags, e.g. `datacenter=us-east`.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Owned slots being handed off: frozen (neither read nor written here), data still here
    /// until `Done`.
    #[serde(default)]
    pub outgoing: BTreeMap<Slot, Outgoing>,
    /// Hand-offs into this shard that their source gave up: a slot's `In` (or `Stage`) at or
    /// below the epoch is refused here for good (`Refuse`), so the source may unfreeze it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<Slot, Epoch>,
    /// Slots whose data is arriving in pieces while their source still serves them (the
    /// copy phase of a move): stored, never served, served once the final `In` commits.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub staging: BTreeMap<Slot, Staging>,
    /// Where slots this shard gave away went, and at which epoch: the forwarding notes.
    #[serde(default)]
    pub forwards: BTreeMap<Slot, Forward>,
    /// Keyspaces of deleted collections: their data is gone here and writes to them are
    /// refused (`unknown_collection`); data received for them in a move is not installed.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub dropped_keyspaces: BTreeSet<Keyspace>,
    /// The shard keys of custom collections placed here that hold data here, each stored as
    /// a unit: a local slot number at or above [`UNIT_BASE`] (never a hash slot, never moved,
    /// never reused) that gives its keys, dedup records and statistics their own ranges.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub units: BTreeMap<Keyspace, Slot>,
    /// The next unit number to hand out (0: [`UNIT_BASE`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub next_unit: Slot,
    /// Slot moves are held back while this is set (a promote in progress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<Fence>,
    /// Shard keys' units moving out of or into this shard, and where moved ones went (see
    /// `unit_moves`).
    #[serde(default, skip_serializing_if = "UnitMoves::is_empty")]
    pub unit_moves: UnitMoves,
    /// The chunks of range collections held here (see `chunk_map`).
    #[serde(default, skip_serializing_if = "ChunkMap::is_empty_map")]
    pub chunks: ChunkMap,
}

/// The move state of shard keys' units, by keyspace (the slot move's records, for units).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UnitMoves {
    /// Units handed off from here: frozen for writes, data still here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outgoing: BTreeMap<Keyspace, Outgoing>,
    /// Units received and not yet served.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub incoming: BTreeMap<Keyspace, Incoming>,
    /// Where units this shard gave away went: a shard key's writes here are refused, never
    /// given a fresh unit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forwards: BTreeMap<Keyspace, Forward>,
    /// The epoch of each unit held here that arrived by a move or stayed after an abort
    /// (absent: 1). Epochs count the moves of one shard's part; parts from different
    /// sources are told apart by `arrived`, never by comparing epochs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub epochs: BTreeMap<Keyspace, Epoch>,
    /// The hand-off (source, epoch) the unit held here — or last held, or dropped — arrived
    /// by: its `In` again is answered from it, never installed twice.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub arrived: BTreeMap<Keyspace, Incoming>,
}

impl UnitMoves {
    pub fn is_empty(&self) -> bool {
        self.outgoing.is_empty()
            && self.incoming.is_empty()
            && self.forwards.is_empty()
            && self.epochs.is_empty()
            && self.arrived.is_empty()
    }

    /// The epoch of the unit of `ks` held here.
    pub fn epoch(&self, ks: Keyspace) -> Epoch {
        self.epochs.get(&ks).copied().unwrap_or(Epoch(1))
    }

    /// Forgets everything about keyspace `ks` (deleted).
    pub fn forget(&mut self, ks: Keyspace) {
        self.outgoing.remove(&ks);
        self.incoming.remove(&ks);
        self.forwards.remove(&ks);
        self.epochs.remove(&ks);
        self.arrived.remove(&ks);
    }
}

/// A promote's hold on slot moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub token: u64,
    /// By the shard's clock (ms since the Unix epoch): the fence ends by itself then, so a
    /// coordinator that died leaves no shard fenced for good.
    pub until_ms: u64,
}

impl Fence {
    /// The answer to a slot move this fence holds back at `now_ms`.
    pub fn refusal(&self, now_ms: u64) -> KvError {
        KvError::Refused {
            status: 409,
            code: "moves_fenced".into(),
            message: format!(
                "slot moves wait while a collection is promoted (fence {} for {} ms more)",
                self.token,
                self.until_ms.saturating_sub(now_ms)
            ),
        }
    }
}

/// The first local unit number; hash slots are all below it.
pub const UNIT_BASE: Slot = 0x8000;
/// Unit numbers stay below this (keys starting 0xFF are the dedup expiry index's).
pub const UNIT_END: Slot = 0xFF00;

fn is_zero(n: &Slot) -> bool {
    *n == 0
}

impl ShardDescriptor {
    /// Whether this shard may serve shard key `ks` (a write: `for_write`) now: not while its unit
    /// arrives here, not a write while it leaves, and never once it moved away (the answer names
    /// where it went). `slot` is the key's hash slot, for the error.
    pub fn unit_home(&self, ks: Keyspace, slot: Slot, for_write: bool) -> Result<(), KvError> {
        let d = self;
        let m = &d.unit_moves;
        if let Some(h) = m.outgoing.get(&ks).filter(|_| for_write) {
            return Err(KvError::Unavailable {
                shard: d.shard,
                reason: format!("shard key {ks} is moving to shard {}", h.target),
            });
        }
        if m.incoming.contains_key(&ks) {
            return Err(KvError::Unavailable {
                shard: d.shard,
                reason: format!("shard key {ks} is still arriving here"),
            });
        }
        match m.forwards.get(&ks) {
            Some(f) if !d.units.contains_key(&ks) => Err(KvError::WrongShard {
                slot,
                shard: d.shard,
                owner: Some(f.target),
                epoch: Some(f.epoch),
            }),
            _ => Ok(()),
        }
    }

    /// What this shard still holds or is moving, if anything (a shard is removed only
    /// without any).
    pub fn holdings(&self) -> Option<String> {
        let mut what = Vec::new();
        if self.slot_count() > 0 {
            what.push(format!("{} slots", self.slot_count()));
        }
        if !self.outgoing.is_empty() {
            what.push("slots moving".to_string());
        }
        if !self.chunks.owned.is_empty() {
            what.push(format!("{} chunks", self.chunks.owned.len()));
        }
        if !self.units.is_empty() {
            what.push(format!("{} shard keys", self.units.len()));
        }
        if !self.unit_moves.outgoing.is_empty() || !self.unit_moves.incoming.is_empty() {
            what.push("shard keys moving".to_string());
        }
        (!what.is_empty()).then(|| what.join(", "))
    }

    /// A unit number of its own (a chunk's), never handed out before; `None` once all are.
    pub fn new_unit(&mut self) -> Option<Slot> {
        let u = self.next_unit.max(UNIT_BASE);
        if u >= UNIT_END {
            return None;
        }
        self.next_unit = u + 1;
        self.version += 1;
        Some(u)
    }

    /// The unit of `keyspace` here, handing out a new number the first time (deterministic:
    /// every replica applies the same entries in the same order). `None` once all are used.
    pub fn unit_for(&mut self, keyspace: Keyspace) -> Option<Slot> {
        if let Some(u) = self.units.get(&keyspace) {
            return Some(*u);
        }
        let u = self.next_unit.max(UNIT_BASE);
        if u >= UNIT_END {
            return None;
        }
        self.units.insert(keyspace, u);
        self.next_unit = u + 1;
        self.version += 1;
        Some(u)
    }
}

// The three records below were one type with a field `peer` before; `alias` reads descriptors
// written then.

/// A slot this shard is handing off: the shard it goes to and the epoch it will have there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    #[serde(alias = "peer")]
    pub target: ShardId,
    pub epoch: Epoch,
}

/// A slot received and not yet served: the shard it comes from and its epoch here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incoming {
    #[serde(alias = "peer")]
    pub source: ShardId,
    pub epoch: Epoch,
}

/// A slot whose copy is arriving in pieces: from which shard, for which hand-off epoch, which
/// copy (a source starts a new one after a leader change) and how many pieces are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staging {
    pub source: ShardId,
    pub epoch: Epoch,
    pub copy: u64,
    pub parts: u32,
}

/// Where a slot this shard gave away went, and its epoch there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    #[serde(alias = "peer")]
    pub target: ShardId,
    pub epoch: Epoch,
}

impl From<Outgoing> for Forward {
    fn from(o: Outgoing) -> Self {
        Forward {
            target: o.target,
            epoch: o.epoch,
        }
    }
}

impl ShardDescriptor {
    pub fn new(shard: ShardId) -> Self {
        Self {
            shard,
            ..Default::default()
        }
    }

    /// The epoch at which this shard owns `slot`, if it does.
    pub fn owns(&self, slot: Slot) -> Option<Epoch> {
        let i = self.ranges.partition_point(|r| r.hi < slot);
        self.ranges
            .get(i)
            .filter(|r| r.lo <= slot && slot <= r.hi)
            .map(|r| r.epoch)
    }

    /// Number of owned slots.
    pub fn slot_count(&self) -> usize {
        self.ranges
            .iter()
            .map(|r| r.hi as usize - r.lo as usize + 1)
            .sum()
    }

    /// Owned ranges without epochs, adjacent ranges merged.
    pub fn slot_ranges(&self) -> Vec<SlotRange> {
        let mut out: Vec<SlotRange> = Vec::new();
        for r in &self.ranges {
            match out.last_mut() {
                Some(last) if last.1 as u32 + 1 == r.lo as u32 => last.1 = r.hi,
                _ => out.push(SlotRange(r.lo, r.hi)),
            }
        }
        out
    }

    /// Removes `slot` from the owned ranges (splitting a range if needed).
    pub fn remove_slot(&mut self, slot: Slot) {
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        for r in &self.ranges {
            if r.lo <= slot && slot <= r.hi {
                if r.lo < slot {
                    out.push(OwnedRange { hi: slot - 1, ..*r });
                }
                if slot < r.hi {
                    out.push(OwnedRange { lo: slot + 1, ..*r });
                }
            } else {
                out.push(*r);
            }
        }
        self.ranges = out;
    }

    /// Adds `slot` at `epoch` (replacing any current ownership of it), merging with neighbours
    /// of the same epoch.
    pub fn add_slot(&mut self, slot: Slot, epoch: Epoch) {
        self.remove_slot(slot);
        let i = self.ranges.partition_point(|r| r.hi < slot);
        self.ranges.insert(
            i,
            OwnedRange {
                lo: slot,
                hi: slot,
                epoch,
            },
        );
        // Merge with the left and right neighbours when contiguous and of the same epoch.
        if i + 1 < self.ranges.len() {
            let (a, b) = (self.ranges[i], self.ranges[i + 1]);
            if a.epoch == b.epoch && a.hi as u32 + 1 == b.lo as u32 {
                self.ranges[i].hi = b.hi;
                self.ranges.remove(i + 1);
            }
        }
        if i > 0 {
            let (a, b) = (self.ranges[i - 1], self.ranges[i]);
            if a.epoch == b.epoch && a.hi as u32 + 1 == b.lo as u32 {
                self.ranges[i - 1].hi = b.hi;
                self.ranges.remove(i);
            }
        }
    }

    /// Applies a bootstrap claim. Returns false (and changes nothing) if the shard was already
    /// initialised or the ranges are invalid (unsorted, overlapping or out of bounds).
    pub fn bootstrap(&mut self, ranges: &[SlotRange], epoch: Epoch) -> bool {
        if self.initialised || !valid_ranges(ranges) {
            return false;
        }
        self.ranges = ranges
            .iter()
            .map(|r| OwnedRange {
                lo: r.0,
                hi: r.1,
                epoch,
            })
            .collect();
        self.initialised = true;
        // A shard that starts without slots waits for `/addshard` before receiving any (unless
        // `/addshard` already came, before the claim did).
        if self.ranges.is_empty() && !self.state_set {
            self.state = ShardState::Inactive;
        }
        self.version += 1;
        true
    }
}

fn valid_ranges(ranges: &[SlotRange]) -> bool {
    let mut next_min: u32 = 0;
    for r in ranges {
        if r.0 > r.1 || (r.1 as u32) >= unikv_types::SLOT_COUNT as u32 || (r.0 as u32) < next_min {
            return false;
        }
        next_min = r.1 as u32 + 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owns_finds_ranges_by_binary_search() {
        let mut d = ShardDescriptor::new(ShardId(2));
        assert!(d.bootstrap(&[SlotRange(0, 9), SlotRange(20, 29)], Epoch(1)));
        assert_eq!(d.owns(0), Some(Epoch(1)));
        assert_eq!(d.owns(9), Some(Epoch(1)));
        assert_eq!(d.owns(10), None);
        assert_eq!(d.owns(19), None);
        assert_eq!(d.owns(25), Some(Epoch(1)));
        assert_eq!(d.owns(30), None);
        assert_eq!(d.slot_count(), 20);
        assert_eq!(d.version, 1);
    }

    #[test]
    fn bootstrap_applies_once() {
        let mut d = ShardDescriptor::new(ShardId(1));
        assert!(d.bootstrap(&[SlotRange(0, 16383)], Epoch(1)));
        assert!(!d.bootstrap(&[SlotRange(0, 5)], Epoch(1)));
        assert_eq!(d.slot_ranges(), vec![SlotRange(0, 16383)]);
        assert_eq!(d.version, 1);
    }

    #[test]
    fn bootstrap_rejects_bad_ranges() {
        let mut d = ShardDescriptor::new(ShardId(1));
        assert!(!d.bootstrap(&[SlotRange(5, 3)], Epoch(1)));
        assert!(!d.bootstrap(&[SlotRange(0, 16384)], Epoch(1)));
        assert!(!d.bootstrap(&[SlotRange(0, 10), SlotRange(10, 12)], Epoch(1)));
        assert!(!d.initialised);
        // An empty claim is valid: a shard that starts without slots.
        assert!(d.bootstrap(&[], Epoch(1)));
        assert_eq!(d.slot_count(), 0);
    }

    #[test]
    fn remove_and_add_slots_split_and_merge() {
        let mut d = ShardDescriptor::new(ShardId(1));
        assert!(d.bootstrap(&[SlotRange(0, 9)], Epoch(1)));
        d.remove_slot(5);
        assert_eq!(d.owns(5), None);
        assert_eq!(d.slot_count(), 9);
        assert_eq!(d.ranges.len(), 2);
        d.add_slot(5, Epoch(1));
        assert_eq!(
            d.ranges,
            vec![OwnedRange {
                lo: 0,
                hi: 9,
                epoch: Epoch(1)
            }]
        );
        d.add_slot(5, Epoch(3));
        assert_eq!(d.owns(5), Some(Epoch(3)));
        assert_eq!(d.ranges.len(), 3);
        d.remove_slot(0);
        d.remove_slot(9);
        d.add_slot(20, Epoch(2));
        assert_eq!(d.slot_count(), 9);
        assert_eq!(d.owns(20), Some(Epoch(2)));
        assert_eq!(d.owns(9), None);
        // Still sorted and disjoint.
        assert!(d.ranges.windows(2).all(|w| w[0].hi < w[1].lo));
    }

    #[test]
    fn adjacent_ranges_merge_in_report() {
        let mut d = ShardDescriptor::new(ShardId(1));
        assert!(d.bootstrap(
            &[SlotRange(0, 4), SlotRange(5, 9), SlotRange(11, 12)],
            Epoch(1)
        ));
        assert_eq!(d.slot_ranges(), vec![SlotRange(0, 9), SlotRange(11, 12)]);
    }

    #[test]
    fn hand_off_records_written_with_a_peer_field_still_decode() {
        #[derive(Serialize)]
        struct Old {
            peer: ShardId,
            epoch: Epoch,
        }
        let old = crate::error::encode(
            "old",
            &Old {
                peer: ShardId(3),
                epoch: Epoch(5),
            },
        )
        .unwrap();
        let o: Outgoing = crate::error::decode("outgoing", &old).unwrap();
        assert_eq!((o.target, o.epoch), (ShardId(3), Epoch(5)));
        let i: Incoming = crate::error::decode("incoming", &old).unwrap();
        assert_eq!((i.source, i.epoch), (ShardId(3), Epoch(5)));
        let f: Forward = crate::error::decode("forward", &old).unwrap();
        assert_eq!((f.target, f.epoch), (ShardId(3), Epoch(5)));
    }
}
