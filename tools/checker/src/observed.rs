//! Writes whose value no read ever shows, and what the search may do with them.
//!
//! A put or append of a non-empty value `v` is *unobserved* if `v` is not a substring of any ok
//! read's result. Once such a write takes effect the state contains `v` until the next put or
//! delete (appends only add to it), so no read can succeed in between: it would have shown `v`.
//! Two consequences make the search much cheaper without changing its verdict:
//!
//! * **Info writes that are unobserved are dropped.** Info ops may take effect at any time, or
//!   never, so each stays a candidate for the rest of the history, and refuting a history means
//!   refuting every subset of them in every position: exponential. Dropping one is sound: a
//!   linearization in which it acts is still one without it, because nothing reads the state in
//!   the window where they differ, and after the next put or delete the states agree again.
//! * **Ok writes that are unobserved lead to one "poisoned" state** ([`crate::model`]), whatever
//!   the string would be. All such states behave alike (every get fails, appends keep the poison,
//!   a put or delete ends it), so the memo merges them. Without this, k concurrent appends that a
//!   later put wipes out before anyone reads them would be explored in all k! orders.
//!
//! Info deletes are always kept (a `null` read or a shorter value shows them).

use std::collections::HashMap;

use crate::history::{Op, OpKind, Status};

/// For each op, whether it is a put or append of a non-empty value that no ok read shows.
pub(crate) fn unobserved_writes(ops: &[&Op]) -> Vec<bool> {
    let reads = maximal_reads(ops);
    let mut seen: HashMap<&str, bool> = HashMap::new();
    ops.iter()
        .map(|op| {
            let value = op.written();
            matches!(op.kind, OpKind::Put | OpKind::Append)
                && !value.is_empty()
                && !*seen
                    .entry(value)
                    .or_insert_with(|| reads.iter().any(|r| r.contains(value)))
        })
        .collect()
}

/// `ops` without the unobserved info writes, and the unobserved flags of those kept.
pub(crate) fn drop_unobserved_info<'a>(ops: &[&'a Op]) -> (Vec<&'a Op>, Vec<bool>) {
    let unobserved = unobserved_writes(ops);
    ops.iter()
        .zip(unobserved)
        .filter(|(op, unobserved)| !(*unobserved && op.status == Status::Info))
        .map(|(op, unobserved)| (*op, unobserved))
        .unzip()
}

/// The distinct ok read results that are not a prefix of another one. A value that is a substring
/// of some read is a substring of one of these, and in append-heavy histories (where every read
/// extends the previous ones) there are only a few of them.
fn maximal_reads<'a>(ops: &[&'a Op]) -> Vec<&'a str> {
    let mut reads: Vec<&str> = ops
        .iter()
        .filter(|op| op.kind == OpKind::Get && op.status == Status::Ok)
        .filter_map(|op| op.result.as_deref())
        .collect();
    reads.sort_unstable();
    reads.dedup();
    // In sorted order, a string that is a prefix of any other is a prefix of its successor.
    let mut maximal = Vec::new();
    for (i, read) in reads.iter().enumerate() {
        if reads.get(i + 1).is_none_or(|next| !next.starts_with(read)) {
            maximal.push(*read);
        }
    }
    maximal
}
