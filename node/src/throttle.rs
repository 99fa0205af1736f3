//! `--move_rate_mb`: paces the hand-offs (of slots and chunks) a source starts so moves leave
//! room for foreground traffic. Each piece reserves `bytes / rate` seconds of a shared
//! timeline before it is sent, and before a unit is frozen (never while frozen: a paced wait there would be a longer write pause), so over any
//! stretch the bytes handed off stay at or below the rate, several hand-offs in flight
//! included. A rate of 0 paces nothing.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub struct Throttle {
    bytes_per_s: f64,
    /// When the next reservation may start.
    next_free: Mutex<Option<Instant>>,
}

impl Throttle {
    pub fn new(rate_mb: f64) -> Throttle {
        Throttle {
            bytes_per_s: rate_mb * 1024.0 * 1024.0,
            next_free: Mutex::new(None),
        }
    }

    /// The configured rate in bytes per second (0: unlimited).
    pub fn bytes_per_s(&self) -> f64 {
        self.bytes_per_s
    }

    /// Waits until `bytes` may be sent within the rate; returns how long it waited.
    pub async fn pace(&self, bytes: u64) -> Duration {
        if self.bytes_per_s <= 0.0 {
            return Duration::ZERO;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_s);
        let now = Instant::now();
        let start = {
            let mut next = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
            let start = next.map_or(now, |t| t.max(now));
            *next = Some(start + cost);
            start
        };
        tokio::time::sleep_until(start).await;
        start - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time at 100 MiB/s: reservations of 10 MiB are 100 ms each. Lower bounds only are
    // exact (a busy machine can only make waits longer).
    #[tokio::test]
    async fn moves_are_spread_out_to_the_rate() {
        let t = Throttle::new(100.0);
        let piece = 10 * 1024 * 1024;
        let t0 = Instant::now();
        assert_eq!(
            t.pace(piece).await,
            Duration::ZERO,
            "the first goes at once"
        );
        t.pace(piece).await;
        t.pace(piece / 2).await;
        // 10, 10 and 5 MiB: the third starts once 20 MiB worth of time has passed.
        assert!(
            t0.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t0.elapsed()
        );
        // Idle time is not saved up: after a pause, the next waits only for what is reserved.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(t.pace(piece).await, Duration::ZERO);
        assert!(t.pace(piece).await >= Duration::from_millis(90));
    }

    #[tokio::test]
    async fn zero_is_unlimited() {
        let t = Throttle::new(0.0);
        for _ in 0..10 {
            assert_eq!(t.pace(u64::MAX / 2).await, Duration::ZERO);
        }
    }
}
