//! The collection endpoints, defined once for nodes and routers (each implements
//! [`CatalogService`]: a node reaches the shard owning the catalog slot itself, a router
//! forwards like any key):
//!
//! | route                 | methods    | reply                                              |
//! |-----------------------|------------|----------------------------------------------------|
//! | `/collections`        | GET        | `{"version", "collections": [...], "deleting": [...]}` |
//! | `/collections/{name}` | GET        | the collection with `catalog_version`, `keys` and `bytes` (range: also `chunk_count`, `chunks_per_shard`; hash and custom: `per_shard`, and per shard key); 404 `unknown_collection` |
//! | `/collections/{name}` | PUT, POST  | 201 `{"ok", "created": true, "collection", "catalog_version"}` (200 and `created: false` if it exists alike) |
//! | `/collections/{name}` | DELETE     | `{"ok", "deleted": true, "dropped", "catalog_version"}` |
//!
//! A delete takes the name out of the catalog at once, then waits (up to 10 s) until every
//! shard dropped the data (`dropped: true`); a shard that cannot be reached then gets it
//! later, from the catalog shard's janitor (`deleting` in `GET /collections` until done).
//!
//! | `/collections/{name}/shard_keys` | GET | the shard keys of a custom collection |
//! | `/collections/{name}/shard_keys/{key}` | PUT, POST | `{"shards": [2, 3]}` or `{"shard_number": 2}` (201) |
//! | `/collections/{name}/shard_keys/{key}` | DELETE | the shard key and its data (`dropped`) |
//! | `/collections/{name}/sharding/promote_to_custom` | POST | `{"default_shard_key": "default"}`: hash → custom, one way |
//!
//! Chunks of range collections have their own routes (`chunks`).
//!
//! Changes take `sharding` (`hash`, `range` or `custom`) and
//! `expected_version` (the catalog version the change is based on: 409 `version_conflict`
//! if another change came first). Changes are admin calls; reads are data calls.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::json;
use unikv_types::catalog::{
    one_way, unknown_collection, validate_name, validate_shard_key, Catalog, CatalogChange,
    CatalogOp, CatalogOutcome, CatalogReply, Collection, Placement, ShardKey, Sharding, Space,
};
use unikv_types::{ChunkInfo, Keyspace, KvOp, KvReply, ShardId, ShardSummary};

use crate::access::{data_guard, guard, Access};
use crate::error::ApiError;
use crate::params::Params;
use crate::reply::{method_not_allowed, ok};

/// Largest body a collection call reads.
const MAX_BODY: usize = 64 * 1024;

/// What serves the collection endpoints.
pub trait CatalogService: Send + Sync + 'static {
    /// The catalog as of now (a linearizable read in the shard that holds it).
    fn read_catalog(&self) -> impl Future<Output = Result<Catalog, ApiError>> + Send;

    /// Applies one change through the catalog shard's Raft log.
    fn change_catalog(
        &self,
        op: CatalogOp,
    ) -> impl Future<Output = Result<CatalogReply, ApiError>> + Send;

    /// Every shard the gossip view knows: id, whether it takes data (active), bytes, tags.
    fn shards(&self) -> Vec<ShardSummary>;

    /// The chunks of the range collection `collection` every shard holds (see `chunks`).
    fn chunks(
        &self,
        collection: &str,
    ) -> impl Future<Output = Result<Vec<ChunkInfo>, ApiError>> + Send;

    /// Runs `op` (a chunk's split or move, a usage question) for `key` of `space` on
    /// `shard`.
    fn on_shard(
        &self,
        space: Space,
        shard: ShardId,
        key: String,
        op: KvOp,
    ) -> impl Future<Output = Result<KvReply, ApiError>> + Send;
}

/// The collection routes over `service`, reads behind the data token and changes behind
/// the admin token (see `access`).
pub fn routes<S: CatalogService>(service: Arc<S>, access: Access) -> Router {
    let reads = || axum::middleware::from_fn_with_state(access.clone(), data_guard);
    let changes = axum::middleware::from_fn_with_state(access.clone(), guard);
    let one = get(show::<S>).route_layer(reads()).merge(
        put(create::<S>)
            .post(create::<S>)
            .delete(remove::<S>)
            .route_layer(changes),
    );
    Router::new()
        .route(
            "/collections",
            get(list::<S>)
                .route_layer(reads())
                .fallback(method_not_allowed),
        )
        .route("/collections/{name}", one.fallback(method_not_allowed))
        .route(
            "/collections/{name}/shard_keys",
            get(list_keys::<S>)
                .route_layer(reads())
                .fallback(method_not_allowed),
        )
        .route(
            "/collections/{name}/shard_keys/{key}",
            put(create_key::<S>)
                .post(create_key::<S>)
                .delete(remove_key::<S>)
                .route_layer(axum::middleware::from_fn_with_state(access.clone(), guard))
                .fallback(method_not_allowed),
        )
        .route(
            "/collections/{name}/sharding/{change}",
            axum::routing::post(sharding::<S>)
                .route_layer(axum::middleware::from_fn_with_state(access.clone(), guard))
                .fallback(method_not_allowed),
        )
        .with_state(service)
}

fn collection_json(c: &Collection) -> serde_json::Value {
    let mut v = json!({
        "name": c.name,
        "id": c.id.0,
        "sharding": c.sharding.as_str(),
        "version": c.version,
        "created_ms": c.created_ms,
        "updated_ms": c.updated_ms,
    });
    if c.sharding == Sharding::Custom {
        v["shard_keys"] = c.shard_keys.values().map(shard_key_json).collect();
        v["default_shard_key"] = json!(c.default_shard_key);
    }
    v
}

fn shard_key_json(k: &ShardKey) -> serde_json::Value {
    let placement = match &k.placement {
        Placement::Slots => json!("slots"),
        Placement::Shards(s) => json!({"shards": s.iter().map(|s| s.0).collect::<Vec<_>>()}),
        Placement::Range => json!("range"),
    };
    json!({"name": k.name, "id": k.id.0, "placement": placement, "created_ms": k.created_ms})
}

async fn list_keys<S: CatalogService>(
    State(s): State<Arc<S>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    name_param(&name)?;
    let cat = s.read_catalog().await?;
    let c = cat.get(&name).ok_or_else(|| unknown_collection(&name))?;
    let keys: Vec<_> = c.shard_keys.values().map(shard_key_json).collect();
    Ok(ok(json!({
        "collection": name,
        "sharding": c.sharding.as_str(),
        "shard_keys": keys,
        "catalog_version": cat.version,
    })))
}

/// The shards a new shard key goes to: the body's `shards` (each must be an active shard),
/// or `shard_number` of the active shards holding the fewest bytes, among those carrying
/// every one of the body's `tags` if it names some (zone sharding).
fn placement_of<S: CatalogService>(
    s: &S,
    body: &serde_json::Value,
) -> Result<Vec<ShardId>, ApiError> {
    let shards = s.shards();
    let bad = |m: String| ApiError::bad_request("bad_shards", m);
    if let Some(list) = body.get("shards") {
        if body.get("shard_number").is_some() || body.get("tags").is_some() {
            return Err(bad(
                "name either shards, or shard_number (with tags if you like), not both".into(),
            ));
        }
        let ids: Vec<u64> = serde_json::from_value(list.clone())
            .map_err(|_| bad(format!("shards must be a list of shard ids, got {list}")))?;
        let mut out = Vec::new();
        for id in ids {
            match shards.iter().find(|s| s.id.0 == id) {
                Some(s) if s.active => out.push(s.id),
                Some(_) => {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "shard_not_active",
                        format!("shard {id} is draining or inactive and takes no data"),
                    ))
                }
                None => {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "unknown_shard",
                        format!("no shard {id} in the cluster"),
                    ))
                }
            }
        }
        return Ok(out);
    }
    let n = match body.get("shard_number") {
        Some(v) => v
            .as_u64()
            .filter(|n| *n >= 1)
            .ok_or_else(|| bad(format!("shard_number must be a positive integer, got {v}")))?,
        None => 1,
    };
    let tags: std::collections::BTreeMap<String, String> = match body.get("tags") {
        Some(t) => serde_json::from_value(t.clone()).map_err(|_| {
            ApiError::bad_request(
                "bad_tags",
                format!("tags must be an object of strings, e.g. {{\"zone\": \"eu\"}}, got {t}"),
            )
        })?,
        None => Default::default(),
    };
    let fits = |sh: &ShardSummary| tags.iter().all(|(k, v)| sh.tags.get(k) == Some(v));
    let mut active: Vec<ShardSummary> =
        shards.into_iter().filter(|s| s.active && fits(s)).collect();
    if active.len() < n as usize {
        let which = if tags.is_empty() {
            String::new()
        } else {
            format!(" with tags {}", json!(tags))
        };
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_enough_shards",
            format!(
                "shard_number {n}, but only {} active shards{which}",
                active.len()
            ),
        ));
    }
    active.sort_by_key(|s| (s.bytes, s.id));
    let mut out: Vec<ShardId> = active.into_iter().take(n as usize).map(|s| s.id).collect();
    out.sort();
    Ok(out)
}

/// The request body as a JSON object (empty: `{}`), with the query string's parameters
/// added where the body does not name them (as `Params` does for the other calls), so
/// `?expected_version=N` works on every change.
async fn json_body(req: Request) -> Result<serde_json::Value, ApiError> {
    let query: Vec<(String, String)> = match req.uri().query() {
        Some(q) => serde_urlencoded::from_str(q).map_err(|e| {
            ApiError::bad_request("bad_request", format!("malformed query string: {e}"))
        })?,
        None => Vec::new(),
    };
    let mut v = body_object(req).await?;
    if let Some(obj) = v.as_object_mut() {
        for (k, val) in query {
            obj.entry(k).or_insert(serde_json::Value::String(val));
        }
    }
    Ok(v)
}

async fn body_object(req: Request) -> Result<serde_json::Value, ApiError> {
    let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body is over {MAX_BODY} bytes"),
            )
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("bad_request", format!("malformed JSON body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "bad_request",
            "JSON body must be an object",
        ));
    }
    Ok(v)
}

fn body_version(body: &serde_json::Value) -> Result<Option<u64>, ApiError> {
    match body.get("expected_version") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "bad_request",
                    format!("expected_version must be a non-negative integer, got {v}"),
                )
            }),
    }
}

async fn create_key<S: CatalogService>(
    State(s): State<Arc<S>>,
    Path((name, key)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    name_param(&name)?;
    validate_shard_key(&key)?;
    let body = json_body(req).await?;
    let shards = placement_of(&*s, &body)?;
    let op = CatalogOp {
        change: CatalogChange::CreateShardKey {
            collection: name,
            key: key.clone(),
            shards,
        },
        expected_version: body_version(&body)?,
    };
    let reply = s.change_catalog(op).await?;
    let k = reply
        .collection
        .as_ref()
        .and_then(|c| c.shard_keys.get(&key));
    Ok(created_reply(&reply, "shard_key", k.map(shard_key_json)))
}

/// 201 `{"ok", "created": true, <what>, "catalog_version"}` for a create that created; 200
/// with `created: false` for one that found the same thing there.
fn created_reply(reply: &CatalogReply, what: &str, value: Option<serde_json::Value>) -> Response {
    let created = reply.outcome == CatalogOutcome::Created;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut body = json!({"ok": true, "created": created, "catalog_version": reply.version});
    body[what] = value.unwrap_or(serde_json::Value::Null);
    (status, Json(body)).into_response()
}

async fn remove_key<S: CatalogService>(
    State(s): State<Arc<S>>,
    Path((name, key)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    name_param(&name)?;
    validate_shard_key(&key)?;
    let body = json_body(req).await?;
    let id = s
        .read_catalog()
        .await?
        .get(&name)
        .and_then(|c| c.shard_keys.get(&key).map(|k| k.id));
    let op = CatalogOp {
        change: CatalogChange::DeleteShardKey {
            collection: name,
            key,
        },
        expected_version: body_version(&body)?,
    };
    let reply = s.change_catalog(op).await?;
    let dropped = match id {
        Some(id) => wait_dropped(&*s, id).await,
        None => false,
    };
    Ok(ok(json!({
        "ok": true,
        "deleted": true,
        "dropped": dropped,
        "catalog_version": reply.version,
    })))
}

/// `POST /collections/{name}/sharding/promote_to_custom` (seed 003): one way.
async fn sharding<S: CatalogService>(
    State(s): State<Arc<S>>,
    Path((name, change)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    name_param(&name)?;
    if change != "promote_to_custom" {
        if change.starts_with("promote_to_") || change.starts_with("demote") {
            return Err(one_way(&name).into());
        }
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no sharding change {change:?}; the one there is is promote_to_custom"),
        ));
    }
    let body = json_body(req).await?;
    let key = match body.get("default_shard_key") {
        None | Some(serde_json::Value::Null) => "default".to_string(),
        Some(serde_json::Value::String(k)) => k.clone(),
        Some(v) => {
            return Err(ApiError::bad_request(
                "bad_shard_key",
                format!("default_shard_key must be a string, got {v}"),
            ))
        }
    };
    validate_shard_key(&key)?;
    let op = CatalogOp {
        change: CatalogChange::Promote {
            collection: name,
            default_shard_key: key,
        },
        expected_version: body_version(&body)?,
    };
    let reply = s.change_catalog(op).await?;
    Ok(ok(json!({
        "ok": true,
        "promoted": true,
        "collection": reply.collection.as_ref().map(collection_json),
        "catalog_version": reply.version,
    })))
}

async fn list<S: CatalogService>(State(s): State<Arc<S>>) -> Result<Response, ApiError> {
    let cat = s.read_catalog().await?;
    let collections: Vec<_> = cat.list().iter().map(collection_json).collect();
    let deleting: Vec<_> = cat
        .dropping
        .iter()
        .map(|d| json!({"name": d.name, "id": d.id.0, "since_ms": d.since_ms}))
        .collect();
    Ok(ok(json!({
        "version": cat.version,
        "collections": collections,
        "deleting": deleting,
    })))
}

fn name_param(name: &str) -> Result<(), ApiError> {
    Ok(validate_name(name)?)
}

async fn show<S: CatalogService>(
    State(s): State<Arc<S>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    name_param(&name)?;
    let cat = s.read_catalog().await?;
    let c = cat.get(&name).ok_or_else(|| unknown_collection(&name))?;
    let mut body = collection_json(&c);
    body["catalog_version"] = json!(cat.version);
    if c.sharding == Sharding::Range {
        // From every shard that answers: chunks, keys and bytes, and chunks per shard.
        let chunks = s.chunks(&name).await?;
        let mut per_shard: std::collections::BTreeMap<String, usize> = Default::default();
        for ch in &chunks {
            *per_shard.entry(ch.shard.0.to_string()).or_default() += 1;
        }
        body["chunk_count"] = json!(chunks.len());
        body["keys"] = json!(chunks.iter().map(|c| c.count).sum::<u64>());
        body["bytes"] = json!(chunks.iter().map(|c| c.size).sum::<u64>());
        body["chunks_per_shard"] = json!(per_shard);
    } else {
        let u = usage(&*s, &c).await;
        body["keys"] = json!(u.values().map(|(_, k, _)| k).sum::<u64>());
        body["bytes"] = json!(u.values().map(|(_, _, b)| b).sum::<u64>());
        let mut per_shard: std::collections::BTreeMap<String, serde_json::Value> =
            Default::default();
        let mut unanswered = std::collections::BTreeSet::new();
        for ((key, shard), (answered, keys, bytes)) in &u {
            if !answered {
                unanswered.insert(shard.0);
                continue;
            }
            let e = per_shard
                .entry(shard.0.to_string())
                .or_insert_with(|| json!({"keys": 0, "bytes": 0}));
            e["keys"] = json!(e["keys"].as_u64().unwrap_or(0) + keys);
            e["bytes"] = json!(e["bytes"].as_u64().unwrap_or(0) + bytes);
            if let Some(sk) = key.as_ref().and_then(|k| {
                body["shard_keys"]
                    .as_array_mut()?
                    .iter_mut()
                    .find(|j| j["name"] == k.as_str())
            }) {
                sk["keys"] = json!(sk["keys"].as_u64().unwrap_or(0) + keys);
                sk["bytes"] = json!(sk["bytes"].as_u64().unwrap_or(0) + bytes);
            }
        }
        body["per_shard"] = json!(per_shard);
        if !unanswered.is_empty() {
            // The figures leave these shards out.
            body["unanswered_shards"] = json!(unanswered);
        }
    }
    Ok(ok(body))
}

/// What each shard holds of hash or custom collection `c`, asked of every shard that may
/// hold some (all of them at once): per (shard key, shard), whether it answered, keys, bytes.
async fn usage<S: CatalogService>(
    s: &S,
    c: &Collection,
) -> std::collections::BTreeMap<(Option<String>, ShardId), (bool, u64, u64)> {
    let all: Vec<ShardId> = s.shards().into_iter().map(|sh| sh.id).collect();
    let mut asks: Vec<(Option<String>, ShardId)> = Vec::new();
    if c.sharding == Sharding::Custom {
        for k in c.shard_keys.values() {
            let on = match &k.placement {
                Placement::Shards(v) => v.clone(),
                Placement::Slots | Placement::Range => all.clone(),
            };
            asks.extend(on.into_iter().map(|sh| (Some(k.name.clone()), sh)));
        }
    } else {
        asks.extend(all.iter().map(|sh| (None, *sh)));
    }
    let calls = asks.iter().map(|(key, shard)| {
        let space = Space {
            collection: Some(c.name.clone()),
            shard_key: key.clone(),
        };
        s.on_shard(space, *shard, "usage".into(), KvOp::Usage)
    });
    let answers = futures::future::join_all(calls).await;
    asks.into_iter()
        .zip(answers)
        .map(|(ask, a)| {
            let v = match a {
                Ok(KvReply::Usage { keys, bytes }) => (true, keys, bytes),
                _ => (false, 0, 0),
            };
            (ask, v)
        })
        .collect()
}

fn expected_version(p: &Params) -> Result<Option<u64>, ApiError> {
    match p.optional("expected_version") {
        Some(_) => Ok(Some(p.u64("expected_version")?)),
        None => Ok(None),
    }
}

async fn create<S: CatalogService>(
    State(s): State<Arc<S>>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    name_param(&name)?;
    let p = Params::from_request(req, MAX_BODY).await?;
    let sharding = Sharding::parse(p.optional("sharding").unwrap_or("hash"))?;
    let op = CatalogOp {
        change: CatalogChange::Create {
            name: name.clone(),
            sharding,
        },
        expected_version: expected_version(&p)?,
    };
    let reply = s.change_catalog(op).await?;
    let collection = reply.collection.as_ref().map(collection_json);
    Ok(created_reply(&reply, "collection", collection))
}

async fn remove<S: CatalogService>(
    State(s): State<Arc<S>>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    name_param(&name)?;
    let p = Params::from_request(req, MAX_BODY).await?;
    let op = CatalogOp {
        change: CatalogChange::Delete { name },
        expected_version: expected_version(&p)?,
    };
    let reply = s.change_catalog(op).await?;
    let dropped = match &reply.outcome {
        CatalogOutcome::Deleted(c) => wait_dropped(&*s, c.id).await,
        _ => false,
    };
    Ok(ok(json!({
        "ok": true,
        "deleted": true,
        "dropped": dropped,
        "catalog_version": reply.version,
    })))
}

/// How long a delete waits for every shard to drop the collection's data.
const DROP_WAIT: Duration = Duration::from_secs(10);

/// Waits (up to [`DROP_WAIT`]) until the catalog no longer lists `id` as being dropped:
/// every shard then refuses it, so no node answers from the deleted collection whatever its
/// cached catalog says. Whether that happened; if not, the drop goes on in the background
/// (`deleting` in `GET /collections`).
async fn wait_dropped<S: CatalogService>(s: &S, id: Keyspace) -> bool {
    let until = tokio::time::Instant::now() + DROP_WAIT;
    loop {
        if let Ok(c) = s.read_catalog().await {
            if !c.is_dropping(id) {
                return true;
            }
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
