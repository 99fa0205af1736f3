//! The node's HTTP API (axum): the seed's KV endpoints, `/raft/*` administration, `/config`.
//! Every error is a JSON body `{"error": ..., "code": ...}` with a 4xx/5xx status; nothing a
//! client sends can panic the node.

mod admin;
mod kv;
mod params;
mod reply;

use std::sync::Arc;

use axum::routing::{delete, get, post};
use axum::Router;

pub use reply::ApiError;

use crate::service::Node;

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route(
            "/get",
            get(kv::get)
                .post(kv::get)
                .fallback(reply::method_not_allowed),
        )
        .route(
            "/put",
            get(kv::put)
                .post(kv::put)
                .put(kv::put)
                .fallback(reply::method_not_allowed),
        )
        .route(
            "/append",
            get(kv::append)
                .post(kv::append)
                .put(kv::append)
                .fallback(reply::method_not_allowed),
        )
        .route(
            "/delete",
            delete(kv::delete)
                .post(kv::delete)
                .fallback(reply::method_not_allowed),
        )
        .route(
            "/raft/join",
            post(admin::join).fallback(reply::method_not_allowed),
        )
        .route(
            "/raft/leave",
            post(admin::leave).fallback(reply::method_not_allowed),
        )
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
}
