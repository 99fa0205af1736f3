//! Bringing a shard to life: the bootstrapping node initialises a fresh Raft group with itself
//! as the only voter, and whichever replica leads first claims the shard's initial slots (the
//! deterministic split of `unikv_types::slot::initial_range`) through the Raft log, exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use unikv_gossip::ClusterView;
use unikv_storage::Command;
use unikv_types::slot::initial_range;
use unikv_types::{Epoch, ShardId, SlotRange};

use crate::error::{Error, Result};
use crate::service::Node;

/// Initialises the group if this node is the bootstrapper and its storage is fresh.
pub async fn initialize_if_fresh(node: &Node) -> Result<()> {
    if !node.config.bootstrap() {
        return Ok(());
    }
    let initialized = node
        .raft
        .is_initialized()
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;
    if initialized {
        return Ok(());
    }
    let members = BTreeMap::from([(node.id(), node.me.clone())]);
    node.raft
        .initialize(members)
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;
    tracing::info!(shard = %node.shard(), node = %node.id(), "initialised a new raft group");
    Ok(())
}

/// What the first leader of a fresh shard should claim.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Not decidable yet: some initial shards have not appeared in gossip.
    Wait { missing: Vec<u64> },
    /// Another shard that has not claimed yet was started with another `--initial_shards`:
    /// the two would split the slots differently and could claim overlapping ranges, so
    /// neither claims until the operator restarts them with one value.
    Disagree { shard: u64, theirs: u64, ours: u64 },
    /// Claim these ranges at epoch 1.
    Ranges(Vec<SlotRange>),
}

/// Decides the initial claim of `shard` in a cluster started with `initial_shards` shards.
///
/// Initial shards split the slots deterministically (`initial_range`), so they never overlap
/// each other. The danger is a shard started later with flags that make it look initial (its
/// `--peer_shards` count makes `initial_shards` cover its id): it must claim nothing. So a
/// shard claims only once every other initial shard is visible in gossip, and only if no shard
/// already owns any slot of its range; otherwise it starts empty and receives slots by moves.
/// Shards started together with different `--initial_shards` would not split alike: a fresh
/// shard that sees another fresh shard disagree claims nothing (a shard that already claimed is
/// no disagreement — this one is then simply late).
pub fn decide_claim(shard: ShardId, initial_shards: u64, view: &ClusterView) -> Claim {
    let disagreeing = view.shards.values().find(|s| {
        s.id != shard && !s.initialised && s.initial_shards.is_some_and(|n| n != initial_shards)
    });
    if let Some(s) = disagreeing {
        return Claim::Disagree {
            shard: s.id.0,
            theirs: s.initial_shards.unwrap_or_default(),
            ours: initial_shards,
        };
    }
    let Some(mine) = initial_range(shard.0, initial_shards) else {
        return Claim::Ranges(Vec::new());
    };
    let overlaps = view
        .shards
        .values()
        .any(|s| s.id != shard && s.slots.iter().any(|(r, _)| r.0 <= mine.1 && mine.0 <= r.1));
    if overlaps {
        return Claim::Ranges(Vec::new());
    }
    let missing: Vec<u64> = (1..=initial_shards)
        .filter(|id| *id != shard.0 && !view.shards.contains_key(&ShardId(*id)))
        .collect();
    if missing.is_empty() {
        Claim::Ranges(vec![mine])
    } else {
        Claim::Wait { missing }
    }
}

/// Until the shard's descriptor is initialised, proposes the initial slot claim whenever this
/// node is the leader and the claim is decidable.
pub fn spawn_slot_claim(
    node: Arc<Node>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let shards = node.config.initial_shards();
        let mut last_missing = Vec::new();
        while !node.store.descriptor().initialised {
            if node.is_leader() {
                match decide_claim(node.shard(), shards, &node.gossip.view()) {
                    Claim::Ranges(ranges) => {
                        node.set_claim_problem(None);
                        let cmd = Command::Bootstrap {
                            shard: node.shard(),
                            ranges,
                            epoch: Epoch(1),
                        };
                        match node.raft.client_write(cmd).await {
                            Ok(_) => continue,
                            Err(e) => tracing::debug!(error = %e, "slot claim not committed yet"),
                        }
                    }
                    Claim::Wait { missing } => {
                        if missing != last_missing {
                            tracing::info!(shard = %node.shard(), ?missing, "waiting for the other initial shards to appear in gossip before claiming slots");
                            last_missing = missing;
                        }
                        node.set_claim_problem(None);
                    }
                    Claim::Disagree {
                        shard,
                        theirs,
                        ours,
                    } => {
                        let why = format!(
                            "not claiming initial slots: shard {shard} was started with --initial_shards {theirs}, this one with {ours}; restart the shards with one value"
                        );
                        if node.claim_problem().as_deref() != Some(why.as_str()) {
                            tracing::error!(shard = %node.shard(), "{why}");
                        }
                        node.set_claim_problem(Some(why));
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = shutdown.changed() => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use unikv_gossip::ShardView;

    fn shard(id: u64, slots: &[(u16, u16)]) -> ShardView {
        ShardView {
            id: ShardId(id),
            leader: None,
            term: 1,
            members: Vec::new(),
            slots: slots
                .iter()
                .map(|(lo, hi)| (SlotRange(*lo, *hi), Epoch(1)))
                .collect(),
            descriptor_version: u64::from(!slots.is_empty()),
            initialised: !slots.is_empty(),
            initial_shards: None,
            state: unikv_types::ShardState::Active,
            keys: 0,
            bytes: 0,
            chunks: 0,
            tags: Vec::new(),
        }
    }

    fn view(shards: Vec<ShardView>) -> ClusterView {
        ClusterView {
            shards: shards.into_iter().map(|s| (s.id, s)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn single_shard_claims_everything_at_once() {
        assert_eq!(
            decide_claim(ShardId(1), 1, &view(vec![])),
            Claim::Ranges(vec![SlotRange(0, 16383)])
        );
    }

    #[test]
    fn initial_shards_wait_for_each_other_then_claim_their_split() {
        let v = view(vec![shard(2, &[])]);
        assert_eq!(
            decide_claim(ShardId(1), 3, &v),
            Claim::Wait { missing: vec![3] }
        );
        let v = view(vec![shard(2, &[]), shard(3, &[(10923, 16383)])]);
        assert_eq!(
            decide_claim(ShardId(1), 3, &v),
            Claim::Ranges(vec![SlotRange(0, 5460)])
        );
    }

    #[test]
    fn fresh_shards_with_different_initial_counts_claim_nothing() {
        let mut other = shard(2, &[]);
        other.initial_shards = Some(3);
        assert_eq!(
            decide_claim(ShardId(1), 2, &view(vec![other.clone()])),
            Claim::Disagree {
                shard: 2,
                theirs: 3,
                ours: 2
            }
        );
        // The same count: the usual wait-then-claim.
        other.initial_shards = Some(2);
        assert_eq!(
            decide_claim(ShardId(1), 2, &view(vec![other.clone()])),
            Claim::Ranges(vec![SlotRange(0, 8191)])
        );
        // A node of an earlier version says nothing: no disagreement can be seen.
        other.initial_shards = None;
        assert_eq!(
            decide_claim(ShardId(1), 2, &view(vec![other])),
            Claim::Ranges(vec![SlotRange(0, 8191)])
        );
    }

    #[test]
    fn a_claimed_shard_with_another_count_is_no_disagreement() {
        // Shards 1-3 claimed with 3; shard 4 started later with 3 peers computes 4: late, not
        // in disagreement, and its range is owned already.
        let mut claimed: Vec<ShardView> = [(1, 0, 5460), (2, 5461, 10922), (3, 10923, 16383)]
            .iter()
            .map(|(id, lo, hi)| shard(*id, &[(*lo, *hi)]))
            .collect();
        for s in &mut claimed {
            s.initial_shards = Some(3);
        }
        assert_eq!(
            decide_claim(ShardId(4), 4, &view(claimed)),
            Claim::Ranges(vec![])
        );
    }

    #[test]
    fn late_shard_claims_nothing() {
        let existing = view(vec![
            shard(1, &[(0, 5460)]),
            shard(2, &[(5461, 10922)]),
            shard(3, &[(10923, 16383)]),
        ]);
        // Started with 3 peers: it computes 4 initial shards, but its range is owned already.
        assert_eq!(
            decide_claim(ShardId(4), 4, &existing),
            Claim::Ranges(vec![])
        );
        // Started with 2 peers: it is outside the initial split.
        assert_eq!(
            decide_claim(ShardId(4), 3, &existing),
            Claim::Ranges(vec![])
        );
    }
}
