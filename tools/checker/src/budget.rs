//! How much work a search may do. Refuting a history explores every configuration the search can
//! reach before the anomaly, which for a hot key with many concurrent clients can be millions;
//! rather than run for hours or exhaust memory, a search that hits its budget answers "unknown",
//! which the report keeps apart from both pass and fail.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::memo::Memo;

/// How much work one search may do before giving up with
/// [`Outcome::Unknown`](crate::Outcome::Unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Maximum search steps (one step considers one candidate op); `None` = no limit.
    pub max_steps: Option<u64>,
    /// Maximum wall-clock time; `None` = no limit.
    pub time_limit: Option<Duration>,
    /// Maximum size of the table of explored configurations, in bytes (the search's memory use
    /// is mostly this table); `None` = no limit. Refuting a history with a hot key and high
    /// concurrency can explore tens of millions of configurations, so leave this set.
    pub max_memory: Option<usize>,
}

impl Budget {
    /// No limit at all.
    pub const UNLIMITED: Budget = Budget {
        max_steps: None,
        time_limit: None,
        max_memory: None,
    };

    /// The default memory limit: 512 MiB.
    pub const DEFAULT_MEMORY: usize = 512 << 20;

    /// At most `steps` steps and the default memory, no time limit (deterministic, for tests).
    pub fn steps(steps: u64) -> Budget {
        Budget {
            max_steps: Some(steps),
            time_limit: None,
            max_memory: Some(Budget::DEFAULT_MEMORY),
        }
    }

    /// At most `limit` of wall-clock time and the default memory.
    pub fn time(limit: Duration) -> Budget {
        Budget {
            max_steps: None,
            time_limit: Some(limit),
            max_memory: Some(Budget::DEFAULT_MEMORY),
        }
    }
}

impl Default for Budget {
    /// Ten seconds and 512 MiB per key, no step limit.
    fn default() -> Budget {
        Budget::time(Duration::from_secs(10))
    }
}

/// Which limit of a [`Budget`] ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exceeded {
    /// The step limit (the limit given).
    Steps(u64),
    /// The time limit (the limit given, in milliseconds).
    TimeMs(u64),
    /// The memory limit (the limit given, in MiB).
    MemoryMib(u64),
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exceeded::Steps(n) => write!(f, "search gave up after {n} steps"),
            Exceeded::TimeMs(ms) => write!(f, "search gave up after {ms} ms"),
            Exceeded::MemoryMib(mib) => write!(f, "search gave up at {mib} MiB of memory"),
        }
    }
}

/// Counts steps against a [`Budget`], reading the clock and the memory only every 1024 steps.
pub(crate) struct Meter {
    pub(crate) steps: u64,
    max_steps: u64,
    deadline: Option<(Instant, Duration)>,
    max_memory: usize,
}

impl Meter {
    pub(crate) fn new(budget: &Budget) -> Meter {
        Meter {
            steps: 0,
            max_steps: budget.max_steps.unwrap_or(u64::MAX),
            deadline: budget.time_limit.and_then(|limit| {
                let deadline = Instant::now().checked_add(limit)?;
                Some((deadline, limit))
            }),
            max_memory: budget.max_memory.unwrap_or(usize::MAX),
        }
    }

    pub(crate) fn tick(&mut self, memo: &Memo) -> Option<Exceeded> {
        self.steps += 1;
        if self.steps > self.max_steps {
            return Some(Exceeded::Steps(self.max_steps));
        }
        if self.steps & 1023 != 0 {
            return None;
        }
        if memo.bytes() > self.max_memory {
            return Some(Exceeded::MemoryMib((self.max_memory >> 20) as u64));
        }
        let (deadline, limit) = self.deadline?;
        if Instant::now() >= deadline {
            let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
            return Some(Exceeded::TimeMs(ms));
        }
        None
    }
}
