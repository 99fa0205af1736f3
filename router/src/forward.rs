//! The request path: route one KV request to the node that can serve it, following redirects
//! and retrying until the request deadline.
//!
//! Each attempt routes by the current table: the slot's owner shard, then the best node for it
//! (leader hint, the view's leader, a live member — members forward writes to their leader and
//! serve linearizable reads themselves). Replies steer the next attempt: `NotLeader` names the
//! leader, `WrongShard` the new owner (or we wait for gossip to tell), `Unavailable` and
//! transport failures move on to the next member. Retrying writes is safe because every write
//! carries a (client id, seq) that the shard applies at most once; a request keeps the same pair
//! for all of its attempts. One attempt is capped well below the deadline so a dead node that
//! never answers cannot eat the whole budget.
//!
//! The leader-finding part of the walk (which node next, following `NotLeader`, crossing off
//! nodes that failed, the redirect cap) is `unikv_types::leader`, shared with the nodes'
//! calls to other shards; this file adds the router's own concerns around it: owners learned
//! from `WrongShard`, view waits, sessions, counters, suspects and what a 503 says.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::watch;
use tokio::time::Instant;
use unikv_http::ApiError;
use unikv_net::Transport;
use unikv_types::catalog::Space;
use unikv_types::leader::{classify, Answer, LeaderWalk, Next};
use unikv_types::{
    key_slot, rpc_kind, ClientSeq, KvError, KvOp, KvReply, KvRequest, Limits, ShardId,
};

use crate::routing::{Routing, Table};
use crate::sessions::Sessions;
use crate::status::Counters;

/// Longest single attempt: a dead node costs at most this much of a request's deadline.
const ATTEMPT_CAP: Duration = Duration::from_millis(1500);
/// How long a chunk move may take (it answers once done, after its copy): its deadline and
/// its one attempt. Past it the call answers 503 and the move goes on; asked again, the
/// shard answers once that move is done.
pub const MOVE_TIMEOUT: Duration = Duration::from_secs(300);
/// Pause after every known node of the shard failed once, before trying them again.
const BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait for gossip after a `WrongShard` that named no newer owner.
const VIEW_WAIT: Duration = Duration::from_millis(250);
/// Redirects followed back to back before pausing (two nodes naming each other as leader must
/// not spin).
const MAX_HOPS: u32 = 3;

/// Sends one KV request to one node. The QUIC transport in production, a fake in tests.
pub trait Backend: Send + Sync + 'static {
    fn call(
        &self,
        raft_addr: &str,
        req: &KvRequest,
        timeout: Duration,
    ) -> impl Future<Output = unikv_net::Result<Result<KvReply, KvError>>> + Send;
}

impl Backend for Transport {
    fn call(
        &self,
        raft_addr: &str,
        req: &KvRequest,
        timeout: Duration,
    ) -> impl Future<Output = unikv_net::Result<Result<KvReply, KvError>>> + Send {
        Transport::call(self, raft_addr, rpc_kind::KV, req, timeout)
    }
}

/// Routes KV requests; shared by all HTTP handlers.
pub struct Forwarder<B> {
    backend: B,
    routing: Arc<Routing>,
    sessions: Sessions,
    counters: Counters,
    limits: Limits,
    timeout: Duration,
}

/// What the request loop knows when it gives up.
struct Trail {
    shard: Option<ShardId>,
    last_error: String,
    /// A write attempt may have reached a node without an answer.
    maybe_applied: bool,
}

impl<B: Backend> Forwarder<B> {
    pub fn new(backend: B, routing: Arc<Routing>, limits: Limits, timeout: Duration) -> Self {
        Forwarder {
            backend,
            routing,
            sessions: Sessions::new(),
            counters: Counters::default(),
            limits,
            timeout,
        }
    }

    /// How long a request may take, retries included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    /// Serves one request. `client` is the caller's (client id, seq), if it sent one; writes
    /// without one get a router session.
    pub async fn execute(
        &self,
        key: String,
        op: KvOp,
        client: Option<ClientSeq>,
        space: Space,
    ) -> Result<KvReply, ApiError> {
        self.execute_on(key, op, client, space, None).await
    }

    /// [`Forwarder::execute`] to shard `pin` if given (a custom collection's shard key
    /// places the key's bucket there), else to the owner of the key's slot.
    pub async fn execute_on(
        &self,
        key: String,
        op: KvOp,
        client: Option<ClientSeq>,
        space: Space,
        pin: Option<ShardId>,
    ) -> Result<KvReply, ApiError> {
        self.counters.request();
        let result = self.route(key, op, client, space, pin).await;
        self.counters.finished(result.is_ok());
        result
    }

    async fn route(
        &self,
        key: String,
        op: KvOp,
        client: Option<ClientSeq>,
        space: Space,
        pin: Option<ShardId>,
    ) -> Result<KvReply, ApiError> {
        let value = match &op {
            KvOp::Put { value } | KvOp::Append { value } => Some(value.as_str()),
            _ => None,
        };
        self.limits.check(&key, value)?;
        let slot = key_slot(key.as_bytes());
        let is_write = op.is_write();
        let lease = (client.is_none() && is_write).then(|| self.sessions.lease());
        // Stamped once: every attempt carries when the request was first sent (see `ClientSeq`).
        let client = client
            .or_else(|| lease.as_ref().map(|l| l.client_seq()))
            .map(|c| c.stamped(unikv_types::wall_clock_ms()));
        let req = KvRequest {
            key,
            op,
            client,
            forwarded: false,
            collection: space.collection,
            shard_key: space.shard_key,
        };

        let (timeout, attempt_cap) = match req.op {
            KvOp::MoveChunk { .. } => (MOVE_TIMEOUT, MOVE_TIMEOUT),
            _ => (self.timeout, ATTEMPT_CAP),
        };
        let deadline = Instant::now() + timeout;
        let mut tables = self.routing.subscribe();
        let mut trail = Trail {
            shard: None,
            last_error: "no shard owns the slot yet".into(),
            maybe_applied: false,
        };
        // Which of the shard's nodes failed this request in this round, and the redirects.
        let mut walk = LeaderWalk::new(MAX_HOPS);
        loop {
            let table: Arc<Table> = tables.borrow_and_update().clone();
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let owner = match pin {
                Some(shard) => Some(crate::routing::Owner {
                    shard,
                    epoch: unikv_types::Epoch(0),
                }),
                None => self.routing.owner(&table, slot),
            };
            let Some(owner) = owner else {
                trail.shard = table.last_owner(slot).or(trail.shard);
                trail.last_error = "no shard owns the slot in the current view".into();
                tracing::debug!(slot, "no owner; waiting for gossip");
                wait_for_view(&mut tables, deadline).await;
                continue;
            };
            trail.shard = Some(owner.shard);
            let targets = self.routing.targets(&table, owner.shard);
            let target = match walk.next(&targets) {
                Next::Try(target) => target,
                Next::NoCandidates => {
                    trail.last_error = format!("no member of shard {} is known", owner.shard);
                    wait_for_view(&mut tables, deadline.min(now + VIEW_WAIT)).await;
                    continue;
                }
                Next::Exhausted => {
                    pause(BACKOFF, deadline).await;
                    continue;
                }
            };

            let budget = deadline.saturating_duration_since(now).min(attempt_cap);
            let outcome = self.backend.call(&target.raft, &req, budget).await;
            let shard = owner.shard;
            match classify(outcome) {
                Answer::Reply(reply) => {
                    self.routing.vouch(&target.raft);
                    return Ok(reply);
                }
                Answer::NotLeader(leader) => {
                    self.counters.redirect();
                    self.routing.vouch(&target.raft);
                    trail.last_error = format!("node {} is not the leader", target.node_id);
                    match walk.not_leader(&target, leader) {
                        Some(l) => {
                            tracing::debug!(shard = %shard, slot, leader = %l.raft, "redirected to leader");
                            self.routing.learn_leader(&table, shard, l);
                        }
                        None => self.routing.forget_leader(shard, &target.raft),
                    }
                }
                // A shard key's placement never changes: the router's catalog was stale.
                Answer::Other(e @ KvError::WrongShard { .. }) if pin.is_some() => {
                    return Err(e.into());
                }
                Answer::Other(KvError::WrongShard {
                    owner: new_owner,
                    epoch,
                    ..
                }) => {
                    self.counters.redirect();
                    self.routing.vouch(&target.raft);
                    trail.last_error = format!("shard {shard} does not own the slot");
                    let learned = match (new_owner, epoch) {
                        (Some(o), Some(e)) if o != shard => {
                            self.routing.learn_owner(&table, slot, o, e)
                        }
                        _ => false,
                    };
                    tracing::debug!(shard = %shard, slot, owner = ?new_owner, epoch = ?epoch, learned, "wrong shard");
                    if learned {
                        walk.hop();
                    } else {
                        wait_for_view(&mut tables, deadline.min(Instant::now() + VIEW_WAIT)).await;
                    }
                }
                Answer::Unavailable(e) | Answer::Unknown(e) => {
                    // `Unknown` (the leader changed before answering) is retried too: the
                    // request carries a (client id, seq) if it is a write, so resending is safe
                    // and the shard answers with the real outcome.
                    self.counters.retry();
                    self.routing.vouch(&target.raft);
                    self.routing.forget_leader(shard, &target.raft);
                    if matches!(e, KvError::Unknown { .. }) {
                        trail.maybe_applied |= is_write;
                    }
                    tracing::debug!(shard = %shard, slot, node = %target.raft, error = %e, "retrying");
                    trail.last_error = e.to_string();
                    walk.failed(&target);
                }
                Answer::Other(other) => return Err(other.into()),
                Answer::Lost(e) => {
                    self.counters.retry();
                    if e.is_unreachable() {
                        self.routing.suspect(&target.raft);
                    }
                    if !e.not_sent() {
                        trail.maybe_applied |= is_write;
                    }
                    self.routing.forget_leader(shard, &target.raft);
                    tracing::debug!(shard = %shard, slot, node = %target.raft, error = %e, "node did not answer");
                    trail.last_error = format!("node {} ({}): {e}", target.node_id, target.raft);
                    walk.failed(&target);
                }
            }
            if walk.should_pause() {
                pause(BACKOFF, deadline).await;
            }
        }
        self.counters.gave_up();
        Err(self.unavailable(slot, is_write, trail, timeout))
    }

    fn unavailable(&self, slot: u16, is_write: bool, trail: Trail, timeout: Duration) -> ApiError {
        let shard = match trail.shard {
            Some(s) => format!("shard {s}"),
            None => "no shard".into(),
        };
        tracing::warn!(slot, shard = ?trail.shard.map(|s| s.0), error = %trail.last_error, "request deadline passed");
        let err = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "slot {slot} ({shard}) could not be served within {} ms: {}",
                timeout.as_millis(),
                trail.last_error
            ),
        )
        .with("slot", slot)
        .with("shard", trail.shard);
        if is_write {
            err.with("maybe_applied", trail.maybe_applied)
        } else {
            err
        }
    }
}

/// Waits until a new table is installed or `until` passes.
async fn wait_for_view(tables: &mut watch::Receiver<Arc<Table>>, until: Instant) {
    match tokio::time::timeout_at(until, tables.changed()).await {
        Ok(Ok(())) | Err(_) => {}
        // The routing state is gone (shutting down): nothing will change, so just wait.
        Ok(Err(_)) => tokio::time::sleep_until(until).await,
    }
}

/// Sleeps for `d`, but not past `deadline`.
async fn pause(d: Duration, deadline: Instant) {
    tokio::time::sleep_until(deadline.min(Instant::now() + d)).await;
}

#[cfg(test)]
#[path = "forward_tests.rs"]
pub(crate) mod tests;
