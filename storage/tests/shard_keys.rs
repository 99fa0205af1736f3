//! Shard keys in the storage layer, on real RocksDBs: a shard key's writes in a unit of its
//! own, its unit moving to another shard (frozen, installed without serving, handed off with
//! a forwarding note that refuses a fresh unit, activated; or aborted and dropped), and a
//! shard removed from the cluster only once drained.

use unikv_storage::db::{kv_key_in, CF_KV};
use unikv_storage::moves::{export_slot, slot_stats};
use unikv_storage::{Command, RegistryCommand, UnitCommand};
use unikv_types::catalog::bucket_of;
use unikv_types::{ClientSeq, Epoch, Keyspace, KvError, KvReply, ShardId, ShardState, SlotRange};

mod harness;
use harness::{put, Shard, ORDERS, USERS};

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
    // `Retire` of a drained shard marks it to go (the balancer removes it once no shard key
    // is placed on it either).
    let mut y = Shard::with_ranges(4, vec![]);
    assert_eq!(
        y.apply(Command::Registry(RegistryCommand::Retire)),
        Ok(KvReply::Written)
    );
    let d = &y.meta.descriptor;
    assert_eq!(
        (d.state, d.forget_when_drained),
        (ShardState::Inactive, true)
    );
}

fn bucket_write(key: &str, v: &str, ks: Keyspace, client: Option<(&str, u64)>) -> Command {
    Command::Kv {
        slot: unikv_types::key_slot(key.as_bytes()),
        key: key.into(),
        op: put(v),
        client: client.map(|(c, n)| ClientSeq::new(c, n)),
        max_value_bytes: None,
        clock: None,
        keyspace: ks,
        bucket: Some(bucket_of(key.as_bytes())),
        range: false,
    }
}

fn unit_value(s: &Shard, ks: Keyspace, key: &str) -> Option<String> {
    let unit = *s.meta.descriptor.units.get(&ks)?;
    s.db.raw()
        .get_cf(s.db.cf(CF_KV), kv_key_in(unit, ks, key.as_bytes()))
        .unwrap()
        .map(|b| String::from_utf8(b).unwrap())
}

#[test]
fn a_shard_keys_unit_moves_with_at_most_one_shard_serving_it() {
    let (mut src, mut dst) = (Shard::new(1), Shard::with_ranges(2, vec![]));
    dst.apply(Command::Registry(RegistryCommand::SetState {
        state: ShardState::Active,
    }))
    .unwrap();
    let keys: Vec<String> = (0..50).map(|i| format!("u{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        src.apply(bucket_write(k, "v", USERS, Some(("c", i as u64 + 1))))
            .unwrap();
    }
    let slot = |k: &str| unikv_types::key_slot(k.as_bytes());
    // Out freezes writes (reads go on) …
    let out = |epoch| {
        Command::Unit(UnitCommand::Out {
            keyspace: USERS,
            to: ShardId(2),
            epoch: Epoch(epoch),
        })
    };
    assert_eq!(src.apply(out(2)), Ok(KvReply::Written));
    assert_eq!(src.apply(out(2)), Ok(KvReply::Written), "idempotent");
    let e = src.apply(bucket_write("u1", "x", USERS, None)).unwrap_err();
    assert_eq!(e.code(), "unavailable", "{e}");
    assert!(src
        .meta
        .descriptor
        .unit_home(USERS, slot("u1"), false)
        .is_ok());
    // … the target stores it without serving it …
    let unit = src.meta.descriptor.units[&USERS];
    let export = export_slot(&src.db, unit).unwrap();
    let kv: Vec<(String, String)> = export
        .collections_kv
        .iter()
        .map(|(_, k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(kv.len(), 50);
    let unit_in = Command::Unit(UnitCommand::In {
        keyspace: USERS,
        from: ShardId(1),
        epoch: Epoch(2),
        kv,
        dedup: export.dedup.clone(),
        dedup_horizon_ms: export.dedup_horizon_ms,
    });
    assert_eq!(dst.apply(unit_in.clone()), Ok(KvReply::Written));
    assert_eq!(dst.apply(unit_in), Ok(KvReply::Written), "idempotent");
    assert!(dst
        .meta
        .descriptor
        .unit_home(USERS, slot("u1"), false)
        .is_err());
    assert_eq!(
        dst.apply(bucket_write("u1", "x", USERS, None))
            .unwrap_err()
            .code(),
        "unavailable"
    );
    // … the source lets go and never hands out a fresh unit for it again …
    let done = Command::Unit(UnitCommand::Done {
        keyspace: USERS,
        epoch: Epoch(2),
    });
    assert_eq!(src.apply(done.clone()), Ok(KvReply::Written));
    assert_eq!(src.apply(done), Ok(KvReply::Written), "idempotent");
    assert!(!src.meta.descriptor.units.contains_key(&USERS));
    let e = src.apply(bucket_write("u1", "x", USERS, None)).unwrap_err();
    match e {
        KvError::WrongShard { owner, epoch, .. } => {
            assert_eq!((owner, epoch), (Some(ShardId(2)), Some(Epoch(2))))
        }
        other => panic!("a write after the hand-off: {other:?}"),
    }
    assert!(
        !src.meta.descriptor.units.contains_key(&USERS),
        "no fresh unit"
    );
    assert!(
        slot_stats(&src.db).unwrap().iter().all(|(u, _)| *u != unit),
        "stats gone"
    );
    // … and only then does the target serve it, with the data and the dedup records.
    let activate = Command::Unit(UnitCommand::Activate {
        keyspace: USERS,
        epoch: Epoch(2),
    });
    assert_eq!(dst.apply(activate.clone()), Ok(KvReply::Written));
    assert_eq!(dst.apply(activate), Ok(KvReply::Written), "idempotent");
    for k in &keys {
        assert_eq!(unit_value(&dst, USERS, k).as_deref(), Some("v"), "{k}");
    }
    let e = dst
        .apply(bucket_write("u9", "again", USERS, Some(("c", 3))))
        .unwrap_err();
    assert_eq!(
        e.code(),
        "stale_sequence",
        "the dedup table came along: {e}"
    );
    assert_eq!(
        dst.apply(bucket_write("u1", "new", USERS, None)),
        Ok(KvReply::Written)
    );
    assert_eq!(unit_value(&dst, USERS, "u1").as_deref(), Some("new"));

    // An aborted hand-off: the source serves again at the aborted epoch; the target's copy
    // is dropped.
    for k in &keys[..5] {
        dst.apply(bucket_write(k, "o", ORDERS, None)).unwrap();
    }
    let back = Command::Unit(UnitCommand::Out {
        keyspace: ORDERS,
        to: ShardId(1),
        epoch: Epoch(2),
    });
    assert_eq!(dst.apply(back), Ok(KvReply::Written));
    let orders_in = Command::Unit(UnitCommand::In {
        keyspace: ORDERS,
        from: ShardId(2),
        epoch: Epoch(2),
        kv: vec![("u0".into(), "o".into())],
        dedup: vec![],
        dedup_horizon_ms: 0,
    });
    assert_eq!(src.apply(orders_in), Ok(KvReply::Written));
    let abort = Command::Unit(UnitCommand::Abort {
        keyspace: ORDERS,
        epoch: Epoch(2),
    });
    assert_eq!(dst.apply(abort), Ok(KvReply::Written));
    assert_eq!(
        dst.apply(bucket_write("u0", "o2", ORDERS, None)),
        Ok(KvReply::Written)
    );
    let drop = Command::Unit(UnitCommand::Drop {
        keyspace: ORDERS,
        epoch: Epoch(2),
    });
    assert_eq!(src.apply(drop), Ok(KvReply::Written));
    assert_eq!(unit_value(&src, ORDERS, "u0"), None);
    assert!(src
        .meta
        .descriptor
        .unit_home(ORDERS, slot("u0"), true)
        .is_ok());
    // A later attempt has an epoch above the aborted one.
    let stale = Command::Unit(UnitCommand::Out {
        keyspace: ORDERS,
        to: ShardId(1),
        epoch: Epoch(2),
    });
    assert_eq!(dst.apply(stale).unwrap_err().code(), "move_refused");
}

#[test]
fn a_second_part_of_a_shard_key_is_refused_and_a_dropped_arrival_leaves_the_note() {
    // Shard 3 holds shard key USERS's part from shard 1 (received at epoch 2).
    let mut t = Shard::with_ranges(3, vec![]);
    t.apply(Command::Registry(RegistryCommand::SetState {
        state: ShardState::Active,
    }))
    .unwrap();
    let unit_in = |from: u64, epoch: u64, v: &str| {
        Command::Unit(UnitCommand::In {
            keyspace: USERS,
            from: ShardId(from),
            epoch: Epoch(epoch),
            kv: vec![(format!("from-{from}"), v.to_string())],
            dedup: vec![],
            dedup_horizon_ms: 0,
        })
    };
    assert_eq!(t.apply(unit_in(1, 2, "a")), Ok(KvReply::Written));
    let activate = Command::Unit(UnitCommand::Activate {
        keyspace: USERS,
        epoch: Epoch(2),
    });
    assert_eq!(t.apply(activate), Ok(KvReply::Written));
    assert_eq!(t.apply(unit_in(1, 2, "a")), Ok(KvReply::Written), "a retry");
    // Shard 2's part of the same key, at its own epoch 2: refused, never taken for a retry
    // (its source would then delete data nobody holds).
    let e = t.apply(unit_in(2, 2, "b")).unwrap_err();
    assert_eq!(e.code(), "move_refused", "{e}");
    assert_eq!(unit_value(&t, USERS, "from-2"), None);

    // Shard 3 hands its part to shard 4 (note: USERS went to 4), then gets one back that is
    // aborted and dropped: the note must stay, so a write routed by a stale catalog is
    // refused — never given a fresh, empty unit.
    for step in [
        UnitCommand::Out {
            keyspace: USERS,
            to: ShardId(4),
            epoch: Epoch(3),
        },
        UnitCommand::Done {
            keyspace: USERS,
            epoch: Epoch(3),
        },
    ] {
        assert_eq!(t.apply(Command::Unit(step)), Ok(KvReply::Written));
    }
    assert_eq!(t.apply(unit_in(4, 4, "c")), Ok(KvReply::Written));
    let drop = Command::Unit(UnitCommand::Drop {
        keyspace: USERS,
        epoch: Epoch(4),
    });
    assert_eq!(t.apply(drop), Ok(KvReply::Written));
    let e = t
        .apply(bucket_write("k", "lost?", USERS, None))
        .unwrap_err();
    assert_eq!(e.code(), "wrong_shard", "{e}");
    assert!(
        !t.meta.descriptor.units.contains_key(&USERS),
        "no fresh unit"
    );
    // The same hand-off arriving again after the drop is refused too.
    assert_eq!(
        t.apply(unit_in(4, 4, "c")).unwrap_err().code(),
        "move_refused"
    );
}
