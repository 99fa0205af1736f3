//! Mount-level tests (need root and `/dev/fuse`).  Each test mounts its own
//! instance under a fresh temporary directory.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::LazyFs;

/// A mounted LazyFs over `<tmp>/backing` at `<tmp>/mnt`.
/// Field order matters: the mount is dropped (unmounted) before the temp dir.
struct Fixture {
    fs: LazyFs,
    backing: PathBuf,
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&backing).unwrap();
    fs::create_dir(&mnt).unwrap();
    let fs = LazyFs::mount(&backing, &mnt).expect("mount lazyfs (needs root and /dev/fuse)");
    Fixture {
        fs,
        backing,
        mnt,
        _dir: dir,
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write_synced(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

/// Waits until `cond` holds (FUSE `release` is asynchronous to `close`).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn unsynced_write_is_visible_then_lost() {
    let fx = fixture();
    let new = fx.mnt.join("new.txt");
    fs::write(&new, b"hello, not durable").unwrap();
    assert_eq!(fs::read(&new).unwrap(), b"hello, not durable");
    assert_eq!(fs::metadata(&new).unwrap().len(), 18);
    assert_eq!(
        fs::metadata(fx.backing.join("new.txt")).unwrap().len(),
        0,
        "nothing reached the backing file"
    );

    let old = fx.mnt.join("old.txt");
    write_synced(&old, b"durable");
    fs::write(&old, b"replaced but never synced").unwrap();
    assert_eq!(fs::read(&old).unwrap(), b"replaced but never synced");
    assert!(fx.fs.unsynced_bytes() > 0);

    let report = fx.fs.power_cut();
    assert_eq!(report.files, 2);
    assert_eq!(report.bytes, 18 + 25);
    assert_eq!(fx.fs.unsynced_bytes(), 0);
    // Metadata is durable at once: the file exists, with its durable (empty) content.
    assert_eq!(fs::metadata(&new).unwrap().len(), 0);
    assert_eq!(fs::read(&new).unwrap(), b"");
    assert_eq!(fs::read(&old).unwrap(), b"durable");
}

#[test]
fn only_fsynced_prefix_survives() {
    let fx = fixture();
    let p = fx.mnt.join("log");
    let first = pattern(1, 100_000);
    let second = pattern(2, 50_000);
    let mut f = File::create(&p).unwrap();
    f.write_all(&first).unwrap();
    f.sync_data().unwrap();
    assert_eq!(fx.fs.unsynced_bytes(), 0);
    f.write_all(&second).unwrap();
    drop(f);
    assert_eq!(fs::metadata(&p).unwrap().len(), 150_000);

    fx.fs.power_cut();
    assert_eq!(fs::read(&p).unwrap(), first);

    // Kept across a second cut too, and appends via O_APPEND work.
    let mut f = OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(b"tail").unwrap();
    f.sync_all().unwrap();
    drop(f);
    fx.fs.power_cut();
    let mut want = first.clone();
    want.extend_from_slice(b"tail");
    assert_eq!(fs::read(&p).unwrap(), want);
}

#[test]
fn overwrite_and_truncate_revert() {
    let fx = fixture();
    let p = fx.mnt.join("data");
    let orig = pattern(3, 3 * 4096 + 123);
    write_synced(&p, &orig);

    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    f.write_all_at(b"XXXXXXXX", 5000).unwrap();
    let mut buf = vec![0u8; 16];
    f.read_exact_at(&mut buf, 4996).unwrap();
    assert_eq!(&buf[..4], &orig[4996..5000]);
    assert_eq!(&buf[4..12], b"XXXXXXXX");
    drop(f);
    assert_eq!(fx.fs.power_cut().files, 1);
    assert_eq!(fs::read(&p).unwrap(), orig);

    // A pending truncate is lost too...
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(10).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 10);
    drop(f);
    fx.fs.power_cut();
    assert_eq!(fs::read(&p).unwrap(), orig);

    // ...as is O_TRUNC, while a synced truncate + extension (zeros) is kept.
    fs::write(&p, b"short").unwrap();
    fx.fs.power_cut();
    assert_eq!(fs::read(&p).unwrap(), orig);
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(10).unwrap();
    f.write_all_at(b"!", 8191).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fx.fs.power_cut();
    let got = fs::read(&p).unwrap();
    assert_eq!(got.len(), 8192);
    assert_eq!(&got[..10], &orig[..10]);
    assert!(got[10..8191].iter().all(|&b| b == 0));
    assert_eq!(got[8191], b'!');
}

#[test]
fn rename_keeps_and_unlink_drops_dirty_data() {
    let fx = fixture();
    let a = fx.mnt.join("a.tmp");
    let b = fx.mnt.join("b");
    fs::write(&a, b"renamed before fsync").unwrap();
    fs::rename(&a, &b).unwrap();
    assert_eq!(fs::read(&b).unwrap(), b"renamed before fsync");
    // fsync through the new name (a read-only fd is enough for fsync).
    File::open(&b).unwrap().sync_all().unwrap();
    fx.fs.power_cut();
    assert!(!a.exists());
    assert_eq!(fs::read(&b).unwrap(), b"renamed before fsync");

    // Unlink of a closed file with dirty data frees it.
    let c = fx.mnt.join("c");
    fs::write(&c, pattern(4, 1 << 20)).unwrap();
    assert!(fx.fs.unsynced_bytes() >= 1 << 20);
    fs::remove_file(&c).unwrap();
    eventually("unlinked file's dirty data freed", || {
        fx.fs.unsynced_bytes() == 0
    });

    // Unlink of an open file: data stays readable until the last close.
    let d = fx.mnt.join("d");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&d)
        .unwrap();
    f.write_all(b"still open").unwrap();
    fs::remove_file(&d).unwrap();
    let mut buf = [0u8; 10];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"still open");
    assert_eq!(fx.fs.unsynced_bytes(), 10);
    drop(f);
    eventually("open-unlinked file freed on close", || {
        fx.fs.unsynced_bytes() == 0
    });

    // Renaming over a file with dirty data drops the replaced file's data.
    let e = fx.mnt.join("e");
    let g = fx.mnt.join("g");
    fs::write(&e, vec![1u8; 8192]).unwrap();
    fs::write(&g, b"winner").unwrap();
    fs::rename(&g, &e).unwrap();
    eventually("replaced file freed", || fx.fs.unsynced_bytes() == 6);
    assert_eq!(fs::read(&e).unwrap(), b"winner");
    let report = fx.fs.power_cut();
    assert_eq!((report.files, report.bytes), (1, 6));
    assert_eq!(
        fs::read(&e).unwrap(),
        b"",
        "durable state: created, never synced"
    );
    assert_eq!(
        fs::read(fx.backing.join("b")).unwrap(),
        b"renamed before fsync"
    );
}

#[test]
fn directory_ops_links_and_rename_flags() {
    let fx = fixture();
    let dir = fx.mnt.join("sub/dir");
    fs::create_dir_all(&dir).unwrap();
    write_synced(&dir.join("f"), b"one");
    fs::hard_link(dir.join("f"), fx.mnt.join("hard")).unwrap();
    std::os::unix::fs::symlink("sub/dir/f", fx.mnt.join("sym")).unwrap();
    assert_eq!(fs::read(fx.mnt.join("sym")).unwrap(), b"one");
    assert_eq!(
        fs::read_link(fx.mnt.join("sym")).unwrap(),
        Path::new("sub/dir/f")
    );
    // Dirty data written via one link is visible via the other (same inode).
    fs::write(fx.mnt.join("hard"), b"two").unwrap();
    assert_eq!(fs::read(dir.join("f")).unwrap(), b"two");
    fx.fs.power_cut();
    assert_eq!(fs::read(dir.join("f")).unwrap(), b"one");

    let mut names: Vec<_> = fs::read_dir(&fx.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["hard", "sub", "sym"]);

    // RENAME_NOREPLACE refuses to clobber.
    let from = std::ffi::CString::new(fx.mnt.join("hard").as_os_str().as_encoded_bytes()).unwrap();
    let to = std::ffi::CString::new(dir.join("f").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C strings.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EEXIST)
    );

    fs::remove_file(fx.mnt.join("sym")).unwrap();
    fs::remove_file(dir.join("f")).unwrap();
    fs::remove_dir(&dir).unwrap();
    assert!(!fx.backing.join("sub/dir").exists());

    // statfs passes through; fallocate is refused (RocksDB tolerates that).
    let st = nix_free_statvfs(&fx.mnt);
    assert!(st.f_blocks > 0);
    let f = File::create(fx.mnt.join("alloc")).unwrap();
    // SAFETY: plain syscall on an owned fd.
    let rc = unsafe {
        libc::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::FALLOC_FL_KEEP_SIZE,
            0,
            4096,
        )
    };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EOPNOTSUPP)
    );
}

fn nix_free_statvfs(path: &Path) -> libc::statvfs {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C string and out pointer.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(p.as_ptr(), &mut st), 0);
        st
    }
}

#[test]
fn concurrent_writers_then_fsync() {
    let fx = fixture();
    const THREADS: u64 = 8;
    const LEN: usize = 4 << 20;
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let path = fx.mnt.join(format!("file{t}"));
            s.spawn(move || {
                let data = pattern(100 + t, LEN);
                let f = File::create(&path).unwrap();
                // pwrite in 64 KiB chunks, back to front to exercise offsets.
                for chunk in (0..LEN / 65536).rev() {
                    let off = chunk * 65536;
                    f.write_all_at(&data[off..off + 65536], off as u64).unwrap();
                }
                f.sync_data().unwrap();
                // More data after the fsync, never synced.
                f.write_all_at(&pattern(t, 100_000), LEN as u64).unwrap();
            });
        }
    });
    let elapsed = start.elapsed();
    assert!(fx.fs.unsynced_bytes() >= THREADS * 100_000);
    let report = fx.fs.power_cut();
    assert_eq!(report.files, THREADS as usize);
    for t in 0..THREADS {
        let got = fs::read(fx.mnt.join(format!("file{t}"))).unwrap();
        assert!(got == pattern(100 + t, LEN), "file{t} differs");
    }
    assert!(elapsed < Duration::from_secs(60), "32 MiB took {elapsed:?}");
}

/// Runs a python3 program with arguments, returning the child.
fn python(script: &str, args: &[&str]) -> std::process::Child {
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3")
}

fn python_output(script: &str, args: &[&str]) -> String {
    let out = python(script, args).wait_with_output().unwrap();
    assert!(out.status.success(), "python failed: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn fcntl_locks_work_across_processes() {
    let fx = fixture();
    let lock = fx.mnt.join("LOCK");
    let lock = lock.to_str().unwrap();
    let hold = "import fcntl,sys,time\nf=open(sys.argv[1],'a+')\n\
                fcntl.lockf(f,fcntl.LOCK_EX|fcntl.LOCK_NB)\nprint('locked',flush=True)\ntime.sleep(600)";
    let try_lock = "import fcntl,sys\nf=open(sys.argv[1],'a+')\ntry:\n    \
                    fcntl.lockf(f,fcntl.LOCK_EX|fcntl.LOCK_NB)\n    print('locked')\n\
                    except OSError:\n    print('busy')";
    let mut holder = python(hold, &[lock]);
    let mut line = String::new();
    BufReader::new(holder.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    assert_eq!(python_output(try_lock, &[lock]), "busy");
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(python_output(try_lock, &[lock]), "locked");
}

/// Inserts rows forever, one commit each, printing each id once its commit returned.
/// `journal` is `DELETE` or `WAL`; WAL needs `locking_mode=EXCLUSIVE` here, because
/// shared-memory WAL mmaps the `-shm` file, which direct I/O files do not allow.
const SQLITE_WRITER: &str = r#"
import sqlite3, sys
db, journal, sync = sys.argv[1], sys.argv[2], sys.argv[3]
c = sqlite3.connect(db, isolation_level=None)
if journal == "WAL":
    c.execute("PRAGMA locking_mode=EXCLUSIVE")
assert c.execute("PRAGMA journal_mode=" + journal).fetchone()[0] == journal.lower()
c.execute("PRAGMA synchronous=" + sync)
c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
i = 0
while True:
    c.execute("INSERT INTO t(v) VALUES (?)", ("row %d " % i * 20,))
    print(i, flush=True)   # acknowledged: the commit returned
    i += 1
"#;

const SQLITE_COUNT: &str = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
if sys.argv[2] == "WAL":
    c.execute("PRAGMA locking_mode=EXCLUSIVE")
try:
    ok = c.execute("PRAGMA integrity_check").fetchone()[0]
    n = c.execute("SELECT count(*) FROM t").fetchone()[0]
    print(n, ok)
except sqlite3.DatabaseError as e:
    print(0, "error:", e)
"#;

/// Lets a writer acknowledge `n` commits, kill -9's it while it keeps writing,
/// cuts power, and returns (rows found, integrity_check result) after reopening.
fn sqlite_run(fx: &Fixture, journal: &str, sync: &str, n: usize) -> (usize, String) {
    let db = fx.mnt.join(format!("{journal}-{sync}.db"));
    let db = db.to_str().unwrap();
    let mut writer = python(SQLITE_WRITER, &[db, journal, sync]);
    let mut lines = BufReader::new(writer.stdout.take().unwrap()).lines();
    for i in 0..n {
        assert_eq!(lines.next().unwrap().unwrap(), i.to_string(), "writer died");
    }
    // Let it run on briefly so the SIGKILL lands in the middle of some commit.
    std::thread::sleep(Duration::from_millis(15));
    writer.kill().unwrap();
    writer.wait().unwrap();
    let report = fx.fs.power_cut();
    let out = python_output(SQLITE_COUNT, &[db, journal]);
    eprintln!("sqlite {journal} synchronous={sync}: cut dropped {report:?}; reopened: {out}");
    let (count, rest) = out.split_once(' ').unwrap();
    (count.parse().unwrap(), rest.to_string())
}

#[test]
fn sqlite_rollback_journal_full_survives_power_cut() {
    let fx = fixture();
    let (rows, check) = sqlite_run(&fx, "DELETE", "FULL", 200);
    assert!(rows >= 200, "lost acknowledged commits: {rows} < 200");
    assert_eq!(check, "ok");
}

#[test]
fn sqlite_rollback_journal_off_loses_rows() {
    let fx = fixture();
    let (rows, _) = sqlite_run(&fx, "DELETE", "OFF", 200);
    assert!(rows < 200, "negative control must lose data");
}

#[test]
fn sqlite_wal_full_survives_power_cut() {
    let fx = fixture();
    let (rows, check) = sqlite_run(&fx, "WAL", "FULL", 200);
    assert!(rows >= 200, "lost acknowledged commits: {rows} < 200");
    assert_eq!(check, "ok");
}

#[test]
fn sqlite_wal_off_loses_rows() {
    let fx = fixture();
    let (rows, _) = sqlite_run(&fx, "WAL", "OFF", 200);
    assert!(rows < 200, "negative control must lose data");
}

#[test]
fn drop_while_busy_detaches_without_hanging() {
    let fx = fixture();
    let mut held = File::create(fx.mnt.join("held")).unwrap();
    held.write_all(b"x").unwrap();
    let Fixture { fs, mnt, _dir, .. } = fx;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(fs);
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("Drop hung on a busy mount");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(mnt.to_str().unwrap()), "still mounted");
    // The detached instance still serves the open handle until it is closed.
    held.write_all(b"y").unwrap();
    drop(held);
}

#[test]
fn reads_and_sizes_of_untouched_files_pass_through() {
    let fx = fixture();
    let data = pattern(9, 70_000);
    fs::write(fx.backing.join("pre"), &data).unwrap();
    let mut f = File::open(fx.mnt.join("pre")).unwrap();
    let mut got = Vec::new();
    f.read_to_end(&mut got).unwrap();
    assert_eq!(got, data);
    assert_eq!(fx.fs.power_cut().files, 0);
}

#[test]
fn handle_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<LazyFs>();
}
