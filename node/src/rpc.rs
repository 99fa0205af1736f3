//! The node's QUIC RPC server: Raft messages from peers, KV requests from routers and
//! forwarding followers, read-index requests, HELLO probes and forwarded membership changes.

use std::sync::Arc;

use openraft::errors::RaftError;
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::Snapshot;
use tokio::io::AsyncWriteExt;
use unikv_net::{CertRole, Handler, Incoming};
use unikv_storage::raft_types::{SnapshotMeta, Vote};
use unikv_storage::{SnapshotFile, TypeConfig};
use unikv_types::{rpc_kind, KvError, KvReply, KvRequest};

/// Most requests a `KV_BATCH` may carry.
const MAX_KV_BATCH: usize = 1024;

use crate::membership::AdminRequest;
use crate::raft_net::SnapshotHead;
use crate::rebalance::Rebalancer;
use crate::service::Node;

pub struct RpcHandler {
    pub node: Arc<Node>,
    /// Serves the slot-move and shard-admin kinds.
    pub rebalancer: Arc<Rebalancer>,
}

impl Handler for RpcHandler {
    /// Nodes may send anything; a router only client requests.
    fn permits(&self, kind: u8, role: CertRole) -> bool {
        match role {
            CertRole::Node => true,
            CertRole::Router => rpc_kind::router_may_send(kind),
        }
    }

    async fn handle(&self, kind: u8, incoming: Incoming) {
        let remote = incoming.remote;
        if let Err(e) = self.dispatch(kind, incoming).await {
            tracing::debug!(kind, %remote, error = %e, "rpc failed");
        }
    }
}

impl RpcHandler {
    /// The answer of a node still inside its post-restart vote hold: not granted, with its
    /// current vote so a candidate with a lower one learns of the higher term.
    fn refuse_vote(
        &self,
        req: &VoteRequest<TypeConfig>,
        what: &str,
    ) -> Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>> {
        let vote = self.node.raft.metrics().borrow_watched().vote;
        tracing::info!(
            shard = %self.node.shard(), node = %self.node.id(), request = %req, what,
            "refusing: restarted less than one leader lease ago"
        );
        Ok(VoteResponse::new(vote, None, false))
    }

    async fn dispatch(&self, kind: u8, mut inc: Incoming) -> unikv_net::Result<()> {
        let node = &self.node;
        match kind {
            rpc_kind::APPEND => {
                let req = inc.read().await?;
                inc.reply(&node.raft.append_entries(req).await).await
            }
            rpc_kind::APPEND_STREAM => crate::append_stream::serve(node, inc).await,
            rpc_kind::VOTE => {
                let req: VoteRequest<TypeConfig> = inc.read().await?;
                if node.vote_hold.holds() {
                    return inc.reply(&self.refuse_vote(&req, "vote")).await;
                }
                inc.reply(&node.raft.vote(req).await).await
            }
            rpc_kind::PRE_VOTE => {
                let req: VoteRequest<TypeConfig> = inc.read().await?;
                if node.vote_hold.holds() {
                    return inc.reply(&self.refuse_vote(&req, "pre-vote")).await;
                }
                inc.reply(&node.raft.pre_vote(req).await).await
            }
            rpc_kind::SNAPSHOT => self.receive_snapshot(inc).await,
            rpc_kind::KV => {
                let req: KvRequest = inc.read().await?;
                inc.reply(&node.kv(req).await).await
            }
            rpc_kind::KV_BATCH => {
                let reqs: Vec<KvRequest> = inc.read().await?;
                if reqs.len() > MAX_KV_BATCH {
                    let refusal = KvError::BadRequest {
                        code: "batch_too_large".into(),
                        message: format!(
                            "{} requests in one batch (at most {MAX_KV_BATCH})",
                            reqs.len()
                        ),
                    };
                    let replies: Vec<Result<KvReply, KvError>> = vec![Err(refusal); reqs.len()];
                    return inc.reply(&replies).await;
                }
                // Concurrently: one slow request does not hold up the others.
                let replies = futures::future::join_all(reqs.into_iter().map(|r| node.kv(r))).await;
                inc.reply(&replies).await
            }
            rpc_kind::READ_INDEX => {
                let () = inc.read().await?;
                inc.reply(&node.read_index().await).await
            }
            rpc_kind::HELLO => {
                let () = inc.read().await?;
                inc.reply(&node.hello()).await
            }
            rpc_kind::ADMIN => {
                let req: AdminRequest = inc.read().await?;
                inc.reply(&node.admin(req, true).await).await
            }
            rpc_kind::MOVE_STAGE => {
                let req = inc.read().await?;
                inc.reply(&self.rebalancer.move_stage(req).await).await
            }
            rpc_kind::MOVE_IN => {
                let req = inc.read().await?;
                inc.reply(&self.rebalancer.move_in(req).await).await
            }
            rpc_kind::MOVE_IN_MANY => {
                let req = inc.read().await?;
                inc.reply(&self.rebalancer.move_in_many(req).await).await
            }
            rpc_kind::MOVE_STATUS => {
                let req = inc.read().await?;
                inc.reply(&self.rebalancer.move_status(req).await).await
            }
            rpc_kind::MOVE_REFUSE => {
                let req = inc.read().await?;
                inc.reply(&self.rebalancer.refuse(req).await).await
            }
            rpc_kind::FENCE => {
                let req = inc.read().await?;
                inc.reply(&node.fence(req).await).await
            }
            rpc_kind::DROP_KEYSPACE => {
                let ks = inc.read().await?;
                inc.reply(&node.drop_keyspace(ks).await).await
            }
            rpc_kind::CHUNK_IN => {
                let req = inc.read().await?;
                inc.reply(&node.chunk_in(req).await).await
            }
            rpc_kind::CHUNK_STATUS => {
                let req = inc.read().await?;
                inc.reply(&node.chunk_status(req).await).await
            }
            rpc_kind::CHUNK_STAGE => {
                let req = inc.read().await?;
                inc.reply(&node.chunk_stage(req).await).await
            }
            rpc_kind::CHUNK_REFUSE => {
                let req = inc.read().await?;
                inc.reply(&node.chunk_refuse(req).await).await
            }
            rpc_kind::UNIT_IN => {
                let req = inc.read().await?;
                inc.reply(&node.unit_in(req).await).await
            }
            rpc_kind::UNIT_STATUS => {
                let req = inc.read().await?;
                inc.reply(&node.unit_status(req).await).await
            }
            rpc_kind::UNIT_ACTIVATE => {
                let req = inc.read().await?;
                inc.reply(&node.unit_activate(req).await).await
            }
            rpc_kind::SHARD_ADMIN => {
                let req = inc.read().await?;
                inc.reply(&self.rebalancer.shard_admin(req).await).await
            }
            other => {
                tracing::warn!(kind = other, remote = %inc.remote, "unknown rpc kind");
                Ok(())
            }
        }
    }

    /// Receives a snapshot stream into a file in the snapshot folder, then installs it.
    async fn receive_snapshot(&self, mut inc: Incoming) -> unikv_net::Result<()> {
        let head: SnapshotHead = unikv_net::read_frame(&mut inc.recv).await?;
        let path = unikv_storage::state_machine::incoming_path(self.node.store.snapshot_dir());
        let received = async {
            let mut file = tokio::fs::File::create(&path).await?;
            let n = tokio::io::copy(&mut inc.recv, &mut file).await?;
            if n != head.len {
                return Err(std::io::Error::other(format!(
                    "snapshot stream ended after {n} of {} bytes",
                    head.len
                )));
            }
            file.flush().await?;
            file.sync_all().await?;
            Ok(())
        }
        .await;
        if let Err(e) = received {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(unikv_net::Error::Io(e));
        }
        // A file damaged on the way (or on this disk) is refused before openraft sees it:
        // the leader's send fails and it sends the snapshot again.
        let checked = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || unikv_storage::snapshot::verify_snapshot(&path))
                .await
        };
        let res = match checked {
            Ok(Ok(_)) => self.install(head.vote, head.meta, &path).await,
            Ok(Err(e)) => {
                tracing::warn!(shard = %self.node.shard(), error = %e, "received snapshot refused");
                let _ = tokio::fs::remove_file(&path).await;
                Err(format!("snapshot refused: {e}"))
            }
            Err(e) => Err(format!("snapshot check failed: {e}")),
        };
        unikv_net::write_frame(&mut inc.send, &res).await?;
        let _ = inc.send.finish();
        Ok(())
    }

    /// Installs a received snapshot file. The error is a message: the sender only logs it.
    async fn install(
        &self,
        vote: Vote,
        meta: SnapshotMeta,
        path: &std::path::Path,
    ) -> Result<openraft::raft::SnapshotResponse<TypeConfig>, String> {
        let file = SnapshotFile::open(path).map_err(|e| e.to_string())?;
        let snapshot = Snapshot {
            meta,
            snapshot: file,
        };
        self.node
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| e.to_string())
    }
}
