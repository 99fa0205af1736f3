//! The chunk endpoints of range collections, defined once for nodes and routers (each
//! implements the chunk calls of [`CatalogService`]):
//!
//! | route | methods | reply |
//! |---|---|---|
//! | `/collections/{name}/chunks` | GET | `{"collection", "chunks": [{id, shard, min, max, count, size, version, epoch, updated_ms}...]}` in key order; `?shard=S` for one shard's |
//! | `/collections/{name}/split` | POST | `?at=KEY`: the chunk holding KEY splits there |
//! | `/collections/{name}/chunks/{id}/move` | POST | `?to=SHARD`: the chunk moves there (answers once done) |
//!
//! The listing asks every shard for the chunks it holds (the shards' descriptors are the only
//! record of them). Splits and moves are admin calls, run by the leader of the shard holding
//! the chunk.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use unikv_types::catalog::{unknown_collection, validate_name, Sharding, Space};
use unikv_types::{ChunkId, ChunkInfo, KvOp};

use crate::access::{data_guard, guard, Access};
use crate::collections::CatalogService;
use crate::error::ApiError;
use crate::params::Params;
use crate::reply::{method_not_allowed, ok};

const MAX_BODY: usize = 64 * 1024;

/// The chunk routes over `service`: the listing behind the data token, splits and moves
/// behind the admin token.
pub fn routes<S: CatalogService>(service: Arc<S>, access: Access) -> Router {
    Router::new()
        .route(
            "/collections/{name}/chunks",
            get(list::<S>)
                .route_layer(axum::middleware::from_fn_with_state(
                    access.clone(),
                    data_guard,
                ))
                .fallback(method_not_allowed),
        )
        .route(
            "/collections/{name}/split",
            post(split::<S>)
                .route_layer(axum::middleware::from_fn_with_state(access.clone(), guard))
                .fallback(method_not_allowed),
        )
        .route(
            "/collections/{name}/chunks/{id}/move",
            post(move_chunk::<S>)
                .route_layer(axum::middleware::from_fn_with_state(access, guard))
                .fallback(method_not_allowed),
        )
        .with_state(service)
}

/// Every chunk of the range collection `name`, in key order.
async fn chunks_of<S: CatalogService>(s: &S, name: &str) -> Result<Vec<ChunkInfo>, ApiError> {
    validate_name(name)?;
    let cat = s.read_catalog().await?;
    let c = cat.get(name).ok_or_else(|| unknown_collection(name))?;
    if c.sharding != Sharding::Range {
        return Err(ApiError::bad_request(
            "not_range",
            format!(
                "collection {name:?} is sharded by {}: it has no chunks",
                c.sharding.as_str()
            ),
        ));
    }
    let mut all = s.chunks(name).await?;
    all.sort_by(|a, b| a.min.cmp(&b.min));
    Ok(all)
}

fn chunk_json(c: &ChunkInfo) -> serde_json::Value {
    json!({
        "id": c.id.0, "shard": c.shard.0, "min": c.min, "max": c.max, "count": c.count,
        "size": c.size, "version": c.version, "epoch": c.epoch.0, "updated_at": c.updated_ms,
        "moving_to": c.moving_to.map(|s| s.0),
    })
}

async fn list<S: CatalogService>(
    State(s): State<Arc<S>>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let p = Params::from_request(req, MAX_BODY).await?;
    let only = match p.optional("shard") {
        Some(_) => Some(p.shard_id("shard")?),
        None => None,
    };
    let all = chunks_of(&*s, &name).await?;
    let shown: Vec<_> = all
        .iter()
        .filter(|c| only.is_none_or(|s| c.shard == s))
        .map(chunk_json)
        .collect();
    Ok(ok(json!({
        "collection": name,
        "count": shown.len(),
        "chunks": shown,
    })))
}

async fn split<S: CatalogService>(
    State(s): State<Arc<S>>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let p = Params::from_request(req, MAX_BODY).await?;
    let at = p.required("at")?.to_string();
    if at.is_empty() {
        return Err(ApiError::bad_request(
            "bad_split",
            "at must be a key past the collection's first",
        ));
    }
    let all = chunks_of(&*s, &name).await?;
    let Some(c) = all.iter().find(|c| c.contains(&at)) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("no shard answered for the chunk holding {at:?}; try again"),
        ));
    };
    s.on_shard(space_of(&name), c.shard, at.clone(), KvOp::Split)
        .await?;
    Ok(ok(
        json!({"ok": true, "collection": name, "at": at, "shard": c.shard.0}),
    ))
}

async fn move_chunk<S: CatalogService>(
    State(s): State<Arc<S>>,
    Path((name, id)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let p = Params::from_request(req, MAX_BODY).await?;
    let to = p.shard_id("to")?;
    let id = id
        .parse::<u64>()
        .map(ChunkId)
        .map_err(|_| ApiError::bad_request("bad_chunk", format!("{id:?} is not a chunk id")))?;
    let all = chunks_of(&*s, &name).await?;
    let Some(c) = all.iter().find(|c| c.id == id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_chunk",
            format!("collection {name:?} has no chunk {id}"),
        ));
    };
    if c.shard == to {
        return Ok(ok(
            json!({"ok": true, "chunk": id.0, "shard": to.0, "already": true}),
        ));
    }
    s.on_shard(
        space_of(&name),
        c.shard,
        format!("chunk-{id}"),
        KvOp::MoveChunk { id, to },
    )
    .await?;
    Ok(ok(
        json!({"ok": true, "chunk": id.0, "from": c.shard.0, "to": to.0}),
    ))
}

/// The space of collection `name` itself (no shard key).
fn space_of(name: &str) -> Space {
    Space {
        collection: Some(name.to_string()),
        shard_key: None,
    }
}
