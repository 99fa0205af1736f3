//! One shard, three real `unikv-node` processes: reads and writes from any member, kill -9 of
//! the leader under load, kill -9 of everything, snapshot catch-up, exactly-once retries and
//! membership changes (bad input: `one_shard_input.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use unikv_tests::api::REQUEST_TIMEOUT;
use unikv_tests::{assert_no_failures, make_kvs};
use unikv_tests::{
    check_values, put_all, unique, wait_until_ok, Api, Body, Cluster, Method, Resp, WAIT,
};

fn assert_ok_true(what: &str, r: &Resp) {
    assert!(
        r.is_ok() && r.field("ok") == Some(&Value::Bool(true)),
        "{what}: expected 200 {{\"ok\":true,...}}, got {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_serve_from_any_member() {
    let c = Cluster::start().await;
    let api = c.api();
    let ids = c.node_ids();
    let leader = c.leader().await;
    let f = c.followers(leader);

    // Put on node 1, get from nodes 2 and 3.
    let k1 = unique("a-put-node1");
    c.put_ok(1, &k1, "one").await;
    for n in [2, 3] {
        let r = c.get(n, &k1).await;
        assert_eq!(r.status, 200, "get {k1:?} on node {n}: {r}");
        assert_eq!(
            r.str_field("key"),
            Some(k1.as_str()),
            "get on node {n}: {r}"
        );
        assert_eq!(r.str_field("value"), Some("one"), "get on node {n}: {r}");
    }

    // Put via a follower, read via the leader and the other follower.
    let k2 = unique("a-put-follower");
    c.put_ok(f[0], &k2, "two").await;
    assert_eq!(c.get_value(leader, &k2).await.as_deref(), Some("two"));
    assert_eq!(c.get_value(f[1], &k2).await.as_deref(), Some("two"));
    // An overwrite through the other follower is visible on every node.
    c.put_ok(f[1], &k2, "two-b").await;
    c.assert_value_everywhere(&k2, Some("two-b")).await;

    // Append returns the previous value (null when the key did not exist).
    let r = c.append(f[1], &k2, "+x").await;
    assert_ok_true("append to existing key", &r);
    assert_eq!(r.field("previous"), Some(&json!("two-b")), "append: {r}");
    c.assert_value_everywhere(&k2, Some("two-b+x")).await;
    let k3 = unique("a-append-fresh");
    let r = c.append(leader, &k3, "first").await;
    assert_ok_true("append to missing key", &r);
    assert_eq!(r.field("previous"), Some(&Value::Null), "append: {r}");
    let r = c.append(f[0], &k3, "-second").await;
    assert_ok_true("second append", &r);
    assert_eq!(r.field("previous"), Some(&json!("first")), "append: {r}");
    c.assert_value_everywhere(&k3, Some("first-second")).await;

    // Delete, then every node answers 404 not_found; a second delete reports deleted=false.
    let r = c.delete(f[0], &k2).await;
    assert_ok_true("delete", &r);
    assert_eq!(r.field("deleted"), Some(&Value::Bool(true)), "delete: {r}");
    for n in &ids {
        let r = c.get(*n, &k2).await;
        assert_eq!(r.status, 404, "get of deleted key on node {n}: {r}");
        assert_eq!(
            r.code(),
            Some("not_found"),
            "get of deleted key on node {n}: {r}"
        );
        assert!(r.str_field("error").is_some(), "404 without error: {r}");
    }
    let r = c.delete(leader, &k2).await;
    assert_ok_true("delete of missing key", &r);
    assert_eq!(r.field("deleted"), Some(&Value::Bool(false)), "delete: {r}");

    // Several keys (some need URL encoding), each written through a different node, all
    // readable from every node.
    let p = unique("a-multi");
    let kvs: Vec<(String, String)> = (0..30)
        .map(|i| (format!("{p}/{i} &=?+é"), format!("value {i} ü&=+% #")))
        .collect();
    for (i, (k, v)) in kvs.iter().enumerate() {
        c.put_ok(ids[i % ids.len()], k, v).await;
    }
    for n in &ids {
        assert_no_failures(
            &format!("multi-key reads on node {n}"),
            &check_values(&api, &[*n], &kvs, 4).await,
        );
    }

    // The other documented request forms of put: GET with query, PUT with form body, POST with
    // JSON body.
    let kg = unique("a-get-put");
    let r = api
        .get_path(f[0], "/put", &[("key", &kg), ("val", "via-get")])
        .await
        .expect("GET /put");
    assert_ok_true("GET /put", &r);
    let kf = unique("a-form-put");
    let r = api
        .request(
            f[1],
            Method::PUT,
            "/put",
            &[],
            Body::form(&[("key", &kf), ("val", "via-form")]),
            REQUEST_TIMEOUT,
        )
        .await
        .expect("PUT /put form");
    assert_ok_true("PUT /put with form body", &r);
    let kj = unique("a-json-put");
    let r = api
        .request(
            leader,
            Method::POST,
            "/put",
            &[],
            Body::Json(json!({"key": kj, "val": "via-json"})),
            REQUEST_TIMEOUT,
        )
        .await
        .expect("POST /put json");
    assert_ok_true("POST /put with JSON body", &r);
    c.assert_value_everywhere(&kg, Some("via-get")).await;
    c.assert_value_everywhere(&kf, Some("via-form")).await;
    c.assert_value_everywhere(&kj, Some("via-json")).await;
}

/// One write the writer task got 200 for.
struct Acked {
    key: String,
    val: String,
    started: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_kill9_under_concurrent_writer() {
    let c = Cluster::start().await;
    let api = c.api();
    let stop = Arc::new(AtomicBool::new(false));

    let writer = {
        let api: Api = api.clone();
        let stop = stop.clone();
        let prefix = unique("b-w");
        tokio::spawn(async move {
            let nodes = api.node_ids();
            let mut acked = Vec::new();
            let mut failed_attempts = 0usize;
            let mut recent_errors: Vec<String> = Vec::new();
            let mut next = 0usize;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("{prefix}-{i:06}");
                let val = format!("v{i}-{:08x}", rand::random::<u32>());
                i += 1;
                let started = Instant::now();
                let mut ok = false;
                for attempt in 0..nodes.len() {
                    let idx = (next + attempt) % nodes.len();
                    let node = nodes[idx];
                    let res = api
                        .put_timeout(node, &key, &val, Duration::from_secs(2))
                        .await;
                    match res {
                        Ok(r) if r.is_ok() => {
                            ok = true;
                            next = idx;
                            break;
                        }
                        other => {
                            failed_attempts += 1;
                            if recent_errors.len() >= 10 {
                                recent_errors.remove(0);
                            }
                            recent_errors.push(match other {
                                Ok(r) => format!("node {node}: {r}"),
                                Err(e) => format!("node {node}: {e:#}"),
                            });
                        }
                    }
                }
                if ok {
                    acked.push(Acked { key, val, started });
                } else {
                    // Every node refused: back off a little before the next key.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            (acked, failed_attempts, recent_errors)
        })
    };

    // Let the writer run for ~2 s, then kill -9 the leader.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let old_leader = c.leader().await;
    let t_kill = Instant::now();
    c.kill9(old_leader);

    let new_leader = c.wait_for_leader(Duration::from_secs(10)).await;
    let failover = t_kill.elapsed();
    eprintln!("[test] leader {old_leader} killed; node {new_leader} leads after {failover:?}");
    assert_ne!(
        new_leader, old_leader,
        "the killed node cannot be the new leader"
    );
    assert!(
        failover <= Duration::from_secs(10),
        "new leader took {failover:?}"
    );

    // Keep writing ~3 s under the new leader, then stop the writer.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, failed_attempts, recent_errors) = tokio::time::timeout(WAIT, writer)
        .await
        .expect("writer did not stop in time")
        .expect("writer task panicked");
    let before = acked.iter().filter(|a| a.started < t_kill).count();
    let after = acked.len() - before;
    eprintln!(
        "[test] acknowledged writes: {} ({before} started before the kill, {after} after); failed attempts: {failed_attempts}; last errors: {recent_errors:?}",
        acked.len()
    );
    assert!(before > 0, "no write was acknowledged before the kill");
    assert!(
        after > 0,
        "no write started after the kill was acknowledged; last errors: {recent_errors:?}"
    );

    // Bring the killed node back; every acknowledged write must be readable with its value.
    c.restart(old_leader).await;
    c.wait_converged(WAIT).await;
    let kvs: Vec<(String, String)> = acked
        .iter()
        .map(|a| (a.key.clone(), a.val.clone()))
        .collect();
    let survivors = c.followers(old_leader);
    assert_no_failures(
        "acknowledged writes read from surviving nodes",
        &check_values(&api, &survivors, &kvs, 8).await,
    );
    assert_no_failures(
        "acknowledged writes read from the restarted node",
        &check_values(&api, &[old_leader], &kvs, 8).await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_all_and_restart_keeps_acknowledged() {
    let c = Cluster::start().await;
    let api = c.api();
    let ids = c.node_ids();

    let kvs = make_kvs("c-key", 200);
    assert_no_failures("initial puts", &put_all(&api, &ids, &kvs, 8).await);

    for n in &ids {
        c.kill9(*n);
    }
    let t = Instant::now();
    for n in &ids {
        c.restart(*n).await;
    }
    let leader = c.wait_converged(WAIT).await;
    eprintln!(
        "[test] all nodes restarted; {:?} after the first restart node {leader} leads a converged group",
        t.elapsed()
    );

    assert_no_failures(
        "acknowledged writes after kill -9 of all nodes",
        &check_values(&api, &ids, &kvs, 8).await,
    );
    // Every node individually serves them too.
    for n in &ids {
        assert_no_failures(
            &format!("reads on node {n}"),
            &check_values(&api, &[*n], &kvs[..20], 4).await,
        );
    }

    // New writes work and are readable everywhere.
    let more = make_kvs("c-new", 20);
    assert_no_failures("puts after restart", &put_all(&api, &ids, &more, 4).await);
    assert_no_failures(
        "reads of new writes",
        &check_values(&api, &[ids[2], ids[0], ids[1]], &more, 4).await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lagging_follower_catches_up_by_snapshot() {
    let c = Cluster::start_with(&[("--snapshot_logs", "50"), ("--keep_logs", "0")]).await;
    let api = c.api();
    let leader = c.leader().await;
    // Node 3 lags (or another follower, should node 3 happen to lead).
    let victim = if leader != 3 {
        3
    } else {
        c.followers(leader)[0]
    };
    let live: Vec<u64> = c.followers(victim);

    let early = make_kvs("d-early", 10);
    assert_no_failures("early puts", &put_all(&api, &live, &early, 2).await);
    assert_no_failures(
        "early reads on the victim",
        &check_values(&api, &[victim], &early, 2).await,
    );
    let before = c.status(victim).await.expect("status of victim");
    let victim_last = before
        .last_log_index
        .unwrap_or_else(|| panic!("node {victim} reports no last_log_index: {before:?}"));
    eprintln!("[test] before kill: {}", before.summary());
    c.kill9(victim);

    let bulk = make_kvs("d-bulk", 500);
    assert_no_failures("bulk puts", &put_all(&api, &live, &bulk, 8).await);

    let leader = c.leader().await;
    assert_ne!(leader, victim);
    let lst = wait_until_ok(
        WAIT,
        &format!(
            "leader {leader} to purge logs beyond node {victim}'s last log index {victim_last}"
        ),
        || async {
            let s = c.status(leader).await.map_err(|e| format!("{e:#}"))?;
            match s.purged_index {
                Some(p) if p > victim_last => Ok(s),
                _ => Err(s.summary()),
            }
        },
    )
    .await;
    eprintln!("[test] leader purged: {}", lst.summary());
    let leader_applied = lst
        .applied_index
        .unwrap_or_else(|| panic!("leader reports no applied_index: {lst:?}"));

    c.restart(victim).await;
    let t = Instant::now();
    let caught_up = wait_until_ok(
        WAIT,
        &format!("node {victim} to install a snapshot and apply up to {leader_applied}"),
        || async {
            let s = c.status(victim).await.map_err(|e| format!("{e:#}"))?;
            match (s.snapshot_index, s.applied_index) {
                (Some(_), Some(a)) if a >= leader_applied => Ok(s),
                _ => Err(s.summary()),
            }
        },
    )
    .await;
    eprintln!(
        "[test] node {victim} caught up after {:?}: {}",
        t.elapsed(),
        caught_up.summary()
    );
    match c.status(leader).await {
        Ok(s) => eprintln!("[test] leader now: {}", s.summary()),
        Err(e) => eprintln!("[test] leader status: {e:#}"),
    }
    let snap = caught_up.snapshot_index.expect("checked above");
    assert!(
        snap > victim_last,
        "node {victim}'s snapshot_index {snap} does not cover the purged gap after its last log {victim_last}"
    );

    // Reads from the caught-up node return the data it got through the snapshot.
    assert_no_failures(
        "reads on the caught-up node",
        &check_values(&api, &[victim], &bulk, 8).await,
    );
    assert_no_failures(
        "early reads on the caught-up node",
        &check_values(&api, &[victim], &early, 2).await,
    );
    c.wait_converged(WAIT).await;
    let s = c.status(victim).await.expect("status of victim");
    assert!(
        s.snapshot_index.is_some_and(|i| i > victim_last),
        "node {victim} lost its snapshot: {}",
        s.summary()
    );

    // The node takes part in new writes.
    let after = make_kvs("d-after", 10);
    assert_no_failures(
        "puts via the caught-up node",
        &put_all(&api, &[victim], &after, 2).await,
    );
    assert_no_failures(
        "reads of new writes",
        &check_values(&api, &c.node_ids(), &after, 3).await,
    );
}

/// Appends `a` (seq 1), retries it, appends `b` (seq 2), retries that via `retry_node`, then
/// retries seq 1 again, checking the value after every step on every node.
async fn append_once_scenario(c: &Cluster, node: u64, retry_node: u64, client_id: &str) {
    let api = c.api();
    let key = unique("e-key");
    let call = |n: u64, val: &'static str, seq: u64| {
        let (api, key) = (api.clone(), key.clone());
        let client_id = client_id.to_string();
        async move {
            api.append_seq(n, &key, val, &client_id, seq)
                .await
                .unwrap_or_else(|e| panic!("append seq {seq} on node {n}: {e:#}"))
        }
    };

    let first = call(node, "a", 1).await;
    assert_ok_true("append seq 1", &first);
    assert_eq!(
        first.field("previous"),
        Some(&Value::Null),
        "first append: {first}"
    );
    let retry = call(node, "a", 1).await;
    assert_eq!(
        retry.status, first.status,
        "retry of seq 1: {retry} vs first {first}"
    );
    assert_eq!(
        retry.field("previous"),
        first.field("previous"),
        "retry of seq 1 must return the first reply: {retry} vs first {first}"
    );
    c.assert_value_everywhere(&key, Some("a")).await;

    let second = call(node, "b", 2).await;
    assert_ok_true("append seq 2", &second);
    assert_eq!(
        second.field("previous"),
        Some(&json!("a")),
        "append seq 2: {second}"
    );
    c.assert_value_everywhere(&key, Some("ab")).await;
    let retry2 = call(retry_node, "b", 2).await;
    assert_ok_true("retry of seq 2 via another node", &retry2);
    assert_eq!(
        retry2.field("previous"),
        Some(&json!("a")),
        "retry of seq 2 via node {retry_node} must return the first reply: {retry2}"
    );
    c.assert_value_everywhere(&key, Some("ab")).await;

    let stale = call(node, "a", 1).await;
    match stale.status {
        200 => assert_eq!(
            stale.field("previous"),
            first.field("previous"),
            "late retry of seq 1 answered 200 but not the stored reply: {stale}"
        ),
        409 => assert_eq!(stale.code(), Some("stale_sequence"), "late retry: {stale}"),
        _ => panic!(
            "late retry of seq 1: expected the stored reply or 409 stale_sequence, got {stale}"
        ),
    }
    c.assert_value_everywhere(&key, Some("ab")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_client_seq_append_applied_once() {
    let c = Cluster::start().await;
    let leader = c.leader().await;
    let f = c.followers(leader);
    // Through the leader (one retry via a follower) ...
    append_once_scenario(&c, leader, f[0], "c1").await;
    // ... and the same through a follower (one retry via the other follower).
    append_once_scenario(&c, f[0], f[1], "c2").await;
}

/// `/raft/leave` removes a member (sent to a follower, which forwards it to the leader); the
/// shard keeps serving with two voters; the removed node can join again and catches up; the
/// last voter cannot leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_removes_a_member_and_it_can_rejoin() {
    let c = Cluster::start().await;
    let api = c.api();
    let leader = c.wait_converged(WAIT).await;
    let gone = c.followers(leader)[0];
    let via = c.followers(leader)[1];
    let r = api
        .request(
            via,
            Method::POST,
            "/raft/leave",
            &[],
            Body::form(&[("nodeid", &gone.to_string())]),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "leave: {}", r.raw);
    let mut expected: Vec<u64> = c.node_ids().into_iter().filter(|n| *n != gone).collect();
    expected.sort();
    let voters = r.field("voters").cloned().unwrap_or_default();
    assert_eq!(voters, json!(expected), "voters after leave: {}", r.raw);
    wait_until_ok(WAIT, "leader reports two voters", || async {
        let s = c.status(leader).await?;
        anyhow::ensure!(
            s.sorted_voters() == expected,
            "voters {:?}",
            s.sorted_voters()
        );
        Ok(())
    })
    .await;
    // The shard still commits with two voters.
    let kvs = make_kvs("after-leave", 20);
    for (k, v) in &kvs {
        c.put_ok(via, k, v).await;
    }
    // Leaving again is a 404: it is no longer a member.
    let r = api
        .request(
            leader,
            Method::POST,
            "/raft/leave",
            &[],
            Body::form(&[("nodeid", &gone.to_string())]),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 404, "second leave: {}", r.raw);
    // It can join again and catches up on what it missed.
    let r = api
        .request(
            leader,
            Method::POST,
            "/raft/join",
            &[],
            Body::form(&[("nodeid", &gone.to_string()), ("addr", &c.raft_addr(gone))]),
            REQUEST_TIMEOUT * 4,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "rejoin: {}", r.raw);
    for (k, v) in &kvs {
        assert_eq!(
            c.get_value(gone, k).await.as_deref(),
            Some(v.as_str()),
            "key {k} on the rejoined node"
        );
    }
    // A one-voter shard refuses to lose its last voter.
    let one = Cluster::start_with(&[]).await;
    let api1 = one.api();
    let l = one.wait_converged(WAIT).await;
    for n in one.followers(l) {
        let r = api1
            .request(
                l,
                Method::POST,
                "/raft/leave",
                &[],
                Body::form(&[("nodeid", &n.to_string())]),
                REQUEST_TIMEOUT,
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "leave {n}: {}", r.raw);
    }
    let r = api1
        .request(
            l,
            Method::POST,
            "/raft/leave",
            &[],
            Body::form(&[("nodeid", &l.to_string())]),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "last voter: {}", r.raw);
    assert_eq!(r.code(), Some("last_voter"));
}
