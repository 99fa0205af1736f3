//! The FUSE side: inode table and file handles (here), and the `fuser::Filesystem` impl
//! (`ops`).
//!
//! Locking: one `Mutex<Inner>` guards the inode and handle tables and is held
//! only briefly (never across backing-file I/O).  Each regular file has its own
//! `RwLock<FileData>`; reads share it, writes/truncates/fsync take it
//! exclusively, and fsync holds it while writing back, so a concurrent
//! `power_cut` waits for an fsync in progress rather than splitting it.
//! Lock order: `Inner` before any `FileData`, never the other way round.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

use super::pages::FileData;
use super::sys;

mod ops;

/// Entry and attribute TTL: zero, so the kernel asks us every time and never
/// caches a size or a name across a power cut.
const TTL: Duration = Duration::ZERO;

/// Data of one regular file: a read-write descriptor on the backing file and
/// its unsynced state.
#[derive(Debug)]
pub(crate) struct FileNode {
    pub(crate) file: File,
    pub(crate) data: RwLock<FileData>,
}

impl FileNode {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, FileData> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, FileData> {
        self.data.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
struct Node {
    /// `O_PATH` descriptor of the backing inode.
    fd: Arc<OwnedFd>,
    /// (st_dev, st_ino) of the backing inode.
    key: (u64, u64),
    /// Kernel lookup count (FUSE `forget` protocol).
    nlookup: u64,
    /// Open file handles on this inode.
    open: u32,
    /// Regular files only, created on first open/truncate.
    file: Option<Arc<FileNode>>,
}

impl Node {
    /// A node the kernel just looked up once, with no handle open yet.
    fn looked_up(fd: OwnedFd, key: (u64, u64)) -> Node {
        Node {
            fd: Arc::new(fd),
            key,
            nlookup: 1,
            open: 0,
            file: None,
        }
    }
}

#[derive(Debug)]
struct Handle {
    ino: u64,
    append: bool,
    sync: Option<bool>, // Some(datasync) for O_SYNC / O_DSYNC
    dir: Option<Vec<(u64, FileType, Vec<u8>)>>,
}

#[derive(Debug, Default)]
struct Inner {
    nodes: HashMap<u64, Node>,
    by_key: HashMap<(u64, u64), u64>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
}

/// What [`super::LazyFs::power_cut`] dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PowerCutReport {
    /// Files that had unsynced data or a pending size change.
    pub files: usize,
    /// Unsynced bytes dropped (4 KiB page granular, clipped at the pending EOF).
    pub bytes: u64,
}

/// State shared by the FUSE worker threads and the [`super::LazyFs`] handle.
#[derive(Debug)]
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    /// A simulated disk stall: reads, writes and syncs wait until then.
    stall_until: Mutex<Option<std::time::Instant>>,
    /// Extra time every fsync takes (a slow disk).
    fsync_delay: Mutex<Duration>,
}

type Res<T> = Result<T, Errno>;

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    let nsecs = nsecs.clamp(0, 999_999_999) as u32;
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::new(0, nsecs)
    }
}

fn timespec(t: TimeOrNow) -> Option<libc::timespec> {
    match t {
        TimeOrNow::Now => None,
        TimeOrNow::SpecificTime(t) => {
            let (secs, nsecs) = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
                Err(e) => (-(e.duration().as_secs() as i64), 0),
            };
            Some(libc::timespec {
                tv_sec: secs,
                tv_nsec: i64::from(nsecs),
            })
        }
    }
}

fn attr(ino: u64, st: &libc::stat, pending_size: Option<u64>) -> FileAttr {
    let size = pending_size.unwrap_or(st.st_size as u64);
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: (st.st_blocks as u64).max(size.div_ceil(512)),
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: kind_of(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

impl Shared {
    /// Creates the state with `backing` (a directory) as the root inode.
    pub(crate) fn new(backing: &Path) -> io::Result<Shared> {
        let fd = sys::openat(
            libc::AT_FDCWD,
            backing.as_os_str(),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?;
        let st = sys::fstat(fd.as_raw_fd())?;
        let key = (st.st_dev, st.st_ino);
        let mut inner = Inner {
            next_ino: 2,
            next_fh: 1,
            ..Inner::default()
        };
        inner.nodes.insert(1, Node::looked_up(fd, key));
        inner.by_key.insert(key, 1);
        Ok(Shared {
            inner: Mutex::new(inner),
            stall_until: Mutex::new(None),
            fsync_delay: Mutex::new(Duration::ZERO),
        })
    }

    /// Makes every later fsync take `d` longer.
    pub(crate) fn set_fsync_delay(&self, d: Duration) {
        *self.fsync_delay.lock().unwrap_or_else(|e| e.into_inner()) = d;
    }

    /// Makes reads, writes and syncs wait until `d` from now (a disk that stops answering).
    pub(crate) fn stall(&self, d: Duration) {
        let until = std::time::Instant::now() + d;
        let mut s = self.stall_until.lock().unwrap_or_else(|e| e.into_inner());
        *s = Some(s.map_or(until, |cur| cur.max(until)));
    }

    /// Blocks the calling FUSE worker while a stall lasts.
    fn wait_if_stalled(&self) {
        loop {
            let until = *self.stall_until.lock().unwrap_or_else(|e| e.into_inner());
            match until {
                Some(t) if t > std::time::Instant::now() => {
                    std::thread::sleep(t - std::time::Instant::now());
                }
                _ => return,
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fd_of(&self, ino: INodeNo) -> Res<Arc<OwnedFd>> {
        self.lock()
            .nodes
            .get(&ino.0)
            .map(|n| n.fd.clone())
            .ok_or(Errno::ESTALE)
    }

    /// Registers (or finds) the backing inode `fd`/`st` and counts one kernel lookup.
    fn intern(&self, fd: OwnedFd, st: &libc::stat) -> u64 {
        let key = (st.st_dev, st.st_ino);
        let mut inner = self.lock();
        let known = inner.by_key.get(&key).copied();
        if let Some((ino, node)) = known.and_then(|i| inner.nodes.get_mut(&i).map(|n| (i, n))) {
            node.nlookup += 1;
            return ino;
        }
        let ino = inner.next_ino;
        inner.next_ino += 1;
        inner.nodes.insert(ino, Node::looked_up(fd, key));
        inner.by_key.insert(key, ino);
        ino
    }

    /// The data node of a regular file, opening the backing file on first use.
    fn file_node(&self, ino: u64) -> Res<Arc<FileNode>> {
        let fd = {
            let inner = self.lock();
            let node = inner.nodes.get(&ino).ok_or(Errno::ESTALE)?;
            if let Some(f) = &node.file {
                return Ok(f.clone());
            }
            node.fd.clone()
        };
        let st = sys::fstat(fd.as_raw_fd()).map_err(errno)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                Errno::EISDIR
            } else {
                Errno::EINVAL
            });
        }
        let file = sys::reopen(fd.as_raw_fd(), libc::O_RDWR)
            .or_else(|_| sys::reopen(fd.as_raw_fd(), libc::O_RDONLY))
            .map_err(errno)?;
        Ok(self.attach_file(ino, file))
    }

    /// Attaches `file` as the data node of `ino`, unless another thread was first.
    fn attach_file(&self, ino: u64, file: File) -> Arc<FileNode> {
        let mut inner = self.lock();
        let Some(node) = inner.nodes.get_mut(&ino) else {
            return Arc::new(FileNode {
                file,
                data: RwLock::new(FileData::default()),
            });
        };
        node.file
            .get_or_insert_with(|| {
                Arc::new(FileNode {
                    file,
                    data: RwLock::new(FileData::default()),
                })
            })
            .clone()
    }

    fn getattr_ino(&self, ino: u64) -> Res<FileAttr> {
        let (fd, file) = {
            let inner = self.lock();
            let node = inner.nodes.get(&ino).ok_or(Errno::ESTALE)?;
            (node.fd.clone(), node.file.clone())
        };
        let st = sys::fstat(fd.as_raw_fd()).map_err(errno)?;
        let pending = file.and_then(|f| f.read().pending_size());
        Ok(attr(ino, &st, pending))
    }

    /// Looks `name` up in `parent`, counting a kernel lookup on success.
    fn lookup_name(&self, parent: INodeNo, name: &OsStr) -> Res<FileAttr> {
        let pfd = self.fd_of(parent)?;
        let fd = sys::openat(pfd.as_raw_fd(), name, libc::O_PATH | libc::O_NOFOLLOW, 0)
            .map_err(errno)?;
        let st = sys::fstat(fd.as_raw_fd()).map_err(errno)?;
        let ino = self.intern(fd, &st);
        self.getattr_ino(ino)
    }

    /// After `name` stopped pointing at backing inode `key` (unlink, rename over):
    /// if that inode is now gone for good, its unsynced data goes with it.
    fn after_unlink(&self, key: Option<(u64, u64)>) {
        let Some(key) = key else { return };
        let mut inner = self.lock();
        let Some(&ino) = inner.by_key.get(&key) else {
            return;
        };
        Self::drop_if_gone(&mut inner, ino);
    }

    /// Discards unsynced data of `ino` if it has no links and no open handles,
    /// and forgets the node entirely once the kernel has forgotten it too.
    fn drop_if_gone(inner: &mut Inner, ino: u64) {
        if ino == 1 {
            return;
        }
        let Some(node) = inner.nodes.get(&ino) else {
            return;
        };
        let unlinked = sys::fstat(node.fd.as_raw_fd()).map_or(true, |st| st.st_nlink == 0);
        if let Some(f) = node.file.as_ref().filter(|_| unlinked && node.open == 0) {
            f.write().discard();
        }
        let dirty = node.file.as_ref().is_some_and(|f| f.read().is_dirty());
        if node.nlookup == 0 && node.open == 0 && !dirty {
            let key = node.key;
            inner.nodes.remove(&ino);
            if inner.by_key.get(&key) == Some(&ino) {
                inner.by_key.remove(&key);
            }
        }
    }

    fn new_handle(&self, handle: Handle) -> u64 {
        let mut inner = self.lock();
        let fh = inner.next_fh;
        inner.next_fh += 1;
        if let Some(node) = inner.nodes.get_mut(&handle.ino) {
            node.open += 1;
        }
        inner.handles.insert(fh, handle);
        fh
    }

    fn release_handle(&self, fh: FileHandle) {
        let mut inner = self.lock();
        let Some(handle) = inner.handles.remove(&fh.0) else {
            return;
        };
        if let Some(node) = inner.nodes.get_mut(&handle.ino) {
            node.open = node.open.saturating_sub(1);
        }
        Self::drop_if_gone(&mut inner, handle.ino);
    }

    fn handle_flags(&self, fh: FileHandle) -> (bool, Option<bool>) {
        self.lock()
            .handles
            .get(&fh.0)
            .map_or((false, None), |h| (h.append, h.sync))
    }

    fn all_files(&self) -> Vec<(u64, Arc<FileNode>)> {
        self.lock()
            .nodes
            .iter()
            .filter_map(|(&ino, n)| n.file.clone().map(|f| (ino, f)))
            .collect()
    }

    /// Drops every unsynced byte and pending size; returns the report and the
    /// inodes whose kernel caches should be invalidated.
    pub(crate) fn power_cut(&self) -> (PowerCutReport, Vec<u64>) {
        let mut report = PowerCutReport::default();
        let mut touched = Vec::new();
        for (ino, file) in self.all_files() {
            if let Some(bytes) = file.write().discard() {
                report.files += 1;
                report.bytes += bytes;
                touched.push(ino);
            }
        }
        let mut inner = self.lock();
        for &ino in &touched {
            Self::drop_if_gone(&mut inner, ino);
        }
        (report, touched)
    }

    pub(crate) fn unsynced_bytes(&self) -> u64 {
        self.all_files()
            .iter()
            .map(|(_, f)| f.read().unsynced_bytes())
            .sum()
    }

    fn open_dir_entries(&self, ino: INodeNo) -> Res<Vec<(u64, FileType, Vec<u8>)>> {
        let fd = self.fd_of(ino)?;
        let path = sys::proc_path(fd.as_raw_fd());
        let path = Path::new(OsStr::from_bytes(path.as_bytes()));
        let mut entries = vec![
            (ino.0, FileType::Directory, b".".to_vec()),
            (ino.0, FileType::Directory, b"..".to_vec()),
        ];
        for entry in std::fs::read_dir(path).map_err(errno)? {
            let entry = entry.map_err(errno)?;
            let kind = entry
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            use std::os::unix::fs::DirEntryExt;
            entries.push((entry.ino(), kind, entry.file_name().as_bytes().to_vec()));
        }
        Ok(entries)
    }

    #[allow(clippy::too_many_arguments)] // mirrors fuser's setattr
    fn do_setattr(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> Res<FileAttr> {
        let fd = self.fd_of(ino)?;
        let raw: RawFd = fd.as_raw_fd();
        let st = sys::fstat(raw).map_err(errno)?;
        let is_link = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
        if let Some(mode) = mode.filter(|_| !is_link) {
            sys::chmod_fd(raw, mode & 0o7777).map_err(errno)?;
        }
        if uid.is_some() || gid.is_some() {
            sys::chown_fd(raw, uid, gid).map_err(errno)?;
        }
        if let Some(size) = size {
            let file = self.file_node(ino.0)?;
            file.write().truncate(&file.file, size).map_err(errno)?;
        }
        if (atime.is_some() || mtime.is_some()) && !is_link {
            sys::utimes_fd(raw, atime.map(timespec), mtime.map(timespec)).map_err(errno)?;
        }
        self.getattr_ino(ino.0)
    }

    fn do_create(
        &self,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Res<(FileAttr, u64)> {
        let pfd = self.fd_of(parent)?;
        let file = sys::openat(
            pfd.as_raw_fd(),
            name,
            libc::O_CREAT | libc::O_RDWR | (flags & libc::O_EXCL),
            mode & !umask & 0o7777,
        )
        .map(File::from)
        .map_err(errno)?;
        let path_fd = sys::openat(pfd.as_raw_fd(), name, libc::O_PATH | libc::O_NOFOLLOW, 0)
            .map_err(errno)?;
        let st = sys::fstat(path_fd.as_raw_fd()).map_err(errno)?;
        let ino = self.intern(path_fd, &st);
        let node = self.attach_file(ino, file);
        if flags & libc::O_TRUNC != 0 {
            node.write().truncate(&node.file, 0).map_err(errno)?;
        }
        let fh = self.new_handle(Handle {
            ino,
            append: flags & libc::O_APPEND != 0,
            sync: sync_mode(flags),
            dir: None,
        });
        Ok((self.getattr_ino(ino)?, fh))
    }

    fn do_write(&self, ino: INodeNo, fh: FileHandle, offset: u64, data: &[u8]) -> Res<u32> {
        let (append, sync) = self.handle_flags(fh);
        let file = self.file_node(ino.0)?;
        let mut state = file.write();
        let offset = if append {
            state.size(&file.file).map_err(errno)?
        } else {
            offset
        };
        state.write(&file.file, offset, data).map_err(errno)?;
        if let Some(datasync) = sync {
            state.sync(&file.file, datasync).map_err(errno)?;
        }
        Ok(data.len() as u32)
    }

    /// Runs `make` in `parent`, then looks the new entry up.
    fn make_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
        make: impl FnOnce(RawFd) -> io::Result<()>,
    ) -> Res<FileAttr> {
        let pfd = self.fd_of(parent)?;
        make(pfd.as_raw_fd()).map_err(errno)?;
        self.lookup_name(parent, name)
    }

    fn key_at(&self, parent: &OwnedFd, name: &OsStr) -> Option<(u64, u64)> {
        sys::lstatat(parent.as_raw_fd(), name)
            .ok()
            .map(|st| (st.st_dev, st.st_ino))
    }
}

fn sync_mode(flags: i32) -> Option<bool> {
    if flags & libc::O_SYNC == libc::O_SYNC {
        Some(false)
    } else if flags & libc::O_DSYNC != 0 {
        Some(true)
    } else {
        None
    }
}

/// The `fuser::Filesystem` implementation; a thin shell over [`Shared`].
#[derive(Debug)]
pub(crate) struct LazyFsImpl {
    pub(crate) shared: Arc<Shared>,
}
