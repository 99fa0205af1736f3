//! Calling the leader of another (or this) shard, for the rebalance protocol and the catalog:
//! find it in the gossip view, follow `NotLeader` hints, try other members, retry until a deadline.
//!
//! Which member to try next is `unikv_types::leader` (the same walk the router uses to reach a
//! shard); this file is the loop around it: candidates from the gossip view, the transport call
//! and the node's pacing.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use unikv_gossip::ShardView;
use unikv_types::leader::{candidates, classify, Answer, LeaderWalk, Next};
use unikv_types::{KvError, NodeRef, ShardId};

use crate::service::Node;

/// How a hand-off (of a slot, a chunk or a shard key's part) ended, as its source tells the
/// target that asks (`MOVE_STATUS`, `CHUNK_STATUS`, `UNIT_STATUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HandoffStatus {
    /// The source let go: the target may serve.
    Done,
    /// Still handing off, or the source cannot tell: wait.
    Pending,
    /// The source kept it: the target drops its copy.
    Aborted,
}

/// Longest single attempt.
const PER_TRY: Duration = Duration::from_secs(3);
/// Pause when the view names no member of the shard, or every member failed once.
const ROUND_PAUSE: Duration = Duration::from_millis(100);
/// Pause after `MAX_HOPS` `NotLeader` redirects in a row (two nodes naming each other).
const HOP_PAUSE: Duration = Duration::from_millis(50);
const MAX_HOPS: u32 = 3;

/// Sends `req` to the leader of `shard` and returns its answer. Retries on `NotLeader`,
/// `Unavailable` and transport errors until `timeout`; other errors (`Unknown` included: the
/// request is not resent when it may have been applied) are returned as they are.
pub async fn call_shard<Req, Resp>(
    node: &Node,
    shard: ShardId,
    kind: u8,
    req: &Req,
    timeout: Duration,
) -> Result<Resp, KvError>
where
    Req: Serialize,
    Resp: DeserializeOwned,
{
    let deadline = Instant::now() + timeout;
    let mut walk = LeaderWalk::new(MAX_HOPS);
    // The leader the last `NotLeader` named, tried first until it fails.
    let mut hint: Option<NodeRef> = None;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(KvError::Unavailable {
                shard,
                reason: "no leader of the shard answered in time".into(),
            });
        }
        let view = node.gossip.view();
        let members = shard_members(hint.as_ref(), view.shard(shard));
        let target = match walk.next(&members) {
            Next::Try(target) => target,
            Next::NoCandidates | Next::Exhausted => {
                tokio::time::sleep(ROUND_PAUSE.min(remaining)).await;
                continue;
            }
        };
        let answer = node
            .transport
            .call::<_, Result<Resp, KvError>>(&target.raft, kind, req, remaining.min(PER_TRY))
            .await;
        match classify(answer) {
            Answer::Reply(resp) => return Ok(resp),
            Answer::NotLeader(leader) => {
                hint = walk.not_leader(&target, leader).or(forget(hint, &target));
            }
            Answer::Unavailable(_) | Answer::Lost(_) => {
                walk.failed(&target);
                hint = forget(hint, &target);
            }
            Answer::Unknown(e) | Answer::Other(e) => return Err(e),
        }
        if walk.should_pause() {
            tokio::time::sleep(HOP_PAUSE.min(remaining)).await;
        }
    }
}

/// The members to try, best first: the hint, the view's leader, then the live members (all
/// members if gossip reports none live).
fn shard_members(hint: Option<&NodeRef>, sv: Option<&ShardView>) -> Vec<NodeRef> {
    let Some(sv) = sv else {
        return candidates(hint);
    };
    let members: Vec<NodeRef> = sv
        .members
        .iter()
        .filter(|m| m.live || sv.members.iter().all(|m| !m.live))
        .map(|m| NodeRef {
            node_id: m.node_id,
            http: m.http.clone(),
            raft: m.raft.clone(),
        })
        .collect();
    candidates(hint.into_iter().chain(&sv.leader).chain(&members))
}

/// Drops `hint` if it names `target` (which just failed).
fn forget(hint: Option<NodeRef>, target: &NodeRef) -> Option<NodeRef> {
    hint.filter(|h| h.raft != target.raft)
}

/// How handing a unit's data to the target's leader ended.
pub enum Delivery<R = ()> {
    /// The target committed it (its answer).
    Taken(R),
    /// The target refused it (its code and message): the source aborts.
    Refused { code: String, message: String },
    /// No confirmation before the deadline (the last error): the source aborts.
    TimedOut(KvError),
}

/// Pause between delivery attempts.
const DELIVERY_PAUSE: Duration = Duration::from_millis(200);

/// Sends a hand-off's data (`kind`: `MOVE_IN`, `CHUNK_IN`) to `to`'s leader until it is taken,
/// refused, or `give_up_at` passes — the unit stays frozen meanwhile, so the bound holds
/// whatever gossip says of the target. A retry never stores a second copy (the target's step
/// is idempotent per epoch). `Err` if this node stops leading (the next leader resumes).
pub async fn deliver<M: Serialize, R: DeserializeOwned>(
    node: &Node,
    to: ShardId,
    kind: u8,
    msg: &M,
    give_up_at: Instant,
) -> Result<Delivery<R>, KvError> {
    loop {
        if !node.is_leader() {
            return Err(
                node.unavailable("lost leadership during a hand-off; the next leader resumes it")
            );
        }
        let left = give_up_at.saturating_duration_since(Instant::now());
        let res = if left.is_zero() {
            Err(KvError::Unavailable {
                shard: to,
                reason: "no answer in time".into(),
            })
        } else {
            call_shard::<_, R>(node, to, kind, msg, left.min(Duration::from_secs(5))).await
        };
        match res {
            Ok(r) => return Ok(Delivery::Taken(r)),
            Err(KvError::BadRequest { code, message }) => {
                return Ok(Delivery::Refused { code, message })
            }
            Err(e) if Instant::now() >= give_up_at => return Ok(Delivery::TimedOut(e)),
            Err(_) => tokio::time::sleep(DELIVERY_PAUSE).await,
        }
    }
}

/// How a target answered a source that wants to give a hand-off up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseAnswer {
    /// The target committed `Refuse`: it never takes that hand-off, the source may abort.
    Refused,
    /// The target committed the hand-off's `In` already (it serves the unit): finish it.
    AlreadyReceived,
}

/// Pause between refuse rounds while the target does not answer.
const REFUSE_PAUSE: Duration = Duration::from_millis(200);

/// Asks `to` to refuse a hand-off for good (`kind`: `MOVE_REFUSE`, `CHUNK_REFUSE`) until it
/// answers one way or the other: the unit stays frozen meanwhile (unavailable, never served
/// by both). `Err` if this node stops leading (the next leader settles it).
pub async fn refuse_until_answered<M: Serialize>(
    node: &Node,
    to: ShardId,
    kind: u8,
    req: &M,
    unit: &str,
) -> Result<RefuseAnswer, KvError> {
    loop {
        let give_up_at = Instant::now() + node.config.handoff_timeout();
        match deliver::<_, ()>(node, to, kind, req, give_up_at).await? {
            Delivery::Taken(()) => return Ok(RefuseAnswer::Refused),
            Delivery::Refused { code, .. } if code == unikv_storage::moves::ALREADY_RECEIVED => {
                return Ok(RefuseAnswer::AlreadyReceived)
            }
            Delivery::Refused { code, message } => {
                tracing::warn!(shard = %node.shard(), unit, to = %to, %code, %message, "target answered neither refused nor received; asking again");
            }
            Delivery::TimedOut(e) => {
                tracing::warn!(shard = %node.shard(), unit, to = %to, error = %e, "target unreachable: the unit stays frozen until it answers");
            }
        }
        tokio::time::sleep(REFUSE_PAUSE).await;
    }
}
