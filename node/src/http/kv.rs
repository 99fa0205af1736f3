//! The node as a [`KvService`]: the KV endpoints themselves (`/get`, `/put`, `/append`,
//! `/delete`) are defined once in `unikv_http::kv` for the node and the router alike; this
//! file only plugs them into [`Node::kv`], which serves them from this node's shard.

use std::future::Future;

use unikv_http::{ApiError, KvService};
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
    ) -> impl Future<Output = Result<KvReply, ApiError>> + Send {
        let req = KvRequest {
            key,
            op,
            client,
            forwarded: false,
        };
        async move { Ok(self.kv(req).await?) }
    }
}
