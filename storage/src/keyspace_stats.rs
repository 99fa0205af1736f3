//! The totals (keys, bytes) each hash collection other than `default` has on this shard, in
//! the `stats` family under `k ++ keyspace`: read by the apply batches that keep them
//! (`overlay`), by `usage`, and counted once from the keys when a data dir from before they
//! existed is opened (`meta`).

use rocksdb::{Direction, IteratorMode, ReadOptions};
use unikv_types::{Keyspace, SLOT_COUNT};

use crate::db::{
    keyspace_stats_key, slot_bounds, split_keyspace, Db, CF_KV, CF_STATS, KEYSPACE_MARK,
};
use crate::error::Result;
use crate::records::SlotStats;

/// The stored totals of hash collection `ks` on this shard.
pub fn keyspace_stats(db: &Db, ks: Keyspace) -> Result<SlotStats> {
    Ok(db
        .raw()
        .get_cf(db.cf(CF_STATS), keyspace_stats_key(ks))?
        .map(|v| SlotStats::decode(&v))
        .unwrap_or_default())
}

/// Every stored total of a hash collection here.
pub(crate) fn all_keyspace_stats(db: &Db) -> Result<Vec<(Keyspace, SlotStats)>> {
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
