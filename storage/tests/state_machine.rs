//! State machine behaviour on a real RocksDB: apply, ownership, at-most-once, restart and the
//! snapshot round trip that brings a lagging follower up to date.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::stream;
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use openraft::{EntryPayload, RaftSnapshotBuilder};
use unikv_storage::apply::apply_entries;
use unikv_storage::meta::SmMeta;
use unikv_storage::raft_types::Entry;
use unikv_storage::{Command, CommandResult, Db, MoveCommand, OwnedRead, StateMachine, TypeConfig};
use unikv_types::{ClientSeq, Epoch, KvError, KvOp, KvReply, NodeId, ShardId, SlotRange};

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

fn get(db: &Db, slot: u16, key: &str) -> Option<String> {
    let cf = db.cf(unikv_storage::db::CF_KV);
    db.raw()
        .get_cf(cf, unikv_storage::db::kv_key(slot, key.as_bytes()))
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

fn bootstrap(lo: u16, hi: u16) -> Command {
    Command::Bootstrap {
        shard: ShardId(1),
        ranges: vec![SlotRange(lo, hi)],
        epoch: Epoch(1),
    }
}

fn entries(first: u64, cmds: Vec<Command>) -> Vec<Entry> {
    cmds.into_iter()
        .enumerate()
        .map(|(i, c)| entry(first + i as u64, c))
        .collect()
}

/// Applies commands through the state machine, as openraft does (no client waiting).
async fn apply(sm: &mut StateMachine, first: u64, cmds: Vec<Command>) {
    let items: Vec<Result<_, std::io::Error>> = entries(first, cmds)
        .into_iter()
        .map(|e| Ok((e, None)))
        .collect();
    sm.apply(stream::iter(items)).await.unwrap();
}

/// Applies commands with the apply function itself, returning each result.
fn apply_direct(db: &Db, meta: &mut SmMeta, first: u64, cmds: Vec<Command>) -> Vec<CommandResult> {
    apply_entries(db, meta, &entries(first, cmds)).unwrap()
}

fn fresh_db(dir: &std::path::Path) -> (Db, SmMeta) {
    let db = Db::open(dir).unwrap();
    let meta = SmMeta::load(&db, ShardId(1)).unwrap();
    (db, meta)
}

#[tokio::test]
async fn writes_apply_in_order_and_check_ownership() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut meta) = fresh_db(dir.path());
    let before = apply_direct(
        &db,
        &mut meta,
        1,
        vec![kv(5, "a", KvOp::Put { value: "x".into() }, None)],
    );
    assert!(
        matches!(before[0], Err(KvError::Unavailable { .. })),
        "{before:?}"
    );

    let r = apply_direct(
        &db,
        &mut meta,
        2,
        vec![
            bootstrap(0, 99),
            kv(5, "a", KvOp::Put { value: "x".into() }, None),
            kv(5, "a", KvOp::Append { value: "y".into() }, None),
            kv(5, "a", KvOp::Append { value: "z".into() }, None),
            kv(6, "b", KvOp::Delete, None),
            kv(200, "c", KvOp::Put { value: "v".into() }, None),
        ],
    );
    assert_eq!(r[1], Ok(KvReply::Written));
    assert_eq!(
        r[2],
        Ok(KvReply::Appended {
            previous: Some("x".into())
        })
    );
    assert_eq!(
        r[3],
        Ok(KvReply::Appended {
            previous: Some("xy".into())
        })
    );
    assert_eq!(r[4], Ok(KvReply::Deleted { existed: false }));
    assert!(matches!(r[5], Err(KvError::WrongShard { slot: 200, .. })));
    assert_eq!(get(&db, 5, "a").as_deref(), Some("xyz"));
    assert_eq!(get(&db, 200, "c"), None);
    assert_eq!(meta.applied.unwrap().index(), 7);
    assert_eq!(meta.descriptor.slot_count(), 100);
    // The metadata was written with the batch.
    let reloaded = SmMeta::load(&db, ShardId(1)).unwrap();
    assert_eq!(reloaded.descriptor, meta.descriptor);
}

#[tokio::test]
async fn same_client_seq_applies_once() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut meta) = fresh_db(dir.path());
    let app = |v: &str| KvOp::Append { value: v.into() };
    let r = apply_direct(
        &db,
        &mut meta,
        1,
        vec![
            bootstrap(0, 16383),
            kv(7, "k", app("a"), Some(("c1", 1))),
            kv(7, "k", app("a"), Some(("c1", 1))),
            kv(7, "k", app("b"), Some(("c1", 2))),
            kv(7, "k", app("zzz"), Some(("c1", 1))),
        ],
    );
    assert_eq!(r[1], Ok(KvReply::Appended { previous: None }));
    assert_eq!(r[2], r[1], "a retry returns the first reply");
    assert_eq!(
        r[3],
        Ok(KvReply::Appended {
            previous: Some("a".into())
        })
    );
    assert!(matches!(
        r[4],
        Err(KvError::StaleSequence {
            seq: 1,
            last: 2,
            ..
        })
    ));
    assert_eq!(get(&db, 7, "k").as_deref(), Some("ab"));
    // Across batches too.
    let r = apply_direct(
        &db,
        &mut meta,
        6,
        vec![kv(7, "k", app("b"), Some(("c1", 2)))],
    );
    assert_eq!(
        r[0],
        Ok(KvReply::Appended {
            previous: Some("a".into())
        })
    );
    assert_eq!(get(&db, 7, "k").as_deref(), Some("ab"));
}

#[tokio::test]
async fn a_reused_client_seq_with_another_request_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut meta) = fresh_db(dir.path());
    let put = |v: &str| KvOp::Put { value: v.into() };
    let r = apply_direct(
        &db,
        &mut meta,
        1,
        vec![
            bootstrap(0, 16383),
            kv(7, "{t}a", put("1"), Some(("c1", 5))),
            kv(7, "{t}b", put("2"), Some(("c1", 5))),
            kv(7, "{t}a", put("3"), Some(("c1", 5))),
            kv(7, "{t}a", KvOp::Delete, Some(("c1", 5))),
            kv(7, "{t}a", put("1"), Some(("c1", 5))),
        ],
    );
    assert_eq!(r[1], Ok(KvReply::Written));
    let reused = Err(KvError::SequenceReused {
        client_id: "c1".into(),
        seq: 5,
    });
    assert_eq!(r[2], reused, "another key under the same pair");
    assert_eq!(r[3], reused, "another value under the same pair");
    assert_eq!(r[4], reused, "another operation under the same pair");
    assert_eq!(
        r[5],
        Ok(KvReply::Written),
        "the same request again is a retry"
    );
    assert_eq!(get(&db, 7, "{t}a").as_deref(), Some("1"));
    assert_eq!(
        get(&db, 7, "{t}b"),
        None,
        "the refused write was not applied"
    );
}

#[tokio::test]
async fn an_append_may_not_grow_a_value_past_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut meta) = fresh_db(dir.path());
    let limited = |v: &str| Command::Kv {
        slot: 7,
        key: "k".into(),
        op: KvOp::Append { value: v.into() },
        client: None,
        max_value_bytes: Some(4),
        clock: None,
        keyspace: Default::default(),
        bucket: None,
        range: false,
    };
    let r = apply_direct(
        &db,
        &mut meta,
        1,
        vec![
            bootstrap(0, 16383),
            limited("ab"),
            limited("cd"),
            limited("e"),
        ],
    );
    assert!(r[1].is_ok() && r[2].is_ok(), "{r:?}");
    assert!(
        matches!(&r[3], Err(KvError::BadRequest { code, .. }) if code == "value_too_long"),
        "{:?}",
        r[3]
    );
    assert_eq!(get(&db, 7, "k").as_deref(), Some("abcd"));
}

/// A read that checks ownership and then reads data never sees a slot owned with its data
/// already gone: `Done` deletes the data in RocksDB (on the blocking pool) before the state
/// machine task publishes the descriptor without the slot. A reader thread reads the slot's
/// key without pause while the slot is handed off and received back again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_never_see_a_handed_off_slot_owned_but_empty() {
    const ROUNDS: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = unikv_storage::open(dir.path(), ShardId(1)).unwrap();
    let slot = 7;
    let put = KvOp::Put { value: "v".into() };
    apply(
        &mut sm,
        1,
        vec![bootstrap(0, 16383), kv(slot, "k", put, None)],
    )
    .await;
    let store = sm.store();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut reads, mut missing) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                if store.read_owned(slot, Default::default(), "k").unwrap()
                    == OwnedRead::Value(None)
                {
                    missing += 1;
                }
                reads += 1;
            }
            (reads, missing)
        })
    };
    let (mut index, mut epoch) = (3, 1);
    for _ in 0..ROUNDS {
        epoch += 1;
        let e = Epoch(epoch);
        let to = ShardId(2);
        apply(
            &mut sm,
            index,
            vec![Command::Move(MoveCommand::Out {
                slot,
                to,
                epoch: e,
                now_ms: None,
            })],
        )
        .await;
        apply(
            &mut sm,
            index + 1,
            vec![Command::Move(MoveCommand::Done { slot, epoch: e })],
        )
        .await;
        epoch += 1;
        let e = Epoch(epoch);
        let back = MoveCommand::In {
            slot,
            from: to,
            epoch: e,
            kv: vec![("k".into(), "v".into())],
            dedup: vec![],
            dedup_horizon_ms: 0,
            collections_kv: Vec::new(),
            staged: None,
            deleted: Vec::new(),
        };
        apply(&mut sm, index + 2, vec![Command::Move(back)]).await;
        index += 3;
    }
    stop.store(true, Ordering::Relaxed);
    let (reads, missing) = reader.join().unwrap();
    println!("[figure] {reads} reads during {ROUNDS} hand-offs and returns, {missing} not found");
    assert!(reads > ROUNDS, "the reader ran ({reads} reads)");
    assert_eq!(
        missing, 0,
        "reads that saw the slot owned but its key gone, of {reads}"
    );
    assert_eq!(
        sm.store()
            .read_owned(slot, Default::default(), "k")
            .unwrap(),
        OwnedRead::Value(Some("v".into()))
    );
}

#[tokio::test]
async fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut sm) = unikv_storage::open(dir.path(), ShardId(1)).unwrap();
        apply(
            &mut sm,
            1,
            vec![
                bootstrap(0, 16383),
                kv(1, "k", KvOp::Put { value: "v".into() }, None),
            ],
        )
        .await;
    }
    let (_log, mut sm) = unikv_storage::open(dir.path(), ShardId(1)).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.unwrap().index(), 2);
    assert_eq!(sm.store().get(1, "k").unwrap().as_deref(), Some("v"));
    assert!(sm.store().descriptor().initialised);
}

#[tokio::test]
async fn snapshot_round_trip_replaces_state() {
    let src_dir = tempfile::tempdir().unwrap();
    let (_l, mut src) = unikv_storage::open(src_dir.path(), ShardId(1)).unwrap();
    let mut cmds = vec![bootstrap(0, 16383)];
    for i in 0..500u32 {
        cmds.push(kv(
            (i % 300) as u16,
            &format!("key{i}"),
            KvOp::Put {
                value: format!("v{i}"),
            },
            Some(("c", i as u64 + 1)),
        ));
    }
    apply(&mut src, 1, cmds).await;
    let snap = src.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id.as_ref().unwrap().index(), 501);

    let dst_dir = tempfile::tempdir().unwrap();
    let (_l, mut dst) = unikv_storage::open(dst_dir.path(), ShardId(1)).unwrap();
    // Data that the snapshot must replace.
    apply(
        &mut dst,
        1,
        vec![
            bootstrap(0, 16383),
            kv(3, "stale", KvOp::Put { value: "x".into() }, None),
        ],
    )
    .await;
    // Receive the file as the network would: a copy in the target's snapshot folder.
    let incoming = dst.incoming_snapshot_path();
    std::fs::copy(&snap.snapshot.path, &incoming).unwrap();
    let file = unikv_storage::SnapshotFile::open(&incoming).unwrap();
    dst.install_snapshot(&snap.meta, file).await.unwrap();

    let store = dst.store();
    assert_eq!(store.get(3, "stale").unwrap(), None);
    for i in 0..500u32 {
        assert_eq!(
            store.get((i % 300) as u16, &format!("key{i}")).unwrap(),
            Some(format!("v{i}"))
        );
    }
    assert_eq!(store.applied().unwrap().index(), 501);
    let cur = dst.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(cur.meta.last_log_id, snap.meta.last_log_id);
    // The dedup table moved too: a retry of the last write is not applied again.
    apply(
        &mut dst,
        502,
        vec![kv(
            (499 % 300) as u16,
            "key499",
            KvOp::Put {
                value: "new".into(),
            },
            Some(("c", 500)),
        )],
    )
    .await;
    assert_eq!(
        store.get((499 % 300) as u16, "key499").unwrap().as_deref(),
        Some("v499")
    );
}

#[tokio::test]
async fn truncated_snapshot_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (_l, mut sm) = unikv_storage::open(dir.path(), ShardId(1)).unwrap();
    apply(
        &mut sm,
        1,
        vec![
            bootstrap(0, 16383),
            kv(
                1,
                "k",
                KvOp::Put {
                    value: "v".repeat(1000),
                },
                None,
            ),
        ],
    )
    .await;
    let snap = sm.build_snapshot().await.unwrap();
    let dst_dir = tempfile::tempdir().unwrap();
    let (_l, mut dst) = unikv_storage::open(dst_dir.path(), ShardId(1)).unwrap();
    let incoming = dst.incoming_snapshot_path();
    let bytes = std::fs::read(&snap.snapshot.path).unwrap();
    std::fs::write(&incoming, &bytes[..bytes.len() - 20]).unwrap();
    let file = unikv_storage::SnapshotFile::open(&incoming).unwrap();
    assert!(dst.install_snapshot(&snap.meta, file).await.is_err());
    assert_eq!(dst.store().applied(), None, "nothing was installed");
}
