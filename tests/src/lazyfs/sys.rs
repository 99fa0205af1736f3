//! Thin, safe wrappers over the `*at` syscalls the passthrough needs.
//!
//! Every inode is held as an `O_PATH` file descriptor on the backing file
//! system (as libfuse's `passthrough_ll` does), so renames, hard links and
//! unlinks of open files need no path bookkeeping: operations are relative to
//! the parent directory's descriptor, and whole-inode operations go through
//! the `/proc/self/fd/N` magic link.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// Converts a `-1`-on-error return value into an `io::Result`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub(crate) fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `/proc/self/fd/N`: reopens (or addresses) the inode behind `fd`, even if unlinked.
pub(crate) fn proc_path(fd: RawFd) -> CString {
    CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL in a number")
}

pub(crate) fn openat(dir: RawFd, name: &OsStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let name = cstr(name)?;
    // SAFETY: `name` is a valid C string; the returned fd is owned by us.
    let fd = cvt(unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: `fd` was just returned by openat and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the inode behind the `O_PATH` descriptor `fd` for real I/O.
pub(crate) fn reopen(fd: RawFd, flags: i32) -> io::Result<File> {
    let path = proc_path(fd);
    // SAFETY: `path` is a valid C string.
    let new = cvt(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: `new` was just returned by open and is not owned elsewhere.
    Ok(unsafe { File::from_raw_fd(new) })
}

pub(crate) fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value; fstat fills it in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out pointer.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub(crate) fn lstatat(dir: RawFd, name: &OsStr) -> io::Result<libc::stat> {
    let name = cstr(name)?;
    // SAFETY: as in `fstat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    cvt(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

pub(crate) fn mkdirat(dir: RawFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: valid C string.
    cvt(unsafe { libc::mkdirat(dir, name.as_ptr(), mode as libc::mode_t) })?;
    Ok(())
}

pub(crate) fn mknodat(dir: RawFd, name: &OsStr, mode: u32, rdev: u32) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: valid C string.
    cvt(unsafe {
        libc::mknodat(
            dir,
            name.as_ptr(),
            mode as libc::mode_t,
            libc::dev_t::from(rdev),
        )
    })?;
    Ok(())
}

pub(crate) fn unlinkat(dir: RawFd, name: &OsStr, flags: i32) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: valid C string.
    cvt(unsafe { libc::unlinkat(dir, name.as_ptr(), flags) })?;
    Ok(())
}

pub(crate) fn symlinkat(target: &OsStr, dir: RawFd, name: &OsStr) -> io::Result<()> {
    let target = cstr(target)?;
    let name = cstr(name)?;
    // SAFETY: valid C strings.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir, name.as_ptr()) })?;
    Ok(())
}

/// Hard-links the inode behind the `O_PATH` descriptor `fd` as `dir/name`.
pub(crate) fn link_fd(fd: RawFd, dir: RawFd, name: &OsStr) -> io::Result<()> {
    let from = proc_path(fd);
    let name = cstr(name)?;
    // SAFETY: valid C strings.
    cvt(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            dir,
            name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })?;
    Ok(())
}

pub(crate) fn renameat2(
    dir: RawFd,
    name: &OsStr,
    new_dir: RawFd,
    new_name: &OsStr,
    flags: u32,
) -> io::Result<()> {
    let name = cstr(name)?;
    let new_name = cstr(new_name)?;
    // SAFETY: valid C strings.
    cvt(unsafe { libc::renameat2(dir, name.as_ptr(), new_dir, new_name.as_ptr(), flags) })?;
    Ok(())
}

/// Reads the target of the symlink behind the `O_PATH` descriptor `fd`.
pub(crate) fn readlink_fd(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `buf` is valid for `buf.len()` bytes; "" with an O_PATH fd reads that link.
    let n = unsafe { libc::readlinkat(fd, c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

pub(crate) fn chmod_fd(fd: RawFd, mode: u32) -> io::Result<()> {
    let path = proc_path(fd);
    // SAFETY: valid C string.
    cvt(unsafe { libc::chmod(path.as_ptr(), mode as libc::mode_t) })?;
    Ok(())
}

pub(crate) fn chown_fd(fd: RawFd, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    let uid = uid.unwrap_or(u32::MAX); // (uid_t)-1: leave unchanged
    let gid = gid.unwrap_or(u32::MAX);
    // SAFETY: "" with AT_EMPTY_PATH operates on `fd` itself.
    cvt(unsafe {
        libc::fchownat(
            fd,
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// Sets atime/mtime; `None` leaves a time unchanged, `Some(None)` means "now".
pub(crate) fn utimes_fd(
    fd: RawFd,
    atime: Option<Option<libc::timespec>>,
    mtime: Option<Option<libc::timespec>>,
) -> io::Result<()> {
    let conv = |t: Option<Option<libc::timespec>>| match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(None) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(Some(ts)) => ts,
    };
    let times = [conv(atime), conv(mtime)];
    let path = proc_path(fd);
    // SAFETY: valid C string and a 2-element timespec array.
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) })?;
    Ok(())
}

pub(crate) fn access_fd(fd: RawFd, mask: i32) -> io::Result<()> {
    let path = proc_path(fd);
    // SAFETY: valid C string.
    cvt(unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), mask, 0) })?;
    Ok(())
}

pub(crate) fn statvfs_fd(fd: RawFd) -> io::Result<libc::statvfs> {
    // SAFETY: an all-zero statvfs is valid; fstatvfs fills it in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer.
    cvt(unsafe { libc::fstatvfs(fd, &mut st) })?;
    Ok(st)
}

/// fsync of a directory (for `fsyncdir`).
pub(crate) fn fsync_dir(fd: RawFd, datasync: bool) -> io::Result<()> {
    let dir = reopen(fd, libc::O_RDONLY | libc::O_DIRECTORY)?;
    if datasync {
        dir.sync_data()
    } else {
        dir.sync_all()
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (each inode costs an fd).
pub(crate) fn raise_nofile_limit() {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// `umount2(path, MNT_DETACH)`: lazy unmount, the fallback when the mount is busy.
pub(crate) fn lazy_unmount(path: &std::path::Path) -> io::Result<()> {
    let path = cstr(path.as_os_str())?;
    // SAFETY: valid C string.
    cvt(unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) })?;
    Ok(())
}
