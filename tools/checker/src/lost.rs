//! Lost acknowledged writes: a client was told "ok", yet the final read of the key does not show
//! the write and nothing could legitimately have overwritten it.
//!
//! This duplicates part of what the linearizability search finds, on purpose: a failed search over
//! thousands of appends is hard to read, while "append p3-17 was acknowledged at t and is missing
//! from the final read" is not. The rules are deliberately conservative (they must never raise a
//! false alarm), so they catch less than the search does.
//!
//! By convention the history ends with one read per key done after all faults have healed; the
//! *final read* of a key is its ok get with the latest invoke time. Only writes that completed
//! strictly before the final read was invoked are judged, and a write "could come later" than
//! another if it could take effect after it: an ok write that completed at or after the other's
//! invoke, or any info write (which may take effect at any time, or never). Writes invoked after
//! the final read completed cannot affect it and are ignored.
//!
//! * An ok **append** is lost if its value is not a substring of the final value, unless some
//!   put or delete could come later than it (that may have legitimately wiped it).
//! * An ok **put** is lost if the final value is not exactly its value, unless any other write
//!   (put, append or delete) could come later than it: it must be the last write, alone.
//! * An ok **delete** is lost if the final read finds a value, under the same rule as a put.

use serde::{Deserialize, Serialize};

use crate::history::{History, Op, OpKind, Status};

/// An acknowledged write missing from its key's final read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostWrite {
    pub key: String,
    /// The ok put, append or delete.
    pub write: Op,
    /// The final read that does not show it.
    pub final_read: Op,
}

/// Every lost write of the history, by key and then invoke time.
pub fn lost_writes(history: &History) -> Vec<LostWrite> {
    history
        .by_key()
        .into_values()
        .flat_map(|ops| lost_in_key(&ops))
        .collect()
}

/// The lost writes among one key's ops.
pub(crate) fn lost_in_key(ops: &[&Op]) -> Vec<LostWrite> {
    let Some(final_read) = ops
        .iter()
        .copied()
        .filter(|op| op.kind == OpKind::Get && op.status == Status::Ok)
        .max_by_key(|op| (op.invoke_ns, op.deadline_ns()))
    else {
        return Vec::new();
    };
    let read_end = final_read.deadline_ns().unwrap_or(u64::MAX);
    // Writes that may have taken effect before the final read.
    let writes: Vec<&Op> = ops
        .iter()
        .copied()
        .filter(|op| op.is_write() && op.status != Status::Fail && op.invoke_ns <= read_end)
        .collect();
    let seen = final_read.result.as_deref();

    let mut lost = Vec::new();
    for &write in &writes {
        let judged = write.status == Status::Ok
            && write
                .deadline_ns()
                .is_some_and(|end| end < final_read.invoke_ns);
        if !judged {
            continue;
        }
        let missing = match write.kind {
            OpKind::Append => {
                !seen.is_some_and(|s| s.contains(write.written()))
                    && !writes.iter().any(|w| {
                        matches!(w.kind, OpKind::Put | OpKind::Delete) && could_follow(w, write)
                    })
            }
            OpKind::Put | OpKind::Delete => {
                let expected = (write.kind == OpKind::Put).then(|| write.written());
                seen != expected
                    && !writes
                        .iter()
                        .any(|w| !std::ptr::eq(*w, write) && could_follow(w, write))
            }
            OpKind::Get => false,
        };
        if missing {
            lost.push(LostWrite {
                key: write.key.clone(),
                write: write.clone(),
                final_read: final_read.clone(),
            });
        }
    }
    lost
}

/// Whether `later` could take effect after `earlier`: unless it surely completed before
/// `earlier` was invoked (ties count as "could").
fn could_follow(later: &Op, earlier: &Op) -> bool {
    later
        .deadline_ns()
        .is_none_or(|end| end >= earlier.invoke_ns)
}
