//! The node as a [`KvService`] and a [`CatalogService`]: the KV and collection endpoints are
//! defined once in `unikv_http` for the node and the router alike; this file only plugs them
//! into [`Node::kv`] (served from this node's shard) and the node's catalog calls (served
//! wherever the catalog is, see `catalog`).

use std::future::Future;

use unikv_http::{ApiError, CatalogService, KvService};
use unikv_types::catalog::{Catalog, CatalogOp, CatalogReply, Space};
use unikv_types::{ClientSeq, KvOp, KvReply, KvRequest, Limits, ShardId, ShardState};

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

    fn shards(&self) -> Vec<(ShardId, bool, u64)> {
        shard_list(&self.gossip.view())
    }
}

/// Every shard of a gossip view: id, whether it takes data, bytes stored.
pub fn shard_list(view: &unikv_gossip::ClusterView) -> Vec<(ShardId, bool, u64)> {
    view.shards
        .values()
        .map(|s| (s.id, s.state == ShardState::Active, s.bytes))
        .collect()
}
