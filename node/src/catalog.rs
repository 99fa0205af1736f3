//! The node's side of collections: resolving a request's `collection` to its keyspace through
//! a cached catalog, reading and changing the catalog in whichever shard owns its slot, and
//! the janitor that drops a deleted collection's data in every shard.
//!
//! The catalog is one value in the system keyspace (see `unikv_types::catalog`); the shard
//! that owns its slot changes it through Raft and its members gossip the version they applied.
//! A node keeps the last catalog it read. It reads again when a request names a collection it
//! does not know, or when gossip shows a newer version than its copy — so a collection created
//! through any node is usable through every other at once, and a deleted one stops resolving
//! once gossip carries the change. Keyspace ids are never reused, and each shard refuses
//! writes to a keyspace it dropped, so a stale copy can never put a key into another
//! collection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use unikv_storage::{Command, RegistryCommand};
use unikv_types::catalog::{
    bucket_of, bucket_shard, catalog_slot, Catalog, CatalogChange, CatalogOp, CatalogReply,
    Placement, Target, CATALOG_KEY, DEFAULT_COLLECTION, SYSTEM_COLLECTION,
};
use unikv_types::{key_slot, rpc_kind, Keyspace, KvError, KvOp, KvReply, KvRequest};

use crate::peer::call_shard;
use crate::service::{Home, Node};

/// How often the janitor looks for deleted collections to drop.
const JANITOR_EVERY: Duration = Duration::from_secs(1);
/// Pause between attempts while the catalog slot is between owners.
const OWNER_POLL: Duration = Duration::from_millis(100);

impl Node {
    /// Where a request's collection (`None`: `default`) and shard key send it; 404
    /// `unknown_collection` / `unknown_shard_key` for names the catalog does not hold, 400 for
    /// a shard key missing or out of place. A miss is checked against a fresh read first.
    pub async fn resolve(
        &self,
        collection: Option<&str>,
        shard_key: Option<&str>,
    ) -> Result<Target, KvError> {
        let slots = |keyspace| Target {
            keyspace,
            placement: Placement::Slots,
        };
        let name = match collection {
            None | Some(DEFAULT_COLLECTION) if shard_key.is_none() => {
                return Ok(slots(Keyspace::DEFAULT))
            }
            Some(SYSTEM_COLLECTION) => return Ok(slots(Keyspace::SYSTEM)),
            None => DEFAULT_COLLECTION,
            Some(name) => name,
        };
        let arrived = Instant::now();
        let cached = self.catalog.current();
        if cached.version >= self.gossip.view().catalog_version() {
            if let Ok(t) = cached.target(name, shard_key) {
                return Ok(t);
            }
        }
        let fresh = self
            .catalog
            .refresh(arrived, || self.read_catalog())
            .await?;
        Ok(fresh.target(name, shard_key)?)
    }

    /// The catalog as of now: a linearizable read in the shard owning the catalog slot
    /// (this one, or another through its leader). Also refreshes the cache.
    pub async fn read_catalog(&self) -> Result<Catalog, KvError> {
        let req = catalog_request(KvOp::Get);
        let reply = self.on_catalog_shard(&req).await?;
        let catalog = match reply {
            KvReply::Value(Some(json)) => serde_json::from_str(&json).map_err(|e| {
                KvError::Internal(format!("the stored catalog does not decode: {e}"))
            })?,
            KvReply::Value(None) => Catalog::default(),
            other => return Err(KvError::Internal(format!("catalog read got {other:?}"))),
        };
        Ok((*self.catalog.offer(catalog)).clone())
    }

    /// Applies a catalog change in the shard owning the catalog slot.
    pub async fn change_catalog(&self, op: CatalogOp) -> Result<CatalogReply, KvError> {
        let req = catalog_request(KvOp::Catalog(op));
        match self.on_catalog_shard(&req).await? {
            KvReply::Catalog(r) => {
                // The next resolve sees the change without waiting for gossip.
                if r.version > self.catalog.current().version {
                    let _ = self.read_catalog().await;
                }
                Ok(r)
            }
            other => Err(KvError::Internal(format!("catalog change got {other:?}"))),
        }
    }

    /// Serves `req` (for the catalog key) here if this shard owns the catalog slot, else at
    /// the owner the gossip view names; follows the slot while it moves, up to the request
    /// timeout.
    async fn on_catalog_shard(&self, req: &KvRequest) -> Result<KvReply, KvError> {
        let slot = catalog_slot();
        let deadline = Instant::now() + self.config.request_timeout();
        loop {
            let res = if self.store.descriptor().owns(slot).is_some() {
                self.kv_in(req.clone(), Keyspace::SYSTEM, Home::Slot).await
            } else if let Some((owner, _)) = self.gossip.view().owner_of(slot) {
                let left = deadline.saturating_duration_since(Instant::now());
                call_shard(self, owner, rpc_kind::KV, req, left).await
            } else {
                Err(KvError::Unavailable {
                    shard: self.shard(),
                    reason: "no shard owns the catalog slot in this node's view yet".into(),
                })
            };
            match res {
                Err(KvError::WrongShard { .. } | KvError::Unavailable { .. })
                    if Instant::now() + OWNER_POLL < deadline =>
                {
                    tokio::time::sleep(OWNER_POLL).await;
                }
                other => return other,
            }
        }
    }

    /// Serves a request for a resolved collection: in the slots, or — for a shard key placed
    /// on chosen shards — here if the key's bucket is this shard's, else `WrongShard` naming
    /// the shard that holds it.
    pub(crate) async fn kv_at(&self, req: KvRequest, target: &Target) -> Result<KvReply, KvError> {
        match &target.placement {
            Placement::Slots => self.kv_in(req, target.keyspace, Home::Slot).await,
            Placement::Range => self.kv_range(req, target.keyspace).await,
            Placement::Shards(shards) => {
                let bucket = bucket_of(req.key.as_bytes());
                match bucket_shard(shards, bucket) {
                    Some(s) if s == self.shard() => {
                        self.kv_in(req, target.keyspace, Home::Bucket(bucket)).await
                    }
                    owner => Err(KvError::WrongShard {
                        slot: key_slot(req.key.as_bytes()),
                        shard: self.shard(),
                        owner,
                        epoch: None,
                    }),
                }
            }
        }
    }

    /// `DROP_KEYSPACE` (shard leader): drop a deleted collection's data in this shard.
    pub async fn drop_keyspace(&self, keyspace: Keyspace) -> Result<(), KvError> {
        if !self.is_leader() {
            return Err(KvError::NotLeader {
                shard: self.shard(),
                leader: self.leader(),
            });
        }
        if self
            .store
            .descriptor()
            .dropped_keyspaces
            .contains(&keyspace)
        {
            return Ok(());
        }
        self.propose(Command::Registry(RegistryCommand::DropKeyspace {
            keyspace,
        }))
        .await
        .map(|_| ())
    }

    /// The catalog version this replica has applied, if its shard holds the catalog.
    pub fn applied_catalog_version(&self) -> Option<u64> {
        let slot = catalog_slot();
        self.store.descriptor().owns(slot)?;
        match self.store.get_in(slot, Keyspace::SYSTEM, CATALOG_KEY) {
            Ok(Some(json)) => serde_json::from_str::<Catalog>(&json)
                .ok()
                .map(|c| c.version),
            Ok(None) => Some(0),
            Err(_) => None,
        }
    }
}

/// A request for the catalog key in the system keyspace.
fn catalog_request(op: KvOp) -> KvRequest {
    KvRequest {
        key: CATALOG_KEY.into(),
        op,
        client: None,
        forwarded: false,
        collection: Some(SYSTEM_COLLECTION.into()),
        shard_key: None,
    }
}

/// On the leader of the shard that holds the catalog: for each deleted collection, make every
/// shard drop its keyspace, then forget it. A shard that cannot be reached is retried on the
/// next round; `GET /collections` shows what is still being deleted.
pub fn spawn_janitor(
    node: Arc<Node>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(JANITOR_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if !node.is_leader() || node.store.descriptor().owns(catalog_slot()).is_none() {
                continue;
            }
            let Ok(catalog) = node.read_catalog().await else {
                continue;
            };
            for d in &catalog.dropping {
                if drop_everywhere(&node, d.id).await {
                    let op = CatalogOp {
                        change: CatalogChange::Forget { id: d.id },
                        expected_version: None,
                    };
                    match node.change_catalog(op).await {
                        Ok(_) => {
                            tracing::info!(collection = %d.name, keyspace = %d.id, "deleted collection's data dropped on every shard")
                        }
                        Err(e) => {
                            tracing::debug!(keyspace = %d.id, error = %e, "forgetting a dropped keyspace")
                        }
                    }
                }
            }
        }
    })
}

/// Asks every shard of the view to drop `ks`; whether all of them did.
async fn drop_everywhere(node: &Node, ks: Keyspace) -> bool {
    let shards: Vec<_> = node.gossip.view().shards.keys().copied().collect();
    let mut all = true;
    for shard in shards {
        let res = if shard == node.shard() {
            node.drop_keyspace(ks).await
        } else {
            call_shard::<_, ()>(
                node,
                shard,
                rpc_kind::DROP_KEYSPACE,
                &ks,
                Duration::from_secs(5),
            )
            .await
        };
        if let Err(e) = res {
            tracing::debug!(%shard, keyspace = %ks, error = %e, "dropping a deleted collection's keyspace");
            all = false;
        }
    }
    all
}
