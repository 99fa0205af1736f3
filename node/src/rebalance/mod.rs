//! Online resharding on the node: the balancer that decides which slots this shard gives away
//! (`balancer`, `planner`), the source side of a hand-off (`handoff`, `batch`, `steps`, over
//! `crate::copy`), the target side
//! (`receive`) and the registry/admin operations behind `/addshard`, `/removeshard`,
//! `/moveslot`, `/shard/tags`, `/stats` and `/rebalance/status` (`admin`); calls to other
//! shards' leaders go through `crate::peer`.
//!
//! There is no central balancer: every shard leader runs the same loop on its own state and
//! the gossip view. All decisions go through the shard's Raft log (see
//! `unikv_storage::moves`), so a new leader resumes whatever its predecessor left in flight.
//!
//! The rest of the node sees only this module's [`Rebalancer`] handle: the RPC server hands it
//! the slot-move and shard-admin requests, the HTTP server mounts its [`Rebalancer::routes`],
//! and `run` starts its loop. The arrows run one way: rebalance uses the node's request logic
//! (`service::Node`), never the reverse.

mod admin;
mod balancer;
mod batch;
mod handoff;
mod messages;
mod planner;
mod rebalancer;
mod receive;
mod steps;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use serde_json::Value;
use tokio::sync::watch;
use unikv_http::method_not_allowed;
use unikv_types::KvError;

pub use crate::copy::MoveStage;
use crate::peer::HandoffStatus;
pub use messages::{MoveIn, MoveStatusRequest, RefuseRequest, ShardAdmin};
pub use rebalancer::Rebalancer;

impl Rebalancer {
    /// Runs the balancer loop until `shutdown`.
    pub fn spawn(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        balancer::spawn(self.clone(), shutdown)
    }

    /// `MOVE_STAGE` (target leader): store a piece of a slot's copy, not served.
    pub async fn move_stage(&self, m: MoveStage) -> Result<(), KvError> {
        receive::handle_stage(self, m).await
    }

    /// `MOVE_IN` (target leader): store a slot sent by its source and serve it.
    pub async fn move_in(&self, m: MoveIn) -> Result<(), KvError> {
        receive::handle_move_in(self, m).await
    }

    /// `MOVE_IN_MANY` (target leader): several small slots, each committed as its own `In`
    /// (together); one result per slot.
    pub async fn move_in_many(&self, ms: Vec<MoveIn>) -> Result<Vec<Result<(), KvError>>, KvError> {
        receive::handle_move_in_many(self, ms).await
    }

    /// `MOVE_STATUS` (source leader): whether the copy the target asks about is wanted.
    pub async fn move_status(&self, q: MoveStatusRequest) -> Result<HandoffStatus, KvError> {
        receive::handle_status(self, q).await
    }

    /// `MOVE_REFUSE` (target leader): never take the hand-off named (the source gives it
    /// up), unless its `In` committed already (`already_received`).
    pub async fn refuse(&self, r: RefuseRequest) -> Result<(), KvError> {
        receive::handle_refuse(&self.node, r).await
    }

    /// `SHARD_ADMIN` (shard leader): a registry change or an explicit move of this shard.
    pub async fn shard_admin(self: &Arc<Self>, req: ShardAdmin) -> Result<Value, KvError> {
        admin::handle_shard_admin(self, req).await
    }

    /// The HTTP routes of registry and rebalancing administration.
    pub fn routes(self: &Arc<Self>, access: unikv_http::access::Access) -> Router {
        let changes = Router::new()
            .route(
                "/addshard",
                get(admin::addshard)
                    .post(admin::addshard)
                    .fallback(method_not_allowed),
            )
            .route(
                "/removeshard",
                get(admin::removeshard)
                    .post(admin::removeshard)
                    .fallback(method_not_allowed),
            )
            .route(
                "/moveslot",
                get(admin::moveslot)
                    .post(admin::moveslot)
                    .fallback(method_not_allowed),
            )
            .route(
                "/shards/{id}",
                axum::routing::delete(admin::forget_shard).fallback(method_not_allowed),
            )
            .route(
                "/shard/tags",
                get(admin::tags)
                    .post(admin::tags)
                    .fallback(method_not_allowed),
            )
            .route_layer(axum::middleware::from_fn_with_state(
                access,
                unikv_http::access::guard,
            ))
            .with_state(self.clone());
        Router::new()
            .route("/stats", get(admin::stats).fallback(method_not_allowed))
            .route(
                "/rebalance/status",
                get(admin::rebalance_status).fallback(method_not_allowed),
            )
            .with_state(self.clone())
            .merge(changes)
    }
}
