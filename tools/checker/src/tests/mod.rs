//! Unit tests, with small builders for hand-written histories. Every op is on key `"k"` unless
//! moved with [`on`]; times are plain numbers (nanoseconds).

mod budget;
mod history;
mod lost;
mod model;
mod oracle;
mod pass;
mod random;
mod reject;
mod report;
mod shrink;

use crate::budget::Budget;
use crate::history::{Op, OpKind, Status};
use crate::search::{check_ops, Outcome};

fn op(
    kind: OpKind,
    process: u64,
    value: Option<&str>,
    result: Option<&str>,
    span: (u64, u64),
) -> Op {
    Op {
        process,
        key: "k".to_string(),
        kind,
        value: value.map(str::to_string),
        result: result.map(str::to_string),
        status: Status::Ok,
        invoke_ns: span.0,
        complete_ns: Some(span.1),
    }
}

/// An ok put of `v` by process `p` over `[inv, comp]`.
pub(crate) fn put(p: u64, v: &str, inv: u64, comp: u64) -> Op {
    op(OpKind::Put, p, Some(v), None, (inv, comp))
}

/// An ok append.
pub(crate) fn append(p: u64, v: &str, inv: u64, comp: u64) -> Op {
    op(OpKind::Append, p, Some(v), None, (inv, comp))
}

/// An ok delete.
pub(crate) fn delete(p: u64, inv: u64, comp: u64) -> Op {
    op(OpKind::Delete, p, None, None, (inv, comp))
}

/// An ok get that returned `r` (`None` = not found).
pub(crate) fn get(p: u64, r: Option<&str>, inv: u64, comp: u64) -> Op {
    op(OpKind::Get, p, None, r, (inv, comp))
}

/// The op with status info and no completion time.
pub(crate) fn info(mut op: Op) -> Op {
    op.status = Status::Info;
    op.complete_ns = None;
    op
}

/// The op with status fail.
pub(crate) fn fail(mut op: Op) -> Op {
    op.status = Status::Fail;
    op
}

/// The op moved to another key.
pub(crate) fn on(key: &str, mut op: Op) -> Op {
    op.key = key.to_string();
    op
}

/// Checks one key's ops with a generous but finite budget.
pub(crate) fn outcome(ops: &[Op]) -> Outcome {
    check_ops(ops, &Budget::steps(50_000_000))
}

/// A small deterministic PRNG (SplitMix64), so the randomised tests need no dependency and
/// every failure reproduces from its seed.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        crate::hash::mix(self.0)
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`/100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
