//! The balancer loop of a shard leader: every tick it resumes hand-offs left in the descriptor
//! (after a leader change), starts planned moves up to the parallelism limit, checks received
//! slots, finishes a drain, and — when nothing is in flight and earlier moves are visible in
//! gossip — plans the next moves (`planner`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use unikv_storage::{Command, RegistryCommand};
use unikv_types::ShardState;

use super::rebalancer::{lock, Rebalancer};
use super::{handoff, planner, receive};

/// How often the balancer and the resume/staging-check loops look at the state.
const TICK: Duration = Duration::from_millis(100);
/// How long a shard's published bytes may lag its ownership (totals go out every second).
const TOTALS_LAG: Duration = Duration::from_millis(2500);

/// Runs the rebalancing loops until shutdown: resume hand-offs left in the descriptor, start
/// planned ones, check staged copies, finish drains, and plan when settled.
pub fn spawn(
    rb: Arc<Rebalancer>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
            if !rb.node.is_leader() {
                lock(&rb.queue).clear();
                continue;
            }
            tick(&rb).await;
        }
    })
}

async fn tick(rb: &Arc<Rebalancer>) {
    let node = &rb.node;
    let d = node.store.descriptor();
    // Copies staged here whose source went quiet.
    lock(&rb.staged_seen).retain(|slot, _| d.staging.contains_key(slot));
    for (slot, s) in &d.staging {
        receive::spawn_staging_check(rb.clone(), *slot, *s);
    }
    // Source side: resume hand-offs in the descriptor (e.g. after a leader change).
    for (slot, h) in &d.outgoing {
        handoff::spawn(rb.clone(), *slot, Some(*h), h.target);
    }
    // Start planned moves up to the parallelism limit.
    while rb.workers() < node.config.parallel_moves && handoff::spawn_next(rb) {}
    // A drained shard becomes inactive.
    if d.state == ShardState::Draining
        && d.slot_count() == 0
        && d.outgoing.is_empty()
        && d.chunks.owned.is_empty()
        && d.units.is_empty()
        && d.unit_moves.incoming.is_empty()
    {
        let _ = node
            .propose(Command::Registry(RegistryCommand::SetState {
                state: ShardState::Inactive,
            }))
            .await;
        tracing::info!(shard = %node.shard(), "drained: now inactive");
        return;
    }
    // Drained and asked to go (`/removeshard?forget=true`): removed for good, once no shard
    // key is placed here either.
    if d.state == ShardState::Inactive && d.forget_when_drained {
        let placed_here = match node.read_catalog().await {
            Ok(c) => !c.shard_keys_on(node.shard()).is_empty(),
            Err(_) => true,
        };
        if placed_here {
            return;
        }
        if let Err(e) = node
            .propose(Command::Registry(RegistryCommand::SetState {
                state: ShardState::Removed,
            }))
            .await
        {
            tracing::warn!(shard = %node.shard(), error = %e, "drained, but not removed yet");
        }
        return;
    }
    // Plan only when nothing is in flight here and earlier moves are visible in gossip.
    if !d.outgoing.is_empty() || rb.running() > 0 || rb.queued() > 0 {
        return;
    }
    if !settled(rb) {
        return;
    }
    let view = node.gossip.view();
    let Some(plan) = planner::plan(&view, &d, &rb.slot_bytes(), rb.tolerance()) else {
        return;
    };
    if !plan.slots.is_empty() {
        let bytes: u64 = plan.moves.iter().map(|m| m.bytes).sum();
        tracing::info!(shard = %node.shard(), phase = ?plan.phase, slots = plan.slots.len(), bytes, reason = %plan.reason, "rebalance: moving slots");
        lock(&rb.queue).extend(plan.slots.iter().copied());
    }
    *lock(&rb.last_plan) = Some((unikv_types::wall_clock_ms(), plan));
}

/// Whether every finished hand-off is visible in the gossip view, and its bytes in the
/// shards' totals (published every second), or old enough to stop waiting — so the next plan
/// starts from an up-to-date picture.
fn settled(rb: &Rebalancer) -> bool {
    let view = rb.node.gossip.view();
    let mut settling = lock(&rb.settling);
    settling.retain(|(slot, to, at)| {
        let shown = view.owner_of(*slot).map(|(s, _)| s) == Some(*to) && at.elapsed() >= TOTALS_LAG;
        at.elapsed() < Duration::from_secs(10) && !shown
    });
    settling.is_empty()
}
