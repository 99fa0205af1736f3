//! What handing off a shard key's unit reads on the source: the unit's data and dedup table,
//! from one published descriptor (`Store::consistent`).

use unikv_types::Keyspace;

use crate::error::Result;
use crate::moves::{export_slot, SlotExport};
use crate::state_machine::Store;

impl Store {
    /// The unit of shard key `ks` here and everything stored in it, for handing it off.
    pub fn export_unit(&self, ks: Keyspace) -> Result<Option<SlotExport>> {
        self.consistent(
            |d| d.units.get(&ks).copied(),
            |unit, db| unit.map(|u| export_slot(db, u)).transpose(),
        )
    }
}
