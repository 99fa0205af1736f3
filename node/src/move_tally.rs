//! What this node's hand-offs did since it started: recent write pauses (the newest 4096)
//! and their percentiles, for slots (`rebalance::Rebalancer`) and chunks (`Node::chunk_moves`),
//! and for chunks the counts `/rebalance/status` reports beside the slots'.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Recent write pauses: from a unit's `Out` committed to the target's `In` acknowledged.
#[derive(Debug, Default)]
pub struct Pauses(Mutex<VecDeque<Duration>>);

impl Pauses {
    pub fn record(&self, d: Duration) {
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() == 4096 {
            p.pop_front();
        }
        p.push_back(d);
    }

    /// (p50, p99, max) of the recent pauses, in milliseconds.
    pub fn percentiles(&self) -> Option<(f64, f64, f64)> {
        let mut v: Vec<Duration> = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
        Some((at(0.5), at(0.99), at(1.0)))
    }
}

/// Chunk hand-offs this node finished or gave up as their source's leader.
#[derive(Debug, Default)]
pub struct ChunkMoves {
    pub moved: AtomicU64,
    pub bytes: AtomicU64,
    pub aborted: AtomicU64,
    pub pauses: Pauses,
}

impl ChunkMoves {
    pub fn done(&self, bytes: u64, pause: Option<Duration>) {
        self.moved.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
        if let Some(p) = pause {
            self.pauses.record(p);
        }
    }

    pub fn aborted(&self) {
        self.aborted.fetch_add(1, Relaxed);
    }
}
