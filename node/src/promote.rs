//! The promote of seed 003 (hash → custom, one way), run by the leader of the shard that holds
//! the catalog when the change reaches it.
//!
//! The catalog change itself is one Raft commit and moves no byte: the collection's data
//! becomes its default shard key's, where it is. What the seed asks around it is that nothing
//! moves while it happens, checked before and again "inside the commit". Here:
//! 1. a dry run of the change on the applied catalog: if it would be refused (unknown,
//!    already custom), the change is proposed without fences, to be refused by the commit (or
//!    answered from the dedup record, for a client's retry of a promote that went through);
//! 2. every shard that owns slots commits a **fence** in its own Raft log: it starts no slot
//!    move until the fence ends. A shard with a move in flight, or not active, refuses its fence
//!    (409); one that cannot commit within a second — no leader, no quorum, unreachable —
//!    fails it (503, final: a router does not retry it); either way the fences set are
//!    released and nothing else happens;
//! 3. with every fence held, the catalog change commits (compare-and-set on the version);
//! 4. the fences are released. A coordinator that dies leaves fences that end by themselves
//!    ([`FENCE_FOR`] by each shard's clock), and either the old catalog or the new one: the flip
//!    is the one commit.

use std::time::{Duration, Instant};

use openraft::type_config::async_runtime::WatchReceiver;
use openraft::Instant as _;
use serde::{Deserialize, Serialize};
use unikv_storage::{Command, RegistryCommand};
use unikv_types::catalog::{catalog_slot, Catalog, CatalogOp, CATALOG_KEY};
use unikv_types::{rpc_kind, Keyspace, KvError, KvReply, ShardId};

use crate::peer::call_shard;
use crate::service::Node;

/// How long a fence holds at most.
pub const FENCE_FOR: Duration = Duration::from_secs(10);
/// How long a shard gets to commit its fence.
const FENCE_CALL: Duration = Duration::from_millis(1000);

/// `FENCE` (shard leader): set or release a promote's fence on slot moves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FenceRequest {
    Set {
        token: u64,
        until_ms: u64,
        now_ms: u64,
    },
    Release {
        token: u64,
    },
}

impl Node {
    /// `FENCE` on this shard's leader.
    pub async fn fence(&self, req: FenceRequest) -> Result<(), KvError> {
        if !self.is_leader() {
            return Err(KvError::NotLeader {
                shard: self.shard(),
                leader: self.leader(),
            });
        }
        if matches!(req, FenceRequest::Set { .. }) {
            let busy = self.installing_snapshots();
            if !busy.is_empty() {
                return Err(KvError::Refused {
                    status: 409,
                    code: "snapshot_installing".into(),
                    message: format!(
                        "shard {}: node(s) {busy:?} are installing a snapshot (behind the log the leader keeps); try again once they caught up",
                        self.shard()
                    ),
                });
            }
        }
        let cmd = match req {
            FenceRequest::Set {
                token,
                until_ms,
                now_ms,
            } => RegistryCommand::Fence {
                token,
                until_ms,
                now_ms,
            },
            FenceRequest::Release { token } => RegistryCommand::Unfence { token },
        };
        self.propose(Command::Registry(cmd)).await.map(|_| ())
    }

    /// Runs a promote (`cmd` carries `op`) on the catalog shard's leader: see the module.
    pub async fn promote(&self, cmd: Command, op: &CatalogOp) -> Result<KvReply, KvError> {
        let now = unikv_types::wall_clock_ms();
        let mut dry = self.applied_catalog()?;
        if dry.apply(op, now).is_err() {
            // Nothing to fence for: the commit refuses it the same way — or, for a retry of a
            // promote that went through (same client id and seq), answers what it answered.
            return self.propose(cmd).await;
        }
        // Unique enough: this node's id, its clock and a counter.
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = (self.id().0 << 48) ^ (now << 8) ^ seq;
        let started = Instant::now();
        let until_ms = now + FENCE_FOR.as_millis() as u64;
        // Every shard at once, each given [`FENCE_CALL`]: the promote answers well within one
        // attempt of a router, so its answer is final (never retried while still running).
        let shards = self.slot_owners();
        let set = FenceRequest::Set {
            token,
            until_ms,
            now_ms: now,
        };
        let results =
            futures::future::join_all(shards.iter().map(|s| self.fence_on(*s, set.clone()))).await;
        let mut fenced = Vec::new();
        let mut refusal = None;
        for (shard, r) in shards.iter().zip(results) {
            match r {
                Ok(()) => fenced.push(*shard),
                Err(e) => {
                    let e = match e {
                        KvError::Unavailable { reason, .. } | KvError::Unknown { reason } => {
                            KvError::Refused {
                                status: 503,
                                code: "unavailable".into(),
                                message: format!(
                                    "the promote needs every shard owning slots to commit a fence; shard {shard} could not ({reason}); nothing was changed"
                                ),
                            }
                        }
                        other => other,
                    };
                    refusal.get_or_insert(e);
                }
            }
        }
        let res = match refusal {
            Some(e) => Err(e),
            // Every fence holds until `until_ms`; commit well before it.
            None if started.elapsed() >= FENCE_FOR / 2 => Err(self
                .unavailable("setting the fences took too long; nothing was changed, try again")),
            None => self.propose(cmd).await,
        };
        let release = FenceRequest::Release { token };
        let released =
            futures::future::join_all(fenced.iter().map(|s| self.fence_on(*s, release.clone())))
                .await;
        for (shard, r) in fenced.iter().zip(released) {
            if let Err(e) = r {
                tracing::warn!(%shard, token, error = %e, "releasing a promote's fence (it ends by itself)");
            }
        }
        if res.is_ok() {
            tracing::info!(change = ?op.change, "collection promoted");
            if started.elapsed() >= FENCE_FOR {
                // Proposed in time, committed late (a slow quorum): a fence may have ended
                // first and a move started. Nothing is lost (the default shard key follows the
                // slot map), but the rule "no move during a promote" was not kept.
                tracing::error!(
                    took_ms = started.elapsed().as_millis() as u64,
                    "a promote committed after its fences could have ended"
                );
            }
        }
        res
    }

    /// On the leader: the members installing a snapshot now (see [`receiving_snapshot`]).
    fn installing_snapshots(&self) -> Vec<u64> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let purged = m.purged.as_ref().map(|l| l.index);
        let (Some(repl), Some(beats)) = (&m.replication, &m.heartbeat) else {
            return Vec::new();
        };
        let followers = repl
            .iter()
            .filter(|(id, _)| **id != m.id)
            .map(|(id, matched)| {
                let acked = beats.get(id).and_then(|t| t.as_ref()).map(|t| t.elapsed());
                (id.0, matched.as_ref().map(|l| l.index), acked)
            });
        receiving_snapshot(purged, followers)
    }

    async fn fence_on(&self, shard: ShardId, req: FenceRequest) -> Result<(), KvError> {
        if shard == self.shard() {
            return self.fence(req).await;
        }
        call_shard(self, shard, rpc_kind::FENCE, &req, FENCE_CALL).await
    }

    /// Every shard the view says owns slots, and this one.
    fn slot_owners(&self) -> Vec<ShardId> {
        let view = self.gossip.view();
        let mut out: Vec<ShardId> = view
            .shards
            .values()
            .filter(|s| !s.slots.is_empty())
            .map(|s| s.id)
            .collect();
        if !out.contains(&self.shard()) {
            out.push(self.shard());
        }
        out.sort();
        out
    }

    /// The catalog as this replica applied it (its shard must hold the catalog).
    fn applied_catalog(&self) -> Result<Catalog, KvError> {
        match self
            .store
            .get_in(catalog_slot(), Keyspace::SYSTEM, CATALOG_KEY)
        {
            Ok(Some(json)) => serde_json::from_str(&json)
                .map_err(|e| KvError::Internal(format!("the stored catalog does not decode: {e}"))),
            Ok(None) => Ok(Catalog::default()),
            Err(e) => Err(KvError::Internal(e.to_string())),
        }
    }
}

/// How recently a follower must have answered the leader to count as installing a snapshot
/// (rather than being down: a dead follower does not hold a promote back; the fences' own
/// commits prove a quorum).
const ANSWERED_WITHIN: Duration = Duration::from_secs(2);

/// The followers (id, matched log index, time since they last answered a heartbeat) that
/// are installing a snapshot: they answer, but what they hold ends before the first entry the
/// leader still keeps (`purged`), so only a snapshot can bring them up.
fn receiving_snapshot(
    purged: Option<u64>,
    followers: impl Iterator<Item = (u64, Option<u64>, Option<Duration>)>,
) -> Vec<u64> {
    let Some(purged) = purged else {
        return Vec::new();
    };
    followers
        .filter(|(_, matched, acked)| {
            matched.is_none_or(|m| m < purged) && acked.is_some_and(|a| a <= ANSWERED_WITHIN)
        })
        .map(|(id, _, _)| id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_that_answers_behind_the_purged_log_is_installing_a_snapshot() {
        let s = Duration::from_millis;
        let f = vec![
            (2, Some(90), Some(s(100))),  // behind the purge, answering: installing
            (3, Some(150), Some(s(100))), // caught up
            (4, None, Some(s(50))),       // nothing matched yet, answering: installing
            (5, Some(10), Some(s(5000))), // behind but silent: down, not installing
            (6, Some(10), None),          // never answered
        ];
        assert_eq!(
            receiving_snapshot(Some(100), f.clone().into_iter()),
            vec![2, 4]
        );
        // Nothing purged: every follower can catch up from the log.
        assert!(receiving_snapshot(None, f.into_iter()).is_empty());
    }
}
