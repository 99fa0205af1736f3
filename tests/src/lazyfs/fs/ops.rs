//! The `fuser::Filesystem` operations: each checks the stall gate where it touches file data,
//! then works through the inode and handle tables of the parent module.

use super::*;

impl Filesystem for LazyFsImpl {
    fn init(&mut self, _req: &Request, _config: &mut KernelConfig) -> io::Result<()> {
        // The defaults request neither FUSE_WRITEBACK_CACHE nor FUSE_POSIX_LOCKS:
        // writes reach us synchronously, and the kernel does POSIX/flock locking
        // locally (fine: all users of the mount live on this machine).
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.shared.lookup_name(parent, name) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut inner = self.shared.lock();
        if let Some(node) = inner.nodes.get_mut(&ino.0) {
            node.nlookup = node.nlookup.saturating_sub(nlookup);
        }
        Shared::drop_if_gone(&mut inner, ino.0);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.shared.getattr_ino(ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self
            .shared
            .do_setattr(ino, mode, uid, gid, size, atime, mtime)
        {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self
            .shared
            .fd_of(ino)
            .and_then(|fd| sys::readlink_fd(fd.as_raw_fd()).map_err(errno))
        {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let mode = mode & !(umask & 0o7777);
        match self
            .shared
            .make_entry(parent, name, |p| sys::mknodat(p, name, mode, rdev))
        {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mode = mode & !umask & 0o7777;
        match self
            .shared
            .make_entry(parent, name, |p| sys::mkdirat(p, name, mode))
        {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let res = self.shared.fd_of(parent).and_then(|p| {
            let key = self.shared.key_at(&p, name);
            sys::unlinkat(p.as_raw_fd(), name, 0).map_err(errno)?;
            self.shared.after_unlink(key);
            Ok(())
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let res = self
            .shared
            .fd_of(parent)
            .and_then(|p| sys::unlinkat(p.as_raw_fd(), name, libc::AT_REMOVEDIR).map_err(errno));
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        match self.shared.make_entry(parent, link_name, |p| {
            sys::symlinkat(target.as_os_str(), p, link_name)
        }) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let res = (|| {
            let p = self.shared.fd_of(parent)?;
            let np = self.shared.fd_of(newparent)?;
            // The inode a plain rename replaces (an exchange keeps both).
            let replaced = if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                None
            } else {
                self.shared.key_at(&np, newname)
            };
            sys::renameat2(p.as_raw_fd(), name, np.as_raw_fd(), newname, flags.bits())
                .map_err(errno)?;
            self.shared.after_unlink(replaced);
            Ok(())
        })();
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let res = self.shared.fd_of(ino).and_then(|fd| {
            self.shared.make_entry(newparent, newname, |np| {
                sys::link_fd(fd.as_raw_fd(), np, newname)
            })
        });
        match res {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let res = (|| {
            let file = self.shared.file_node(ino.0)?;
            if flags.0 & libc::O_TRUNC != 0 {
                file.write().truncate(&file.file, 0).map_err(errno)?;
            }
            Ok(self.shared.new_handle(Handle {
                ino: ino.0,
                append: flags.0 & libc::O_APPEND != 0,
                sync: sync_mode(flags.0),
                dir: None,
            }))
        })();
        match res {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.shared.wait_if_stalled();
        let res = self
            .shared
            .file_node(ino.0)
            .and_then(|file| file.read().read(&file.file, offset, size).map_err(errno));
        match res {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.shared.wait_if_stalled();
        match self.shared.do_write(ino, fh, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() is not fsync: nothing becomes durable here.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.shared.release_handle(fh);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.shared.wait_if_stalled();
        let delay = *self
            .shared
            .fsync_delay
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let res = self
            .shared
            .file_node(ino.0)
            .and_then(|file| file.write().sync(&file.file, datasync).map_err(errno));
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.shared.open_dir_entries(ino) {
            Ok(entries) => {
                let fh = self.shared.new_handle(Handle {
                    ino: ino.0,
                    append: false,
                    sync: None,
                    dir: Some(entries),
                });
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let inner = self.shared.lock();
        let Some(entries) = inner.handles.get(&fh.0).and_then(|h| h.dir.as_ref()) else {
            drop(inner);
            reply.error(Errno::EBADF);
            return;
        };
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        drop(inner);
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.shared.release_handle(fh);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory operations are already applied to the backing directory;
        // this just passes the fsync through.
        match self
            .shared
            .fd_of(ino)
            .and_then(|fd| sys::fsync_dir(fd.as_raw_fd(), datasync).map_err(errno))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match self
            .shared
            .fd_of(ino)
            .and_then(|fd| sys::statvfs_fd(fd.as_raw_fd()).map_err(errno))
        {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self
            .shared
            .fd_of(ino)
            .and_then(|fd| sys::access_fd(fd.as_raw_fd(), mask.bits()).map_err(errno))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.shared.do_create(parent, name, mode, umask, flags) {
            Ok((a, fh)) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        // Preallocation is an optimisation; RocksDB ignores its failure, and
        // glibc's posix_fallocate falls back to writing zeros (which we buffer).
        reply.error(Errno::EOPNOTSUPP);
    }
}
