//! How many keys and bytes a collection (or one shard key of it) holds on this shard, for
//! `GET /collections/{name}`. Hash slots mix every hash collection, so each hash collection
//! other than `default` has totals of its own in the `stats` family (kept by the same batches
//! that keep the slots' statistics: writes, slot moves, drops); chunks and shard keys are
//! units with statistics of their own; `default` is what the hash slots hold beyond every
//! other collection.

use rocksdb::{Direction, IteratorMode, ReadOptions};
use unikv_types::catalog::Placement;
use unikv_types::{Keyspace, SLOT_COUNT};

use crate::chunk_map::ChunkState;
use crate::db::{
    keyspace_stats_key, slot_bounds, split_keyspace, Db, CF_KV, CF_STATS, KEYSPACE_MARK,
};
use crate::error::Result;
use crate::records::SlotStats;
use crate::state_machine::Store;

/// The stored totals of hash collection `ks` on this shard.
pub fn keyspace_stats(db: &Db, ks: Keyspace) -> Result<SlotStats> {
    Ok(db
        .raw()
        .get_cf(db.cf(CF_STATS), keyspace_stats_key(ks))?
        .map(|v| SlotStats::decode(&v))
        .unwrap_or_default())
}

/// Every stored total of a hash collection here.
fn all_keyspace_stats(db: &Db) -> Result<Vec<(Keyspace, SlotStats)>> {
    let mut out = Vec::new();
    for item in db.raw().iterator_cf(db.cf(CF_STATS), IteratorMode::Start) {
        let (k, v) = item?;
        if k.len() == 5 && k[0] == b'k' {
            let id = u32::from_be_bytes([k[1], k[2], k[3], k[4]]);
            out.push((Keyspace(id), SlotStats::decode(&v)));
        }
    }
    Ok(out)
}

/// Counts every hash collection's keys and bytes from the keys themselves (a data dir from
/// before the totals were kept).
pub(crate) fn count_keyspaces(db: &Db) -> Result<Vec<(Keyspace, SlotStats)>> {
    let mut out: std::collections::BTreeMap<Keyspace, SlotStats> = Default::default();
    for slot in 0..SLOT_COUNT {
        let lo = [&slot.to_be_bytes()[..], &[KEYSPACE_MARK]].concat();
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(slot_bounds(slot).1);
        let it = db.raw().iterator_cf_opt(
            db.cf(CF_KV),
            ro,
            IteratorMode::From(&lo, Direction::Forward),
        );
        for item in it {
            let (k, v) = item?;
            if let Some((ks, key)) = split_keyspace(&k[2..]) {
                let st = out.entry(ks).or_default();
                st.keys += 1;
                st.bytes += (key.len() + v.len()) as u64;
            }
        }
    }
    Ok(out.into_iter().collect())
}

impl Store {
    /// The totals of every hash collection (other than `default`) held here, by keyspace.
    pub fn hash_collection_totals(&self) -> Result<Vec<(Keyspace, SlotStats)>> {
        all_keyspace_stats(self.db())
    }

    /// What keyspace `ks`, placed as `placement`, holds here (data still arriving in a move
    /// is counted by its source only when it is a chunk or a shard key).
    pub fn usage(&self, ks: Keyspace, placement: &Placement) -> Result<SlotStats> {
        let d = self.descriptor();
        let stats: std::collections::HashMap<u16, SlotStats> =
            self.slot_stats()?.into_iter().collect();
        let of = |unit: u16| stats.get(&unit).copied().unwrap_or_default();
        let mut total = SlotStats::default();
        match placement {
            Placement::Slots if ks.is_default() => {
                for (slot, st) in &stats {
                    if *slot < SLOT_COUNT {
                        total.keys += st.keys;
                        total.bytes += st.bytes;
                    }
                }
                for (_, st) in all_keyspace_stats(self.db())? {
                    total.keys = total.keys.saturating_sub(st.keys);
                    total.bytes = total.bytes.saturating_sub(st.bytes);
                }
            }
            Placement::Slots => total = keyspace_stats(self.db(), ks)?,
            Placement::Range => {
                for c in d.chunks.owned.values() {
                    if c.keyspace == ks && !matches!(c.state, ChunkState::Incoming { .. }) {
                        let st = of(c.unit);
                        total.keys += st.keys;
                        total.bytes += st.bytes;
                    }
                }
            }
            Placement::Shards(_) => {
                if let Some(unit) = d.units.get(&ks) {
                    total = of(*unit);
                }
            }
        }
        Ok(total)
    }
}
