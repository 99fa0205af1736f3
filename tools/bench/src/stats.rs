//! Latency bookkeeping: every request's latency is kept (microseconds, 4 bytes each), so
//! percentiles are exact rather than bucketed; 60,000 requests/s for 10 s is 2.4 MB.

use std::time::Duration;

/// What one connection measured.
#[derive(Default)]
pub struct Recorder {
    pub reads: Vec<u32>,
    pub writes: Vec<u32>,
    /// Answers that were not a success (4xx/5xx, other than a read's 404 on unikv).
    pub bad_status: u64,
    /// Connection failures, timeouts and malformed answers.
    pub io_errors: u64,
    /// Writes acknowledged during the warm-up (not in the latencies; for per-write counters).
    pub warmup_writes: u64,
}

impl Recorder {
    pub fn record(&mut self, is_read: bool, latency: Duration) {
        let us = latency.as_micros().min(u32::MAX as u128) as u32;
        if is_read {
            self.reads.push(us);
        } else {
            self.writes.push(us);
        }
    }

    pub fn merge(&mut self, other: Recorder) {
        self.reads.extend(other.reads);
        self.writes.extend(other.writes);
        self.bad_status += other.bad_status;
        self.io_errors += other.io_errors;
        self.warmup_writes += other.warmup_writes;
    }
}

/// Percentiles of one set of latencies, in milliseconds.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Latency {
    pub ops: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(mut us: Vec<u32>) -> Latency {
        if us.is_empty() {
            return Latency::default();
        }
        us.sort_unstable();
        let at = |q: f64| {
            let i = ((us.len() as f64 * q).ceil() as usize).clamp(1, us.len()) - 1;
            us[i] as f64 / 1000.0
        };
        Latency {
            ops: us.len() as u64,
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: us[us.len() - 1] as f64 / 1000.0,
        }
    }
}

/// The result of one run: one line for humans, JSON for scripts.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub target: String,
    pub addr: String,
    pub workload: String,
    pub distribution: String,
    pub conns: usize,
    pub keys: u64,
    pub value_size: usize,
    pub secs: f64,
    pub ops: u64,
    pub ops_per_sec: f64,
    pub all: Latency,
    pub reads: Latency,
    pub writes: Latency,
    pub errors: u64,
    pub bad_status: u64,
    pub io_errors: u64,
    /// Every write acknowledged during the run, warm-up included (divide server-side counters
    /// sampled around the whole run by this).
    pub writes_acked_total: u64,
}

impl Summary {
    pub fn line(&self) -> String {
        format!(
            "RESULT target={} workload={} dist={} conns={} ops={} rps={:.0} p50={:.2}ms p90={:.2}ms \
             p99={:.2}ms max={:.2}ms errors={}",
            self.target,
            self.workload,
            self.distribution,
            self.conns,
            self.ops,
            self.ops_per_sec,
            self.all.p50_ms,
            self.all.p90_ms,
            self.all.p99_ms,
            self.all.max_ms,
            self.errors
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_exact() {
        let l = Latency::of((1..=1000).collect());
        assert_eq!(l.ops, 1000);
        assert_eq!(l.p50_ms, 0.5);
        assert_eq!(l.p99_ms, 0.99);
        assert_eq!(l.max_ms, 1.0);
        assert_eq!(Latency::of(vec![]).ops, 0);
    }
}
