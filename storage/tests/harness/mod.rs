//! The storage tests' shard: a real RocksDB in a temp dir, its state machine metadata and
//! apply cache, and entries applied one at a time as a shard's Raft log would.
#![allow(dead_code)]

use openraft::entry::RaftEntry;
use openraft::testing::log_id;
use openraft::EntryPayload;
use unikv_storage::apply::apply_entries_cached;
use unikv_storage::apply_cache::ApplyCache;
use unikv_storage::db::CF_KV;
use unikv_storage::meta::SmMeta;
use unikv_storage::moves::slot_stats;
use unikv_storage::raft_types::Entry;
use unikv_storage::{Command, CommandResult, Db, LeaderClock, MoveCommand, TypeConfig};
use unikv_types::catalog::{CatalogChange, CatalogOp, CATALOG_KEY};
use unikv_types::{ClientSeq, Epoch, Keyspace, KvOp, KvReply, NodeId, ShardId, SlotRange};

pub struct Shard {
    _dir: tempfile::TempDir,
    pub db: Db,
    pub meta: SmMeta,
    pub cache: ApplyCache,
    next: u64,
}

pub const USERS: Keyspace = Keyspace(16);
pub const ORDERS: Keyspace = Keyspace(17);

impl Shard {
    pub fn new(id: u64) -> Self {
        Self::with_ranges(id, vec![SlotRange(0, 16383)])
    }

    pub fn with_ranges(id: u64, ranges: Vec<SlotRange>) -> Self {
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

    pub fn apply(&mut self, cmd: Command) -> CommandResult {
        let e = Entry::new(
            log_id::<TypeConfig>(1, NodeId(1), self.next),
            EntryPayload::Normal(cmd),
        );
        self.next += 1;
        apply_entries_cached(&self.db, &mut self.meta, &mut self.cache, &[e])
            .unwrap()
            .remove(0)
    }

    pub fn kv(
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

    pub fn get(&self, ks: Keyspace, key: &str) -> Option<String> {
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

    pub fn mv(&mut self, m: MoveCommand) -> CommandResult {
        self.apply(Command::Move(m))
    }

    /// Keys and bytes of `slot` as stored, checked against the apply cache's copy.
    pub fn slot_totals(&mut self, slot: u16) -> (u64, u64) {
        let stored = slot_stats(&self.db)
            .unwrap()
            .into_iter()
            .find(|(s, _)| *s == slot)
            .map_or((0, 0), |(_, st)| (st.keys, st.bytes));
        let cached = self.cache.stats(&self.db, slot).unwrap();
        assert_eq!(
            (cached.keys, cached.bytes),
            stored,
            "cache and RocksDB differ"
        );
        stored
    }

    pub fn totals(&self) -> (u64, u64) {
        slot_stats(&self.db)
            .unwrap()
            .iter()
            .fold((0, 0), |(k, b), (_, s)| (k + s.keys, b + s.bytes))
    }

    pub fn catalog(
        &mut self,
        change: CatalogChange,
        expected_version: Option<u64>,
    ) -> CommandResult {
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

pub fn put(v: &str) -> KvOp {
    KvOp::Put { value: v.into() }
}
