//! The "page cache": unsynced data of one regular file, held in memory.
//!
//! Nothing in here touches the backing file except through [`FileData::sync`],
//! which is the only way data becomes durable.  Everything else either reads
//! the backing file (to fill a page before a partial write, or to serve clean
//! ranges) or changes in-memory state, which is exactly what a power cut may
//! take away ([`FileData::discard`]).
//!
//! Model of one dirty file (`Dirty`):
//! - `pages`: 4 KiB pages that were written since the last sync, keyed by
//!   page index.  Bytes of a page at or beyond `size` are always zero.
//! - `size`: the logical (pending) file size that `getattr`/`read` report.
//! - `floor`: the smallest size the file had since the last sync (its backing
//!   size when it became dirty, lowered by truncates).  Backing bytes at or
//!   beyond `floor` are hidden: a truncate followed by an extension must read
//!   zeros there, not the old backing bytes.
//!
//! Invariant: `floor <= size`, and `floor <=` the backing file's length.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Granularity of the in-memory page cache.
pub(crate) const PAGE_SIZE: u64 = 4096;

/// Unsynced state of a file (see the module doc).
#[derive(Debug)]
struct Dirty {
    pages: BTreeMap<u64, Box<[u8]>>,
    size: u64,
    floor: u64,
}

/// Data state of one regular file: clean (`None`) or with unsynced changes.
#[derive(Debug, Default)]
pub(crate) struct FileData {
    dirty: Option<Dirty>,
}

/// Reads `buf.len()` bytes at `offset`; bytes beyond the end of `file` stay as they are.
fn read_full_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, offset) {
            Ok(0) => break,
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Dirty {
    fn new(backing_len: u64) -> Self {
        Dirty {
            pages: BTreeMap::new(),
            size: backing_len,
            floor: backing_len,
        }
    }

    /// Fills `buf` (pre-zeroed) with the logical content at `offset`; the caller clips to `size`.
    fn read_into(&self, backing: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        while pos < end {
            let idx = pos / PAGE_SIZE;
            let page_start = idx * PAGE_SIZE;
            if let Some(page) = self.pages.get(&idx) {
                let in_page = (pos - page_start) as usize;
                let n = (PAGE_SIZE - (pos - page_start)).min(end - pos) as usize;
                let at = (pos - offset) as usize;
                buf[at..at + n].copy_from_slice(&page[in_page..in_page + n]);
                pos += n as u64;
            } else {
                // A clean run up to the next dirty page: backing below `floor`, zeros above.
                let next_dirty = self
                    .pages
                    .range(idx + 1..)
                    .next()
                    .map_or(u64::MAX, |(k, _)| k * PAGE_SIZE);
                let run_end = end.min(next_dirty);
                let backing_end = run_end.min(self.floor);
                if pos < backing_end {
                    let from = (pos - offset) as usize;
                    let to = (backing_end - offset) as usize;
                    read_full_at(backing, &mut buf[from..to], pos)?;
                }
                pos = run_end;
            }
        }
        Ok(())
    }

    /// The page at `idx`, loaded from the current logical content if not dirty yet.
    fn page_mut(&mut self, backing: &File, idx: u64) -> io::Result<&mut [u8]> {
        if !self.pages.contains_key(&idx) {
            let mut page = vec![0u8; PAGE_SIZE as usize].into_boxed_slice();
            let start = idx * PAGE_SIZE;
            let backing_end = (start + PAGE_SIZE).min(self.floor);
            if start < backing_end {
                read_full_at(backing, &mut page[..(backing_end - start) as usize], start)?;
            }
            self.pages.insert(idx, page);
        }
        Ok(self.pages.get_mut(&idx).expect("page just inserted"))
    }

    /// Unsynced bytes: dirty pages, each clipped at the logical end of file.
    fn bytes(&self) -> u64 {
        self.pages
            .keys()
            .map(|idx| {
                let start = idx * PAGE_SIZE;
                self.size.saturating_sub(start).min(PAGE_SIZE)
            })
            .sum()
    }

    /// Makes this state durable in `backing` (does not fsync).
    fn write_back(&self, backing: &File) -> io::Result<()> {
        let backing_len = backing.metadata()?.len();
        if self.floor < backing_len {
            backing.set_len(self.floor)?;
        }
        for (idx, page) in &self.pages {
            let start = idx * PAGE_SIZE;
            if start >= self.size {
                continue;
            }
            let n = (self.size - start).min(PAGE_SIZE) as usize;
            backing.write_all_at(&page[..n], start)?;
        }
        if backing.metadata()?.len() != self.size {
            backing.set_len(self.size)?;
        }
        Ok(())
    }
}

impl FileData {
    fn dirty_mut(&mut self, backing: &File) -> io::Result<&mut Dirty> {
        if self.dirty.is_none() {
            let len = backing.metadata()?.len();
            self.dirty = Some(Dirty::new(len));
        }
        Ok(self.dirty.as_mut().expect("dirty state just created"))
    }

    /// The logical size: pending size if dirty, else the backing file's size.
    pub(crate) fn size(&self, backing: &File) -> io::Result<u64> {
        match &self.dirty {
            Some(d) => Ok(d.size),
            None => Ok(backing.metadata()?.len()),
        }
    }

    /// The pending size, if the file has unsynced state.
    pub(crate) fn pending_size(&self) -> Option<u64> {
        self.dirty.as_ref().map(|d| d.size)
    }

    /// Reads up to `len` bytes at `offset` of the logical content (short at EOF).
    pub(crate) fn read(&self, backing: &File, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        let size = self.size(backing)?;
        if offset >= size {
            return Ok(Vec::new());
        }
        let end = size.min(offset.saturating_add(u64::from(len)));
        let mut buf = vec![0u8; (end - offset) as usize];
        match &self.dirty {
            None => read_full_at(backing, &mut buf, offset)?,
            Some(d) => d.read_into(backing, offset, &mut buf)?,
        }
        Ok(buf)
    }

    /// Buffers a write at `offset`; returns nothing durable.
    pub(crate) fn write(&mut self, backing: &File, offset: u64, data: &[u8]) -> io::Result<()> {
        let d = self.dirty_mut(backing)?;
        let end = offset + data.len() as u64;
        let mut pos = offset;
        while pos < end {
            let idx = pos / PAGE_SIZE;
            let in_page = (pos - idx * PAGE_SIZE) as usize;
            let n = (PAGE_SIZE as usize - in_page).min((end - pos) as usize);
            let src = (pos - offset) as usize;
            let page = d.page_mut(backing, idx)?;
            page[in_page..in_page + n].copy_from_slice(&data[src..src + n]);
            pos += n as u64;
        }
        d.size = d.size.max(end);
        Ok(())
    }

    /// Pending truncate (or extension) to `new_size`.
    pub(crate) fn truncate(&mut self, backing: &File, new_size: u64) -> io::Result<()> {
        let d = self.dirty_mut(backing)?;
        if new_size < d.size {
            let first_gone = new_size.div_ceil(PAGE_SIZE);
            drop(d.pages.split_off(&first_gone));
            let tail = (new_size % PAGE_SIZE) as usize;
            let partial = d.pages.get_mut(&(new_size / PAGE_SIZE));
            if let Some(page) = partial.filter(|_| tail != 0) {
                page[tail..].fill(0);
            }
            d.floor = d.floor.min(new_size);
        }
        d.size = new_size;
        Ok(())
    }

    /// fsync/fdatasync: writes the unsynced state to `backing` and syncs it.
    ///
    /// On error the in-memory state is kept, so the logical content is unchanged.
    pub(crate) fn sync(&mut self, backing: &File, datasync: bool) -> io::Result<()> {
        if let Some(d) = &self.dirty {
            d.write_back(backing)?;
        }
        if datasync {
            backing.sync_data()?;
        } else {
            backing.sync_all()?;
        }
        self.dirty = None;
        Ok(())
    }

    /// Power cut (or unlink): forgets unsynced state; returns the bytes dropped,
    /// or `None` if the file had no unsynced state.
    pub(crate) fn discard(&mut self) -> Option<u64> {
        self.dirty.take().map(|d| d.bytes())
    }

    /// Bytes currently unsynced (page granular, clipped at EOF).
    pub(crate) fn unsynced_bytes(&self) -> u64 {
        self.dirty.as_ref().map_or(0, Dirty::bytes)
    }

    /// Whether there is unsynced state (data or size).
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backing_with(content: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, content).unwrap();
        f
    }

    fn all(fd: &FileData, b: &File) -> Vec<u8> {
        fd.read(b, 0, u32::MAX).unwrap()
    }

    fn on_disk(b: &File) -> Vec<u8> {
        let mut v = vec![0u8; b.metadata().unwrap().len() as usize];
        read_full_at(b, &mut v, 0).unwrap();
        v
    }

    #[test]
    fn write_read_merge_and_sync() {
        let orig: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let b = backing_with(&orig);
        let mut fd = FileData::default();
        fd.write(&b, 5000, b"XXXX").unwrap();
        let mut want = orig.clone();
        want[5000..5004].copy_from_slice(b"XXXX");
        assert_eq!(all(&fd, &b), want);
        assert_eq!(on_disk(&b), orig, "backing untouched before sync");
        assert_eq!(fd.unsynced_bytes(), PAGE_SIZE);
        fd.sync(&b, true).unwrap();
        assert!(!fd.is_dirty());
        assert_eq!(on_disk(&b), want);
    }

    #[test]
    fn truncate_then_extend_reads_zeros() {
        let b = backing_with(&[7u8; 9000]);
        let mut fd = FileData::default();
        fd.truncate(&b, 100).unwrap();
        assert_eq!(fd.size(&b).unwrap(), 100);
        fd.write(&b, 8000, b"end").unwrap();
        let got = all(&fd, &b);
        assert_eq!(got.len(), 8003);
        assert!(got[..100].iter().all(|&x| x == 7));
        assert!(got[100..8000].iter().all(|&x| x == 0));
        assert_eq!(&got[8000..], b"end");
        fd.sync(&b, false).unwrap();
        assert_eq!(on_disk(&b), got);
    }

    #[test]
    fn discard_restores_backing_view() {
        let b = backing_with(b"durable");
        let mut fd = FileData::default();
        fd.write(&b, 7, &[1u8; 20_000]).unwrap();
        fd.truncate(&b, 3).unwrap();
        fd.write(&b, 0, b"new").unwrap();
        assert_eq!(fd.discard(), Some(3));
        assert_eq!(all(&fd, &b), b"durable");
        assert_eq!(fd.discard(), None);
    }

    #[test]
    fn sparse_write_beyond_eof() {
        let b = backing_with(b"abc");
        let mut fd = FileData::default();
        fd.write(&b, 3 * PAGE_SIZE + 10, b"z").unwrap();
        let got = all(&fd, &b);
        assert_eq!(got.len() as u64, 3 * PAGE_SIZE + 11);
        assert_eq!(&got[..3], b"abc");
        assert!(got[3..got.len() - 1].iter().all(|&x| x == 0));
        // Clean pages in between are not held in memory.
        assert_eq!(fd.unsynced_bytes(), 11);
        fd.sync(&b, true).unwrap();
        assert_eq!(on_disk(&b), got);
    }
}
