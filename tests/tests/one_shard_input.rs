//! Bad input to one shard's HTTP API, on three real `unikv-node` processes: every malformed,
//! oversized or unknown request — on the leader and on a follower — gets a 4xx with a JSON
//! `{error, code}` naming the problem, and nothing it carried is applied.

use std::time::{Duration, Instant};

use serde_json::Value;
use unikv_tests::{alloc_port, assert_no_failures, unique, Body, Cluster, Method, Resp, WAIT};

/// Records a failure unless `r` has a status in `statuses` and a JSON object body with string
/// fields "error" and "code", the code being one of `codes`.
fn check_error(
    failures: &mut Vec<String>,
    what: &str,
    r: anyhow::Result<Resp>,
    statuses: &[u16],
    codes: &[&str],
) {
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            failures.push(format!("{what}: transport error: {e:#}"));
            return;
        }
    };
    let obj = r.json.as_ref().and_then(Value::as_object);
    let error_ok = obj
        .and_then(|o| o.get("error"))
        .is_some_and(|e| e.as_str().is_some_and(|s| !s.is_empty()));
    let code = obj.and_then(|o| o.get("code")).and_then(Value::as_str);
    if !statuses.contains(&r.status) || !error_ok || !code.is_some_and(|c| codes.contains(&c)) {
        failures.push(format!(
            "{what}: expected HTTP {statuses:?} with JSON {{\"error\":<string>,\"code\":{codes:?}}}, got {r}"
        ));
    } else {
        eprintln!("[test] ok: {what}: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_4xx_json() {
    let c = Cluster::start_with(&[("--max_key_bytes", "64"), ("--max_value_bytes", "1024")]).await;
    let api = c.api();
    let leader = c.leader().await;
    let follower = c.followers(leader)[0];
    let timeout = Duration::from_secs(10);
    let mut failures = Vec::new();

    let long_key = "k".repeat(65);
    let long_val = "v".repeat(1025);
    let huge_val = "v".repeat(4096);
    for n in [leader, follower] {
        let at = |s: &str| format!("{s} (node {n})");
        check_error(
            &mut failures,
            &at("GET /get without key"),
            api.get_path(n, "/get", &[]).await,
            &[400],
            &["missing_param"],
        );
        check_error(
            &mut failures,
            &at("POST /put without key"),
            api.request(
                n,
                Method::POST,
                "/put",
                &[("val", "x")],
                Body::Empty,
                timeout,
            )
            .await,
            &[400],
            &["missing_param"],
        );
        check_error(
            &mut failures,
            &at("GET /get?key="),
            api.get(n, "").await,
            &[400],
            &["empty_key"],
        );
        check_error(
            &mut failures,
            &at("POST /put?key=&val=x"),
            api.put(n, "", "x").await,
            &[400],
            &["empty_key"],
        );
        check_error(
            &mut failures,
            &at("POST /put with a 65-byte key"),
            api.put(n, &long_key, "x").await,
            &[400],
            &["key_too_long"],
        );
        check_error(
            &mut failures,
            &at("GET /get with a 65-byte key"),
            api.get(n, &long_key).await,
            &[400],
            &["key_too_long"],
        );
        check_error(
            &mut failures,
            &at("POST /put with a 1025-byte value"),
            api.put(n, "k-long-val", &long_val).await,
            &[400],
            &["value_too_long"],
        );
        check_error(
            &mut failures,
            &at("POST /put with a 4096-byte value in a form body"),
            api.request(
                n,
                Method::POST,
                "/put",
                &[],
                Body::form(&[("key", "k-huge-val"), ("val", &huge_val)]),
                timeout,
            )
            .await,
            &[400, 413],
            &["value_too_long", "body_too_large"],
        );
        check_error(
            &mut failures,
            &at("POST /put with malformed JSON"),
            api.request(
                n,
                Method::POST,
                "/put",
                &[],
                Body::Raw {
                    content_type: "application/json".into(),
                    bytes: br#"{"key": "k", "val": "#.to_vec(),
                },
                timeout,
            )
            .await,
            &[400],
            &["bad_request"],
        );
        check_error(
            &mut failures,
            &at("GET /delete"),
            api.get_path(n, "/delete", &[("key", "k")]).await,
            &[405],
            &["method_not_allowed"],
        );
        check_error(
            &mut failures,
            &at("GET /raft/join"),
            api.get_path(n, "/raft/join", &[]).await,
            &[405],
            &["method_not_allowed"],
        );
        check_error(
            &mut failures,
            &at("GET /no/such/path"),
            api.get_path(n, "/no/such/path", &[]).await,
            &[404],
            &["not_found"],
        );
        check_error(
            &mut failures,
            &at("POST /raft/join nodeid=abc"),
            api.join(n, "abc", &c.raft_addr(n)).await,
            &[400],
            &["bad_request", "missing_param"],
        );
    }

    // Limits are "over N": exactly max_key_bytes / max_value_bytes is accepted.
    let edge_key = "e".repeat(64);
    let edge_val = "w".repeat(1024);
    match api.put(follower, &edge_key, &edge_val).await {
        Ok(r) if r.is_ok() => {}
        other => failures.push(format!(
            "put of a 64-byte key with a 1024-byte value must succeed, got {other:?}"
        )),
    }
    match api.get_value(leader, &edge_key).await {
        Ok(Some(v)) if v == edge_val => {}
        other => failures.push(format!(
            "get of the 64-byte key: expected the 1024-byte value, got {:?}",
            other.map(|o| o.map(|v| v.len()))
        )),
    }

    // An append may not grow a value past --max_value_bytes, however small its own piece.
    let grow = unique("grow");
    c.put_ok(leader, &grow, &"g".repeat(600)).await;
    check_error(
        &mut failures,
        "append of 600 bytes to a 600-byte value (limit 1024)",
        api.request(
            follower,
            Method::GET,
            "/append",
            &[("key", &grow), ("val", &"h".repeat(600))],
            Body::Empty,
            timeout,
        )
        .await,
        &[400],
        &["value_too_long"],
    );
    c.assert_value_everywhere(&grow, Some(&"g".repeat(600)))
        .await;

    // A (client_id, seq) pair reused for another request is refused, never answered with the
    // first request's reply; the first request's retry still gets its reply.
    let tag = unique("seq");
    let (first, second) = (format!("{{{tag}}}first"), format!("{{{tag}}}second"));
    let once = |key: &str, val: &str| {
        let (key, val) = (key.to_string(), val.to_string());
        let api = api.clone();
        async move {
            api.request(
                leader,
                Method::GET,
                "/append",
                &[
                    ("key", key.as_str()),
                    ("val", val.as_str()),
                    ("client_id", "reuser"),
                    ("seq", "7"),
                ],
                Body::Empty,
                timeout,
            )
            .await
        }
    };
    match once(&first, "a").await {
        Ok(r) if r.is_ok() => {}
        other => failures.push(format!("first append with seq 7: {other:?}")),
    }
    check_error(
        &mut failures,
        "append of another key (same slot) with the same client_id and seq",
        once(&second, "b").await,
        &[409],
        &["sequence_reused"],
    );
    check_error(
        &mut failures,
        "append of another value with the same client_id and seq",
        once(&first, "c").await,
        &[409],
        &["sequence_reused"],
    );
    match once(&first, "a").await {
        Ok(r) if r.is_ok() => {}
        other => failures.push(format!("retry of the first append: {other:?}")),
    }
    c.assert_value_everywhere(&first, Some("a")).await;
    c.assert_value_everywhere(&second, None).await;

    // Join of an address where nothing listens.
    let dead = format!("127.0.0.1:{}", alloc_port());
    let t = Instant::now();
    let r = api.join(leader, "9", &dead).await;
    eprintln!(
        "[test] join of unreachable {dead} answered after {:?}",
        t.elapsed()
    );
    let is_4xx: Vec<u16> = (400..500).collect();
    check_error(
        &mut failures,
        &format!("POST /raft/join nodeid=9&addr={dead} (nothing listens)"),
        r,
        &is_4xx,
        &["unreachable"],
    );

    // The bad requests left the group intact: same voters, writes still work.
    c.wait_converged(WAIT).await;
    let k = unique("f-after");
    c.put_ok(follower, &k, "still-works").await;
    c.assert_value_everywhere(&k, Some("still-works")).await;

    assert_no_failures("bad input", &failures);
}
