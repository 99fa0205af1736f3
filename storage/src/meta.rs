//! State machine metadata: the applied log id, the membership, the shard descriptor and the
//! shard's clock, kept in memory and in the `sm` column family, and written in the same batch
//! as the entries they reflect.

use rocksdb::WriteBatch;

use crate::db::{keyspace_stats_key, Db, CF_SM, CF_STATS};
use crate::descriptor::ShardDescriptor;
use crate::error::{decode, encode, Result};
use crate::raft_types::{LogId, StoredMembership};

pub const KEY_APPLIED: &[u8] = b"applied";
pub const KEY_MEMBERSHIP: &[u8] = b"membership";
pub const KEY_DESCRIPTOR: &[u8] = b"descriptor";
pub const KEY_CLOCK: &[u8] = b"clock";
/// The data dir's layout version (absent: format 1, from before collections).
pub const KEY_FORMAT: &[u8] = b"format";

/// The layout this binary writes: format 2 = format 1 (`slot ++ key` for the seed's flat
/// keys) plus keys of other collections (`slot ++ 0xFF ++ keyspace ++ key`, see `db`);
/// format 3 = format 2 plus each hash collection's totals in the `stats` family (`usage`).
pub const FORMAT: u32 = 3;

/// Brings a data dir to [`FORMAT`] before anything reads it, or refuses it. No key is
/// rewritten (every format-1 key is a format-2 key of `default`); from format 1 or 2 the hash
/// collections' totals are counted once from their keys, and written with the marker, synced.
/// A data dir written by a newer binary is refused: this binary could misread it.
pub fn check_format(db: &Db) -> Result<u32> {
    let found = match db.raw().get_cf(db.cf(CF_SM), KEY_FORMAT)? {
        Some(b) => decode::<u32>("format", &b)?,
        None => 1,
    };
    if found > FORMAT {
        return Err(crate::Error::Format {
            found,
            supported: FORMAT,
        });
    }
    if found < FORMAT {
        let mut batch = WriteBatch::default();
        for (ks, st) in crate::keyspace_stats::count_keyspaces(db)? {
            batch.put_cf(db.cf(CF_STATS), keyspace_stats_key(ks), st.encode());
        }
        batch.put_cf(db.cf(CF_SM), KEY_FORMAT, encode("format", &FORMAT)?);
        db.write_sync(batch)?;
        if db.raw().get_cf(db.cf(CF_SM), KEY_APPLIED)?.is_some() {
            tracing::info!(path = %db.raw().path().display(), from = found, to = FORMAT, "data dir migrated (no key rewritten)");
        }
    }
    Ok(FORMAT)
}

/// State machine metadata kept in memory and in the `sm` family.
#[derive(Debug, Clone, Default)]
pub struct SmMeta {
    pub applied: Option<LogId>,
    pub membership: StoredMembership,
    pub descriptor: ShardDescriptor,
    /// The shard's clock: the largest leader clock (ms since the Unix epoch) written in an
    /// applied entry. It never goes back, whichever leader proposed, and decides dedup expiry.
    pub clock_ms: u64,
}

impl SmMeta {
    pub fn load(db: &Db, shard: unikv_types::ShardId) -> Result<Self> {
        Self::load_with(shard, |k| db.raw().get_cf(db.cf(CF_SM), k))
    }

    /// Loads the metadata as of a RocksDB snapshot.
    pub fn load_at(
        db: &Db,
        snap: &rocksdb::Snapshot<'_>,
        shard: unikv_types::ShardId,
    ) -> Result<Self> {
        Self::load_with(shard, |k| {
            let mut ro = rocksdb::ReadOptions::default();
            ro.set_snapshot(snap);
            db.raw().get_cf_opt(db.cf(CF_SM), k, &ro)
        })
    }

    fn load_with(
        shard: unikv_types::ShardId,
        get: impl Fn(&[u8]) -> std::result::Result<Option<Vec<u8>>, rocksdb::Error>,
    ) -> Result<Self> {
        let applied = match get(KEY_APPLIED)? {
            Some(b) => decode("applied", &b)?,
            None => None,
        };
        let membership = match get(KEY_MEMBERSHIP)? {
            Some(b) => decode("membership", &b)?,
            None => StoredMembership::default(),
        };
        let descriptor = match get(KEY_DESCRIPTOR)? {
            Some(b) => decode("descriptor", &b)?,
            None => ShardDescriptor::new(shard),
        };
        let clock_ms = match get(KEY_CLOCK)? {
            Some(b) => decode("clock", &b)?,
            None => 0,
        };
        Ok(Self {
            applied,
            membership,
            descriptor,
            clock_ms,
        })
    }

    /// Adds the applied log id and the clock to `batch` (membership and descriptor unchanged).
    pub fn write_applied_to(&self, db: &Db, batch: &mut WriteBatch) -> Result<()> {
        batch.put_cf(db.cf(CF_SM), KEY_APPLIED, encode("applied", &self.applied)?);
        batch.put_cf(db.cf(CF_SM), KEY_CLOCK, encode("clock", &self.clock_ms)?);
        Ok(())
    }

    /// Adds this metadata to `batch`.
    pub fn write_to(&self, db: &Db, batch: &mut WriteBatch) -> Result<()> {
        let cf = db.cf(CF_SM);
        batch.put_cf(cf, KEY_APPLIED, encode("applied", &self.applied)?);
        batch.put_cf(cf, KEY_MEMBERSHIP, encode("membership", &self.membership)?);
        batch.put_cf(cf, KEY_DESCRIPTOR, encode("descriptor", &self.descriptor)?);
        batch.put_cf(cf, KEY_CLOCK, encode("clock", &self.clock_ms)?);
        Ok(())
    }
}
