//! The slot-move steps on two real RocksDBs (a source and a target shard): ownership, write
//! freeze, data and dedup hand-off, forwarding notes, abort, idempotency, per-slot statistics.

use openraft::entry::RaftEntry;
use openraft::testing::log_id;
use openraft::EntryPayload;
use unikv_storage::apply::apply_entries_cached;
use unikv_storage::apply_cache::ApplyCache;
use unikv_storage::db::CF_STATS;
use unikv_storage::meta::SmMeta;
use unikv_storage::moves::{export_slot, slot_stats, SlotExport, ALREADY_RECEIVED};
use unikv_storage::raft_types::Entry;
use unikv_storage::records::SlotStats;
use unikv_storage::{Command, CommandResult, Db, MoveCommand, RegistryCommand, TypeConfig};
use unikv_types::{ClientSeq, Epoch, KvError, KvOp, KvReply, NodeId, ShardId, SlotRange};

struct Shard {
    _dir: tempfile::TempDir,
    db: Db,
    meta: SmMeta,
    /// One cache for the shard's whole life, as in the state machine: every step below also
    /// checks that the cached statistics and dedup records stay true across moves.
    cache: ApplyCache,
    next: u64,
}

impl Shard {
    /// A fresh shard that has not claimed anything yet.
    fn unclaimed(id: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let meta = SmMeta::load(&db, ShardId(id)).unwrap();
        Shard {
            _dir: dir,
            db,
            meta,
            cache: ApplyCache::default(),
            next: 1,
        }
    }

    fn new(id: u64, owned: Option<(u16, u16)>) -> Self {
        let mut s = Shard::unclaimed(id);
        let ranges = owned
            .map(|(lo, hi)| vec![SlotRange(lo, hi)])
            .unwrap_or_default();
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

    fn mv(&mut self, m: MoveCommand) -> CommandResult {
        self.apply(Command::Move(m))
    }

    fn kv(&mut self, slot: u16, key: &str, op: KvOp, client: Option<(&str, u64)>) -> CommandResult {
        self.apply(Command::Kv {
            slot,
            key: key.into(),
            op,
            client: client.map(|(c, s)| ClientSeq::new(c, s)),
            max_value_bytes: None,
            clock: None,
            keyspace: Default::default(),
            bucket: None,
            range: false,
        })
    }

    fn stats(&mut self, slot: u16) -> (u64, u64) {
        let stored = slot_stats(&self.db)
            .unwrap()
            .into_iter()
            .find(|(s, _)| *s == slot)
            .map(|(_, st)| (st.keys, st.bytes))
            .unwrap_or((0, 0));
        let cached = self.cache.stats(&self.db, slot).unwrap();
        // What RocksDB holds: the truth both in-memory views (apply's cache, and the
        // readers' `stats_view` behind `slot_stats`) must follow.
        let raw = self
            .db
            .raw()
            .get_cf(self.db.cf(CF_STATS), slot.to_be_bytes())
            .unwrap()
            .map(|v| SlotStats::decode(&v))
            .unwrap_or_default();
        assert_eq!(
            (raw.keys, raw.bytes),
            stored,
            "statistics of slot {slot} read by slot_stats differ from RocksDB"
        );
        assert_eq!(
            (cached.keys, cached.bytes),
            stored,
            "cached statistics of slot {slot} differ from RocksDB"
        );
        stored
    }
}

fn put(v: &str) -> KvOp {
    KvOp::Put { value: v.into() }
}

#[test]
fn a_slot_moves_with_its_data_and_dedup_table() {
    let mut src = Shard::new(1, Some((0, 99)));
    let mut dst = Shard::new(2, None);
    assert_eq!(
        src.kv(5, "a", put("1"), Some(("c", 1))),
        Ok(KvReply::Written)
    );
    assert_eq!(
        src.kv(5, "b", KvOp::Append { value: "xy".into() }, Some(("c", 2))),
        Ok(KvReply::Appended { previous: None })
    );
    assert_eq!(src.kv(6, "other", put("o"), None), Ok(KvReply::Written));
    assert_eq!(src.stats(5), (2, 5));

    // 1. Freeze: reads and writes of slot 5 wait, other slots go on.
    let out = MoveCommand::Out {
        slot: 5,
        to: ShardId(2),
        epoch: Epoch(2),
        now_ms: None,
    };
    assert_eq!(src.mv(out.clone()), Ok(KvReply::Written));
    assert_eq!(src.mv(out), Ok(KvReply::Written), "idempotent");
    assert!(matches!(
        src.kv(5, "a", put("2"), None),
        Err(KvError::Unavailable { .. })
    ));
    assert_eq!(src.kv(6, "other", put("o2"), None), Ok(KvReply::Written));

    // 2. The target installs the data and serves it.
    let SlotExport { kv, dedup, .. } = export_slot(&src.db, 5).unwrap();
    assert_eq!(kv.len(), 2);
    assert_eq!(dedup.len(), 1);
    let inn = whole_in(5, ShardId(1), Epoch(2), kv, dedup);
    assert_eq!(dst.mv(inn.clone()), Ok(KvReply::Written));
    assert_eq!(dst.mv(inn.clone()), Ok(KvReply::Written), "idempotent");
    assert_eq!(dst.meta.descriptor.owns(5), Some(Epoch(2)));
    assert_eq!(dst.stats(5), (2, 5));
    // From here the source may only finish: the target refuses to refuse.
    let refuse = MoveCommand::Refuse {
        slot: 5,
        from: ShardId(1),
        epoch: Epoch(2),
    };
    match dst.mv(refuse) {
        Err(KvError::BadRequest { code, .. }) => assert_eq!(code, ALREADY_RECEIVED),
        other => panic!("expected already_received, got {other:?}"),
    }

    // 3. The source lets go: data gone, forwarding note in place.
    let done = MoveCommand::Done {
        slot: 5,
        epoch: Epoch(2),
    };
    assert_eq!(src.mv(done.clone()), Ok(KvReply::Written));
    assert_eq!(src.mv(done), Ok(KvReply::Written), "idempotent");
    assert_eq!(export_slot(&src.db, 5).unwrap().kv.len(), 0);
    assert_eq!(src.stats(5), (0, 0));
    assert_eq!(src.meta.descriptor.owns(5), None);
    assert_eq!(src.meta.descriptor.slot_count(), 99);
    match src.kv(5, "a", put("4"), None) {
        Err(KvError::WrongShard { owner, epoch, .. }) => {
            assert_eq!(owner, Some(ShardId(2)));
            assert_eq!(epoch, Some(Epoch(2)));
        }
        other => panic!("expected WrongShard, got {other:?}"),
    }
    // An abort after the hand-off is refused.
    assert!(src
        .mv(MoveCommand::Abort {
            slot: 5,
            epoch: Epoch(2)
        })
        .is_err());

    // 4. The dedup table came along: a retry is not applied twice.
    assert_eq!(
        dst.kv(5, "b", KvOp::Append { value: "xy".into() }, Some(("c", 2))),
        Ok(KvReply::Appended { previous: None }),
        "the stored reply, not a second append"
    );
    assert_eq!(
        dst.kv(5, "b", KvOp::Append { value: "z".into() }, Some(("c", 3))),
        Ok(KvReply::Appended {
            previous: Some("xy".into())
        })
    );
    // A stale copy of the move-in can no longer change anything.
    let (kv, dedup) = (vec![("a".to_string(), "old".to_string())], vec![]);
    assert_eq!(
        dst.mv(whole_in(5, ShardId(1), Epoch(2), kv, dedup)),
        Ok(KvReply::Written)
    );
    assert_eq!(
        export_slot(&dst.db, 5)
            .unwrap()
            .kv
            .iter()
            .find(|(k, _)| k == "a")
            .unwrap()
            .1,
        "1"
    );
}

#[test]
fn an_aborted_move_leaves_the_source_serving_and_the_target_empty() {
    let mut src = Shard::new(1, Some((0, 99)));
    let mut dst = Shard::new(2, None);
    assert_eq!(src.kv(7, "k", put("v"), None), Ok(KvReply::Written));
    assert_eq!(
        src.mv(MoveCommand::Out {
            slot: 7,
            to: ShardId(2),
            epoch: Epoch(2),
            now_ms: None,
        }),
        Ok(KvReply::Written)
    );
    // A copy staged at the target, then the source gives the hand-off up: the target first
    // refuses it for good, dropping what it staged.
    let SlotExport { kv, dedup, .. } = export_slot(&src.db, 7).unwrap();
    let stage = MoveCommand::Stage {
        slot: 7,
        from: ShardId(1),
        epoch: Epoch(2),
        copy: 42,
        part: 0,
        overwrite: false,
        kv: kv.clone(),
        collections_kv: Vec::new(),
        deleted: Vec::new(),
    };
    assert_eq!(dst.mv(stage.clone()), Ok(KvReply::Written));
    let refuse = MoveCommand::Refuse {
        slot: 7,
        from: ShardId(1),
        epoch: Epoch(2),
    };
    assert_eq!(dst.mv(refuse.clone()), Ok(KvReply::Written));
    assert_eq!(dst.mv(refuse), Ok(KvReply::Written), "idempotent");
    assert!(
        export_slot(&dst.db, 7).unwrap().kv.is_empty(),
        "staged copy dropped"
    );
    assert_eq!(dst.stats(7), (0, 0));
    // The `In` (or a piece) of that hand-off arriving late is refused for good.
    let inn = whole_in(7, ShardId(1), Epoch(2), kv, dedup);
    assert!(dst.mv(inn.clone()).is_err(), "a refused hand-off's In");
    assert!(dst.mv(stage).is_err(), "a refused hand-off's piece");
    assert_eq!(dst.meta.descriptor.owns(7), None);
    assert!(export_slot(&dst.db, 7).unwrap().kv.is_empty());
    assert_eq!(
        src.mv(MoveCommand::Abort {
            slot: 7,
            epoch: Epoch(2)
        }),
        Ok(KvReply::Written)
    );
    assert_eq!(
        src.kv(7, "k", put("v2"), None),
        Ok(KvReply::Written),
        "writes resume"
    );
    assert!(
        src.mv(MoveCommand::Done {
            slot: 7,
            epoch: Epoch(2)
        })
        .is_err(),
        "no hand-off after abort"
    );
    // The next attempt has a new epoch, which the target takes.
    let SlotExport { kv, dedup, .. } = export_slot(&src.db, 7).unwrap();
    assert_eq!(
        dst.mv(whole_in(7, ShardId(1), Epoch(3), kv, dedup)),
        Ok(KvReply::Written)
    );
    assert_eq!(dst.meta.descriptor.owns(7), Some(Epoch(3)));
    assert!(
        dst.meta.descriptor.refused.is_empty(),
        "the refusal is forgotten once served"
    );
}

/// The `In` of `slot` from shard `from`, sent whole.
fn whole_in(
    slot: u16,
    from: ShardId,
    epoch: Epoch,
    kv: Vec<(String, String)>,
    dedup: Vec<(String, unikv_storage::DedupRecord)>,
) -> MoveCommand {
    MoveCommand::In {
        slot,
        from,
        epoch,
        kv,
        dedup,
        dedup_horizon_ms: 0,
        collections_kv: Vec::new(),
        staged: None,
        deleted: Vec::new(),
    }
}

#[test]
fn refused_steps() {
    let mut src = Shard::new(1, Some((0, 9)));
    assert_eq!(src.meta.descriptor.state, unikv_types::ShardState::Active);
    assert_eq!(
        Shard::new(2, None).meta.descriptor.state,
        unikv_types::ShardState::Inactive
    );
    // Not owned.
    assert!(src
        .mv(MoveCommand::Out {
            slot: 50,
            to: ShardId(2),
            epoch: Epoch(2),
            now_ms: None,
        })
        .is_err());
    // Epoch not increasing.
    assert!(src
        .mv(MoveCommand::Out {
            slot: 1,
            to: ShardId(2),
            epoch: Epoch(1),
            now_ms: None,
        })
        .is_err());
    // To itself.
    assert!(src
        .mv(MoveCommand::Out {
            slot: 1,
            to: ShardId(1),
            epoch: Epoch(2),
            now_ms: None,
        })
        .is_err());
    // Already moving elsewhere.
    assert!(src
        .mv(MoveCommand::Out {
            slot: 1,
            to: ShardId(2),
            epoch: Epoch(2),
            now_ms: None,
        })
        .is_ok());
    assert!(src
        .mv(MoveCommand::Out {
            slot: 1,
            to: ShardId(3),
            epoch: Epoch(2),
            now_ms: None,
        })
        .is_err());
    // Receiving a slot owned here.
    let (kv, dedup) = (vec![], vec![]);
    assert!(src
        .mv(whole_in(2, ShardId(3), Epoch(2), kv, dedup))
        .is_err());
}

#[test]
fn an_activation_before_the_initial_claim_is_kept() {
    // `/addshard` can reach a fresh shard before its (empty) initial claim commits.
    let mut s = Shard::unclaimed(4);
    assert_eq!(
        s.apply(Command::Registry(RegistryCommand::SetState {
            state: unikv_types::ShardState::Active
        })),
        Ok(KvReply::Written)
    );
    let claim = Command::Bootstrap {
        shard: ShardId(4),
        ranges: vec![],
        epoch: Epoch(1),
    };
    assert_eq!(s.apply(claim), Ok(KvReply::Written));
    assert_eq!(s.meta.descriptor.state, unikv_types::ShardState::Active);
    assert!(s.meta.descriptor.initialised);
}

#[test]
fn slot_statistics_follow_puts_appends_and_deletes() {
    let mut s = Shard::new(1, Some((0, 16383)));
    assert_eq!(s.kv(3, "ab", put("1234"), None), Ok(KvReply::Written));
    assert_eq!(s.stats(3), (1, 6));
    assert_eq!(s.kv(3, "ab", put("12"), None), Ok(KvReply::Written));
    assert_eq!(s.stats(3), (1, 4));
    assert!(s
        .kv(3, "ab", KvOp::Append { value: "3".into() }, None)
        .is_ok());
    assert!(s
        .kv(3, "cd", KvOp::Append { value: "x".into() }, None)
        .is_ok());
    assert_eq!(s.stats(3), (2, 8));
    assert_eq!(
        s.kv(3, "ab", KvOp::Delete, None),
        Ok(KvReply::Deleted { existed: true })
    );
    assert_eq!(
        s.kv(3, "zz", KvOp::Delete, None),
        Ok(KvReply::Deleted { existed: false })
    );
    assert_eq!(s.stats(3), (1, 3));
}
