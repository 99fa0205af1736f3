//! The history of one run: every client operation with its invoke and completion times and
//! its outcome, written as JSON lines in the format `unikv-check` reads.
//!
//! Outcome rules (what the checker may assume):
//! - `ok`: the answer was a success (a get's 404 is an ok read of "absent").
//! - `fail`: definitely not applied. Only reads are ever marked `fail`: a read has no effect,
//!   so a failed read is simply dropped.
//! - `info`: anything else on a write (timeout, reset, 5xx, an error after the request may
//!   have reached a leader): it may or may not have taken effect.

use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;

pub use unikv_checker::{OpKind, Status};

/// One completed operation (one JSON line).
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub process: u64,
    pub key: String,
    pub op: OpKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A get's answer: `None` is absent (serialised as null); only meaningful for ok gets.
    #[serde(skip_serializing_if = "is_not_read")]
    pub result: Option<Option<String>>,
    pub status: Status,
    pub invoke_ns: u64,
    pub complete_ns: Option<u64>,
    /// What went wrong, for humans reading the history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_not_read(r: &Option<Option<String>>) -> bool {
    r.is_none()
}

/// Collects records from every client task; times are nanoseconds since the run began.
pub struct History {
    start: Instant,
    records: Mutex<Vec<Record>>,
}

impl History {
    pub fn new() -> History {
        History {
            start: Instant::now(),
            records: Mutex::new(Vec::new()),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, r: Record) {
        self.lock().push(r);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn count(&self, status: Status) -> usize {
        self.lock().iter().filter(|r| r.status == status).count()
    }

    /// Writes every record, ordered by invoke time, as JSON lines.
    pub fn write_jsonl(&self, path: &Path) -> anyhow::Result<()> {
        let mut records = self.lock().clone();
        records.sort_by_key(|r| r.invoke_ns);
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        for r in &records {
            serde_json::to_writer(&mut f, r)?;
            f.write_all(b"\n")?;
        }
        f.flush()?;
        Ok(())
    }
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}
