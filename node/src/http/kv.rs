//! The node as a [`KvService`] and a [`CatalogService`]: the KV and collection endpoints are
//! defined once in `unikv_http` for the node and the router alike; this file only plugs them
//! into [`Node::kv`] (served from this node's shard) and the node's catalog calls (served
//! wherever the catalog is, see `catalog`).

use std::future::Future;

use unikv_http::scan::SCAN_KEY;
use unikv_http::{ApiError, CatalogService, KvService};
use unikv_types::catalog::{Catalog, CatalogOp, CatalogReply, Space};
use unikv_types::{
    rpc_kind, ChunkInfo, ClientSeq, KvError, KvOp, KvReply, KvRequest, Limits, ShardId,
    ShardSummary,
};

use crate::peer::call_shard;
use crate::service::Node;

impl KvService for Node {
    fn limits(&self) -> &Limits {
        &self.limits
    }

    fn execute(
        &self,
        key: String,
        op: KvOp,
        client: Option<ClientSeq>,
        space: Space,
    ) -> impl Future<Output = Result<KvReply, ApiError>> + Send {
        let req = KvRequest {
            key,
            op,
            client,
            forwarded: false,
            collection: space.collection,
            shard_key: space.shard_key,
        };
        async move { Ok(self.kv(req).await?) }
    }
}

impl CatalogService for Node {
    async fn read_catalog(&self) -> Result<Catalog, ApiError> {
        Ok(Node::read_catalog(self).await?)
    }

    async fn change_catalog(&self, op: CatalogOp) -> Result<CatalogReply, ApiError> {
        Ok(Node::change_catalog(self, op).await?)
    }

    fn shards(&self) -> Vec<ShardSummary> {
        self.gossip.view().summaries()
    }

    async fn chunks(&self, collection: &str) -> Result<Vec<ChunkInfo>, ApiError> {
        let shards: Vec<ShardId> = self.gossip.view().shards.keys().copied().collect();
        let mut all = Vec::new();
        for shard in shards {
            match self
                .on_shard(
                    Space {
                        collection: Some(collection.to_string()),
                        shard_key: None,
                    },
                    shard,
                    SCAN_KEY.into(),
                    KvOp::Chunks,
                )
                .await
            {
                Ok(KvReply::Chunks(c)) => all.extend(c),
                Ok(other) => return Err(KvError::Internal(format!("chunks got {other:?}")).into()),
                // A shard that cannot answer now is left out of this listing.
                Err(e) => tracing::debug!(%shard, error = %e.message, "listing chunks"),
            }
        }
        Ok(all)
    }

    async fn on_shard(
        &self,
        space: Space,
        shard: ShardId,
        key: String,
        op: KvOp,
    ) -> Result<KvReply, ApiError> {
        let req = KvRequest {
            key,
            op,
            client: None,
            forwarded: false,
            collection: space.collection,
            shard_key: space.shard_key,
        };
        if shard == self.shard() {
            return Ok(self.kv(req).await?);
        }
        let timeout = self.config.request_timeout();
        Ok(call_shard(self, shard, rpc_kind::KV, &req, timeout).await?)
    }
}
