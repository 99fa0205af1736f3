//! Copying a hash slot, or a chunk of a range collection, while it keeps serving: the first
//! phase of a hand-off (see `moves` and `chunk_moves`).
//!
//! The source leader registers the unit with the [`CopyTracker`], then reads it in bounded
//! pieces ([`scan_piece`]) with no snapshot while writes go on. Every batch the state machine
//! writes afterwards records the `kv` keys it touched in a tracked unit, so a key the scan
//! read at an older value (or missed, or read before it was deleted) is in the tracker's set.
//! Recording happens after the batch reached RocksDB and under the tracker's lock, so a
//! write is either visible to a scan that starts after the registration or recorded. Once
//! the unit is frozen (`Out` applied), the recorded keys' current values and tombstones
//! ([`read_piece`]) make the copy exact.
//!
//! A replica that installs a snapshot changed its data without applying entries: its trackers
//! are marked lost and every copy running on it starts over. So is a copy whose unit gets
//! more than 32 MiB of distinct keys written while it runs (the record stays bounded).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Mutex;

use rocksdb::{Direction, IteratorMode, ReadOptions};
use unikv_types::{ChunkId, Keyspace, Slot};

use crate::db::{
    chunk_bounds, range_user_key, slot_bounds, split_key, split_keyspace, Db, CF_KV, RANGE_PREFIX,
};
use crate::error::{Error, Result};

/// What a copy reads: a hash slot, or the keys `[lo, hi)` of a chunk of range keyspace
/// `keyspace` (its bounds cannot change while it is copied: a split or merge needs it
/// serving and held, and the hand-off checks them once frozen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyUnit {
    Slot(Slot),
    Chunk {
        id: ChunkId,
        keyspace: Keyspace,
        lo: String,
        hi: Option<String>,
    },
}

impl fmt::Display for CopyUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CopyUnit::Slot(s) => write!(f, "slot {s}"),
            CopyUnit::Chunk { id, .. } => write!(f, "chunk {id}"),
        }
    }
}

/// How the tracker names a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Tracked {
    Slot(Slot),
    Chunk(ChunkId),
}

impl CopyUnit {
    fn tracked(&self) -> Tracked {
        match self {
            CopyUnit::Slot(s) => Tracked::Slot(*s),
            CopyUnit::Chunk { id, .. } => Tracked::Chunk(*id),
        }
    }

    /// The raw `kv` keys `[start, end)` holding the unit's pairs.
    pub fn bounds(&self) -> (Vec<u8>, Vec<u8>) {
        match self {
            CopyUnit::Slot(s) => slot_bounds(*s),
            CopyUnit::Chunk {
                keyspace, lo, hi, ..
            } => chunk_bounds(*keyspace, lo, hi.as_deref()),
        }
    }

    /// Splits a raw `kv` key of the unit into keyspace and user key.
    fn user_key<'k>(&self, k: &'k [u8]) -> Result<(Keyspace, &'k [u8])> {
        match self {
            CopyUnit::Slot(slot) => split_key(k)
                .and_then(|(_, rest)| split_keyspace(rest))
                .ok_or_else(|| Error::Decode {
                    what: "kv key",
                    reason: format!("slot {slot}: a keyspace mark without a keyspace"),
                }),
            CopyUnit::Chunk { keyspace, .. } => Ok((*keyspace, range_user_key(k))),
        }
    }
}

/// The keys written in each unit being copied on this replica.
#[derive(Debug, Default)]
pub struct CopyTracker {
    units: Mutex<HashMap<Tracked, Written>>,
}

#[derive(Debug, Default)]
struct Written {
    /// For a chunk: its raw key bounds (slots are told by their prefix).
    range: Option<(Vec<u8>, Vec<u8>)>,
    /// Raw `kv` keys written since tracking started (or since the last [`CopyTracker::take`]).
    keys: HashSet<Vec<u8>>,
    /// Their total length.
    bytes: usize,
    /// Set when this replica's data changed without the tracker seeing it (a snapshot).
    lost: bool,
}

impl Written {
    fn note(&mut self, k: &[u8]) {
        if self.lost {
            return;
        }
        if self.keys.insert(k.to_vec()) {
            self.bytes += k.len();
        }
        if self.bytes > MAX_RECORD_BYTES {
            // Too many writes to keep up with: the copy starts over later.
            self.lose();
        }
    }

    fn lose(&mut self) {
        self.lost = true;
        self.keys = HashSet::new();
        self.bytes = 0;
    }
}

impl CopyTracker {
    /// Starts tracking `unit`; false if it is tracked already.
    pub(crate) fn start(&self, unit: &CopyUnit) -> bool {
        let mut m = lock(&self.units);
        let key = unit.tracked();
        if m.contains_key(&key) {
            return false;
        }
        let range = matches!(unit, CopyUnit::Chunk { .. }).then(|| unit.bounds());
        m.insert(
            key,
            Written {
                range,
                ..Default::default()
            },
        );
        true
    }

    pub(crate) fn stop(&self, unit: &CopyUnit) {
        lock(&self.units).remove(&unit.tracked());
    }

    /// Records the keys a batch just wrote (called after the batch is in RocksDB).
    pub(crate) fn record<'k>(&self, keys: impl Iterator<Item = &'k Vec<u8>>) {
        let mut m = lock(&self.units);
        if m.is_empty() {
            return;
        }
        for k in keys {
            let Some((slot, _)) = split_key(k) else {
                continue;
            };
            if slot == RANGE_PREFIX {
                let within = |(lo, hi): &(Vec<u8>, Vec<u8>)| k >= lo && k < hi;
                for w in m
                    .values_mut()
                    .filter(|w| w.range.as_ref().is_some_and(within))
                {
                    w.note(k);
                }
            } else if let Some(w) = m.get_mut(&Tracked::Slot(slot)) {
                w.note(k);
            }
        }
    }

    /// Every tracked copy on this replica is incomplete (its data was replaced wholesale).
    pub(crate) fn lose_all(&self) {
        for w in lock(&self.units).values_mut() {
            w.lose();
        }
    }

    /// The keys written in `unit` since the last call, sorted; an error if the copy is lost.
    pub(crate) fn take(&self, unit: &CopyUnit) -> Result<Vec<Vec<u8>>> {
        let mut m = lock(&self.units);
        let w = m
            .get_mut(&unit.tracked())
            .ok_or_else(|| lost(unit, "not tracked"))?;
        if w.lost {
            return Err(lost(unit, LOST_WHY));
        }
        w.bytes = 0;
        let mut keys: Vec<Vec<u8>> = std::mem::take(&mut w.keys).into_iter().collect();
        keys.sort_unstable();
        Ok(keys)
    }

    /// How many keys (and their bytes) were written in `unit` since the last `take`; an
    /// error if the copy is lost.
    pub(crate) fn pending(&self, unit: &CopyUnit) -> Result<(usize, usize)> {
        match lock(&self.units).get(&unit.tracked()) {
            None => Err(lost(unit, "not tracked")),
            Some(w) if w.lost => Err(lost(unit, LOST_WHY)),
            Some(w) => Ok((w.keys.len(), w.bytes)),
        }
    }
}

/// Most bytes of keys a copy's record holds before it gives up (and the copy starts over).
const MAX_RECORD_BYTES: usize = 32 << 20;

const LOST_WHY: &str =
    "this replica installed a snapshot, or more than 32 MiB of keys were written meanwhile";

fn lost(unit: &CopyUnit, why: &str) -> Error {
    Error::CopyLost {
        unit: unit.to_string(),
        reason: why.into(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A bounded part of a slot's or chunk's data on its way to another shard (a chunk's pairs
/// are all of one keyspace, so in `collections_kv`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Piece {
    /// Pairs of `default`.
    pub kv: Vec<(String, String)>,
    /// Pairs of other collections, with their keyspace.
    pub collections_kv: Vec<(Keyspace, String, String)>,
    /// Keys that no longer exist (only in pieces of written keys).
    pub deleted: Vec<(Keyspace, String)>,
    /// Bytes of keys and values in the piece.
    pub bytes: u64,
}

impl Piece {
    fn push(&mut self, ks: Keyspace, key: &[u8], value: Option<&[u8]>) {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        self.bytes += (key.len() + value.map_or(0, <[u8]>::len)) as u64;
        match value {
            Some(v) if ks.is_default() => self.kv.push((text(key), text(v))),
            Some(v) => self.collections_kv.push((ks, text(key), text(v))),
            None => self.deleted.push((ks, text(key))),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.kv.is_empty() && self.collections_kv.is_empty() && self.deleted.is_empty()
    }

    /// A chunk's piece as its user pairs and deleted user keys.
    pub fn into_chunk_parts(self) -> (Vec<(String, String)>, Vec<String>) {
        let mut kv = self.kv;
        kv.extend(self.collections_kv.into_iter().map(|(_, k, v)| (k, v)));
        (kv, self.deleted.into_iter().map(|(_, k)| k).collect())
    }
}

/// The next piece of `unit`'s pairs after raw key `after` (from the start if `None`), of
/// about `max_bytes` (at least one pair), and the cursor to continue from (`None`: that was
/// the last piece).
pub fn scan_piece(
    db: &Db,
    unit: &CopyUnit,
    after: Option<&[u8]>,
    max_bytes: u64,
) -> Result<(Piece, Option<Vec<u8>>)> {
    let (lo, hi) = unit.bounds();
    let mut ro = ReadOptions::default();
    ro.set_iterate_upper_bound(hi);
    // Long scans of data read once should not push hot blocks out of the cache.
    ro.fill_cache(false);
    let from = after.map_or(lo, |a| [a, &[0u8]].concat());
    let mut piece = Piece::default();
    for item in db.raw().iterator_cf_opt(
        db.cf(CF_KV),
        ro,
        IteratorMode::From(&from, Direction::Forward),
    ) {
        let (k, v) = item?;
        let (ks, key) = unit.user_key(&k)?;
        piece.push(ks, key, Some(&v));
        if piece.bytes >= max_bytes {
            return Ok((piece, Some(k.to_vec())));
        }
    }
    Ok((piece, None))
}

/// The current values (or absence) of the first raw `kv` keys of `unit` in `keys`, as one
/// piece of about `max_bytes` (at least one key), and how many keys it took.
pub fn read_piece(
    db: &Db,
    unit: &CopyUnit,
    keys: &[Vec<u8>],
    max_bytes: u64,
) -> Result<(Piece, usize)> {
    let mut piece = Piece::default();
    for (i, k) in keys.iter().enumerate() {
        let v = db.raw().get_cf(db.cf(CF_KV), k)?;
        let (ks, key) = unit.user_key(k)?;
        piece.push(ks, key, v.as_deref());
        if piece.bytes >= max_bytes {
            return Ok((piece, i + 1));
        }
    }
    Ok((piece, keys.len()))
}
