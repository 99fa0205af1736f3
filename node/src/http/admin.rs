//! Administration endpoints: `/raft/join`, `/raft/leave`, `/raft/status`, `/config`, `/health`.
//! Kept apart from the route table in `mod.rs` so the handlers read on their own.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::json;
use unikv_http::{ok, ApiError, Params};
use unikv_types::NodeId;

use crate::membership::{AdminReply, AdminRequest};
use crate::service::Node;
use crate::status;

const MAX_ADMIN_BODY: usize = 64 * 1024;

fn admin_json(r: AdminReply) -> Response {
    ok(json!({
        "ok": true,
        "already_member": r.already_member,
        "voters": r.voters,
        "learners": r.learners,
    }))
}

pub async fn join(State(node): State<Arc<Node>>, req: Request) -> Result<Response, ApiError> {
    let p = Params::from_request(req, MAX_ADMIN_BODY).await?;
    let node_id = p.u64("nodeid")?;
    if node_id == 0 {
        return Err(ApiError::bad_request(
            "bad_request",
            "nodeid must be at least 1",
        ));
    }
    let addr = p.required("addr")?.trim().to_string();
    let valid = addr
        .rsplit_once(':')
        .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !valid {
        return Err(ApiError::bad_request(
            "bad_request",
            format!("addr must be host:port, got {addr:?}"),
        ));
    }
    let r = node
        .admin(
            AdminRequest::Join {
                node_id: NodeId(node_id),
                addr,
            },
            false,
        )
        .await?;
    Ok(admin_json(r))
}

pub async fn leave(State(node): State<Arc<Node>>, req: Request) -> Result<Response, ApiError> {
    let p = Params::from_request(req, MAX_ADMIN_BODY).await?;
    let node_id = NodeId(p.u64("nodeid")?);
    let r = node.admin(AdminRequest::Leave { node_id }, false).await?;
    Ok(admin_json(r))
}

pub async fn status(State(node): State<Arc<Node>>) -> Response {
    ok(status::raft_status(&node))
}

pub async fn config(State(node): State<Arc<Node>>) -> Response {
    ok(status::cluster_config(&node))
}

pub async fn health() -> Response {
    ok(json!({"ok": true}))
}
