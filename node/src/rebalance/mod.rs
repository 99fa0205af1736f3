//! Online resharding on the node: the balancer that decides which slots this shard gives away
//! (`planner`), the source side of a hand-off (`handoff`), the target side (`receive`), calls to
//! other shards' leaders (`peer`) and the registry/admin operations behind `/addshard`,
//! `/removeshard`, `/moveslot`, `/shard/tags`, `/stats` and `/rebalance/status` (`admin`).
//!
//! There is no central balancer: every shard leader runs the same loop on its own state and
//! the gossip view. All decisions go through the shard's Raft log (see
//! `unikv_storage::moves`), so a new leader resumes whatever its predecessor left in flight.

pub mod admin;
pub mod handoff;
pub mod peer;
pub mod planner;
pub mod receive;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use unikv_storage::apply::DedupRecord;
use unikv_storage::{Command, MoveCommand};
use unikv_types::{Epoch, ShardId, ShardState, Slot};

use crate::service::Node;

/// Hand-offs a shard leader runs at once. Each frozen slot waits only for its own hand-off.
pub const PARALLEL_MOVES: usize = 8;
/// How often the balancer and the resume/activation loops look at the state.
const TICK: Duration = Duration::from_millis(100);

/// A slot's data sent from the source leader to the target leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveIn {
    pub slot: Slot,
    pub from: ShardId,
    pub epoch: Epoch,
    pub kv: Vec<(String, String)>,
    pub dedup: Vec<(String, DedupRecord)>,
}

/// The target asks the source how a hand-off ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveStatusRequest {
    pub slot: Slot,
    pub epoch: Epoch,
    pub target: ShardId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveStatus {
    /// The source gave the slot up: the target may serve it.
    Done,
    /// The source is still handing it off.
    Pending,
    /// The source kept the slot: the target must drop its copy.
    Aborted,
}

/// Activation nudge from the source once `Done` committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActivateRequest {
    pub slot: Slot,
    pub epoch: Epoch,
}

/// Registry changes and explicit moves, executed by the leader of the shard concerned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardAdmin {
    SetState(ShardState),
    SetTags(Vec<(String, String)>),
    MoveSlot { slot: Slot, to: ShardId },
}

/// In-memory state of this node's rebalancing work (counters are since this process started).
#[derive(Default)]
pub struct Rebalance {
    /// Slots with a hand-off task running on this node.
    running: Mutex<HashSet<Slot>>,
    /// Incoming slots with an activation check running.
    activating: Mutex<HashSet<Slot>>,
    /// Planned moves not yet started.
    queue: Mutex<VecDeque<(Slot, ShardId)>>,
    /// Slots whose hand-off finished and which the gossip view may not show at the target yet.
    settling: Mutex<Vec<(Slot, ShardId, Instant)>>,
    pub moved_slots: AtomicU64,
    pub moved_bytes: AtomicU64,
    pub aborted: AtomicU64,
    first_move: Mutex<Option<Instant>>,
    /// Write pause of recent hand-offs started here: from `Out` applied to the target's
    /// `Activate` acknowledged (the newest 4096).
    pauses: Mutex<VecDeque<Duration>>,
}

impl Rebalance {
    pub fn queued(&self) -> usize {
        lock(&self.queue).len()
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

    fn record_pause(&self, d: Duration) {
        let mut p = lock(&self.pauses);
        if p.len() == 4096 {
            p.pop_front();
        }
        p.push_back(d);
    }

    /// (p50, p99, max) of recent write pauses, in milliseconds.
    pub fn pause_percentiles(&self) -> Option<(f64, f64, f64)> {
        let mut v: Vec<Duration> = lock(&self.pauses).iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
        Some((at(0.5), at(0.99), at(1.0)))
    }

    fn record(&self, bytes: u64) {
        lock(&self.first_move).get_or_insert_with(Instant::now);
        self.moved_slots.fetch_add(1, Relaxed);
        self.moved_bytes.fetch_add(bytes, Relaxed);
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the rebalancing loops until shutdown: resume hand-offs left in the descriptor, start
/// planned ones, check incoming slots, finish drains, and plan when settled.
pub fn spawn(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
            if !node.is_leader() {
                lock(&node.rebalance.queue).clear();
                continue;
            }
            tick(&node).await;
        }
    })
}

async fn tick(node: &Arc<Node>) {
    let d = node.store.descriptor();
    // Target side: slots received and waiting for the source's word.
    for (slot, h) in &d.incoming {
        receive::spawn_activation_check(node.clone(), *slot, *h);
    }
    // Source side: resume hand-offs in the descriptor (e.g. after a leader change).
    for (slot, h) in &d.outgoing {
        handoff::spawn(node.clone(), *slot, Some(*h), h.peer);
    }
    // Start planned moves up to the parallelism limit.
    while node.rebalance.running() < PARALLEL_MOVES {
        let next = lock(&node.rebalance.queue).pop_front();
        let Some((slot, to)) = next else { break };
        handoff::spawn(node.clone(), slot, None, to);
    }
    // A drained shard becomes inactive.
    if d.state == ShardState::Draining && d.slot_count() == 0 && d.outgoing.is_empty() {
        let _ = node
            .propose(Command::Move(MoveCommand::SetState {
                state: ShardState::Inactive,
            }))
            .await;
        tracing::info!(shard = %node.shard(), "drained: now inactive");
        return;
    }
    // Plan only when nothing is in flight here and earlier moves are visible in gossip.
    if !d.outgoing.is_empty() || node.rebalance.running() > 0 || node.rebalance.queued() > 0 {
        return;
    }
    if !settled(node) {
        return;
    }
    let view = node.gossip.view();
    let plan = planner::plan(&view, &d);
    if !plan.is_empty() {
        tracing::info!(shard = %node.shard(), slots = plan.len(), "rebalance: moving surplus slots");
        lock(&node.rebalance.queue).extend(plan);
    }
}

/// Whether every finished hand-off is visible in the gossip view (or old enough to stop
/// waiting), so the next plan starts from an up-to-date picture.
fn settled(node: &Node) -> bool {
    let view = node.gossip.view();
    let mut settling = lock(&node.rebalance.settling);
    settling.retain(|(slot, to, at)| {
        at.elapsed() < Duration::from_secs(10) && view.owner_of(*slot).map(|(s, _)| s) != Some(*to)
    });
    settling.is_empty()
}
