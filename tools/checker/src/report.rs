//! The result of checking a history: what was checked, which keys are not linearizable (each with
//! a small failing sub-history), which keys the search could not decide, and which acknowledged
//! writes went missing. `Display` is for humans; serde gives the same content as JSON for tools.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::budget::Exceeded;
use crate::history::{Op, OpKind, Status};
use crate::lost::LostWrite;

/// The overall answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every key is linearizable and no write was lost.
    Valid,
    /// At least one anomaly or lost write.
    Invalid,
    /// Nothing wrong found, but some key could not be decided within the budget.
    Unknown,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Valid => "VALID",
            Verdict::Invalid => "INVALID",
            Verdict::Unknown => "UNKNOWN",
        })
    }
}

/// A key whose history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    pub key: String,
    /// How many ops of the key were checked (fail ops and info gets excluded).
    pub key_ops: usize,
    /// A sub-history of the key that is itself not linearizable, sorted by invoke time.
    pub ops: Vec<Op>,
    /// Whether no single op of `ops` can be removed (see [`mod@crate::shrink`]).
    pub minimal: bool,
}

/// A key the search could not decide within its budget.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndecidedKey {
    pub key: String,
    pub key_ops: usize,
    pub reason: Exceeded,
}

/// Everything found in one history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Distinct keys in the history.
    pub keys: usize,
    /// Ops in the history.
    pub ops: usize,
    /// Ops the linearizability check considered (fail ops and info gets are dropped).
    pub ops_checked: usize,
    pub anomalies: Vec<Anomaly>,
    pub undecided: Vec<UndecidedKey>,
    pub lost_writes: Vec<LostWrite>,
}

impl Report {
    pub fn verdict(&self) -> Verdict {
        if !self.anomalies.is_empty() || !self.lost_writes.is_empty() {
            Verdict::Invalid
        } else if !self.undecided.is_empty() {
            Verdict::Unknown
        } else {
            Verdict::Valid
        }
    }

    /// Shorthand for `verdict() == Verdict::Valid`: an undecided key is not valid.
    pub fn is_valid(&self) -> bool {
        self.verdict() == Verdict::Valid
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} keys, {} ops ({} checked): {} non-linearizable keys, {} undecided keys, \
             {} lost writes",
            self.verdict(),
            self.keys,
            self.ops,
            self.ops_checked,
            self.anomalies.len(),
            self.undecided.len(),
            self.lost_writes.len()
        )?;
        for anomaly in &self.anomalies {
            writeln!(
                f,
                "\nkey {:?} is not linearizable ({} ops); {} failing sub-history of {} ops:",
                anomaly.key,
                anomaly.key_ops,
                if anomaly.minimal {
                    "minimal"
                } else {
                    "a (not minimal)"
                },
                anomaly.ops.len()
            )?;
            f.write_str(&render_ops(&anomaly.ops))?;
        }
        for undecided in &self.undecided {
            writeln!(
                f,
                "\nkey {:?} is undecided ({} ops): {}",
                undecided.key, undecided.key_ops, undecided.reason
            )?;
        }
        for lost in &self.lost_writes {
            writeln!(
                f,
                "\nkey {:?}: acknowledged {} is missing from the final read:",
                lost.key,
                lost.write.kind.name()
            )?;
            f.write_str(&render_ops(&[lost.write.clone(), lost.final_read.clone()]))?;
        }
        Ok(())
    }
}

/// Renders ops one per line, times relative to the earliest invoke, e.g.
///
/// ```text
///   p1         +0.000000ms ..     +0.010000ms  put "a"
///   p2         +0.020000ms ..     +0.030000ms  get -> "a"
///   p3         +0.040000ms ..              ∞  append "b"  (info: may or may not have happened)
/// ```
pub fn render_ops(ops: &[Op]) -> String {
    let base = ops.iter().map(|op| op.invoke_ns).min().unwrap_or(0);
    let mut out = String::new();
    for op in ops {
        let start = relative(op.invoke_ns, base);
        let end = match (op.status, op.complete_ns) {
            (Status::Info, _) => "∞".to_string(),
            (_, Some(t)) => relative(t, base),
            (_, None) => "?".to_string(),
        };
        let what = match op.kind {
            OpKind::Get => match &op.result {
                Some(r) => format!("get -> {}", quote(r)),
                None => "get -> null".to_string(),
            },
            OpKind::Put | OpKind::Append => format!("{} {}", op.kind.name(), quote(op.written())),
            OpKind::Delete => "delete".to_string(),
        };
        let note = match op.status {
            Status::Ok => "",
            Status::Info => "  (info: may or may not have happened)",
            Status::Fail => "  (fail: did not happen)",
        };
        out.push_str(&format!(
            "  p{:<6} {:>16} .. {:>16}  {what}{note}\n",
            op.process, start, end
        ));
    }
    out
}

/// `t - base` in milliseconds with nanosecond precision.
fn relative(t: u64, base: u64) -> String {
    let d = t.saturating_sub(base);
    format!("+{}.{:06}ms", d / 1_000_000, d % 1_000_000)
}

/// A quoted string, with the middle of long values elided (reads of long append chains).
fn quote(s: &str) -> String {
    const KEEP: usize = 28;
    let chars = s.chars().count();
    if chars <= 2 * KEEP + 4 {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(KEEP).collect();
    let tail: String = s.chars().skip(chars - KEEP).collect();
    format!(
        "\"{}…{}\" ({} bytes)",
        head.escape_debug(),
        tail.escape_debug(),
        s.len()
    )
}
