//! Range collections in the storage layer, on real RocksDBs: the first chunk created with the
//! collection, writes and reads by chunk, splits that rewrite nothing and keep counts, ordered
//! scans (pages, bounds, reverse) across chunks, a chunk handed from one shard to another
//! with its dedup table (a retry at the new owner is recognised, not applied twice), and a
//! chunk copied in pieces while it serves.

use futures::stream;
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use openraft::EntryPayload;
use unikv_storage::raft_types::Entry;
use unikv_storage::{
    ChunkCommand, Command, CopyUnit, OwnedRead, Staged, StateMachine, Store, TypeConfig,
};
use unikv_types::catalog::{CatalogChange, CatalogOp, Sharding, CATALOG_KEY};
use unikv_types::{
    ChunkInfo, ClientSeq, Epoch, Keyspace, KvError, KvOp, NodeId, ScanRange, ShardId, SlotRange,
};

struct Shard {
    _dir: tempfile::TempDir,
    sm: StateMachine,
    store: Store,
    next: u64,
}

const EVENTS: Keyspace = Keyspace(16);

impl Shard {
    async fn new(id: u64, slots: bool) -> Shard {
        let dir = tempfile::tempdir().unwrap();
        let (_log, sm) = unikv_storage::open(dir.path(), ShardId(id)).unwrap();
        let store = sm.store();
        let mut s = Shard {
            _dir: dir,
            sm,
            store,
            next: 1,
        };
        let ranges = if slots {
            vec![SlotRange(0, 16383)]
        } else {
            vec![]
        };
        s.apply(Command::Bootstrap {
            shard: ShardId(id),
            ranges,
            epoch: Epoch(1),
        })
        .await;
        s
    }

    async fn apply(&mut self, cmd: Command) {
        let e = Entry::new(
            log_id::<TypeConfig>(1, NodeId(1), self.next),
            EntryPayload::Normal(cmd),
        );
        self.next += 1;
        let items: Vec<Result<_, std::io::Error>> = vec![Ok((e, None))];
        self.sm.apply(stream::iter(items)).await.unwrap();
    }

    /// Creates the range collection `events` (keyspace 16) through a catalog write, as the
    /// catalog's shard applies it.
    async fn create_events(&mut self) {
        self.apply(Command::Kv {
            slot: unikv_types::catalog::catalog_slot(),
            key: CATALOG_KEY.into(),
            op: KvOp::Catalog(CatalogOp {
                change: CatalogChange::Create {
                    name: "events".into(),
                    sharding: Sharding::Range,
                },
                expected_version: None,
            }),
            client: None,
            max_value_bytes: None,
            clock: None,
            keyspace: Keyspace::SYSTEM,
            bucket: None,
            range: false,
        })
        .await;
    }

    async fn write(&mut self, key: &str, op: KvOp, client: Option<(&str, u64)>) {
        self.apply(Command::Kv {
            slot: 0,
            key: key.into(),
            op,
            client: client.map(|(c, s)| ClientSeq::new(c, s)),
            max_value_bytes: None,
            clock: None,
            keyspace: EVENTS,
            bucket: None,
            range: true,
        })
        .await;
    }

    fn get(&self, key: &str) -> OwnedRead {
        self.store.read_range(EVENTS, key).unwrap()
    }

    fn chunks(&self) -> Vec<ChunkInfo> {
        self.store.chunks(Some(EVENTS)).unwrap()
    }

    /// Every key of a scan of `[start, end)`, page by page (`limit` items each).
    fn scan_all(&self, start: &str, end: Option<&str>, reverse: bool, limit: u32) -> Vec<String> {
        let mut r = ScanRange {
            start: start.into(),
            end: end.map(Into::into),
            reverse,
            limit,
            max_bytes: 1 << 20,
        };
        let mut out = Vec::new();
        loop {
            let page = self
                .store
                .scan_range(EVENTS, &r)
                .unwrap()
                .expect("held here");
            assert!(page.items.len() <= limit as usize);
            out.extend(page.items.into_iter().map(|(k, _)| k));
            match page.resume {
                None => return out,
                Some(p) if reverse => r.end = Some(p),
                Some(p) => r.start = p,
            }
        }
    }
}

fn key(i: usize) -> String {
    format!("2026-12-01T{i:05}")
}

#[tokio::test]
async fn range_chunks_split_scan_and_move_with_their_dedup_tables() {
    let mut a = Shard::new(1, true).await;
    // Creating the collection in the catalog's shard creates its first chunk there.
    a.create_events().await;
    let first = a.chunks();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!((first[0].min.as_str(), first[0].max.as_deref()), ("", None));

    // 200 keys in a scrambled order.
    let n = 200;
    for i in 0..n {
        let j = (i * 7919) % n;
        a.write(
            &key(j),
            KvOp::Put {
                value: format!("v{j}"),
            },
            None,
        )
        .await;
    }
    assert_eq!(a.get(&key(3)), OwnedRead::Value(Some("v3".into())));
    assert_eq!(a.chunks()[0].count, n as u64);

    // A split keeps every key where it was and divides the counts.
    let split_at = a.store.split_point(first[0].id).unwrap().unwrap();
    a.apply(Command::Chunk(ChunkCommand::Split {
        id: first[0].id,
        at: split_at.clone(),
        now_ms: 5,
    }))
    .await;
    let two = a.chunks();
    assert_eq!(two.len(), 2);
    assert_eq!(two.iter().map(|c| c.count).sum::<u64>(), n as u64);
    assert!(two.iter().all(|c| c.count > 50), "{two:?}");
    let right = two.iter().find(|c| c.min == split_at).unwrap().clone();
    assert_eq!(right.max, None);

    // Scans across both chunks: every key once, in order, forwards and backwards, in pages.
    let all: Vec<String> = (0..n).map(key).collect();
    assert_eq!(a.scan_all("", None, false, 7), all);
    let mut rev = all.clone();
    rev.reverse();
    assert_eq!(a.scan_all("", None, true, 9), rev);
    // Bounds are exact: [key(10), key(150)).
    let bounded = a.scan_all(&key(10), Some(&key(150)), false, 1000);
    assert_eq!(bounded, all[10..150].to_vec());
    let bounded_rev = a.scan_all(&key(10), Some(&key(150)), true, 13);
    assert_eq!(
        bounded_rev,
        all[10..150].iter().rev().cloned().collect::<Vec<_>>()
    );

    // An append recorded in the right chunk's dedup table, then the chunk moves to shard 2.
    let last = key(n - 1);
    a.write(
        &last,
        KvOp::Append { value: "+".into() },
        Some(("client-a", 1)),
    )
    .await;
    let mut b = Shard::new(2, false).await;
    a.apply(Command::Chunk(ChunkCommand::Out {
        id: right.id,
        to: ShardId(2),
        epoch: Epoch(2),
        now_ms: 6,
    }))
    .await;
    // Frozen: a write waits (is refused), a read waits too (the target may serve it soon).
    a.write(
        &last,
        KvOp::Put {
            value: "lost".into(),
        },
        None,
    )
    .await;
    assert!(
        matches!(
            a.get(&last),
            OwnedRead::Elsewhere(KvError::Unavailable { .. })
        ),
        "{:?}",
        a.get(&last)
    );
    let (held, export) = a.store.export_chunk(right.id).unwrap().unwrap();
    assert_eq!(export.kv.len() as u64, right.count);
    assert_eq!(export.dedup.len(), 1);
    b.apply(Command::Chunk(ChunkCommand::In {
        id: right.id,
        keyspace: EVENTS,
        lo: held.lo.clone(),
        hi: held.hi.clone(),
        from: ShardId(1),
        epoch: Epoch(2),
        kv: export.kv,
        dedup: export.dedup,
        dedup_horizon_ms: export.dedup_horizon_ms,
        version: held.version,
        now_ms: 7,
        staged: None,
        deleted: vec![],
    }))
    .await;
    // The target serves from its `In` (the source is frozen: no overlap), the write refused
    // while frozen never happened.
    assert_eq!(b.get(&last), OwnedRead::Value(Some(format!("v{}+", n - 1))));
    a.apply(Command::Chunk(ChunkCommand::Done {
        id: right.id,
        epoch: Epoch(2),
    }))
    .await;
    assert_eq!(a.get(&last), OwnedRead::NotOwned);
    assert_eq!(a.chunks().len(), 1);
    // The retry of the append at the new owner is answered from the record, not applied.
    b.write(
        &last,
        KvOp::Append { value: "+".into() },
        Some(("client-a", 1)),
    )
    .await;
    assert_eq!(b.get(&last), OwnedRead::Value(Some(format!("v{}+", n - 1))));
    let moved = b.chunks();
    assert_eq!((moved.len(), moved[0].count), (1, right.count));
    // The version goes on from the source's: one more for the move.
    assert_eq!(moved[0].version, held.version + 1, "a move is a change");
    // A page is bounded by bytes too: it ends with the item that reaches the bound.
    let scan = |max_bytes| {
        b.store
            .scan_range(
                EVENTS,
                &ScanRange {
                    start: split_at.clone(),
                    end: None,
                    reverse: false,
                    limit: 1000,
                    max_bytes,
                },
            )
            .unwrap()
            .unwrap()
    };
    let whole = scan(1 << 30);
    let item = |i: usize| (whole.items[i].0.len() + whole.items[i].1.len()) as u64;
    let page = scan(item(0) + item(1) - 1);
    assert_eq!(
        page.items,
        whole.items[..2].to_vec(),
        "two items reach the bound"
    );
    assert_eq!(page.resume, Some(format!("{}\0", whole.items[1].0)));
    let page = scan(item(0) + item(1));
    assert_eq!(
        page.items.len(),
        2,
        "the item reaching the bound ends the page"
    );
    // Each shard's scan covers what it holds and says where the rest goes on.
    let page = a
        .store
        .scan_range(
            EVENTS,
            &ScanRange {
                start: String::new(),
                end: None,
                reverse: false,
                limit: 1000,
                max_bytes: 1 << 30,
            },
        )
        .unwrap()
        .unwrap();
    assert_eq!(page.items.len() as u64, n as u64 - right.count);
    assert_eq!(page.resume.as_deref(), Some(split_at.as_str()));
    assert_eq!(
        b.scan_all(&split_at, None, false, 10),
        all[all.len() - right.count as usize..].to_vec()
    );
}

#[tokio::test]
async fn merged_neighbours_keep_keys_counts_and_dedup_records() {
    let mut a = Shard::new(1, true).await;
    a.create_events().await;
    for i in 0..100 {
        a.write(&key(i), KvOp::Put { value: "v".into() }, None)
            .await;
    }
    let whole = a.chunks()[0].clone();
    a.apply(Command::Chunk(ChunkCommand::Split {
        id: whole.id,
        at: key(50),
        now_ms: 1,
    }))
    .await;
    // One client's writes land in both halves: seq 1 on the left, seq 2 on the right.
    a.write(&key(10), KvOp::Append { value: "+".into() }, Some(("c", 1)))
        .await;
    a.write(&key(60), KvOp::Append { value: "+".into() }, Some(("c", 2)))
        .await;
    let two = a.chunks();
    assert_eq!(two.len(), 2);
    let right = two.iter().find(|c| c.min == key(50)).unwrap().id;
    // Not neighbours the other way round: refused, nothing changes.
    a.apply(Command::Chunk(ChunkCommand::Merge {
        left: right,
        right: whole.id,
        now_ms: 2,
    }))
    .await;
    assert_eq!(a.chunks().len(), 2);
    a.apply(Command::Chunk(ChunkCommand::Merge {
        left: whole.id,
        right,
        now_ms: 3,
    }))
    .await;
    let one = a.chunks();
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!((one[0].min.as_str(), one[0].max.as_deref()), ("", None));
    assert_eq!(one[0].count, 100);
    assert_eq!(a.scan_all("", None, false, 30).len(), 100);
    // The right half's record (seq 2) survives: its retry is answered, not applied again.
    a.write(&key(60), KvOp::Append { value: "+".into() }, Some(("c", 2)))
        .await;
    assert_eq!(a.get(&key(60)), OwnedRead::Value(Some("v+".into())));
    // The older seq 1 is now refused as stale, never applied twice.
    a.write(&key(10), KvOp::Append { value: "+".into() }, Some(("c", 1)))
        .await;
    assert_eq!(a.get(&key(10)), OwnedRead::Value(Some("v+".into())));
}

/// A chunk copied while it serves: pieces staged at the target (not served there), writes
/// during the copy sent as the tail of its `In`, which the target serves from at once. What
/// an abandoned copy left in the bounds is gone; a `Refuse` before the `In` makes the `In`
/// refused for good, one after it changes nothing; a copy over bounds a shard holds is refused.
#[tokio::test]
async fn a_chunk_copied_while_it_serves_arrives_exact() {
    let mut a = Shard::new(1, true).await;
    a.create_events().await;
    let n = 300;
    for i in 0..n {
        a.write(
            &key(i),
            KvOp::Put {
                value: format!("v{i}"),
            },
            None,
        )
        .await;
    }
    a.write(&key(9), KvOp::Append { value: "+".into() }, Some(("c", 1)))
        .await;
    let chunk = a.chunks()[0].clone();
    let id = chunk.id;
    let unit_here = a.store.descriptor().chunks.owned[&id].unit;
    let stage = |copy: u64, part: u32, kv: Vec<(String, String)>, deleted: Vec<String>| {
        Command::Chunk(ChunkCommand::Stage {
            id,
            keyspace: EVENTS,
            lo: String::new(),
            hi: None,
            from: ShardId(1),
            epoch: Epoch(2),
            copy,
            part,
            overwrite: part > 0,
            kv,
            deleted,
        })
    };

    // An earlier copy that was given up left a key behind in the target's bounds.
    let mut b = Shard::new(2, false).await;
    let stale = "2026-12-01T99999".to_string();
    b.apply(stage(111, 0, vec![(stale.clone(), "stale".into())], vec![]))
        .await;
    assert_eq!(b.get(&stale), OwnedRead::NotOwned, "staged is not served");

    // The copy: pieces of ~1 KiB while the source keeps taking writes.
    let unit = CopyUnit::Chunk {
        id,
        keyspace: EVENTS,
        lo: String::new(),
        hi: None,
    };
    let writes = a.store.start_copy(&unit).expect("not copied yet");
    let mut cursor: Option<Vec<u8>> = None;
    let mut parts = 0;
    loop {
        let (piece, next) = a.store.copy_piece(&unit, cursor.as_deref(), 1024).unwrap();
        let (kv, deleted) = piece.into_chunk_parts();
        b.apply(stage(222, parts, kv, deleted)).await;
        parts += 1;
        if parts == 2 {
            // Written during the copy: a change, a delete, a new key.
            a.write(
                &key(5),
                KvOp::Put {
                    value: "new5".into(),
                },
                None,
            )
            .await;
            a.write(&key(7), KvOp::Delete, None).await;
            a.write(
                &key(400),
                KvOp::Put {
                    value: "v400".into(),
                },
                None,
            )
            .await;
        }
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert!(parts > 5, "the copy went in pieces: {parts}");
    assert!(b.chunks().is_empty(), "a staged copy is not held");
    assert_eq!(b.get(&key(1)), OwnedRead::NotOwned);

    // Frozen, then the rest in the `In`.
    a.apply(Command::Chunk(ChunkCommand::Out {
        id,
        to: ShardId(2),
        epoch: Epoch(2),
        now_ms: 1,
    }))
    .await;
    let keys = writes.take().unwrap();
    assert_eq!(
        keys.len(),
        3,
        "the three writes during the copy are recorded"
    );
    let (tail, used) = a.store.read_piece(&unit, &keys, 1 << 20).unwrap();
    assert_eq!(used, 3);
    drop(writes);
    let (kv, deleted) = tail.into_chunk_parts();
    assert_eq!(deleted, vec![key(7)]);
    let (dedup, dedup_horizon_ms) = a.store.export_dedup(unit_here).unwrap();
    let in_step = |staged, kv: Vec<(String, String)>, deleted: Vec<String>| {
        Command::Chunk(ChunkCommand::In {
            id,
            keyspace: EVENTS,
            lo: String::new(),
            hi: None,
            from: ShardId(1),
            epoch: Epoch(2),
            kv,
            dedup: dedup.clone(),
            dedup_horizon_ms,
            version: chunk.version,
            now_ms: 2,
            staged,
            deleted,
        })
    };
    // An `In` naming fewer pieces than staged is refused (the copy is not the one staged).
    b.apply(in_step(
        Some(Staged {
            copy: 222,
            parts: parts - 1,
        }),
        kv.clone(),
        deleted.clone(),
    ))
    .await;
    assert!(b.chunks().is_empty());
    b.apply(in_step(Some(Staged { copy: 222, parts }), kv, deleted))
        .await;

    // The target serves exactly the source's chunk as frozen, nothing of the stale copy.
    let mut want: Vec<String> = (0..n).filter(|i| *i != 7).map(key).collect();
    want.push(key(400));
    assert_eq!(b.scan_all("", None, false, 37), want);
    assert_eq!(b.get(&key(5)), OwnedRead::Value(Some("new5".into())));
    assert_eq!(b.get(&key(7)), OwnedRead::Value(None));
    assert_eq!(b.get(&key(9)), OwnedRead::Value(Some("v9+".into())));
    assert_eq!(
        b.get(&stale),
        OwnedRead::Value(None),
        "the stale key is gone"
    );
    let held = b.chunks();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].count, want.len() as u64, "counts follow the pieces");
    assert_eq!(held[0].version, chunk.version + 1);
    // A refuse after the `In` changes nothing (the source is told already_received).
    b.apply(Command::Chunk(ChunkCommand::Refuse {
        id,
        from: ShardId(1),
        epoch: Epoch(2),
    }))
    .await;
    assert_eq!(b.get(&key(5)), OwnedRead::Value(Some("new5".into())));
    // The append's retry at the new owner is answered from its record.
    b.write(&key(9), KvOp::Append { value: "+".into() }, Some(("c", 1)))
        .await;
    assert_eq!(b.get(&key(9)), OwnedRead::Value(Some("v9+".into())));
    a.apply(Command::Chunk(ChunkCommand::Done {
        id,
        epoch: Epoch(2),
    }))
    .await;
    assert_eq!(a.get(&key(5)), OwnedRead::NotOwned);

    // A copy over bounds a shard holds is refused: what it holds stays.
    b.apply(Command::Chunk(ChunkCommand::Stage {
        id: unikv_types::ChunkId(999),
        keyspace: EVENTS,
        lo: key(100),
        hi: Some(key(200)),
        from: ShardId(3),
        epoch: Epoch(5),
        copy: 7,
        part: 0,
        overwrite: false,
        kv: vec![],
        deleted: vec![],
    }))
    .await;
    assert_eq!(b.scan_all("", None, false, 100), want);
    assert_eq!(b.chunks().len(), 1);

    // Elsewhere: a `Refuse` before the `In` drops the staged copy and refuses that `In`.
    let mut c = Shard::new(3, false).await;
    c.apply(stage(333, 0, vec![(key(1), "v1".into())], vec![]))
        .await;
    c.apply(Command::Chunk(ChunkCommand::Refuse {
        id,
        from: ShardId(1),
        epoch: Epoch(2),
    }))
    .await;
    assert!(c.store.descriptor().chunks.owned.is_empty());
    c.apply(in_step(None, vec![(key(1), "v1".into())], vec![]))
        .await;
    assert!(c.chunks().is_empty(), "refused for good");
    assert_eq!(c.get(&key(1)), OwnedRead::NotOwned);
}
