//! The shard leader's chunk loop, once a second: finish what a predecessor left (resume
//! hand-offs), drop copies staged here that their source gave up (asked once no piece came
//! for `STAGING_QUIET`), split chunks grown past `--chunk_max_bytes`, merge
//! neighbours both under a quarter of it (and unchanged for 30 s), drain
//! a draining shard's chunks, and even out bytes: a shard holding more than the lightest
//! active shard by more than twice a chunk's size (and by half `--chunk_max_bytes` at least)
//! hands that chunk over. One balancing move at a time per shard, and none until the last
//! one shows in gossip, so shards do not overshoot.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use unikv_storage::{ChunkCommand, ChunkState, Command};
use unikv_types::{wall_clock_ms, ChunkId, ShardId, ShardState};

use crate::service::Node;

const TICK: Duration = Duration::from_secs(1);
/// Most splits one tick proposes.
const SPLITS_PER_TICK: usize = 8;
/// How long a chunk must be unchanged (split, moved) before it merges with a neighbour.
const MERGE_QUIET: Duration = Duration::from_secs(30);
/// Pause after a balancing move before the next, so gossip shows its effect.
const SETTLE: Duration = Duration::from_secs(2);
/// How long a copy staged here may go without a piece before its source is asked whether it
/// still wants it.
const STAGING_QUIET: Duration = Duration::from_secs(5);

/// Copies staged here as last seen (copy id, pieces) and since when.
type Quiet = HashMap<ChunkId, (u64, u32, Instant)>;

pub fn spawn(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        let mut last_move = Instant::now() - SETTLE;
        let mut quiet = Quiet::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if !node.is_leader() {
                continue;
            }
            if let Some(moved) = round(&node, last_move, &mut quiet).await {
                last_move = moved;
            }
        }
    })
}

/// One round; the time a balancing move was started, if one was.
async fn round(node: &Arc<Node>, last_move: Instant, quiet: &mut Quiet) -> Option<Instant> {
    let d = node.store.descriptor();
    quiet.retain(|id, _| d.chunks.owned.get(id).is_some_and(|c| c.is_staging()));
    if d.chunks.owned.is_empty() {
        return None;
    }
    for (id, c) in &d.chunks.owned {
        match c.state {
            ChunkState::Staging {
                source,
                epoch,
                copy,
                parts,
            } => {
                let seen = quiet.entry(*id).or_insert((copy, parts, Instant::now()));
                if (seen.0, seen.1) != (copy, parts) {
                    *seen = (copy, parts, Instant::now());
                } else if seen.2.elapsed() >= STAGING_QUIET {
                    seen.2 = Instant::now();
                    let (node, id) = (node.clone(), *id);
                    tokio::spawn(async move { node.check_staging(id, source, epoch, copy).await });
                }
            }
            ChunkState::Outgoing { target, .. } => start_move(node, *id, target),
            ChunkState::Serving => {}
        }
    }
    // Splits, largest chunks first.
    let max = node.config.chunk_max_bytes;
    let mut big: Vec<(u64, ChunkId)> = node
        .store
        .chunks(None)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.size > max && c.moving_to.is_none() && !copying(node, c.id))
        .map(|c| (c.size, c.id))
        .collect();
    big.sort_unstable_by(|a, b| b.cmp(a));
    for (_, id) in big.into_iter().take(SPLITS_PER_TICK) {
        let Ok(Some(at)) = node.store.split_point(id) else {
            continue;
        };
        let ks = match node.store.descriptor().chunks.owned.get(&id) {
            Some(c) => c.keyspace,
            None => continue,
        };
        if let Err(e) = node.split_at(ks, &at).await {
            tracing::debug!(chunk = %id, error = %e, "automatic split not committed");
        }
    }
    merge_small(node).await;
    if node.moving_chunks() > 0 {
        return None;
    }
    let view = node.gossip.view();
    let active: Vec<(ShardId, u64)> = view
        .shards
        .values()
        .filter(|s| s.state == ShardState::Active && s.id != node.shard())
        .map(|s| (s.id, s.bytes))
        .collect();
    let &(lightest, light_bytes) = active.iter().min_by_key(|(_, b)| *b)?;
    let chunks = node.store.chunks(None).unwrap_or_default();
    let serving = chunks.iter().filter(|c| c.moving_to.is_none());
    if d.state == ShardState::Draining {
        let c = serving.max_by_key(|c| c.size)?;
        start_move(node, c.id, lightest);
        return Some(Instant::now());
    }
    if d.state != ShardState::Active || last_move.elapsed() < SETTLE {
        return None;
    }
    let mine = view.shards.get(&node.shard()).map_or(0, |s| s.bytes);
    let gap = mine.saturating_sub(light_bytes);
    if gap < max / 2 {
        return None;
    }
    // The biggest chunk that still leaves this shard at least as heavy as the target.
    let c = serving
        .filter(|c| c.size > 0 && 2 * c.size <= gap)
        .max_by_key(|c| c.size)?;
    tracing::info!(shard = %node.shard(), chunk = %c.id, to = %lightest, bytes = c.size, gap, "balancing: moving a chunk");
    start_move(node, c.id, lightest);
    Some(Instant::now())
}

/// Merges neighbouring chunks held here that are both under a quarter of
/// `--chunk_max_bytes` (so a split's halves, each about half of it, never merge back) and
/// unchanged for [`MERGE_QUIET`] (an operator's split stays while it is being used).
async fn merge_small(node: &Arc<Node>) {
    let small = node.config.chunk_max_bytes / 4;
    let quiet_since = wall_clock_ms().saturating_sub(MERGE_QUIET.as_millis() as u64);
    let mut chunks = node.store.chunks(None).unwrap_or_default();
    chunks.sort_by(|a, b| (a.keyspace, &a.min).cmp(&(b.keyspace, &b.min)));
    let mut merged = 0;
    let mut i = 0;
    while i + 1 < chunks.len() && merged < SPLITS_PER_TICK {
        let (l, r) = (&chunks[i], &chunks[i + 1]);
        let neighbours = l.keyspace == r.keyspace && l.max.as_deref() == Some(r.min.as_str());
        if neighbours
            && l.moving_to.is_none()
            && r.moving_to.is_none()
            && !copying(node, l.id)
            && !copying(node, r.id)
            && l.size < small
            && r.size < small
            && l.updated_ms < quiet_since
            && r.updated_ms < quiet_since
        {
            let cmd = Command::Chunk(ChunkCommand::Merge {
                left: l.id,
                right: r.id,
                now_ms: wall_clock_ms(),
            });
            if let Err(e) = node.propose(cmd).await {
                tracing::debug!(left = %l.id, right = %r.id, error = %e, "merge not committed");
            }
            merged += 1;
            // The merged chunk is looked at again next round.
            i += 2;
        } else {
            i += 1;
        }
    }
}

/// Whether a hand-off of chunk `id` runs here (copying it while it serves: a split or merge
/// now would only make it start over).
fn copying(node: &Node, id: ChunkId) -> bool {
    node.has_task(super::handoff::MOVING, id.0)
}

/// Starts (or resumes) the hand-off of chunk `id` to `to` in the background, unless one runs.
fn start_move(node: &Arc<Node>, id: ChunkId, to: ShardId) {
    if !node.claim_task(super::handoff::MOVING, id.0) {
        return;
    }
    let node = node.clone();
    tokio::spawn(async move {
        if let Err(e) = node.hand_off(id, to).await {
            tracing::warn!(shard = %node.shard(), chunk = %id, to = %to, error = %e, "chunk hand-off stopped");
        }
        node.release_task(super::handoff::MOVING, id.0);
    });
}
