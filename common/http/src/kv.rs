//! The seed's KV endpoints, defined once for both binaries: `/get`, `/put`, `/append` and
//! `DELETE /delete`, their methods, parameters (`key`, `val` or `value`, `client_id` + `seq`),
//! body limit and reply shapes. A node serves them from its own shard and a router by
//! forwarding, so each implements [`KvService`] and merges [`routes`] into its own router;
//! a client cannot tell the two apart.
//!
//! | route     | methods          | reply                                   |
//! |-----------|------------------|-----------------------------------------|
//! | `/get`    | GET, POST        | `{"key", "value"}`, 404 `not_found`     |
//! | `/put`    | GET, POST, PUT   | `{"ok": true}`                          |
//! | `/append` | GET, POST, PUT   | `{"ok": true, "previous": value\|null}` |
//! | `/delete` | DELETE, POST     | `{"ok": true, "deleted": bool}`         |
//! | `/scan`   | GET, POST        | `{"items": [...], "next"}` (see `scan`) |
//!
//! Each takes `collection=NAME` too (absent: `default`, the seed's keyspace); an unknown one
//! is a 404 `unknown_collection`, a malformed name a 400 `bad_name`. A custom collection's
//! calls take `shard_key=NAME` (400 `missing_shard_key` without one, unless the collection
//! was promoted and has a default shard key; 404 `unknown_shard_key`).
//!
//! Any other method is a 405 `method_not_allowed`; a reply of the wrong kind for the operation
//! is a 409 `sequence_reused`.

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get};
use axum::Router;
use serde_json::json;
use unikv_types::catalog::{validate_name, validate_shard_key, Space, DEFAULT_COLLECTION};
use unikv_types::{ClientSeq, KvOp, KvReply, Limits};

use crate::error::ApiError;
use crate::params::Params;
use crate::reply::{json_ok, method_not_allowed, ok};
use crate::scan::{page_json, scan_range, SCAN_KEY};

/// What serves the KV endpoints: a node (its own shard) or a router (by forwarding).
pub trait KvService: Send + Sync + 'static {
    /// Key and value limits; they size the request body limit ([`max_body`]).
    fn limits(&self) -> &Limits;

    /// Runs one operation. `client` is the caller's (client id, seq), only ever given for
    /// writes; `space` the collection (a valid name other than `default`, or `None`) and
    /// shard key. Limits are the service's to check (the errors name the offending field).
    fn execute(
        &self,
        key: String,
        op: KvOp,
        client: Option<ClientSeq>,
        space: Space,
    ) -> impl Future<Output = Result<KvReply, ApiError>> + Send;
}

/// The four KV routes over `service`, to `.merge()` into a binary's router (which adds its
/// own routes and the 404 fallback).
pub fn routes<S: KvService>(service: Arc<S>) -> Router {
    Router::new()
        .route(
            "/get",
            get(kv_get::<S>)
                .post(kv_get::<S>)
                .fallback(method_not_allowed),
        )
        .route(
            "/put",
            get(kv_put::<S>)
                .post(kv_put::<S>)
                .put(kv_put::<S>)
                .fallback(method_not_allowed),
        )
        .route(
            "/append",
            get(kv_append::<S>)
                .post(kv_append::<S>)
                .put(kv_append::<S>)
                .fallback(method_not_allowed),
        )
        .route(
            "/scan",
            get(kv_scan::<S>)
                .post(kv_scan::<S>)
                .fallback(method_not_allowed),
        )
        .route(
            "/delete",
            delete(kv_delete::<S>)
                .post(kv_delete::<S>)
                .fallback(method_not_allowed),
        )
        .with_state(service)
}

/// Body limit: a maximal value plus room for the key and other fields.
pub fn max_body(limits: &Limits) -> usize {
    limits
        .max_value_bytes
        .saturating_add(limits.max_key_bytes)
        .saturating_add(64 * 1024)
}

async fn run<S: KvService>(
    service: &S,
    req: Request,
    op: impl FnOnce(&Params) -> Result<KvOp, ApiError>,
) -> Result<(String, KvReply), ApiError> {
    let p = Params::from_request(req, max_body(service.limits())).await?;
    let key = p.required("key")?.to_string();
    let op = op(&p)?;
    let client = if op.is_write() { p.client_seq()? } else { None };
    let space = Space {
        collection: collection_param(&p)?,
        shard_key: shard_key_param(&p)?,
    };
    let reply = service.execute(key.clone(), op, client, space).await?;
    Ok((key, reply))
}

/// `collection=NAME`, validated (400 `bad_name`); `default` and absent are both `None`.
pub fn collection_param(p: &Params) -> Result<Option<String>, ApiError> {
    match p.optional("collection") {
        None | Some(DEFAULT_COLLECTION) => Ok(None),
        Some(name) => {
            validate_name(name)?;
            Ok(Some(name.to_string()))
        }
    }
}

/// `shard_key=NAME`, validated (400 `bad_shard_key`).
pub fn shard_key_param(p: &Params) -> Result<Option<String>, ApiError> {
    match p.optional("shard_key") {
        None => Ok(None),
        Some(name) => {
            validate_shard_key(name)?;
            Ok(Some(name.to_string()))
        }
    }
}

fn value(p: &Params) -> Result<String, ApiError> {
    Ok(p.required_any(&["val", "value"])?.to_string())
}

async fn kv_get<S: KvService>(
    State(service): State<Arc<S>>,
    req: Request,
) -> Result<Response, ApiError> {
    let (key, reply) = run(&*service, req, |_| Ok(KvOp::Get)).await?;
    match reply {
        KvReply::Value(Some(v)) => Ok(ok(json!({"key": key, "value": v}))),
        KvReply::Value(None) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "key not found").with("key", key))
        }
        other => Err(unexpected(other)),
    }
}

async fn kv_put<S: KvService>(
    State(service): State<Arc<S>>,
    req: Request,
) -> Result<Response, ApiError> {
    let (_, reply) = run(&*service, req, |p| Ok(KvOp::Put { value: value(p)? })).await?;
    match reply {
        KvReply::Written => Ok(ok(json_ok())),
        other => Err(unexpected(other)),
    }
}

async fn kv_append<S: KvService>(
    State(service): State<Arc<S>>,
    req: Request,
) -> Result<Response, ApiError> {
    let (_, reply) = run(&*service, req, |p| Ok(KvOp::Append { value: value(p)? })).await?;
    match reply {
        KvReply::Appended { previous } => Ok(ok(json!({"ok": true, "previous": previous}))),
        KvReply::RetriedAppend { previous_bytes } => Ok(ok(json!({
            "ok": true,
            "retried": true,
            "previous_bytes": previous_bytes,
        }))),
        other => Err(unexpected(other)),
    }
}

async fn kv_delete<S: KvService>(
    State(service): State<Arc<S>>,
    req: Request,
) -> Result<Response, ApiError> {
    let (_, reply) = run(&*service, req, |_| Ok(KvOp::Delete)).await?;
    match reply {
        KvReply::Deleted { existed } => Ok(ok(json!({"ok": true, "deleted": existed}))),
        other => Err(unexpected(other)),
    }
}

async fn kv_scan<S: KvService>(
    State(s): State<Arc<S>>,
    req: Request,
) -> Result<Response, ApiError> {
    let p = Params::from_request(req, max_body(s.limits())).await?;
    let range = scan_range(&p)?;
    let space = Space {
        collection: collection_param(&p)?,
        shard_key: None,
    };
    match s
        .execute(SCAN_KEY.into(), KvOp::Scan(range), None, space)
        .await?
    {
        KvReply::Scan(page) => Ok(ok(page_json(page))),
        other => Err(unexpected(other)),
    }
}

/// A reply of the wrong kind for the operation: only possible if a caller reused its
/// (client_id, seq) for another operation, whose stored reply the shard's dedup returned.
fn unexpected(reply: KvReply) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "sequence_reused",
        format!(
            "this (client_id, seq) was already used for another operation, which returned {reply:?}"
        ),
    )
}

#[cfg(test)]
#[path = "kv_tests.rs"]
mod tests;
