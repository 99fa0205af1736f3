//! Fault-injection points for fault tests (the `fail` crate): each is inactive unless the
//! `FAILPOINTS` environment variable names it when the node starts. A point here only holds
//! the task that reaches it, asynchronously, for the milliseconds its `return(ms)` action
//! names, so a test can kill -9 a process inside a window that is otherwise milliseconds
//! long, e.g. `FAILPOINTS='move_frozen=1*return(3000)'`:
//! - `move_frozen`: a copied slot's source leader, right after `Out` froze the slot, before
//!   the tail and the `In` go to the target;
//! - `move_activate`: a target leader that learnt the source committed `Done` (from its
//!   nudge or its own check), before it commits `Activate` and serves the slot.

use std::time::Duration;

/// Holds for the time `FAILPOINTS` gives `name` (no time, and no cost beyond a lookup, when
/// it names none).
pub async fn hold(name: &str) {
    let ms = fail::eval(name, |arg| arg.and_then(|a| a.trim().parse::<u64>().ok())).flatten();
    if let Some(ms) = ms {
        tracing::warn!(
            failpoint = name,
            ms,
            "holding at a fault-injection point (FAILPOINTS)"
        );
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}
