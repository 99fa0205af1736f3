//! Checks a whole history: splits it by key, searches each key, shrinks the failures and looks for
//! lost writes. Keys are independent (every op touches one key), so a history is linearizable
//! exactly when every key's sub-history is, and checking them one by one keeps each search small.

use crate::budget::Budget;
use crate::history::History;
use crate::lost::lost_in_key;
use crate::report::{Anomaly, Report, UndecidedKey};
use crate::search::{linearize_counted, Outcome};
use crate::shrink::{shrink_refs, ShrinkOptions};

/// Budgets for [`check`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Budget of each key's search (default 10 s).
    pub budget: Budget,
    /// Limits for shrinking each failing key.
    pub shrink: ShrinkOptions,
}

/// Checks every key of the history for linearizability and lost writes.
pub fn check(history: &History, options: &CheckOptions) -> Report {
    let by_key = history.by_key();
    let mut report = Report {
        keys: by_key.len(),
        ops: history.ops.len(),
        ..Report::default()
    };
    for (key, ops) in &by_key {
        let relevant: Vec<_> = ops.iter().copied().filter(|op| op.is_relevant()).collect();
        report.ops_checked += relevant.len();
        let (outcome, steps) = linearize_counted(&relevant, &options.budget);
        match outcome {
            Outcome::Linearizable => {}
            Outcome::NotLinearizable => {
                let (ops, minimal) = match shrink_refs(&relevant, &options.shrink, Some(steps)) {
                    Some((kept, minimal, _)) => (kept, minimal),
                    None => (relevant.clone(), false),
                };
                report.anomalies.push(Anomaly {
                    key: key.to_string(),
                    key_ops: relevant.len(),
                    ops: ops.into_iter().cloned().collect(),
                    minimal,
                });
            }
            Outcome::Unknown(reason) => report.undecided.push(UndecidedKey {
                key: key.to_string(),
                key_ops: relevant.len(),
                reason,
            }),
        }
        report.lost_writes.extend(lost_in_key(ops));
    }
    report
}
