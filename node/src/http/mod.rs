//! The node's HTTP API (axum): the seed's KV endpoints (defined once in `unikv_http::kv` and
//! served by the node through `kv`) merged with the node's own routes: `/raft/*`
//! administration, `/config`, `/health` and the rest. Every error is a JSON body
//! `{"error": ..., "code": ...}` with a 4xx/5xx status; nothing a client sends can panic the
//! node.

mod admin;
mod kv;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use unikv_http as reply;
use unikv_http::access::Access;
pub use unikv_http::ApiError;

use crate::service::Node;

pub fn router(node: Arc<Node>, access: Access) -> Router {
    let kv_routes = unikv_http::kv::routes(node.clone()).route_layer(
        axum::middleware::from_fn_with_state(access.clone(), unikv_http::access::data_guard),
    );
    let membership = Router::new()
        .route(
            "/raft/join",
            post(admin::join).fallback(reply::method_not_allowed),
        )
        .route(
            "/raft/leave",
            post(admin::leave).fallback(reply::method_not_allowed),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            access.clone(),
            unikv_http::access::guard,
        ))
        .with_state(node.clone());
    let collections = unikv_http::collections::routes(node.clone(), access.clone())
        .merge(unikv_http::chunks::routes(node.clone(), access));
    Router::new()
        .route(
            "/raft/status",
            get(admin::status).fallback(reply::method_not_allowed),
        )
        .route(
            "/config",
            get(admin::config).fallback(reply::method_not_allowed),
        )
        .route(
            "/health",
            get(admin::health).fallback(reply::method_not_allowed),
        )
        .fallback(reply::not_found)
        .with_state(node)
        .merge(membership)
        .merge(kv_routes)
        .merge(collections)
}

impl From<crate::membership::AdminError> for ApiError {
    fn from(e: crate::membership::AdminError) -> Self {
        let status = axum::http::StatusCode::from_u16(e.status)
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        ApiError::new(status, &e.code, e.message)
    }
}
