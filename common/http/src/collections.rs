//! The collection endpoints, defined once for nodes and routers (each implements
//! [`CatalogService`]: a node reaches the shard owning the catalog slot itself, a router
//! forwards like any key):
//!
//! | route                 | methods    | reply                                              |
//! |-----------------------|------------|----------------------------------------------------|
//! | `/collections`        | GET        | `{"version", "collections": [...], "deleting": [...]}` |
//! | `/collections/{name}` | GET        | the collection with `catalog_version`; 404 `unknown_collection` |
//! | `/collections/{name}` | PUT, POST  | 201 `{"ok", "created": true, "collection", "catalog_version"}` (200 and `created: false` if it exists alike) |
//! | `/collections/{name}` | DELETE     | `{"ok", "deleted": true, "dropped", "catalog_version"}` |
//!
//! A delete takes the name out of the catalog at once, then waits (up to 10 s) until every
//! shard dropped the data (`dropped: true`); a shard that cannot be reached then gets it
//! later, from the catalog shard's janitor (`deleting` in `GET /collections` until done).
//!
//! Changes take `sharding` (`hash`; `range` and `custom` answer 501 for now) and
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
    unknown_collection, validate_name, Catalog, CatalogChange, CatalogOp, CatalogOutcome,
    CatalogReply, Collection, Sharding,
};
use unikv_types::Keyspace;

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
        .with_state(service)
}

fn collection_json(c: &Collection) -> serde_json::Value {
    json!({
        "name": c.name,
        "id": c.id.0,
        "sharding": c.sharding.as_str(),
        "version": c.version,
        "created_ms": c.created_ms,
        "updated_ms": c.updated_ms,
    })
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
    Ok(ok(body))
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
    let created = reply.outcome == CatalogOutcome::Created;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = json!({
        "ok": true,
        "created": created,
        "collection": reply.collection.as_ref().map(collection_json),
        "catalog_version": reply.version,
    });
    Ok((status, Json(body)).into_response())
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
