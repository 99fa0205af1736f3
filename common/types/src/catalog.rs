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

use crate::{key_slot, Slot};

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

impl Catalog {
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

    /// `default` as it appears in listings: it was never created, it always exists.
    pub fn default_collection() -> Collection {
        Collection {
            name: DEFAULT_COLLECTION.into(),
            id: Keyspace::DEFAULT,
            sharding: Sharding::Hash,
            version: 1,
            created_ms: 0,
            updated_ms: 0,
        }
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
                    return Err(refused(
                        409,
                        "collection_exists",
                        format!(
                            "collection {name:?} exists with sharding {}",
                            c.sharding.as_str()
                        ),
                    ));
                }
                if *sharding != Sharding::Hash {
                    return Err(refused(
                        501,
                        "not_implemented",
                        format!(
                            "{} collections are not available yet; hash collections are",
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
                    },
                );
                CatalogOutcome::Created
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
    fn only_hash_collections_for_now() {
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
