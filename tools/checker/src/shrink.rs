//! Shrinks a non-linearizable key history to a small sub-history that is still non-linearizable,
//! so that a human can see the anomaly in a handful of lines instead of thousands.
//!
//! The method is greedy delta debugging over the ops in invoke order: try removing a chunk of ops,
//! keep the removal if the rest still fails the check, halve the chunk size down to single ops,
//! and repeat until a whole round removes nothing (then no single op can be removed: the result is
//! 1-minimal). Big chunks go first because each check of a long history is expensive, and cutting
//! away whole stretches of time shrinks it fastest.
//!
//! One extra rule keeps the result honest: when a write goes, so do the reads whose value it may
//! have shaped (the `explain` module). Then every linearization of the bigger history still gives
//! one of the smaller, so the smaller history's failure is a genuine witness against the original,
//! not an artefact of what was cut. The catch: when a read shows thousands of appended values,
//! none of those appends can go without that read. The lost-write report ([`crate::lost`]) is the
//! readable diagnosis for that case.
//!
//! Every check runs under a budget and the whole shrink under another; when either runs out the
//! smallest failing history found so far is returned, marked not minimal.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::budget::Budget;
use crate::explain::Explanations;
use crate::history::Op;
use crate::search::{linearize, linearize_counted, Outcome};

/// Limits for [`shrink`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShrinkOptions {
    /// Maximum number of candidate checks.
    pub max_checks: usize,
    /// Maximum wall-clock time for the whole shrink.
    pub time_limit: Duration,
    /// Budget of each candidate check; a candidate that exhausts it is treated as passing.
    /// `max_steps: None` means four times the steps that checking the whole input took (at
    /// least 100 000): candidates are sub-histories, rarely much harder to refute.
    pub check_budget: Budget,
}

impl Default for ShrinkOptions {
    /// 20 000 checks, 10 s in all; each check 2 s, 512 MiB and the steps as above.
    fn default() -> ShrinkOptions {
        ShrinkOptions {
            max_checks: 20_000,
            time_limit: Duration::from_secs(10),
            check_budget: Budget {
                max_steps: None,
                time_limit: Some(Duration::from_secs(2)),
                max_memory: Some(Budget::DEFAULT_MEMORY),
            },
        }
    }
}

/// A failing sub-history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shrunk {
    /// The ops, sorted by invoke time; fail ops and info gets are never included.
    pub ops: Vec<Op>,
    /// Whether no single op could be removed (false if a budget ran out or a check was
    /// undecided).
    pub minimal: bool,
    /// How many candidate histories were checked.
    pub checks: usize,
}

/// Shrinks one key's ops. `None` if they are not non-linearizable, or that cannot be shown within
/// the time and memory of [`ShrinkOptions::check_budget`].
pub fn shrink(ops: &[Op], options: &ShrinkOptions) -> Option<Shrunk> {
    let mut relevant: Vec<&Op> = ops.iter().filter(|op| op.is_relevant()).collect();
    relevant.sort_by_key(|op| op.invoke_ns);
    let (kept, minimal, checks) = shrink_refs(&relevant, options, None)?;
    Some(Shrunk {
        ops: kept.into_iter().cloned().collect(),
        minimal,
        checks,
    })
}

/// [`shrink`] on filtered, sorted ops: the kept ops, whether minimal, and the number of checks.
/// `refuted_in` is the number of steps a search already took to find `ops` non-linearizable, if
/// one did (then it is not checked again).
pub(crate) fn shrink_refs<'a>(
    ops: &[&'a Op],
    options: &ShrinkOptions,
    refuted_in: Option<u64>,
) -> Option<(Vec<&'a Op>, bool, usize)> {
    let mut shrinker = Shrinker {
        ops,
        explanations: Explanations::new(ops),
        options,
        started: Instant::now(),
        max_steps: options.check_budget.max_steps,
        checks: 0,
        undecided: false,
        exhausted: false,
    };
    let steps = match refuted_in {
        Some(steps) => steps,
        None => {
            let (outcome, steps) = linearize_counted(ops, &shrinker.budget());
            shrinker.checks += 1;
            if outcome != Outcome::NotLinearizable {
                return None;
            }
            steps
        }
    };
    shrinker.max_steps = shrinker
        .max_steps
        .or(Some(steps.saturating_mul(4).max(100_000)));
    let mut current: Vec<usize> = (0..ops.len()).collect();
    let minimal = loop {
        shrinker.undecided = false;
        let changed = shrinker.remove_chunks(&mut current);
        if shrinker.exhausted {
            break false;
        }
        if !changed {
            break !shrinker.undecided;
        }
    };
    Some((
        current.into_iter().map(|i| ops[i]).collect(),
        minimal,
        shrinker.checks,
    ))
}

/// `ops` without op `i` and without the reads that this leaves unexplained: the candidate the
/// shrinker checks when it tries to remove op `i` alone.
#[cfg(test)]
pub(crate) fn without<'a>(ops: &[&'a Op], i: usize) -> Vec<&'a Op> {
    let mut kept: Vec<usize> = (0..ops.len()).filter(|&j| j != i).collect();
    Explanations::new(ops).close(&mut kept, &[i]);
    kept.into_iter().map(|j| ops[j]).collect()
}

struct Shrinker<'a, 'o> {
    /// The ops being shrunk; the shrinker works on indices into them.
    ops: &'o [&'a Op],
    explanations: Explanations,
    options: &'o ShrinkOptions,
    started: Instant,
    /// Step limit of each candidate check.
    max_steps: Option<u64>,
    checks: usize,
    /// A check in this round ran out of budget.
    undecided: bool,
    /// The shrink's own budget ran out.
    exhausted: bool,
}

impl Shrinker<'_, '_> {
    /// One delta-debugging pass, chunk sizes halving from half the ops down to 1. Returns
    /// whether anything was removed.
    fn remove_chunks(&mut self, current: &mut Vec<usize>) -> bool {
        let mut changed = false;
        let mut chunk = current.len().div_ceil(2).max(1);
        loop {
            let mut start = 0;
            while start < current.len() {
                if self.out_of_budget() {
                    return changed;
                }
                let end = (start + chunk).min(current.len());
                let mut candidate: Vec<usize> = current[..start]
                    .iter()
                    .chain(&current[end..])
                    .copied()
                    .collect();
                self.explanations
                    .close(&mut candidate, &current[start..end]);
                if self.fails(&candidate) {
                    *current = candidate;
                    changed = true;
                } else {
                    start = end;
                }
            }
            if chunk == 1 {
                return changed;
            }
            chunk = chunk.div_ceil(2);
        }
    }

    /// Whether the candidate is still non-linearizable.
    fn fails(&mut self, candidate: &[usize]) -> bool {
        self.checks += 1;
        let ops: Vec<&Op> = candidate.iter().map(|&i| self.ops[i]).collect();
        match linearize(&ops, &self.budget()) {
            Outcome::NotLinearizable => true,
            Outcome::Linearizable => false,
            Outcome::Unknown(_) => {
                self.undecided = true;
                false
            }
        }
    }

    /// The budget of the next check: the per-check budget, within what is left of the total.
    fn budget(&self) -> Budget {
        let left = self
            .options
            .time_limit
            .saturating_sub(self.started.elapsed());
        let per_check = self.options.check_budget;
        Budget {
            max_steps: self.max_steps,
            time_limit: Some(per_check.time_limit.map_or(left, |limit| limit.min(left))),
            max_memory: per_check.max_memory,
        }
    }

    fn out_of_budget(&mut self) -> bool {
        if self.checks >= self.options.max_checks
            || self.started.elapsed() >= self.options.time_limit
        {
            self.exhausted = true;
        }
        self.exhausted
    }
}
