//! KV endpoints: `/get`, `/put`, `/append`, `/delete`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::json;
use unikv_types::{KvOp, KvReply, KvRequest};

use super::ApiError;
use crate::service::Node;
use unikv_http::Params;
use unikv_http::{json_ok, ok};

/// Body limit: a maximal value plus room for the key and other fields.
fn max_body(node: &Node) -> usize {
    node.limits.max_value_bytes + node.limits.max_key_bytes + 64 * 1024
}

async fn run(
    node: &Node,
    req: Request,
    op: impl FnOnce(&Params) -> Result<KvOp, ApiError>,
) -> Result<(String, KvReply), ApiError> {
    let p = Params::from_request(req, max_body(node)).await?;
    let key = p.required("key")?.to_string();
    let op = op(&p)?;
    let client = if op.is_write() { p.client_seq()? } else { None };
    let reply = node
        .kv(KvRequest {
            key: key.clone(),
            op,
            client,
            forwarded: false,
        })
        .await?;
    Ok((key, reply))
}

pub async fn get(State(node): State<Arc<Node>>, req: Request) -> Result<Response, ApiError> {
    let (key, reply) = run(&node, req, |_| Ok(KvOp::Get)).await?;
    match reply {
        KvReply::Value(Some(v)) => Ok(ok(json!({"key": key, "value": v}))),
        KvReply::Value(None) => Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            "key not found",
        )
        .with("key", key)),
        other => Err(unexpected(other)),
    }
}

pub async fn put(State(node): State<Arc<Node>>, req: Request) -> Result<Response, ApiError> {
    let (_, reply) = run(&node, req, |p| {
        Ok(KvOp::Put {
            value: p.required_any(&["val", "value"])?.to_string(),
        })
    })
    .await?;
    match reply {
        KvReply::Written => Ok(ok(json_ok())),
        other => Err(unexpected(other)),
    }
}

pub async fn append(State(node): State<Arc<Node>>, req: Request) -> Result<Response, ApiError> {
    let (_, reply) = run(&node, req, |p| {
        Ok(KvOp::Append {
            value: p.required_any(&["val", "value"])?.to_string(),
        })
    })
    .await?;
    match reply {
        KvReply::Appended { previous } => Ok(ok(json!({"ok": true, "previous": previous}))),
        other => Err(unexpected(other)),
    }
}

pub async fn delete(State(node): State<Arc<Node>>, req: Request) -> Result<Response, ApiError> {
    let (_, reply) = run(&node, req, |_| Ok(KvOp::Delete)).await?;
    match reply {
        KvReply::Deleted { existed } => Ok(ok(json!({"ok": true, "deleted": existed}))),
        other => Err(unexpected(other)),
    }
}

/// A reply of the wrong kind for the operation: only possible if a client reused a
/// (client_id, seq) pair for a different operation; the stored reply is returned by dedup.
fn unexpected(reply: KvReply) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::CONFLICT,
        "sequence_reused",
        format!("this (client_id, seq) was already used for another operation, which returned {reply:?}"),
    )
}
