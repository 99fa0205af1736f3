//! The catalog's rules: names, versions, shard keys, the one-way promote.

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
        vec![(
            "tenants".to_string(),
            "acme".to_string(),
            vec![ShardId(2), ShardId(3)]
        )]
    );
    assert!(c.shard_keys_on(ShardId(1)).is_empty());
    // A move puts the target in the source's place (the same buckets), once.
    let mv = |from, to| CatalogChange::MoveShardKey {
        collection: "tenants".into(),
        key: "acme".into(),
        from: ShardId(from),
        to: ShardId(to),
    };
    assert_eq!(c.apply(&op(mv(2, 4), None), 4), Ok(CatalogOutcome::Moved));
    let t = c.target("tenants", Some("acme")).unwrap();
    assert_eq!(t.placement, Placement::Shards(vec![ShardId(4), ShardId(3)]));
    let v = c.version;
    assert_eq!(c.apply(&op(mv(2, 4), None), 5), Ok(CatalogOutcome::Existed));
    assert_eq!(c.version, v, "a repeated move changes nothing");
    assert_eq!(
        c.apply(&op(mv(3, 4), None), 5).unwrap_err().code(),
        "bad_move"
    );
    assert_eq!(
        c.shard_key_of(t.keyspace).map(|(_, k, _)| k).as_deref(),
        Some("acme")
    );
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
fn range_collections_target_their_chunks() {
    let mut c = Catalog::default();
    c.apply(
        &op(
            CatalogChange::Create {
                name: "events".into(),
                sharding: Sharding::Range,
            },
            None,
        ),
        1,
    )
    .unwrap();
    assert_eq!(c.version, 1);
    let t = c.target("events", None).unwrap();
    assert_eq!(t.placement, Placement::Range);
    let e = c.target("events", Some("k")).unwrap_err();
    assert_eq!(e.code(), "unexpected_shard_key");
}

#[test]
fn default_is_promoted_like_any_hash_collection() {
    let mut c = Catalog::default();
    let key = |k: &str| CatalogChange::CreateShardKey {
        collection: DEFAULT_COLLECTION.into(),
        key: k.into(),
        shards: vec![ShardId(1)],
    };
    let e = c.apply(&op(key("acme"), None), 1).unwrap_err();
    assert_eq!(e.code(), "not_custom");
    let promote = CatalogChange::Promote {
        collection: DEFAULT_COLLECTION.into(),
        default_shard_key: "default".into(),
    };
    assert!(matches!(
        c.apply(&op(promote.clone(), None), 2),
        Ok(CatalogOutcome::Promoted)
    ));
    // Requests without a shard key keep the seed's keyspace and slots.
    let t = c.target(DEFAULT_COLLECTION, None).unwrap();
    assert_eq!(
        (t.keyspace, t.placement),
        (Keyspace::DEFAULT, Placement::Slots)
    );
    assert_eq!(c.list()[0].sharding, Sharding::Custom);
    assert_eq!(c.list().len(), 1, "default is listed once");
    assert_eq!(c.lookup(DEFAULT_COLLECTION), Some(Keyspace::DEFAULT));
    assert_eq!(
        c.apply(&op(promote, None), 3).unwrap_err().code(),
        "already_custom"
    );
    let back = CatalogChange::Create {
        name: DEFAULT_COLLECTION.into(),
        sharding: Sharding::Hash,
    };
    assert_eq!(c.apply(&op(back, None), 4).unwrap_err().code(), "one_way");
    let del = CatalogChange::Delete {
        name: DEFAULT_COLLECTION.into(),
    };
    assert_eq!(
        c.apply(&op(del, None), 5).unwrap_err().code(),
        "default_collection"
    );
    // New shard keys can now be created on it.
    assert!(c.apply(&op(key("acme"), None), 6).is_ok());
    let t = c.target(DEFAULT_COLLECTION, Some("acme")).unwrap();
    assert_ne!(t.keyspace, Keyspace::DEFAULT);
    assert_eq!(t.placement, Placement::Shards(vec![ShardId(1)]));
}
