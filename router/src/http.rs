//! The router's HTTP API. The KV endpoints (`/get`, `/put`, `/append`, `/delete`) are the ones
//! `unikv_http::kv` defines for nodes too, served here by the [`Forwarder`], so a client can
//! talk to either; `/status` shows the router's cluster map and `/health` says it is up. Every
//! error is a JSON body `{"error", "code", ...}`; nothing a client sends can panic the router.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::json;
use tokio::sync::watch;
use unikv_gossip::ClusterView;
use unikv_http::kv::{self, KvService};
use unikv_http::{method_not_allowed, not_found, ok, ApiError, CatalogService};
use unikv_types::catalog::{
    bucket_of, bucket_shard, Catalog, CatalogOp, CatalogReply, Placement, Space, Target,
    CATALOG_KEY, DEFAULT_COLLECTION, SYSTEM_COLLECTION,
};
use unikv_types::{ChunkInfo, ClientSeq, KvOp, KvReply, Limits, ShardId};

use crate::forward::{Backend, Forwarder};
use crate::status::{self, Addresses};

/// Everything the handlers share.
pub struct App<B> {
    pub forwarder: Forwarder<B>,
    /// The latest gossip view, for `/status`.
    pub view: watch::Receiver<Arc<ClusterView>>,
    /// The catalog, for requests to shard keys placed on chosen shards.
    pub catalog: unikv_http::catalog_cache::CatalogCache,
    /// Where range collections' chunks are (see `chunk_map`).
    pub chunk_maps: crate::chunk_map::ChunkMaps,
    pub addresses: Addresses,
    pub limits: Limits,
}

/// The router's API: the shared KV and collection endpoints (served by forwarding, behind
/// the data and admin tokens when configured) plus `/status` and `/health`.
pub fn router<B: Backend>(app: Arc<App<B>>, access: unikv_http::access::Access) -> Router {
    Router::new()
        .route(
            "/status",
            get(cluster_status::<B>).fallback(method_not_allowed),
        )
        .route("/health", get(health).fallback(method_not_allowed))
        .fallback(not_found)
        .with_state(app.clone())
        .merge(unikv_http::collections::routes(app.clone(), access.clone()))
        .merge(unikv_http::chunks::routes(app.clone(), access.clone()))
        .merge(
            kv::routes(app).route_layer(axum::middleware::from_fn_with_state(
                access,
                unikv_http::access::data_guard,
            )),
        )
}

impl<B: Backend> KvService for App<B> {
    fn limits(&self) -> &Limits {
        &self.limits
    }

    async fn execute(
        &self,
        key: String,
        op: KvOp,
        client: Option<ClientSeq>,
        space: Space,
    ) -> Result<KvReply, ApiError> {
        let target = self.target_of(&space).await?;
        let placement = target.as_ref().map(|t| &t.placement);
        if op.is_range_only() && placement != Some(&Placement::Range) {
            return Err(ApiError::bad_request(
                "not_range",
                format!(
                    "{} works on range collections; {:?} is not one",
                    op.name(),
                    space.collection.as_deref().unwrap_or(DEFAULT_COLLECTION)
                ),
            ));
        }
        let pin = match target {
            Some(Target {
                keyspace,
                placement: Placement::Range,
            }) => return self.execute_range(keyspace, key, op, client, space).await,
            Some(Target {
                placement: Placement::Shards(shards),
                ..
            }) => bucket_shard(&shards, bucket_of(key.as_bytes())),
            _ => None,
        };
        if pin.is_none() {
            return self.forwarder.execute_on(key, op, client, space, pin).await;
        }
        // A shard key placed on chosen shards: a `wrong_shard` answer means its part on that
        // shard moved (the shard refused: nothing was applied); read the catalog again and
        // go where it now says, until the request's deadline.
        let deadline = std::time::Instant::now() + self.forwarder.timeout();
        let mut pin = pin;
        loop {
            let res = self
                .forwarder
                .execute_on(key.clone(), op.clone(), client.clone(), space.clone(), pin)
                .await;
            match res {
                Err(e) if e.code == "wrong_shard" && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(MOVED_RETRY).await;
                    let name = space.collection.as_deref().unwrap_or(DEFAULT_COLLECTION);
                    let cat = self
                        .catalog
                        .refresh(std::time::Instant::now(), || {
                            CatalogService::read_catalog(self)
                        })
                        .await?;
                    pin = match cat.target(name, space.shard_key.as_deref())?.placement {
                        Placement::Shards(shards) => {
                            bucket_shard(&shards, bucket_of(key.as_bytes()))
                        }
                        _ => None,
                    };
                }
                other => return other,
            }
        }
    }
}

/// Pause before a request for a moved shard key is sent again.
const MOVED_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

impl<B: Backend> App<B> {
    /// Where the collection of `space` sends requests; `None` when the request names none
    /// (the serving node resolves `default`).
    async fn target_of(&self, space: &Space) -> Result<Option<Target>, ApiError> {
        // A shard key without a collection is one of `default`'s (once promoted).
        let name = match (space.collection.as_deref(), &space.shard_key) {
            (Some(name), _) => name,
            (None, Some(_)) => DEFAULT_COLLECTION,
            (None, None) => return Ok(None),
        };
        let arrived = std::time::Instant::now();
        let cached = self.catalog.current();
        let fresh_enough = cached.version >= self.view.borrow().catalog_version();
        let target = match cached.target(name, space.shard_key.as_deref()) {
            Ok(t) if fresh_enough => t,
            _ => {
                let cat = self
                    .catalog
                    .refresh(arrived, || CatalogService::read_catalog(self))
                    .await?;
                cat.target(name, space.shard_key.as_deref())?
            }
        };
        Ok(Some(target))
    }
}

/// The catalog through the router: a request for the catalog key, routed to the shard that
/// owns its slot like any other key (redirects, retries and at-most-once included).
impl<B: Backend> CatalogService for App<B> {
    async fn read_catalog(&self) -> Result<Catalog, ApiError> {
        let reply = self
            .forwarder
            .execute(CATALOG_KEY.into(), KvOp::Get, None, system_space())
            .await?;
        match reply {
            KvReply::Value(Some(json)) => serde_json::from_str(&json).map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("the stored catalog does not decode: {e}"),
                )
            }),
            KvReply::Value(None) => Ok(Catalog::default()),
            other => Err(unexpected("read", other)),
        }
    }

    fn shards(&self) -> Vec<unikv_types::ShardSummary> {
        self.view.borrow().summaries()
    }

    async fn chunks(&self, collection: &str) -> Result<Vec<ChunkInfo>, ApiError> {
        self.all_chunks(&Space {
            collection: Some(collection.to_string()),
            shard_key: None,
        })
        .await
    }

    async fn on_shard(
        &self,
        space: Space,
        shard: ShardId,
        key: String,
        op: KvOp,
    ) -> Result<KvReply, ApiError> {
        self.forwarder
            .execute_on(key, op, None, space, Some(shard))
            .await
    }

    async fn change_catalog(&self, op: CatalogOp) -> Result<CatalogReply, ApiError> {
        let reply = self
            .forwarder
            .execute(CATALOG_KEY.into(), KvOp::Catalog(op), None, system_space())
            .await?;
        match reply {
            KvReply::Catalog(r) => Ok(r),
            other => Err(unexpected("change", other)),
        }
    }
}

fn system_space() -> Space {
    Space {
        collection: Some(SYSTEM_COLLECTION.to_string()),
        shard_key: None,
    }
}

fn unexpected(what: &str, reply: KvReply) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("catalog {what} got {reply:?}"),
    )
}

async fn cluster_status<B: Backend>(State(app): State<Arc<App<B>>>) -> Response {
    let view = app.view.borrow().clone();
    ok(status::render(
        &app.addresses,
        &view,
        app.forwarder.counters(),
    ))
}

async fn health() -> Response {
    ok(json!({"ok": true}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::tests::{forwarder, success, Fake};
    use crate::view::tests::sample_view;
    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use unikv_types::{KvError, KvRequest};

    /// Serves the router's HTTP API over a fake backend on a free port.
    async fn serve(fake: &Arc<Fake>) -> std::net::SocketAddr {
        let app = Arc::new(App {
            forwarder: forwarder(fake, 500),
            view: watch::channel(Arc::new(sample_view())).1,
            catalog: Default::default(),
            chunk_maps: Default::default(),
            addresses: Addresses {
                http: "127.0.0.1:3000".into(),
                gossip: "127.0.0.1:3000".into(),
            },
            limits: Limits::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(app, Default::default())).await });
        addr
    }

    /// One HTTP/1.1 request; returns the status and the JSON body.
    async fn send(
        addr: std::net::SocketAddr,
        method: &str,
        target: &str,
        body: Option<(&str, &str)>,
    ) -> (u16, Value) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut req =
            format!("{method} {target} HTTP/1.1\r\nHost: router\r\nConnection: close\r\n");
        if let Some((ctype, b)) = body {
            req.push_str(&format!(
                "Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            ));
        } else {
            req.push_str("\r\n");
        }
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8(raw).unwrap();
        let status = text[9..12].parse().unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    fn script(_: &str, req: &KvRequest) -> unikv_net::Result<Result<KvReply, KvError>> {
        match (&req.op, req.key.as_str()) {
            (KvOp::Get, "missing") => Ok(Ok(KvReply::Value(None))),
            (KvOp::Put { .. }, "reused") => Ok(Ok(KvReply::Deleted { existed: false })),
            (KvOp::Append { value }, _) if value == "x" => Ok(Ok(KvReply::Appended {
                previous: Some("before".into()),
            })),
            _ => success(req),
        }
    }

    #[tokio::test]
    async fn kv_endpoints_answer_like_a_node() {
        let fake = Fake::new(script);
        let addr = serve(&fake).await;

        let (s, b) = send(addr, "GET", "/get?key=foo", None).await;
        assert_eq!(
            (s, b),
            (200, serde_json::json!({"key": "foo", "value": "v-foo"}))
        );
        let (s, b) = send(
            addr,
            "POST",
            "/get",
            Some(("application/json", r#"{"key":"foo"}"#)),
        )
        .await;
        assert_eq!((s, &b["value"]), (200, &Value::from("v-foo")));
        let (s, b) = send(addr, "GET", "/get?key=missing", None).await;
        assert_eq!(
            (s, &b["code"], &b["key"]),
            (404, &Value::from("not_found"), &Value::from("missing"))
        );

        for method in ["GET", "POST", "PUT"] {
            let (s, b) = send(addr, method, "/put?key=a&val=1", None).await;
            assert_eq!((s, b), (200, serde_json::json!({"ok": true})), "{method}");
        }
        let (s, _) = send(
            addr,
            "PUT",
            "/put",
            Some(("application/x-www-form-urlencoded", "key=a&value=2")),
        )
        .await;
        assert_eq!(s, 200);
        let (s, b) = send(addr, "GET", "/put?key=a", None).await;
        assert_eq!((s, &b["code"]), (400, &Value::from("missing_param")));
        let (s, b) = send(addr, "GET", "/put?key=reused&val=1", None).await;
        assert_eq!((s, &b["code"]), (409, &Value::from("sequence_reused")));

        let (s, b) = send(addr, "POST", "/append?key=a&val=x", None).await;
        assert_eq!(
            (s, b),
            (200, serde_json::json!({"ok": true, "previous": "before"}))
        );
        let (s, b) = send(addr, "GET", "/append?key=a&val=y", None).await;
        assert_eq!(
            (s, b),
            (200, serde_json::json!({"ok": true, "previous": null}))
        );

        let (s, b) = send(addr, "DELETE", "/delete?key=a", None).await;
        assert_eq!(
            (s, b),
            (200, serde_json::json!({"ok": true, "deleted": true}))
        );
        let (s, _) = send(addr, "POST", "/delete?key=a", None).await;
        assert_eq!(s, 200);

        // Caller-supplied sessions are passed on; half of one is an error.
        let (s, _) = send(addr, "GET", "/put?key=a&val=1&client_id=c1&seq=7", None).await;
        assert_eq!(s, 200);
        let last = fake.calls().last().unwrap().1.client.clone().unwrap();
        assert_eq!((last.client_id.as_str(), last.seq), ("c1", 7));
        let (s, b) = send(addr, "GET", "/put?key=a&val=1&seq=7", None).await;
        assert_eq!((s, &b["code"]), (400, &Value::from("bad_request")));
    }

    #[tokio::test]
    async fn bad_requests_are_json_errors() {
        let fake = Fake::new(script);
        let addr = serve(&fake).await;
        let (s, b) = send(addr, "GET", "/get", None).await;
        assert_eq!((s, &b["code"]), (400, &Value::from("missing_param")));
        let (s, b) = send(addr, "GET", "/get?key=", None).await;
        assert_eq!((s, &b["code"]), (400, &Value::from("empty_key")));
        let long = "k".repeat(2000);
        let (s, b) = send(addr, "GET", &format!("/get?key={long}"), None).await;
        assert_eq!((s, &b["code"]), (400, &Value::from("key_too_long")));
        let (s, b) = send(addr, "GET", "/delete?key=a", None).await;
        assert_eq!((s, &b["code"]), (405, &Value::from("method_not_allowed")));
        let (s, b) = send(addr, "DELETE", "/get?key=a", None).await;
        assert_eq!((s, &b["code"]), (405, &Value::from("method_not_allowed")));
        let (s, b) = send(addr, "GET", "/nope", None).await;
        assert_eq!((s, &b["code"]), (404, &Value::from("not_found")));
        let (s, b) = send(
            addr,
            "POST",
            "/put",
            Some(("application/json", "{not json")),
        )
        .await;
        assert_eq!((s, &b["code"]), (400, &Value::from("bad_request")));
        // Keys of every shape, including ones that hash to the first and last slots.
        for key in [
            "%7B%7D",
            "%7Ba%7D",
            "%00",
            "%F0%9F%A6%80",
            "123456789",
            "%7B",
        ] {
            let (s, _) = send(addr, "GET", &format!("/get?key={key}"), None).await;
            assert_eq!(s, 200, "{key}");
        }
        assert!(fake.calls().len() >= 6);
    }

    #[tokio::test]
    async fn status_and_health() {
        let fake = Fake::new(script);
        let addr = serve(&fake).await;
        send(addr, "GET", "/get?key=foo", None).await;
        let (s, b) = send(addr, "GET", "/status", None).await;
        assert_eq!(s, 200);
        assert_eq!(b["view_revision"], 9);
        assert_eq!(b["shards"].as_array().map(Vec::len), Some(2));
        assert_eq!(b["counters"]["requests"], 1);
        assert_eq!(b["counters"]["ok"], 1);
        let (s, b) = send(addr, "GET", "/health", None).await;
        assert_eq!((s, b), (200, serde_json::json!({"ok": true})));
        let (s, _) = send(addr, "POST", "/status", None).await;
        assert_eq!(s, 405);
    }
}
