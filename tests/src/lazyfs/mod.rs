//! An in-process FUSE passthrough that loses unsynced data on demand.
//!
//! # Why
//! A power-loss durability test must show that every write a database
//! acknowledged survives a power cut, and — as a negative control — that a
//! database with fsync disabled really loses data.  Killing a process is not
//! enough: the kernel page cache keeps its writes.  Like LazyFS, this file
//! system keeps written-but-not-fsynced file data in its *own* memory (a
//! per-inode "page cache"), so [`LazyFs::power_cut`] can throw exactly that
//! away while the mount stays up for the restarted processes.
//!
//! # Semantics
//! - **File data**: `write` goes into per-inode dirty 4 KiB pages plus a
//!   pending file size, in this process's memory.  `read` and `getattr` merge
//!   the dirty state over the backing file.  `fsync`/`fdatasync` (FUSE
//!   `fsync`) writes that inode's dirty pages and size to the backing file and
//!   fsyncs it; only then is the data durable.  `close` (FUSE `flush` /
//!   `release`) makes nothing durable.  Files opened with `O_SYNC`/`O_DSYNC`
//!   are synced after every write.
//! - **Size changes** (`truncate`, `ftruncate`, `O_TRUNC`) are pending like
//!   data: a power cut restores the durable size and content.  A truncate
//!   followed by an extension reads zeros, also before the next fsync.
//! - **Metadata is durable at once**: create, mkdir, mknod, unlink, rmdir,
//!   rename (with `RENAME_NOREPLACE` / `RENAME_EXCHANGE`), link, symlink,
//!   chmod, chown and utimes go straight to the backing directory.  So after a
//!   power cut a file created but never fsynced still exists, with its
//!   durable size (0 if nothing was ever synced).  This file system tests
//!   *data* fsync, not directory fsync; `fsyncdir` is accepted and passed
//!   through to the backing directory.
//! - **Dirty state follows the inode, not the path**: each inode is held as an
//!   `O_PATH` descriptor on the backing file, so a renamed file keeps its dirty
//!   data and can be fsynced under its new name.  When the last link of an
//!   inode goes away (unlink, or rename over it) and no handle is open, its
//!   dirty state is freed at once; if it is still open, on the last close.
//! - **No kernel caching**: files are opened with `FOPEN_DIRECT_IO`, entry and
//!   attribute TTLs are zero, and no writeback cache is requested, so nothing
//!   the kernel caches can outlive a power cut.  Consequence: `MAP_SHARED`
//!   `mmap` of files on the mount fails (`ENODEV`; `MAP_PRIVATE` works), so
//!   SQLite's shared-memory WAL (`-shm`; WAL with `locking_mode=EXCLUSIVE`
//!   works) and RocksDB's `allow_mmap_reads`/`allow_mmap_writes` cannot be
//!   used on it (both are off by default in RocksDB).
//! - **Locks**: `fcntl`/`flock` locks are not implemented by the daemon, so the
//!   kernel applies them locally (all users are on this machine); RocksDB's
//!   `LOCK` file and SQLite's locking work.
//! - **`fallocate`** returns `EOPNOTSUPP` (RocksDB ignores that; glibc's
//!   `posix_fallocate` then falls back to writing zeros, which are buffered
//!   like any write).  `sync_file_range` is not a FUSE operation and is a
//!   no-op; `lseek(SEEK_DATA/SEEK_HOLE)`, `copy_file_range`, `ioctl` and
//!   xattrs fall back to the kernel's generic behaviour or `EOPNOTSUPP`.
//! - [`LazyFs::stall`] simulates a disk that stops answering for a while: reads, writes and
//!   syncs block until it ends (metadata operations do not).
//! - [`LazyFs::power_cut`] may be called with handles still open: writes
//!   already answered are dropped, later writes are buffered as usual.
//!
//! # Mounting
//! Uses `fuser`'s pure-Rust mount: as root it calls `mount(2)` directly, so
//! neither libfuse nor the `fusermount3` binary is needed.  The mount is
//! `allow_other,default_permissions`, served by a few worker threads of this
//! process; the soft `RLIMIT_NOFILE` is raised to the hard limit (the daemon
//! holds one descriptor per inode plus one per regular file in use).
//! Dropping [`LazyFs`] unmounts; if the mount is busy it is lazily detached
//! (`umount -l`).  If the process dies without unmounting, the mount point is
//! left as a dead FUSE mount ("Transport endpoint is not connected"); clear it
//! with `umount -l <mountpoint>` (or `fusermount3 -u -z`, Debian package
//! `fuse3`).

mod fs;
mod pages;
mod sys;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{BackgroundSession, Config, INodeNo, MountOption, Notifier, SessionACL};

pub use fs::PowerCutReport;

/// FUSE worker threads: enough that a slow fsync does not stall other files.
const WORKER_THREADS: usize = 4;

/// A mounted LazyFS instance; dropping it unmounts.
#[derive(Debug)]
pub struct LazyFs {
    shared: Arc<fs::Shared>,
    session: Option<BackgroundSession>,
    notifier: Notifier,
    mountpoint: PathBuf,
}

impl LazyFs {
    /// Mounts a passthrough of `backing` (an existing dir) at `mountpoint` (an existing empty dir).
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<LazyFs> {
        let backing = backing.canonicalize()?;
        let mountpoint = mountpoint.canonicalize()?;
        if !backing.is_dir() || !mountpoint.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "backing and mountpoint must be existing directories",
            ));
        }
        sys::raise_nofile_limit();
        let shared = Arc::new(fs::Shared::new(&backing)?);
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName(format!("lazyfs:{}", backing.display())),
            MountOption::Subtype("lazyfs".to_string()),
            MountOption::DefaultPermissions,
            MountOption::NoAtime,
        ];
        config.acl = SessionACL::All;
        config.n_threads = Some(WORKER_THREADS);
        let filesystem = fs::LazyFsImpl {
            shared: shared.clone(),
        };
        // Session::new mounts and completes the INIT handshake before returning.
        let session = fuser::spawn_mount(filesystem, &mountpoint, &config)?;
        let notifier = session.notifier();
        Ok(LazyFs {
            shared,
            session: Some(session),
            notifier,
            mountpoint,
        })
    }

    /// Simulated power cut: every byte written but not yet made durable by fsync/fdatasync
    /// (of that file) is discarded; afterwards the mount shows exactly the durable state.
    /// Returns what was dropped (files, bytes).
    pub fn power_cut(&self) -> PowerCutReport {
        let (report, touched) = self.shared.power_cut();
        // Attribute TTLs are zero and files are direct-I/O, so the kernel holds
        // nothing stale; invalidating is belt and braces.  Errors (e.g. an inode
        // the kernel already forgot) do not matter.
        for ino in touched {
            let _ = self.notifier.inval_inode(INodeNo(ino), 0, 0);
        }
        report
    }

    /// A disk stall: every read, write and sync on the mount waits until `d` from now (a
    /// longer stall already running is kept).
    pub fn stall(&self, d: std::time::Duration) {
        self.shared.stall(d);
    }

    /// A slow disk: every later fsync takes `d` longer (zero: back to normal).
    pub fn set_fsync_delay(&self, d: std::time::Duration) {
        self.shared.set_fsync_delay(d);
    }

    /// Bytes currently held unsynced (4 KiB page granular, clipped at the pending EOF).
    pub fn unsynced_bytes(&self) -> u64 {
        self.shared.unsynced_bytes()
    }

    /// Where the file system is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts (lazily, if busy) and waits for the worker threads when possible.
    pub fn unmount(mut self) {
        self.unmount_inner();
    }

    fn unmount_inner(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        if session.umount_and_join().is_err() {
            // Busy (a process still has a file open) or already gone: detach
            // it; the worker threads end when the kernel drops the connection.
            let _ = sys::lazy_unmount(&self.mountpoint);
        }
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        self.unmount_inner();
    }
}
