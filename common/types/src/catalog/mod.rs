//! Collections and the catalog that names them (docs/ARCHITECTURE.md "Collections").
//!
//! A collection is a named keyspace. Its data lives in the same 16384 slots as the seed's flat
//! keys (`default` is keyspace 0, so those keys and their bytes on disk are unchanged); a
//! stored key carries the collection's keyspace id after its slot. The catalog — every
//! collection's name, id, sharding method and version — is itself one value, stored in the
//! system keyspace under the hash tag `{catalog}`: one slot, so one shard's Raft group changes
//! it atomically, and it moves with that slot when its shard is drained. There is no config
//! server. Changes are compare-and-set on the catalog's version (optimistic concurrency: two
//! admins racing, one wins, one gets 409).
//!
//! This module is pure: the state machine applies [`Catalog::apply`] with the proposing
//! leader's clock, so every replica computes the same bytes.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{key_slot, ShardId, Slot};

/// A keyspace id: which collection a stored key belongs to. Ids are never reused, so a
/// request resolved against an old catalog can never touch another collection's bytes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Keyspace(pub u32);

impl Keyspace {
    /// The seed's flat keyspace, the collection `default`.
    pub const DEFAULT: Keyspace = Keyspace(0);
    /// The system keyspace holding the catalog.
    pub const SYSTEM: Keyspace = Keyspace(1);
    /// The first id given to a user collection (2..16 stay free for system use).
    pub const FIRST_USER: Keyspace = Keyspace(16);
}

impl Keyspace {
    pub fn is_default(&self) -> bool {
        *self == Keyspace::DEFAULT
    }
}

impl fmt::Display for Keyspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The collection every call without `collection=` uses.
pub const DEFAULT_COLLECTION: &str = "default";
/// The internal name requests for the catalog itself carry (user names cannot start with `_`).
pub const SYSTEM_COLLECTION: &str = "_catalog";
/// The key of the catalog value in the system keyspace; its hash tag picks the slot.
pub const CATALOG_KEY: &str = "{catalog}";
/// Most collections a catalog holds (it is one value, rewritten on every change).
pub const MAX_COLLECTIONS: usize = 1000;
/// Longest collection name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// The slot that holds the catalog.
pub fn catalog_slot() -> Slot {
    key_slot(CATALOG_KEY.as_bytes())
}

/// How a collection spreads over shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharding {
    /// By the key's hash slot (the 16384 slots shared with `default`).
    Hash,
    /// By key range, in ordered chunks.
    Range,
    /// By an explicit shard key placed on chosen shards.
    Custom,
}

impl Sharding {
    pub fn as_str(&self) -> &'static str {
        match self {
            Sharding::Hash => "hash",
            Sharding::Range => "range",
            Sharding::Custom => "custom",
        }
    }

    /// Parses `hash`, `range` or `custom`.
    pub fn parse(s: &str) -> Result<Sharding, CatalogError> {
        match s {
            "hash" => Ok(Sharding::Hash),
            "range" => Ok(Sharding::Range),
            "custom" => Ok(Sharding::Custom),
            other => Err(refused(
                400,
                "bad_sharding",
                format!("sharding must be hash, range or custom, got {other:?}"),
            )),
        }
    }
}

/// One collection's catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collection {
    pub name: String,
    pub id: Keyspace,
    pub sharding: Sharding,
    /// Starts at 1 and grows with every change of this collection.
    pub version: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Custom collections: their shard keys by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shard_keys: BTreeMap<String, ShardKey>,
    /// The shard key requests without `shard_key` use (a promoted collection's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_shard_key: Option<String>,
}

/// Where a shard key's data lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// In the 16384 hash slots under the collection's own keyspace, exactly where the hash
    /// collection kept it: the default shard key of a promoted collection. `/addshard` and
    /// `/removeshard` move it with the slots.
    Slots,
    /// On these shards only: a key's bucket ([`bucket_of`]) picks one of them
    /// ([`bucket_shard`]). Fixed once created.
    Shards(Vec<ShardId>),
    /// A range collection: in chunks of ordered keys, wherever their shards' descriptors say
    /// (`crate::chunk`).
    Range,
}

/// A shard key of a custom collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardKey {
    pub name: String,
    /// Its own keyspace (a promoted collection's default key keeps the collection's).
    pub id: Keyspace,
    pub placement: Placement,
    pub created_ms: u64,
}

/// Buckets a shard key's keys are hashed into (by the key's slot, so hash tags keep keys
/// together); each shard of the key holds a contiguous run of them.
pub const BUCKETS: u16 = 1024;

/// The bucket of a key.
pub fn bucket_of(key: &[u8]) -> u16 {
    key_slot(key) % BUCKETS
}

/// The shard of `shards` that holds `bucket`.
pub fn bucket_shard(shards: &[ShardId], bucket: u16) -> Option<ShardId> {
    let i = usize::from(bucket) * shards.len() / usize::from(BUCKETS);
    shards.get(i).copied()
}

/// What a KV request names besides its key: the collection (`None`: `default`) and, for a
/// custom collection, the shard key (`None`: its default shard key, if it has one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Space {
    pub collection: Option<String>,
    pub shard_key: Option<String>,
}

/// Where a request for a collection (and shard key) goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub keyspace: Keyspace,
    pub placement: Placement,
}

/// A deleted collection whose data some shards may still hold: each shard drops the keyspace
/// in its own Raft log, then the entry is forgotten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropping {
    pub id: Keyspace,
    pub name: String,
    pub since_ms: u64,
}

/// The catalog: every user collection (`default` is implicit and always there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Grows by one with every change (seed 000's metadata version); 0 = never changed.
    pub version: u64,
    /// The id the next collection gets.
    pub next_keyspace: Keyspace,
    pub collections: BTreeMap<String, Collection>,
    #[serde(default)]
    pub dropping: Vec<Dropping>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            version: 0,
            next_keyspace: Keyspace::FIRST_USER,
            collections: BTreeMap::new(),
            dropping: Vec::new(),
        }
    }
}

/// A change of the catalog, applied as one Raft commit in the shard owning the catalog slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogChange {
    /// Create `name` (idempotent: an existing collection with the same sharding is kept).
    Create { name: String, sharding: Sharding },
    /// Delete `name`: it disappears at once; its data is dropped shard by shard.
    Delete { name: String },
    /// Every shard dropped the keyspace's data: forget it.
    Forget { id: Keyspace },
    /// Create shard key `key` of custom collection `collection` on `shards` (idempotent
    /// with the same shards).
    CreateShardKey {
        collection: String,
        key: String,
        shards: Vec<ShardId>,
    },
    /// Delete a shard key and (shard by shard, like a collection) its data.
    DeleteShardKey { collection: String, key: String },
    /// A shard key's data on shard `from` moved to shard `to` (committed by the mover once
    /// `from` let go): `to` takes `from`'s place in its shard list, so exactly the buckets
    /// that were `from`'s are now `to`'s. Idempotent.
    MoveShardKey {
        collection: String,
        key: String,
        from: ShardId,
        to: ShardId,
    },
    /// Seed 003: hash → custom, one way. The collection's data becomes the default shard
    /// key's, where it is (no byte moves); its keyspace id stays.
    Promote {
        collection: String,
        default_shard_key: String,
    },
}

/// A change with the optimistic-concurrency check that guards it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogOp {
    pub change: CatalogChange,
    /// Applied only if the catalog is still at this version (`None`: whatever it is).
    pub expected_version: Option<u64>,
}

/// What a change did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogOutcome {
    Created,
    /// `Create` of a collection that exists with that sharding: nothing changed.
    Existed,
    /// The collection as it was until deleted.
    Deleted(Collection),
    Forgotten,
    Promoted,
    Moved,
}

/// The reply to a catalog change: what it did, the catalog's version after it and the
/// collection it concerned as it is now (`None` once deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogReply {
    pub outcome: CatalogOutcome,
    pub version: u64,
    pub collection: Option<Collection>,
}

/// Why a catalog call was refused, with the HTTP status that fits (`KvError` has a `From`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct CatalogError {
    pub status: u16,
    /// A stable machine-readable name (`bad_name`, `version_conflict`, ...).
    pub code: String,
    pub message: String,
}

impl CatalogError {
    pub fn code(&self) -> &str {
        &self.code
    }

    pub fn http_status(&self) -> u16 {
        self.status
    }
}

fn refused(status: u16, code: &str, message: String) -> CatalogError {
    CatalogError {
        status,
        code: code.into(),
        message,
    }
}

/// A collection name: 1 to 128 bytes of `A-Z a-z 0-9 _ - .` (a dot for `db.collection`
/// namespaces), not starting with `_` (system) or `.`, no `..`.
pub fn validate_name(name: &str) -> Result<(), CatalogError> {
    let bad = |why: &str| {
        Err(refused(
            400,
            "bad_name",
            format!("collection name {name:?} {why}"),
        ))
    };
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return bad("must be 1 to 128 bytes long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return bad("may hold only letters, digits, '_', '-' and '.'");
    }
    if name.starts_with('_') || name.starts_with('.') || name.contains("..") {
        return bad("must not start with '_' or '.' or contain '..'");
    }
    Ok(())
}

/// A shard key name: the rules of collection names, else 400 `bad_shard_key`.
pub fn validate_shard_key(key: &str) -> Result<(), CatalogError> {
    validate_name(key).map_err(|e| CatalogError {
        code: "bad_shard_key".into(),
        message: e.message.replace("collection name", "shard key"),
        ..e
    })
}

/// 409 for any attempt to turn a custom collection back into hash.
pub fn one_way(name: &str) -> CatalogError {
    refused(
        409,
        "one_way",
        format!(
            "collection {name:?} is custom: promotion is one way (its shard keys' data is not in the slot map); copy it into a new hash collection instead"
        ),
    )
}

impl Catalog {
    /// Every shard key placed on `shard`: (collection, shard key, the shards it is on).
    pub fn shard_keys_on(&self, shard: ShardId) -> Vec<(String, String, Vec<ShardId>)> {
        let mut out = Vec::new();
        for c in self.collections.values() {
            for k in c.shard_keys.values() {
                if let Placement::Shards(s) = &k.placement {
                    if s.contains(&shard) {
                        out.push((c.name.clone(), k.name.clone(), s.clone()));
                    }
                }
            }
        }
        out
    }

    /// The shard key whose keyspace is `ks`: (collection, shard key, placement).
    pub fn shard_key_of(&self, ks: Keyspace) -> Option<(String, String, Placement)> {
        self.collections.values().find_map(|c| {
            c.shard_keys
                .values()
                .find(|k| k.id == ks)
                .map(|k| (c.name.clone(), k.name.clone(), k.placement.clone()))
        })
    }

    /// The keyspace a collection name stands for, if it exists (`default` always does).
    pub fn lookup(&self, name: &str) -> Option<Keyspace> {
        if name == DEFAULT_COLLECTION {
            return Some(Keyspace::DEFAULT);
        }
        self.collections.get(name).map(|c| c.id)
    }

    /// Whether a keyspace is being dropped.
    pub fn is_dropping(&self, id: Keyspace) -> bool {
        self.dropping.iter().any(|d| d.id == id)
    }

    /// `default` as it appears in listings: it was never created, it always exists (and
    /// can be promoted like any hash collection, which stores it).
    pub fn default_collection() -> Collection {
        Collection {
            name: DEFAULT_COLLECTION.into(),
            id: Keyspace::DEFAULT,
            sharding: Sharding::Hash,
            version: 1,
            created_ms: 0,
            updated_ms: 0,
            shard_keys: BTreeMap::new(),
            default_shard_key: None,
        }
    }

    /// Where a request for `collection` with `shard_key` goes; 404 for an unknown
    /// collection or shard key, 400 for a shard key where none fits or none where one must be.
    pub fn target(
        &self,
        collection: &str,
        shard_key: Option<&str>,
    ) -> Result<Target, CatalogError> {
        let c = self
            .get(collection)
            .ok_or_else(|| unknown_collection(collection))?;
        if c.sharding != Sharding::Custom {
            if let Some(k) = shard_key {
                return Err(refused(
                    400,
                    "unexpected_shard_key",
                    format!(
                        "collection {collection:?} is sharded by {}: it takes no shard_key (got {k:?})",
                        c.sharding.as_str()
                    ),
                ));
            }
            return Ok(Target {
                keyspace: c.id,
                placement: match c.sharding {
                    Sharding::Range => Placement::Range,
                    _ => Placement::Slots,
                },
            });
        }
        let name = match shard_key.or(c.default_shard_key.as_deref()) {
            Some(n) => n,
            None => {
                return Err(refused(
                    400,
                    "missing_shard_key",
                    format!("collection {collection:?} is custom: every request names shard_key"),
                ))
            }
        };
        let k = c.shard_keys.get(name).ok_or_else(|| {
            refused(
                404,
                "unknown_shard_key",
                format!("collection {collection:?} has no shard key {name:?}"),
            )
        })?;
        Ok(Target {
            keyspace: k.id,
            placement: k.placement.clone(),
        })
    }

    /// Every collection, `default` first.
    pub fn list(&self) -> Vec<Collection> {
        let default = self
            .get(DEFAULT_COLLECTION)
            .unwrap_or_else(Self::default_collection);
        std::iter::once(default)
            .chain(
                self.collections
                    .values()
                    .filter(|c| c.name != DEFAULT_COLLECTION)
                    .cloned(),
            )
            .collect()
    }

    /// One collection by name (`default` included: implicit, or as stored once promoted).
    pub fn get(&self, name: &str) -> Option<Collection> {
        match self.collections.get(name) {
            Some(c) => Some(c.clone()),
            None if name == DEFAULT_COLLECTION => Some(Self::default_collection()),
            None => None,
        }
    }
}

/// 404 for a collection name that is not in the catalog.
pub fn unknown_collection(name: &str) -> CatalogError {
    refused(
        404,
        "unknown_collection",
        format!("no collection named {name:?}"),
    )
}

mod apply;
#[cfg(test)]
mod tests;
