//! Applying a catalog change: the one place its rules are written (versions, names, what
//! each change may do), pure so that every replica computes the same catalog.

use std::collections::BTreeMap;

use super::{
    one_way, refused, unknown_collection, validate_name, validate_shard_key, Catalog,
    CatalogChange, CatalogError, CatalogOp, CatalogOutcome, Collection, Dropping, Keyspace,
    Placement, ShardKey, Sharding, DEFAULT_COLLECTION, MAX_COLLECTIONS,
};

impl Catalog {
    fn custom_mut(&mut self, name: &str) -> Result<&mut Collection, CatalogError> {
        let implicit_default = Catalog::default_collection();
        let c = match self.collections.get_mut(name) {
            Some(c) => c,
            None if name == DEFAULT_COLLECTION => {
                return Err(refused(
                    409,
                    "not_custom",
                    format!(
                        "collection {name:?} is {}: shard keys are for custom collections (promote it first)",
                        implicit_default.sharding.as_str()
                    ),
                ))
            }
            None => return Err(unknown_collection(name)),
        };
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
            CatalogChange::MoveShardKey {
                collection,
                key,
                from,
                to,
            } => {
                let c = self.custom_mut(collection)?;
                let Some(k) = c.shard_keys.get_mut(key) else {
                    return Err(refused(
                        404,
                        "unknown_shard_key",
                        format!("collection {collection:?} has no shard key {key:?}"),
                    ));
                };
                let Placement::Shards(shards) = &mut k.placement else {
                    return Err(refused(
                        409,
                        "not_placed",
                        format!("shard key {key:?} lives in the slots; the slots move it"),
                    ));
                };
                match (shards.iter().position(|s| s == from), shards.contains(to)) {
                    (None, true) => return Ok(CatalogOutcome::Existed),
                    (Some(i), false) => shards[i] = *to,
                    _ => {
                        return Err(refused(
                            409,
                            "bad_move",
                            format!("shard key {key:?} is on {shards:?}: it cannot move from {from} to {to}"),
                        ))
                    }
                }
                c.version += 1;
                c.updated_ms = now_ms;
                CatalogOutcome::Moved
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
                // `default` is implicit until promoted; then it is stored like any other.
                if collection == DEFAULT_COLLECTION && !self.collections.contains_key(collection) {
                    self.collections
                        .insert(collection.clone(), Catalog::default_collection());
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
