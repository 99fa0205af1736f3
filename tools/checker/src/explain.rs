//! What the shrinker must remove along with a write, so that what remains is still a faithful
//! witness: every linearization of the bigger history, with the removed ops left out, must still be
//! a linearization of the smaller one. Removing a read never breaks that. Removing a write breaks
//! it for exactly the reads whose value the write may have shaped, so those reads go too:
//!
//! * a put or append of a non-empty value shaped the reads that *show* it, i.e. whose result
//!   contains the value (if a put is the last reset before a read, the read starts with its value;
//!   an append stays in the value until the next reset). Substring matching may also catch reads
//!   that merely contain the same text; dropping those too is only conservative;
//! * a delete (or a put or append of `""`, whose effect shows no text) may have shaped every read
//!   not surely before it, unless an ok put or delete surely lies in between, or the read's value
//!   cannot have been built after it (it is not null or empty and does not start with the value
//!   of any append).
//!
//! Without this the shrinker turns a stale read ("wrote 1, wrote 2, then read 1") into a one-op
//! "read of a value nobody wrote", or drops a delete and reports "appended, then read null": both
//! non-linearizable, neither what went wrong.
//!
//! The shows-relation is computed once per shrink. Reads are scanned in sorted order and each only
//! past its common prefix with the previous one, which inherits the rest: in an append-heavy
//! history, where every read extends an earlier one, that costs about the length of the longest
//! read instead of the sum of all of them.

use std::collections::{HashMap, HashSet};

use crate::history::{Op, OpKind, Status};

/// What each op of a list (by index) is, as far as removals are concerned.
pub(crate) struct Explanations {
    /// Per op: the ids of the written values its result shows (ok gets only).
    shown: Vec<Vec<u32>>,
    /// Per op: the id of the non-empty value it writes (puts and appends).
    written: Vec<Option<u32>>,
    /// Per op: whether it is a write whose effect shows no text (delete, put or append of "").
    blind: Vec<bool>,
    /// Per op: whether it is an ok put or delete, which surely replaces the whole value.
    reset: Vec<bool>,
    /// Per op: whether it is an ok get that a blind write could have shaped: its result is null,
    /// empty, or starts with the value of some append (the first one after the blind write).
    blind_read: Vec<bool>,
    /// Per op: invoke time and completion time (`u64::MAX` for info ops).
    span: Vec<(u64, u64)>,
    /// Number of distinct values.
    values: usize,
}

impl Explanations {
    pub(crate) fn new(ops: &[&Op]) -> Explanations {
        let mut ids: HashMap<&[u8], u32> = HashMap::new();
        let written: Vec<Option<u32>> = ops
            .iter()
            .map(|op| {
                let value = op.written().as_bytes();
                if !matches!(op.kind, OpKind::Put | OpKind::Append) || value.is_empty() {
                    return None;
                }
                let next = u32::try_from(ids.len()).unwrap_or(u32::MAX);
                Some(*ids.entry(value).or_insert(next))
            })
            .collect();
        let blind = ops
            .iter()
            .zip(&written)
            .map(|(op, value)| op.is_write() && value.is_none())
            .collect();
        let reset = ops
            .iter()
            .map(|op| op.status == Status::Ok && matches!(op.kind, OpKind::Put | OpKind::Delete))
            .collect();
        let appended: HashSet<&[u8]> = ops
            .iter()
            .filter(|op| op.kind == OpKind::Append && !op.written().is_empty())
            .map(|op| op.written().as_bytes())
            .collect();
        let mut append_lengths: Vec<usize> = appended.iter().map(|v| v.len()).collect();
        append_lengths.sort_unstable();
        append_lengths.dedup();
        let blind_read = ops
            .iter()
            .map(|op| {
                op.status == Status::Ok
                    && op.kind == OpKind::Get
                    && op.result.as_deref().is_none_or(|r| {
                        let r = r.as_bytes();
                        r.is_empty()
                            || append_lengths
                                .iter()
                                .any(|&len| r.get(..len).is_some_and(|p| appended.contains(p)))
                    })
            })
            .collect();
        let span = ops
            .iter()
            .map(|op| (op.invoke_ns, op.deadline_ns().unwrap_or(u64::MAX)))
            .collect();
        let mut lengths: Vec<usize> = ids.keys().map(|v| v.len()).collect();
        lengths.sort_unstable();
        lengths.dedup();
        // Distinct results, sorted, with the reads that returned each.
        let mut results: Vec<(&[u8], usize)> = ops
            .iter()
            .enumerate()
            .filter(|(_, op)| op.kind == OpKind::Get && op.status == Status::Ok)
            .filter_map(|(i, op)| op.result.as_deref().map(|r| (r.as_bytes(), i)))
            .collect();
        results.sort_unstable();

        let mut shown = vec![Vec::new(); ops.len()];
        // Occurrences in the previous result: (end position, value id), by end position.
        let mut previous: (&[u8], Vec<(usize, u32)>) = (&[], Vec::new());
        for (result, read) in results {
            if result != previous.0 {
                let common = result
                    .iter()
                    .zip(previous.0)
                    .take_while(|(a, b)| a == b)
                    .count();
                let mut found: Vec<(usize, u32)> = previous
                    .1
                    .iter()
                    .copied()
                    .take_while(|&(end, _)| end <= common)
                    .collect();
                for end in common + 1..=result.len() {
                    for &len in lengths.iter().take_while(|&&len| len <= end) {
                        if let Some(&id) = ids.get(&result[end - len..end]) {
                            found.push((end, id));
                        }
                    }
                }
                previous = (result, found);
            }
            let mut values: Vec<u32> = previous.1.iter().map(|&(_, id)| id).collect();
            values.sort_unstable();
            values.dedup();
            shown[read] = values;
        }
        Explanations {
            shown,
            written,
            blind,
            reset,
            blind_read,
            span,
            values: ids.len(),
        }
    }

    /// Removes from `kept` (indices of ops) the reads that the ops in `removed` may have shaped
    /// (see the module docs).
    pub(crate) fn close(&self, kept: &mut Vec<usize>, removed: &[usize]) {
        let mut gone = vec![false; self.values];
        // For each removed blind write: its invoke time, and the earliest completion of a kept
        // ok reset surely after it (reads invoked later are shielded from it).
        let mut blind: Vec<(u64, u64)> = Vec::new();
        for &i in removed {
            if let Some(v) = self.written[i] {
                gone[v as usize] = true;
            }
            if self.blind[i] {
                let (start, end) = self.span[i];
                let shield = kept
                    .iter()
                    .filter(|&&j| self.reset[j] && self.span[j].0 > end)
                    .map(|&j| self.span[j].1)
                    .min()
                    .unwrap_or(u64::MAX);
                blind.push((start, shield));
            }
        }
        kept.retain(|&i| {
            let (start, end) = self.span[i];
            let shaped_by_blind = self.blind_read[i]
                && blind
                    .iter()
                    .any(|&(write_start, shield)| end >= write_start && start <= shield);
            !shaped_by_blind && self.shown[i].iter().all(|&v| !gone[v as usize])
        });
    }
}
