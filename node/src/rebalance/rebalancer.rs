//! The state of this node's rebalancing: which hand-offs and staging checks run, the planned
//! moves, and what was moved. Every part of `rebalance` works on it; it knows nothing of them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use unikv_types::{ShardId, Slot};

use crate::service::Node;

/// The rebalancing work of this node: the node it acts for and the in-memory bookkeeping of its
/// hand-offs (counters are since this process started).
pub struct Rebalancer {
    pub node: Arc<Node>,
    /// Slots with a hand-off task running on this node.
    pub(super) running: Mutex<HashSet<Slot>>,
    /// Hand-off tasks running on this node (one may move several slots).
    pub(super) workers: AtomicUsize,
    /// Staged copies with a staging check running.
    pub(super) checking: Mutex<HashSet<Slot>>,
    /// When a piece of a copy staged here last arrived (target side).
    pub(super) staged_seen: Mutex<HashMap<Slot, Instant>>,
    /// Planned moves not yet started.
    pub(super) queue: Mutex<VecDeque<(Slot, ShardId)>>,
    /// Slots whose hand-off finished and which the gossip view may not show at the target yet.
    pub(super) settling: Mutex<Vec<(Slot, ShardId, Instant)>>,
    pub moved_slots: AtomicU64,
    pub moved_bytes: AtomicU64,
    pub aborted: AtomicU64,
    pub(super) first_move: Mutex<Option<Instant>>,
    /// Write pause of recent hand-offs started here: from `Out` applied to the target's
    /// `In` acknowledged (the newest 4096).
    pub(super) pauses: crate::move_tally::Pauses,
    /// The last plan made here, with its reasons, and when (ms since the Unix epoch).
    pub(super) last_plan: Mutex<Option<(u64, super::planner::Plan)>>,
}

impl Rebalancer {
    pub fn new(node: Arc<Node>) -> Self {
        Rebalancer {
            running: Default::default(),
            workers: Default::default(),
            checking: Default::default(),
            staged_seen: Default::default(),
            queue: Default::default(),
            settling: Default::default(),
            moved_slots: Default::default(),
            moved_bytes: Default::default(),
            aborted: Default::default(),
            first_move: Default::default(),
            pauses: Default::default(),
            last_plan: Default::default(),
            node,
        }
    }

    /// `--balance_tolerance_pct` and `--balance_min_kb`.
    pub fn tolerance(&self) -> super::planner::Tolerance {
        let c = &self.node.config;
        super::planner::Tolerance {
            pct: c.balance_tolerance_pct,
            min_bytes: c.balance_min_kb.saturating_mul(1024),
        }
    }

    /// This shard's bytes per slot (served slots: neither arriving nor leaving ones).
    pub fn slot_bytes(&self) -> std::collections::HashMap<Slot, u64> {
        let d = self.node.store.descriptor();
        match self.node.store.slot_stats() {
            Ok(all) => all
                .into_iter()
                .filter(|(s, _)| !d.staging.contains_key(s) && !d.outgoing.contains_key(s))
                .map(|(s, st)| (s, st.bytes))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "reading slot statistics");
                Default::default()
            }
        }
    }

    pub fn queued(&self) -> usize {
        lock(&self.queue).len()
    }

    /// Hand-off tasks running (`--parallel_moves` bounds the planned ones).
    pub fn workers(&self) -> usize {
        self.workers.load(Relaxed)
    }

    pub fn running(&self) -> usize {
        lock(&self.running).len()
    }

    /// Bytes moved per second since the first hand-off this process made.
    pub fn rate(&self) -> f64 {
        match *lock(&self.first_move) {
            Some(t) => self.moved_bytes.load(Relaxed) as f64 / t.elapsed().as_secs_f64().max(0.001),
            None => 0.0,
        }
    }

    /// Slots still to hand off from here (running and planned) and the bytes they hold.
    pub fn left(&self) -> (usize, u64) {
        let mut slots: HashSet<Slot> = lock(&self.running).iter().copied().collect();
        slots.extend(lock(&self.queue).iter().map(|(s, _)| *s));
        let bytes = match self.node.store.slot_stats() {
            Ok(all) => all
                .into_iter()
                .filter(|(s, _)| slots.contains(s))
                .map(|(_, st)| st.bytes)
                .sum(),
            Err(_) => 0,
        };
        (slots.len(), bytes)
    }

    pub(super) fn record_pause(&self, d: Duration) {
        self.pauses.record(d);
    }

    /// (p50, p99, max) of recent write pauses, in milliseconds.
    pub fn pause_percentiles(&self) -> Option<(f64, f64, f64)> {
        self.pauses.percentiles()
    }

    pub(super) fn record(&self, bytes: u64) {
        lock(&self.first_move).get_or_insert_with(Instant::now);
        self.moved_slots.fetch_add(1, Relaxed);
        self.moved_bytes.fetch_add(bytes, Relaxed);
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
