//! The copy phase of a slot move on real RocksDBs: the source's record of writes made during
//! a copy (through the state machine, as the node runs it), the pieces it reads, and the
//! target's `Stage` / `In` / `Unstage` steps with their refusals and statistics.

mod harness;

use futures::stream;
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use openraft::{EntryPayload, RaftSnapshotBuilder};
use unikv_storage::copy::{read_piece, scan_piece};
use unikv_storage::moves::{export_slot, ALREADY_RECEIVED, COPY_MISSING};
use unikv_storage::raft_types::Entry;
use unikv_storage::CopyUnit;
use unikv_storage::{Command, CommandResult, MoveCommand, Piece, Staged, StateMachine, TypeConfig};
use unikv_types::{ClientSeq, Epoch, KvError, KvOp, KvReply, NodeId, ShardId, SlotRange};

use harness::Shard;

fn entry(index: u64, cmd: Command) -> Entry {
    Entry::new(
        log_id::<TypeConfig>(1, NodeId(1), index),
        EntryPayload::Normal(cmd),
    )
}

fn kv(slot: u16, key: &str, op: KvOp, client: Option<(&str, u64)>) -> Command {
    Command::Kv {
        slot,
        key: key.into(),
        op,
        client: client.map(|(c, s)| ClientSeq::new(c, s)),
        max_value_bytes: None,
        clock: None,
        keyspace: Default::default(),
        bucket: None,
        range: false,
    }
}

fn put(slot: u16, key: &str, v: &str) -> Command {
    kv(slot, key, KvOp::Put { value: v.into() }, None)
}

fn bootstrap(id: u64, range: Option<(u16, u16)>) -> Command {
    Command::Bootstrap {
        shard: ShardId(id),
        ranges: range
            .map(|(lo, hi)| vec![SlotRange(lo, hi)])
            .unwrap_or_default(),
        epoch: Epoch(1),
    }
}

/// Applies commands through the state machine, as openraft does.
async fn apply(sm: &mut StateMachine, next: &mut u64, cmds: Vec<Command>) {
    let items: Vec<Result<_, std::io::Error>> = cmds
        .into_iter()
        .map(|c| {
            *next += 1;
            Ok((entry(*next, c), None))
        })
        .collect();
    sm.apply(stream::iter(items)).await.unwrap();
}

fn pairs(p: &Piece) -> Vec<(String, String)> {
    p.kv.clone()
}

#[tokio::test]
async fn writes_during_a_copy_are_recorded_and_read_back_current() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = unikv_storage::open(dir.path(), ShardId(1)).unwrap();
    let mut next = 0;
    let mut cmds = vec![bootstrap(1, Some((0, 99)))];
    for k in ["a", "b", "c", "d"] {
        cmds.push(put(5, k, &format!("{k}0")));
    }
    cmds.push(put(6, "other", "x"));
    apply(&mut sm, &mut next, cmds).await;
    let store = sm.store();

    let copy = store
        .start_copy(&CopyUnit::Slot(5))
        .expect("not copied yet");
    assert!(
        store.start_copy(&CopyUnit::Slot(5)).is_none(),
        "one copy of a slot at a time"
    );
    // The first piece (one pair: 1 byte is below any pair) is read, then writes go on.
    let (first, cursor) = store.copy_piece(&CopyUnit::Slot(5), None, 1).unwrap();
    assert_eq!(pairs(&first), vec![("a".into(), "a0".into())]);
    apply(
        &mut sm,
        &mut next,
        vec![
            put(5, "a", "a1"),
            kv(5, "b", KvOp::Delete, None),
            put(5, "z", "z1"),
            put(6, "other", "y"),
        ],
    )
    .await;
    assert_eq!(
        copy.pending().unwrap().0,
        3,
        "three keys of slot 5 written, slot 6 not recorded"
    );
    // The rest of the scan sees the slot as it is now.
    let mut rest = Vec::new();
    let mut at = cursor;
    while let Some(c) = at {
        let (p, n) = store.copy_piece(&CopyUnit::Slot(5), Some(&c), 1).unwrap();
        rest.extend(pairs(&p));
        at = n;
    }
    assert_eq!(
        rest,
        vec![
            ("c".into(), "c0".into()),
            ("d".into(), "d0".into()),
            ("z".into(), "z1".into())
        ]
    );
    // The recorded keys, read now: the new value, the tombstone, the new key.
    let keys = copy.take().unwrap();
    assert_eq!(copy.pending().unwrap(), (0, 0), "taken");
    let (tail, used) = store
        .read_piece(&CopyUnit::Slot(5), &keys, 1 << 20)
        .unwrap();
    assert_eq!(used, 3);
    assert_eq!(
        tail.kv,
        vec![("a".into(), "a1".into()), ("z".into(), "z1".into())]
    );
    assert_eq!(tail.deleted, vec![(Default::default(), "b".to_string())]);
    // A small piece takes as few keys as fill it (at least one).
    let (one, used) = store.read_piece(&CopyUnit::Slot(5), &keys, 1).unwrap();
    assert_eq!((one.kv.len(), used), (1, 1));
    drop(copy);
    let again = store
        .start_copy(&CopyUnit::Slot(5))
        .expect("released when dropped");
    apply(&mut sm, &mut next, vec![put(5, "c", "c1")]).await;
    assert_eq!(again.pending().unwrap().0, 1);

    // A snapshot installed on this replica replaces data behind the record's back.
    let snap = sm.build_snapshot().await.unwrap();
    let incoming = sm.incoming_snapshot_path();
    std::fs::copy(&snap.snapshot.path, &incoming).unwrap();
    let file = unikv_storage::SnapshotFile::open(&incoming).unwrap();
    sm.install_snapshot(&snap.meta, file).await.unwrap();
    assert!(
        matches!(again.take(), Err(unikv_storage::Error::CopyLost { .. })),
        "a copy whose record may miss writes must start over"
    );
    assert!(again.pending().is_err(), "known lost before the freeze");
}

/// A shard applying commands directly (the storage tests' harness), owning `owned`.
fn shard(id: u64, owned: Option<(u16, u16)>) -> Shard {
    Shard::with_ranges(
        id,
        owned
            .map(|(lo, hi)| vec![SlotRange(lo, hi)])
            .unwrap_or_default(),
    )
}

fn stage(copy: u64, part: u32, overwrite: bool, p: &Piece) -> MoveCommand {
    MoveCommand::Stage {
        slot: 5,
        from: ShardId(1),
        epoch: Epoch(2),
        copy,
        part,
        overwrite,
        kv: p.kv.clone(),
        collections_kv: p.collections_kv.clone(),
        deleted: p.deleted.clone(),
    }
}

fn code(r: CommandResult) -> String {
    match r {
        Err(KvError::BadRequest { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_staged_copy_completed_by_the_tail_equals_the_source() {
    let mut src = shard(1, Some((0, 99)));
    let mut dst = shard(2, None);
    for (k, v) in [("a", "1"), ("b", "22"), ("c", "333"), ("d", "4444")] {
        assert_eq!(src.apply(put(5, k, v)), Ok(KvReply::Written));
    }
    assert_eq!(
        src.apply(kv(
            5,
            "e",
            KvOp::Append { value: "5".into() },
            Some(("cl", 1))
        )),
        Ok(KvReply::Appended { previous: None })
    );

    // Copy 7 in one-pair pieces, while the source keeps serving.
    let mut pieces = Vec::new();
    let mut at: Option<Vec<u8>> = None;
    loop {
        let (p, n) = scan_piece(&src.db, &CopyUnit::Slot(5), at.as_deref(), 1).unwrap();
        pieces.push(p);
        match n {
            Some(c) => at = Some(c),
            None => break,
        }
    }
    assert_eq!(
        pieces.len(),
        6,
        "five one-pair pieces and an empty last one"
    );
    for (i, p) in pieces.iter().enumerate().take(3) {
        assert_eq!(dst.mv(stage(7, i as u32, false, p)), Ok(KvReply::Written));
    }
    assert_eq!(
        dst.mv(stage(7, 1, false, &pieces[1])),
        Ok(KvReply::Written),
        "a part resent is taken once"
    );
    assert_eq!(
        code(dst.mv(stage(7, 5, false, &pieces[5]))),
        COPY_MISSING,
        "a gap"
    );
    assert_eq!(
        code(dst.mv(stage(8, 1, false, &pieces[1]))),
        COPY_MISSING,
        "another copy's later part"
    );
    for (i, p) in pieces.iter().enumerate().skip(3) {
        assert_eq!(dst.mv(stage(7, i as u32, false, p)), Ok(KvReply::Written));
    }
    assert_eq!(dst.slot_totals(5), src.slot_totals(5));
    assert_eq!(dst.meta.descriptor.owns(5), None, "staged, not served");
    assert!(matches!(
        dst.apply(put(5, "a", "x")),
        Err(KvError::WrongShard { .. })
    ));

    // Writes meanwhile, then the freeze and the tail.
    assert_eq!(src.apply(put(5, "a", "1111")), Ok(KvReply::Written));
    assert_eq!(
        src.apply(kv(5, "b", KvOp::Delete, None)),
        Ok(KvReply::Deleted { existed: true })
    );
    assert_eq!(src.apply(put(5, "f", "6")), Ok(KvReply::Written));
    let out = MoveCommand::Out {
        slot: 5,
        to: ShardId(2),
        epoch: Epoch(2),
        now_ms: None,
    };
    assert_eq!(src.mv(out), Ok(KvReply::Written));
    let written: Vec<Vec<u8>> = ["a", "b", "f"]
        .iter()
        .map(|k| unikv_storage::db::kv_key(5, k.as_bytes()))
        .collect();
    let (tail, _) = read_piece(&src.db, &CopyUnit::Slot(5), &written, 1 << 20).unwrap();
    let export = export_slot(&src.db, 5).unwrap();
    let inn = |parts: u32| MoveCommand::In {
        slot: 5,
        from: ShardId(1),
        epoch: Epoch(2),
        kv: tail.kv.clone(),
        dedup: export.dedup.clone(),
        dedup_horizon_ms: export.dedup_horizon_ms,
        collections_kv: Vec::new(),
        staged: Some(Staged { copy: 7, parts }),
        deleted: tail.deleted.clone(),
    };
    assert_eq!(code(dst.mv(inn(5))), COPY_MISSING, "a part short");
    assert_eq!(dst.mv(inn(6)), Ok(KvReply::Written));
    assert_eq!(dst.mv(inn(6)), Ok(KvReply::Written), "idempotent");
    assert!(dst.meta.descriptor.staging.is_empty());
    assert_eq!(
        export_slot(&dst.db, 5).unwrap(),
        export,
        "identical, dedup table included"
    );
    assert_eq!(dst.slot_totals(5), src.slot_totals(5));
    // A resumed source's copy learns the hand-off is in.
    assert_eq!(
        code(dst.mv(stage(9, 0, false, &pieces[0]))),
        ALREADY_RECEIVED
    );

    assert_eq!(
        src.mv(MoveCommand::Done {
            slot: 5,
            epoch: Epoch(2)
        }),
        Ok(KvReply::Written)
    );
    assert_eq!(
        dst.meta.descriptor.owns(5),
        Some(Epoch(2)),
        "served from its In"
    );
    assert_eq!(
        dst.apply(kv(
            5,
            "e",
            KvOp::Append { value: "5".into() },
            Some(("cl", 1))
        )),
        Ok(KvReply::Appended { previous: None }),
        "the stored reply"
    );
    assert_eq!(
        export_slot(&dst.db, 5).unwrap().kv,
        export.kv,
        "the retried write was not applied again"
    );
}

#[test]
fn a_copy_given_up_is_dropped_and_a_new_copy_replaces_an_old_one() {
    let mut src = shard(1, Some((0, 99)));
    let mut dst = shard(2, None);
    for k in ["a", "b", "c"] {
        src.apply(put(5, k, "v")).unwrap();
    }
    let (all, _) = scan_piece(&src.db, &CopyUnit::Slot(5), None, 1 << 20).unwrap();
    assert_eq!(dst.mv(stage(1, 0, false, &all)), Ok(KvReply::Written));
    assert_eq!(dst.slot_totals(5), (3, 6));

    // Unstage of another copy changes nothing; of this one, deletes it all.
    assert_eq!(
        dst.mv(MoveCommand::Unstage { slot: 5, copy: 2 }),
        Ok(KvReply::Written)
    );
    assert_eq!(dst.slot_totals(5), (3, 6));
    assert_eq!(
        dst.mv(MoveCommand::Unstage { slot: 5, copy: 1 }),
        Ok(KvReply::Written)
    );
    assert_eq!(dst.slot_totals(5), (0, 0));
    assert!(export_slot(&dst.db, 5).unwrap().kv.is_empty());
    assert!(dst.meta.descriptor.staging.is_empty());

    // Copy 3 staged, then copy 4 starts over: only copy 4's data is left.
    assert_eq!(dst.mv(stage(3, 0, false, &all)), Ok(KvReply::Written));
    let one = Piece {
        kv: vec![("x".into(), "y".into())],
        ..Piece::default()
    };
    assert_eq!(dst.mv(stage(4, 0, false, &one)), Ok(KvReply::Written));
    assert_eq!(dst.slot_totals(5), (1, 2));
    assert_eq!(dst.meta.descriptor.staging[&5].copy, 4);
    // Overwriting pieces keep the statistics exact.
    let over = Piece {
        kv: vec![("x".into(), "longer".into()), ("w".into(), "1".into())],
        deleted: vec![(Default::default(), "gone".into())],
        ..Piece::default()
    };
    assert_eq!(dst.mv(stage(4, 1, true, &over)), Ok(KvReply::Written));
    assert_eq!(dst.slot_totals(5), (2, 9));
    let del = Piece {
        deleted: vec![(Default::default(), "x".into())],
        ..Piece::default()
    };
    assert_eq!(dst.mv(stage(4, 2, true, &del)), Ok(KvReply::Written));
    assert_eq!(dst.slot_totals(5), (1, 2));
    // A shard owning the slot refuses pieces of it.
    assert!(src.mv(stage(5, 0, false, &all)).is_err());
}
