//! Disk full: what this replica knows about its data dir running out of space.
//!
//! ENOSPC must not stop Raft: openraft treats every storage error as fatal, for good. So the
//! writers that can meet it (log appends, the group-commit fsync, applies, snapshot files)
//! hold their work and retry instead, and mark the disk full here; the node then refuses new
//! writes with 507 `insufficient_storage` before proposing them. RocksDB stops taking writes
//! after a failed WAL, flush or MANIFEST write and resumes by itself once the file system has
//! room for a memtable again (it polls every 5 s); held work then completes and the watcher
//! below clears the mark once a synced probe write succeeds and there is headroom, so 507s do
//! not flap on the last few megabytes. The watcher also marks the disk full *before* ENOSPC
//! when less than a reserve (`--disk_reserve_mb`, half that headroom by default) is free, so a shard whose nodes share one file system
//! stops taking writes while every node still has room to resume.
//!
//! A ballast file (`--ballast_mb`, reserved with `fallocate`, next to the database) is let go
//! at the first ENOSPC: RocksDB then has room to resume and the held work — entries the
//! followers may already have committed — gets in, so this replica catches up and serves
//! reads while new writes are still refused. It is reserved again before writes are taken.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rocksdb::{WriteBatch, WriteOptions, DB};

/// How often held work is retried while the disk is full.
pub const RETRY_EVERY: Duration = Duration::from_millis(200);

/// How often the watcher checks whether the disk has room again.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// The disk-full mark of one database, shared by every writer.
#[derive(Debug)]
pub struct DiskState {
    full: AtomicBool,
    detail: Mutex<Option<(Instant, String)>>,
    /// ENOSPC errors met so far (each failed attempt counts).
    enospc_seen: AtomicU64,
    /// Pieces of work waiting for space: log appends, fsync waiters, apply groups.
    held: AtomicU64,
    /// Times the disk was found full, then writable again.
    recoveries: AtomicU64,
    dir: PathBuf,
    /// Free bytes the file system must have before writes are taken again (besides the
    /// ballast's).
    headroom: u64,
    /// Below this much free space the disk counts as full before any ENOSPC (0: never).
    reserve: u64,
    ballast: Option<Ballast>,
}

/// Space kept in reserve for a full disk.
#[derive(Debug)]
struct Ballast {
    path: PathBuf,
    bytes: u64,
}

/// What `/raft/status` shows of the disk.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiskReport {
    pub full: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_for_ms: Option<u64>,
    pub enospc_seen: u64,
    pub held: u64,
    pub recoveries: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    pub headroom_bytes: u64,
    /// Bytes the ballast file holds now (0: none, or let go while the disk is full).
    pub ballast_bytes: u64,
}

impl DiskState {
    /// The state of the database in `dir`; `ballast` (path, bytes) is reserved now if it
    /// can be (a file system that cannot `fallocate`, or one already full, goes without).
    pub fn new(
        dir: &Path,
        headroom: u64,
        reserve: u64,
        ballast: Option<(PathBuf, u64)>,
    ) -> Arc<DiskState> {
        let d = Arc::new(DiskState {
            full: AtomicBool::new(false),
            detail: Mutex::new(None),
            enospc_seen: AtomicU64::new(0),
            held: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
            dir: dir.to_path_buf(),
            headroom,
            reserve,
            ballast: ballast
                .filter(|(_, bytes)| *bytes > 0)
                .map(|(path, bytes)| Ballast { path, bytes }),
        });
        if let Err(e) = d.reserve_ballast() {
            if let Some(b) = &d.ballast {
                tracing::warn!(path = %b.path.display(), error = %e, "no ballast file: a full disk stalls reads on this node until space returns");
            }
        }
        d
    }

    /// Bytes the ballast file holds now.
    fn ballast_now(&self) -> u64 {
        let Some(b) = &self.ballast else { return 0 };
        std::fs::metadata(&b.path)
            .map(|m| m.len().min(b.bytes))
            .unwrap_or(0)
    }

    /// Creates the ballast file if it is missing (really reserved: `fallocate`, then fsync).
    fn reserve_ballast(&self) -> std::io::Result<()> {
        let Some(b) = &self.ballast else {
            return Ok(());
        };
        if self.ballast_now() == b.bytes {
            return Ok(());
        }
        let tmp = b.path.with_extension("part");
        let res = (|| {
            let f = std::fs::File::create(&tmp)?;
            nix::fcntl::fallocate(
                &f,
                nix::fcntl::FallocateFlags::empty(),
                0,
                b.bytes as nix::libc::off_t,
            )
            .map_err(std::io::Error::from)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &b.path)?;
            if let Some(parent) = b.path.parent() {
                std::fs::File::open(parent)?.sync_all()?;
            }
            Ok(())
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }

    /// Lets the ballast go (at the first ENOSPC of an episode).
    fn release_ballast(&self) {
        let Some(b) = &self.ballast else { return };
        let bytes = self.ballast_now();
        if bytes > 0 && std::fs::remove_file(&b.path).is_ok() {
            tracing::warn!(path = %b.path.display(), bytes, "ballast file released so the database can resume and catch up");
        }
    }

    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::SeqCst)
    }

    /// Records an ENOSPC met by `what`; the first one of an episode is logged.
    pub fn mark_full(&self, what: &str, error: &dyn std::fmt::Display) {
        self.enospc_seen.fetch_add(1, Ordering::Relaxed);
        self.set_full(format!("{what}: {error}"));
    }

    /// Marks the disk full before ENOSPC when the file system has less than the reserve free
    /// (`--disk_reserve_mb`, by default half the headroom: TiKV's reserve space, in effect). It matters most where the shard's
    /// nodes share one file system: there the ballast one node lets go at its ENOSPC would be
    /// written full again by a leader that met none, and then no node could resume.
    fn check_low_space(&self) {
        let low = self.reserve;
        if let Some(free) = self.free_bytes().filter(|f| *f < low) {
            self.set_full(format!(
                "free space {free} bytes is below the {low} bytes kept in reserve (--disk_reserve_mb)"
            ));
        }
    }

    fn set_full(&self, reason: String) {
        let mut d = self.detail.lock().unwrap_or_else(|p| p.into_inner());
        if !self.full.swap(true, Ordering::SeqCst) {
            tracing::error!(dir = %self.dir.display(), %reason, "disk full: writes are refused (507) until space returns; nothing acknowledged is lost");
            *d = Some((Instant::now(), reason));
            self.release_ballast();
        }
    }

    /// Work that waits for space (counted in `/raft/status`; the mark is not cleared while
    /// any is left).
    pub fn hold(&self) -> Held<'_> {
        self.held.fetch_add(1, Ordering::SeqCst);
        Held(self)
    }

    /// Free bytes of the data dir's file system that any process may use (`f_bavail`: ext4
    /// keeps 5 % for root, and a node not run as root meets ENOSPC when this reaches 0).
    pub fn free_bytes(&self) -> Option<u64> {
        let s = nix::sys::statvfs::statvfs(&self.dir).ok()?;
        Some((s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64))
    }

    pub fn report(&self) -> DiskReport {
        let d = self.detail.lock().unwrap_or_else(|p| p.into_inner());
        let full = self.is_full();
        DiskReport {
            full,
            reason: d.as_ref().filter(|_| full).map(|(_, r)| r.clone()),
            full_for_ms: d
                .as_ref()
                .filter(|_| full)
                .map(|(t, _)| t.elapsed().as_millis() as u64),
            enospc_seen: self.enospc_seen.load(Ordering::Relaxed),
            held: self.held.load(Ordering::SeqCst),
            recoveries: self.recoveries.load(Ordering::Relaxed),
            free_bytes: self.free_bytes(),
            headroom_bytes: self.headroom,
            ballast_bytes: self.ballast_now(),
        }
    }

    /// Clears the mark if nothing is held, `probe` (a synced write) succeeds and the file
    /// system has the headroom back, with room for the ballast (reserved again first).
    fn try_clear(&self, probe: impl FnOnce() -> bool) -> bool {
        if !self.is_full() || self.held.load(Ordering::SeqCst) > 0 {
            return false;
        }
        let missing = self
            .ballast
            .as_ref()
            .map_or(0, |b| b.bytes - self.ballast_now());
        let needed = self.headroom.saturating_add(missing);
        if self.free_bytes().is_some_and(|f| f < needed) || !probe() {
            return false;
        }
        match self.reserve_ballast() {
            Ok(()) => {}
            // A file system that cannot fallocate never will: go on without the ballast.
            Err(e) if e.raw_os_error() == Some(nix::libc::EOPNOTSUPP) => {
                tracing::warn!(error = %e, "no ballast on this file system");
            }
            Err(e) => {
                tracing::debug!(error = %e, "ballast not reserved yet");
                return false;
            }
        }
        let mut d = self.detail.lock().unwrap_or_else(|p| p.into_inner());
        self.full.store(false, Ordering::SeqCst);
        self.recoveries.fetch_add(1, Ordering::Relaxed);
        let for_ms = d.take().map(|(t, _)| t.elapsed().as_millis() as u64);
        tracing::warn!(dir = %self.dir.display(), full_for_ms = ?for_ms, "disk has room again: writes are taken");
        true
    }
}

/// A piece of held work; dropping it ends the hold.
pub struct Held<'a>(&'a DiskState);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The fsync every "sync" here is made of: an empty batch written with `sync`. Unlike
/// `SyncWAL` (`flush_wal(true)`), it is refused cleanly while RocksDB is stopped by a full
/// disk, and it is ordered with the WAL appends of the write group — `SyncWAL` on a WAL
/// writer that just failed an append turns a recoverable ENOSPC into a fatal error.
pub fn sync_write(db: &DB, fsync: bool) -> Result<(), rocksdb::Error> {
    let mut wo = WriteOptions::default();
    wo.set_sync(fsync);
    db.write_opt(WriteBatch::default(), &wo)
}

/// Starts the thread that clears the mark once the disk has room again; it ends with the
/// database.
pub fn spawn_watcher(db: Weak<DB>, disk: Arc<DiskState>, fsync: bool) {
    std::thread::Builder::new()
        .name("disk-watch".into())
        .spawn(move || loop {
            std::thread::sleep(WATCH_EVERY);
            if db.strong_count() == 0 {
                return;
            }
            // The database is held only while the disk is full (a reopen right after the
            // store is dropped must find it closed).
            if disk.is_full() {
                let Some(db) = db.upgrade() else { return };
                disk.try_clear(|| sync_write(&db, fsync).is_ok());
            } else if db.strong_count() > 0 {
                // (Not for a store being dropped: its ballast may soon be a new store's.)
                disk.check_low_space();
            }
        })
        .expect("spawning the disk-watch thread");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_stays_while_work_is_held_or_the_probe_fails() {
        let dir = tempfile::tempdir().unwrap();
        let d = DiskState::new(dir.path(), 0, 0, None);
        assert!(!d.try_clear(|| true), "nothing to clear");
        d.mark_full("test", &"No space left on device");
        assert!(d.is_full());
        assert_eq!(d.report().enospc_seen, 1);
        assert!(d.report().reason.unwrap().contains("No space"));
        let h = d.hold();
        assert!(!d.try_clear(|| true), "held work keeps the mark");
        drop(h);
        assert!(!d.try_clear(|| false), "a failing probe keeps the mark");
        assert!(d.try_clear(|| true));
        assert!(!d.is_full());
        let r = d.report();
        assert_eq!((r.recoveries, r.held, r.reason), (1, 0, None));
    }

    #[test]
    fn low_space_marks_the_disk_full_before_enospc() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ballast");
        let roomy = DiskState::new(dir.path(), 0, 0, None);
        roomy.check_low_space();
        assert!(!roomy.is_full(), "no reserve: never low");
        let d = DiskState::new(
            dir.path(),
            u64::MAX,
            u64::MAX,
            Some((path.clone(), 1 << 20)),
        );
        d.check_low_space();
        let r = d.report();
        assert!(r.full, "less free than the reserve");
        assert_eq!(r.enospc_seen, 0, "no ENOSPC met");
        assert!(r.reason.unwrap().contains("free space"));
        assert!(!path.exists(), "the ballast is let go as for ENOSPC");
    }

    #[test]
    fn headroom_is_required_before_clearing() {
        let dir = tempfile::tempdir().unwrap();
        let d = DiskState::new(dir.path(), u64::MAX, 0, None);
        d.mark_full("test", &"x");
        assert!(!d.try_clear(|| true));
        assert!(d.free_bytes().is_some_and(|f| f > 0));
    }

    #[test]
    fn the_ballast_is_reserved_let_go_when_full_and_reserved_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ballast");
        let d = DiskState::new(dir.path(), 0, 0, Some((path.clone(), 1 << 20)));
        let reserved = |p: &Path| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(p).map(|m| m.blocks() * 512).unwrap_or(0)
        };
        assert!(reserved(&path) >= 1 << 20, "fallocate reserves real blocks");
        assert_eq!(d.report().ballast_bytes, 1 << 20);
        d.mark_full("test", &"No space left on device");
        assert!(!path.exists(), "let go at the first ENOSPC");
        assert_eq!(d.report().ballast_bytes, 0);
        assert!(d.try_clear(|| true));
        assert!(
            reserved(&path) >= 1 << 20,
            "reserved again before writes are taken"
        );
    }
}
