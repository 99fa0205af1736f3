//! The pending write batch of one apply group, read through: reads see the group's own earlier
//! writes first, then the apply cache, then RocksDB (never for a slot the group deleted: its
//! range delete is still in the batch). It also accumulates per-slot statistics and tells the
//! cache what became durable once the batch is written.

use std::collections::{BTreeMap, HashMap, HashSet};

use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};
use unikv_types::{Keyspace, Slot};

use crate::apply_cache::ApplyCache;
use crate::copy::CopyTracker;
use crate::db::{
    age_key, dedup_key, horizon_key, keyspace_bounds, keyspace_stats_key, kv_key_in, range_key,
    slot_bounds, split_key, split_keyspace, Db, CF_DEDUP, CF_KV, CF_STATS, KEYSPACE_MARK,
};
use crate::error::{decode, encode, Result};
use crate::keyspace_stats::keyspace_stats;
use crate::records::{DedupRecord, SlotStats};

/// Reads through the pending batch to the cache and the database, and accumulates per-slot
/// statistics.
pub(crate) struct Overlay<'a> {
    pub(crate) db: &'a Db,
    cache: &'a mut ApplyCache,
    kv: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Dedup records written (`Some`) or deleted (`None`) by this batch.
    dedup: HashMap<Vec<u8>, Option<DedupRecord>>,
    /// Entries of the dedup expiry index added (`true`) or deleted (`false`) by this batch.
    age: BTreeMap<Vec<u8>, bool>,
    /// Dedup horizons written by this batch.
    horizons: HashMap<Slot, u64>,
    /// Slots whose stored data this batch deleted: nothing of theirs is read from below.
    cleared: HashSet<Slot>,
    /// `kv` key ranges this batch deleted (chunks' data): nothing in them is read from below.
    cleared_ranges: Vec<(Vec<u8>, Vec<u8>)>,
    /// The expiry index floor for the cache once the batch is durable.
    age_floor: Option<u64>,
    /// Slots whose data and dedup table this batch deleted or replaced.
    replaced: Vec<Slot>,
    /// Statistics this batch writes, for the cache once the batch is durable in RocksDB.
    new_stats: Vec<(Slot, SlotStats)>,
    /// Per-slot (keys, bytes) changes of this batch; `Reset` replaces the stored value.
    stats: HashMap<Slot, StatsChange>,
    /// Per hash collection (keys, bytes) changes of this batch, beside its slots'.
    keyspace_stats: HashMap<Keyspace, StatsChange>,
    pub(crate) batch: WriteBatch,
}

#[derive(Debug, Clone, Copy)]
enum StatsChange {
    Delta(i64, i64),
    Reset(SlotStats),
}

impl StatsChange {
    fn add(&mut self, keys: i64, bytes: i64) {
        match self {
            StatsChange::Delta(k, b) => {
                *k += keys;
                *b += bytes;
            }
            StatsChange::Reset(s) => {
                s.keys = s.keys.saturating_add_signed(keys);
                s.bytes = s.bytes.saturating_add_signed(bytes);
            }
        }
    }

    /// The value after this change to `cur`.
    fn on(self, cur: SlotStats) -> SlotStats {
        match self {
            StatsChange::Reset(s) => s,
            StatsChange::Delta(k, b) => SlotStats {
                keys: cur.keys.saturating_add_signed(k),
                bytes: cur.bytes.saturating_add_signed(b),
            },
        }
    }
}

impl<'a> Overlay<'a> {
    pub(crate) fn new(db: &'a Db, cache: &'a mut ApplyCache) -> Self {
        Overlay {
            db,
            cache,
            kv: HashMap::new(),
            dedup: HashMap::new(),
            age: BTreeMap::new(),
            horizons: HashMap::new(),
            cleared: HashSet::new(),
            cleared_ranges: Vec::new(),
            age_floor: None,
            replaced: Vec::new(),
            new_stats: Vec::new(),
            stats: HashMap::new(),
            keyspace_stats: HashMap::new(),
            batch: WriteBatch::default(),
        }
    }

    pub(crate) fn count(&mut self, slot: Slot, keys: i64, bytes: i64) {
        self.stats
            .entry(slot)
            .or_insert(StatsChange::Delta(0, 0))
            .add(keys, bytes);
    }

    /// Counts a change of keys of keyspace `ks` in `slot`: the slot's statistics, and the
    /// collection's own totals when `slot` is a hash slot of a collection other than
    /// `default` (units and chunks have statistics of their own).
    pub(crate) fn count_in(&mut self, slot: Slot, ks: Keyspace, keys: i64, bytes: i64) {
        self.count(slot, keys, bytes);
        if slot < unikv_types::SLOT_COUNT && !ks.is_default() {
            self.keyspace_stats
                .entry(ks)
                .or_insert(StatsChange::Delta(0, 0))
                .add(keys, bytes);
        }
    }

    /// Forgets the totals of hash collection `ks` here (its data was dropped).
    pub(crate) fn reset_keyspace_stats(&mut self, ks: Keyspace) {
        self.keyspace_stats
            .insert(ks, StatsChange::Reset(SlotStats::default()));
    }

    /// Deletes everything stored for `slot` (data, dedup table and horizon, statistics). Its
    /// entries in the dedup expiry index stay: expiry drops an entry whose record is gone.
    pub(crate) fn delete_slot(&mut self, slot: Slot) -> Result<()> {
        self.uncount_collections(slot)?;
        let (lo, hi) = slot_bounds(slot);
        self.batch.delete_range_cf(self.db.cf(CF_KV), &lo, &hi);
        self.batch.delete_range_cf(self.db.cf(CF_DEDUP), &lo, &hi);
        self.kv.retain(|k, _| !k.starts_with(&lo));
        self.dedup.retain(|k, _| !k.starts_with(&lo));
        self.horizons.remove(&slot);
        self.cleared.insert(slot);
        self.replaced.push(slot);
        self.stats
            .insert(slot, StatsChange::Reset(SlotStats::default()));
        Ok(())
    }

    /// Takes the keys of hash collections stored in hash slot `slot` (as this batch leaves
    /// them) out of their collections' totals, before the slot is deleted.
    fn uncount_collections(&mut self, slot: Slot) -> Result<()> {
        if slot >= unikv_types::SLOT_COUNT {
            return Ok(());
        }
        let lo = [&slot.to_be_bytes()[..], &[KEYSPACE_MARK]].concat();
        let hi = slot_bounds(slot).1;
        let pairs = if self.cleared.contains(&slot) {
            // Deleted earlier in this batch: only its own later writes are left.
            self.kv
                .iter()
                .filter(|(k, _)| k.as_slice() >= lo.as_slice() && k.as_slice() < hi.as_slice())
                .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
                .collect()
        } else {
            self.pairs_in(&lo, &hi)?
        };
        for (k, v) in pairs {
            if let Some((ks, key)) = split_key(&k).and_then(|(_, rest)| split_keyspace(rest)) {
                let e = self
                    .keyspace_stats
                    .entry(ks)
                    .or_insert(StatsChange::Delta(0, 0));
                e.add(-1, -((key.len() + v.len()) as i64));
            }
        }
        Ok(())
    }

    /// Deletes every key of keyspace `ks` (never `default`) in every slot, with its
    /// statistics. Only slots that hold some of it get a range delete (a range tombstone in
    /// each of 16384 slots would slow every read until compacted away).
    pub(crate) fn drop_keyspace(&mut self, ks: Keyspace) -> Result<()> {
        let cf = self.db.cf(CF_KV);
        let in_ks = |k: &[u8]| {
            split_key(k).and_then(|(slot, rest)| {
                split_keyspace(rest).filter(|(s, _)| *s == ks).map(|_| slot)
            })
        };
        // This group's own writes of the keyspace: they shadow what RocksDB holds (the range
        // deletes below, later in the batch, remove them too).
        let mut pending = HashMap::new();
        self.kv.retain(|k, v| {
            if in_ks(k).is_none() {
                return true;
            }
            pending.insert(k.clone(), v.take());
            false
        });
        // Per slot: (keys, bytes) of the keyspace as this group leaves it.
        let mut slots: BTreeMap<Slot, (i64, i64)> = BTreeMap::new();
        let mut add = |slot: Slot, k: &[u8], v: &[u8]| {
            let e = slots.entry(slot).or_default();
            e.0 += 1;
            e.1 += (k.len() - 7 + v.len()) as i64;
        };
        for slot in 0..unikv_types::SLOT_COUNT {
            if self.cleared.contains(&slot) {
                // Already deleted by this batch: only its own later writes count.
                continue;
            }
            let (lo, hi) = keyspace_bounds(slot, ks);
            let mut ro = ReadOptions::default();
            ro.set_iterate_upper_bound(hi.clone());
            let iter =
                self.db
                    .raw()
                    .iterator_cf_opt(cf, ro, IteratorMode::From(&lo, Direction::Forward));
            for item in iter {
                let (k, v) = item?;
                match pending.remove(&k[..]) {
                    Some(Some(newer)) => add(slot, &k, &newer),
                    Some(None) => {}
                    None => add(slot, &k, &v),
                }
            }
        }
        for (k, v) in pending {
            if let (Some(slot), Some(v)) = (in_ks(&k), v) {
                add(slot, &k, &v);
            }
        }
        for (slot, (keys, bytes)) in slots {
            let (lo, hi) = keyspace_bounds(slot, ks);
            self.batch.delete_range_cf(cf, &lo, &hi);
            self.count_in(slot, ks, -keys, -bytes);
        }
        self.reset_keyspace_stats(ks);
        Ok(())
    }

    /// Writes a slot's data, dedup table and dedup horizon as received from another shard.
    pub(crate) fn install_slot(
        &mut self,
        slot: Slot,
        kv: &[(String, String)],
        collections_kv: &[(Keyspace, String, String)],
        dedup: &[(String, DedupRecord)],
        dedup_horizon_ms: u64,
    ) -> Result<()> {
        self.delete_slot(slot)?;
        let mut st = SlotStats::default();
        let pairs = kv
            .iter()
            .map(|(k, v)| (Keyspace::DEFAULT, k, v))
            .chain(collections_kv.iter().map(|(ks, k, v)| (*ks, k, v)));
        for (ks, k, v) in pairs {
            let key = kv_key_in(slot, ks, k.as_bytes());
            self.batch.put_cf(self.db.cf(CF_KV), &key, v.as_bytes());
            self.kv.insert(key, Some(v.as_bytes().to_vec()));
            st.keys += 1;
            st.bytes += (k.len() + v.len()) as u64;
            if !ks.is_default() && slot < unikv_types::SLOT_COUNT {
                self.keyspace_stats
                    .entry(ks)
                    .or_insert(StatsChange::Delta(0, 0))
                    .add(1, (k.len() + v.len()) as i64);
            }
        }
        self.install_dedup(slot, dedup, dedup_horizon_ms)?;
        self.stats.insert(slot, StatsChange::Reset(st));
        Ok(())
    }

    /// Writes pairs and deletes keys of a copy arriving for `slot` (not served here), keeping
    /// its statistics exact. Without `overwrite` the pairs are known not to be stored yet
    /// (pieces of the first scan), so nothing is read back.
    pub(crate) fn stage_pairs(
        &mut self,
        slot: Slot,
        pairs: &[(Keyspace, &str, &str)],
        deleted: &[(Keyspace, &str)],
        overwrite: bool,
    ) -> Result<()> {
        for (ks, k, v) in pairs {
            let key = kv_key_in(slot, *ks, k.as_bytes());
            let old = if overwrite { self.get_kv(&key)? } else { None };
            let (keys, bytes) = match old {
                Some(o) => (0, v.len() as i64 - o.len() as i64),
                None => (1, (k.len() + v.len()) as i64),
            };
            self.put_kv(key, v.as_bytes().to_vec());
            self.count_in(slot, *ks, keys, bytes);
        }
        for (ks, k) in deleted {
            let key = kv_key_in(slot, *ks, k.as_bytes());
            if let Some(o) = self.get_kv(&key)? {
                self.delete_kv(key);
                self.count_in(slot, *ks, -1, -((k.len() + o.len()) as i64));
            }
        }
        Ok(())
    }

    /// Writes dedup records and a horizon received (or copied) for `slot`.
    pub(crate) fn install_dedup(
        &mut self,
        slot: Slot,
        dedup: &[(String, DedupRecord)],
        dedup_horizon_ms: u64,
    ) -> Result<()> {
        for (client, rec) in dedup {
            if client.is_empty() {
                continue;
            }
            self.put_age(age_key(rec.at_ms, slot, client.as_bytes()));
            self.put_dedup(dedup_key(slot, client), rec.clone())?;
            // Received records keep their age, which may be older than anything indexed here.
            let floor = self.age_floor.unwrap_or(self.cache.age_floor());
            self.age_floor = Some(floor.min(rec.at_ms));
        }
        if dedup_horizon_ms > 0 {
            self.set_horizon(slot, dedup_horizon_ms);
        }
        Ok(())
    }

    /// Writes a chunk's pairs (of range keyspace `ks`) received from another shard, its
    /// dedup table under `unit`, and the unit's statistics.
    pub(crate) fn install_chunk(
        &mut self,
        unit: Slot,
        ks: Keyspace,
        kv: &[(String, String)],
        dedup: &[(String, DedupRecord)],
        dedup_horizon_ms: u64,
    ) -> Result<()> {
        self.delete_slot(unit)?;
        let mut st = SlotStats::default();
        for (k, v) in kv {
            self.put_kv(range_key(ks, k.as_bytes()), v.as_bytes().to_vec());
            st.keys += 1;
            st.bytes += (k.len() + v.len()) as u64;
        }
        self.install_dedup(unit, dedup, dedup_horizon_ms)?;
        self.stats.insert(unit, StatsChange::Reset(st));
        Ok(())
    }

    /// The `kv` pairs in `[lo, hi)` as this batch leaves them, in key order.
    pub(crate) fn pairs_in(&self, lo: &[u8], hi: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(hi.to_vec());
        let mut out = BTreeMap::new();
        let it = self.db.raw().iterator_cf_opt(
            self.db.cf(CF_KV),
            ro,
            IteratorMode::From(lo, Direction::Forward),
        );
        for item in it {
            let (k, v) = item?;
            if !self.in_cleared_range(&k) {
                out.insert(k.to_vec(), v.to_vec());
            }
        }
        for (k, v) in &self.kv {
            if k.as_slice() >= lo && k.as_slice() < hi {
                match v {
                    Some(v) => out.insert(k.clone(), v.clone()),
                    None => out.remove(k),
                };
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Deletes the `kv` pairs in `[lo, hi)` (a chunk's data).
    pub(crate) fn delete_kv_range(&mut self, lo: &[u8], hi: &[u8]) {
        self.batch.delete_range_cf(self.db.cf(CF_KV), lo, hi);
        self.kv
            .retain(|k, _| k.as_slice() < lo || k.as_slice() >= hi);
        self.cleared_ranges.push((lo.to_vec(), hi.to_vec()));
    }

    /// Whether `k` (a `kv` key) is in a range this batch deleted.
    fn in_cleared_range(&self, k: &[u8]) -> bool {
        self.cleared_ranges
            .iter()
            .any(|(lo, hi)| k >= lo.as_slice() && k < hi.as_slice())
    }

    /// Writes a piece of a chunk's copy (pairs and deleted user keys of range keyspace `ks`)
    /// staged under `unit`, counting them in the unit's statistics; `overwrite`: the pairs may
    /// be there already (written keys sent again).
    pub(crate) fn stage_range_pairs(
        &mut self,
        unit: Slot,
        ks: Keyspace,
        pairs: &[(String, String)],
        deleted: &[String],
        overwrite: bool,
    ) -> Result<()> {
        for (k, v) in pairs {
            let key = range_key(ks, k.as_bytes());
            let old = if overwrite { self.get_kv(&key)? } else { None };
            let (keys, bytes) = match old {
                Some(o) => (0, v.len() as i64 - o.len() as i64),
                None => (1, (k.len() + v.len()) as i64),
            };
            self.put_kv(key, v.as_bytes().to_vec());
            self.count(unit, keys, bytes);
        }
        for k in deleted {
            let key = range_key(ks, k.as_bytes());
            if let Some(o) = self.get_kv(&key)? {
                self.delete_kv(key);
                self.count(unit, -1, -((k.len() + o.len()) as i64));
            }
        }
        Ok(())
    }

    /// The dedup records and horizon of `slot` (a unit) as this batch leaves them.
    pub(crate) fn dedup_of(&self, slot: Slot) -> Result<(Vec<(String, DedupRecord)>, u64)> {
        let (lo, hi) = slot_bounds(slot);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(hi.clone());
        let mut recs = BTreeMap::new();
        let it = self.db.raw().iterator_cf_opt(
            self.db.cf(CF_DEDUP),
            ro,
            IteratorMode::From(&lo, Direction::Forward),
        );
        for item in it {
            let (k, v) = item?;
            if k.len() > 2 && !self.cleared.contains(&slot) {
                recs.insert(k.to_vec(), decode::<DedupRecord>("dedup record", &v)?);
            }
        }
        for (k, v) in &self.dedup {
            if k.starts_with(&lo) && k.len() > 2 {
                match v {
                    Some(r) => recs.insert(k.clone(), r.clone()),
                    None => recs.remove(k),
                };
            }
        }
        let recs = recs
            .into_iter()
            .map(|(k, r)| (String::from_utf8_lossy(&k[2..]).into_owned(), r))
            .collect();
        Ok((recs, self.horizon(slot)?))
    }

    /// The statistics of `slot` (a unit) as this batch leaves them.
    pub(crate) fn stats_of(&mut self, slot: Slot) -> Result<SlotStats> {
        Ok(match self.stats.get(&slot).copied() {
            Some(StatsChange::Reset(s)) => s,
            Some(delta) => delta.on(self.cache.stats(self.db, slot)?),
            None => self.cache.stats(self.db, slot)?,
        })
    }

    /// Adds the statistics changes to the batch.
    pub(crate) fn flush_stats(&mut self) -> Result<()> {
        let cf = self.db.cf(CF_STATS);
        for (slot, change) in std::mem::take(&mut self.stats) {
            let key = slot.to_be_bytes();
            let next = match change {
                StatsChange::Reset(s) => s,
                delta => delta.on(self.cache.stats(self.db, slot)?),
            };
            if next == SlotStats::default() {
                self.batch.delete_cf(cf, key);
            } else {
                self.batch.put_cf(cf, key, next.encode());
            }
            self.new_stats.push((slot, next));
        }
        for (ks, change) in std::mem::take(&mut self.keyspace_stats) {
            let key = keyspace_stats_key(ks);
            let next = change.on(keyspace_stats(self.db, ks)?);
            if next == SlotStats::default() {
                self.batch.delete_cf(cf, key);
            } else {
                self.batch.put_cf(cf, key, next.encode());
            }
        }
        Ok(())
    }

    /// Writes the batch, then tells the cache what is now in RocksDB. `before_write` is told
    /// first which slots the batch deletes or replaces (so readers can stop trusting them).
    /// `copies` then records the `kv` keys written in slots being copied elsewhere.
    pub(crate) fn commit(
        self,
        before_write: &mut dyn FnMut(&[Slot]),
        copies: &CopyTracker,
    ) -> Result<()> {
        let Overlay {
            db,
            cache,
            kv,
            dedup,
            replaced,
            new_stats,
            batch,
            age_floor,
            ..
        } = self;
        before_write(&replaced);
        db.write(batch)?;
        db.stats_view().note(&new_stats);
        copies.record(kv.keys());
        for slot in replaced {
            cache.forget_slot(slot);
        }
        for (slot, st) in new_stats {
            cache.set_stats(slot, st);
        }
        for (k, rec) in dedup {
            cache.set_dedup(k, rec);
        }
        if let Some(f) = age_floor {
            cache.set_age_floor(f);
        }
        Ok(())
    }

    /// Whether `k` (a `kv` or `dedup` key) belongs to a slot this batch deleted.
    fn in_cleared_slot(&self, k: &[u8]) -> bool {
        !self.cleared.is_empty() && split_key(k).is_some_and(|(s, _)| self.cleared.contains(&s))
    }

    pub(crate) fn get_kv(&self, k: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.kv.get(k) {
            return Ok(v.clone());
        }
        if self.in_cleared_slot(k) || self.in_cleared_range(k) {
            return Ok(None);
        }
        Ok(self.db.raw().get_cf(self.db.cf(CF_KV), k)?)
    }
    pub(crate) fn put_kv(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.batch.put_cf(self.db.cf(CF_KV), &k, &v);
        self.kv.insert(k, Some(v));
    }
    pub(crate) fn delete_kv(&mut self, k: Vec<u8>) {
        self.batch.delete_cf(self.db.cf(CF_KV), &k);
        self.kv.insert(k, None);
    }
    pub(crate) fn get_dedup(&self, k: &[u8]) -> Result<Option<DedupRecord>> {
        if let Some(v) = self.dedup.get(k) {
            return Ok(v.clone());
        }
        if self.in_cleared_slot(k) {
            return Ok(None);
        }
        if let Some(v) = self.cache.dedup(k) {
            return Ok(Some(v.clone()));
        }
        match self.db.raw().get_cf(self.db.cf(CF_DEDUP), k)? {
            Some(b) => Ok(Some(decode("dedup record", &b)?)),
            None => Ok(None),
        }
    }
    pub(crate) fn put_dedup(&mut self, k: Vec<u8>, rec: DedupRecord) -> Result<()> {
        self.batch
            .put_cf(self.db.cf(CF_DEDUP), &k, encode("dedup record", &rec)?);
        self.dedup.insert(k, Some(rec));
        Ok(())
    }
    pub(crate) fn delete_dedup(&mut self, k: Vec<u8>) {
        self.batch.delete_cf(self.db.cf(CF_DEDUP), &k);
        self.dedup.insert(k, None);
    }

    /// The slot's dedup horizon (0: it never forgot a record).
    pub(crate) fn horizon(&self, slot: Slot) -> Result<u64> {
        if let Some(h) = self.horizons.get(&slot) {
            return Ok(*h);
        }
        if self.cleared.contains(&slot) {
            return Ok(0);
        }
        let v = self
            .db
            .raw()
            .get_cf(self.db.cf(CF_DEDUP), horizon_key(slot))?;
        Ok(v.and_then(|b| <[u8; 8]>::try_from(&b[..]).ok())
            .map_or(0, u64::from_be_bytes))
    }
    pub(crate) fn set_horizon(&mut self, slot: Slot, ms: u64) {
        self.batch
            .put_cf(self.db.cf(CF_DEDUP), horizon_key(slot), ms.to_be_bytes());
        self.horizons.insert(slot, ms);
    }

    pub(crate) fn put_age(&mut self, k: Vec<u8>) {
        self.batch.put_cf(self.db.cf(CF_DEDUP), &k, []);
        self.age.insert(k, true);
    }
    pub(crate) fn delete_age(&mut self, k: Vec<u8>) {
        self.batch.delete_cf(self.db.cf(CF_DEDUP), &k);
        self.age.insert(k, false);
    }

    /// Entries of the dedup expiry index in `[from, to)`, as this batch leaves them.
    pub(crate) fn age_keys(&self, from: Vec<u8>, to: Vec<u8>) -> Result<Vec<Vec<u8>>> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(to.clone());
        let mut keys = std::collections::BTreeSet::new();
        let it = self.db.raw().iterator_cf_opt(
            self.db.cf(CF_DEDUP),
            ro,
            IteratorMode::From(&from, Direction::Forward),
        );
        for item in it {
            keys.insert(item?.0.to_vec());
        }
        for (k, present) in self.age.range(from..to) {
            if *present {
                keys.insert(k.clone());
            } else {
                keys.remove(k);
            }
        }
        Ok(keys.into_iter().collect())
    }

    /// The cache's expiry index floor, as this batch leaves it.
    pub(crate) fn age_floor(&self) -> u64 {
        self.age_floor.unwrap_or(self.cache.age_floor())
    }
    pub(crate) fn set_age_floor(&mut self, ms: u64) {
        self.age_floor = Some(ms);
    }
}
