//! How many keys and bytes a collection (or one shard key of it) holds on this shard, for
//! `GET /collections/{name}`. Hash slots mix every hash collection, so each hash collection
//! other than `default` has totals of its own in the `stats` family (kept by the same batches
//! that keep the slots' statistics: writes, slot moves, drops); chunks and shard keys are
//! units with statistics of their own; `default` is what the hash slots hold beyond every
//! other collection.

use unikv_types::catalog::Placement;
use unikv_types::{Keyspace, SLOT_COUNT};

use crate::error::Result;
use crate::keyspace_stats::{all_keyspace_stats, keyspace_stats};
use crate::records::SlotStats;
use crate::state_machine::Store;

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
                    if c.keyspace == ks && !c.is_staging() {
                        let st = of(c.unit);
                        total.keys += st.keys;
                        total.bytes += st.bytes;
                    }
                }
            }
            Placement::Shards(_) if d.unit_moves.incoming.contains_key(&ks) => {}
            Placement::Shards(_) => {
                if let Some(unit) = d.units.get(&ks) {
                    total = of(*unit);
                }
            }
        }
        Ok(total)
    }
}
