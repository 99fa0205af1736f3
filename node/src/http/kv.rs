//! The node as a [`KvService`] and a [`CatalogService`]: the KV and collection endpoints are
//! defined once in `unikv_http` for the node and the router alike; this file only plugs them
//! into [`Node::kv`] (served from this node's shard) and the node's catalog calls (served
//! wherever the catalog is, see `catalog`).

use std::future::Future;

use unikv_http::{ApiError, CatalogService, KvService};
use unikv_types::catalog::{Catalog, CatalogOp, CatalogReply};
use unikv_types::{ClientSeq, KvOp, KvReply, KvRequest, Limits};

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
        collection: Option<String>,
    ) -> impl Future<Output = Result<KvReply, ApiError>> + Send {
        let req = KvRequest {
            key,
            op,
            client,
            forwarded: false,
            collection,
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
}
