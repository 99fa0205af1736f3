//! The dedup window on three real `unikv-node` processes (`--dedup_window_s 1`): a retry within
//! the window gets the stored reply; once the shard has forgotten the write, the same retry
//! (same `client_id`, `seq` and first-send `ts`) is refused with 409 `session_expired` and is
//! never applied a second time; a new request is applied; a `ts` far in the future is a 400.

use std::time::Duration;

use serde_json::json;
use unikv_tests::{assert_json_error, unique, wait_until, Cluster, Method, Resp};

async fn append(c: &Cluster, node: u64, key: &str, val: &str, seq: u64, ts: u64) -> Resp {
    let (seq, ts) = (seq.to_string(), ts.to_string());
    c.api()
        .request(
            node,
            Method::POST,
            "/append",
            &[
                ("key", key),
                ("val", val),
                ("client_id", "dedup-window-client"),
                ("seq", &seq),
                ("ts", &ts),
            ],
            unikv_tests::Body::Empty,
            Duration::from_secs(10),
        )
        .await
        .expect("append")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_after_the_window_is_refused_never_applied_twice() {
    let c = Cluster::start_with(&[("--dedup_window_s", "1")]).await;
    let leader = c.leader().await;
    let follower = c.followers(leader)[0];
    let key = unique("dw");
    let t0 = unikv_types::wall_clock_ms();

    let first = append(&c, leader, &key, "a", 1, t0).await;
    assert_eq!(
        (first.status, first.field("previous")),
        (200, Some(&json!(null))),
        "{first}"
    );
    let retry = append(&c, follower, &key, "a", 1, t0).await;
    assert_eq!(
        (retry.status, retry.field("previous")),
        (200, Some(&json!(null))),
        "a retry within the window gets the stored reply: {retry}"
    );

    // Other writes move the shard clock on; the same retry is refused once the window passed.
    let mut n = 0;
    let refused = wait_until(Duration::from_secs(20), "the retry refused", || {
        n += 1;
        let (c, key, filler) = (&c, key.clone(), format!("{key}-filler-{n}"));
        async move {
            c.api().put(leader, &filler, "x").await.ok()?;
            let r = append(c, leader, &key, "a", 1, t0).await;
            match r.status {
                200 => None,
                _ => Some(r),
            }
        }
    })
    .await;
    assert_json_error("late retry", &refused, 409, "session_expired");
    c.assert_value_everywhere(&key, Some("a")).await;

    // A new request is applied; a stamp from the far future is refused.
    let now = unikv_types::wall_clock_ms();
    let next = append(&c, follower, &key, "b", 2, now).await;
    assert_eq!(
        (next.status, next.field("previous")),
        (200, Some(&json!("a"))),
        "{next}"
    );
    let future = append(&c, leader, &key, "c", 3, now + 3_600_000).await;
    assert_json_error("ts an hour ahead", &future, 400, "bad_timestamp");
    c.assert_value_everywhere(&key, Some("ab")).await;
}
