//! Long-lived outgoing connections, one per peer address.
//!
//! Raft heartbeats and KV requests are frequent and small, so a handshake per request would
//! dominate their latency: every request instead opens a stream on a cached connection. Each
//! address has its own async lock, held while dialing, so a burst of callers to a peer that
//! has no connection yet produces a single handshake that they all then share.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use quinn::Connection;

use crate::error::Result;

type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

#[derive(Default)]
pub(crate) struct Pool {
    slots: Mutex<HashMap<String, Slot>>,
}

impl Pool {
    /// Returns the cached open connection to `addr`, or dials one with `dial` (at most one
    /// dial per address at a time; concurrent callers wait for it and share the result).
    pub(crate) async fn get<F, Fut>(&self, addr: &str, dial: F) -> Result<Connection>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Connection>>,
    {
        let slot = self.slot(addr);
        let mut cached = slot.lock().await;
        if let Some(conn) = cached.as_ref() {
            if conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
            tracing::debug!(peer = addr, reason = ?conn.close_reason(), "cached connection closed; redialing");
        }
        *cached = None;
        let conn = dial().await?;
        *cached = Some(conn.clone());
        Ok(conn)
    }

    /// Drops `conn` from the pool if it is still the cached connection for `addr`.
    pub(crate) async fn evict(&self, addr: &str, conn: &Connection) {
        let slot = self.slot(addr);
        let mut cached = slot.lock().await;
        if cached
            .as_ref()
            .is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            *cached = None;
        }
    }

    /// Forgets every cached connection, returning them so the caller can close them.
    pub(crate) fn drain(&self) -> Vec<Connection> {
        let slots: Vec<Slot> = self.lock().drain().map(|(_, slot)| slot).collect();
        slots
            .into_iter()
            .filter_map(|slot| match slot.try_lock() {
                Ok(mut cached) => cached.take(),
                // A dial is in progress; the endpoint is closing, so it will fail on its own.
                Err(_) => None,
            })
            .collect()
    }

    fn slot(&self, addr: &str) -> Slot {
        let mut slots = self.lock();
        match slots.get(addr) {
            Some(slot) => slot.clone(),
            None => {
                let slot = Slot::default();
                slots.insert(addr.to_owned(), slot.clone());
                slot
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // The map is only touched by short non-panicking sections, so a poisoned lock still
        // holds a consistent map.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}
