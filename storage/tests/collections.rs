//! Collections in the storage layer, on real RocksDBs: the keyspace layout beside the seed's
//! flat keys, the format marker and the migration of a format-1 data dir, catalog changes
//! applied as commands (compare-and-set on the version), dropping a deleted collection's
//! keyspace (data, statistics, refusals, moves), and dedup that tells collections apart.

use openraft::entry::RaftEntry;
use openraft::testing::log_id;
use openraft::EntryPayload;
use unikv_storage::apply::apply_entries_cached;
use unikv_storage::db::{kv_key, CF_KV, CF_SM};
use unikv_storage::keyspace_stats::keyspace_stats;
use unikv_storage::meta::{FORMAT, KEY_FORMAT};
use unikv_storage::moves::export_slot;
use unikv_storage::raft_types::Entry;
use unikv_storage::{Command, MoveCommand, RegistryCommand, TypeConfig};
use unikv_types::catalog::{
    catalog_slot, Catalog, CatalogChange, CatalogOp, CatalogOutcome, Sharding, CATALOG_KEY,
};
use unikv_types::{Epoch, Keyspace, KvOp, KvReply, NodeId, ShardId};

mod harness;
use harness::{put, Shard, ORDERS, USERS};

#[test]
fn the_same_key_in_two_collections_holds_two_values() {
    let mut s = Shard::new(1);
    assert_eq!(
        s.kv(Keyspace::DEFAULT, "k", put("flat"), None),
        Ok(KvReply::Written)
    );
    assert_eq!(s.kv(USERS, "k", put("users"), None), Ok(KvReply::Written));
    assert_eq!(
        s.kv(ORDERS, "k", KvOp::Append { value: "o".into() }, None),
        Ok(KvReply::Appended { previous: None })
    );
    assert_eq!(s.get(Keyspace::DEFAULT, "k").as_deref(), Some("flat"));
    assert_eq!(s.get(USERS, "k").as_deref(), Some("users"));
    assert_eq!(s.get(ORDERS, "k").as_deref(), Some("o"));
    // `default` keeps the seed's bytes: slot ++ key.
    let slot = unikv_types::key_slot(b"k");
    let raw =
        s.db.raw()
            .get_cf(s.db.cf(CF_KV), kv_key(slot, b"k"))
            .unwrap();
    assert_eq!(raw.as_deref(), Some(&b"flat"[..]));
    // Keys of one byte; values of 4, 5 and 1 bytes.
    assert_eq!(s.totals(), (3, 3 + 4 + 5 + 1));
    assert_eq!(
        s.kv(USERS, "k", KvOp::Delete, None),
        Ok(KvReply::Deleted { existed: true })
    );
    assert_eq!(s.get(USERS, "k"), None);
    assert_eq!(s.get(Keyspace::DEFAULT, "k").as_deref(), Some("flat"));

    // A slot's export carries every collection's pairs; the target gets them all back.
    let export = export_slot(&s.db, slot).unwrap();
    assert_eq!(export.kv, vec![("k".to_string(), "flat".to_string())]);
    assert_eq!(
        export.collections_kv,
        vec![(ORDERS, "k".to_string(), "o".to_string())]
    );
    // Another shard that gave the slot away earlier receives it back.
    let mut t = Shard::new(2);
    let r = t.apply(Command::Move(MoveCommand::Out {
        slot,
        to: ShardId(9),
        epoch: Epoch(2),
        now_ms: None,
    }));
    assert_eq!(r, Ok(KvReply::Written));
    let r = t.apply(Command::Move(MoveCommand::Done {
        slot,
        epoch: Epoch(2),
    }));
    assert_eq!(r, Ok(KvReply::Written));
    let r = t.apply(Command::Move(MoveCommand::In {
        slot,
        from: ShardId(1),
        epoch: Epoch(3),
        kv: export.kv.clone(),
        dedup: export.dedup.clone(),
        dedup_horizon_ms: 0,
        collections_kv: export.collections_kv.clone(),
        staged: None,
        deleted: Vec::new(),
    }));
    assert_eq!(r, Ok(KvReply::Written));
    assert_eq!(t.get(Keyspace::DEFAULT, "k").as_deref(), Some("flat"));
    assert_eq!(t.get(ORDERS, "k").as_deref(), Some("o"));
    assert_eq!(t.totals(), (2, 1 + 4 + 1 + 1));
}

#[test]
fn one_client_seq_used_in_two_collections_is_refused_not_answered_twice() {
    let mut s = Shard::new(1);
    assert_eq!(
        s.kv(USERS, "k", put("a"), Some(("c", 1))),
        Ok(KvReply::Written)
    );
    // The retry of that write is answered from the record...
    assert_eq!(
        s.kv(USERS, "k", put("a"), Some(("c", 1))),
        Ok(KvReply::Written)
    );
    // ...but the same (client, seq) for the same key in another collection is another
    // request: refused, not answered with the first one's reply.
    let e = s.kv(ORDERS, "k", put("a"), Some(("c", 1))).unwrap_err();
    assert_eq!(e.code(), "sequence_reused");
    assert_eq!(s.get(ORDERS, "k"), None);
}

#[test]
fn catalog_changes_compare_and_set_the_version() {
    let mut s = Shard::new(1);
    let create = |name: &str| CatalogChange::Create {
        name: name.into(),
        sharding: Sharding::Hash,
    };
    let Ok(KvReply::Catalog(r)) = s.catalog(create("users"), Some(0)) else {
        panic!("create failed");
    };
    assert_eq!((r.outcome, r.version), (CatalogOutcome::Created, 1));
    assert_eq!(r.collection.unwrap().id, Keyspace::FIRST_USER);
    // Two admins both read version 0: the second loses.
    let e = s.catalog(create("orders"), Some(0)).unwrap_err();
    assert_eq!((e.code(), e.http_status()), ("version_conflict", 409));
    let e = s
        .catalog(
            CatalogChange::Create {
                name: "_sys".into(),
                sharding: Sharding::Hash,
            },
            None,
        )
        .unwrap_err();
    assert_eq!(e.code(), "bad_name");
    // Stored as one JSON value under the catalog key, in the catalog slot.
    let json = s.get(Keyspace::SYSTEM, CATALOG_KEY).unwrap();
    let c: Catalog = serde_json::from_str(&json).unwrap();
    assert_eq!(c.version, 1);
    assert_eq!(c.lookup("users"), Some(Keyspace::FIRST_USER));
    assert_eq!(
        unikv_types::key_slot(CATALOG_KEY.as_bytes()),
        catalog_slot()
    );
    // The catalog value moves with its slot like any key.
    let export = export_slot(&s.db, catalog_slot()).unwrap();
    assert_eq!(export.collections_kv.len(), 1);
    assert_eq!(export.collections_kv[0].0, Keyspace::SYSTEM);
    // A catalog change for any other key is refused.
    let e = s
        .kv(
            Keyspace::SYSTEM,
            "other",
            KvOp::Catalog(CatalogOp {
                change: create("x"),
                expected_version: None,
            }),
            None,
        )
        .unwrap_err();
    assert_eq!(e.code(), "bad_command");
}

#[test]
fn a_hash_collection_keeps_its_own_totals_through_writes_moves_and_drops() {
    let mut s = Shard::new(1);
    let keys: Vec<String> = (0..300).map(|i| format!("key-{i}")).collect();
    for k in &keys {
        s.kv(USERS, k, put("uu"), None).unwrap();
        s.kv(Keyspace::DEFAULT, k, put("d"), None).unwrap();
    }
    for k in &keys[..100] {
        s.kv(ORDERS, k, put("o"), None).unwrap();
    }
    let bytes = |ks: &[String], v: u64| ks.iter().map(|k| k.len() as u64 + v).sum::<u64>();
    let totals = |s: &Shard, ks| {
        let st = keyspace_stats(&s.db, ks).unwrap();
        (st.keys, st.bytes)
    };
    assert_eq!(totals(&s, USERS), (300, bytes(&keys, 2)));
    assert_eq!(totals(&s, ORDERS), (100, bytes(&keys[..100], 1)));
    // Longer values, appends and deletes.
    for k in &keys[..10] {
        s.kv(USERS, k, put("uuuu"), None).unwrap();
        s.kv(USERS, k, KvOp::Append { value: "a".into() }, None)
            .unwrap();
    }
    for k in &keys[290..] {
        s.kv(USERS, k, KvOp::Delete, None).unwrap();
    }
    let want = bytes(&keys[..290], 2) + 10 * 3;
    assert_eq!(totals(&s, USERS), (290, want));

    // A slot moved away takes its keys out of the collection's totals; the target adds them.
    let slot = unikv_types::key_slot(keys[0].as_bytes());
    let in_slot: Vec<&String> = keys[..290]
        .iter()
        .filter(|k| unikv_types::key_slot(k.as_bytes()) == slot)
        .collect();
    let moved_bytes: u64 = in_slot.iter().map(|k| k.len() as u64 + 5).sum();
    let export = export_slot(&s.db, slot).unwrap();
    let r = s.apply(Command::Move(MoveCommand::Out {
        slot,
        to: ShardId(2),
        epoch: Epoch(2),
        now_ms: None,
    }));
    assert_eq!(r, Ok(KvReply::Written));
    let r = s.apply(Command::Move(MoveCommand::Done {
        slot,
        epoch: Epoch(2),
    }));
    assert_eq!(r, Ok(KvReply::Written));
    assert_eq!(
        totals(&s, USERS),
        (290 - in_slot.len() as u64, want - moved_bytes)
    );
    let mut t = Shard::new(2);
    t.apply(Command::Move(MoveCommand::Out {
        slot,
        to: ShardId(9),
        epoch: Epoch(2),
        now_ms: None,
    }))
    .unwrap();
    t.apply(Command::Move(MoveCommand::Done {
        slot,
        epoch: Epoch(2),
    }))
    .unwrap();
    let r = t.apply(Command::Move(MoveCommand::In {
        slot,
        from: ShardId(1),
        epoch: Epoch(3),
        kv: export.kv.clone(),
        dedup: export.dedup.clone(),
        dedup_horizon_ms: 0,
        collections_kv: export.collections_kv.clone(),
        staged: None,
        deleted: Vec::new(),
    }));
    assert_eq!(r, Ok(KvReply::Written));
    assert_eq!(totals(&t, USERS), (in_slot.len() as u64, moved_bytes));
    // The target hands the slot on: its totals go back.
    t.apply(Command::Move(MoveCommand::Out {
        slot,
        to: ShardId(9),
        epoch: Epoch(4),
        now_ms: None,
    }))
    .unwrap();
    let r = t.apply(Command::Move(MoveCommand::Done {
        slot,
        epoch: Epoch(4),
    }));
    assert_eq!(r, Ok(KvReply::Written));
    assert_eq!(totals(&t, USERS), (0, 0));
    // A dropped collection has no totals left; the others keep theirs.
    s.apply(Command::Registry(RegistryCommand::DropKeyspace {
        keyspace: USERS,
    }))
    .unwrap();
    assert_eq!(totals(&s, USERS), (0, 0));
    let orders_left = keys[..100]
        .iter()
        .filter(|k| unikv_types::key_slot(k.as_bytes()) != slot)
        .count() as u64;
    assert_eq!(totals(&s, ORDERS).0, orders_left);
}

#[test]
fn a_dropped_keyspace_is_gone_refused_and_not_received_again() {
    let mut s = Shard::new(1);
    let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
    for k in &keys {
        s.kv(USERS, k, put("u"), None).unwrap();
        s.kv(ORDERS, k, put("o"), None).unwrap();
        s.kv(Keyspace::DEFAULT, k, put("d"), None).unwrap();
    }
    let before = s.totals();
    let r = s.apply(Command::Registry(RegistryCommand::DropKeyspace {
        keyspace: USERS,
    }));
    assert_eq!(r, Ok(KvReply::Written));
    for k in &keys {
        assert_eq!(s.get(USERS, k), None);
        assert_eq!(s.get(ORDERS, k).as_deref(), Some("o"));
        assert_eq!(s.get(Keyspace::DEFAULT, k).as_deref(), Some("d"));
    }
    let per_key: u64 = keys.iter().map(|k| k.len() as u64 + 1).sum();
    assert_eq!(s.totals(), (before.0 - 200, before.1 - per_key));
    // Writes to it are refused from now on (the id is never reused).
    let e = s.kv(USERS, "key-1", put("late"), None).unwrap_err();
    assert_eq!((e.code(), e.http_status()), ("unknown_collection", 404));
    assert_eq!(s.get(USERS, "key-1"), None);
    // Idempotent.
    let r = s.apply(Command::Registry(RegistryCommand::DropKeyspace {
        keyspace: USERS,
    }));
    assert_eq!(r, Ok(KvReply::Written));
    // `default` and the system keyspace cannot be dropped.
    for ks in [Keyspace::DEFAULT, Keyspace::SYSTEM] {
        let r = s.apply(Command::Registry(RegistryCommand::DropKeyspace {
            keyspace: ks,
        }));
        assert_eq!(r.unwrap_err().code(), "move_refused");
    }
}

#[test]
fn a_drop_in_the_same_group_as_writes_counts_them_right() {
    let mut s = Shard::new(1);
    s.kv(USERS, "a", put("1"), None).unwrap();
    s.kv(Keyspace::DEFAULT, "a", put("1"), None).unwrap();
    let slot = |k: &str| unikv_types::key_slot(k.as_bytes());
    let kv = |key: &str, v: &str| Command::Kv {
        slot: slot(key),
        key: key.into(),
        op: put(v),
        client: None,
        max_value_bytes: None,
        clock: None,
        keyspace: USERS,
        bucket: None,
        range: false,
    };
    let entries: Vec<Entry> = [
        kv("a", "22"),
        kv("b", "3"),
        Command::Registry(RegistryCommand::DropKeyspace { keyspace: USERS }),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, c)| {
        Entry::new(
            log_id::<TypeConfig>(1, NodeId(1), 100 + i as u64),
            EntryPayload::Normal(c),
        )
    })
    .collect();
    apply_entries_cached(&s.db, &mut s.meta, &mut s.cache, &entries).unwrap();
    assert_eq!(s.get(USERS, "a"), None);
    assert_eq!(s.get(USERS, "b"), None);
    // Only `default`'s "a" = "1" is left.
    assert_eq!(s.totals(), (1, 2));
}

#[test]
fn a_format_1_data_dir_is_migrated_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let slot = unikv_types::key_slot(b"old");
    {
        let (_log, sm) = unikv_storage::open(dir.path(), ShardId(1)).unwrap();
        let db = sm.store().db().clone();
        assert_eq!(
            db.raw().get_cf(db.cf(CF_SM), KEY_FORMAT).unwrap(),
            Some(rmp_serde::to_vec_named(&FORMAT).unwrap())
        );
        // A format-1 data dir: the seed's layout (slot ++ key) and no format marker.
        let mut b = rocksdb::WriteBatch::default();
        b.put_cf(db.cf(CF_KV), kv_key(slot, b"old"), b"value");
        // And a format-2 key of a hash collection, written before its totals were kept.
        b.put_cf(
            db.cf(CF_KV),
            unikv_storage::db::kv_key_in(slot, USERS, b"old"),
            b"users",
        );
        b.delete_cf(db.cf(CF_SM), KEY_FORMAT);
        db.write_sync(b).unwrap();
    }
    {
        let (_log, sm) = unikv_storage::open(dir.path(), ShardId(1)).unwrap();
        let store = sm.store();
        assert_eq!(store.get(slot, "old").unwrap().as_deref(), Some("value"));
        let db = store.db();
        assert_eq!(
            db.raw().get_cf(db.cf(CF_SM), KEY_FORMAT).unwrap(),
            Some(rmp_serde::to_vec_named(&FORMAT).unwrap()),
            "the marker is written on open"
        );
        let st = keyspace_stats(db, USERS).unwrap();
        assert_eq!((st.keys, st.bytes), (1, 3 + 5), "counted on migration");
        let mut b = rocksdb::WriteBatch::default();
        b.put_cf(
            db.cf(CF_SM),
            KEY_FORMAT,
            rmp_serde::to_vec_named(&(FORMAT + 1)).unwrap(),
        );
        db.write_sync(b).unwrap();
    }
    let err = unikv_storage::open(dir.path(), ShardId(1)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("format {}", FORMAT + 1)) && msg.contains("newer than this binary"),
        "{msg}"
    );
}

#[test]
fn a_fence_holds_slot_moves_back_and_is_refused_while_one_is_in_flight() {
    let mut s = Shard::new(1);
    let out = |slot: u16, epoch: u64, now_ms: Option<u64>| {
        Command::Move(MoveCommand::Out {
            slot,
            to: ShardId(2),
            epoch: Epoch(epoch),
            now_ms,
        })
    };
    let fence = |token, now_ms| {
        Command::Registry(RegistryCommand::Fence {
            token,
            until_ms: now_ms + 10_000,
            now_ms,
        })
    };
    assert_eq!(s.apply(fence(7, 0)), Ok(KvReply::Written));
    assert_eq!(s.apply(fence(7, 1)), Ok(KvReply::Written), "idempotent");
    let e = s.apply(out(5, 2, Some(9_000))).unwrap_err();
    assert_eq!((e.code(), e.http_status()), ("moves_fenced", 409));
    // One promote at a time.
    let e = s.apply(fence(9, 9_000)).unwrap_err();
    assert_eq!((e.code(), e.http_status()), ("promote_in_progress", 409));
    // The fence ends by itself by the clock...
    assert_eq!(s.apply(out(5, 2, Some(10_001))), Ok(KvReply::Written));
    // ...and a fence is refused while a move is in flight.
    let e = s.apply(fence(8, 10_001)).unwrap_err();
    assert_eq!((e.code(), e.http_status()), ("move_in_progress", 409));
    let r = s.apply(Command::Move(MoveCommand::Abort {
        slot: 5,
        epoch: Epoch(2),
    }));
    assert_eq!(r, Ok(KvReply::Written));
    // The expired fence 7 does not stand in the way of a new one.
    assert_eq!(s.apply(fence(8, 10_002)), Ok(KvReply::Written));
    assert_eq!(
        s.apply(out(6, 2, Some(10_003))).unwrap_err().code(),
        "moves_fenced"
    );
    // Released by its own token only.
    let r = s.apply(Command::Registry(RegistryCommand::Unfence { token: 7 }));
    assert_eq!(r, Ok(KvReply::Written));
    assert_eq!(
        s.apply(out(6, 2, Some(10_003))).unwrap_err().code(),
        "moves_fenced"
    );
    let r = s.apply(Command::Registry(RegistryCommand::Unfence { token: 8 }));
    assert_eq!(r, Ok(KvReply::Written));
    assert_eq!(s.apply(out(6, 2, Some(10_003))), Ok(KvReply::Written));
}
