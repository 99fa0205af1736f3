//! A small file system of its own for a test's data dirs (tmpfs, mounted as root), and a
//! filler that takes every free byte of it — to run nodes out of disk space for real.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A tmpfs mounted at `path` until dropped.
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

fn c_path(p: &Path) -> std::io::Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` at `path` (created if missing).
    pub fn mount(path: &Path, bytes: u64) -> std::io::Result<Tmpfs> {
        std::fs::create_dir_all(path)?;
        let target = c_path(path)?;
        let opts = std::ffi::CString::new(format!("size={bytes},mode=0755")).expect("no NUL");
        // SAFETY: every pointer is a valid C string that outlives the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Free bytes (as root counts them).
    pub fn free_bytes(&self) -> u64 {
        free_bytes(&self.path)
    }

    /// Takes all but about `leave` free bytes with a file named `filler`, reserved with
    /// fallocate: first all but a margin of 8 MiB (retried with a fresh reading if the nodes
    /// took some room meanwhile), then, once, the rest but `leave`. Never more: a retry or a
    /// write loop at the brim would also eat space the nodes free for themselves, such as a
    /// released ballast; the nodes' own writes use up what is left. Returns its size.
    pub fn fill_leaving(&self, leave: u64) -> std::io::Result<u64> {
        use std::os::fd::AsRawFd;
        let path = self.filler();
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let reserve = |ask: u64| -> std::io::Result<bool> {
            if ask == 0 {
                return Ok(true);
            }
            let len = std::fs::metadata(&path)?.len();
            // SAFETY: a valid open fd; fallocate only reserves blocks of that file.
            let rc = unsafe {
                libc::fallocate(f.as_raw_fd(), 0, len as libc::off_t, ask as libc::off_t)
            };
            Ok(rc == 0)
        };
        let margin = leave.max(8 << 20);
        for _ in 0..16 {
            if reserve(self.free_bytes().saturating_sub(margin))? {
                break;
            }
        }
        reserve(self.free_bytes().saturating_sub(leave))?;
        Ok(std::fs::metadata(&path)?.len())
    }

    /// Gives the filler's space back.
    pub fn unfill(&self) -> std::io::Result<()> {
        match std::fs::remove_file(self.filler()) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn filler(&self) -> PathBuf {
        self.path.join("filler")
    }
}

/// Free bytes of the file system holding `path` (0 if it cannot be read).
pub fn free_bytes(path: &Path) -> u64 {
    let Ok(p) = c_path(path) else { return 0 };
    // SAFETY: an all-zero statvfs is a valid value; statvfs fills it in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `p` is a valid C string and `st` a valid out pointer.
    if unsafe { libc::statvfs(p.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    st.f_bfree.saturating_mul(st.f_frsize)
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Ok(p) = c_path(&self.path) {
            // SAFETY: a valid C string; a lazy unmount leaves nothing mounted behind.
            unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
