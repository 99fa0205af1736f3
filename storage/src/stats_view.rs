//! Every slot's (and unit's) statistics in memory, for readers outside apply: the gossip
//! publisher's byte totals (every second), the balancer's plan and `/stats`.
//!
//! Read from RocksDB, those statistics cost a walk over every version the memtable still holds
//! of each slot's statistics record — one per write since the last flush. Profiled during a
//! 3 → 4 rebalance after a 200 k-key load, that walk was the top of the nodes' CPU (7.5 %
//! `MemTableIterator::NextAndGetResult` alone), run on the node's one runtime thread, where
//! every hand-off step waited behind it. Apply keeps this view current (`Overlay::commit`
//! notes what each batch wrote); it is filled from RocksDB on first use and dropped when a
//! snapshot replaces the state.

use std::sync::Mutex;

use unikv_types::Slot;

use crate::error::Result;
use crate::records::SlotStats;

#[derive(Debug, Default)]
pub struct StatsView {
    inner: Mutex<View>,
}

#[derive(Debug, Default)]
struct View {
    /// Bumped by every change, so a load that overlapped one is not kept.
    generation: u64,
    stats: Option<Vec<SlotStats>>,
}

impl StatsView {
    fn lock(&self) -> std::sync::MutexGuard<'_, View> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Statistics just written to RocksDB.
    pub fn note(&self, changed: &[(Slot, SlotStats)]) {
        let mut v = self.lock();
        v.generation += 1;
        if let Some(all) = v.stats.as_mut() {
            for (slot, st) in changed {
                if let Some(s) = all.get_mut(usize::from(*slot)) {
                    *s = *st;
                }
            }
        }
    }

    /// The stored statistics were replaced wholesale (a snapshot was installed).
    pub fn forget(&self) {
        let mut v = self.lock();
        v.generation += 1;
        v.stats = None;
    }

    /// Runs `f` on every slot's statistics (indexed by slot), loading them with `load` first
    /// if needed.
    pub fn with<T>(
        &self,
        load: impl FnOnce() -> Result<Vec<SlotStats>>,
        f: impl FnOnce(&[SlotStats]) -> T,
    ) -> Result<T> {
        let generation = {
            let v = self.lock();
            if let Some(all) = &v.stats {
                return Ok(f(all));
            }
            v.generation
        };
        let all = load()?;
        let out = f(&all);
        let mut v = self.lock();
        if v.generation == generation {
            v.stats = Some(all);
        }
        Ok(out)
    }
}
