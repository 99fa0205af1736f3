//! Snapshot files: the whole state machine at one applied log id, as a stream of records, so a
//! lagging follower can be brought up to date after the leader purged its log.
//!
//! Layout: magic `UKVSNAP2`, then records `tag u8 | len u32 BE | bytes ...`:
//! - `H`: msgpack [`SnapshotHeader`] (meta and shard descriptor), always first;
//! - `K`: a `kv` pair: key len u32, key, value len u32, value;
//! - `D`: a `dedup` pair, same shape;
//! - `S`: a `stats` pair (per-slot key count and bytes), same shape;
//! - `E`: end, with u64 BE record count (a truncated file is detected) and the XXH3-64 of every
//!   byte before the `E` (a flipped byte anywhere is detected).
//!
//! Files of the first format (`UKVSNAP1`, no checksum) are still read.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rocksdb::{IteratorMode, ReadOptions};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::db::Db;
use crate::db::{CF_DEDUP, CF_KV, CF_STATS};
use crate::descriptor::ShardDescriptor;
use crate::error::{decode, encode};
use crate::error::{Error, Result};
use crate::raft_types::{SnapshotMeta, TypeConfig};

const MAGIC: &[u8; 8] = b"UKVSNAP2";
/// The first format: the same records, an end record without checksum.
const MAGIC_V1: &[u8; 8] = b"UKVSNAP1";

/// Passes bytes through and hashes them.
struct Hashing<T> {
    inner: T,
    hash: Xxh3,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Self {
        Hashing {
            inner,
            hash: Xxh3::new(),
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// A snapshot as openraft hands it around: its meta and the file.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotFile>;

/// A snapshot on disk. The open file handle keeps the data readable even if a newer snapshot
/// replaces this one while it is being sent.
#[derive(Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub file: File,
}

impl SnapshotFile {
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            file: File::open(path)?,
        })
    }

    /// A second handle on the same file, positioned at the start.
    pub fn reopen(&self) -> Result<File> {
        let mut f = self.file.try_clone()?;
        f.seek(SeekFrom::Start(0))?;
        Ok(f)
    }

    pub fn len(&self) -> Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub meta: SnapshotMeta,
    pub descriptor: ShardDescriptor,
    /// The shard clock at the snapshot (0 in snapshots of older versions).
    #[serde(default)]
    pub clock_ms: u64,
}

/// One data record of a snapshot.
pub enum Record {
    Kv(Vec<u8>, Vec<u8>),
    Dedup(Vec<u8>, Vec<u8>),
    Stats(Vec<u8>, Vec<u8>),
}

/// Writes a snapshot of `db` (read at one RocksDB snapshot) to `path`, fsyncs it, and returns
/// the number of data records.
pub fn write_snapshot(
    db: &Db,
    header: &SnapshotHeader,
    snap: &rocksdb::Snapshot<'_>,
    path: &Path,
) -> Result<u64> {
    let file = File::create(path)?;
    let mut w = Hashing::new(BufWriter::with_capacity(1 << 20, file));
    w.write_all(MAGIC)?;
    let h = encode("snapshot header", header)?;
    w.write_all(b"H")?;
    w.write_all(&(h.len() as u32).to_be_bytes())?;
    w.write_all(&h)?;
    let mut count = 0u64;
    for (cf, tag) in [(CF_KV, b'K'), (CF_DEDUP, b'D'), (CF_STATS, b'S')] {
        let mut ro = ReadOptions::default();
        ro.set_snapshot(snap);
        for item in db.raw().iterator_cf_opt(db.cf(cf), ro, IteratorMode::Start) {
            let (k, v) = item?;
            w.write_all(&[tag])?;
            w.write_all(&(k.len() as u32).to_be_bytes())?;
            w.write_all(&k)?;
            w.write_all(&(v.len() as u32).to_be_bytes())?;
            w.write_all(&v)?;
            count += 1;
        }
    }
    let sum = w.hash.digest();
    let mut w = w.inner;
    w.write_all(b"E")?;
    w.write_all(&count.to_be_bytes())?;
    w.write_all(&sum.to_be_bytes())?;
    let file = w.into_inner().map_err(|e| Error::Io(e.into_error()))?;
    file.sync_all()?;
    Ok(count)
}

/// Reads a snapshot file: the header, then every record through `each`. Fails if the file is
/// truncated, malformed or (from the second format on) does not match its checksum — only
/// then, after every record went through `each`: a caller collects and applies afterwards.
pub fn read_snapshot(
    file: File,
    path: &Path,
    mut each: impl FnMut(Record) -> Result<()>,
) -> Result<SnapshotHeader> {
    let corrupt = |reason: &str| Error::CorruptSnapshot {
        path: path.display().to_string(),
        reason: reason.to_string(),
    };
    let mut r = Hashing::new(BufReader::with_capacity(1 << 20, file));
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .map_err(|_| corrupt("short file"))?;
    let checksummed = match &magic {
        m if m == MAGIC => true,
        m if m == MAGIC_V1 => false,
        _ => return Err(corrupt("bad magic")),
    };
    let mut tag = [0u8; 1];
    r.read_exact(&mut tag)
        .map_err(|_| corrupt("missing header"))?;
    if tag[0] != b'H' {
        return Err(corrupt("header not first"));
    }
    let h = read_blob(&mut r).map_err(|_| corrupt("short header"))?;
    let header: SnapshotHeader = decode("snapshot header", &h)?;
    let mut count = 0u64;
    loop {
        let before_tag = r.hash.clone();
        r.read_exact(&mut tag)
            .map_err(|_| corrupt("truncated: no end record"))?;
        match tag[0] {
            t @ (b'K' | b'D' | b'S') => {
                let k = read_blob(&mut r).map_err(|_| corrupt("truncated record"))?;
                let v = read_blob(&mut r).map_err(|_| corrupt("truncated record"))?;
                count += 1;
                each(match t {
                    b'K' => Record::Kv(k, v),
                    b'D' => Record::Dedup(k, v),
                    _ => Record::Stats(k, v),
                })?;
            }
            b'E' => {
                // The checksum covers everything before the `E`.
                let sum = before_tag.digest();
                let mut n = [0u8; 8];
                r.read_exact(&mut n).map_err(|_| corrupt("truncated end"))?;
                if u64::from_be_bytes(n) != count {
                    return Err(corrupt("record count mismatch"));
                }
                if checksummed {
                    let mut stored = [0u8; 8];
                    r.read_exact(&mut stored)
                        .map_err(|_| corrupt("truncated end"))?;
                    if u64::from_be_bytes(stored) != sum {
                        return Err(corrupt("checksum mismatch"));
                    }
                }
                return Ok(header);
            }
            _ => return Err(corrupt("unknown record tag")),
        }
    }
}

fn read_blob(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 512 * 1024 * 1024 {
        return Err(io::Error::other("record too large"));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// File name of the snapshot at `meta`'s last log id.
pub fn file_name(meta: &SnapshotMeta) -> String {
    match &meta.last_log_id {
        Some(l) => format!("snapshot-{:020}-{}.bin", l.index(), l.committed_leader_id()),
        None => "snapshot-empty.bin".to_string(),
    }
    .replace([' ', '/', ':'], "_")
}

/// The log index a snapshot file name carries (`None` for `snapshot-empty.bin`, which is older
/// than every numbered one); `None` too for names that are not snapshot files.
pub fn index_of(name: &str) -> Option<Option<u64>> {
    let rest = name.strip_prefix("snapshot-")?.strip_suffix(".bin")?;
    if rest == "empty" {
        return Some(None);
    }
    let digits = rest.split('-').next()?;
    digits.parse::<u64>().ok().map(Some)
}

/// Makes a rename in `dir` durable (the directory entry itself), as POSIX asks.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads a whole snapshot file to check it (structure, count, checksum) without applying it.
pub fn verify_snapshot(path: &Path) -> Result<SnapshotHeader> {
    read_snapshot(File::open(path)?, path, |_| Ok(()))
}
