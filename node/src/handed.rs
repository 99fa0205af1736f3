//! Slots this leader handed off whose target serves them already (its `In` committed) while
//! `Done` is still being committed here. Requests for them go on to the target at once (a
//! `WrongShard` naming it) instead of waiting for `Done` to apply; and requests waiting on a
//! frozen slot wake when one of its hand-offs ends rather than at the next poll, so the
//! pause a writer sees is the hand-off's, not the poll's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use unikv_types::{Epoch, ShardId, Slot};

#[derive(Debug, Default)]
pub struct Handed {
    owners: Mutex<HashMap<Slot, (ShardId, Epoch)>>,
    changed: Notify,
}

impl Handed {
    /// `to` took `slot` at `epoch` (its `In` committed).
    pub fn taken(&self, slot: Slot, to: ShardId, epoch: Epoch) {
        self.lock().insert(slot, (to, epoch));
        self.changed.notify_waiters();
    }

    /// The hand-off of `slot` ended here (`Done` or `Abort` committed, or it stopped).
    pub fn ended(&self, slot: Slot) {
        self.lock().remove(&slot);
        self.changed.notify_waiters();
    }

    /// The shard serving `slot` and its epoch, if this leader handed it off and has not
    /// committed `Done` yet.
    pub fn owner(&self, slot: Slot) -> Option<(ShardId, Epoch)> {
        self.lock().get(&slot).copied()
    }

    /// Waits at most `max` for a hand-off to progress; `again` is called once the wait is
    /// registered (so a change after it is not missed) and ends it early if it returns true.
    pub async fn wait(&self, max: Duration, again: impl FnOnce() -> bool) {
        let changed = self.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if again() {
            return;
        }
        let _ = tokio::time::timeout(max, changed).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Slot, (ShardId, Epoch)>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }
}
