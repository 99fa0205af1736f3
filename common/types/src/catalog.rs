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
    fn custom_mut(&mut self, name: &str) -> Result<&mut Collection, CatalogError> {
        let c = self
            .collections
            .get_mut(name)
            .ok_or_else(|| unknown_collection(name))?;
        if c.sharding != Sharding::Custom {
            return Err(refused(
                409,
                "not_custom",
                format!(
                    "collection {name:?} is {}: shard keys are for custom collections (promote it first)",
                    c.sharding.as_str()
                ),
            ));
        }
        Ok(c)
    }

    /// Every shard key placed on `shard`: (collection, shard key).
    pub fn shard_keys_on(&self, shard: ShardId) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for c in self.collections.values() {
            for k in c.shard_keys.values() {
                if matches!(&k.placement, Placement::Shards(s) if s.contains(&shard)) {
                    out.push((c.name.clone(), k.name.clone()));
                }
            }
        }
        out
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
                placement: Placement::Slots,
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
        std::iter::once(Self::default_collection())
            .chain(self.collections.values().cloned())
            .collect()
    }

    /// One collection by name (`default` included).
    pub fn get(&self, name: &str) -> Option<Collection> {
        if name == DEFAULT_COLLECTION {
            return Some(Self::default_collection());
        }
        self.collections.get(name).cloned()
    }

    /// Applies `op` at time `now_ms` (the proposing leader's clock). On an error nothing
    /// changed.
    pub fn apply(&mut self, op: &CatalogOp, now_ms: u64) -> Result<CatalogOutcome, CatalogError> {
        if let Some(v) = op.expected_version.filter(|v| *v != self.version) {
            return Err(refused(
                409,
                "version_conflict",
                format!(
                    "the catalog is at version {}, not {v}: another change came first; read it again and retry",
                    self.version
                ),
            ));
        }
        let outcome = match &op.change {
            CatalogChange::Create { name, sharding } => {
                validate_name(name)?;
                if let Some(c) = self.get(name) {
                    if c.sharding == *sharding {
                        return Ok(CatalogOutcome::Existed);
                    }
                    if c.sharding == Sharding::Custom && *sharding == Sharding::Hash {
                        return Err(one_way(name));
                    }
                    return Err(refused(
                        409,
                        "collection_exists",
                        format!(
                            "collection {name:?} exists with sharding {}",
                            c.sharding.as_str()
                        ),
                    ));
                }
                if *sharding == Sharding::Range {
                    return Err(refused(
                        501,
                        "not_implemented",
                        format!(
                            "{} collections are not available yet; hash and custom ones are",
                            sharding.as_str()
                        ),
                    ));
                }
                if self.collections.len() >= MAX_COLLECTIONS {
                    return Err(refused(
                        409,
                        "too_many_collections",
                        format!("the catalog holds its maximum of {MAX_COLLECTIONS} collections"),
                    ));
                }
                let id = self.next_keyspace;
                self.next_keyspace = Keyspace(id.0 + 1);
                self.collections.insert(
                    name.clone(),
                    Collection {
                        name: name.clone(),
                        id,
                        sharding: *sharding,
                        version: 1,
                        created_ms: now_ms,
                        updated_ms: now_ms,
                        shard_keys: BTreeMap::new(),
                        default_shard_key: None,
                    },
                );
                CatalogOutcome::Created
            }
            CatalogChange::CreateShardKey {
                collection,
                key,
                shards,
            } => {
                validate_shard_key(key)?;
                let c = self.custom_mut(collection)?;
                if let Some(k) = c.shard_keys.get(key) {
                    if k.placement == Placement::Shards(shards.clone()) {
                        return Ok(CatalogOutcome::Existed);
                    }
                    return Err(refused(
                        409,
                        "shard_key_exists",
                        format!("shard key {key:?} exists, placed {:?}", k.placement),
                    ));
                }
                let mut distinct = shards.clone();
                distinct.sort();
                distinct.dedup();
                if shards.is_empty() || distinct.len() != shards.len() {
                    return Err(refused(
                        400,
                        "bad_shards",
                        format!("a shard key needs distinct shards, got {shards:?}"),
                    ));
                }
                let id = self.next_keyspace;
                let c = self.custom_mut(collection)?;
                c.shard_keys.insert(
                    key.clone(),
                    ShardKey {
                        name: key.clone(),
                        id,
                        placement: Placement::Shards(shards.clone()),
                        created_ms: now_ms,
                    },
                );
                c.version += 1;
                c.updated_ms = now_ms;
                self.next_keyspace = Keyspace(id.0 + 1);
                CatalogOutcome::Created
            }
            CatalogChange::DeleteShardKey { collection, key } => {
                let c = self.custom_mut(collection)?;
                let Some(k) = c.shard_keys.get(key).cloned() else {
                    return Err(refused(
                        404,
                        "unknown_shard_key",
                        format!("collection {collection:?} has no shard key {key:?}"),
                    ));
                };
                if k.placement == Placement::Slots {
                    return Err(refused(
                        409,
                        "default_shard_key",
                        format!(
                            "{key:?} holds the data the collection had before it was promoted; delete the collection instead"
                        ),
                    ));
                }
                c.shard_keys.remove(key);
                c.version += 1;
                c.updated_ms = now_ms;
                self.dropping.push(Dropping {
                    id: k.id,
                    name: format!("{collection}/{key}"),
                    since_ms: now_ms,
                });
                CatalogOutcome::Forgotten
            }
            CatalogChange::Promote {
                collection,
                default_shard_key,
            } => {
                validate_shard_key(default_shard_key)?;
                if collection == DEFAULT_COLLECTION {
                    return Err(refused(
                        501,
                        "not_implemented",
                        "promoting the collection \"default\" is not available yet".into(),
                    ));
                }
                let c = self
                    .collections
                    .get_mut(collection)
                    .ok_or_else(|| unknown_collection(collection))?;
                match c.sharding {
                    Sharding::Hash => {}
                    Sharding::Custom => {
                        return Err(refused(
                            409,
                            "already_custom",
                            format!("collection {collection:?} is custom already"),
                        ))
                    }
                    Sharding::Range => {
                        return Err(refused(
                            409,
                            "not_hash",
                            format!(
                                "only hash collections can be promoted; {collection:?} is range"
                            ),
                        ))
                    }
                }
                c.sharding = Sharding::Custom;
                c.shard_keys.insert(
                    default_shard_key.clone(),
                    ShardKey {
                        name: default_shard_key.clone(),
                        id: c.id,
                        placement: Placement::Slots,
                        created_ms: now_ms,
                    },
                );
                c.default_shard_key = Some(default_shard_key.clone());
                c.version += 1;
                c.updated_ms = now_ms;
                CatalogOutcome::Promoted
            }
            CatalogChange::Delete { name } => {
                if name == DEFAULT_COLLECTION {
                    return Err(refused(
                        409,
                        "default_collection",
                        "the collection \"default\" cannot be deleted".into(),
                    ));
                }
                let Some(c) = self.collections.remove(name) else {
                    return Err(unknown_collection(name));
                };
                self.dropping.push(Dropping {
                    id: c.id,
                    name: c.name.clone(),
                    since_ms: now_ms,
                });
                // A custom collection's shard keys go with it.
                for k in c.shard_keys.values().filter(|k| k.id != c.id) {
                    self.dropping.push(Dropping {
                        id: k.id,
                        name: format!("{}/{}", c.name, k.name),
                        since_ms: now_ms,
                    });
                }
                self.version += 1;
                return Ok(CatalogOutcome::Deleted(c));
            }
            CatalogChange::Forget { id } => {
                if !self.is_dropping(*id) {
                    return Ok(CatalogOutcome::Forgotten);
                }
                self.dropping.retain(|d| d.id != *id);
                CatalogOutcome::Forgotten
            }
        };
        self.version += 1;
        Ok(outcome)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn op(change: CatalogChange, expected_version: Option<u64>) -> CatalogOp {
        CatalogOp {
            change,
            expected_version,
        }
    }

    fn create(name: &str) -> CatalogChange {
        CatalogChange::Create {
            name: name.into(),
            sharding: Sharding::Hash,
        }
    }

    #[test]
    fn names_are_validated() {
        for ok in ["users", "db.users", "a-b_c", "A1", &"x".repeat(128)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "_sys",
            ".x",
            "a..b",
            "a b",
            "ü",
            "a/b",
            &"x".repeat(129),
        ] {
            let e = validate_name(bad).unwrap_err();
            assert_eq!(e.code(), "bad_name", "{bad}");
            assert_eq!(e.http_status(), 400);
        }
    }

    #[test]
    fn create_delete_forget_with_versions() {
        let mut c = Catalog::default();
        assert_eq!(c.lookup("default"), Some(Keyspace::DEFAULT));
        assert_eq!(
            c.apply(&op(create("users"), Some(0)), 5),
            Ok(CatalogOutcome::Created)
        );
        assert_eq!(c.version, 1);
        assert_eq!(c.lookup("users"), Some(Keyspace::FIRST_USER));
        // Idempotent create changes nothing, not even the version.
        assert_eq!(
            c.apply(&op(create("users"), None), 6),
            Ok(CatalogOutcome::Existed)
        );
        assert_eq!(c.version, 1);
        // A racing change with the old version loses.
        let e = c.apply(&op(create("other"), Some(0)), 7).unwrap_err();
        assert_eq!((e.code(), e.http_status()), ("version_conflict", 409));
        assert!(c.lookup("other").is_none());
        let e = c
            .apply(
                &op(
                    CatalogChange::Create {
                        name: "users".into(),
                        sharding: Sharding::Range,
                    },
                    None,
                ),
                8,
            )
            .unwrap_err();
        assert_eq!(e.code(), "collection_exists");
        let del = |n: &str| CatalogChange::Delete { name: n.into() };
        assert!(matches!(
            c.apply(&op(del("users"), None), 9),
            Ok(CatalogOutcome::Deleted(u)) if u.id == Keyspace::FIRST_USER
        ));
        assert!(c.lookup("users").is_none());
        assert!(c.is_dropping(Keyspace::FIRST_USER));
        assert_eq!(
            c.apply(&op(del("users"), None), 9).unwrap_err().code(),
            "unknown_collection"
        );
        assert_eq!(
            c.apply(&op(del("default"), None), 9).unwrap_err().code(),
            "default_collection"
        );
        // A new collection of the same name gets a new id: ids are never reused.
        c.apply(&op(create("users"), None), 10).unwrap();
        assert_eq!(c.lookup("users"), Some(Keyspace(17)));
        c.apply(
            &op(
                CatalogChange::Forget {
                    id: Keyspace::FIRST_USER,
                },
                None,
            ),
            11,
        )
        .unwrap();
        assert!(c.dropping.is_empty());
        assert_eq!(c.version, 4);
    }

    #[test]
    fn shard_keys_and_the_one_way_promote() {
        let mut c = Catalog::default();
        let custom = |n: &str| CatalogChange::Create {
            name: n.into(),
            sharding: Sharding::Custom,
        };
        c.apply(&op(custom("tenants"), None), 1).unwrap();
        let e = c.target("tenants", None).unwrap_err();
        assert_eq!((e.code(), e.http_status()), ("missing_shard_key", 400));
        let e = c.target("tenants", Some("acme")).unwrap_err();
        assert_eq!((e.code(), e.http_status()), ("unknown_shard_key", 404));
        let sk = |k: &str, shards: &[u64]| CatalogChange::CreateShardKey {
            collection: "tenants".into(),
            key: k.into(),
            shards: shards.iter().map(|s| ShardId(*s)).collect(),
        };
        assert_eq!(
            c.apply(&op(sk("acme", &[2, 3]), None), 2),
            Ok(CatalogOutcome::Created)
        );
        assert_eq!(
            c.apply(&op(sk("acme", &[2, 3]), None), 3),
            Ok(CatalogOutcome::Existed)
        );
        assert_eq!(
            c.apply(&op(sk("acme", &[1]), None), 3).unwrap_err().code(),
            "shard_key_exists"
        );
        assert_eq!(
            c.apply(&op(sk("dup", &[2, 2]), None), 3)
                .unwrap_err()
                .code(),
            "bad_shards"
        );
        assert_eq!(
            c.apply(&op(sk("_x", &[2]), None), 3).unwrap_err().code(),
            "bad_shard_key"
        );
        let t = c.target("tenants", Some("acme")).unwrap();
        assert_eq!(t.placement, Placement::Shards(vec![ShardId(2), ShardId(3)]));
        assert_ne!(t.keyspace, c.lookup("tenants").unwrap());
        assert_eq!(
            c.shard_keys_on(ShardId(3)),
            vec![("tenants".to_string(), "acme".to_string())]
        );
        assert!(c.shard_keys_on(ShardId(1)).is_empty());
        // Buckets split evenly and in order over the key's shards.
        let shards = [ShardId(2), ShardId(3)];
        assert_eq!(bucket_shard(&shards, 0), Some(ShardId(2)));
        assert_eq!(bucket_shard(&shards, BUCKETS / 2 - 1), Some(ShardId(2)));
        assert_eq!(bucket_shard(&shards, BUCKETS / 2), Some(ShardId(3)));
        assert_eq!(bucket_shard(&shards, BUCKETS - 1), Some(ShardId(3)));

        // Promote a hash collection: same keyspace, default key in the slots.
        c.apply(&op(create("users"), None), 4).unwrap();
        let before = c.target("users", None).unwrap();
        assert_eq!(
            c.target("users", Some("x")).unwrap_err().code(),
            "unexpected_shard_key"
        );
        let promote = |k: &str| CatalogChange::Promote {
            collection: "users".into(),
            default_shard_key: k.into(),
        };
        assert_eq!(
            c.apply(&op(promote("bad name"), None), 5)
                .unwrap_err()
                .code(),
            "bad_shard_key"
        );
        let v = c.version;
        assert_eq!(
            c.apply(&op(promote("default"), Some(v)), 5),
            Ok(CatalogOutcome::Promoted)
        );
        assert_eq!(c.version, v + 1, "one commit, one version");
        assert_eq!(c.target("users", None).unwrap(), before, "no byte moves");
        assert_eq!(c.target("users", Some("default")).unwrap(), before);
        let e = c.apply(&op(promote("default"), None), 6).unwrap_err();
        assert_eq!((e.code(), e.http_status()), ("already_custom", 409));
        let e = c.apply(&op(create("users"), None), 6).unwrap_err();
        assert_eq!((e.code(), e.http_status()), ("one_way", 409));
        let del_default = CatalogChange::DeleteShardKey {
            collection: "users".into(),
            key: "default".into(),
        };
        assert_eq!(
            c.apply(&op(del_default, None), 6).unwrap_err().code(),
            "default_shard_key"
        );
        // Shard keys can be added after the promote; deleting one drops its keyspace.
        c.apply(
            &op(
                CatalogChange::CreateShardKey {
                    collection: "users".into(),
                    key: "eu".into(),
                    shards: vec![ShardId(1)],
                },
                None,
            ),
            7,
        )
        .unwrap();
        let eu = c.target("users", Some("eu")).unwrap().keyspace;
        c.apply(
            &op(
                CatalogChange::DeleteShardKey {
                    collection: "users".into(),
                    key: "eu".into(),
                },
                None,
            ),
            8,
        )
        .unwrap();
        assert!(c.is_dropping(eu));
        // Deleting a custom collection drops its shard keys too.
        let acme = c.target("tenants", Some("acme")).unwrap().keyspace;
        c.apply(
            &op(
                CatalogChange::Delete {
                    name: "tenants".into(),
                },
                None,
            ),
            9,
        )
        .unwrap();
        assert!(c.is_dropping(acme));
    }

    #[test]
    fn only_hash_and_custom_collections_for_now() {
        let mut c = Catalog::default();
        let e = c
            .apply(
                &op(
                    CatalogChange::Create {
                        name: "events".into(),
                        sharding: Sharding::Range,
                    },
                    None,
                ),
                1,
            )
            .unwrap_err();
        assert_eq!((e.code(), e.http_status()), ("not_implemented", 501));
        assert_eq!(c.version, 0);
    }
}
