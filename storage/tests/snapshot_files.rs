//! Snapshot files on disk: a flipped byte anywhere is detected, and a restarted replica picks
//! its newest snapshot by the log index in the file name.

use futures::stream;
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use openraft::{EntryPayload, RaftSnapshotBuilder};
use unikv_storage::raft_types::Entry;
use unikv_storage::snapshot::verify_snapshot;
use unikv_storage::{Command, StateMachine, TypeConfig};
use unikv_types::{Epoch, KvOp, NodeId, ShardId, SlotRange};

async fn apply(sm: &mut StateMachine, first: u64, cmds: Vec<Command>) {
    let items: Vec<Result<(Entry, _), std::io::Error>> = cmds
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let e = Entry::new(
                log_id::<TypeConfig>(1, NodeId(1), first + i as u64),
                EntryPayload::Normal(c),
            );
            Ok((e, None))
        })
        .collect();
    sm.apply(stream::iter(items)).await.unwrap();
}

fn some_data() -> Vec<Command> {
    let mut cmds = vec![Command::Bootstrap {
        shard: ShardId(1),
        ranges: vec![SlotRange(0, 16383)],
        epoch: Epoch(1),
    }];
    for i in 0..4u16 {
        cmds.push(Command::Kv {
            slot: i,
            key: format!("key-{i}"),
            op: KvOp::Put {
                value: format!("value-{i}"),
            },
            client: None,
            max_value_bytes: None,
            clock: None,
            keyspace: Default::default(),
            bucket: None,
            range: false,
        });
    }
    cmds
}

#[tokio::test]
async fn a_flipped_byte_anywhere_in_a_snapshot_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (_l, mut sm) = unikv_storage::open(dir.path(), ShardId(1)).unwrap();
    apply(&mut sm, 1, some_data()).await;
    let snap = sm.build_snapshot().await.unwrap();
    let bytes = std::fs::read(&snap.snapshot.path).unwrap();
    verify_snapshot(&snap.snapshot.path).expect("the snapshot as written reads back");
    let damaged = dir.path().join("damaged.bin");
    let mut missed = Vec::new();
    for at in 0..bytes.len() {
        let mut b = bytes.clone();
        b[at] ^= 0x01;
        std::fs::write(&damaged, &b).unwrap();
        if verify_snapshot(&damaged).is_ok() {
            missed.push(at);
        }
    }
    assert!(
        missed.is_empty(),
        "flipped bytes not detected at offsets {missed:?} of {}",
        bytes.len()
    );
}

#[tokio::test]
async fn the_newest_snapshot_is_chosen_by_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snapshots");
    {
        let (_l, mut sm) = unikv_storage::open(dir.path(), ShardId(1)).unwrap();
        // A snapshot of the empty state machine: `snapshot-empty.bin`.
        let empty = sm.build_snapshot().await.unwrap();
        assert!(empty.snapshot.path.ends_with("snapshot-empty.bin"));
        let kept = std::fs::read(&empty.snapshot.path).unwrap();
        apply(&mut sm, 1, some_data()).await;
        let newer = sm.build_snapshot().await.unwrap();
        assert_eq!(newer.meta.last_log_id.unwrap().index(), 5);
        // Building the newer one removed the empty one; put it back beside it.
        std::fs::write(snaps.join("snapshot-empty.bin"), kept).unwrap();
    }
    let (_l, mut sm) = unikv_storage::open(dir.path(), ShardId(1)).unwrap();
    let cur = sm
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!(
        cur.meta.last_log_id.map(|l| l.index()),
        Some(5),
        "picked {}",
        cur.snapshot.path.display()
    );
}
