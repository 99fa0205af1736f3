//! The copies this leader is sending to other shards (slot or chunk → copy id) while it sends
//! them. A target asks the source whether a copy it staged is still wanted (`MOVE_STATUS`,
//! `CHUNK_STATUS`); the answer comes from here and from the committed state, so a copy no
//! leader sends any more is dropped at the target.

use std::collections::HashMap;
use std::sync::Mutex;

use unikv_types::{ChunkId, Slot};

/// What a copy is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CopyOf {
    Slot(Slot),
    Chunk(ChunkId),
}

#[derive(Debug, Default)]
pub struct Copies {
    running: Mutex<HashMap<CopyOf, u64>>,
}

impl Copies {
    /// Copy `copy` of `of` is being sent from now on (replacing an earlier one).
    pub fn started(&self, of: CopyOf, copy: u64) {
        self.lock().insert(of, copy);
    }

    /// Copy `copy` of `of` ended (a later copy of the same unit stays).
    pub fn ended(&self, of: CopyOf, copy: u64) {
        let mut m = self.lock();
        if m.get(&of) == Some(&copy) {
            m.remove(&of);
        }
    }

    /// Whether copy `copy` of `of` is being sent.
    pub fn is_running(&self, of: CopyOf, copy: u64) -> bool {
        self.lock().get(&of) == Some(&copy)
    }

    /// How many copies are being sent.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CopyOf, u64>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}
