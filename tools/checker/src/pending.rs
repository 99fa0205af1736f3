//! Pruning orders of concurrent appends that the next read already rules out.
//!
//! The search tries concurrent ops in every order until a read refutes the wrong ones. For puts
//! and deletes that is cheap (the state is the last value written, so orders collapse in the
//! memo), but every order of k concurrent appends gives a different string: up to k! states,
//! each carried forward until the next read.
//!
//! So the search keeps the not-yet-linearized puts and deletes by invoke time and the ok gets by
//! completion time, and checks every new state against the earliest-completing pending get. Until
//! that get only pending ops invoked by its completion can act. Either the state grows into what
//! the get returned by appends alone, so it is absent or a prefix of the result, or some pending
//! put or delete acts first and the last of them leaves a state that appends can grow into the
//! result (a put of a prefix of it, or a delete). Either way the appends must supply the rest: it
//! can be no longer than their values together, and must end with one of them. A state that fails
//! this is dropped at once.

use std::collections::BTreeSet;

use crate::history::{Op, OpKind};
use crate::model::{Model, StateId};

/// The pending ops this pruning looks at.
pub(crate) struct Pending<'a> {
    ops: &'a [&'a Op],
    /// Puts and deletes, by (invoke time, op).
    resets: BTreeSet<(u64, usize)>,
    /// Appends, by (invoke time, op).
    appends: BTreeSet<(u64, usize)>,
    /// Ok gets, by (completion time, op).
    reads: BTreeSet<(u64, usize)>,
}

impl<'a> Pending<'a> {
    /// All of `ops` pending.
    pub(crate) fn new(ops: &'a [&'a Op]) -> Pending<'a> {
        let mut pending = Pending {
            ops,
            resets: BTreeSet::new(),
            appends: BTreeSet::new(),
            reads: BTreeSet::new(),
        };
        for op in 0..ops.len() {
            pending.insert(op);
        }
        pending
    }

    /// Op `op` is pending again (the search undid it).
    pub(crate) fn insert(&mut self, op: usize) {
        let (set, key) = self.entry(op);
        set.insert(key);
    }

    /// Op `op` has been linearized.
    pub(crate) fn remove(&mut self, op: usize) {
        let (set, key) = self.entry(op);
        set.remove(&key);
    }

    /// The set tracking op `i`, and its key there.
    fn entry(&mut self, i: usize) -> (&mut BTreeSet<(u64, usize)>, (u64, usize)) {
        let op = self.ops[i];
        match op.kind {
            // Gets in the search are ok gets, so they have a completion time.
            OpKind::Get => (&mut self.reads, (op.deadline_ns().unwrap_or(u64::MAX), i)),
            OpKind::Put | OpKind::Delete => (&mut self.resets, (op.invoke_ns, i)),
            OpKind::Append => (&mut self.appends, (op.invoke_ns, i)),
        }
    }

    /// Whether `next`, the state right after `op` takes effect, can still lead to what the next
    /// pending get returned.
    pub(crate) fn viable(&self, model: &mut Model<'_>, next: StateId, op: usize) -> bool {
        let Some(&(read_end, read)) = self.reads.iter().find(|&&(_, i)| i != op) else {
            return true;
        };
        // Only pending ops invoked by the get's completion can act before it (ties are
        // concurrent).
        let by_read = |&&(start, i): &&(u64, usize)| start <= read_end && i != op;
        let Some(result) = self.ops[read].result.as_deref() else {
            // A null read: the key must be absent now or deleted before the read.
            return model.may_grow_into(next, read)
                || self
                    .resets
                    .iter()
                    .filter(by_read)
                    .any(|&(_, i)| self.ops[i].kind == OpKind::Delete);
        };
        let appends: Vec<&[u8]> = self
            .appends
            .iter()
            .take_while(|&&(start, _)| start <= read_end)
            .filter(by_read)
            .map(|&(_, i)| self.ops[i].written().as_bytes())
            .collect();
        let room: usize = appends.iter().map(|v| v.len()).sum();
        // Whether pending appends could turn `result[..base]` into `result`: the rest fits in
        // their values, and ends with one of them (the last append).
        let tail_fits = |base: usize| {
            let tail = &result.as_bytes()[base..];
            tail.is_empty()
                || (tail.len() <= room
                    && appends.iter().any(|v| !v.is_empty() && tail.ends_with(v)))
        };
        if model.may_grow_into(next, read) && tail_fits(model.len(next)) {
            return true;
        }
        // Otherwise a pending put or delete must act before the get, the last such leaving a
        // state the appends can grow into the result: a put of a prefix, or a delete.
        self.resets
            .iter()
            .take_while(|&&(start, _)| start <= read_end)
            .filter(by_read)
            .any(|&(_, i)| match self.ops[i].kind {
                OpKind::Put => {
                    let w = self.ops[i].written();
                    result.starts_with(w) && tail_fits(w.len())
                }
                _ => tail_fits(0),
            })
    }
}
