//! openraft's network over our QUIC transport: each Raft RPC is one request stream to the
//! peer's `--raft_addr`; snapshots stream a header frame and then the file's bytes.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::Stream;
use openraft::errors::{
    NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::StreamAppendResult;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::OptionalSend;
use tokio::io::AsyncWriteExt;
use unikv_net::Transport;
use unikv_storage::raft_types::{SnapshotMeta, Vote};
use unikv_storage::{NodeAddr, Snapshot, SnapshotFile, TypeConfig};
use unikv_types::{rpc_kind, NodeId};

use crate::raft_errors::to_rpc_error;
use crate::vote_hold::VoteHold;

/// Opening the snapshot stream must fail fast when the peer is down: openraft retries after a
/// short backoff, and a dial to a dead peer would otherwise wait for QUIC's idle timeout.
const OPEN_TIMEOUT: Duration = Duration::from_secs(1);

/// Creates a client per peer; all share the transport's connection pool.
#[derive(Clone)]
pub struct Network {
    pub transport: Transport,
    /// While it holds, this node does not campaign (see `vote_hold`).
    pub vote_hold: VoteHold,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> PeerClient {
        PeerClient {
            target,
            addr: node.raft.clone(),
            transport: self.transport.clone(),
            vote_hold: self.vote_hold,
        }
    }
}

pub struct PeerClient {
    target: NodeId,
    addr: String,
    transport: Transport,
    vote_hold: VoteHold,
}

impl PeerClient {
    /// A node inside its post-restart hold asks nobody for votes: its own vote would count
    /// for itself while it may still owe the old leader its lease.
    fn check_vote_hold(&self) -> Result<(), RPCError<TypeConfig>> {
        if self.vote_hold.holds() {
            let e = std::io::Error::other(
                "restarted less than one leader lease ago: not campaigning yet",
            );
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        Ok(())
    }
}

/// The header of a snapshot stream; the file's bytes follow it.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct SnapshotHead {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub len: u64,
}

impl PeerClient {
    async fn call<Req, Resp>(
        &self,
        kind: u8,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        let res: Result<Resp, RaftError<TypeConfig>> = self
            .transport
            .call(&self.addr, kind, req, ttl)
            .await
            .map_err(to_rpc_error)?;
        // The only remote error is Fatal: the peer's Raft stopped. Treat it as unreachable.
        res.map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    async fn send_snapshot(
        &self,
        vote: Vote,
        snapshot: Snapshot,
        ttl: Duration,
    ) -> Result<SnapshotResponse<TypeConfig>, RPCError<TypeConfig>> {
        let file = snapshot
            .snapshot
            .reopen()
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let len = snapshot
            .snapshot
            .len()
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let (mut send, mut recv) = self
            .transport
            .open(&self.addr, rpc_kind::SNAPSHOT, OPEN_TIMEOUT.min(ttl))
            .await
            .map_err(to_rpc_error)?;
        let head = SnapshotHead {
            vote,
            meta: snapshot.meta.clone(),
            len,
        };
        let io = |e: std::io::Error| RPCError::Network(NetworkError::new(&e));
        unikv_net::write_frame(&mut send, &head)
            .await
            .map_err(to_rpc_error)?;
        let mut file = tokio::fs::File::from_std(file);
        tokio::io::copy(&mut file, &mut send).await.map_err(io)?;
        send.shutdown().await.map_err(io)?;
        let res: Result<SnapshotResponse<TypeConfig>, String> = unikv_net::read_frame(&mut recv)
            .await
            .map_err(to_rpc_error)?;
        tracing::info!(peer = %self.target, bytes = len, ok = res.is_ok(), "snapshot sent");
        res.map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(rpc_kind::APPEND, &req, option.hard_ttl()).await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            crate::append_stream::open(&self.transport, &self.addr, input, option.hard_ttl()).await
        })
    }

    async fn vote(
        &mut self,
        req: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.check_vote_hold()?;
        self.call(rpc_kind::VOTE, &req, option.hard_ttl()).await
    }

    async fn pre_vote(
        &mut self,
        req: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.check_vote_hold()?;
        self.call(rpc_kind::PRE_VOTE, &req, option.hard_ttl()).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        // Large snapshots need more than one heartbeat-sized timeout.
        let ttl = option.hard_ttl().max(Duration::from_secs(60));
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            res = tokio::time::timeout(ttl, self.send_snapshot(vote, snapshot, ttl)) => match res {
                Ok(res) => Ok(res?),
                Err(_) => Err(StreamingError::Network(NetworkError::new(&std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "snapshot transfer timed out",
                )))),
            },
        }
    }
}
