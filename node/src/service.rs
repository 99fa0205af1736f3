//! The node's request logic, shared by its HTTP API and its QUIC RPC server: KV operations
//! (writes through Raft on the leader, forwarded from followers; linearizable reads on any
//! member via ReadIndex) and the facts `/raft/status` reports. Membership changes are in
//! `membership`.

use std::time::{Duration, Instant};

use openraft::errors::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::{LinearizerOption, ReadPolicy, ServerState};
use serde::{Deserialize, Serialize};
use unikv_net::Transport;
use unikv_storage::{Command, LeaderClock, NodeAddr, OwnedRead, StateMachine, Store, TypeConfig};
use unikv_types::catalog::{CatalogChange, Placement, DEFAULT_COLLECTION};
use unikv_types::{
    key_slot, rpc_kind, Keyspace, KvError, KvOp, KvReply, KvRequest, Limits, NodeId, NodeRef,
    ShardId, Slot,
};

use crate::config::Config;

pub type Raft = openraft::Raft<TypeConfig, StateMachine>;

/// Answer to a HELLO probe: who listens at an address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub shard: ShardId,
    pub node_id: NodeId,
    pub http: String,
    pub raft: String,
}

pub struct Node {
    pub config: Config,
    pub raft: Raft,
    pub store: Store,
    pub transport: Transport,
    pub me: NodeAddr,
    pub limits: Limits,
    pub gossip: unikv_gossip::Gossip,
    /// Refuses votes for one lease after a restart (see `vote_hold`).
    pub vote_hold: crate::vote_hold::VoteHold,
    /// Why this fresh shard does not claim its initial slots, if something stops it (shown
    /// in `/raft/status`).
    pub claim_problem: std::sync::Mutex<Option<String>>,
    /// The last catalog read (see `catalog`).
    pub catalog: unikv_http::catalog_cache::CatalogCache,
    /// Chunk moves and activation checks in flight on this node, by chunk (see `chunks`).
    pub chunk_tasks: std::sync::Mutex<std::collections::HashSet<(u8, u64)>>,
    /// Slots this leader handed off that their target serves already (see `handed`).
    pub handed: crate::handed::Handed,
    /// The copies of slots and chunks this leader sends (see `copies`).
    pub copies: crate::copies::Copies,
    /// The chunk hand-offs this node ran as their source's leader (see `move_tally`).
    pub chunk_moves: crate::move_tally::ChunkMoves,
    /// `--move_rate_mb`, shared by every hand-off this node sends.
    pub throttle: crate::throttle::Throttle,
    /// Scan pages of range collections this node has served (`/raft/status`).
    pub scans_served: std::sync::atomic::AtomicU64,
    /// When the process started, by its monotonic clock (`uptime_ms` in `/raft/status`: with
    /// the wall clock beside it, it shows the clock rate the node runs at).
    pub started: Instant,
}

/// 400 for a range-only operation on a collection that is not sharded by range.
pub fn not_range(collection: Option<&str>, op: &KvOp) -> KvError {
    KvError::BadRequest {
        code: "not_range".into(),
        message: format!(
            "{} works on range collections; {:?} is not one",
            op.name(),
            collection.unwrap_or(DEFAULT_COLLECTION)
        ),
    }
}

/// Where a resolved request's key lives on a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    /// In its hash slot.
    Slot,
    /// In the unit of a shard key placed on this shard; the key's bucket.
    Bucket(u16),
    /// In a chunk of a range collection.
    Range,
}

pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait between attempts while a leader is being elected.
pub(crate) const LEADER_POLL: Duration = Duration::from_millis(50);

fn node_ref(id: NodeId, addr: &NodeAddr) -> NodeRef {
    NodeRef {
        node_id: id,
        http: addr.http.clone(),
        raft: addr.raft.clone(),
    }
}

impl Node {
    pub fn claim_problem(&self) -> Option<String> {
        self.claim_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_claim_problem(&self, why: Option<String>) {
        *self.claim_problem.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    pub fn id(&self) -> NodeId {
        self.config.node()
    }

    pub fn shard(&self) -> ShardId {
        self.config.shard()
    }

    /// The leader this node currently knows of, with its addresses.
    pub fn leader(&self) -> Option<NodeRef> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id)?.clone();
        Some(node_ref(id, &addr))
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader
    }

    pub fn hello(&self) -> Hello {
        Hello {
            shard: self.shard(),
            node_id: self.id(),
            http: self.me.http.clone(),
            raft: self.me.raft.clone(),
        }
    }

    /// `NotLeader` with the leader openraft pointed at.
    fn not_leader(&self, f: openraft::errors::ForwardToLeader<TypeConfig>) -> KvError {
        KvError::NotLeader {
            shard: self.shard(),
            leader: f
                .leader_id
                .zip(f.leader_node)
                .map(|(id, n)| node_ref(id, &n)),
        }
    }

    pub fn unavailable(&self, reason: impl Into<String>) -> KvError {
        KvError::Unavailable {
            shard: self.shard(),
            reason: reason.into(),
        }
    }

    /// Serves a KV request: validates it, then writes through Raft (forwarding to the leader
    /// if needed) or reads linearizably. Retries while a leader is being elected, up to the
    /// request timeout.
    pub async fn kv(&self, req: KvRequest) -> Result<KvReply, KvError> {
        let (collection, shard_key) = (req.collection.as_deref(), req.shard_key.as_deref());
        let target = self.resolve(collection, shard_key).await?;
        if req.op == KvOp::Usage {
            let st = self
                .store
                .usage(target.keyspace, &target.placement)
                .map_err(|e| KvError::Internal(e.to_string()))?;
            return Ok(KvReply::Usage {
                keys: st.keys,
                bytes: st.bytes,
            });
        }
        if req.op.is_range_only() && target.placement != Placement::Range {
            return Err(not_range(collection, &req.op));
        }
        if target.keyspace.is_default() || target.keyspace == Keyspace::SYSTEM {
            return self.kv_in(req, target.keyspace, Home::Slot).await;
        }
        match self.kv_at(req.clone(), &target).await {
            // The shard dropped that keyspace: this node's catalog was stale (the collection
            // was deleted, perhaps created again under the same name with a new id).
            Err(e) if e.code() == "unknown_collection" => {
                let name = req.collection.as_deref().unwrap_or(DEFAULT_COLLECTION);
                let fresh = self.read_catalog().await?;
                match fresh.target(name, req.shard_key.as_deref()) {
                    Ok(t) if t.keyspace != target.keyspace => self.kv_at(req, &t).await,
                    Ok(_) => Err(e),
                    Err(e) => Err(e.into()),
                }
            }
            other => other,
        }
    }

    /// [`Node::kv`] once the request's collection is resolved to `keyspace` and the key's
    /// `home` here.
    pub async fn kv_in(
        &self,
        req: KvRequest,
        keyspace: Keyspace,
        home: Home,
    ) -> Result<KvReply, KvError> {
        let value = match &req.op {
            unikv_types::KvOp::Put { value } | unikv_types::KvOp::Append { value } => {
                Some(value.as_str())
            }
            _ => None,
        };
        self.limits.check(&req.key, value)?;
        if let Some(c) = self.store.corruption() {
            return Err(self.corrupted(&c));
        }
        let slot = key_slot(req.key.as_bytes());
        let deadline = Instant::now() + self.config.request_timeout();
        loop {
            let res = if req.op.is_write() {
                self.write(slot, keyspace, home, &req, deadline).await
            } else if let Some(l) = self.leader_for_full_disk(&req) {
                // This follower's applies wait for space; the leader serves the read.
                self.forward(l, &req, deadline).await
            } else {
                self.read(slot, keyspace, home, &req.key, deadline).await
            };
            match res {
                Err(KvError::WrongShard {
                    slot,
                    shard,
                    owner: None,
                    ..
                }) if home != Home::Range => return Err(self.wrong_shard(slot, shard)),
                // A slot frozen for its hand-off: on to the target once it serves the slot,
                // else wait for the hand-off to end (woken by it, not by a poll).
                Err(KvError::Unavailable { .. })
                    if home == Home::Slot
                        && !req.forwarded
                        && Instant::now() + LEADER_POLL < deadline
                        && self.store.is_outgoing(slot) =>
                {
                    if let Some(e) = self.handed_to(slot) {
                        return Err(e);
                    }
                    let again =
                        || self.handed.owner(slot).is_some() || !self.store.is_outgoing(slot);
                    self.handed.wait(LEADER_POLL, again).await;
                    if let Some(e) = self.handed_to(slot) {
                        return Err(e);
                    }
                }
                // A request in flight when the data was found damaged says so, whatever
                // failed first (typically: Raft stopped).
                Err(_) if self.store.corruption().is_some() => {
                    return Err(self.corrupted(&self.store.corruption().unwrap_or_default()));
                }
                Err(KvError::NotLeader { .. }) | Err(KvError::Unavailable { .. })
                    if Instant::now() + LEADER_POLL < deadline && !req.forwarded =>
                {
                    tokio::time::sleep(LEADER_POLL).await;
                }
                other => return other,
            }
        }
    }

    /// The answer of a replica whose stored data is damaged: it serves nothing until rebuilt.
    pub fn corrupted(&self, what: &str) -> KvError {
        KvError::Unavailable {
            shard: self.shard(),
            reason: format!(
                "node {} found its stored data corrupted ({what}) and serves nothing until it is rebuilt from its peers (README: rebuilding a replica)",
                self.id()
            ),
        }
    }

    /// A `WrongShard` naming the target that serves `slot` already, if this leader handed
    /// it off and `Done` has not applied yet.
    fn handed_to(&self, slot: Slot) -> Option<KvError> {
        self.handed
            .owner(slot)
            .map(|(owner, epoch)| KvError::WrongShard {
                slot,
                shard: self.shard(),
                owner: Some(owner),
                epoch: Some(epoch),
            })
    }

    /// A `WrongShard` answer with the owner this node believes in, from gossip.
    fn wrong_shard(&self, slot: Slot, shard: ShardId) -> KvError {
        let owner = self.gossip.view().owner_of(slot);
        KvError::WrongShard {
            slot,
            shard,
            owner: owner.map(|(s, _)| s),
            epoch: owner.map(|(_, e)| e),
        }
    }

    async fn write(
        &self,
        slot: Slot,
        keyspace: Keyspace,
        home: Home,
        req: &KvRequest,
        deadline: Instant,
    ) -> Result<KvReply, KvError> {
        let max_value_bytes =
            matches!(req.op, KvOp::Append { .. }).then_some(self.limits.max_value_bytes as u64);
        let now_ms = unikv_types::wall_clock_ms();
        let cmd = Command::Kv {
            slot,
            key: req.key.clone(),
            op: req.op.clone(),
            client: req.client.clone().map(|c| c.stamped(now_ms)),
            max_value_bytes,
            clock: Some(LeaderClock {
                now_ms,
                dedup_window_ms: self.config.dedup_window_s.saturating_mul(1000),
            }),
            keyspace,
            bucket: match home {
                Home::Bucket(b) => Some(b),
                _ => None,
            },
            range: home == Home::Range,
        };
        let res = match &req.op {
            // A promote runs its fences on the leader; never proposed from anywhere else.
            KvOp::Catalog(op) if matches!(op.change, CatalogChange::Promote { .. }) => {
                if self.is_leader() {
                    self.promote(cmd, op).await
                } else {
                    Err(KvError::NotLeader {
                        shard: self.shard(),
                        leader: self.leader(),
                    })
                }
            }
            _ => self.propose(cmd).await,
        };
        match res {
            Err(KvError::NotLeader {
                leader: Some(l), ..
            }) if !req.forwarded && l.node_id != self.id() => self.forward(l, req, deadline).await,
            other => other,
        }
    }

    /// On a follower whose disk is full: the leader to send a read to.
    fn leader_for_full_disk(&self, req: &KvRequest) -> Option<NodeRef> {
        if req.forwarded || !self.store.db().disk().is_full() {
            return None;
        }
        self.leader().filter(|l| l.node_id != self.id())
    }

    /// `InsufficientStorage` if this node leads with a full disk: a write is then refused
    /// before it is proposed (one proposed but not yet durable here still completes once
    /// space returns, or through the followers' quorum).
    fn check_disk(&self) -> Result<(), KvError> {
        let disk = self.store.db().disk();
        if !disk.is_full() || !self.is_leader() {
            return Ok(());
        }
        let report = disk.report();
        Err(KvError::InsufficientStorage {
            shard: self.shard(),
            node: self.id(),
            reason: report
                .reason
                .unwrap_or_else(|| "no space left on device".into()),
        })
    }

    /// Proposes a command through this node's Raft group and returns its applied result;
    /// `NotLeader` (with the leader it knows) if this node does not lead.
    pub async fn propose(&self, cmd: Command) -> Result<KvReply, KvError> {
        self.check_disk()?;
        match self.raft.client_write(cmd).await {
            Ok(resp) => resp.data,
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(self.not_leader(f))
            }
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
                Err(KvError::Unknown {
                    reason: "leader changed before the write committed".into(),
                })
            }
            Err(e) => Err(self.unavailable(e.to_string())),
        }
    }

    /// Confirms with a quorum that this node leads its shard and has applied everything
    /// committed so far (a linearizable read barrier).
    pub async fn lead_barrier(&self) -> Result<(), KvError> {
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(self.not_leader(f))
            }
            Err(e) => Err(self.unavailable(e.to_string())),
        }
    }

    /// Sends a write to the leader. A write that may have reached it is never resent unless it
    /// carries a client id and sequence number (then the leader applies it at most once).
    pub(crate) async fn forward(
        &self,
        leader: NodeRef,
        req: &KvRequest,
        deadline: Instant,
    ) -> Result<KvReply, KvError> {
        let mut fwd = req.clone();
        fwd.forwarded = true;
        let timeout = deadline.saturating_duration_since(Instant::now());
        let call = self.transport.call::<_, Result<KvReply, KvError>>(
            &leader.raft,
            rpc_kind::KV,
            &fwd,
            timeout,
        );
        // A leader that died mid-request never answers: stop waiting once another is known.
        let outcome = tokio::select! {
            r = call => r,
            () = self.leader_moved_from(leader.node_id) => {
                return if req.client.is_some() || !req.op.is_write() {
                    Err(self.unavailable(format!("leader {} replaced while forwarding", leader.node_id)))
                } else {
                    Err(KvError::Unknown {
                        reason: format!("leader {} replaced before it answered", leader.node_id),
                    })
                };
            }
        };
        match outcome {
            Ok(res) => res,
            Err(e) if e.not_sent() || req.client.is_some() || !req.op.is_write() => {
                Err(self.unavailable(format!("leader {} unreachable: {e}", leader.node_id)))
            }
            Err(e) => Err(KvError::Unknown {
                reason: format!("forwarding to leader {} failed: {e}", leader.node_id),
            }),
        }
    }

    /// Completes once this node knows a leader other than `old`.
    async fn leader_moved_from(&self, old: NodeId) {
        let mut rx = self.raft.metrics();
        loop {
            let current = rx.borrow_watched().current_leader;
            if current.is_some_and(|l| l != old) {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// A lease read: the last quorum acknowledgement must be younger than the lease with its
    /// drift margin (`Config::lease_age`), and nothing waits for a new one.
    fn lease_read(&self) -> LinearizerOption {
        LinearizerOption::new(Some(self.config.lease_age()), false)
            .with_wait_timeout(Duration::ZERO)
    }

    /// The leader's read barrier: under a valid leader lease (a quorum acknowledged this
    /// leader less than an election timeout ago, so no other leader can exist yet) it costs no
    /// round trip; otherwise — lease expired, or not the leader — ReadIndex decides, which
    /// also yields the ForwardToLeader error a follower needs.
    async fn ensure_linearizable(
        &self,
    ) -> Result<(), RaftError<TypeConfig, LinearizableReadError<TypeConfig>>> {
        if self.config.lease_reads
            && self
                .raft
                .ensure_linearizable(self.lease_read())
                .await
                .is_ok()
        {
            return Ok(());
        }
        self.raft
            .ensure_linearizable(ReadPolicy::ReadIndex)
            .await
            .map(|_| ())
    }

    /// Waits until this replica may serve a linearizable read: the leader's barrier, or on a
    /// follower the leader's read index applied here.
    pub(crate) async fn linearize(&self, deadline: Instant) -> Result<(), KvError> {
        match self.ensure_linearizable().await {
            Ok(_) => {}
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                let Some(leader) = f.leader_node else {
                    return Err(self.unavailable("no leader known"));
                };
                let timeout = deadline.saturating_duration_since(Instant::now());
                let call = self.transport.call::<_, Result<u64, KvError>>(
                    &leader.raft,
                    rpc_kind::READ_INDEX,
                    &(),
                    timeout,
                );
                let index = tokio::select! {
                    r = call => r.map_err(|e| self.unavailable(format!("leader unreachable: {e}")))??,
                    () = self.leader_moved_from(f.leader_id.unwrap_or_default()) => {
                        return Err(self.unavailable("leader changed during the read"));
                    }
                };
                let timeout = deadline.saturating_duration_since(Instant::now());
                self.raft
                    .wait(Some(timeout))
                    .applied_index_at_least(Some(index), "linearizable read")
                    .await
                    .map_err(|e| {
                        self.unavailable(format!("catching up to read index {index}: {e}"))
                    })?;
            }
            Err(RaftError::APIError(e)) => return Err(self.unavailable(e.to_string())),
            Err(e) => return Err(self.unavailable(e.to_string())),
        }
        Ok(())
    }

    async fn read(
        &self,
        slot: Slot,
        keyspace: Keyspace,
        home: Home,
        key: &str,
        deadline: Instant,
    ) -> Result<KvReply, KvError> {
        self.linearize(deadline).await?;
        let read = match home {
            Home::Bucket(_) => self.store.read_unit(keyspace, key),
            Home::Range => self.store.read_range(keyspace, key),
            Home::Slot => self.store.read_owned(slot, keyspace, key),
        };
        match read {
            Ok(OwnedRead::Value(v)) => Ok(KvReply::Value(v)),
            Ok(OwnedRead::Elsewhere(e)) => Err(e),
            Ok(OwnedRead::Dropped) => Err(KvError::Refused {
                status: 404,
                code: "unknown_collection".into(),
                message: format!("the collection of keyspace {keyspace} was deleted"),
            }),
            Ok(OwnedRead::NotOwned) if home == Home::Range => Err(
                unikv_storage::apply::range_wrong_shard(&self.store.descriptor(), keyspace, key),
            ),
            Ok(OwnedRead::NotOwned) => Err(self.wrong_shard(slot, self.shard())),
            Ok(OwnedRead::NotInitialised) => {
                Err(self.unavailable("the shard has not claimed its slots yet"))
            }
            Err(e) if e.is_corruption() => Err(self.corrupted(&e.to_string())),
            Err(e) => Err(KvError::Internal(e.to_string())),
        }
    }

    /// On the leader: confirms leadership with a quorum and returns the index a follower must
    /// apply before serving a linearizable read.
    pub async fn read_index(&self) -> Result<u64, KvError> {
        if self.config.lease_reads {
            if let Ok((read_log_id, _)) = self.raft.get_read_log_id(self.lease_read()).await {
                return Ok(read_log_id.index());
            }
        }
        match self.raft.get_read_log_id(ReadPolicy::ReadIndex).await {
            Ok((read_log_id, _)) => Ok(read_log_id.index()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(self.not_leader(f))
            }
            Err(e) => Err(self.unavailable(e.to_string())),
        }
    }
}
