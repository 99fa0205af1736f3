//! Collections in the storage layer, on real RocksDBs: the keyspace layout beside the seed's
//! flat keys, the format marker and the migration of a format-1 data dir, catalog changes
//! applied as commands (compare-and-set on the version), dropping a deleted collection's
//! keyspace (data, statistics, refusals, moves), and dedup that tells collections apart.

use openraft::entry::RaftEntry;
use openraft::testing::log_id;
use openraft::EntryPayload;
use unikv_storage::apply::apply_entries_cached;
use unikv_storage::apply_cache::ApplyCache;
use unikv_storage::db::{kv_key, CF_KV, CF_SM};
use unikv_storage::meta::{SmMeta, FORMAT, KEY_FORMAT};
use unikv_storage::moves::{export_slot, slot_stats};
use unikv_storage::raft_types::Entry;
use unikv_storage::usage::keyspace_stats;
use unikv_storage::{
    Command, CommandResult, Db, LeaderClock, MoveCommand, RegistryCommand, TypeConfig,
};
use unikv_types::catalog::{
    catalog_slot, Catalog, CatalogChange, CatalogOp, CatalogOutcome, Sharding, CATALOG_KEY,
};
use unikv_types::{
    ClientSeq, Epoch, Keyspace, KvOp, KvReply, NodeId, ShardId, ShardState, SlotRange,
};

struct Shard {
    _dir: tempfile::TempDir,
    db: Db,
    meta: SmMeta,
    cache: ApplyCache,
    next: u64,
}

const USERS: Keyspace = Keyspace(16);
const ORDERS: Keyspace = Keyspace(17);

impl Shard {
    fn new(id: u64) -> Self {
        Self::with_ranges(id, vec![SlotRange(0, 16383)])
    }

    fn with_ranges(id: u64, ranges: Vec<SlotRange>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let meta = SmMeta::load(&db, ShardId(id)).unwrap();
        let mut s = Shard {
            _dir: dir,
            db,
            meta,
            cache: ApplyCache::default(),
            next: 1,
        };
        let r = s.apply(Command::Bootstrap {
            shard: ShardId(id),
            ranges,
            epoch: Epoch(1),
        });
        assert_eq!(r, Ok(KvReply::Written));
        s
    }

    fn apply(&mut self, cmd: Command) -> CommandResult {
        let e = Entry::new(
            log_id::<TypeConfig>(1, NodeId(1), self.next),
            EntryPayload::Normal(cmd),
        );
        self.next += 1;
        apply_entries_cached(&self.db, &mut self.meta, &mut self.cache, &[e])
            .unwrap()
            .remove(0)
    }

    fn kv(
        &mut self,
        ks: Keyspace,
        key: &str,
        op: KvOp,
        client: Option<(&str, u64)>,
    ) -> CommandResult {
        self.apply(Command::Kv {
            slot: unikv_types::key_slot(key.as_bytes()),
            key: key.into(),
            op,
            client: client.map(|(c, s)| ClientSeq::new(c, s)),
            max_value_bytes: None,
            clock: Some(LeaderClock {
                now_ms: 1_000 + self.next,
                dedup_window_ms: 600_000,
            }),
            keyspace: ks,
            bucket: None,
            range: false,
        })
    }

    fn get(&self, ks: Keyspace, key: &str) -> Option<String> {
        let slot = unikv_types::key_slot(key.as_bytes());
        let v = self
            .db
            .raw()
            .get_cf(
                self.db.cf(CF_KV),
                unikv_storage::db::kv_key_in(slot, ks, key.as_bytes()),
            )
            .unwrap();
        v.map(|b| String::from_utf8(b).unwrap())
    }

    fn totals(&self) -> (u64, u64) {
        slot_stats(&self.db)
            .unwrap()
            .iter()
            .fold((0, 0), |(k, b), (_, s)| (k + s.keys, b + s.bytes))
    }

    fn catalog(&mut self, change: CatalogChange, expected_version: Option<u64>) -> CommandResult {
        self.kv(
            Keyspace::SYSTEM,
            CATALOG_KEY,
            KvOp::Catalog(CatalogOp {
                change,
                expected_version,
            }),
            None,
        )
    }
}

fn put(v: &str) -> KvOp {
    KvOp::Put { value: v.into() }
}

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
    }));
    assert_eq!(r, Ok(KvReply::Written));
    assert_eq!(totals(&t, USERS), (in_slot.len() as u64, moved_bytes));
    // The target drops the copy (the hand-off was aborted): its totals go back.
    let r = t.apply(Command::Move(MoveCommand::Drop {
        slot,
        epoch: Epoch(3),
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
fn a_shard_keys_writes_go_to_a_unit_of_their_own() {
    let mut s = Shard::new(1);
    let bucket_write =
        |key: &str, v: &str, ks: Keyspace, client: Option<(&str, u64)>| Command::Kv {
            slot: unikv_types::key_slot(key.as_bytes()),
            key: key.into(),
            op: put(v),
            client: client.map(|(c, n)| ClientSeq::new(c, n)),
            max_value_bytes: None,
            clock: None,
            keyspace: ks,
            bucket: Some(unikv_types::catalog::bucket_of(key.as_bytes())),
            range: false,
        };
    assert_eq!(
        s.apply(bucket_write("k", "acme", USERS, Some(("c", 1)))),
        Ok(KvReply::Written)
    );
    assert_eq!(
        s.apply(bucket_write("k", "acme", USERS, Some(("c", 1)))),
        Ok(KvReply::Written),
        "a retry"
    );
    assert_eq!(
        s.apply(bucket_write("j", "other", ORDERS, None)),
        Ok(KvReply::Written)
    );
    let d = &s.meta.descriptor;
    let unit = d.units[&USERS];
    assert!(unit >= unikv_storage::descriptor::UNIT_BASE, "{unit}");
    assert_ne!(d.units[&ORDERS], unit);
    // Stored under the unit, not under the key's hash slot; counted there.
    assert_eq!(s.get(USERS, "k"), None);
    let raw =
        s.db.raw()
            .get_cf(
                s.db.cf(CF_KV),
                unikv_storage::db::kv_key_in(unit, USERS, b"k"),
            )
            .unwrap();
    assert_eq!(raw.as_deref(), Some(&b"acme"[..]));
    let stats: std::collections::HashMap<u16, (u64, u64)> = slot_stats(&s.db)
        .unwrap()
        .into_iter()
        .map(|(sl, st)| (sl, (st.keys, st.bytes)))
        .collect();
    assert_eq!(stats.get(&unit), Some(&(1, 5)));
    // Dropping the shard key drops the unit with it.
    let r = s.apply(Command::Registry(RegistryCommand::DropKeyspace {
        keyspace: USERS,
    }));
    assert_eq!(r, Ok(KvReply::Written));
    assert!(!s.meta.descriptor.units.contains_key(&USERS));
    let raw =
        s.db.raw()
            .get_cf(
                s.db.cf(CF_KV),
                unikv_storage::db::kv_key_in(unit, USERS, b"k"),
            )
            .unwrap();
    assert_eq!(raw, None);
    assert_eq!(s.totals(), (1, 6), "only ORDERS' j=other is left");
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

#[test]
fn a_shard_is_removed_only_once_drained_and_empty_and_then_for_good() {
    let state = |s: ShardState| Command::Registry(RegistryCommand::SetState { state: s });
    // Active, holding slots: not removed; `Retire` drains it and marks it to go.
    let mut a = Shard::new(1);
    let e = a.apply(state(ShardState::Removed)).unwrap_err();
    assert_eq!((e.code(), e.http_status()), ("shard_active", 409));
    assert_eq!(
        a.apply(Command::Registry(RegistryCommand::Retire)),
        Ok(KvReply::Written)
    );
    let d = &a.meta.descriptor;
    assert_eq!(
        (d.state, d.forget_when_drained),
        (ShardState::Draining, true)
    );
    // Added back before it drained: it stays.
    assert_eq!(a.apply(state(ShardState::Active)), Ok(KvReply::Written));
    assert!(!a.meta.descriptor.forget_when_drained);
    // Inactive but still holding slots: not removed.
    let mut h = Shard::with_ranges(3, vec![SlotRange(0, 10)]);
    assert_eq!(h.apply(state(ShardState::Inactive)), Ok(KvReply::Written));
    let e = h.apply(state(ShardState::Removed)).unwrap_err();
    assert_eq!((e.code(), e.http_status()), ("shard_not_empty", 409));
    assert!(e.to_string().contains("11 slots"), "{e}");
    // Drained (a shard started later owns nothing: inactive): removed, for good.
    let mut z = Shard::with_ranges(2, vec![]);
    assert_eq!(z.meta.descriptor.state, ShardState::Inactive);
    assert_eq!(z.apply(state(ShardState::Removed)), Ok(KvReply::Written));
    assert_eq!(z.meta.descriptor.state, ShardState::Removed);
    for again in [
        state(ShardState::Active),
        state(ShardState::Draining),
        state(ShardState::Inactive),
    ] {
        let e = z.apply(again).unwrap_err();
        assert_eq!((e.code(), e.http_status()), ("shard_removed", 409));
    }
    assert_eq!(
        z.apply(state(ShardState::Removed)),
        Ok(KvReply::Written),
        "idempotent"
    );
    assert_eq!(
        z.apply(Command::Registry(RegistryCommand::Retire)),
        Ok(KvReply::Written)
    );
    // `Retire` of a drained shard removes it at once.
    let mut y = Shard::with_ranges(4, vec![]);
    assert_eq!(
        y.apply(Command::Registry(RegistryCommand::Retire)),
        Ok(KvReply::Written)
    );
    assert_eq!(y.meta.descriptor.state, ShardState::Removed);
}
