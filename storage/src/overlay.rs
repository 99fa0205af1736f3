//! The pending write batch of one apply group, read through: reads see the group's own earlier
//! writes first, then the apply cache, then RocksDB. It also accumulates per-slot statistics
//! and tells the cache what became durable once the batch is written.

use std::collections::HashMap;

use rocksdb::WriteBatch;
use unikv_types::Slot;

use crate::apply_cache::ApplyCache;
use crate::db::{dedup_key, kv_key, slot_bounds, Db, CF_DEDUP, CF_KV, CF_STATS};
use crate::error::{decode, encode, Result};
use crate::records::{DedupRecord, SlotStats};

/// Reads through the pending batch to the cache and the database, and accumulates per-slot
/// statistics.
pub(crate) struct Overlay<'a> {
    pub(crate) db: &'a Db,
    cache: &'a mut ApplyCache,
    kv: HashMap<Vec<u8>, Option<Vec<u8>>>,
    dedup: HashMap<Vec<u8>, DedupRecord>,
    /// Slots whose data and dedup table this batch deleted or replaced.
    replaced: Vec<Slot>,
    /// Statistics this batch writes, for the cache once the batch is durable in RocksDB.
    new_stats: Vec<(Slot, SlotStats)>,
    /// Per-slot (keys, bytes) changes of this batch; `Reset` replaces the stored value.
    stats: HashMap<Slot, StatsChange>,
    pub(crate) batch: WriteBatch,
}

#[derive(Debug, Clone, Copy)]
enum StatsChange {
    Delta(i64, i64),
    Reset(SlotStats),
}

impl<'a> Overlay<'a> {
    pub(crate) fn new(db: &'a Db, cache: &'a mut ApplyCache) -> Self {
        Overlay {
            db,
            cache,
            kv: HashMap::new(),
            dedup: HashMap::new(),
            replaced: Vec::new(),
            new_stats: Vec::new(),
            stats: HashMap::new(),
            batch: WriteBatch::default(),
        }
    }

    pub(crate) fn count(&mut self, slot: Slot, keys: i64, bytes: i64) {
        let e = self.stats.entry(slot).or_insert(StatsChange::Delta(0, 0));
        match e {
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

    /// Deletes everything stored for `slot` (data, dedup table, statistics).
    pub(crate) fn delete_slot(&mut self, slot: Slot) {
        let (lo, hi) = slot_bounds(slot);
        self.batch.delete_range_cf(self.db.cf(CF_KV), &lo, &hi);
        self.batch.delete_range_cf(self.db.cf(CF_DEDUP), &lo, &hi);
        self.kv.retain(|k, _| !k.starts_with(&lo));
        self.dedup.retain(|k, _| !k.starts_with(&lo));
        self.replaced.push(slot);
        self.stats
            .insert(slot, StatsChange::Reset(SlotStats::default()));
    }

    /// Writes a slot's data and dedup table as received from another shard.
    pub(crate) fn install_slot(
        &mut self,
        slot: Slot,
        kv: &[(String, String)],
        dedup: &[(String, DedupRecord)],
    ) -> Result<()> {
        self.delete_slot(slot);
        let mut st = SlotStats::default();
        for (k, v) in kv {
            let key = kv_key(slot, k.as_bytes());
            self.batch.put_cf(self.db.cf(CF_KV), &key, v.as_bytes());
            self.kv.insert(key, Some(v.as_bytes().to_vec()));
            st.keys += 1;
            st.bytes += (k.len() + v.len()) as u64;
        }
        for (client, rec) in dedup {
            self.put_dedup(dedup_key(slot, client), rec.clone())?;
        }
        self.stats.insert(slot, StatsChange::Reset(st));
        Ok(())
    }

    /// Adds the statistics changes to the batch.
    pub(crate) fn flush_stats(&mut self) -> Result<()> {
        let cf = self.db.cf(CF_STATS);
        for (slot, change) in std::mem::take(&mut self.stats) {
            let key = slot.to_be_bytes();
            let next = match change {
                StatsChange::Reset(s) => s,
                StatsChange::Delta(k, b) => {
                    let cur = self.cache.stats(self.db, slot)?;
                    SlotStats {
                        keys: cur.keys.saturating_add_signed(k),
                        bytes: cur.bytes.saturating_add_signed(b),
                    }
                }
            };
            if next == SlotStats::default() {
                self.batch.delete_cf(cf, key);
            } else {
                self.batch.put_cf(cf, key, next.encode());
            }
            self.new_stats.push((slot, next));
        }
        Ok(())
    }

    /// Writes the batch, then tells the cache what is now in RocksDB. `before_write` is told
    /// first which slots the batch deletes or replaces (so readers can stop trusting them).
    pub(crate) fn commit(self, before_write: &mut dyn FnMut(&[Slot])) -> Result<()> {
        let Overlay {
            db,
            cache,
            dedup,
            replaced,
            new_stats,
            batch,
            ..
        } = self;
        before_write(&replaced);
        db.write(batch)?;
        for slot in replaced {
            cache.forget_slot(slot);
        }
        for (slot, st) in new_stats {
            cache.set_stats(slot, st);
        }
        for (k, rec) in dedup {
            cache.put_dedup(k, rec);
        }
        Ok(())
    }

    pub(crate) fn get_kv(&self, k: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.kv.get(k) {
            return Ok(v.clone());
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
            return Ok(Some(v.clone()));
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
        self.dedup.insert(k, rec);
        Ok(())
    }
}
