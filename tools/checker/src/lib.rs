//! Checks the histories that the unikv nemesis tests record: was every key linearizable, and did
//! any acknowledged write go missing?
//!
//! A test driver records one JSON line per completed operation (see [`history`]). This crate
//! reads those lines and
//!
//! * checks each key separately against a register-with-append model (single-key operations are
//!   independent, so a history is linearizable iff each key's sub-history is, which is called
//!   P-compositionality), with a Wing–Gong search memoised the way Lowe and Porcupine do
//!   ([`search`]);
//! * shrinks every failing key to a small sub-history that still fails, so a human can read why
//!   ([`mod@shrink`]);
//! * looks for acknowledged appends and puts that the final read of their key does not show
//!   ([`lost`]), a narrower but much easier to read diagnosis than a failed search;
//! * gathers everything into a [`Report`] that prints for humans and serialises to JSON.
//!
//! The `unikv-check` binary wraps [`check()`] for the command line.
//!
//! ```
//! use unikv_checker::{check, CheckOptions, History};
//!
//! let history: History = r#"
//! {"process":1,"key":"k","op":"put","value":"a","status":"ok","invoke_ns":0,"complete_ns":10}
//! {"process":2,"key":"k","op":"get","result":"a","status":"ok","invoke_ns":20,"complete_ns":30}
//! "#
//! .parse()?;
//! let report = check(&history, &CheckOptions::default());
//! assert!(report.is_valid());
//! # Ok::<(), unikv_checker::Error>(())
//! ```

mod bitset;
pub mod budget;
pub mod check;
pub mod error;
mod events;
mod explain;
mod hash;
pub mod history;
pub mod lost;
mod memo;
mod model;
mod observed;
mod pending;
pub mod report;
pub mod search;
pub mod shrink;

pub use budget::{Budget, Exceeded};
pub use check::{check, CheckOptions};
pub use error::{Error, Result};
pub use history::{History, Op, OpKind, Status};
pub use lost::{lost_writes, LostWrite};
pub use report::{render_ops, Anomaly, Report, UndecidedKey, Verdict};
pub use search::{check_ops, Outcome};
pub use shrink::{shrink, ShrinkOptions, Shrunk};

#[cfg(test)]
mod tests;
