//! Bounded at-most-once state on a real RocksDB: records expire a window after a client's last
//! write (by the clock the log carries), a late retry of a forgotten write is refused
//! (`session_expired`) and never applied twice, the horizon moves with its slot, replicas that
//! group entries differently keep identical state, and a million writes from many clients keep
//! the records within the documented bound.

use openraft::entry::RaftEntry;
use openraft::testing::log_id;
use openraft::EntryPayload;
use rocksdb::IteratorMode;
use unikv_storage::apply::apply_entries_cached;
use unikv_storage::apply_cache::{ApplyCache, MAX_DEDUP_CACHE_BYTES};
use unikv_storage::db::CF_DEDUP;
use unikv_storage::dedup::{stored_counts, GC_STEP_MS};
use unikv_storage::meta::SmMeta;
use unikv_storage::moves::export_slot;
use unikv_storage::raft_types::Entry;
use unikv_storage::{
    Command, CommandResult, Db, DedupRecord, LeaderClock, MoveCommand, StateMachine, TypeConfig,
};
use unikv_types::{ClientSeq, Epoch, KvError, KvOp, KvReply, NodeId, ShardId, SlotRange};

const WINDOW_MS: u64 = 10_000;
const T0: u64 = 1_800_000_000_000;

struct Shard {
    _dir: tempfile::TempDir,
    db: Db,
    meta: SmMeta,
    cache: ApplyCache,
    next: u64,
}

impl Shard {
    fn new(id: u64, owned: Option<(u16, u16)>) -> Self {
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
        let ranges = owned
            .map(|(lo, hi)| vec![SlotRange(lo, hi)])
            .unwrap_or_default();
        let r = s.apply(vec![Command::Bootstrap {
            shard: ShardId(id),
            ranges,
            epoch: Epoch(1),
        }]);
        assert_eq!(r, vec![Ok(KvReply::Written)]);
        s
    }

    /// Applies `cmds` as one group.
    fn apply(&mut self, cmds: Vec<Command>) -> Vec<CommandResult> {
        let entries: Vec<Entry> = cmds
            .into_iter()
            .map(|c| {
                self.next += 1;
                Entry::new(
                    log_id::<TypeConfig>(1, NodeId(1), self.next),
                    EntryPayload::Normal(c),
                )
            })
            .collect();
        apply_entries_cached(&self.db, &mut self.meta, &mut self.cache, &entries).unwrap()
    }

    fn one(&mut self, cmd: Command) -> CommandResult {
        self.apply(vec![cmd]).remove(0)
    }

    fn get(&self, slot: u16, key: &str) -> Option<String> {
        self.db
            .raw()
            .get_cf(
                self.db.cf(unikv_storage::db::CF_KV),
                unikv_storage::db::kv_key(slot, key.as_bytes()),
            )
            .unwrap()
            .map(|v| String::from_utf8(v).unwrap())
    }

    /// Every pair of the `dedup` family (records, horizons, expiry index).
    fn dedup_family(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.db
            .raw()
            .iterator_cf(self.db.cf(CF_DEDUP), IteratorMode::Start)
            .map(|r| {
                let (k, v) = r.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect()
    }
}

/// A write proposed at `now_ms` by a leader with the test's window.
fn write(slot: u16, key: &str, op: KvOp, client: Option<ClientSeq>, now_ms: u64) -> Command {
    Command::Kv {
        slot,
        key: key.into(),
        op,
        client,
        max_value_bytes: None,
        clock: Some(LeaderClock {
            now_ms,
            dedup_window_ms: WINDOW_MS,
        }),
        keyspace: Default::default(),
        bucket: None,
        range: false,
    }
}

fn append(v: &str) -> KvOp {
    KvOp::Append { value: v.into() }
}

fn put(v: &str) -> KvOp {
    KvOp::Put { value: v.into() }
}

fn client(id: &str, seq: u64, ts: u64) -> Option<ClientSeq> {
    Some(ClientSeq::new(id, seq).stamped(ts))
}

#[test]
fn a_late_retry_of_a_forgotten_write_is_refused_never_applied_twice() {
    let mut sh = Shard::new(1, Some((0, 99)));
    let first = write(7, "k", append("x"), client("c1", 1, T0), T0);
    assert_eq!(
        sh.one(first.clone()),
        Ok(KvReply::Appended { previous: None })
    );
    // Within the window a retry gets the stored reply.
    let retry_soon = write(7, "k", append("x"), client("c1", 1, T0), T0 + 5_000);
    assert_eq!(sh.one(retry_soon), Ok(KvReply::Appended { previous: None }));
    // Another client keeps the clock moving, past the window.
    let later = T0 + WINDOW_MS + 2 * GC_STEP_MS;
    assert_eq!(
        sh.one(write(8, "o", put("1"), client("c2", 1, later), later)),
        Ok(KvReply::Written)
    );
    assert_eq!(
        stored_counts(&sh.db).unwrap().0,
        1,
        "only c2's record is left"
    );
    // The same request again, as a client would resend it: refused, not applied.
    let late = write(7, "k", append("x"), client("c1", 1, T0), later + 1);
    match sh.one(late) {
        Err(KvError::SessionExpired {
            client_id,
            seq,
            ts_ms,
            forgotten_through_ms,
        }) => {
            assert_eq!((client_id.as_str(), seq, ts_ms), ("c1", 1, T0));
            assert!(forgotten_through_ms >= T0);
        }
        other => panic!("expected session_expired, got {other:?}"),
    }
    assert_eq!(sh.get(7, "k").as_deref(), Some("x"), "applied once");
    // An older write of a client with no record is refused too.
    assert!(matches!(
        sh.one(write(
            7,
            "k",
            append("y"),
            client("c9", 4, T0 - 1),
            later + 2
        )),
        Err(KvError::SessionExpired { .. })
    ));
    // New requests, of the same client or a new one, stamped now, are applied.
    assert_eq!(
        sh.one(write(
            7,
            "k",
            append("z"),
            client("c1", 2, later + 3),
            later + 3
        )),
        Ok(KvReply::Appended {
            previous: Some("x".into())
        })
    );
    assert_eq!(
        sh.one(write(
            7,
            "n",
            put("1"),
            client("c3", 1, later + 4),
            later + 4
        )),
        Ok(KvReply::Written)
    );
    // A caller's stamp from far in the future is refused (it would poison the horizon).
    assert!(matches!(
        sh.one(write(7, "k", put("f"), client("c4", 1, later + 3_600_000), later + 5)),
        Err(KvError::BadRequest { code, .. }) if code == "bad_timestamp"
    ));
    assert_eq!(sh.get(7, "k").as_deref(), Some("xz"));
}

#[test]
fn the_clock_never_goes_back_and_old_entries_expire_nothing() {
    let mut sh = Shard::new(1, Some((0, 99)));
    assert_eq!(
        sh.one(write(1, "a", put("1"), client("c", 1, T0), T0)),
        Ok(KvReply::Written)
    );
    // A new leader whose clock is behind: the shard clock stays where it was.
    let behind = write(1, "b", put("1"), client("d", 1, T0 - 60_000), T0 - 60_000);
    assert_eq!(sh.one(behind), Ok(KvReply::Written));
    assert_eq!(sh.meta.clock_ms, T0);
    // An entry of an older version (no clock) neither moves the clock nor expires anything.
    let legacy = Command::Kv {
        slot: 1,
        key: "c".into(),
        op: put("1"),
        client: Some(ClientSeq::new("e", 1)),
        max_value_bytes: None,
        clock: None,
        keyspace: Default::default(),
        bucket: None,
        range: false,
    };
    assert_eq!(sh.one(legacy), Ok(KvReply::Written));
    assert_eq!(sh.meta.clock_ms, T0);
    assert_eq!(stored_counts(&sh.db).unwrap().0, 3);
    // The clock is part of the applied state, so it survives a restart.
    let reloaded = SmMeta::load(&sh.db, ShardId(1)).unwrap();
    assert_eq!(reloaded.clock_ms, T0);
}

#[test]
fn the_horizon_moves_with_its_slot() {
    let mut src = Shard::new(1, Some((0, 99)));
    let mut dst = Shard::new(2, None);
    assert_eq!(
        src.one(write(5, "k", append("a"), client("c1", 1, T0), T0)),
        Ok(KvReply::Appended { previous: None })
    );
    let later = T0 + WINDOW_MS + 2 * GC_STEP_MS;
    assert_eq!(
        src.one(write(5, "j", put("1"), client("c2", 1, later), later)),
        Ok(KvReply::Written)
    );
    assert_eq!(
        src.one(Command::Move(MoveCommand::Out {
            slot: 5,
            to: ShardId(2),
            epoch: Epoch(2),
            now_ms: None,
        })),
        Ok(KvReply::Written)
    );
    let export = export_slot(&src.db, 5).unwrap();
    assert_eq!(
        export.dedup.len(),
        1,
        "c1's record was forgotten, c2's kept"
    );
    assert!(export.dedup_horizon_ms >= T0);
    let epoch = Epoch(2);
    assert_eq!(
        dst.one(Command::Move(MoveCommand::In {
            slot: 5,
            from: ShardId(1),
            epoch,
            kv: export.kv,
            dedup: export.dedup,
            dedup_horizon_ms: export.dedup_horizon_ms,
            collections_kv: Vec::new(),
            staged: None,
            deleted: Vec::new(),
        })),
        Ok(KvReply::Written)
    );
    // c1's late retry reaches the new owner: refused there too.
    assert!(matches!(
        dst.one(write(5, "k", append("a"), client("c1", 1, T0), later + 10)),
        Err(KvError::SessionExpired { .. })
    ));
    // c2's retry is answered from its moved record.
    assert_eq!(
        dst.one(write(5, "j", put("1"), client("c2", 1, later), later + 11)),
        Ok(KvReply::Written)
    );
    assert_eq!(dst.get(5, "k").as_deref(), Some("a"));
    // The moved record expires at the target in its turn.
    let much_later = later + 2 * WINDOW_MS;
    assert!(matches!(
        dst.one(write(
            6,
            "z",
            put("1"),
            client("c5", 1, much_later),
            much_later
        )),
        Err(KvError::WrongShard { .. })
    ));
    let records: Vec<_> = export_slot(&dst.db, 5).unwrap().dedup;
    assert!(records.is_empty(), "left: {records:?}");
}

#[test]
fn replicas_grouping_entries_differently_keep_identical_state() {
    // The same log, applied one entry at a time and in groups of 37: expiry depends on the
    // entries only, so the two end with the same bytes and gave the same answers.
    let mut cmds: Vec<Command> = Vec::new();
    let mut now = T0;
    for i in 0..3_000usize {
        now += 17;
        // Every 10th entry resends an earlier request as it was: from 100 entries back (within
        // the window: answered from the record) or 1,000 back (past it: refused).
        if i % 10 == 9 && i >= 1_000 {
            let back = if i % 20 == 9 { 100 } else { 1_000 };
            let Command::Kv {
                slot,
                key,
                op,
                client,
                ..
            } = cmds[i - back].clone()
            else {
                unreachable!()
            };
            cmds.push(Command::Kv {
                slot,
                key,
                op,
                client,
                max_value_bytes: None,
                clock: Some(LeaderClock {
                    now_ms: now,
                    dedup_window_ms: WINDOW_MS,
                }),
                keyspace: Default::default(),
                bucket: None,
                range: false,
            });
            continue;
        }
        let c = format!("c{}", i % 500);
        cmds.push(write(
            (i % 7) as u16,
            &format!("k{}", i % 11),
            append("v"),
            client(&c, i as u64, now),
            now,
        ));
    }
    let mut a = Shard::new(1, Some((0, 99)));
    let mut b = Shard::new(1, Some((0, 99)));
    let ra: Vec<_> = cmds.iter().flat_map(|c| a.apply(vec![c.clone()])).collect();
    let rb: Vec<_> = cmds.chunks(37).flat_map(|g| b.apply(g.to_vec())).collect();
    assert_eq!(ra, rb);
    let expired = ra
        .iter()
        .filter(|r| matches!(r, Err(KvError::SessionExpired { .. })))
        .count();
    assert!(expired > 50, "{expired} refused as expired");
    assert_eq!(a.dedup_family(), b.dedup_family());
    assert_eq!(a.meta.clock_ms, b.meta.clock_ms);
}

#[test]
fn a_long_previous_value_is_not_kept_in_the_record() {
    let mut sh = Shard::new(1, Some((0, 99)));
    let long = "p".repeat(10_000);
    assert_eq!(
        sh.one(write(3, "k", put(&long), None, T0)),
        Ok(KvReply::Written)
    );
    let req = write(3, "k", append("x"), client("c", 1, T0), T0 + 1);
    assert_eq!(
        sh.one(req.clone()),
        Ok(KvReply::Appended {
            previous: Some(long.clone())
        })
    );
    assert_eq!(
        sh.one(req),
        Ok(KvReply::RetriedAppend {
            previous_bytes: 10_000
        })
    );
    let biggest = sh
        .dedup_family()
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .max()
        .unwrap();
    assert!(biggest < 200, "a dedup pair of {biggest} bytes");
    assert_eq!(sh.get(3, "k").map(|v| v.len()), Some(10_001));
}

#[test]
fn records_of_an_older_version_are_indexed_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(&dir.path().join("db")).unwrap();
        // A record as versions before expiry wrote it: no age, no stamp.
        #[derive(serde::Serialize)]
        struct Old {
            seq: u64,
            reply: KvReply,
            request: Option<u64>,
        }
        let old = rmp_serde::to_vec_named(&Old {
            seq: 3,
            reply: KvReply::Written,
            request: None,
        })
        .unwrap();
        let rec: DedupRecord = rmp_serde::from_slice(&old).unwrap();
        assert_eq!((rec.seq, rec.at_ms), (3, 0));
        let mut b = rocksdb::WriteBatch::default();
        b.put_cf(
            db.cf(CF_DEDUP),
            unikv_storage::db::dedup_key(4, "old-client"),
            &old,
        );
        db.write_sync(b).unwrap();
    }
    let db = Db::open(&dir.path().join("db")).unwrap();
    let sm = StateMachine::open(db.clone(), &dir.path().join("snapshots"), ShardId(1)).unwrap();
    assert_eq!(stored_counts(&db).unwrap(), (1, 1), "indexed at open");
    drop(sm);
    let mut sh = Shard {
        _dir: dir,
        meta: SmMeta::load(&db, ShardId(1)).unwrap(),
        db,
        cache: ApplyCache::default(),
        next: 1,
    };
    sh.one(Command::Bootstrap {
        shard: ShardId(1),
        ranges: vec![SlotRange(0, 99)],
        epoch: Epoch(1),
    })
    .unwrap();
    sh.one(write(9, "a", put("1"), None, T0)).unwrap();
    assert_eq!(
        stored_counts(&sh.db).unwrap(),
        (0, 0),
        "expired at the first clock"
    );
}

/// The bound: after a million writes from 20,000 client ids over many slots, the records kept
/// are those of the (client, slot) pairs that wrote within the last window plus one expiry
/// step, the expiry index holds no more, and the apply cache stays under its byte bound.
#[test]
fn a_million_writes_from_many_clients_keep_dedup_state_bounded() {
    const WRITES: u64 = 1_000_000;
    const CLIENTS: u64 = 20_000;
    const GROUP: usize = 500;
    // One write per millisecond of shard clock: a window holds WINDOW_MS writes.
    let bound = (WINDOW_MS + GC_STEP_MS) as usize;
    let mut sh = Shard::new(1, Some((0, 16_383)));
    let mut seqs = vec![0u64; CLIENTS as usize];
    let mut most = (0u64, 0u64);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut group = Vec::with_capacity(GROUP);
    for i in 0..WRITES {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let c = rng % CLIENTS;
        seqs[c as usize] += 1;
        let now = T0 + i;
        let slot = (rng >> 20) as u16 % 16_384;
        group.push(write(
            slot,
            &format!("k{}", rng >> 40),
            put("v"),
            client(&format!("client-{c:05}"), seqs[c as usize], now),
            now,
        ));
        if group.len() == GROUP {
            for r in sh.apply(std::mem::take(&mut group)) {
                assert_eq!(r, Ok(KvReply::Written));
            }
            assert!(sh.cache.dedup_bytes() <= MAX_DEDUP_CACHE_BYTES);
            if (i + 1) % 50_000 == 0 {
                let (records, index) = stored_counts(&sh.db).unwrap();
                most = (most.0.max(records), most.1.max(index));
                assert!(
                    records as usize <= bound && index as usize <= bound,
                    "after {} writes: {records} records, {index} index entries (bound {bound})",
                    i + 1
                );
            }
        }
    }
    let (records, index) = stored_counts(&sh.db).unwrap();
    eprintln!(
        "{WRITES} writes from {CLIENTS} clients: at most {} records and {} index entries kept \
         (bound {bound}); now {records} and {index}; cache {} bytes",
        most.0,
        most.1,
        sh.cache.dedup_bytes()
    );
    // The records of the last window really are there (nothing expired early).
    assert!(records as usize >= WINDOW_MS as usize * 9 / 10, "{records}");
}
