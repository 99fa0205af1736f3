//! Votes withheld for one leader lease after a restart.
//!
//! A follower that acknowledged a leader's heartbeat promises, through openraft's leader lease,
//! not to vote for anyone else for `election_max_ms`; the leader relies on that promise to
//! serve lease reads without a round trip. The promise lives in memory, so a follower killed
//! with -9 and restarted at once would forget it and could elect a second leader while the
//! first still trusts its lease (the stale read of docs/reliability.md). A node that starts
//! with a persisted vote (it cannot have acknowledged a leader without one) therefore neither
//! grants nor asks for votes — `VOTE` and `PRE_VOTE` in both directions, since a vote for
//! itself is as much a broken promise — until one lease has passed since the process started,
//! which is after any acknowledgement its previous life gave. It still follows a leader in
//! the meantime. A fresh node has promised nothing and votes at once.

use std::time::{Duration, Instant};

use openraft::storage::RaftLogReader;
use unikv_storage::LogStore;

use crate::config::Config;
use crate::error::{Error, Result};

/// When this process may vote again.
#[derive(Debug, Clone, Copy)]
pub struct VoteHold {
    until: Option<Instant>,
}

impl VoteHold {
    /// No hold: a node without persisted state never granted a lease.
    pub fn none() -> Self {
        Self { until: None }
    }

    /// Withholds votes for `lease` after `started` (taken before storage was opened).
    pub fn after_restart(started: Instant, lease: Duration) -> Self {
        Self {
            until: Some(started + lease),
        }
    }

    /// The hold of a process that started at `started` over `log_store`: one lease
    /// (`--election_max_ms`, openraft's leader lease) if a vote was persisted, else none.
    pub async fn for_start(
        config: &Config,
        log_store: &mut LogStore,
        started: Instant,
    ) -> Result<Self> {
        let vote = log_store
            .read_vote()
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
        if vote.is_none() {
            return Ok(Self::none());
        }
        tracing::info!(
            shard = %config.shard(), node = %config.node(), hold_ms = config.election_max_ms,
            "restarted with a persisted vote: no votes given or asked for one leader lease"
        );
        Ok(Self::after_restart(
            started,
            Duration::from_millis(config.election_max_ms),
        ))
    }

    /// Whether a vote request arriving at `now` must be refused.
    pub fn holds_at(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    /// Whether a vote request arriving now must be refused.
    pub fn holds(&self) -> bool {
        self.holds_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_node_votes_at_once() {
        assert!(!VoteHold::none().holds_at(Instant::now()));
    }

    #[test]
    fn a_restarted_node_refuses_for_exactly_one_lease() {
        let t0 = Instant::now();
        let lease = Duration::from_millis(1200);
        let hold = VoteHold::after_restart(t0, lease);
        assert!(hold.holds_at(t0));
        assert!(hold.holds_at(t0 + Duration::from_millis(1199)));
        assert!(!hold.holds_at(t0 + lease));
        assert!(!hold.holds_at(t0 + Duration::from_secs(60)));
    }
}
