//! Long-lived outgoing connections, one per peer address.
//!
//! Raft heartbeats and KV requests are frequent and small, so a handshake per request would
//! dominate their latency: every request instead opens a stream on a cached connection. Each
//! address has its own async lock, held while dialing, so a burst of callers to a peer that
//! has no connection yet produces a single handshake that they all then share.
//!
//! A handshake the peer refused (or whose certificate we refused) is a configuration problem
//! that redialing cannot fix, so it is not redialed in a loop: for a while (from 250 ms,
//! doubling to 10 s) callers get the same error at once, and a single dial tries again after.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use quinn::Connection;

use crate::error::{Error, Result};

const FIRST_PAUSE: Duration = Duration::from_millis(250);
const MAX_PAUSE: Duration = Duration::from_secs(10);

/// One peer address: its open connection, or the handshake refusal that holds redials back.
#[derive(Default)]
struct Peer {
    conn: Option<Connection>,
    refused: Option<Refusal>,
}

struct Refusal {
    error: Error,
    until: Instant,
    pause: Duration,
}

type Slot = Arc<tokio::sync::Mutex<Peer>>;

impl Peer {
    fn refuse(&mut self, addr: &str, error: &Error) {
        if self
            .refused
            .as_ref()
            .is_some_and(|r| r.until > Instant::now())
        {
            return;
        }
        let pause = self
            .refused
            .as_ref()
            .map_or(FIRST_PAUSE, |r| (r.pause * 2).min(MAX_PAUSE));
        tracing::warn!(peer = addr, %error, pause_ms = pause.as_millis() as u64, "handshake refused; pausing redials");
        self.refused = Some(Refusal {
            error: error.clone(),
            until: Instant::now() + pause,
            pause,
        });
    }
}

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
        let mut peer = slot.lock().await;
        if let Some(conn) = peer.conn.as_ref() {
            if conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
            tracing::debug!(peer = addr, reason = ?conn.close_reason(), "cached connection closed; redialing");
        }
        peer.conn = None;
        if let Some(r) = &peer.refused {
            if let Some(left) = r.until.checked_duration_since(Instant::now()) {
                return Err(Error::Tls(format!(
                    "{} (not redialed for another {} ms)",
                    r.error,
                    left.as_millis()
                )));
            }
        }
        match dial().await {
            Ok(conn) => {
                peer.refused = None;
                peer.conn = Some(conn.clone());
                Ok(conn)
            }
            Err(error @ Error::Tls(_)) => {
                peer.refuse(addr, &error);
                Err(error)
            }
            Err(e) => Err(e),
        }
    }

    /// Holds redials to `addr` back after `error`, a TLS refusal noticed on a connection that
    /// had looked established (a server checks the client's certificate after the client
    /// considers the handshake done).
    /// A connection that is still open is kept: the refusal was another's (the refused one
    /// is closed by it, and `get` redials past it once the pause is over).
    pub(crate) async fn refused(&self, addr: &str, error: &Error) {
        let slot = self.slot(addr);
        let mut peer = slot.lock().await;
        peer.refuse(addr, error);
    }

    /// Drops `conn` from the pool if it is still the cached connection for `addr`.
    pub(crate) async fn evict(&self, addr: &str, conn: &Connection) {
        let slot = self.slot(addr);
        let mut peer = slot.lock().await;
        if peer
            .conn
            .as_ref()
            .is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            peer.conn = None;
        }
    }

    /// Forgets every cached connection, returning them so the caller can close them.
    pub(crate) fn drain(&self) -> Vec<Connection> {
        let slots: Vec<Slot> = self.lock().drain().map(|(_, slot)| slot).collect();
        slots
            .into_iter()
            .filter_map(|slot| match slot.try_lock() {
                Ok(mut peer) => peer.conn.take(),
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
