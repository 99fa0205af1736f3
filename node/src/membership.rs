//! Membership of this node's Raft group: `/raft/join` and `/raft/leave` (on any member,
//! forwarded to the leader over QUIC), the new node probed with HELLO before it is added,
//! and the member lists `/raft/status` and `/addshard` read.

use std::collections::BTreeSet;
use std::time::Instant;

use openraft::errors::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use unikv_storage::{NodeAddr, TypeConfig};
use unikv_types::{rpc_kind, NodeId, NodeRef};

use crate::service::{Hello, Node, HELLO_TIMEOUT, LEADER_POLL};

/// Membership changes, possibly forwarded from a follower to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminRequest {
    Join { node_id: NodeId, addr: String },
    Leave { node_id: NodeId },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminReply {
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub already_member: bool,
}

/// A refused or failed membership change, with the HTTP status that fits it.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct AdminError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl AdminError {
    fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
        }
    }
}

impl Node {
    /// Applies a membership change on the leader, forwarding it there if this node is not.
    pub async fn admin(
        &self,
        req: AdminRequest,
        forwarded: bool,
    ) -> Result<AdminReply, AdminError> {
        if !self.is_leader() {
            if forwarded {
                return Err(AdminError::new(
                    503,
                    "not_leader",
                    "the receiving node is not the leader",
                ));
            }
            let leader = self.wait_for_leader().await.ok_or_else(|| {
                AdminError::new(503, "unavailable", "no leader known for this shard")
            })?;
            if leader.node_id != self.id() {
                let res = self
                    .transport
                    .call::<_, Result<AdminReply, AdminError>>(
                        &leader.raft,
                        rpc_kind::ADMIN,
                        &req,
                        self.config.request_timeout() * 6,
                    )
                    .await
                    .map_err(|e| {
                        AdminError::new(503, "unavailable", format!("leader unreachable: {e}"))
                    })?;
                return res;
            }
        }
        match req {
            AdminRequest::Join { node_id, addr } => self.join(node_id, addr).await,
            AdminRequest::Leave { node_id } => self.leave(node_id).await,
        }
    }

    pub(crate) async fn wait_for_leader(&self) -> Option<NodeRef> {
        let deadline = Instant::now() + self.config.request_timeout();
        loop {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(LEADER_POLL).await;
        }
    }

    /// The addresses of every member of this shard's Raft group.
    pub fn raft_members(&self) -> Vec<NodeAddr> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.membership_config
            .membership()
            .nodes()
            .map(|(_, a)| a.clone())
            .collect()
    }

    fn members(&self) -> (Vec<NodeId>, Vec<NodeId>) {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let mem = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = mem.voter_ids().collect();
        let learners = mem
            .nodes()
            .map(|(id, _)| *id)
            .filter(|id| !voters.contains(id))
            .collect();
        (voters.into_iter().collect(), learners)
    }

    fn admin_reply(&self, already_member: bool) -> AdminReply {
        let (voters, learners) = self.members();
        AdminReply {
            voters,
            learners,
            already_member,
        }
    }

    async fn join(&self, node_id: NodeId, addr: String) -> Result<AdminReply, AdminError> {
        let hello: Hello = self
            .transport
            .call(&addr, rpc_kind::HELLO, &(), HELLO_TIMEOUT)
            .await
            .map_err(|e| {
                AdminError::new(
                    400,
                    "unreachable",
                    format!("cannot reach a unikv node at {addr}: {e}"),
                )
            })?;
        if hello.shard != self.shard() {
            return Err(AdminError::new(
                400,
                "wrong_shard",
                format!(
                    "node at {addr} belongs to shard {}, not {}",
                    hello.shard,
                    self.shard()
                ),
            ));
        }
        if hello.node_id != node_id {
            return Err(AdminError::new(
                400,
                "node_id_mismatch",
                format!(
                    "node at {addr} has node id {}, not {node_id}",
                    hello.node_id
                ),
            ));
        }
        let (voters, _) = self.members();
        if voters.contains(&node_id) {
            return Ok(self.admin_reply(true));
        }
        let node = NodeAddr {
            raft: addr.clone(),
            http: hello.http,
        };
        let map_err = |e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>| {
            AdminError::new(503, "membership_change_failed", e.to_string())
        };
        self.raft
            .add_learner(node_id, node, true)
            .await
            .map_err(map_err)?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), false)
            .await
            .map_err(map_err)?;
        tracing::info!(shard = %self.shard(), node = %node_id, %addr, "member joined");
        Ok(self.admin_reply(false))
    }

    async fn leave(&self, node_id: NodeId) -> Result<AdminReply, AdminError> {
        let (voters, learners) = self.members();
        if !voters.contains(&node_id) && !learners.contains(&node_id) {
            return Err(AdminError::new(
                404,
                "not_member",
                format!("node {node_id} is not a member"),
            ));
        }
        if voters == [node_id] {
            return Err(last_voter());
        }
        let change = if voters.contains(&node_id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([node_id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([node_id]))
        };
        // The voters read above come from Raft's metrics, published after a change commits:
        // right after another leave they may still list a voter that is gone, and Raft itself
        // then refuses the change as leaving no voter — the same refusal as above.
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| match e {
                RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::EmptyMembership(_),
                )) => last_voter(),
                e => AdminError::new(503, "membership_change_failed", e.to_string()),
            })?;
        tracing::info!(shard = %self.shard(), node = %node_id, "member left");
        Ok(self.admin_reply(false))
    }
}

fn last_voter() -> AdminError {
    AdminError::new(400, "last_voter", "cannot remove the last voter of a shard")
}
