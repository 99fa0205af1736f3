//! Bounded readiness polling: poll often, give up at a deadline with a clear message.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// Pause between two polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `poll` until it returns `Some`, at most `timeout`; `None` on timeout.
pub async fn try_wait_until<T, F, Fut>(timeout: Duration, mut poll: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = poll().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls `poll` until it returns `Some`; panics after `timeout` naming `what`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, poll: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match try_wait_until(timeout, poll).await {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Polls `poll` until it returns `Ok`; panics after `timeout` naming `what` and the last
/// `Err` (the state seen by the last poll).
pub async fn wait_until_ok<T, E, F, Fut>(timeout: Duration, what: &str, poll: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    wait_until_ok_every(POLL_INTERVAL, timeout, what, poll).await
}

/// [`wait_until_ok`] pausing `every` between polls (for polls that are costly themselves).
pub async fn wait_until_ok_every<T, E, F, Fut>(
    every: Duration,
    timeout: Duration,
    what: &str,
    mut poll: F,
) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match poll().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(every).await;
    }
}
