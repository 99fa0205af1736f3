//! Copying a hash slot while it keeps serving: the first phase of a slot move (see `moves`).
//!
//! The source leader registers the slot with the [`CopyTracker`], then reads the slot in
//! bounded pieces ([`scan_piece`]) with no snapshot while writes go on. Every batch the state
//! machine writes afterwards records the `kv` keys it touched in a tracked slot, so a key
//! the scan read at an older value (or missed, or read before it was deleted) is in the
//! tracker's set. Recording happens after the batch reached RocksDB and under the tracker's
//! lock, so a write is either visible to a scan that starts after the registration or
//! recorded. Once the slot is frozen (`Out` applied), the recorded keys' current values and
//! tombstones ([`read_keys`]) make the copy exact.
//!
//! A replica that installs a snapshot changed its data without applying entries: its trackers
//! are marked lost and every copy running on it starts over. So is a copy whose slot gets more
//! than 32 MiB of distinct keys written while it runs (the record stays bounded).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rocksdb::{Direction, IteratorMode, ReadOptions};
use unikv_types::{Keyspace, Slot};

use crate::db::{slot_bounds, split_key, split_keyspace, Db, CF_KV};
use crate::error::{Error, Result};

/// The keys written in each slot being copied on this replica.
#[derive(Debug, Default)]
pub struct CopyTracker {
    slots: Mutex<HashMap<Slot, Written>>,
}

#[derive(Debug, Default)]
struct Written {
    /// Raw `kv` keys written since tracking started (or since the last [`CopyTracker::take`]).
    keys: HashSet<Vec<u8>>,
    /// Their total length.
    bytes: usize,
    /// Set when this replica's data changed without the tracker seeing it (a snapshot).
    lost: bool,
}

impl CopyTracker {
    /// Starts tracking `slot`; false if it is tracked already.
    pub(crate) fn start(&self, slot: Slot) -> bool {
        let mut m = lock(&self.slots);
        if m.contains_key(&slot) {
            return false;
        }
        m.insert(slot, Written::default());
        true
    }

    pub(crate) fn stop(&self, slot: Slot) {
        lock(&self.slots).remove(&slot);
    }

    /// Records the keys a batch just wrote (called after the batch is in RocksDB).
    pub(crate) fn record<'k>(&self, keys: impl Iterator<Item = &'k Vec<u8>>) {
        let mut m = lock(&self.slots);
        if m.is_empty() {
            return;
        }
        for k in keys {
            let Some((slot, _)) = split_key(k) else {
                continue;
            };
            if let Some(w) = m.get_mut(&slot).filter(|w| !w.lost) {
                if w.keys.insert(k.clone()) {
                    w.bytes += k.len();
                }
                if w.bytes > MAX_RECORD_BYTES {
                    // Too many writes to keep up with: the copy starts over later.
                    w.lost = true;
                    w.keys = HashSet::new();
                    w.bytes = 0;
                }
            }
        }
    }

    /// Every tracked copy on this replica is incomplete (its data was replaced wholesale).
    pub(crate) fn lose_all(&self) {
        for w in lock(&self.slots).values_mut() {
            w.lost = true;
            w.keys.clear();
            w.bytes = 0;
        }
    }

    /// The keys written in `slot` since the last call, sorted; an error if the copy is lost.
    pub(crate) fn take(&self, slot: Slot) -> Result<Vec<Vec<u8>>> {
        let mut m = lock(&self.slots);
        let w = m.get_mut(&slot).ok_or_else(|| lost(slot, "not tracked"))?;
        if w.lost {
            return Err(lost(slot, LOST_WHY));
        }
        w.bytes = 0;
        let mut keys: Vec<Vec<u8>> = std::mem::take(&mut w.keys).into_iter().collect();
        keys.sort_unstable();
        Ok(keys)
    }

    /// How many keys (and their bytes) were written in `slot` since the last `take`; an
    /// error if the copy is lost.
    pub(crate) fn pending(&self, slot: Slot) -> Result<(usize, usize)> {
        match lock(&self.slots).get(&slot) {
            None => Err(lost(slot, "not tracked")),
            Some(w) if w.lost => Err(lost(slot, LOST_WHY)),
            Some(w) => Ok((w.keys.len(), w.bytes)),
        }
    }
}

/// Most bytes of keys a copy's record holds before it gives up (and the copy starts over).
const MAX_RECORD_BYTES: usize = 32 << 20;

const LOST_WHY: &str =
    "this replica installed a snapshot, or more than 32 MiB of keys were written meanwhile";

fn lost(slot: Slot, why: &str) -> Error {
    Error::CopyLost {
        slot,
        reason: why.into(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A bounded part of a slot's data on its way to another shard.
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
}

/// Splits a raw `kv` key of `slot` into keyspace and user key.
fn user_key(slot: Slot, k: &[u8]) -> Result<(Keyspace, &[u8])> {
    split_key(k)
        .and_then(|(_, rest)| split_keyspace(rest))
        .ok_or_else(|| Error::Decode {
            what: "kv key",
            reason: format!("slot {slot}: a keyspace mark without a keyspace"),
        })
}

/// The next piece of `slot`'s pairs after raw key `after` (from the start if `None`), of about
/// `max_bytes` (at least one pair), and the cursor to continue from (`None`: that was the
/// last piece).
pub fn scan_piece(
    db: &Db,
    slot: Slot,
    after: Option<&[u8]>,
    max_bytes: u64,
) -> Result<(Piece, Option<Vec<u8>>)> {
    let (lo, hi) = slot_bounds(slot);
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
        let (ks, key) = user_key(slot, &k)?;
        piece.push(ks, key, Some(&v));
        if piece.bytes >= max_bytes {
            return Ok((piece, Some(k.to_vec())));
        }
    }
    Ok((piece, None))
}

/// The current values (or absence) of the first raw `kv` keys of `slot` in `keys`, as one
/// piece of about `max_bytes` (at least one key), and how many keys it took.
pub fn read_piece(db: &Db, slot: Slot, keys: &[Vec<u8>], max_bytes: u64) -> Result<(Piece, usize)> {
    let mut piece = Piece::default();
    for (i, k) in keys.iter().enumerate() {
        let v = db.raw().get_cf(db.cf(CF_KV), k)?;
        let (ks, key) = user_key(slot, k)?;
        piece.push(ks, key, v.as_deref());
        if piece.bytes >= max_bytes {
            return Ok((piece, i + 1));
        }
    }
    Ok((piece, keys.len()))
}
